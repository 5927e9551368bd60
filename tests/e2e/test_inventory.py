"""A user walks the ESXi inventory: container views, a hand-built TraversalSpec, host and
datastore facts (which must be this machine's), paging, and SearchIndex look-ups."""
import os

import pytest
from pyVmomi import vim, vmodl

PC = vmodl.query.PropertyCollector


def proc_value(path, key):
    with open(path) as f:
        for line in f:
            if line.split(":")[0].strip() == key:
                return line.split(":", 1)[1].strip()
    return None


def test_container_view_lists_vm_host_datastore_network(si):
    content = si.content
    for kind, expected in [(vim.VirtualMachine, ["e2e vm"]), (vim.Datastore, ["datastore1"]), (vim.Network, ["VM Network"])]:
        view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
        assert sorted(obj.name for obj in view.view) == expected
        view.Destroy()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.HostSystem], True)
    assert [h._moId for h in view.view] == ["ha-host"]
    view.Destroy()


def test_esxi_tree_shape(si):
    root = si.content.rootFolder
    assert root._moId == "ha-folder-root"
    dc = root.childEntity[0]
    assert dc._moId == "ha-datacenter"
    assert [f._moId for f in (dc.vmFolder, dc.hostFolder, dc.datastoreFolder, dc.networkFolder)] == \
        ["ha-folder-vm", "ha-folder-host", "ha-folder-datastore", "ha-folder-network"]
    compute = dc.hostFolder.childEntity[0]
    assert compute._moId == "ha-compute-res"
    assert compute.resourcePool._moId == "ha-root-pool"
    assert dc.network[0]._moId == "HaNetwork-VM Network"


def traversal_spec():
    """Root folder → datacenters → vmFolder → folders → VMs, recursive by name."""
    folder = PC.TraversalSpec(name="folderTraversal", type=vim.Folder, path="childEntity", skip=False,
                              selectSet=[PC.SelectionSpec(name="folderTraversal"), PC.SelectionSpec(name="dcToVm")])
    dc = PC.TraversalSpec(name="dcToVm", type=vim.Datacenter, path="vmFolder", skip=False,
                          selectSet=[PC.SelectionSpec(name="folderTraversal")])
    return [folder, dc]


def test_hand_built_traversal_spec_with_base_type_and_dotted_paths(si):
    content = si.content
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=content.rootFolder, skip=True, selectSet=traversal_spec())],
        propSet=[PC.PropertySpec(type=vim.ManagedEntity, pathSet=["name"]),
                 PC.PropertySpec(type=vim.VirtualMachine, pathSet=["runtime.powerState", "summary.config.memorySizeMB", "snapshot"])])
    result = content.propertyCollector.RetrievePropertiesEx([spec], PC.RetrieveOptions())
    by_name = {}
    for obj in result.objects:
        props = {p.name: p.val for p in obj.propSet}
        by_name[props["name"]] = (obj.obj, props)
    assert set(by_name) == {"ha-datacenter", "vm", "e2e vm"}
    vm, props = by_name["e2e vm"]
    assert isinstance(vm, vim.VirtualMachine)
    assert props["runtime.powerState"] == "poweredOff"
    assert props["summary.config.memorySizeMB"] == 512
    assert "snapshot" not in props, "unset properties are omitted"


def test_host_facts_come_from_this_machine(si):
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.HostSystem], True)
    host = view.view[0]
    view.Destroy()
    assert host.summary.hardware.cpuModel == proc_value("/proc/cpuinfo", "model name")
    mem_kib = int(proc_value("/proc/meminfo", "MemTotal").split()[0])
    assert host.hardware.memorySize == mem_kib * 1024
    assert host.hardware.cpuInfo.numCpuThreads == os.cpu_count()
    assert host.runtime.connectionState == "connected"
    spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=host)],
                         propSet=[PC.PropertySpec(type=vim.HostSystem, pathSet=["summary.runtime.powerState", "name"])])
    result = si.content.propertyCollector.RetrievePropertiesEx([spec], PC.RetrieveOptions())
    props = {p.name: p.val for p in result.objects[0].propSet}
    assert props["summary.runtime.powerState"] == "poweredOn"


