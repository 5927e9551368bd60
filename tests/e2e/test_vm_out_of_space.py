"""A datastore that fills up (issue 19): the test guest's disk lives on a small tmpfs datastore,
the host fills the rest of it, and the guest writes more than fits. The VM is paused with ESXi's
out-of-space question instead of the guest seeing an I/O error; Retry without space asks again;
once space is freed, Retry resumes the VM and the guest's write completes without an error,
with every sector on disk (qemu-img check, and the image read back on the host against the
guest's pattern). Cancel powers the VM off."""
import os
import subprocess
import tempfile

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from test_crash_recovery import guest, vmm_state
from conftest import INTERNAL_NETWORK
from test_vm_lifecycle import Agent, config_spec, console, root_pool, wait_for
from test_vm_snapshots import PROMPT, control

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK) or os.geteuid() != 0,
                                reason="SKIPPED: needs /dev/kvm and root (to mount the small tmpfs datastore)")

DATASTORE_MIB = 48
# What the host leaves free on the datastore before the guest writes WRITE_SECTORS (20 MiB).
SPARE_MIB = 4
WRITE_SECTORS = 40960
CONFIG = INTERNAL_NETWORK + """
[[datastore]]
name = "datastore1"
path = "datastore1"

[[datastore]]
name = "small"
path = "small"
"""


class SmallDatastoreAgent(Agent):
    """A vireod with a second datastore, `small`: a tmpfs of DATASTORE_MIB MiB."""

    def start(self, extra_env=None):
        small = os.path.join(self.data_dir, "small")
        if not os.path.ismount(small):
            os.makedirs(small, exist_ok=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DATASTORE_MIB}m", "vireo-small", small], check=True)
        super().start(extra_env)


@pytest.fixture(scope="module")
def agent():
    a = SmallDatastoreAgent(config=CONFIG)
    try:
        yield a
    finally:
        small = os.path.join(a.data_dir, "small")
        try:
            a.close()
        finally:
            subprocess.run(["umount", "-l", small], check=False)
            subprocess.run(["rm", "-rf", a.data_dir], check=False)


def pattern(seed, sector):
    """One sector of the test guest's seeded pattern (tests/guest/README.md)."""
    mask = (1 << 64) - 1
    state = seed ^ ((sector * 0x9E3779B97F4A7C15) & mask) or 0x9E3779B97F4A7C15
    out = bytearray()
    for _ in range(64):
        state ^= (state << 13) & mask
        state ^= state >> 7
        state ^= (state << 17) & mask
        out += state.to_bytes(8, "little")
    return bytes(out)


def fill(agent, keep_mib):
    """Fills the small datastore up to `keep_mib` MiB free with a file the test can delete."""
    small = os.path.join(agent.data_dir, "small")
    stat = os.statvfs(small)
    size = stat.f_bavail * stat.f_frsize - keep_mib * (1 << 20)
    filler = os.path.join(small, "filler")
    with open(filler, "wb") as f:
        chunk = b"\xff" * (1 << 20)
        for _ in range(size >> 20):
            f.write(chunk)
    return filler


def start_vm(si, agent, name):
    spec = config_spec(name, scenario="shell", nic=False)
    spec.files = vim.vm.FileInfo(vmPathName="[small]")
    task = si.content.rootFolder.childEntity[0].vmFolder.CreateVM_Task(config=spec, pool=root_pool(si))
    WaitForTask(task)
    vm = task.info.result
    WaitForTask(vm.PowerOnVM_Task())
    wait_for(lambda: console(agent, vm).rstrip().endswith(PROMPT.strip()), "the guest's shell prompt")
    return vm


def write_until_full(agent, vm, seed):
    """Types a write of WRITE_SECTORS sectors that cannot fit; returns the question it raises."""
    control(agent, vm, {"cmd": "serial-input", "text": f"blk write 0 0 {WRITE_SECTORS} {seed}\n"})
    wait_for(lambda: vm.runtime.question is not None, "the out-of-space question", timeout=120)
    return vm.runtime.question


def image_of(agent, vm):
    return os.path.join(agent.data_dir, "small", vm.name, f"{vm.name}.qcow2")


def qemu_img_check(image):
    return subprocess.run(["qemu-img", "check", image], capture_output=True, text=True)


