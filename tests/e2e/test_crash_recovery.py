"""Every task survives a crash of vireod (issue 19). vireod is started with
VIREO_CRASH_AT=<task>:<step>, which makes it abort() right after its task journal records that
step; the task is started through pyVmomi, vireod dies, and a normal vireod is started on the same
data dir. After each restart: the API's snapshot tree is the one in the `.vmsd` and in the disk
tree (`.vtree`), every qcow2 passes `qemu-img check`, the data the guest flushed before the kill
reads back, no VM is left paused, no journal is left, an event says what was recovered, and the
next snapshot (taken and removed) succeeds. `test_random_kills` SIGKILLs vireod at random moments
of random tasks instead (VIREO_SOAK_KILLS of them; scripts/soak.sh runs hundreds)."""
import json
import os
import random
import re
import signal
import socket
import subprocess
import time

import pytest
from pyVim.connect import Disconnect
from pyVim.task import WaitForTask
from pyVmomi import vim

from conftest import ROOT_PASSWORD
from test_vm_lifecycle import BIN_DIR, Agent, console, create_vm, wait_for
from test_vm_snapshots import PROMPT, host_path, type_command

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")


class CrashAgent(Agent):
    """An Agent whose vireod can be started with a crash point."""

    def start(self, crash_at=None):
        super().start({"VIREO_CRASH_AT": crash_at} if crash_at else None)

    def restart(self, crash_at=None):
        if self.process.poll() is None:
            self.stop()
        self.start(crash_at)
        return self.vireod.connect()


@pytest.fixture(scope="module")
def agent():
    a = CrashAgent()
    yield a
    a.close()


def by_id(si, moid):
    return vim.VirtualMachine(moid, si._stub)


def vmm_state(agent, vm):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(os.path.join(agent.data_dir, "run", f"vm-{vm._moId}", "control.sock"))
        s.sendall(b'{"cmd":"status"}\n')
        return json.loads(s.makefile().readline())["state"]


def guest(agent, vm, command, answer):
    line = type_command(agent, vm, command, answer.split()[0])
    assert line.startswith(answer), (command, line)


class GuestData:
    """Patterns the guest wrote and flushed (sector, seed), each 64 sectors at its own place."""

    def __init__(self):
        self.written = []

    def write(self, agent, vm):
        sector, seed = 256 * (len(self.written) + 1), random.randrange(1, 1 << 31)
        guest(agent, vm, f"blk write 0 {sector} 64 {seed}", "write ok")
        guest(agent, vm, "blk flush 0", "flush ok")
        self.written.append((sector, seed))

    def verify(self, agent, vm):
        for sector, seed in self.written:
            guest(agent, vm, f"blk verify 0 {sector} 64 {seed}", "verify ok")


def api_tree(vm):
    """{uid: (name, parent uid)} and the current uid, as the API shows them."""
    tree = {}

    def walk(nodes, parent):
        for node in nodes:
            tree[node.id] = (node.name, parent)
            walk(node.childSnapshotList, node.id)

    info = vm.snapshot
    if info is None:
        return tree, None
    walk(info.rootSnapshotList, None)
    current = next((uid for uid, _ in tree.items() if vm.snapshot.currentSnapshot._moId.endswith(f"-snapshot-{uid}")),
                   None)
    return tree, current


def vmsd_tree(folder):
    """The same from the `.vmsd` file."""
    files = [f for f in os.listdir(folder) if f.endswith(".vmsd")]
    if not files:
        return {}, None
    values = {}
    with open(os.path.join(folder, files[0])) as f:
        for line in f:
            key, _, value = line.partition(" = ")
            values[key.strip()] = value.strip().strip('"')
    tree = {}
    for n in range(int(values.get("snapshot.numSnapshots", 0))):
        parent = values.get(f"snapshot{n}.parent")
        tree[int(values[f"snapshot{n}.uid"])] = (values[f"snapshot{n}.displayName"],
                                                 int(parent) if parent else None)
    current = values.get("snapshot.current")
    return tree, int(current) if current else None


def vtree_uids(folder):
    """The VM snapshot uids of every disk tree, and every layer file the trees name."""
    uids, layers = [], []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".vtree"):
            with open(os.path.join(folder, name)) as f:
                tree = json.load(f)
            assert tree["pending-merge"] is None, name
            uids.append({int(s["name"].rsplit("-", 1)[1]) for s in tree["snapshots"]
                         if s["name"].startswith("vm-snapshot-")})
            layers.extend(layer["file"] for layer in tree["layers"])
    return uids, layers


