"""Stock Ansible modules vmware_guest, vmware_guest_disk and vmware_guest_network (community.vmware,
from the PyPI `ansible` package) reconfigure test-guest VMs on a fresh vireod, unmodified: each
change reports `changed: true` once and `changed: false` when the same task runs again
(idempotence, the day-2 bar), and its effect is read back through pyVmomi, in the .vmx, with
qemu-img and in the booted guest (disks on the SCSI and the SATA controller). Disk file names
that leave the datastore are refused and change nothing."""
import os

import pytest
from pyVmomi import vim

from ansible_modules import run_module
from conftest import host_path
from test_vm_devices import devices, guest_sectors, virtual_size, vm_folder, vmx, vmx_text
from test_vm_lifecycle import agent, create_vm, power_on_booted, wait_for  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")

MIB = 1 << 20


@pytest.fixture
def si(agent):
    yield agent.vireod.connect()


def twice(agent, module, **args):
    """Runs a module task twice: the first run changes the VM, the second finds nothing to do."""
    first = run_module(agent.vireod, module, **args)
    assert not first.get("failed"), first.get("msg")
    assert first["changed"] is True, first
    second = run_module(agent.vireod, module, **args)
    assert not second.get("failed"), second.get("msg")
    assert second["changed"] is False, ("not idempotent", second)
    return first


def test_vmware_guest_reconfigures_hardware_and_settings_idempotently(si, agent):
    vm = create_vm(si, "ans-guest", disk_kb=16 * 1024, nic=False)
    twice(agent, "vmware_guest", name="ans-guest", datacenter="ha-datacenter", state="present",
          annotation="managed by ansible", guest_id="debian11_64Guest",
          hardware={"memory_mb": 128, "num_cpus": 2, "num_cpu_cores_per_socket": 2,
                    "mem_reservation": 64, "cpu_limit": 1000},
          advanced_settings=[{"key": "guestinfo.role", "value": "web"}])
    config = vm.config
    assert (config.hardware.numCPU, config.hardware.numCoresPerSocket, config.hardware.memoryMB) == (2, 2, 128)
    assert config.annotation == "managed by ansible" and config.guestId == "debian11_64Guest"
    assert config.memoryAllocation.reservation == 64 and config.cpuAllocation.limit == 1000
    assert {o.key: o.value for o in config.extraConfig}["guestinfo.role"] == "web"
    recorded = vmx(agent, vm)
    assert (recorded["numvcpus"], recorded["memsize"], recorded["guestinfo.role"]) == ("2", "128", "web")


