"""Guest operations through the GuestOperationsManager, as Ansible's vmware_vm_shell and
vmware_guest_file_operation drive them: test-guest VMs booted with `vireo.tools=on` and a guest
account on the kernel command line run built-in programs (exit codes read back with
ListProcessesInGuest), keep files in a RAM file system, and take and give files through the
one-time /guestFile URLs. The guest checks the credentials; vireod never logs them."""
import hashlib
import http.client
import os
import ssl
import time
import urllib.parse
from datetime import datetime, timezone

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from test_vm_lifecycle import Agent, console, power_on_booted, si, wait_for  # noqa: F401 (fixtures)
from test_vm_tools import create_tools_vm, wait_tools_running

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")

GUEST_USER = "tester"
GUEST_PASSWORD = "Gu3st-Pa55-e2e-7c1d"
CMDLINE = f"scenario=shell vireo.tools=on vireo.guest-user={GUEST_USER} vireo.guest-password={GUEST_PASSWORD}"


@pytest.fixture(scope="module")
def agent():
    """A vireod logging at debug level, so that the credential test reads everything it logs."""
    a = Agent()
    a.stop()
    a.start({"VIREO_LOG": "debug"})
    yield a
    a.close()


@pytest.fixture(scope="module")
def guest(agent):
    """One running test-guest VM with tools and a guest account, shared by the tests."""
    connection = agent.vireod.connect()
    vm = create_tools_vm(connection, "guest-ops", cmdline=CMDLINE)
    power_on_booted(agent, vm)
    wait_tools_running(agent, vm)
    yield vm
    WaitForTask(vm.PowerOffVM_Task())
    WaitForTask(vm.Destroy_Task())


def creds(password=GUEST_PASSWORD):
    return vim.vm.guest.NamePasswordAuthentication(username=GUEST_USER, password=password)


def managers(si):
    gom = si.content.guestOperationsManager
    return gom.processManager, gom.fileManager, gom.authManager


def same_vm(si, vm):
    return vim.VirtualMachine(vm._moId, si._stub)