def test_a_full_datastore_pauses_the_vm_with_a_question_and_retry_completes_the_write(agent):
    si = agent.vireod.connect()
    vm = start_vm(si, agent, "full")
    filler = fill(agent, SPARE_MIB)
    question = write_until_full(agent, vm, seed=4242)

    assert question.id.startswith("_vmx")
    assert question.message[0].id == "msg.hbacommon.outofspace"
    assert question.text.startswith("msg.hbacommon.outofspace:There is no more space for virtual disk 'full.qcow2'."), \
        question.text
    assert "freeing disk space on the relevant volume, and clicking Retry" in question.text
    assert [(c.key, c.label) for c in question.choice.choiceInfo] == [("0", "Retry"), ("1", "Cancel")]
    assert vm.runtime.powerState == "poweredOn" and vm.runtime.paused
    assert vm.overallStatus == "yellow" and vm.summary.overallStatus == "yellow"
    assert vmm_state(agent, vm) == "paused"
    events = si.content.eventManager.QueryEvents(vim.event.EventFilterSpec(
        entity=vim.event.EventFilterSpec.ByEntity(entity=vm, recursion="self")))
    assert any(isinstance(e, vim.event.VmMessageErrorEvent) and "There is no more space" in e.fullFormattedMessage
               for e in events)

    with pytest.raises(vmodl.fault.InvalidArgument):
        vm.AnswerVM(questionId=question.id, answerChoice="7")
    with pytest.raises(vim.fault.ConcurrentAccess):
        vm.AnswerVM(questionId="_vmx999", answerChoice="0")

    # Retry with the datastore still full: the write is held again and the VM asks again.
    vm.AnswerVM(questionId=question.id, answerChoice="0")
    wait_for(lambda: vm.runtime.question is not None and vm.runtime.question.id != question.id,
             "the question asked again")
    assert vmm_state(agent, vm) == "paused"

    os.remove(filler)
    vm.AnswerVM(questionId=vm.runtime.question.id, answerChoice="0")
    wait_for(lambda: "write ok" in console(agent, vm) or "error:" in console(agent, vm), "the guest's write")
    assert "error:" not in console(agent, vm), console(agent, vm)[-500:]
    assert vm.runtime.question is None and not vm.runtime.paused
    assert vm.overallStatus == "green"
    assert vmm_state(agent, vm) == "running"
    guest(agent, vm, "blk flush 0", "flush ok")
    guest(agent, vm, f"blk verify 0 0 {WRITE_SECTORS} 4242", "verify ok")

    WaitForTask(vm.PowerOffVM_Task())
    image = image_of(agent, vm)
    checked = qemu_img_check(image)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with tempfile.TemporaryDirectory(prefix="vireo-full-") as tmp:
        raw = os.path.join(tmp, "disk.raw")
        subprocess.run(["qemu-img", "convert", "-O", "raw", image, raw], check=True)
        with open(raw, "rb") as f:
            for sector in list(range(0, WRITE_SECTORS, 97)) + [WRITE_SECTORS - 1]:
                f.seek(sector * 512)
                assert f.read(512) == pattern(4242, sector), f"sector {sector}"
    WaitForTask(vm.Destroy_Task())


def test_cancel_powers_the_vm_off(agent):
    si = agent.vireod.connect()
    vm = start_vm(si, agent, "cancelled")
    filler = fill(agent, SPARE_MIB)
    try:
        question = write_until_full(agent, vm, seed=99)
        vm.AnswerVM(questionId=question.id, answerChoice="1")
        wait_for(lambda: vm.runtime.powerState == "poweredOff", "the VM to power off")
        assert vm.runtime.question is None and vm.overallStatus == "green"
        checked = qemu_img_check(image_of(agent, vm))
        # Cut off like a power loss: writes never flushed may leave leaked clusters, no errors.
        assert checked.returncode in (0, 3) and "ERROR" not in checked.stdout, checked.stdout + checked.stderr
    finally:
        os.remove(filler)
    WaitForTask(vm.Destroy_Task())


def leave_free(agent, nbytes):
    """Fills the small datastore completely, then frees `nbytes` of it."""
    filler = os.path.join(agent.data_dir, "small", "filler")
    with open(filler, "ab", buffering=0) as f:
        for chunk in (1 << 20, 4096):
            try:
                while True:
                    f.write(b"\xff" * chunk)
            except OSError:
                pass
    os.truncate(filler, max(0, os.path.getsize(filler) - nbytes))
    return filler


