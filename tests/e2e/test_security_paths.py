"""Datastore confinement, attack by attack (the security issue's list: 1 disk paths in
extraConfig and .vmx files, 2 VM names and a .vmx at the datastore root, 3 backing files, 4 raw
disks re-probed, 5 symlinks, 13 file modes): each request is refused with a clear fault, a canary file outside the datastore is neither read, written nor deleted,
and the data dir survives. The canaries live in a temporary folder of their own, never a real
system file."""
import base64
import hashlib
import os
import shutil
import ssl
import stat
import subprocess
import tempfile
import urllib.error
import urllib.request

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from conftest import ROOT_PASSWORD, connection_to
from test_vm_lifecycle import agent, config_spec, create_vm, root_pool  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")

CANARY_TEXT = b"canary: outside every datastore\n"


class Canary:
    """A file outside the datastore, with what it held when made."""

    def __init__(self, name, content=CANARY_TEXT):
        self.dir = tempfile.mkdtemp(prefix="vireo-canary-")
        self.path = os.path.join(self.dir, name)
        with open(self.path, "wb") as f:
            f.write(content)
        self.digest = self.sha256()
        self.mtime = os.stat(self.path).st_mtime_ns

    def sha256(self):
        with open(self.path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    def assert_untouched(self):
        assert os.path.exists(self.path), "the canary outside the datastore was deleted"
        assert self.sha256() == self.digest, "the canary outside the datastore was written"
        assert os.stat(self.path).st_mtime_ns == self.mtime
        assert sorted(os.listdir(self.dir)) == [os.path.basename(self.path)], "files appeared beside the canary"

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def canary():
    c = Canary("secret")
    yield c
    c.remove()


si = connection_to("agent")


def folder(si):
    return si.content.rootFolder.childEntity[0].vmFolder


def datastore(agent):
    return os.path.join(agent.data_dir, "datastore1")


def assert_data_dir_survives(agent, si):
    assert os.path.isdir(datastore(agent))
    assert os.path.isfile(os.path.join(agent.data_dir, "vm-inventory"))
    assert os.path.isfile(os.path.join(datastore(agent), "images", "vireo-test-guest.elf"))
    assert si.content.about.apiVersion  # the server still answers


def create(si, spec):
    task = folder(si).CreateVM_Task(config=spec, pool=root_pool(si))
    WaitForTask(task)
    return task.info.result


def write_vmx(agent, folder_name, lines, name=None):
    """A hand-made VM folder (as an upload or an old host would leave it); returns its path."""
    path = os.path.join(datastore(agent), folder_name)
    os.makedirs(path, exist_ok=True)
    name = name or folder_name
    with open(os.path.join(path, f"{name}.vmx"), "w") as f:
        f.write(f'displayName = "{name}"\nmemsize = "64"\nnumvcpus = "1"\n')
        f.write("".join(f'{k} = "{v}"\n' for k, v in lines))
    return path


def register(si, datastore_path, name):
    task = folder(si).RegisterVM_Task(path=datastore_path, name=name, asTemplate=False, pool=root_pool(si))
    WaitForTask(task)
    return task.info.result


def qemu_img(*args):
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=True).stdout


