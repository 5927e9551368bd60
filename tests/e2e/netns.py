"""Network namespaces for the networking tests, so that nothing they do reaches this machine's
own interfaces: `Lan` makes a "host" namespace (where vireod runs) and a "LAN" namespace joined
to it by a veth pair, the host's default route pointing into the LAN, where a tiny HTTP server
answers. vireod's HTTPS port inside the host namespace is reached from here through a loopback
forwarder whose outgoing connections are made inside the namespace (setns on one thread)."""
import ctypes
import os
import socket
import subprocess
import sys
import tempfile
import threading

CLONE_NEWNET = 0x40000000
HOST_IP = "198.18.0.1"
LAN_IP = "198.18.0.2"
LAN_PORT = 8080
_libc = ctypes.CDLL(None, use_errno=True)


def ip(*args, netns=None):
    command = ["ip"] + (["-n", netns] if netns else []) + list(args)
    subprocess.run(command, check=True, capture_output=True)


def connect_in(netns, port):
    """A TCP connection to 127.0.0.1:`port` made inside namespace `netns`."""
    result = {}

    def run():
        fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            result["socket"] = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError as error:
            result["error"] = error
        finally:
            os.close(fd)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    result["socket"].settimeout(None)
    return result["socket"]


def _pump(source, sink):
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Namespace:
    """A network namespace of ours, with loopback up."""

    def __init__(self, name):
        self.name = name
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        ip("netns", "add", name)
        ip("link", "set", "lo", "up", netns=name)
        self.listeners = []

    def command(self, argv):
        return ["ip", "netns", "exec", self.name] + list(argv)

    def run(self, *argv):
        return subprocess.run(self.command(argv), capture_output=True, text=True)

    def forward(self, port):
        """A loopback port here whose connections go to 127.0.0.1:`port` in the namespace."""
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self.listeners.append(listener)

        def serve():
            while True:
                try:
                    client, _ = listener.accept()
                except OSError:
                    return
                try:
                    upstream = connect_in(self.name, port)
                except OSError:
                    client.close()
                    continue
                threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()
                threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()
        return listener.getsockname()[1]

    def delete(self):
        for listener in self.listeners:
            listener.close()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


class Lan:
    """The host namespace, the LAN namespace behind its default route, and the LAN's HTTP
    server serving `marker` as /hello.txt (its log, `requests()`, shows who asked)."""

    def __init__(self, tag):
        self.host = Namespace(f"vireo-h-{tag}")
        self.lan = Namespace(f"vireo-l-{tag}")
        host_end, lan_end = f"vh-{tag}", f"vl-{tag}"
        ip("link", "add", host_end, "netns", self.host.name, "type", "veth",
           "peer", "name", lan_end, "netns", self.lan.name)
        ip("addr", "add", f"{HOST_IP}/24", "dev", host_end, netns=self.host.name)
        ip("link", "set", host_end, "up", netns=self.host.name)
        ip("addr", "add", f"{LAN_IP}/24", "dev", lan_end, netns=self.lan.name)
        ip("link", "set", lan_end, "up", netns=self.lan.name)
        ip("route", "add", "default", "via", LAN_IP, netns=self.host.name)
        self.www = tempfile.mkdtemp(prefix="vireo-lan-")
        self.marker = f"vireo-lan-says-{os.getpid()}"
        with open(os.path.join(self.www, "hello.txt"), "w") as f:
            f.write(self.marker + "\n")
        self.log_path = os.path.join(self.www, "server.log")
        self.log = open(self.log_path, "w")
        self.server = subprocess.Popen(
            self.lan.command([sys.executable, "-m", "http.server", str(LAN_PORT), "--bind", LAN_IP,
                              "--directory", self.www]),
            stdout=self.log, stderr=subprocess.STDOUT)

    def requests(self):
        """The server's log lines (one per request, starting with the client's address)."""
        with open(self.log_path) as f:
            return [line for line in f.read().splitlines() if "GET " in line]

    def close(self):
        self.server.terminate()
        self.server.wait(timeout=10)
        self.log.close()
        self.host.delete()
        self.lan.delete()
        subprocess.run(["rm", "-rf", self.www])


class Uplink:
    """A second veth pair between `lan`'s two namespaces for a vSwitch uplink: the host end
    (`device`, no address: vireod bridges it) and the LAN end at `GATEWAY`/24, where a dnsmasq of
    the LAN serves DHCP (router `GATEWAY`) with its leases in `lease_file`. Bridged guests lease
    from it and reach the LAN's HTTP server at `LAN_IP` with their own address."""

    GATEWAY = "198.51.100.1"
    SUBNET = "198.51.100.0/24"

    def __init__(self, lan, tag):
        self.lan = lan
        self.device, lan_end = f"vu-{tag}", f"vw-{tag}"
        ip("link", "add", self.device, "netns", lan.host.name, "type", "veth",
           "peer", "name", lan_end, "netns", lan.lan.name)
        ip("addr", "add", f"{self.GATEWAY}/24", "dev", lan_end, netns=lan.lan.name)
        ip("link", "set", lan_end, "up", netns=lan.lan.name)
        self.lease_file = os.path.join(lan.www, "uplink.leases")
        self.dhcp_log = open(os.path.join(lan.www, "uplink-dnsmasq.log"), "w")
        self.dnsmasq = subprocess.Popen(
            lan.lan.command(["/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
                             "--port=0", "--user=root", f"--interface={lan_end}", "--bind-interfaces",
                             "--dhcp-range=198.51.100.50,198.51.100.99,255.255.255.0,1h",
                             f"--dhcp-option=option:router,{self.GATEWAY}", "--dhcp-authoritative",
                             f"--dhcp-leasefile={self.lease_file}", "--log-facility=-", "--log-dhcp"]),
            stdout=self.dhcp_log, stderr=subprocess.STDOUT)

    def leases(self):
        """The LAN dnsmasq's leases as {MAC: address}."""
        try:
            with open(self.lease_file) as f:
                return {line.split()[1]: line.split()[2] for line in f if len(line.split()) > 2}
        except FileNotFoundError:
            return {}

    def close(self):
        self.dnsmasq.terminate()
        self.dnsmasq.wait(timeout=10)
        self.dhcp_log.close()
        subprocess.run(["ip", "-n", self.lan.host.name, "link", "del", self.device], capture_output=True)
