"""guest.toolsVersion and toolsVersionStatus2 through pyVmomi: a test-guest VM whose tools speak
the tools protocol reports the version of the vireo-tools this host was built with, numbered as
VMware numbers tools versions (major << 10 | minor << 5 | patch), and is current; a VM without
tools reports none installed."""
import os

import pytest
from pyVim.task import WaitForTask

from test_vm_lifecycle import agent, power_on_booted, si  # noqa: F401 (fixtures)
from test_vm_tools import create_tools_vm, wait_tools_running

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def workspace_version():
    """The workspace's version (vireo-tools takes it), from Cargo.toml."""
    with open(os.path.join(REPO, "Cargo.toml")) as f:
        text = f.read()
    section = text[text.index("[workspace.package]"):]
    line = next(l for l in section.splitlines() if l.startswith("version"))
    major, minor, patch = (int(n) for n in line.split('"')[1].split("."))
    return major << 10 | minor << 5 | patch


def test_tools_version_is_reported_and_compared_with_the_host_s(si, agent):
    vm = create_tools_vm(si, "tools-version")
    assert vm.guest.toolsVersionStatus2 == "guestToolsNotInstalled"
    assert vm.summary.guest.toolsVersionStatus2 == "guestToolsNotInstalled"
    assert vm.guest.toolsVersion is None
    power_on_booted(agent, vm)
    wait_tools_running(agent, vm)
    assert vm.guest.toolsVersion == str(workspace_version())
    assert vm.guest.toolsVersionStatus2 == "guestToolsCurrent"
    assert vm.guest.toolsVersionStatus == "guestToolsCurrent"
    assert vm.summary.guest.toolsVersionStatus2 == "guestToolsCurrent"
    WaitForTask(vm.PowerOffVM_Task())