def check_truthful(agent, si, moid, data=None):
    """The invariants of issue 19 on one VM after a restart; returns the VM."""
    vm = by_id(si, moid)
    folder = os.path.dirname(host_path(agent, vm.config.files.vmPathName))
    api, api_current = api_tree(vm)
    listed, listed_current = vmsd_tree(folder)
    assert api == listed and api_current == listed_current, (api, listed, api_current, listed_current)
    disk_uids, layers = vtree_uids(folder)
    for uids in disk_uids:
        assert uids == set(api), (uids, api)
    for layer in layers:
        assert os.path.exists(os.path.join(folder, layer)), layer
    for image in (f for f in os.listdir(folder) if f.endswith(".qcow2")):
        done = subprocess.run(["qemu-img", "check", os.path.join(folder, image)], capture_output=True, text=True)
        assert done.returncode == 0, (image, done.stdout, done.stderr)
    leftovers = [f for f in os.listdir(folder) if f.startswith("vireo-journal-")]
    assert leftovers == [], leftovers
    for name in os.listdir(folder):
        if re.fullmatch(r"snapshot-\d+", name):
            assert int(name.split("-")[1]) in api, f"{name} belongs to no snapshot"
    assert vm.runtime.question is None
    if vm.runtime.powerState == "poweredOn":
        assert vmm_state(agent, vm) == "running", "a VM was left paused"
        if data:
            data.verify(agent, vm)
    return vm


def recovery_events(si, vm):
    manager = si.content.eventManager
    events = manager.QueryEvents(vim.event.EventFilterSpec(entity=vim.event.EventFilterSpec.ByEntity(
        entity=vm, recursion="self")))
    return [e.fullFormattedMessage for e in events if "recovered from an interrupted task" in
            (e.fullFormattedMessage or "")]


def next_snapshot_works(vm):
    task = vm.CreateSnapshot_Task(name="after", description="", memory=False, quiesce=False)
    WaitForTask(task)
    WaitForTask(task.info.result.RemoveSnapshot_Task(removeChildren=False, consolidate=True))


def crash_during(agent, point, start_task, while_down=None):
    """Restarts vireod with `point` armed, starts the task, waits for the abort, calls
    `while_down`, restarts."""
    si = agent.restart(crash_at=point)
    try:
        start_task(si)
    except Exception:
        pass  # the connection may break before the reply
    try:
        agent.process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"vireod never reached {point}")
    assert agent.process.returncode == -signal.SIGABRT, agent.process.returncode
    if while_down:
        while_down()
    return agent.restart()


def snapshot_task(moid, memory=False):
    return lambda si: by_id(si, moid).CreateSnapshot_Task(name="killed", description="", memory=memory,
                                                          quiesce=False)


def remove_task(moid, consolidate=True):
    def start(si):
        vm = by_id(si, moid)
        vm.snapshot.rootSnapshotList[-1].snapshot.RemoveSnapshot_Task(removeChildren=False,
                                                                      consolidate=consolidate)
    return start


def take(si, moid, name):
    task = by_id(si, moid).CreateSnapshot_Task(name=name, description="", memory=False, quiesce=False)
    WaitForTask(task)


STUN = ["begun", "vm-paused", "disks-detached", "trees-changed", "disks-attached"]
RUNNING_MATRIX = (
    [(f"snapshot-create:{s}", "create") for s in STUN + ["listed"]]
    + [("snapshot-create:state-saved", "create-memory")]
    + [(f"snapshot-remove:{s}", "remove") for s in STUN + ["listed"]]
    + [("snapshot-remove:trees-changed", "remove-keep")]
    + [(f"consolidate:{s}", "consolidate") for s in STUN]
    + [(f"clone:{s}", "clone") for s in ["begun", "disks-copied", "registered", "temporary-removed"]]
    + [(f"suspend:{s}", "suspend") for s in ["begun", "saved", "vmm-stopping"]]
    # Killed with the VMM's save under way: recovery waits for it, then undoes the task.
    + [("vmm:save", "suspend"), ("vmm:save", "create-memory")]
)
OFF_MATRIX = (
    [(f"snapshot-revert:{s}", "revert") for s in ["begun", "trees-changed", "listed"]]
    + [(f"destroy:{s}", "destroy") for s in ["begun", "unregistered", "holds-released"]]
)


