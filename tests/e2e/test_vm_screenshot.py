"""Console screenshots through pyVmomi and HTTP: CreateScreenshot_Task saves a PNG of the test
guest's framebuffer console in the VM folder (result `[datastore1] shot/shot-1.png`, readable
through /folder), `GET /screen?id=<moid>` returns one directly; both are real pictures of the
console (the guest's light-grey text on its dark-blue background); a VM that is not running
has no screen (InvalidPowerState, HTTP 409)."""
import os
import ssl
import struct
import urllib.error
import urllib.request
import zlib

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from test_vm_lifecycle import agent, console, create_vm, wait_for  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")

TEXT = (0xd8, 0xd8, 0xd8)
BACKGROUND = (0x10, 0x18, 0x30)


def get(agent, path, cookie):
    request = urllib.request.Request(f"https://127.0.0.1:{agent.port}{path}", headers={"Cookie": cookie})
    with urllib.request.urlopen(request, context=ssl._create_unverified_context(), timeout=60) as response:
        return response.headers["Content-Type"], response.read()


def pixels(png):
    """Decodes an 8-bit RGB/RGBA non-interlaced PNG into (width, height, rows of RGB tuples)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        data = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", data)
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0
    bpp = 3 if color == 2 else 4
    raw, stride, rows, previous = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, corner = previous[i], previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xff
            elif kind == 2:
                line[i] = (line[i] + up) & 0xff
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xff
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xff
        rows.append([tuple(line[x * bpp:x * bpp + 3]) for x in range(width)])
        previous = line
    return width, height, rows


def test_screenshots_show_the_console(agent):
    si = agent.vireod.connect()
    vm = create_vm(si, "shot", scenario="shell", disk_kb=0, nic=False)
    with pytest.raises(vim.fault.InvalidPowerState):
        WaitForTask(vm.CreateScreenshot_Task())
    cookie = si._stub.cookie
    with pytest.raises(urllib.error.HTTPError) as off:
        get(agent, f"/screen?id={vm._moId}", cookie)
    assert off.value.code == 409

    WaitForTask(vm.PowerOnVM_Task())
    wait_for(lambda: "vireo> " in console(agent, vm), "the shell prompt")
    task = vm.CreateScreenshot_Task()
    WaitForTask(task)
    assert task.info.result == "[datastore1] shot/shot-1.png"
    kind, saved = get(agent, "/folder/shot/shot-1.png?dcPath=ha-datacenter&dsName=datastore1", cookie)
    with open(os.path.join(agent.data_dir, "datastore1", "shot", "shot-1.png"), "rb") as f:
        assert f.read() == saved
    kind, live = get(agent, f"/screen?id={vm._moId}", cookie)
    assert kind == "image/png"
    for png in (saved, live):
        width, height, rows = pixels(png)
        assert (width, height) == (1024, 768)
        colours = {}
        for row in rows:
            for p in row:
                colours[p] = colours.get(p, 0) + 1
        assert colours.get(BACKGROUND, 0) > width * height // 2, "the console background"
        assert colours.get(TEXT, 0) > 100, "console text"
        # the text sits in the top rows (boot lines and the prompt), not everywhere
        assert any(TEXT in row for row in rows[:16]) and TEXT not in rows[-1]
    WaitForTask(vm.CreateScreenshot_Task())
    assert os.path.exists(os.path.join(agent.data_dir, "datastore1", "shot", "shot-2.png"))
    WaitForTask(vm.PowerOffVM_Task())
