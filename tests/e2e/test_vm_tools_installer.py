"""The tools installer through pyVmomi: the ISO scripts/build-tools-iso.sh builds (vireo-tools and
install.sh, application identifier "VIREO-TOOLS <version>") is what MountToolsInstaller puts into a
running VM's first CD-ROM drive, live: the test guest reads the image byte for byte (FNV-1a of the
whole image computed in the guest) while runtime.toolsInstallerMounted is set and the drive shows
the image; UnmountToolsInstaller gives the drive its own medium back. UpgradeTools_Task answers the
faults ESXi gives where the guest cannot install (the test guest's tools offer no upgrades:
ToolsAutoUpgradeNotSupported; no tools running: ToolsUnavailable; powered off: InvalidPowerState;
no CD-ROM: VmConfigFault); vireo-tools' own install is tested in agent/guest-tools/tests/upgrade.rs.
guest.toolsVersionStatus2 compares the guest's tools with the ISO's version; a host without the ISO
answers ToolsImageNotAvailable."""
import os
import shutil
import subprocess

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from conftest import INTERNAL_NETWORK, REPO, connection_to
from test_vm_cdroms import SECTOR, cdroms, drive_line, fnv1a, guest_sum, iso_backing, make_iso, new_cdrom
from test_vm_devices import reconfigure
from test_vm_lifecycle import Agent, console, create_vm, power_on_booted, wait_for
from test_vm_methods import register_sample_vm
from test_vm_tools import create_tools_vm, wait_tools_running

TOOLS_ISO = os.path.join(REPO, ".cache", "tools-iso", "vireo-tools.iso")

pytestmark = [
    pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                       reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests"),
    pytest.mark.skipif(shutil.which("xorriso") is None,
                       reason="SKIPPED: xorriso is missing (scripts/setup/35-iso-tools.sh installs it)"),
]


def tools_iso_config(path):
    return INTERNAL_NETWORK + f'tools_iso = "{path}"\n'


@pytest.fixture(scope="module")
def agent():
    if not os.path.isfile(TOOLS_ISO):
        subprocess.run([os.path.join(REPO, "scripts", "build-tools-iso.sh")], check=True)
    a = Agent(tools_iso_config(TOOLS_ISO))
    yield a
    a.close()


si = connection_to("agent")


def wait_capacity(agent, vm, before, disk, sectors):
    wait_for(lambda: f"blk{disk}: capacity changed to {sectors}\n" in console(agent, vm)[before:],
             f"the guest to see {sectors} sectors on blk{disk}")


def tools_vm_with_cdrom(si, name, iso):
    vm = create_tools_vm(si, name)
    reconfigure(vm, new_cdrom(iso_backing(iso)))
    return vm


def test_the_iso_holds_the_tools_and_their_installer():
    listing = subprocess.run(["xorriso", "-indev", TOOLS_ISO, "-find", "/", "-type", "f"],
                             check=True, capture_output=True, text=True).stdout
    assert sorted(line.strip("'") for line in listing.split()) == ["/install.sh", "/vireo-tools"]
    with open(TOOLS_ISO, "rb") as f:
        descriptor = f.read(17 * 2048)[16 * 2048:]
    version = subprocess.run(["sed", "-n", r'/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p',
                              os.path.join(REPO, "Cargo.toml")], check=True, capture_output=True,
                             text=True).stdout.strip()
    assert descriptor[574:702].decode().rstrip() == f"VIREO-TOOLS {version}"