def test_kills_at_every_step_of_tasks_on_a_running_vm(agent):
    si = agent.vireod.connect()
    vm = create_vm(si, "crashy", scenario="shell", nic=False)
    moid = vm._moId
    WaitForTask(vm.PowerOnVM_Task())
    wait_for(lambda: console(agent, vm).endswith(PROMPT), "the guest's shell prompt")
    data = GuestData()
    clones = 0
    for point, task in RUNNING_MATRIX:
        vm = by_id(si, moid)
        if vm.runtime.powerState == "suspended":
            WaitForTask(vm.PowerOnVM_Task())
        data.write(agent, vm)
        if task in ("remove", "remove-keep"):
            take(si, moid, "to remove")
        if task == "consolidate":
            take(si, moid, "to merge")
            remove_task(moid, consolidate=False)(si)
            wait_for(lambda: by_id(si, moid).runtime.consolidationNeeded, "consolidation to be needed")
        start = {
            "create": snapshot_task(moid),
            "create-memory": snapshot_task(moid, memory=True),
            "remove": remove_task(moid),
            "remove-keep": remove_task(moid, consolidate=False),
            "consolidate": lambda s: by_id(s, moid).ConsolidateVMDisks_Task(),
            "clone": lambda s: by_id(s, moid).CloneVM_Task(
                folder=s.content.rootFolder.childEntity[0].vmFolder, name=f"crashy-clone-{clones}",
                spec=vim.vm.CloneSpec(location=vim.vm.RelocateSpec())),
            "suspend": lambda s: by_id(s, moid).SuspendVM_Task(),
        }[task]
        si = crash_during(agent, point, start)
        vm = check_truthful(agent, si, moid, data if by_id(si, moid).runtime.powerState == "poweredOn" else None)
        assert recovery_events(si, vm), f"no event after a kill at {point}"
        if vm.runtime.powerState == "suspended":
            WaitForTask(vm.PowerOnVM_Task())
            vm = check_truthful(agent, si, moid, data)
        assert vm.runtime.powerState == "poweredOn", point
        next_snapshot_works(vm)
        if task == "clone":
            for other in si.content.rootFolder.childEntity[0].vmFolder.childEntity:
                if other.name == f"crashy-clone-{clones}":
                    check_truthful(agent, si, other._moId)
                    WaitForTask(other.Destroy_Task())
            assert not os.path.exists(os.path.join(agent.data_dir, "datastore1", f"crashy-clone-{clones}"))
            clones += 1
        check_truthful(agent, si, moid, data)
    WaitForTask(by_id(si, moid).PowerOffVM_Task())


def test_kills_at_every_step_of_tasks_on_a_powered_off_vm(agent):
    si = agent.vireod.connect()
    for n, (point, task) in enumerate(OFF_MATRIX):
        vm = create_vm(si, f"cold-{n}", nic=False, disk_kb=4096)
        moid = vm._moId
        take(si, moid, "one")
        take(si, moid, "two")
        if task == "revert":
            start = lambda s: by_id(s, moid).snapshot.rootSnapshotList[0].snapshot.RevertToSnapshot_Task()
        else:
            start = lambda s: by_id(s, moid).Destroy_Task()
        si = crash_during(agent, point, start)
        folder = os.path.join(agent.data_dir, "datastore1", f"cold-{n}")
        names = [v.name for v in si.content.rootFolder.childEntity[0].vmFolder.childEntity]
        if task == "destroy" and point != "destroy:begun":
            assert f"cold-{n}" not in names and not os.path.exists(folder), point
            continue
        vm = check_truthful(agent, si, moid)
        if task == "revert" and point != "snapshot-revert:begun":
            assert api_tree(vm)[1] == 1, "the revert was finished"
        next_snapshot_works(vm)
        WaitForTask(vm.Destroy_Task())


