"""VM networks that reach somewhere, all inside network namespaces of our own (tests/e2e/netns.py):
vireod runs in a "host" namespace whose default route leads to a "LAN" namespace with an HTTP
server. A test guest on the default "VM Network" (NAT) leases an address from vireod's dnsmasq,
reports it through the tools, and fetches a page from the LAN server through the masquerade;
a vireod killed with SIGKILL comes back with the guest still connected; two vireods in one
namespace each have their own NAT network; switching to an internal network removes all NAT
pieces."""
import ipaddress
import os
import re
import time

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from conftest import dnsmasq_serving
from netns import HOST_IP, LAN_IP, LAN_PORT, Lan, Uplink
from test_vm_lifecycle import Agent, config_spec, console, power_on_booted, root_pool, standby_pids, vmm_processes, wait_for
from test_vm_snapshots import control, type_command
from test_vm_tools import create_tools_vm, wait_tools_running

pytestmark = [
    pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                       reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests"),
    pytest.mark.skipif(os.geteuid() != 0, reason="SKIPPED: network namespaces need root"),
]

DHCP_CMDLINE = "scenario=shell vireo.tools=on vireo.ip=dhcp"
NAT = 'vm_network = "nat"\n'


@pytest.fixture(scope="module")
def lan():
    network = Lan(f"{os.getpid() % 0x10000:04x}")
    yield network
    network.close()


def dnsmasq_pids(agent):
    """The dnsmasq processes serving this vireod's lease file."""
    return dnsmasq_serving(agent.data_dir)


def close(agent):
    """Stops the agent; it must leave no dnsmasq, bridge, TAP or nft table behind."""
    agent.close()


def subnet_of(agent):
    with open(os.path.join(agent.data_dir, "network-nat-subnet")) as f:
        return ipaddress.ip_network(f.read().strip())


def bridge_of(agent):
    with open(os.path.join(agent.data_dir, "network-instance")) as f:
        return f"vbr{f.read().strip()}"


def find_vm(si, name):
    folder = si.content.rootFolder.childEntity[0].vmFolder
    return next(vm for vm in folder.childEntity if vm.name == name)


def leased_guest(agent, name):
    """A powered-on guest on VM Network that leased its address by DHCP; returns (vm, ip)."""
    si = agent.vireod.connect()
    vm = create_tools_vm(si, name, cmdline=DHCP_CMDLINE)
    power_on_booted(agent, vm)
    wait_tools_running(agent, vm)
    wait_for(lambda: vm.guest.ipAddress, "the guest to report its leased address")
    address = ipaddress.ip_address(vm.guest.ipAddress)
    card = next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard))
    [nic] = vm.guest.net
    assert nic.macAddress == card.macAddress and list(nic.ipAddress) == [str(address)]
    assert f"{card.macAddress} {address} " in leases_of(agent)
    # vireod read the lease back: the address the tools report is known to be leased, and until when.
    wait_for(lambda: vm.guest.net[0].ipConfig.ipAddress[0].origin == "dhcp", "the lease read back")
    [config] = vm.guest.net[0].ipConfig.ipAddress
    assert (config.ipAddress, config.state) == (str(address), "preferred")
    assert config.lifetime.timestamp() > time.time()
    return vm, address


def leases_of(agent):
    """The text of the lease file of the agent's dnsmasq."""
    with open(os.path.join(agent.data_dir, "network", f"dnsmasq-{bridge_of(agent)}.leases")) as f:
        return f.read()


def fetch_from_lan(agent, vm, lan):
    """Has the guest GET /hello.txt from the LAN server; returns the guest's answer line."""
    before = len(lan.requests())
    answer = type_command(agent, vm, f"net get {LAN_IP} {LAN_PORT} /hello.txt", "http ")
    assert "status=HTTP/1.0 200 OK" in answer and f"body={lan.marker}" in answer, answer
    [request] = lan.requests()[before:]
    # The LAN saw the host namespace's address: the guest's was masqueraded.
    assert request.startswith(HOST_IP + " "), request
    return answer


