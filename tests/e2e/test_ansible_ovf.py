"""Ansible's community.vmware.vmware_deploy_ovf, unmodified, deploying an OVA built by hand
(a qemu-img streamOptimized VMDK and an OVF descriptor in the form ESXi exports) and the same
package unpacked as .ovf + .vmdk: the module drives CreateImportSpec, ImportVApp, its POST
uploads of the tar members and HttpNfcLeaseComplete, and the VM it reports has the package's
hardware and a disk identical to the one packed."""
import os

import pytest
from pyVim.connect import Disconnect
from pyVim.task import WaitForTask

from ansible_modules import run_module
from conftest import host_path, start_vireod
from test_vm_import import make_ova, qemu_compare, vm_disks


@pytest.fixture(scope="module")
def vireod():
    with start_vireod() as server:
        yield server


@pytest.fixture
def si(vireod):
    connection = vireod.connect()
    yield connection
    Disconnect(connection)


def find_vm(si, name):
    return next((vm for vm in si.content.rootFolder.childEntity[0].vmFolder.childEntity if vm.name == name), None)


def test_vmware_deploy_ovf_deploys_an_ova_and_is_idempotent(vireod, si, tmp_path):
    ova, raw = make_ova(tmp_path, "ansible-ova", 8 << 20)
    result = run_module(vireod, "vmware_deploy_ovf", ovf=ova, name="ansible-ova", power_on=False,
                        datastore="datastore1", allow_duplicates=False)
    assert not result.get("failed"), result.get("msg")
    assert result["changed"]
    vm = find_vm(si, "ansible-ova")
    assert vm is not None and vm.runtime.powerState == "poweredOff"
    assert (vm.config.hardware.numCPU, vm.config.hardware.memoryMB) == (2, 96)
    assert result["instance"]["hw_name"] == "ansible-ova"
    compare = qemu_compare(raw, host_path(vireod, vm_disks(vm)[0].backing.fileName))
    assert compare.returncode == 0, compare.stdout + compare.stderr

    again = run_module(vireod, "vmware_deploy_ovf", ovf=ova, name="ansible-ova", power_on=False,
                       allow_duplicates=False)
    assert not again.get("failed"), again.get("msg")
    assert not again["changed"]
    WaitForTask(vm.Destroy_Task())


def test_vmware_deploy_ovf_deploys_an_unpacked_ovf(vireod, si, tmp_path):
    _, raw = make_ova(tmp_path, "ansible-ovf", 8 << 20)
    ovf = str(tmp_path / "ansible-ovf.ovf")
    assert os.path.exists(str(tmp_path / "ansible-ovf-disk1.vmdk"))
    result = run_module(vireod, "vmware_deploy_ovf", ovf=ovf, name="ansible-ovf-copy", power_on=False)
    assert not result.get("failed"), result.get("msg")
    vm = find_vm(si, "ansible-ovf-copy")
    assert qemu_compare(raw, host_path(vireod, vm_disks(vm)[0].backing.fileName)).returncode == 0
    WaitForTask(vm.Destroy_Task())