def test_a_linked_clone_cut_short_releases_its_hold_on_the_source(agent):
    """Killed after the hold on the source's layer is taken, before the clone is registered: the
    source's trees keep no hold, so its snapshot's removal merges the layers into one."""
    si = agent.vireod.connect()
    for n, point in enumerate(["clone:begun", "clone:disks-copied"]):
        vm = create_vm(si, f"held-{n}", nic=False, disk_kb=4096)
        moid = vm._moId
        take(si, moid, "base")

        def start(s, moid=moid, n=n):
            source = by_id(s, moid)
            relocate = vim.vm.RelocateSpec(diskMoveType="createNewChildDiskBacking")
            return source.CloneVM_Task(folder=s.content.rootFolder.childEntity[0].vmFolder, name=f"held-link-{n}",
                                       spec=vim.vm.CloneSpec(location=relocate,
                                                             snapshot=source.snapshot.rootSnapshotList[0].snapshot))

        si = crash_during(agent, point, start)
        folder = os.path.join(agent.data_dir, "datastore1", f"held-{n}")
        with open(os.path.join(folder, f"held-{n}.qcow2.vtree")) as f:
            tree = json.load(f)
        assert not [s["name"] for s in tree["snapshots"] if s["name"].startswith("linked-clone-")], (point, tree)
        assert not os.path.exists(os.path.join(agent.data_dir, "datastore1", f"held-link-{n}")), point
        vm = check_truthful(agent, si, moid)
        WaitForTask(vm.snapshot.rootSnapshotList[0].snapshot.RemoveSnapshot_Task(removeChildren=False,
                                                                                 consolidate=True))
        assert vtree_uids(folder)[1] == [f"held-{n}.qcow2"], "one layer left"
        WaitForTask(by_id(si, moid).Destroy_Task())


def random_task(si, moid):
    vm = by_id(si, moid)
    choices = ["create", "create-memory", "clone", "consolidate"]
    if vm.snapshot is not None:
        choices += ["remove", "remove-keep", "revert-current"]
    choice = random.choice(choices)
    if choice == "consolidate" and not vm.runtime.consolidationNeeded:
        # Leave layers no snapshot needs, for ConsolidateVMDisks to merge.
        task = vm.CreateSnapshot_Task(name="to merge", description="", memory=False, quiesce=False)
        WaitForTask(task)
        WaitForTask(task.info.result.RemoveSnapshot_Task(removeChildren=False, consolidate=False))
        assert by_id(si, moid).runtime.consolidationNeeded
    if choice.startswith("create"):
        return choice, vm.CreateSnapshot_Task(name="r", description="", memory=choice == "create-memory",
                                              quiesce=False)
    if choice.startswith("remove"):
        target = random.choice(vm.snapshot.rootSnapshotList).snapshot
        return choice, target.RemoveSnapshot_Task(removeChildren=False, consolidate=choice == "remove")
    if choice == "consolidate":
        return choice, vm.ConsolidateVMDisks_Task()
    if choice == "revert-current":
        return choice, vm.RevertToCurrentSnapshot_Task()
    name = f"soak-clone-{random.randrange(1 << 30)}"
    return choice, vm.CloneVM_Task(folder=si.content.rootFolder.childEntity[0].vmFolder, name=name,
                                   spec=vim.vm.CloneSpec(location=vim.vm.RelocateSpec()))


def test_random_kills(agent):
    """SIGKILLs vireod at a random moment of a random task, VIREO_SOAK_KILLS times (default 3)."""
    kills = int(os.environ.get("VIREO_SOAK_KILLS", "3"))
    seed = int(os.environ.get("VIREO_SOAK_SEED", str(random.randrange(1 << 30))))
    random.seed(seed)
    si = agent.vireod.connect()
    vm = create_vm(si, "soaky", scenario="shell", nic=False)
    moid = vm._moId
    data = GuestData()
    outcomes = {}
    for kill in range(kills):
        vm = by_id(si, moid)
        if vm.runtime.powerState != "poweredOn":
            WaitForTask(vm.PowerOnVM_Task())
            wait_for(lambda: console(agent, vm).rstrip().endswith(PROMPT.strip()), "the guest's shell prompt")
        data.write(agent, vm)
        choice, _ = random_task(si, moid)
        time.sleep(random.uniform(0, 1.5))
        agent.process.send_signal(signal.SIGKILL)
        agent.process.wait()
        si = agent.restart()
        if choice == "revert-current":
            # A revert (done or not) puts the disk back as at the snapshot: later data may go.
            data.written.clear()
        check_truthful(agent, si, moid, data)
        for other in si.content.rootFolder.childEntity[0].vmFolder.childEntity:
            if other.name.startswith("soak-clone-"):
                check_truthful(agent, si, other._moId)
                WaitForTask(other.Destroy_Task())
        if by_id(si, moid).runtime.powerState == "poweredOn":
            next_snapshot_works(by_id(si, moid))
        outcomes[choice] = outcomes.get(choice, 0) + 1
        print(f"soak kill {kill + 1}/{kills} during {choice}: truthful (seed {seed})", flush=True)
    print(f"soak: {kills} kills, every one recovered truthfully: {outcomes} (seed {seed})")
    Disconnect(si)