def test_nat_guest_leases_an_address_and_reaches_the_lan_across_a_vireod_crash(lan):
    agent = Agent(config=NAT, netns=lan.host)
    try:
        vm, address = leased_guest(agent, "nat-guest")
        subnet = subnet_of(agent)
        assert address in subnet and subnet.is_private
        fetch_from_lan(agent, vm, lan)
        [first_dnsmasq] = dnsmasq_pids(agent)

        agent.process.kill()
        agent.process.wait()
        agent.start()
        wait_for(lambda: dnsmasq_pids(agent) not in ([], [first_dnsmasq]), "a fresh dnsmasq")
        assert len(dnsmasq_pids(agent)) == 1  # the one the killed vireod left was stopped
        vm = find_vm(agent.vireod.connect(), "nat-guest")
        assert vm.runtime.powerState == "poweredOn"
        wait_for(lambda: vm.guest.ipAddress == str(address), "the re-adopted guest's address")
        fetch_from_lan(agent, vm, lan)
    finally:
        close(agent)


def running_vmm(agent, vm):
    """The pid the VM's running VMM recorded."""
    with open(os.path.join(agent.data_dir, "run", f"vm-{vm._moId}", "vmm.pid")) as f:
        return int(f.read().split()[0])


def test_a_running_guest_reverted_to_its_memory_snapshot_is_on_the_lan_again(lan):
    """A revert starts the VM's next VMM (a standby kept ready since the memory snapshot) as
    soon as the running one has let go of its TAP, before that one has freed its memory: the
    reverted guest reaches the LAN through the same TAP, the old VMM ends, and powering off
    ends every VMM of the VM."""
    agent = Agent(config=NAT, netns=lan.host)
    try:
        vm, _ = leased_guest(agent, "net-revert")
        WaitForTask(vm.CreateSnapshot_Task(name="on the lan", memory=True, quiesce=False))
        snapshot = vm.snapshot.currentSnapshot
        # A VM with a memory snapshot keeps a standby VMM ready for its revert.
        wait_for(lambda: len(standby_pids(agent.data_dir)) == 1, "a standby for the revert")
        before = running_vmm(agent, vm)
        fetch_from_lan(agent, vm, lan)

        WaitForTask(snapshot.RevertToSnapshot_Task())
        assert vm.runtime.powerState == "poweredOn"
        fetch_from_lan(agent, vm, lan)
        wait_for(lambda: before not in vmm_processes(agent.data_dir), "the old VMM to end")
        assert running_vmm(agent, vm) in vmm_processes(agent.data_dir)
        WaitForTask(vm.PowerOffVM_Task())
        wait_for(lambda: vmm_processes(agent.data_dir) == [], "the VMM and its standby to end")
    finally:
        close(agent)


def test_a_guest_without_tools_shows_the_address_its_nic_leased(lan):
    """A guest with no tools takes a lease: vireod reads it back from its dnsmasq and shows it
    as the guest's address, on a guest.net entry for that card (origin dhcp; state unknown, as
    only the guest could say whether it uses it). Powered off, the VM shows none."""
    agent = Agent(config=NAT, netns=lan.host)
    try:
        si = agent.vireod.connect()
        vm = create_tools_vm(si, "no-tools", cmdline="scenario=shell vireo.ip=dhcp")
        power_on_booted(agent, vm)
        wait_for(lambda: vm.guest.ipAddress, "the leased address")
        address = vm.guest.ipAddress
        assert ipaddress.ip_address(address) in subnet_of(agent)
        assert vm.guest.toolsRunningStatus == "guestToolsNotRunning"
        card = next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard))
        assert f"{card.macAddress} {address} " in leases_of(agent)
        [nic] = vm.guest.net
        assert (nic.macAddress, nic.deviceConfigId, nic.network) == (card.macAddress, card.key, "VM Network")
        assert list(nic.ipAddress) == [address]
        [config] = nic.ipConfig.ipAddress
        assert (config.ipAddress, config.prefixLength, config.origin, config.state) == (address, 24, "dhcp", "unknown")
        assert vm.summary.guest.ipAddress == address

        WaitForTask(vm.PowerOffVM_Task())
        assert vm.guest.ipAddress is None and not vm.guest.net
    finally:
        close(agent)