def get_folder(agent, path, timeout=30):
    """`GET /folder/<path>?dsName=datastore1` with root's Basic credentials: (status, body)."""
    token = base64.b64encode(f"root:{ROOT_PASSWORD}".encode()).decode()
    url = f"https://127.0.0.1:{agent.port}/folder/{path}?dcPath=ha-datacenter&dsName=datastore1"
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(request, context=ssl._create_unverified_context(), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


# 1. extraConfig overriding what the VM's model owns (disk files, memory, CPUs, NICs, identity)
def test_extra_config_cannot_override_owned_keys(si, agent, canary):
    for key, value in [("disk0.fileName", canary.path), ("disk0.fileName", "../../secret"),
                       ("disk0.present", "TRUE"), ("memsize", "99999999"), ("numvcpus", "4096"),
                       ("ethernet0.networkName", "host-lan"), ("ethernet0.address", "ff:ff:ff:ff:ff:ff"),
                       ("uuid.bios", "00 00 00 00 00 00 00 00-00 00 00 00 00 00 00 00"),
                       ("scsi0:0.fileName", canary.path), ("nvram.fileName", canary.path)]:
        spec = config_spec("owned-key", nic=False)
        spec.extraConfig.append(vim.option.OptionValue(key=key, value=value))
        with pytest.raises(vmodl.fault.InvalidArgument) as refused:
            create(si, spec)
        assert refused.value.invalidProperty == key
        assert key in refused.value.msg
    assert not os.path.exists(os.path.join(datastore(agent), "owned-key")), "a refused VM left its folder"
    canary.assert_untouched()
    assert_data_dir_survives(agent, si)


def test_a_vmx_naming_a_host_file_as_its_disk_is_refused(si, agent, canary):
    write_vmx(agent, "abs-disk", [("disk0.present", "TRUE"), ("disk0.fileName", canary.path),
                                  ("disk1.present", "FALSE")])
    write_vmx(agent, "dots-disk", [("disk0.present", "TRUE"), ("disk0.fileName", "../../../secret")])
    for name in ["abs-disk", "dots-disk"]:
        vm = register(si, f"[datastore1] {name}/{name}.vmx", name)
        with pytest.raises(vim.fault.FileFault) as refused:
            WaitForTask(vm.PowerOnVM_Task())
        assert "leaves its datastore" in refused.value.msg
        with pytest.raises(vim.fault.FileFault):
            WaitForTask(vm.CreateSnapshot_Task(name="s", memory=False, quiesce=False))
        WaitForTask(vm.Destroy_Task())
        assert not os.path.exists(os.path.join(datastore(agent), name))
    canary.assert_untouched()
    assert_data_dir_survives(agent, si)


# 2. VM names that are not folder names; a .vmx at the datastore root
def test_vm_names_and_root_vmx_cannot_reach_the_data_dir(si, agent, canary):
    for name in ["..", ".", "a/../../b", "tab\there", "nl\nthere"]:
        with pytest.raises(vmodl.fault.InvalidArgument):
            create(si, config_spec(name, nic=False))
    spec = config_spec("at-root", nic=False)
    spec.files = vim.vm.FileInfo(vmPathName="[datastore1] at-root.vmx")
    with pytest.raises(vmodl.fault.InvalidArgument):
        create(si, spec)
    with open(os.path.join(datastore(agent), "root.vmx"), "w") as f:
        f.write('displayName = "root"\nmemsize = "64"\n')
    with pytest.raises(vmodl.fault.InvalidArgument) as refused:
        register(si, "[datastore1] root.vmx", "root")
    assert "not at its root" in refused.value.msg

    # Destroy removes what the VM owns and leaves a folder holding anything else.
    vm = create_vm(si, "owns-its-files", nic=False)
    vm_dir = os.path.join(datastore(agent), "owns-its-files")
    with open(os.path.join(vm_dir, "notes.txt"), "w") as f:
        f.write("not the VM's\n")
    WaitForTask(vm.Destroy_Task())
    assert os.listdir(vm_dir) == ["notes.txt"]
    vm = create_vm(si, "empty-after", nic=False)
    WaitForTask(vm.Destroy_Task())
    assert not os.path.exists(os.path.join(datastore(agent), "empty-after"))
    canary.assert_untouched()
    assert_data_dir_survives(agent, si)


# 5. symlinks inside a datastore pointing out of it: /folder, disks, boot files
def test_symlinks_out_of_the_datastore_are_not_followed(si, agent, canary):
    link_dir = os.path.join(datastore(agent), "links")
    os.makedirs(link_dir, exist_ok=True)
    os.symlink(canary.path, os.path.join(link_dir, "secret"))
    os.symlink(canary.dir, os.path.join(datastore(agent), "outside"))

    status, body = get_folder(agent, "links/secret")
    assert status == 403 and b"symbolic link" in body and CANARY_TEXT not in body
    status, body = get_folder(agent, "outside/secret")
    assert status == 403 and CANARY_TEXT not in body
    status, body = get_folder(agent, "%2E%2E/%2E%2E/etc/hostname")
    assert status == 400 and b"leaves its datastore" in body
    status, body = get_folder(agent, "images/vireo-test-guest.elf")
    assert status == 200 and body.startswith(b"\x7fELF")

    qcow2 = Canary("secret.qcow2", b"")
    try:
        os.remove(qcow2.path)
        qemu_img("create", "-q", "-f", "qcow2", qcow2.path, "1M")
        qcow2.digest, qcow2.mtime = qcow2.sha256(), os.stat(qcow2.path).st_mtime_ns
        os.symlink(qcow2.path, os.path.join(link_dir, "disk.qcow2"))
        # as an existing disk given to CreateVM
        spec = config_spec("symlinked-disk", disk_kb=0, nic=False)
        existing = vim.vm.device.VirtualDisk(key=-1, controllerKey=1000, unitNumber=0, backing=(
            vim.vm.device.VirtualDisk.FlatVer2BackingInfo(fileName="[datastore1] links/disk.qcow2",
                                                          diskMode="persistent")))
        spec.deviceChange.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=existing))
        with pytest.raises(vim.fault.InvalidDatastore) as refused:
            create(si, spec)
        assert "symbolic link" in refused.value.msg
        # as the disk a .vmx names, and as its boot kernel
        write_vmx(agent, "links", [("disk0.present", "TRUE"), ("disk0.fileName", "disk.qcow2")], name="vm")
        vm = register(si, "[datastore1] links/vm.vmx", "linked-disk")
        with pytest.raises(vim.fault.FileFault) as refused:
            WaitForTask(vm.PowerOnVM_Task())
        assert "symbolic link" in refused.value.msg
        WaitForTask(vm.Destroy_Task())
        assert os.path.islink(os.path.join(link_dir, "disk.qcow2"))
        spec = config_spec("symlinked-kernel", nic=False)
        spec.extraConfig[0].value = "[datastore1] links/secret"
        vm = create(si, spec)
        with pytest.raises(vim.fault.InvalidVmConfig) as refused:
            WaitForTask(vm.PowerOnVM_Task())
        assert "symbolic link" in refused.value.msg
        WaitForTask(vm.Destroy_Task())
        qcow2.assert_untouched()
    finally:
        qcow2.remove()
    canary.assert_untouched()
    assert_data_dir_survives(agent, si)