def test_mount_puts_the_installer_in_the_drive_live_and_unmount_takes_it_out(si, agent):
    own = make_iso(agent, "own.iso", {"OWN.TXT": "the drive's own medium\n" * 300})
    with open(TOOLS_ISO, "rb") as f:
        tools = f.read()
    vm = tools_vm_with_cdrom(si, "ti-mount", "own.iso")
    with pytest.raises(vim.fault.InvalidPowerState):
        vm.MountToolsInstaller()
    power_on_booted(agent, vm)
    # blk0 is the hard disk, blk1 the CD-ROM.
    assert drive_line(agent, vm, 1).startswith(f"blk1 capacity={len(own) // SECTOR} ro=1")
    assert not vm.runtime.toolsInstallerMounted

    before = len(console(agent, vm))
    vm.MountToolsInstaller()
    wait_capacity(agent, vm, before, 1, len(tools) // SECTOR)
    assert vm.runtime.toolsInstallerMounted
    [drive] = cdroms(vm)
    assert drive.backing.fileName == f"[] {TOOLS_ISO}"
    assert drive.connectable.connected
    assert guest_sum(agent, vm, 1, len(tools) // SECTOR) == fnv1a(tools), "the guest reads the tools ISO"
    with pytest.raises(vim.fault.InvalidState):
        vm.MountToolsInstaller()
    # The .vmx keeps the drive's own medium.
    assert "own.iso" in open(os.path.join(agent.data_dir, "datastore1", "ti-mount", "ti-mount.vmx")).read()

    before = len(console(agent, vm))
    vm.UnmountToolsInstaller()
    wait_capacity(agent, vm, before, 1, len(own) // SECTOR)
    assert not vm.runtime.toolsInstallerMounted
    assert cdroms(vm)[0].backing.fileName == "[datastore1] iso/own.iso"
    assert guest_sum(agent, vm, 1, len(own) // SECTOR) == fnv1a(own)
    with pytest.raises(vim.fault.InvalidState):
        vm.UnmountToolsInstaller()

    # A drive whose medium was out is empty again after the installer.
    cd = cdroms(vm)[0]
    cd.connectable.connected = False
    before = len(console(agent, vm))
    reconfigure(vm, vim.vm.device.VirtualDeviceSpec(operation="edit", device=cd))
    wait_capacity(agent, vm, before, 1, 0)
    vm.MountToolsInstaller()
    assert vm.runtime.toolsInstallerMounted
    before = len(console(agent, vm))
    vm.UnmountToolsInstaller()
    wait_capacity(agent, vm, before, 1, 0)
    assert not cdroms(vm)[0].connectable.connected
    WaitForTask(vm.PowerOffVM_Task())
    assert not vm.runtime.toolsInstallerMounted


def test_upgrade_tools_answers_esxi_s_faults_where_the_guest_cannot_install(si, agent):
    make_iso(agent, "up.iso", {"UP.TXT": "up\n"})
    vm = tools_vm_with_cdrom(si, "ti-upgrade", "up.iso")
    with pytest.raises(vim.fault.InvalidPowerState):
        WaitForTask(vm.UpgradeTools_Task())
    power_on_booted(agent, vm)
    wait_tools_running(agent, vm)
    # The test guest's tools speak the protocol but install nothing: as ESXi for a guest whose
    # tools cannot upgrade themselves. Nothing stays mounted.
    with pytest.raises(vim.fault.ToolsAutoUpgradeNotSupported):
        WaitForTask(vm.UpgradeTools_Task())
    assert not vm.runtime.toolsInstallerMounted
    WaitForTask(vm.PowerOffVM_Task())

    # A guest without tools running.
    quiet = create_tools_vm(si, "ti-no-tools", cmdline="scenario=shell")
    reconfigure(quiet, new_cdrom(iso_backing("up.iso")))
    power_on_booted(agent, quiet)
    with pytest.raises(vim.fault.ToolsUnavailable):
        WaitForTask(quiet.UpgradeTools_Task())
    WaitForTask(quiet.PowerOffVM_Task())

    # No CD-ROM drive to mount the installer in.
    bare = create_vm(si, "ti-bare", scenario="shell", disk_kb=0, nic=False)
    power_on_booted(agent, bare)
    with pytest.raises(vim.fault.VmConfigFault):
        bare.MountToolsInstaller()
    with pytest.raises(vim.fault.VmConfigFault):
        WaitForTask(bare.UpgradeTools_Task())
    WaitForTask(bare.PowerOffVM_Task())


def other_tools_iso(folder, version):
    """A tools ISO claiming `version` (the same files as the real one)."""
    staging = os.path.join(folder, f"staging-{version}")
    os.makedirs(staging)
    for name in ["vireo-tools", "install.sh"]:
        subprocess.run(["xorriso", "-osirrox", "on", "-indev", TOOLS_ISO, "-extract", f"/{name}",
                        os.path.join(staging, name)], check=True, capture_output=True)
    target = os.path.join(folder, f"tools-{version}.iso")
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-V", "VIREOTOOLS",
                    "-A", f"VIREO-TOOLS {version}", "-o", target, staging], check=True, capture_output=True)
    shutil.rmtree(staging)
    return target


@pytest.mark.parametrize("version,status2,status", [
    ("99.0.0", "guestToolsNeedUpgrade", "guestToolsNeedUpgrade"),
    ("0.0.1", "guestToolsTooNew", "guestToolsUnmanaged"),
])
def test_tools_version_status_compares_with_the_iso_s_version(agent, version, status2, status):
    """The guest's tools (this build's version) against an ISO of another version, each on a
    vireod of its own configured with that ISO."""
    iso = other_tools_iso(agent.data_dir, version)
    other = Agent(tools_iso_config(iso))
    try:
        si = other.vireod.connect()
        vm = create_tools_vm(si, f"ti-version-{version}")
        power_on_booted(other, vm)
        wait_tools_running(other, vm)
        assert vm.guest.toolsVersionStatus2 == status2
        assert vm.guest.toolsVersionStatus == status
        assert vm.summary.guest.toolsVersionStatus2 == status2
        WaitForTask(vm.PowerOffVM_Task())
    finally:
        other.close()


def test_a_host_without_the_iso_has_no_installer(agent):
    other = Agent(tools_iso_config(os.path.join(agent.data_dir, "no-such.iso")))
    try:
        si = other.vireod.connect()
        vm = create_tools_vm(si, "ti-no-image")
        with pytest.raises(vim.fault.ToolsImageNotAvailable):
            vm.MountToolsInstaller()
        # The guest's tools are compared with the version vireod was built with.
        power_on_booted(other, vm)
        wait_tools_running(other, vm)
        assert vm.guest.toolsVersionStatus2 == "guestToolsCurrent"
        with pytest.raises(vim.fault.ToolsImageNotAvailable):
            vm.MountToolsInstaller()
        WaitForTask(vm.PowerOffVM_Task())
    finally:
        other.close()


def test_the_sample_vm_mounts_the_installer_out_of_the_box(si, agent):
    """scripts/run.sh's sample VM has an empty CD-ROM drive: the installer goes in and out."""
    vm = register_sample_vm(si, agent)
    with open(TOOLS_ISO, "rb") as f:
        tools = f.read()
    power_on_booted(agent, vm)
    wait_tools_running(agent, vm)
    assert vm.guest.toolsVersionStatus2 == "guestToolsCurrent"
    assert drive_line(agent, vm, 1) == "blk1 capacity=0 ro=1 serial=vireo-cd-ide1:0"
    before = len(console(agent, vm))
    vm.MountToolsInstaller()
    wait_capacity(agent, vm, before, 1, len(tools) // SECTOR)
    assert guest_sum(agent, vm, 1, len(tools) // SECTOR) == fnv1a(tools)
    before = len(console(agent, vm))
    vm.UnmountToolsInstaller()
    wait_capacity(agent, vm, before, 1, 0)
    vm.ShutdownGuest()
    wait_for(lambda: vm.runtime.powerState == "poweredOff", "the sample VM to shut down")