def test_two_vireods_in_one_namespace_each_have_their_own_nat_network(lan):
    agents = []
    try:
        agents = [Agent(config=NAT, netns=lan.host) for _ in range(2)]
        guests = [leased_guest(agent, f"twin-{n}") for n, agent in enumerate(agents)]
        subnets = [subnet_of(agent) for agent in agents]
        assert not subnets[0].overlaps(subnets[1])
        assert bridge_of(agents[0]) != bridge_of(agents[1])
        for agent, (vm, address), subnet in zip(agents, guests, subnets):
            assert address in subnet
            fetch_from_lan(agent, vm, lan)
        tables = lan.host.run("nft", "list", "tables").stdout
        for agent in agents:
            assert f"table ip vireo_{bridge_of(agent)[3:]}" in tables
    finally:
        for agent in agents:
            close(agent)


def test_an_internal_vm_network_removes_what_nat_added(lan):
    agent = Agent(config=NAT, netns=lan.host)
    try:
        bridge = bridge_of(agent)
        table = f"vireo_{bridge[3:]}"
        assert table in lan.host.run("nft", "list", "tables").stdout
        wait_for(lambda: len(dnsmasq_pids(agent)) == 1, "dnsmasq")
        assert "inet " in lan.host.run("ip", "-4", "addr", "show", bridge).stdout

        agent.process.kill()
        agent.process.wait()
        with open(agent.config_file, "w") as f:
            f.write('vm_network = "internal"\n')
        agent.start()
        assert table not in lan.host.run("nft", "list", "tables").stdout
        assert dnsmasq_pids(agent) == []
        assert "inet " not in lan.host.run("ip", "-4", "addr", "show", bridge).stdout
    finally:
        close(agent)


def network_system(si):
    host = si.content.rootFolder.childEntity[0].hostFolder.childEntity[0].host[0]
    return host, host.configManager.networkSystem


def port_group_spec(name, vlan, vswitch="vSwitch1"):
    return vim.host.PortGroup.Specification(name=name, vlanId=vlan, vswitchName=vswitch,
                                            policy=vim.host.NetworkPolicy())


def static_guest(agent, si, name, ip, port_group):
    """A powered-on test guest with address `ip`/24 whose NIC is on `port_group`."""
    return guest_on(agent, si, name, f"scenario=shell vireo.tools=on vireo.ip={ip}/24", port_group)


def guest_on(agent, si, name, cmdline, port_group):
    """A powered-on test guest booted with `cmdline` whose NIC is on `port_group`."""
    spec = config_spec(name, scenario="shell")
    for option in spec.extraConfig:
        if option.key == "vireo.boot.cmdline":
            option.value = cmdline
    for change in spec.deviceChange:
        if isinstance(change.device, vim.vm.device.VirtualEthernetCard):
            change.device.backing.deviceName = port_group
    task = si.content.rootFolder.childEntity[0].vmFolder.CreateVM_Task(config=spec, pool=root_pool(si))
    WaitForTask(task)
    vm = task.info.result
    assert [n.name for n in vm.network] == [port_group]
    power_on_booted(agent, vm)
    return vm


def udp_probe(agent, vm, ip):
    """Has the guest send "probe" to `ip` port 7; returns its answer ("udp sent ..." or, when
    nothing answers its ARP request, "error: ...")."""
    before = len(console(agent, vm))
    control(agent, vm, {"cmd": "serial-input", "text": f"net udp {ip} 7 probe\n"})
    pattern = re.compile(r"^((?:udp sent|error).*)\n", re.M)
    wait_for(lambda: pattern.search(console(agent, vm)[before:]), f"the guest's answer about {ip}")
    return pattern.search(console(agent, vm)[before:]).group(1)


def kernel_filters_vlans(netns):
    """Whether this kernel's bridges can filter VLANs (CONFIG_BRIDGE_VLAN_FILTERING)."""
    made = netns.run("ip", "link", "add", "vlanprobe0", "type", "bridge", "vlan_filtering", "1")
    netns.run("ip", "link", "del", "vlanprobe0")
    return made.returncode == 0