def snapshot_state(agent, vm):
    """What a snapshot task may change: the VM folder's files and the API's snapshot list."""
    folder = os.path.dirname(image_of(agent, vm))
    names = [s.name for s in (vm.snapshot.rootSnapshotList if vm.snapshot else [])]
    return sorted(os.listdir(folder)), names


def assert_clean(agent, si, vm):
    """Every qcow2 checks clean, the API tree is the files', the guest runs, nothing asked."""
    from test_crash_recovery import check_truthful
    folder = os.path.dirname(image_of(agent, vm))
    for image in (f for f in os.listdir(folder) if f.endswith(".qcow2")):
        checked = qemu_img_check(os.path.join(folder, image))
        assert checked.returncode == 0, (image, checked.stdout + checked.stderr)
    check_truthful(agent, si, vm._moId)
    assert vm.runtime.powerState == "poweredOn" and vmm_state(agent, vm) == "running"


def test_snapshot_and_merge_tasks_on_a_full_datastore_fail_cleanly(agent):
    """With too little space, CreateSnapshot (with and without memory) and RemoveSnapshot's merge
    fail with a FileFault and leave nothing half-made: the VM folder's files and the snapshot
    list are as before (a removal may leave its layers to consolidation, as ESXi does), every
    qcow2 checks clean, and the guest runs on. The free space grows a page at a time until the
    snapshot fits, so each step of the task meets the full disk once. Once space is freed,
    the merge is done and the guest's data reads back."""
    si = agent.vireod.connect()
    vm = start_vm(si, agent, "tight")
    guest(agent, vm, "blk write 0 0 2048 11", "write ok")
    WaitForTask(vm.CreateSnapshot_Task(name="kept", description="", memory=False, quiesce=False))
    # 6 MiB of new clusters in the layer above "kept": its merge has to place them somewhere.
    guest(agent, vm, "blk write 0 4096 12288 12", "write ok")
    guest(agent, vm, "blk flush 0", "flush ok")

    filler = leave_free(agent, 1 << 20)
    before = snapshot_state(agent, vm)
    with pytest.raises(vim.fault.FileFault):
        WaitForTask(vm.CreateSnapshot_Task(name="no room", description="", memory=True, quiesce=False))
    assert snapshot_state(agent, vm) == before
    assert_clean(agent, si, vm)

    failures = 0
    for free in range(0, 2 << 20, 4096):
        os.remove(filler)
        filler = leave_free(agent, free)
        before = snapshot_state(agent, vm)
        try:
            WaitForTask(vm.CreateSnapshot_Task(name="fits", description="", memory=False, quiesce=False))
            break
        except vim.fault.FileFault:
            failures += 1
        assert snapshot_state(agent, vm) == before, free
        assert_clean(agent, si, vm)
    print(f"a snapshot fitted in {free} bytes, after {failures} clean failures with less")
    assert failures > 0 and [s.name for s in vm.snapshot.rootSnapshotList] == ["kept"]
    assert_clean(agent, si, vm)

    for free in (0, 64 << 10, 1 << 20, 3 << 20):
        os.remove(filler)
        filler = leave_free(agent, free)
        kept = vm.snapshot.rootSnapshotList[0].snapshot
        try:
            WaitForTask(kept.RemoveSnapshot_Task(removeChildren=False, consolidate=True))
        except vim.fault.FileFault:
            # Nothing removed, or (as ESXi does) removed with its layers left to consolidate.
            names = [s.name for s in vm.snapshot.rootSnapshotList]
            assert names == ["kept"] or vm.runtime.consolidationNeeded, (free, names)
        assert_clean(agent, si, vm)
        if vm.snapshot.rootSnapshotList[0].name != "kept":
            break
    os.remove(filler)
    if vm.snapshot.rootSnapshotList[0].name == "kept":
        WaitForTask(vm.snapshot.rootSnapshotList[0].snapshot.RemoveSnapshot_Task(removeChildren=False,
                                                                                 consolidate=True))
    if vm.runtime.consolidationNeeded:
        WaitForTask(vm.ConsolidateVMDisks_Task())
    assert [s.name for s in vm.snapshot.rootSnapshotList] == ["fits"] and not vm.runtime.consolidationNeeded
    guest(agent, vm, "blk verify 0 0 2048 11", "verify ok")
    guest(agent, vm, "blk verify 0 4096 12288 12", "verify ok")
    assert_clean(agent, si, vm)
    WaitForTask(vm.PowerOffVM_Task())
    WaitForTask(vm.Destroy_Task())