def test_datastore_space_is_real(si, vireod):
    ds = si.content.rootFolder.childEntity[0].datastore[0]
    st = os.statvfs(vireod.datastore_dir)
    assert ds.summary.capacity == st.f_blocks * st.f_frsize
    # Free space is re-read every 20 s while other processes write to the same filesystem.
    assert abs(ds.summary.freeSpace - st.f_bavail * st.f_frsize) < ds.summary.capacity // 20
    assert ds.summary.accessible
    assert ds.vm[0].name == "e2e vm"


def test_missing_property_and_invalid_path(si):
    pc = si.content.propertyCollector
    host_spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=vim.HostSystem("ha-host"))],
                              propSet=[PC.PropertySpec(type=vim.HostSystem, pathSet=["summary.nonsense"])])
    with pytest.raises(vmodl.query.InvalidProperty):
        pc.RetrievePropertiesEx([host_spec], PC.RetrieveOptions())
    gone = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=vim.VirtualMachine("999"))],
                         propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=["name"])])
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        pc.RetrievePropertiesEx([gone], PC.RetrieveOptions())
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        _ = vim.VirtualMachine("999", si._stub).name


def test_paging_with_max_objects(si):
    content = si.content
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=content.rootFolder, skip=False, selectSet=traversal_spec())],
        propSet=[PC.PropertySpec(type=vim.ManagedEntity, pathSet=["name"])])
    pc = content.propertyCollector
    everything = [o.obj for o in pc.RetrieveProperties([spec])]
    page = pc.RetrievePropertiesEx([spec], PC.RetrieveOptions(maxObjects=1))
    seen = [o.obj for o in page.objects]
    assert len(seen) == 1 and page.token
    while page.token:
        page = pc.ContinueRetrievePropertiesEx(page.token)
        seen.extend(o.obj for o in page.objects)
    assert seen == everything and len(everything) == 4
    page = pc.RetrievePropertiesEx([spec], PC.RetrieveOptions(maxObjects=2))
    pc.CancelRetrievePropertiesEx(page.token)
    with pytest.raises(vmodl.fault.InvalidArgument):
        pc.ContinueRetrievePropertiesEx(page.token)


def test_search_index(si):
    index = si.content.searchIndex
    vm = index.FindByInventoryPath("ha-datacenter/vm/e2e vm")
    assert vm is not None and vm.name == "e2e vm"
    assert index.FindByInventoryPath("ha-datacenter/vm/absent") is None
    assert index.FindChild(si.content.rootFolder.childEntity[0].vmFolder, "e2e vm") == vm
    assert index.FindByUuid(None, "564d1234-5678-9abc-def0-123456789abc", True) == vm
    assert index.FindAllByUuid(None, "564d1234-5678-9abc-def0-123456789abc", True) == [vm]
    assert index.FindByDatastorePath(si.content.rootFolder.childEntity[0], "[datastore1] e2e-vm/e2e-vm.vmx") == vm
    assert index.FindByUuid(None, vim.HostSystem("ha-host", si._stub).hardware.systemInfo.uuid, False)._moId == "ha-host"


def test_host_network_facts_show_the_management_interface(si):
    """What Ansible's vmware_host_facts reads: config.network.vnic holds vmk0, the interface
    vireod listens on (loopback here) with the kernel's address, netmask, MAC and MTU;
    consoleVnic is empty as on ESXi; config.network is the network system's networkInfo."""
    host = si.content.rootFolder.childEntity[0].hostFolder.childEntity[0].host[0]
    network = host.config.network
    [vmk0] = network.vnic
    assert vmk0.device == "vmk0" and vmk0.key == "key-vim.host.VirtualNic-vmk0"
    assert (vmk0.spec.ip.ipAddress, vmk0.spec.ip.subnetMask) == ("127.0.0.1", "255.0.0.0")
    with open("/sys/class/net/lo/address") as f:
        assert vmk0.spec.mac == f.read().strip()
    with open("/sys/class/net/lo/mtu") as f:
        assert vmk0.spec.mtu == int(f.read())
    assert list(network.consoleVnic) == []
    info = host.configManager.networkSystem.networkInfo
    assert [v.device for v in info.vnic] == ["vmk0"]
    assert [v.name for v in network.vswitch] == [v.name for v in info.vswitch]
    assert [p.spec.name for p in network.portgroup] == [p.spec.name for p in info.portgroup]