def test_port_groups_on_vswitches_separate_guests_and_a_used_one_cannot_be_removed(lan):
    agent = Agent(config=NAT, netns=lan.host)
    try:
        si = agent.vireod.connect()
        host, system = network_system(si)
        system.AddVirtualSwitch(vswitchName="vSwitch1", spec=vim.host.VirtualSwitch.Specification(numPorts=64, mtu=1500))
        with pytest.raises(vim.fault.AlreadyExists):
            system.AddVirtualSwitch(vswitchName="vSwitch1", spec=vim.host.VirtualSwitch.Specification(numPorts=64))
        for name in ["Internal-A", "Internal-B"]:
            system.AddPortGroup(portgrp=port_group_spec(name, 0))
        info = system.networkInfo
        assert [v.name for v in info.vswitch] == ["vSwitch0", "vSwitch1"]
        assert {p.spec.name: p.spec.vswitchName for p in info.portgroup} == {
            "VM Network": "vSwitch0", "Internal-A": "vSwitch1", "Internal-B": "vSwitch1"}
        assert sorted(n.name for n in host.network) == ["Internal-A", "Internal-B", "VM Network"]
        assert [v.name for v in host.config.network.vswitch] == ["vSwitch0", "vSwitch1"]
        bridge = bridge_of(agent) + "s1"
        assert lan.host.run("ip", "link", "show", bridge).returncode == 0

        a = static_guest(agent, si, "pg-a", "192.0.2.11", "Internal-A")
        static_guest(agent, si, "pg-b", "192.0.2.12", "Internal-B")
        c = static_guest(agent, si, "pg-c", "192.0.2.13", "VM Network")
        assert type_command(agent, a, "net udp 192.0.2.12 7 same-vswitch", "udp sent") \
            == "udp sent 12 bytes to 192.0.2.12:7"
        assert type_command(agent, a, "net udp 192.0.2.13 7 other-vswitch", "error") \
            == "error: no ARP reply from 192.0.2.13"

        with pytest.raises(vim.fault.ResourceInUse):
            system.RemovePortGroup(pgName="VM Network")
        with pytest.raises(vim.fault.ResourceInUse):
            system.RemoveVirtualSwitch(vswitchName="vSwitch1")
        WaitForTask(c.PowerOffVM_Task())
        system.RemovePortGroup(pgName="VM Network")
        assert "VM Network" not in [n.name for n in host.network]
        with pytest.raises(vim.fault.NotFound):
            system.RemovePortGroup(pgName="VM Network")

        system.AddPortGroup(portgrp=port_group_spec("VLAN10", 10))
        if kernel_filters_vlans(lan.host):
            assert lan.host.run("cat", f"/sys/class/net/{bridge}/bridge/vlan_filtering").stdout.strip() == "1"
    finally:
        close(agent)


def test_port_groups_on_different_vlans_cannot_reach_each_other_and_on_one_vlan_can(lan):
    """Four guests on one vSwitch: two on two port groups with VLAN 10, one on VLAN 20, one
    untagged. The two on VLAN 10 reach each other (two port groups, one VLAN: one segment, as
    on ESXi); the VLAN 20 and the untagged guest neither reach VLAN 10 nor are reached from it.
    Where the kernel's bridges cannot filter VLANs, vireod's nftables table keeps them apart.
    Moving the VLAN 20 port group to VLAN 10 puts its running guest with the other two."""
    agent = Agent(config=NAT, netns=lan.host)
    try:
        si = agent.vireod.connect()
        _, system = network_system(si)
        system.AddVirtualSwitch(vswitchName="vSwitch1", spec=vim.host.VirtualSwitch.Specification(numPorts=64))
        groups = {"VLAN10-A": 10, "VLAN10-B": 10, "VLAN20": 20, "Untagged": 0}
        for name, vlan in groups.items():
            system.AddPortGroup(portgrp=port_group_spec(name, vlan))
        assert {p.spec.name: p.spec.vlanId for p in system.networkInfo.portgroup
                if p.spec.vswitchName == "vSwitch1"} == groups
        a = static_guest(agent, si, "vlan-a", "192.0.2.51", "VLAN10-A")
        static_guest(agent, si, "vlan-b", "192.0.2.52", "VLAN10-B")
        c = static_guest(agent, si, "vlan-c", "192.0.2.53", "VLAN20")
        d = static_guest(agent, si, "vlan-d", "192.0.2.54", "Untagged")

        def reaches(vm, ip):
            answer = udp_probe(agent, vm, ip)
            assert answer in (f"udp sent 5 bytes to {ip}:7", f"error: no ARP reply from {ip}"), answer
            return answer.startswith("udp sent")

        assert reaches(a, "192.0.2.52")
        assert not reaches(a, "192.0.2.53") and not reaches(a, "192.0.2.54")
        assert not reaches(c, "192.0.2.51") and not reaches(d, "192.0.2.52")
        assert not reaches(c, "192.0.2.54")

        system.UpdatePortGroup(pgName="VLAN20", portgrp=port_group_spec("VLAN20", 10))
        assert reaches(c, "192.0.2.51") and not reaches(c, "192.0.2.54")
    finally:
        close(agent)