# 13. file modes: private whatever the umask vireod started with
def test_data_dir_vm_folders_and_files_are_private(si, agent):
    vm = create_vm(si, "private-files", nic=False)
    vm_dir = os.path.join(datastore(agent), "private-files")
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(agent.data_dir) == 0o700
    assert mode(vm_dir) == 0o700
    for name in ["private-files.vmx", "private-files.qcow2"]:
        assert mode(os.path.join(vm_dir, name)) == 0o600, name
    WaitForTask(vm.Destroy_Task())


def existing_disk_spec(name, file_name):
    spec = config_spec(name, disk_kb=0, nic=False)
    existing = vim.vm.device.VirtualDisk(key=-1, controllerKey=1000, unitNumber=0, backing=(
        vim.vm.device.VirtualDisk.FlatVer2BackingInfo(fileName=file_name, diskMode="persistent")))
    spec.deviceChange.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=existing))
    return spec


def open_files(pid):
    fds = f"/proc/{pid}/fd"
    names = []
    for fd in os.listdir(fds):
        try:
            names.append(os.readlink(os.path.join(fds, fd)))
        except OSError:
            pass
    return names


# 3. qcow2 backing files naming host files: absolute, or escaping with ../
def test_backing_files_outside_the_datastore_are_refused(si, agent):
    raw = Canary("secret.raw", CANARY_TEXT * 1024)
    try:
        cases = []
        for name, backing in [("backing-abs", raw.path), ("backing-dots", None)]:
            folder_path = os.path.join(datastore(agent), name)
            os.makedirs(folder_path)
            image = os.path.join(folder_path, f"{name}.qcow2")
            backing = backing or os.path.relpath(raw.path, folder_path)
            assert backing.startswith("/") or backing.startswith("../")
            qemu_img("create", "-q", "-f", "qcow2", "-b", backing, "-F", "raw", image)
            cases.append((name, image))
        for name, image in cases:
            # as an existing disk of a new VM
            with pytest.raises(vim.fault.FileFault) as refused:
                create(si, existing_disk_spec(f"{name}-new", f"[datastore1] {name}/{name}.qcow2"))
            assert "backing file" in refused.value.msg
            # as the disk a .vmx names: no power-on, no clone, no snapshot
            write_vmx(agent, name, [("disk0.present", "TRUE"), ("disk0.fileName", f"{name}.qcow2")])
            vm = register(si, f"[datastore1] {name}/{name}.vmx", name)
            with pytest.raises(vim.fault.FileFault) as refused:
                WaitForTask(vm.PowerOnVM_Task())
            assert "backing file" in refused.value.msg
            assert vm.runtime.powerState == "poweredOff"
            with pytest.raises(vmodl.MethodFault):
                WaitForTask(vm.CloneVM_Task(folder=folder(si), name=f"{name}-clone",
                                            spec=vim.vm.CloneSpec(location=vim.vm.RelocateSpec())))
            assert not os.path.exists(os.path.join(datastore(agent), f"{name}-clone", f"{name}-clone.qcow2"))
            WaitForTask(vm.Destroy_Task())
            assert not os.path.exists(image)
        for pid in agent.vmm_pids() + [agent.process.pid]:
            assert raw.path not in open_files(pid)
        raw.assert_untouched()
    finally:
        raw.remove()
    assert_data_dir_survives(agent, si)


