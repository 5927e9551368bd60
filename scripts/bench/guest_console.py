"""Reading a guest's serial console from a VMM process started by a benchmark."""
import os
import select
import time


def read_until(proc, needle, timeout):
    """Reads `proc`'s stdout until `needle` shows up; returns all read. Raises RuntimeError when
    `timeout` seconds pass or the output ends first."""
    buf = b""
    end = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            if needle in buf:
                return buf
    raise RuntimeError(f"timed out waiting for {needle!r}; got {buf[-400:]!r}")
