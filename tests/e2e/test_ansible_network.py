"""Stock Ansible vmware_vswitch, vmware_portgroup and their _info modules against a vireod running
in a network namespace of ours (its vSwitches are bridges there, never on this machine's own
network): they create, change and remove vSwitches and port groups, report them, and a second
run of the same task changes nothing, as against ESXi."""
import os

import pytest

from ansible_modules import run_module
from netns import Namespace
from test_vm_lifecycle import Agent

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="SKIPPED: network namespaces need root")


@pytest.fixture(scope="module")
def agent():
    netns = Namespace(f"vireo-a-{os.getpid() % 0x10000:04x}")
    server = Agent(netns=netns)
    try:
        yield server
    finally:
        server.close()
        netns.delete()


@pytest.fixture(scope="module")
def host_name(agent):
    si = agent.vireod.connect()
    return si.content.rootFolder.childEntity[0].hostFolder.childEntity[0].host[0].name


def bridge_of(agent, slot):
    with open(os.path.join(agent.data_dir, "network-instance")) as f:
        return f"vbr{f.read().strip()}s{slot}"


def twice(agent, module, **args):
    """Runs the task twice: the first run must change something, the second nothing."""
    first = run_module(agent.vireod, module, **args)
    assert not first.get("failed") and first["changed"], first
    again = run_module(agent.vireod, module, **args)
    assert not again.get("failed") and not again["changed"], again
    return first


def vswitches(agent, host_name):
    info = run_module(agent.vireod, "vmware_vswitch_info", esxi_hostname=host_name)
    assert not info.get("failed"), info
    return info["hosts_vswitch_info"][host_name]


def portgroups(agent, host_name):
    info = run_module(agent.vireod, "vmware_portgroup_info", esxi_hostname=host_name, policies=True)
    assert not info.get("failed"), info
    return {p["portgroup"]: p for p in info["hosts_portgroup_info"][host_name]}


def test_vswitch_module_creates_changes_and_removes_a_vswitch(agent, host_name):
    assert set(vswitches(agent, host_name)) == {"vSwitch0"}
    twice(agent, "vmware_vswitch", esxi_hostname=host_name, switch="vSwitchA", mtu=9000,
          number_of_ports=64)
    found = vswitches(agent, host_name)["vSwitchA"]
    assert found["mtu"] == 9000 and found["num_ports"] == 64
    bridge = bridge_of(agent, 1)
    assert agent.netns.run("cat", f"/sys/class/net/{bridge}/mtu").stdout.strip() == "9000"

    twice(agent, "vmware_vswitch", esxi_hostname=host_name, switch="vSwitchA", mtu=1500,
          number_of_ports=64, security={"promiscuous_mode": True, "forged_transmits": False,
                                        "mac_changes": False})
    assert agent.netns.run("cat", f"/sys/class/net/{bridge}/mtu").stdout.strip() == "1500"

    twice(agent, "vmware_vswitch", esxi_hostname=host_name, switch="vSwitchA", state="absent")
    assert set(vswitches(agent, host_name)) == {"vSwitch0"}
    assert agent.netns.run("ip", "link", "show", bridge).returncode != 0


def test_portgroup_module_creates_changes_and_removes_a_port_group(agent, host_name):
    twice(agent, "vmware_vswitch", esxi_hostname=host_name, switch="vSwitchB")
    twice(agent, "vmware_portgroup", hosts=[host_name], switch="vSwitchB", portgroup="Lab",
          security={"promiscuous_mode": True})
    lab = portgroups(agent, host_name)["Lab"]
    assert lab["vswitch"] == "vSwitchB" and lab["vlan_id"] == 0
    # [promiscuous, MAC changes, forged transmits]: only what the task set is overridden.
    assert lab["security"] == [True, "No override", "No override"]

    twice(agent, "vmware_portgroup", hosts=[host_name], switch="vSwitchB", portgroup="Lab",
          security={"promiscuous_mode": False, "forged_transmits": True, "mac_changes": False})
    assert portgroups(agent, host_name)["Lab"]["security"] == [False, False, True]

    # A port group on a VLAN (kept apart on the vSwitch; test_networking checks the isolation).
    twice(agent, "vmware_portgroup", hosts=[host_name], switch="vSwitchB", portgroup="Lab10", vlan_id=10)
    assert portgroups(agent, host_name)["Lab10"]["vlan_id"] == 10
    twice(agent, "vmware_portgroup", hosts=[host_name], switch="vSwitchB", portgroup="Lab10",
          state="absent")

    # A vSwitch with a port group on it stays.
    refused = run_module(agent.vireod, "vmware_vswitch", esxi_hostname=host_name, switch="vSwitchB",
                         state="absent")
    assert refused.get("failed") and "in use" in refused["msg"], refused
    twice(agent, "vmware_portgroup", hosts=[host_name], switch="vSwitchB", portgroup="Lab",
          state="absent")
    assert "Lab" not in portgroups(agent, host_name)
    twice(agent, "vmware_vswitch", esxi_hostname=host_name, switch="vSwitchB", state="absent")