def test_update_network_config_changes_vswitches_and_port_groups_in_one_go(lan):
    """UpdateNetworkConfig (modify): a vSwitch and two port groups added at once, then one port
    group retagged and the other removed, then everything removed; a change that fails
    anywhere changes nothing; parts of the config that belong to the machine are refused."""
    agent = Agent(config=NAT, netns=lan.host)
    try:
        si = agent.vireod.connect()
        host, system = network_system(si)
        config = vim.host.NetworkConfig
        switch = vim.host.VirtualSwitch.Config(changeOperation="add", name="vSwitch7",
                                               spec=vim.host.VirtualSwitch.Specification(numPorts=64, mtu=1500))
        groups = [vim.host.PortGroup.Config(changeOperation="add", spec=port_group_spec(name, vlan, "vSwitch7"))
                  for name, vlan in [("Seven-A", 7), ("Seven-B", 0)]]
        system.UpdateNetworkConfig(config=config(vswitch=[switch], portgroup=groups), changeMode="modify")
        bridge = bridge_of(agent) + "s1"
        assert lan.host.run("ip", "link", "show", bridge).returncode == 0
        found = {p.spec.name: (p.spec.vswitchName, p.spec.vlanId) for p in system.networkInfo.portgroup}
        assert found["Seven-A"] == ("vSwitch7", 7) and found["Seven-B"] == ("vSwitch7", 0)
        assert {"Seven-A", "Seven-B"} <= {n.name for n in host.network}

        # A removal of a port group that is not there fails the whole change.
        with pytest.raises(vim.fault.NotFound):
            system.UpdateNetworkConfig(config=config(portgroup=[
                vim.host.PortGroup.Config(changeOperation="edit", spec=port_group_spec("Seven-A", 8, "vSwitch7")),
                vim.host.PortGroup.Config(changeOperation="remove", spec=port_group_spec("Nope", 0, "vSwitch7"))]),
                changeMode="modify")
        assert {p.spec.name: p.spec.vlanId for p in system.networkInfo.portgroup}["Seven-A"] == 7

        system.UpdateNetworkConfig(config=config(portgroup=[
            vim.host.PortGroup.Config(changeOperation="edit", spec=port_group_spec("Seven-A", 8, "vSwitch7")),
            vim.host.PortGroup.Config(changeOperation="remove", spec=port_group_spec("Seven-B", 0, "vSwitch7"))]),
            changeMode="modify")
        found = {p.spec.name: p.spec.vlanId for p in system.networkInfo.portgroup}
        assert found["Seven-A"] == 8 and "Seven-B" not in found

        with pytest.raises(vmodl.fault.NotSupported):
            system.UpdateNetworkConfig(config=config(dnsConfig=vim.host.DnsConfig(hostName="x")), changeMode="modify")
        with pytest.raises(vmodl.fault.NotSupported):
            system.UpdateNetworkConfig(config=config(), changeMode="replace")

        system.UpdateNetworkConfig(config=config(
            portgroup=[vim.host.PortGroup.Config(changeOperation="remove", spec=port_group_spec("Seven-A", 8, "vSwitch7"))],
            vswitch=[vim.host.VirtualSwitch.Config(changeOperation="remove", name="vSwitch7")]), changeMode="modify")
        assert [v.name for v in system.networkInfo.vswitch] == ["vSwitch0"]
        assert lan.host.run("ip", "link", "show", bridge).returncode != 0
    finally:
        close(agent)