def test_events_survive_a_kill_a_second_vireod_is_refused_and_a_suspended_vm_powers_off(agent):
    si = agent.vireod.connect()
    vm = create_vm(si, "history", disk_kb=0, nic=False)
    moid = vm._moId
    WaitForTask(vm.PowerOnVM_Task())
    WaitForTask(vm.SuspendVM_Task())
    query = vim.event.EventFilterSpec(entity=vim.event.EventFilterSpec.ByEntity(entity=vm, recursion="self"))
    before = [(e.key, type(e).__name__, e.fullFormattedMessage)
              for e in si.content.eventManager.QueryEvents(query)]
    assert any(kind.endswith(".VmSuspendedEvent") for _, kind, _ in before), before

    second = subprocess.run([os.path.join(BIN_DIR, "vireod"), "--listen", "127.0.0.1:0", "--data-dir",
                             agent.data_dir], capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, VIREO_ROOT_PASSWORD=ROOT_PASSWORD))
    assert second.returncode != 0 and "another vireod" in second.stdout + second.stderr, second
    assert "re-adopted" not in second.stdout + second.stderr

    agent.process.send_signal(signal.SIGKILL)
    agent.process.wait()
    si = agent.restart()
    vm = by_id(si, moid)
    query = vim.event.EventFilterSpec(entity=vim.event.EventFilterSpec.ByEntity(entity=vm, recursion="self"))
    after = [(e.key, type(e).__name__, e.fullFormattedMessage)
             for e in si.content.eventManager.QueryEvents(query)]
    assert all(event in after for event in before), (before, after)
    assert si.content.eventManager.latestEvent.key >= max(key for key, _, _ in before)

    assert vm.runtime.powerState == "suspended"
    WaitForTask(vm.PowerOffVM_Task())
    assert vm.runtime.powerState == "poweredOff"
    assert not os.path.exists(os.path.join(agent.data_dir, "datastore1", "history", "suspend"))
    WaitForTask(vm.PowerOnVM_Task())
    assert console(agent, vm).count("vireo-test-guest: booted") >= 1
    WaitForTask(vm.PowerOffVM_Task())
    WaitForTask(vm.Destroy_Task())


def test_forged_journals_on_a_datastore_touch_nothing_outside_their_task(agent):
    """A journal is a file on a datastore: recovery acts on one only within what the task it
    names could have made (a clone's own files, a deleted VM's own folder, the next uid)."""
    si = agent.vireod.connect()
    vm = create_vm(si, "forged", nic=False, disk_kb=4096)
    moid = vm._moId
    datastore = os.path.join(agent.data_dir, "datastore1")
    canary = os.path.join(agent.data_dir, "canary")
    with open(canary, "w") as f:
        f.write("keep me")
    kernel = os.path.join(datastore, "images", "vireo-test-guest.elf")
    journals = {
        os.path.join(datastore, "forged", "vireo-journal-clone.json"): {
            "intent": {"task": "clone", "folder": os.path.join(datastore, "images"),
                       "vmx": "[datastore1] images/images.vmx", "temporary": None}, "steps": ["begun"]},
        os.path.join(datastore, "forged", "vireo-journal-snapshot-create.json"): {
            "intent": {"task": "snapshot-create", "meta": {
                "uid": 4294967295, "parent": None, "name": "x", "description": "", "create_time": 0,
                "power": "Off", "quiesced": False}}, "steps": ["begun"]},
    }
    os.makedirs(os.path.join(datastore, "loot"))
    journals[os.path.join(datastore, "loot", "vireo-journal-destroy.json")] = {
        "intent": {"task": "destroy", "parents": [], "instance_uuid": "x",
                   "owned": {"files": [canary, kernel], "folders": [agent.data_dir]}},
        "steps": ["begun", "unregistered"]}
    for path, record in journals.items():
        with open(path, "w") as f:
            json.dump(record, f)
    si = agent.restart()
    assert os.path.exists(canary) and os.path.exists(kernel)
    vm = check_truthful(agent, si, moid)
    next_snapshot_works(vm)
    assert vm.snapshot is None
    take(si, moid, "numbered")
    assert by_id(si, moid).snapshot.rootSnapshotList[0].id < 100
    WaitForTask(by_id(si, moid).Destroy_Task())