def test_vmware_guest_disk_adds_grows_and_removes_scsi_and_sata_disks_idempotently(si, agent):
    vm = create_vm(si, "ans-disks", scenario="shell", disk_kb=16 * 1024, nic=False)
    task = dict(name="ans-disks", datacenter="ha-datacenter")
    scsi = {"size_mb": 32, "type": "thin", "datastore": "datastore1", "scsi_controller": 0,
            "unit_number": 1, "scsi_type": "paravirtual"}
    sata = {"size_mb": 24, "datastore": "datastore1", "controller_type": "sata",
            "controller_number": 0, "unit_number": 2}
    twice(agent, "vmware_guest_disk", disk=[scsi, sata], **task)
    # The module found no SATA controller and added one; each disk sits where it asked.
    controller = devices(vm, vim.vm.device.VirtualAHCIController)
    assert len(controller) == 1 and controller[0].key == 15000 and controller[0].busNumber == 0
    disks = devices(vm, vim.vm.device.VirtualDisk)
    assert [(d.controllerKey, d.unitNumber, d.capacityInKB) for d in disks] == \
        [(1000, 0, 16 * 1024), (1000, 1, 32 * 1024), (15000, 2, 24 * 1024)]
    assert controller[0].device == [disks[2].key]
    recorded = vmx(agent, vm)
    assert (recorded["disk1.slot"], recorded["disk2.slot"], recorded["sata0.present"]) == \
        ("scsi0:1", "sata0:2", "TRUE")
    files = [host_path(agent, d.backing.fileName) for d in disks]
    assert [virtual_size(f) for f in files] == [16 * MIB, 32 * MIB, 24 * MIB]

    # Grown through the module (64 MiB), then the guest sees every disk with its size.
    twice(agent, "vmware_guest_disk", disk=[{**scsi, "size_mb": 64}], **task)
    assert virtual_size(files[1]) == 64 * MIB
    power_on_booted(agent, vm)
    assert [guest_sectors(agent, vm, n) for n in range(3)] == [16 * MIB // 512, 64 * MIB // 512, 24 * MIB // 512]
    vm.PowerOffVM_Task()
    wait_for(lambda: vm.runtime.powerState == "poweredOff", "the VM to power off")

    # Removed with its file; the controller stays.
    absent = {"state": "absent", "controller_type": "sata", "controller_number": 0, "unit_number": 2,
              "destroy": True}
    twice(agent, "vmware_guest_disk", disk=[absent], **task)
    assert not os.path.exists(files[2])
    assert [(d.controllerKey, d.unitNumber) for d in devices(vm, vim.vm.device.VirtualDisk)] == [(1000, 0), (1000, 1)]
    assert len(devices(vm, vim.vm.device.VirtualAHCIController)) == 1


def test_vmware_guest_network_edits_adds_and_removes_nics_idempotently(si, agent):
    vm = create_vm(si, "ans-nics", disk_kb=0)
    task = dict(name="ans-nics", datacenter="ha-datacenter", network_name="VM Network")
    twice(agent, "vmware_guest_network", label="Network adapter 1", connected=False,
          start_connected=False, **task)
    first = devices(vm, vim.vm.device.VirtualEthernetCard)
    assert len(first) == 1 and first[0].connectable.startConnected is False
    assert vmx(agent, vm)["ethernet0.startconnected"] == "FALSE"

    twice(agent, "vmware_guest_network", mac_address="00:50:56:01:02:03", device_type="vmxnet3",
          state="present", **task)
    nics = devices(vm, vim.vm.device.VirtualEthernetCard)
    assert [(n.addressType, n.macAddress) for n in nics][1] == ("manual", "00:50:56:01:02:03")
    assert vmx(agent, vm)["ethernet1.address"] == "00:50:56:01:02:03"

    twice(agent, "vmware_guest_network", mac_address="00:50:56:01:02:03", state="absent", **task)
    assert [n.macAddress for n in devices(vm, vim.vm.device.VirtualEthernetCard)] == [first[0].macAddress]
    assert "ethernet1.present" not in vmx(agent, vm)


def test_vmware_guest_disk_file_names_outside_the_datastore_are_refused(si, agent):
    vm = create_vm(si, "ans-attack", disk_kb=16 * 1024, nic=False)
    before = vmx_text(agent, vm)
    files = sorted(os.listdir(vm_folder(agent, vm)))
    secret = os.path.join(agent.data_dir, "vireod.toml")
    assert os.path.exists(secret)
    for name in ["[datastore1] ../vireod.toml", "[datastore1] ans-attack/../../vireod.toml",
                 f"[datastore1] /{secret}", "[datastore1] images/../../vireod.toml",
                 "[nosuchstore] ans-attack/x.qcow2"]:
        result = run_module(agent.vireod, "vmware_guest_disk", name="ans-attack", datacenter="ha-datacenter",
                            disk=[{"filename": name, "scsi_controller": 0, "unit_number": 1,
                                   "scsi_type": "paravirtual", "datastore": "datastore1"}])
        assert result.get("failed"), (name, result)
        assert vmx_text(agent, vm) == before, name
        assert len(devices(vm, vim.vm.device.VirtualDisk)) == 1
    assert sorted(os.listdir(vm_folder(agent, vm))) == files
