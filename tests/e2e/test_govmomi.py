"""govmomi (Go) drives vireod too: tests/e2e/govmomi/main.go, built offline in GOPATH mode
against Debian's golang-github-vmware-govmomi-dev, logs in, lists VMs, reads host and
datastore properties and waits for an update. Skips (with the reason) where Go or the
package is not installed."""
import os
import shutil
import subprocess

import pytest

GOVMOMI_SRC = "/usr/share/gocode/src/github.com/vmware/govmomi"
HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(os.path.dirname(os.path.dirname(HERE)), ".cache", "go-build")


@pytest.fixture(scope="module")
def govmomi_smoke(tmp_path_factory):
    if shutil.which("go") is None or not os.path.isdir(GOVMOMI_SRC):
        pytest.skip("needs Debian packages golang-go and golang-github-vmware-govmomi-dev")
    out = str(tmp_path_factory.mktemp("govmomi") / "govmomi-smoke")
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode", GOCACHE=CACHE, GOFLAGS="")
    subprocess.run(["go", "build", "-o", out, os.path.join(HERE, "govmomi", "main.go")], env=env, check=True,
                   timeout=900)
    return out


def test_govmomi_client_walks_and_waits(vireod, govmomi_smoke):
    from conftest import ROOT_PASSWORD
    url = f"https://root:{ROOT_PASSWORD}@{vireod.host}:{vireod.port}/sdk"
    result = subprocess.run([govmomi_smoke, url], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "vm: e2e vm poweredOff" in result.stdout
    assert result.stdout.rstrip().endswith("OK")