def test_forged_transmits_and_mac_changes_follow_the_port_group_policy(lan):
    """On a new vSwitch's port group (ESXi's policy: promiscuous, MAC changes and forged
    transmits all rejected) a guest that changed its MAC reaches no neighbour: its ARP request,
    from the new source MAC, is dropped at its port. On its own MAC it gets through. Once the
    port group allows MAC changes and forged transmits, the changed MAC works (the neighbour's
    ARP reply to it is delivered too)."""
    agent = Agent(config=NAT, netns=lan.host)
    try:
        si = agent.vireod.connect()
        _, system = network_system(si)
        system.AddVirtualSwitch(vswitchName="vSwitch1", spec=vim.host.VirtualSwitch.Specification(numPorts=64))
        system.AddPortGroup(portgrp=port_group_spec("Guarded", 0))
        [policy] = [p.computedPolicy.security for p in system.networkInfo.portgroup if p.spec.name == "Guarded"]
        assert not (policy.allowPromiscuous or policy.macChanges or policy.forgedTransmits)
        a = static_guest(agent, si, "sec-a", "192.0.2.21", "Guarded")
        static_guest(agent, si, "sec-b", "192.0.2.22", "Guarded")
        static_guest(agent, si, "sec-c", "192.0.2.23", "Guarded")
        own = type_command(agent, a, "net info", "net mac=").split()[1].split("=")[1]
        changed = "00:50:56:3f:0e:99"
        assert type_command(agent, a, f"net mac {changed}", "net mac=").startswith(f"net mac={changed} ")
        assert type_command(agent, a, "net udp 192.0.2.22 7 forged", "error") == "error: no ARP reply from 192.0.2.22"
        type_command(agent, a, f"net mac {own}", "net mac=")
        assert type_command(agent, a, "net udp 192.0.2.22 7 own", "udp sent") == "udp sent 3 bytes to 192.0.2.22:7"

        spec = port_group_spec("Guarded", 0)
        spec.policy = vim.host.NetworkPolicy(security=vim.host.NetworkPolicy.SecurityPolicy(
            allowPromiscuous=False, macChanges=True, forgedTransmits=True))
        system.UpdatePortGroup(pgName="Guarded", portgrp=spec)
        type_command(agent, a, f"net mac {changed}", "net mac=")
        # 192.0.2.23 was never asked: the ARP exchange must pass both ways.
        assert type_command(agent, a, "net udp 192.0.2.23 7 forged", "udp sent") == "udp sent 6 bytes to 192.0.2.23:7"
    finally:
        close(agent)


def test_a_vswitch_with_a_veth_uplink_puts_its_guests_on_the_lan(lan):
    """A vSwitch whose uplink is a veth into the LAN namespace: its guest leases its address
    from the LAN's own DHCP server (not vireod's) and reaches the LAN's HTTP server with that
    address, unmasqueraded. The uplink is shown as a pnic and goes free with the vSwitch."""
    uplink = Uplink(lan, f"{os.getpid() % 0x10000:04x}")
    agent = Agent(config=NAT, netns=lan.host)
    try:
        si = agent.vireod.connect()
        host, system = network_system(si)
        bond = vim.host.VirtualSwitch.BondBridge(nicDevice=[uplink.device])
        system.AddVirtualSwitch(vswitchName="vSwitch1", spec=vim.host.VirtualSwitch.Specification(
            numPorts=64, mtu=1500, bridge=bond))
        system.AddPortGroup(portgrp=port_group_spec("LAN", 0))
        info = system.networkInfo
        assert uplink.device in [p.device for p in info.pnic]
        [vswitch] = [v for v in info.vswitch if v.name == "vSwitch1"]
        assert list(vswitch.spec.bridge.nicDevice) == [uplink.device]
        bridge = bridge_of(agent) + "s1"
        master = lan.host.run("readlink", f"/sys/class/net/{uplink.device}/master").stdout
        assert master.strip().endswith("/" + bridge)
        if not kernel_filters_vlans(lan.host):
            # Nothing here can tag a frame for the LAN: a VLAN port group on it is refused.
            with pytest.raises(vim.fault.HostConfigFault) as refused:
                system.AddPortGroup(portgrp=port_group_spec("LAN-VLAN10", 10))
            assert "cannot be tagged toward an uplink" in refused.value.msg
            assert "LAN-VLAN10" not in [p.spec.name for p in system.networkInfo.portgroup]

        vm = guest_on(agent, si, "bridged", DHCP_CMDLINE, "LAN")
        wait_tools_running(agent, vm)
        wait_for(lambda: vm.guest.ipAddress, "the guest to report its leased address")
        address = ipaddress.ip_address(vm.guest.ipAddress)
        assert address in ipaddress.ip_network(Uplink.SUBNET)
        card = next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard))
        assert uplink.leases().get(card.macAddress) == str(address)

        before = len(lan.requests())
        answer = type_command(agent, vm, f"net get {LAN_IP} {LAN_PORT} /hello.txt", "http ")
        assert "status=HTTP/1.0 200 OK" in answer and f"body={lan.marker}" in answer, answer
        [request] = lan.requests()[before:]
        assert request.startswith(f"{address} "), request

        WaitForTask(vm.PowerOffVM_Task())
        system.RemovePortGroup(pgName="LAN")
        system.RemoveVirtualSwitch(vswitchName="vSwitch1")
        assert lan.host.run("ip", "link", "show", bridge).returncode != 0
        assert lan.host.run("ip", "link", "show", uplink.device).returncode == 0
        assert lan.host.run("test", "-e", f"/sys/class/net/{uplink.device}/master").returncode != 0
    finally:
        close(agent)
        uplink.close()