# 4. a raw disk whose guest wrote a qcow2 header naming a backing file stays raw
def test_a_raw_disk_is_never_reprobed(si, agent):
    raw = Canary("secret.raw", CANARY_TEXT * 1024)
    try:
        vm_dir = os.path.join(datastore(agent), "raw-vm")
        os.makedirs(vm_dir)
        disk_file = os.path.join(vm_dir, "raw-vm.img")
        with open(disk_file, "wb") as f:
            f.truncate(2 << 20)
        vm = create(si, existing_disk_spec("raw-vm", "[datastore1] raw-vm/raw-vm.img"))
        with open(os.path.join(vm_dir, "raw-vm.vmx")) as f:
            assert 'disk0.format = "raw"' in f.read()
        # What a hostile guest writes at the start of its disk: a qcow2 header whose backing
        # file is a host file (through its block device; here straight into the file).
        header_file = os.path.join(tempfile.mkdtemp(prefix="vireo-header-"), "h.qcow2")
        qemu_img("create", "-q", "-f", "qcow2", "-b", raw.path, "-F", "raw", header_file, "64M")
        with open(header_file, "rb") as f:
            header = f.read()
        shutil.rmtree(os.path.dirname(header_file))
        with open(disk_file, "r+b") as f:
            f.write(header)
        WaitForTask(vm.PowerOnVM_Task())
        assert vm.runtime.powerState == "poweredOn"
        disk = next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk))
        assert disk.capacityInKB == 2048, "the raw disk was read as the qcow2 its guest wrote"
        assert disk.backing.parent is None
        with open(os.path.join(agent.data_dir, "run", f"vm-{vm._moId}", "vmm.pid")) as f:
            pid = int(f.read().split()[0])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert b"format=raw" in f.read()
        assert raw.path not in open_files(pid) and raw.path not in open_files(agent.process.pid)
        WaitForTask(vm.PowerOffVM_Task())
        with open(os.path.join(vm_dir, "raw-vm.vmx")) as f:
            assert 'disk0.format = "raw"' in f.read()
        WaitForTask(vm.Destroy_Task())
        raw.assert_untouched()
    finally:
        raw.remove()
    assert_data_dir_survives(agent, si)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