def test_a_vm_killed_with_vireod_powers_on_again(agent):
    """vireod and the VM's VMM both SIGKILLed: the VM's TAP is stale; recovery deletes it, so
    the next power-on does not find it still enslaved to the bridge."""
    si = agent.vireod.connect()
    vm = create_vm(si, "orphan", disk_kb=0)
    moid = vm._moId
    WaitForTask(vm.PowerOnVM_Task())
    with open(os.path.join(agent.data_dir, "network-instance")) as f:
        tap = f"vt{int(f.read().strip(), 16):04x}{int(moid):x}n0"
    assert os.path.exists(f"/sys/class/net/{tap}")
    pids = agent.vmm_pids()
    agent.process.send_signal(signal.SIGKILL)
    agent.process.wait()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: all(not os.path.exists(f"/proc/{pid}") or
                         open(f"/proc/{pid}/stat").read().split()[2] == "Z" for pid in pids), "the VMMs to die")
    si = agent.restart()
    vm = by_id(si, moid)
    assert vm.runtime.powerState == "poweredOff"
    assert not os.path.exists(f"/sys/class/net/{tap}")
    WaitForTask(vm.PowerOnVM_Task())
    assert vm.runtime.powerState == "poweredOn"
    WaitForTask(vm.PowerOffVM_Task())
    WaitForTask(vm.Destroy_Task())


def test_a_vm_whose_disk_is_gone_after_a_kill_stays_paused_with_a_question(agent):
    """Killed with the VM stunned for a snapshot, and its disk gone (moved away) before vireod
    restarts: resuming would run the guest without the disk it saw, so recovery leaves the VM
    paused with a question and keeps the journal. Retry while the disk is missing asks again;
    once it is back, Retry finishes the task and resumes the guest with its data intact. A
    second time, Cancel powers the VM off."""
    si = agent.vireod.connect()
    vm = create_vm(si, "stranded", scenario="shell", nic=False)
    moid = vm._moId
    WaitForTask(vm.PowerOnVM_Task())
    wait_for(lambda: console(agent, vm).endswith(PROMPT), "the guest's shell prompt")
    data = GuestData()
    disk = os.path.join(agent.data_dir, "datastore1", "stranded", "stranded.qcow2")

    def disk_away():
        os.rename(disk, disk + ".away")

    for answer in ("0", "1"):
        data.write(agent, by_id(si, moid))
        si = crash_during(agent, "snapshot-create:disks-detached", snapshot_task(moid), while_down=disk_away)
        vm = by_id(si, moid)
        question = vm.runtime.question
        assert question is not None, "no question for a VM that cannot be resumed"
        assert question.message[0].id == "msg.vireo.recovery.unsafe", question.message[0].id
        assert "cannot safely be resumed" in question.text and "stranded.qcow2" in question.text, question.text
        assert [(c.key, c.label) for c in question.choice.choiceInfo] == [("0", "Retry"), ("1", "Cancel")]
        assert vm.runtime.powerState == "poweredOn" and vm.runtime.paused and vm.overallStatus == "yellow"
        assert vmm_state(agent, vm) == "paused"
        assert os.path.exists(os.path.join(os.path.dirname(disk), "vireo-journal-snapshot-create.json"))
        assert any("asked question" in m for m in recovery_events(si, vm)), recovery_events(si, vm)
        if answer == "0":
            vm.AnswerVM(questionId=question.id, answerChoice="0")
            again = vm.runtime.question
            assert again is not None and again.id != question.id and vmm_state(agent, vm) == "paused"
            os.rename(disk + ".away", disk)
            vm.AnswerVM(questionId=again.id, answerChoice="0")
            assert vm.runtime.question is None and not vm.runtime.paused and vm.overallStatus == "green"
            check_truthful(agent, si, moid, data)
            next_snapshot_works(vm)
        else:
            vm.AnswerVM(questionId=question.id, answerChoice="1")
            wait_for(lambda: vm.runtime.powerState == "poweredOff", "the VM to power off")
            assert vm.runtime.question is None
            os.rename(disk + ".away", disk)
            si = agent.restart()
            vm = check_truthful(agent, si, moid)
            WaitForTask(vm.PowerOnVM_Task())
            wait_for(lambda: console(agent, vm).rstrip().endswith(PROMPT.strip()), "the guest's shell prompt")
            data.verify(agent, vm)
            next_snapshot_works(vm)
    WaitForTask(by_id(si, moid).PowerOffVM_Task())
    WaitForTask(by_id(si, moid).Destroy_Task())
