"""Starts a fresh vireod for the end-to-end tests and hands out connected pyVmomi clients.

vireod runs from $VIREO_BIN_DIR (default target/debug) on a free loopback port with a temporary
data dir holding one VM folder, and root's password set through VIREO_ROOT_PASSWORD.
"""
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request

import pytest
from pyVim.connect import Disconnect, SmartConnect

ROOT_PASSWORD = "e2e-Secret!"
# Tests outside tests/e2e/test_networking.py run vireod in this machine's own network namespace:
# there "VM Network" stays host-only (no NAT, no forwarding turned on, no dnsmasq).
INTERNAL_NETWORK = 'vm_network = "internal"\n'
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEST_VMX = """displayName = "e2e vm"
memsize = "512"
numvcpus = "2"
guestOS = "debian12-64"
uuid.bios = "56 4d 12 34 56 78 9a bc-de f0 12 34 56 78 9a bc"
ethernet0.present = "TRUE"
"""


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: boots a stock Linux guest (minutes to an hour on kvm-pvm)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Vireod:
    """A running vireod: address, data dir and the process."""

    def __init__(self, port, data_dir, process):
        self.host = "127.0.0.1"
        self.port = port
        self.data_dir = data_dir
        self.process = process

    @property
    def datastore_dir(self):
        return os.path.join(self.data_dir, "datastore1")

    def connect(self, user="root", pwd=ROOT_PASSWORD):
        return SmartConnect(host=self.host, port=self.port, user=user, pwd=pwd,
                            disableSslCertValidation=True)

    def post(self, body, headers=None, timeout=30):
        """Raw POST /sdk; returns (status, body text)."""
        context = ssl._create_unverified_context()
        request = urllib.request.Request(f"https://{self.host}:{self.port}/sdk", data=body, method="POST",
                                         headers={"Content-Type": "text/xml", "SOAPAction": '"urn:vim25/8.0.3.0"',
                                                  **(headers or {})})
        try:
            with urllib.request.urlopen(request, context=context, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()


def wait_ready(port, process, timeout=60):
    context = ssl._create_unverified_context()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vireod exited with {process.returncode}")
        try:
            url = f"https://127.0.0.1:{port}/sdk/vimServiceVersions.xml"
            with urllib.request.urlopen(url, context=context, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("vireod did not become ready")


def host_path(agent, datastore_path):
    """The host file behind `[name] path` in the data dir of `agent`'s vireod (whose datastores
    are folders of the data dir named as the datastores)."""
    name, path = datastore_path[1:].split("] ", 1)
    return os.path.join(agent.data_dir, name, path)


def dnsmasq_serving(data_dir):
    """The pids of dnsmasq processes serving a lease file of the vireod that used `data_dir`."""
    ours = f"--dhcp-leasefile={data_dir}/network/".encode()
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if any(arg.startswith(ours) for arg in f.read().split(b"\0")):
                    pids.append(int(entry))
        except (OSError, ValueError):
            pass
    return pids


def check_network_removed(data_dir, netns=None):
    """Fails when the stopped vireod that used `data_dir` (in namespace `netns`, if given) left
    host network objects behind: its bridges (vbr<id>...), TAPs (vt<id>...), nft tables
    (vireo_<id>...) or dnsmasq. What it finds is removed first, so that one leak does not pile up."""
    prefix = netns.command([]) if netns else []
    run = lambda *argv: subprocess.run(prefix + list(argv), capture_output=True, text=True).stdout
    try:
        with open(os.path.join(data_dir, "network-instance")) as f:
            instance = f.read().strip()
    except OSError:
        instance = None
    left = []
    if instance:
        for line in run("ip", "-o", "link", "show").splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name.startswith((f"vbr{instance}", f"vt{instance}")):
                left.append(f"interface {name}")
                run("ip", "link", "del", name)
        for line in run("nft", "list", "tables").splitlines():
            if line.split()[-1:] and line.split()[-1].startswith(f"vireo_{instance}"):
                left.append(line)
                run("nft", "delete", "table", *line.split()[1:])
    for pid in dnsmasq_serving(data_dir):
        left.append(f"dnsmasq (pid {pid})")
        os.kill(pid, signal.SIGTERM)
    assert not left, f"vireod left host network objects behind: {left}"


@contextlib.contextmanager
def start_vireod(config=None):
    """A fresh vireod with the test VM folder; `config` is TOML laid over the built-in defaults."""
    binary = os.path.join(os.environ.get("VIREO_BIN_DIR", os.path.join(REPO, "target", "debug")), "vireod")
    data_dir = tempfile.mkdtemp(prefix="vireo-e2e-")
    vm_dir = os.path.join(data_dir, "datastore1", "e2e-vm")
    os.makedirs(vm_dir)
    with open(os.path.join(vm_dir, "e2e-vm.vmx"), "w") as f:
        f.write(TEST_VMX)
    port = free_port()
    config_file = os.path.join(data_dir, "vireod.toml")
    with open(config_file, "w") as f:
        f.write(INTERNAL_NETWORK + (config or ""))
    command = [binary, "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir, "--config", config_file]
    log = open(os.path.join(data_dir, "vireod.log"), "w")
    env = dict(os.environ, VIREO_ROOT_PASSWORD=ROOT_PASSWORD, VIREO_LOG="info")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_ready(port, process)
        yield Vireod(port, data_dir, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        try:
            check_network_removed(data_dir)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def vireod():
    with start_vireod() as server:
        yield server


def own_vireod(config=None):
    """A module-scoped fixture: a vireod of the module's own, so that the VMs it makes stay out of
    other modules' inventory (`config` as for `start_vireod`). Use: `server = own_vireod()`."""

    @pytest.fixture(scope="module")
    def fixture():
        with start_vireod(config) as server:
            yield server

    return fixture


def connection_to(server):
    """A per-test fixture: a pyVmomi connection as root to the vireod of fixture `server` (a
    `Vireod`, or an agent whose current vireod is its `.vireod`), logged out after the test unless
    that vireod went away under it. Use: `si = connection_to("agent")`."""

    @pytest.fixture
    def fixture(request):
        target = request.getfixturevalue(server)
        connection = getattr(target, "vireod", target).connect()
        yield connection
        with contextlib.suppress(Exception):
            Disconnect(connection)  # a test may have restarted or stopped vireod under it

    return fixture


si = connection_to("vireod")
