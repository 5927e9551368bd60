"""More than one datastore: a local datastore added at run time with CreateLocalDatastore (a real
folder beneath the configured local datastore root), listed everywhere datastores are, its space
from statvfs, a VM created and booted on it, kept across a vireod restart, refused while a VM
uses it, then removed (files kept, as on ESXi) by Ansible's vmware_host_datastore. Every way to
point a datastore elsewhere on the host is tried (absolute paths, `..`, symlinks, overlapping
datastores, bad names) with a canary that must stay untouched."""
import os
import shutil
import tempfile

import pytest
from pyVim.connect import Disconnect
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from ansible_modules import run_module
from conftest import connection_to
from test_vm_lifecycle import agent, config_spec, root_pool, wait_for  # noqa: F401 (agent: fixture)


si = connection_to("agent")


def host_of(si):
    return si.content.rootFolder.childEntity[0].hostFolder.childEntity[0].host[0]


def names(datastores):
    return sorted(ds.name for ds in datastores)


def test_a_local_datastore_is_added_used_kept_and_removed(agent, si):
    system = host_of(si).configManager.datastoreSystem
    assert system.capabilities.localDatastoreSupported
    ds2 = system.CreateLocalDatastore(name="ds2", path="ds2")
    folder = os.path.join(agent.data_dir, "volumes", "ds2")
    assert os.path.isdir(folder)
    datacenter = si.content.rootFolder.childEntity[0]
    for listing in [system.datastore, host_of(si).datastore, datacenter.datastore,
                    datacenter.datastoreFolder.childEntity]:
        assert names(listing) == ["datastore1", "ds2"]
    stat = os.statvfs(folder)
    assert ds2.summary.capacity == stat.f_blocks * stat.f_frsize
    assert ds2.summary.url == "ds:///vmfs/volumes/ds2/"
    volumes = [m.volume.name for m in host_of(si).configManager.storageSystem.fileSystemVolumeInfo.mountInfo]
    assert "ds2" in volumes

    # A VM lives on it: its folder and disk are made there, and it boots from there.
    spec = config_spec("on-ds2")
    spec.files = vim.vm.FileInfo(vmPathName="[ds2]")
    task = datacenter.vmFolder.CreateVM_Task(config=spec, pool=root_pool(si))
    WaitForTask(task)
    vm = task.info.result
    assert vm.config.files.vmPathName == "[ds2] on-ds2/on-ds2.vmx"
    assert os.path.exists(os.path.join(folder, "on-ds2", "on-ds2.vmx"))
    assert [d.name for d in vm.datastore] == ["ds2"]
    WaitForTask(vm.PowerOnVM_Task())
    serial = os.path.join(folder, "on-ds2", "serial.log")
    wait_for(lambda: os.path.exists(serial) and "vireo-test-guest: booted" in open(serial).read(),
             "the guest on ds2 to boot")
    WaitForTask(vm.PowerOffVM_Task())
    with pytest.raises(vim.fault.ResourceInUse):
        system.RemoveDatastore(datastore=ds2)

    # Kept across a restart.
    agent.stop()
    agent.start()
    connection = agent.vireod.connect()
    try:
        host = host_of(connection)
        assert names(host.datastore) == ["datastore1", "ds2"]
        [vm] = [v for v in connection.content.rootFolder.childEntity[0].vmFolder.childEntity
                if v.name == "on-ds2"]
        WaitForTask(vm.Destroy_Task())
        # Ansible removes it (vmware_host_datastore state=absent calls RemoveDatastore).
        result = run_module(agent.vireod, "vmware_host_datastore", datastore_name="ds2", state="absent")
        assert not result.get("failed"), result.get("msg")
        assert result["changed"]
        assert names(host.datastore) == ["datastore1"]
        assert os.path.isdir(folder), "removing a datastore keeps its folder"
        again = run_module(agent.vireod, "vmware_host_datastore", datastore_name="ds2", state="absent")
        assert again["changed"] is False
    finally:
        Disconnect(connection)


def test_configured_datastores_are_not_removed_through_the_api(si):
    system = host_of(si).configManager.datastoreSystem
    [datastore1] = [ds for ds in system.datastore if ds.name == "datastore1"]
    with pytest.raises(vim.fault.HostConfigFault):
        system.RemoveDatastore(datastore=datastore1)
    assert names(system.datastore) == ["datastore1"]


def test_datastores_cannot_point_outside_their_root(agent, si):
    system = host_of(si).configManager.datastoreSystem
    root = os.path.join(agent.data_dir, "volumes")
    os.makedirs(root, exist_ok=True)
    canary = tempfile.mkdtemp(prefix="vireo-canary-")
    os.symlink(canary, os.path.join(root, "link"))
    try:
        for path in ["/etc", agent.data_dir, os.path.join(agent.data_dir, "datastore1"), "../x",
                     "a/../../x", os.path.join(root, "..", "escaped"), "link", "link/inside", "",
                     ".", "a" * 2000]:
            with pytest.raises(vmodl.fault.InvalidArgument):
                system.CreateLocalDatastore(name="evil", path=path)
        assert os.listdir(canary) == []
        assert not os.path.exists(os.path.join(agent.data_dir, "escaped"))
        assert not os.path.exists(os.path.join(agent.data_dir, "x"))
        for name in ["", "a/b", "[x]", "a]b", "..", "x" * 43, " padded"]:
            with pytest.raises(vim.fault.InvalidName):
                system.CreateLocalDatastore(name=name, path="fine")
        with pytest.raises(vim.fault.DuplicateName):
            system.CreateLocalDatastore(name="datastore1", path="fine")
        # Nested datastores would let one datastore's paths reach into another's.
        outer = system.CreateLocalDatastore(name="outer", path=os.path.join(root, "outer"))
        with pytest.raises(vmodl.fault.InvalidArgument):
            system.CreateLocalDatastore(name="inner", path="outer/inner")
        system.RemoveDatastore(datastore=outer)
        assert names(system.datastore) == ["datastore1"]
    finally:
        os.unlink(os.path.join(root, "link"))
        shutil.rmtree(canary)
