"""The VM console through pyVmomi: AcquireTicket("webmks") hands out a one-time ticket whose
wss:// URL opens an RFB (VNC) session over WebSocket on vireod's HTTPS port; the test speaks
both protocols itself (stdlib only), sees the test guest's console on the 1024x768 framebuffer,
types a command with key events and sees it run; a used or unknown ticket is refused before the
upgrade; AcquireMksTicket works the same; SetScreenResolution is NotSupported; a VM that is not
running gets no ticket (InvalidPowerState), and its open consoles close when it powers off."""
import base64
import collections
import hashlib
import os
import socket
import ssl
import struct
import urllib.parse

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from test_vm_lifecycle import agent, console, create_vm, wait_for  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")

# The test guest's console colours, as the bytes of an RGBX pixel (what noVNC asks for).
TEXT = bytes((0xd8, 0xd8, 0xd8, 0))
BACKGROUND = bytes((0x10, 0x18, 0x30, 0))
# noVNC's pixel format: 32 bpp, depth 24, little-endian, true colour, red at bit 0.
RGBX = struct.pack(">BBBBHHHBBBxxx", 32, 24, 0, 1, 255, 255, 255, 0, 8, 16)
KEYSYM_RETURN = 0xff0d


class Refused(Exception):
    """The server answered the WebSocket handshake with an HTTP error."""

    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {body}")
        self.status = status