def transfer(url, method, body=None):
    """One HTTPS request to a transfer URL: (status, body)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPSConnection(parts.hostname, parts.port,
                                             context=ssl._create_unverified_context(), timeout=120)
    try:
        connection.request(method, f"{parts.path}?{parts.query}", body=body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_service_content_names_the_managers(si):
    gom = si.content.guestOperationsManager
    assert gom._moId == "ha-guest-operations-manager"
    processes, files, auth = managers(si)
    assert isinstance(processes, vim.vm.guest.ProcessManager)
    assert isinstance(files, vim.vm.guest.FileManager)
    assert isinstance(auth, vim.vm.guest.AuthManager)


def test_a_program_runs_and_its_exit_code_is_reported(si, agent, guest):
    vm = same_vm(si, guest)
    processes, _, auth = managers(si)
    auth.ValidateCredentialsInGuest(vm=vm, auth=creds())
    # The test guest hands out no tickets (vireo-tools does; its own tests cover them).
    with pytest.raises(vim.fault.OperationNotSupportedByGuest):
        auth.AcquireCredentialsInGuest(vm=vm, requestedAuth=creds())

    pid = processes.StartProgramInGuest(vm=vm, auth=creds(), spec=vim.vm.guest.ProcessManager.ProgramSpec(
        programPath="/bin/exit", arguments="7"))
    [info] = processes.ListProcessesInGuest(vm=vm, auth=creds(), pids=[pid])
    assert (info.pid, info.name, info.exitCode, info.owner) == (pid, "exit", 7, GUEST_USER)
    assert info.endTime is not None and info.endTime >= info.startTime
    assert info.cmdLine == "/bin/exit 7"

    echo = processes.StartProgramInGuest(vm=vm, auth=creds(), spec=vim.vm.guest.ProcessManager.ProgramSpec(
        programPath="/bin/echo", arguments="hello from guest ops"))
    wait_for(lambda: "guest-op: echo hello from guest ops" in console(agent, vm), "the program's output")
    assert processes.ListProcessesInGuest(vm=vm, auth=creds(), pids=[echo])[0].exitCode == 0

    sleeper = processes.StartProgramInGuest(vm=vm, auth=creds(), spec=vim.vm.guest.ProcessManager.ProgramSpec(
        programPath="/bin/sleep", arguments="600"))
    [running] = processes.ListProcessesInGuest(vm=vm, auth=creds(), pids=[sleeper])
    assert running.exitCode is None and running.endTime is None
    processes.TerminateProcessInGuest(vm=vm, auth=creds(), pid=sleeper)
    [killed] = processes.ListProcessesInGuest(vm=vm, auth=creds(), pids=[sleeper])
    assert killed.exitCode == 137 and killed.endTime is not None
    with pytest.raises(vim.fault.GuestProcessNotFound):
        processes.TerminateProcessInGuest(vm=vm, auth=creds(), pid=sleeper)

    listed = {p.pid for p in processes.ListProcessesInGuest(vm=vm, auth=creds())}
    assert {pid, echo, sleeper} <= listed
    assert processes.ReadEnvironmentVariableInGuest(vm=vm, auth=creds(), names=["USER"]) == [f"USER={GUEST_USER}"]

    with pytest.raises(vim.fault.FileNotFound):
        processes.StartProgramInGuest(vm=vm, auth=creds(), spec=vim.vm.guest.ProcessManager.ProgramSpec(
            programPath="/bin/no-such-program", arguments=""))


def test_process_and_file_times_are_the_guests_wall_clock(si, guest):
    """The test guest reads its platform's real-time clock (the VMM's CMOS RTC keeps UTC) for
    each request, so times are today's, to the second, not seconds since 1970."""
    vm = same_vm(si, guest)
    processes, files, _ = managers(si)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    pid = processes.StartProgramInGuest(vm=vm, auth=creds(), spec=vim.vm.guest.ProcessManager.ProgramSpec(
        programPath="/bin/true", arguments=""))
    [info] = processes.ListProcessesInGuest(vm=vm, auth=creds(), pids=[pid])
    files.MakeDirectoryInGuest(vm=vm, auth=creds(), directoryPath="/clock", createParentDirectories=False)
    url = files.InitiateFileTransferToGuest(vm=vm, auth=creds(), guestFilePath="/clock/now.txt",
                                            fileAttributes=vim.vm.guest.FileManager.PosixFileAttributes(),
                                            fileSize=3, overwrite=False)
    assert transfer(url, "PUT", b"now")[0] == 200
    [written] = files.ListFilesInGuest(vm=vm, auth=creds(), filePath="/clock").files
    after = datetime.now(timezone.utc)
    assert before <= info.startTime <= info.endTime <= after, (before, info.startTime, info.endTime, after)
    assert before <= written.attributes.modificationTime <= after, (before, written.attributes, after)
    # A time set by the client is kept as given.
    chosen = datetime(2001, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
    files.ChangeFileAttributesInGuest(vm=vm, auth=creds(), guestFilePath="/clock/now.txt",
                                      fileAttributes=vim.vm.guest.FileManager.PosixFileAttributes(
                                          modificationTime=chosen))
    [changed] = files.ListFilesInGuest(vm=vm, auth=creds(), filePath="/clock").files
    assert changed.attributes.modificationTime == chosen
    files.DeleteDirectoryInGuest(vm=vm, auth=creds(), directoryPath="/clock", recursive=True)


def test_a_file_goes_in_and_comes_back_identical(si, guest):
    vm = same_vm(si, guest)
    _, files, _ = managers(si)
    files.MakeDirectoryInGuest(vm=vm, auth=creds(), directoryPath="/data/in", createParentDirectories=True)
    payload = os.urandom(100_000)
    attributes = vim.vm.guest.FileManager.PosixFileAttributes()

    url = files.InitiateFileTransferToGuest(vm=vm, auth=creds(), guestFilePath="/data/in/blob.bin",
                                            fileAttributes=attributes, fileSize=len(payload), overwrite=False)
    assert urllib.parse.urlsplit(url).path == "/guestFile"
    started = time.monotonic()
    status, _ = transfer(url, "PUT", payload)
    upload_seconds = time.monotonic() - started
    assert status == 200

    listing = files.ListFilesInGuest(vm=vm, auth=creds(), filePath="/data/in")
    assert [(f.path, f.type, f.size) for f in listing.files] == [("blob.bin", "file", len(payload))]
    assert listing.remaining == 0

    info = files.InitiateFileTransferFromGuest(vm=vm, auth=creds(), guestFilePath="/data/in/blob.bin")
    assert info.size == len(payload)
    started = time.monotonic()
    status, body = transfer(info.url, "GET")
    download_seconds = time.monotonic() - started
    assert status == 200
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(payload).hexdigest()
    print(f"\ntest guest transfer: {len(payload)} bytes, up {len(payload) / upload_seconds / 1e6:.3f} MB/s, "
          f"down {len(payload) / download_seconds / 1e6:.3f} MB/s")

    with pytest.raises(vim.fault.FileAlreadyExists):
        files.InitiateFileTransferToGuest(vm=vm, auth=creds(), guestFilePath="/data/in/blob.bin",
                                          fileAttributes=attributes, fileSize=1, overwrite=False)
    with pytest.raises(vim.fault.FileNotFound):
        files.InitiateFileTransferFromGuest(vm=vm, auth=creds(), guestFilePath="/data/in/missing")


def test_file_and_directory_operations(si, guest):
    vm = same_vm(si, guest)
    _, files, _ = managers(si)
    temp_dir = files.CreateTemporaryDirectoryInGuest(vm=vm, auth=creds(), prefix="work-", suffix=".d")
    assert temp_dir.startswith("/tmp/work-") and temp_dir.endswith(".d")
    temp_file = files.CreateTemporaryFileInGuest(vm=vm, auth=creds(), prefix="t-", suffix=".txt",
                                                 directoryPath=temp_dir)
    assert temp_file.startswith(temp_dir + "/t-")
    files.MoveFileInGuest(vm=vm, auth=creds(), srcFilePath=temp_file, dstFilePath=temp_dir + "/renamed.txt",
                          overwrite=False)
    files.ChangeFileAttributesInGuest(vm=vm, auth=creds(), guestFilePath=temp_dir + "/renamed.txt",
                                      fileAttributes=vim.vm.guest.FileManager.PosixFileAttributes(permissions=0o600))
    [entry] = files.ListFilesInGuest(vm=vm, auth=creds(), filePath=temp_dir, matchPattern="*.txt").files
    assert (entry.path, entry.attributes.permissions) == ("renamed.txt", 0o600)

    files.MoveDirectoryInGuest(vm=vm, auth=creds(), srcDirectoryPath=temp_dir, dstDirectoryPath="/tmp/moved")
    assert [f.path for f in files.ListFilesInGuest(vm=vm, auth=creds(), filePath="/tmp/moved").files] == ["renamed.txt"]
    with pytest.raises(vim.fault.DirectoryNotEmpty):
        files.DeleteDirectoryInGuest(vm=vm, auth=creds(), directoryPath="/tmp/moved", recursive=False)
    with pytest.raises(vim.fault.NotAFile):
        files.DeleteFileInGuest(vm=vm, auth=creds(), filePath="/tmp/moved")
    files.DeleteFileInGuest(vm=vm, auth=creds(), filePath="/tmp/moved/renamed.txt")
    files.DeleteDirectoryInGuest(vm=vm, auth=creds(), directoryPath="/tmp/moved", recursive=False)
    with pytest.raises(vim.fault.FileNotFound):
        files.ListFilesInGuest(vm=vm, auth=creds(), filePath="/tmp/moved")


def test_transfer_urls_work_once_and_only_with_their_token(si, guest):
    vm = same_vm(si, guest)
    _, files, _ = managers(si)
    attributes = vim.vm.guest.FileManager.PosixFileAttributes()
    url = files.InitiateFileTransferToGuest(vm=vm, auth=creds(), guestFilePath="/tmp/once.txt",
                                            fileAttributes=attributes, fileSize=5, overwrite=True)
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    forged = url.replace(query["token"], "0" * len(query["token"]))
    assert transfer(forged, "PUT", b"EVIL!")[0] == 404
    other_id = url.replace(f"id={query['id']}", f"id={int(query['id']) + 1000}")
    assert transfer(other_id, "PUT", b"EVIL!")[0] == 404
    assert transfer(url.replace("token=", "token=x"), "PUT", b"EVIL!")[0] == 404
    # The forged attempts did not use the URL up; its first real use works, the second does not.
    assert transfer(url, "PUT", b"hello")[0] == 200
    assert transfer(url, "PUT", b"again")[0] == 404

    info = files.InitiateFileTransferFromGuest(vm=vm, auth=creds(), guestFilePath="/tmp/once.txt")
    assert transfer(info.url, "PUT", b"wrong way")[0] == 405
    assert transfer(info.url, "GET")[0] == 404  # the wrong-method attempt used it up

    info = files.InitiateFileTransferFromGuest(vm=vm, auth=creds(), guestFilePath="/tmp/once.txt")
    assert transfer(info.url, "GET") == (200, b"hello")

    longer = files.InitiateFileTransferToGuest(vm=vm, auth=creds(), guestFilePath="/tmp/longer.txt",
                                               fileAttributes=attributes, fileSize=3, overwrite=True)
    assert transfer(longer, "PUT", b"more than three")[0] == 400
    with pytest.raises(vmodl.fault.InvalidArgument):
        files.InitiateFileTransferToGuest(vm=vm, auth=creds(), guestFilePath="/tmp/huge.bin",
                                          fileAttributes=attributes, fileSize=1 << 40, overwrite=True)
    for bad_path in ("relative/path", "/tmp/../etc/passwd", "/tmp//x"):
        with pytest.raises(vmodl.fault.InvalidArgument):
            files.InitiateFileTransferToGuest(vm=vm, auth=creds(), guestFilePath=bad_path,
                                              fileAttributes=attributes, fileSize=1, overwrite=True)


def test_wrong_credentials_are_an_invalid_guest_login(si, guest):
    vm = same_vm(si, guest)
    processes, files, auth = managers(si)
    with pytest.raises(vim.fault.InvalidGuestLogin):
        auth.ValidateCredentialsInGuest(vm=vm, auth=creds("wrong-password"))
    with pytest.raises(vim.fault.InvalidGuestLogin):
        processes.StartProgramInGuest(vm=vm, auth=creds("wrong-password"),
                                      spec=vim.vm.guest.ProcessManager.ProgramSpec(programPath="/bin/true",
                                                                                   arguments=""))
    with pytest.raises(vim.fault.InvalidGuestLogin):
        files.InitiateFileTransferFromGuest(vm=vm, auth=creds(""), guestFilePath="/tmp/once.txt")
    with pytest.raises(vim.fault.InvalidGuestLogin):
        auth.ValidateCredentialsInGuest(vm=vm, auth=vim.vm.guest.TicketedSessionAuthentication(ticket="forged"))


def test_without_tools_guest_operations_are_unavailable(si, agent):
    vm = create_tools_vm(si, "guest-ops-no-tools", cmdline="scenario=shell")
    _, _, auth = managers(si)
    with pytest.raises(vim.fault.InvalidPowerState):
        auth.ValidateCredentialsInGuest(vm=vm, auth=creds())
    power_on_booted(agent, vm)
    with pytest.raises(vim.fault.GuestOperationsUnavailable):
        auth.ValidateCredentialsInGuest(vm=vm, auth=creds())
    WaitForTask(vm.PowerOffVM_Task())
    WaitForTask(vm.Destroy_Task())


def test_guest_operations_need_their_privileges(si, agent, guest):
    role = si.content.authorizationManager.AddAuthorizationRole(name="guest-query-only",
                                                                privIds=["VirtualMachine.GuestOperations.Query"])
    account = vim.host.LocalAccountManager.AccountSpecification(id="gq", password="Gq-pass-1234")
    si.content.accountManager.CreateUser(user=account)
    si.content.authorizationManager.SetEntityPermissions(
        entity=si.content.rootFolder,
        permission=[vim.AuthorizationManager.Permission(principal="gq", group=False, roleId=role, propagate=True)])
    limited = agent.vireod.connect(user="gq", pwd="Gq-pass-1234")
    vm = same_vm(limited, guest)
    processes, files, auth = managers(limited)
    auth.ValidateCredentialsInGuest(vm=vm, auth=creds())
    with pytest.raises(vim.fault.NoPermission) as raised:
        processes.StartProgramInGuest(vm=vm, auth=creds(),
                                      spec=vim.vm.guest.ProcessManager.ProgramSpec(programPath="/bin/true",
                                                                                   arguments=""))
    assert raised.value.privilegeId == "VirtualMachine.GuestOperations.Execute"
    with pytest.raises(vim.fault.NoPermission) as raised:
        files.MakeDirectoryInGuest(vm=vm, auth=creds(), directoryPath="/nope", createParentDirectories=False)
    assert raised.value.privilegeId == "VirtualMachine.GuestOperations.Modify"


def test_guest_credentials_are_never_logged(agent, guest):
    """Runs last in this module: every test above sent the password, right or wrong."""
    # The guest's account is set on its kernel command line, which the VM's config and its
    # boot console show: that setting is the only place the password may appear.
    setting = f"vireo.guest-password={GUEST_PASSWORD}".encode()
    leaked = []
    for folder, _, names in os.walk(agent.data_dir):
        for name in names:
            path = os.path.join(folder, name)
            if name.endswith((".elf", ".qcow2")) or not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                text = f.read().replace(setting, b"")
            if GUEST_PASSWORD.encode() in text or b"wrong-password" in text:
                leaked.append(path)
    assert leaked == []
    with open(os.path.join(agent.data_dir, "vireod.log"), "rb") as f:
        log = f.read()
    # The log is at debug level and saw the guest's refusals.
    assert b"InvalidGuestLogin" in log


def test_ansible_vmware_vm_shell_runs_programs_and_reports_exit_codes(agent, guest):
    """Stock community.vmware.vmware_vm_shell, unmodified: it finds the VM by name, starts the
    program through the GuestOperationsManager and waits for its exit code."""
    from ansible_modules import run_module
    shell = dict(vm_id=guest.name, vm_id_type="vm_name", vm_username=GUEST_USER, vm_password=GUEST_PASSWORD,
                 wait_for_process=True)
    done = run_module(agent.vireod, "vmware_vm_shell", vm_shell="/bin/echo", vm_shell_args="hello", **shell)
    assert not done.get("failed"), done.get("msg")
    assert done["changed"] and done["exit_code"] == 0 and done["cmd_line"] == "/bin/echo hello", done
    assert done["owner"] == GUEST_USER and done["uuid"] == guest.config.uuid
    failed = run_module(agent.vireod, "vmware_vm_shell", vm_shell="/bin/exit", vm_shell_args="7", **shell)
    assert failed.get("failed") and failed["exit_code"] == 7, failed
