"""VM networks that reach somewhere, all inside network namespaces of our own (tests/e2e/netns.py):
vireod runs in a "host" namespace whose default route leads to a "LAN" namespace with an HTTP
server. A test guest on the default "VM Network" (NAT) leases an address from vireod's dnsmasq,
reports it through the tools, and fetches a page from the LAN server through the masquerade;
a vireod killed with SIGKILL comes back with the guest still connected; two vireods in one
namespace each have their own NAT network; switching to an internal network removes all NAT
pieces."""
import ipaddress
import os
import signal

import pytest
from pyVmomi import vim

from netns import HOST_IP, LAN_IP, LAN_PORT, Lan
from test_vm_lifecycle import Agent, power_on_booted, wait_for
from test_vm_snapshots import type_command
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
    ours = f"--dhcp-leasefile={agent.data_dir}/network/".encode()
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if any(arg.startswith(ours) for arg in f.read().split(b"\0")):
                    pids.append(int(entry))
        except (OSError, ValueError):
            pass
    return pids


def close(agent):
    agent.close()
    for pid in dnsmasq_pids(agent):
        os.kill(pid, signal.SIGTERM)


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
    with open(os.path.join(agent.data_dir, "network", f"dnsmasq-{bridge_of(agent)}.leases")) as f:
        assert f"{card.macAddress} {address} " in f.read()
    return vm, address


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