class WebSocket:
    """The client side of RFC 6455 over TLS: masked binary frames out, a byte stream in."""

    def __init__(self, url):
        parts = urllib.parse.urlsplit(url)
        assert parts.scheme == "wss"
        raw = socket.create_connection((parts.hostname, parts.port), timeout=30)
        self.sock = ssl._create_unverified_context().wrap_socket(raw, server_hostname=parts.hostname)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           "Sec-WebSocket-Protocol: binary\r\n\r\n").encode())
        self.received = b""
        while b"\r\n\r\n" not in self.received:
            chunk = self.sock.recv(4096)
            assert chunk, "the server hung up during the handshake"
            self.received += chunk
        head, self.received = self.received.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        if status != 101:
            raise Refused(status, self.received.decode(errors="replace"))
        expected = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode())
                                    .digest()).decode()
        assert headers["sec-websocket-accept"] == expected
        assert headers["sec-websocket-protocol"] == "binary"
        self.data = b""
        self.close_code = None

    def send(self, payload, opcode=0x2):
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        else:
            header += bytes([0x80 | 126]) + struct.pack(">H", len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _read(self, n):
        while len(self.received) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError("connection closed")
            self.received += chunk
        out, self.received = self.received[:n], self.received[n:]
        return out

    def _frame(self):
        first, second = self._read(2)
        assert second & 0x80 == 0, "server frames are not masked"
        length = second & 0x7f
        if length == 126:
            length = struct.unpack(">H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self._read(8))[0]
        return first & 0x0f, self._read(length)

    def recv_exact(self, n):
        """The next n bytes of the server's binary messages."""
        while len(self.data) < n:
            opcode, payload = self._frame()
            if opcode == 0x8:
                self.close_code = struct.unpack(">H", payload[:2])[0] if payload else None
                raise EOFError(f"closed by the server: {payload[2:].decode(errors='replace')}")
            if opcode in (0x0, 0x2):
                self.data += payload
        out, self.data = self.data[:n], self.data[n:]
        return out

    def close(self):
        try:
            self.send(struct.pack(">H", 1000), opcode=0x8)
        except OSError:
            pass
        self.sock.close()


class RfbClient:
    """An RFB 3.8 viewer that keeps its copy of the screen in RGBX bytes."""

    def __init__(self, url):
        self.ws = WebSocket(url)
        assert self.ws.recv_exact(12) == b"RFB 003.008\n"
        self.ws.send(b"RFB 003.008\n")
        count = self.ws.recv_exact(1)[0]
        assert 1 in self.ws.recv_exact(count), "security type None is offered"
        self.ws.send(b"\x01")
        assert self.ws.recv_exact(4) == b"\0\0\0\0", "SecurityResult OK"
        self.ws.send(b"\x01")  # ClientInit, shared
        self.width, self.height = struct.unpack(">HH", self.ws.recv_exact(4))
        self.server_format = self.ws.recv_exact(16)
        self.name = self.ws.recv_exact(struct.unpack(">I", self.ws.recv_exact(4))[0]).decode()
        self.ws.send(b"\0\0\0\0" + RGBX)  # SetPixelFormat
        self.ws.send(struct.pack(">BxHi", 2, 1, 0))  # SetEncodings: Raw
        self.screen = bytearray(self.width * self.height * 4)

    def request(self, incremental):
        self.ws.send(struct.pack(">BBHHHH", 3, int(incremental), 0, 0, self.width, self.height))

    def read_update(self):
        """Reads one FramebufferUpdate into the screen; returns its rectangles."""
        kind, _, count = struct.unpack(">BBH", self.ws.recv_exact(4))
        assert kind == 0, f"message type {kind}"
        rects = []
        for _ in range(count):
            x, y, w, h, encoding = struct.unpack(">HHHHi", self.ws.recv_exact(12))
            assert encoding == 0, "Raw"
            pixels = self.ws.recv_exact(w * h * 4)
            for row in range(h):
                start = ((y + row) * self.width + x) * 4
                self.screen[start:start + w * 4] = pixels[row * w * 4:(row + 1) * w * 4]
            rects.append((x, y, w, h))
        return rects

    def colours(self):
        return collections.Counter(bytes(self.screen[i:i + 4]) for i in range(0, len(self.screen), 4))

    def type(self, text):
        for key in [ord(c) for c in text] + [KEYSYM_RETURN]:
            for down in (1, 0):
                self.ws.send(struct.pack(">BBxxI", 4, down, key))

    def close(self):
        self.ws.close()


def thumbprint(agent):
    der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", agent.port)))
    return ":".join(f"{b:02X}" for b in hashlib.sha1(der).digest())


def refused(url):
    with pytest.raises(Refused) as error:
        WebSocket(url)
    return error.value.status


def test_a_webmks_ticket_opens_the_console_once(agent):
    si = agent.vireod.connect()
    vm = create_vm(si, "console", scenario="shell", disk_kb=0, nic=False)
    for acquire in (lambda: vm.AcquireTicket("webmks"), vm.AcquireMksTicket,
                    lambda: vm.SetScreenResolution(width=800, height=600)):
        with pytest.raises(vim.fault.InvalidPowerState):
            acquire()

    WaitForTask(vm.PowerOnVM_Task())
    wait_for(lambda: "vireo> " in console(agent, vm), "the shell prompt")
    ticket = vm.AcquireTicket("webmks")
    assert ticket.url == f"wss://127.0.0.1:{agent.port}/ticket/{ticket.ticket}"
    assert (ticket.host, ticket.port) == ("127.0.0.1", agent.port)
    assert ticket.sslThumbprint == thumbprint(agent)
    assert ticket.cfgFile.endswith("console.vmx")

    viewer = RfbClient(ticket.url)
    try:
        assert (viewer.width, viewer.height) == (1024, 768)
        assert viewer.name == "console"
        viewer.request(incremental=False)
        rects = viewer.read_update()
        assert sum(w * h for _, _, w, h in rects) == 1024 * 768, "a full update covers the screen"
        before = viewer.colours()
        assert before[BACKGROUND] > 1024 * 768 // 2, "the console background"
        assert before[TEXT] > 100, "console text"

        # Keys go to the guest's serial console; the shell runs the command and the screen shows it.
        viewer.request(incremental=True)
        viewer.type("echo console-ok")
        wait_for(lambda: "\nconsole-ok" in console(agent, vm).replace("\r", ""), "the typed command's output")
        changed = []
        while viewer.colours()[TEXT] <= before[TEXT]:
            changed += viewer.read_update()
            viewer.request(incremental=True)
        assert changed and sum(w * h for _, _, w, h in changed) < 1024 * 768, "only what changed is sent"

        # A reset restarts the VMM; the open console follows it to the new framebuffer and
        # shows the rebooted guest (the typed lines are gone).
        typed = viewer.colours()[TEXT]
        boots = console(agent, vm).count("vireo-test-guest: booted")
        WaitForTask(vm.ResetVM_Task())
        wait_for(lambda: console(agent, vm).count("vireo-test-guest: booted") > boots, "the guest to reboot")
        while viewer.colours()[TEXT] >= typed:
            viewer.read_update()
            viewer.request(incremental=True)
    finally:
        viewer.close()

    assert refused(ticket.url) == 403, "a ticket works once"
    assert refused(f"wss://127.0.0.1:{agent.port}/ticket/{'0' * 32}") == 403, "an unknown ticket"

    mks = vm.AcquireMksTicket()
    assert mks.ticket and mks.ticket != ticket.ticket
    assert (mks.host, mks.port, mks.sslThumbprint) == ("127.0.0.1", agent.port, ticket.sslThumbprint)
    mks_viewer = RfbClient(f"wss://127.0.0.1:{agent.port}/ticket/{mks.ticket}")
    mks_viewer.close()

    with pytest.raises(vmodl.fault.InvalidArgument):
        vm.AcquireTicket("device")
    with pytest.raises(vmodl.fault.NotSupported):
        vm.SetScreenResolution(width=800, height=600)

    # Suspending ends open consoles; after the resume the saved screen is back on the console.
    wait_for(lambda: console(agent, vm).rstrip().endswith("vireo>"), "the shell prompt after the reset")
    ends_with_the_vm(vm, vm.SuspendVM_Task)
    WaitForTask(vm.PowerOnVM_Task())
    viewer = RfbClient(vm.AcquireTicket("webmks").url)
    viewer.request(incremental=False)
    viewer.read_update()
    resumed = viewer.colours()
    viewer.close()
    assert resumed[BACKGROUND] > 1024 * 768 // 2 and resumed[TEXT] > 100, "the resumed console"

    ends_with_the_vm(vm, vm.PowerOffVM_Task)
    with pytest.raises(vim.fault.InvalidPowerState):
        vm.AcquireTicket("webmks")


def test_a_ticket_is_checked_again_when_it_is_used(agent):
    """A ticket is only as good as its holder when it is used: once the session that acquired it
    has logged out, or its user has lost VirtualMachine.Interact.ConsoleInteract on the VM, the
    endpoint refuses it (403) although it was issued rightly; a ticket whose holder still may
    opens the console."""
    si = agent.vireod.connect()
    vm = create_vm(si, "ticket-holder", scenario="shell", disk_kb=0, nic=False)
    WaitForTask(vm.PowerOnVM_Task())
    spec = vim.host.LocalAccountManager.AccountSpecification(id="operator", password="Operator-pass-1",
                                                             description="operator")
    si.content.accountManager.CreateUser(spec)
    auth = si.content.authorizationManager
    admin = vim.AuthorizationManager.Permission(principal="operator", group=False, roleId=-1, propagate=True)
    auth.SetEntityPermissions(vm, [admin])
    operator = agent.vireod.connect("operator", "Operator-pass-1")
    op_vm = vim.VirtualMachine(vm._moId, operator._stub)

    # Issued to a session that then logs out: refused.
    ended = op_vm.AcquireTicket("webmks")
    operator.content.sessionManager.Logout()
    assert refused(ended.url) == 403, "the holder's session has ended"

    # Issued while the user held ConsoleInteract, which is then taken away: refused.
    operator = agent.vireod.connect("operator", "Operator-pass-1")
    op_vm = vim.VirtualMachine(vm._moId, operator._stub)
    revoked = op_vm.AcquireTicket("webmks")
    kept = op_vm.AcquireTicket("webmks")
    read_only = vim.AuthorizationManager.Permission(principal="operator", group=False, roleId=-2, propagate=True)
    auth.SetEntityPermissions(vm, [read_only])
    assert refused(revoked.url) == 403, "ConsoleInteract was taken away"

    # Given back: a ticket of a holder who still may opens the console.
    auth.SetEntityPermissions(vm, [admin])
    viewer = RfbClient(kept.url)
    viewer.close()
    WaitForTask(vm.PowerOffVM_Task())


def ends_with_the_vm(vm, stop):
    """Opens a console, runs the task `stop` and checks the console closes normally (1000)."""
    viewer = RfbClient(vm.AcquireTicket("webmks").url)
    viewer.request(incremental=False)
    viewer.read_update()
    viewer.request(incremental=True)
    WaitForTask(stop())
    with pytest.raises(EOFError):
        while True:
            viewer.read_update()
            viewer.request(incremental=True)
    assert viewer.ws.close_code == 1000
    viewer.close()