# 11. /folder clients that never read must not make vireod buffer the files they asked for
def test_folder_streams_to_slow_readers_in_bounded_memory(si, agent):
    import socket
    big = os.path.join(datastore(agent), "big")
    os.makedirs(big, exist_ok=True)
    with open(os.path.join(big, "big.img"), "wb") as f:
        f.truncate(256 << 20)
    data = os.urandom(3 << 20)
    with open(os.path.join(big, "random.bin"), "wb") as f:
        f.write(data)
    status, body = get_folder(agent, "big/random.bin")
    assert status == 200 and body == data, "a streamed download differs from the file"

    before = rss_kib(agent.process.pid)
    token = base64.b64encode(f"root:{ROOT_PASSWORD}".encode()).decode()
    request = (f"GET /folder/big/big.img?dcPath=ha-datacenter&dsName=datastore1 HTTP/1.1\r\n"
               f"Host: 127.0.0.1\r\nAuthorization: Basic {token}\r\n\r\n").encode()
    context = ssl._create_unverified_context()
    stalled = []
    try:
        for _ in range(4):
            raw = socket.create_connection(("127.0.0.1", agent.port))
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            conn = context.wrap_socket(raw)
            conn.sendall(request)
            stalled.append(conn)
        # While they stall, other clients are served, and the server had every chance to
        # read ahead (the old code read each 256 MiB file whole into memory).
        for _ in range(3):
            status, body = get_folder(agent, "big/random.bin")
            assert status == 200 and body == data
        grown = rss_kib(agent.process.pid) - before
        assert grown < 64 * 1024, f"vireod grew by {grown} KiB for four stalled downloads"
        assert si.content.about.apiVersion
    finally:
        for conn in stalled:
            conn.close()
    shutil.rmtree(big)


def vmm_credentials(agent, vm):
    """(real uid, real gid) of the VM's running VMM."""
    with open(os.path.join(agent.data_dir, "run", f"vm-{vm._moId}", "vmm.pid")) as f:
        pid = int(f.read().split()[0])
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])


def opens_as(uid, gid, folder_fd, name):
    """Whether a process with only `uid`/`gid` (as a jailed VMM has) can open `name` in the
    folder `folder_fd` for writing."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            os.close(os.open(name, os.O_RDWR, dir_fd=folder_fd))
            os._exit(0)
        except PermissionError:
            os._exit(1)
        except BaseException:
            os._exit(2)
    status = os.waitpid(pid, 0)[1]
    assert os.WEXITSTATUS(status) in (0, 1), "the check itself failed"
    return os.WEXITSTATUS(status) == 0


# 12. the VMMs shared one uid: one VM's VMM could open what another's was given
def test_each_vmm_runs_as_a_user_of_its_own(si, agent):
    first = create_vm(si, "uid-a", disk_kb=1024, nic=False)
    second = create_vm(si, "uid-b", disk_kb=1024, nic=False)
    for vm in (first, second):
        WaitForTask(vm.PowerOnVM_Task())
    (uid_a, gid), (uid_b, gid_b) = vmm_credentials(agent, first), vmm_credentials(agent, second)
    assert uid_a != uid_b and 0 not in (uid_a, uid_b), "a uid per VM, never root"
    assert gid == gid_b, "one group, which only lets the VMMs search their folders"
    # A snapshot of the running VM hands its disk layers to its VMM's uid...
    WaitForTask(first.CreateSnapshot_Task(name="s", memory=False, quiesce=False))
    folder_path = os.path.join(datastore(agent), "uid-a")
    given = [name for name in os.listdir(folder_path) if os.path.isfile(os.path.join(folder_path, name))
             and os.stat(os.path.join(folder_path, name)).st_uid == uid_a]
    assert given, "the layers were given to the first VMM's user"
    # The VM folder is not the VMMs' to search (they get every file open): no VMM user opens
    # a layer by path...
    folder_fd = os.open(folder_path, os.O_RDONLY | os.O_DIRECTORY)
    mode = os.stat(folder_path).st_mode & 0o777
    try:
        assert mode & 0o011 == 0, f"VM folder mode {mode:o}"
        for name in given:
            assert not opens_as(uid_a, gid, folder_fd, name), name
        # ...and were it searchable, the second VMM's user still could not open what the
        # first's was given, while the first's could (so the check can tell).
        os.chmod(folder_path, 0o711)
        for name in given:
            assert opens_as(uid_a, gid, folder_fd, name), name
            assert not opens_as(uid_b, gid, folder_fd, name), name
    finally:
        os.chmod(folder_path, mode)
        os.close(folder_fd)
    # The second VM keeps its own uid across a restart of its VMM.
    WaitForTask(second.PowerOffVM_Task())
    WaitForTask(second.PowerOnVM_Task())
    assert vmm_credentials(agent, second)[0] == uid_b
    for vm in (first, second):
        WaitForTask(vm.PowerOffVM_Task())
        WaitForTask(vm.Destroy_Task())