def frames_received(agent, vm):
    """The frames the guest's card has received (`net info`'s rx)."""
    info = type_command(agent, vm, "net info", "net mac=")
    return int(next(word for word in info.split() if word.startswith("rx=")).split("=")[1])


def test_a_promiscuous_port_sees_its_neighbours_unicast_and_a_strict_one_does_not(lan):
    """On one vSwitch, A sends B unicast datagrams. The guest on a port group that allows
    promiscuous mode receives each of them (its rx count grows by at least their number); the
    guest on a strict port group receives none of them; once the policy is turned off, neither
    does the first."""
    agent = Agent(config=NAT, netns=lan.host)
    try:
        si = agent.vireod.connect()
        _, system = network_system(si)
        system.AddVirtualSwitch(vswitchName="vSwitch1", spec=vim.host.VirtualSwitch.Specification(numPorts=64))
        system.AddPortGroup(portgrp=port_group_spec("Strict", 0))
        sniffing = port_group_spec("Sniffing", 0)
        sniffing.policy = vim.host.NetworkPolicy(
            security=vim.host.NetworkPolicy.SecurityPolicy(allowPromiscuous=True))
        system.AddPortGroup(portgrp=sniffing)
        a = static_guest(agent, si, "pm-a", "192.0.2.31", "Strict")
        static_guest(agent, si, "pm-b", "192.0.2.32", "Strict")
        watcher = static_guest(agent, si, "pm-watch", "192.0.2.33", "Sniffing")
        bystander = static_guest(agent, si, "pm-by", "192.0.2.34", "Strict")
        count = 12

        def unicast_seen():
            """What the watcher and the bystander received while A sent B `count` datagrams."""
            type_command(agent, a, "net udp 192.0.2.32 7 warm", "udp sent")  # ARP resolved
            before = [frames_received(agent, vm) for vm in (watcher, bystander)]
            for n in range(count):
                assert type_command(agent, a, f"net udp 192.0.2.32 7 u{n:02}", "udp sent") \
                    == "udp sent 3 bytes to 192.0.2.32:7"
            after = [frames_received(agent, vm) for vm in (watcher, bystander)]
            return [later - earlier for earlier, later in zip(before, after)]

        watched, passed_by = unicast_seen()
        assert watched >= count and passed_by < count, (watched, passed_by)

        sniffing.policy = vim.host.NetworkPolicy(
            security=vim.host.NetworkPolicy.SecurityPolicy(allowPromiscuous=False))
        system.UpdatePortGroup(pgName="Sniffing", portgrp=sniffing)
        watched, passed_by = unicast_seen()
        assert watched < count and passed_by < count, (watched, passed_by)
    finally:
        close(agent)
