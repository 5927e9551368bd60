"""The host's datastore files as clients use them: an ISO uploaded through `PUT /folder` (streamed,
never left half-written under its name), read back, listed, copied, moved and deleted through
FileManager and HTTP; and each way out of the datastore tried (`..`, absolute paths, symlinks)
with a canary outside that must stay untouched."""
import base64
import http.client
import os
import shutil
import ssl
import tempfile
import time

import pytest
from pyVim.connect import Disconnect
from pyVim.task import WaitForTask
from pyVmomi import vim

from conftest import ROOT_PASSWORD, connection_to, own_vireod

ISO_BYTES = 3 * 1024 * 1024 + 123


server = own_vireod()
si = connection_to("server")


def basic(user="root", password=ROOT_PASSWORD):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def request(server, method, path, body=None, headers=None, ds="datastore1"):
    """One HTTPS request to `/folder/<path>?dsName=<ds>`: (status, headers, body)."""
    connection = http.client.HTTPSConnection(server.host, server.port, context=ssl._create_unverified_context(),
                                             timeout=60)
    try:
        all_headers = {"Authorization": basic(), **(headers or {})}
        connection.request(method, f"/folder/{path}?dcPath=ha-datacenter&dsName={ds}", body=body,
                           headers=all_headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def chunks(data, size=256 * 1024):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def file_manager(si):
    return si.content.fileManager


def datacenter(si):
    return si.content.rootFolder.childEntity[0]


def leftovers(folder):
    return [n for n in os.listdir(folder) if "vireo-partial" in n]


def test_an_iso_uploads_streamed_reads_back_and_is_listed(server, si):
    file_manager(si).MakeDirectory(name="[datastore1] isos/linux", datacenter=datacenter(si),
                                   createParentDirectories=True)
    iso = os.urandom(ISO_BYTES)
    # Chunked transfer (no length known beforehand: http.client chunks an iterable body), as
    # streaming clients send it.
    status, _, _ = request(server, "PUT", "isos/linux/boot.iso", body=chunks(iso))
    assert status == 201
    on_disk = os.path.join(server.datastore_dir, "isos", "linux", "boot.iso")
    with open(on_disk, "rb") as f:
        assert f.read() == iso
    status, headers, body = request(server, "GET", "isos/linux/boot.iso")
    assert status == 200 and body == iso
    status, headers, body = request(server, "HEAD", "isos/linux/boot.iso")
    assert status == 200 and body == b"" and int(headers["content-length"]) == ISO_BYTES
    # Replacing it with a declared length answers 200.
    status, _, _ = request(server, "PUT", "isos/linux/boot.iso", body=iso[:1000],
                           headers={"Content-Length": "1000"})
    assert status == 200 and os.path.getsize(on_disk) == 1000
    status, headers, page = request(server, "GET", "isos/linux")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'/folder/isos/linux/boot.iso?dcPath=ha-datacenter&amp;dsName=datastore1">boot.iso</a>' in page
    assert b">1000<" in page
    status, _, page = request(server, "GET", "isos")
    assert b'/folder/isos/linux/?' in page
    assert leftovers(os.path.dirname(on_disk)) == []


def test_an_upload_that_stops_short_leaves_no_file(server):
    folder = os.path.join(server.datastore_dir, "partial")
    os.makedirs(folder, exist_ok=True)
    connection = http.client.HTTPSConnection(server.host, server.port, context=ssl._create_unverified_context(),
                                             timeout=30)
    connection.putrequest("PUT", "/folder/partial/half.iso?dsName=datastore1")
    connection.putheader("Authorization", basic())
    connection.putheader("Content-Length", str(1 << 20))
    connection.endheaders()
    connection.send(b"x" * (256 << 10))
    connection.sock.shutdown(2)
    connection.close()
    # The server notices the short body; whatever the timing, no half file ever has the name.
    status, _, _ = request(server, "GET", "partial/half.iso")
    assert status == 404
    assert not os.path.exists(os.path.join(folder, "half.iso"))
    # And the temporary file goes once the server sees the connection end.
    status, _, _ = request(server, "PUT", "partial/whole.iso", body=b"y" * 10, headers={"Content-Length": "10"})
    assert status == 201
    deadline = 100
    while leftovers(folder) and deadline:
        time.sleep(0.1)
        deadline -= 1
    assert leftovers(folder) == []


def test_uploads_beyond_free_space_and_without_credentials_are_refused(server, si):
    status, _, _ = request(server, "PUT", "huge.iso", body=b"", headers={"Content-Length": str(1 << 60)})
    assert status == 507
    status, _, _ = request(server, "PUT", "nocreds.iso", body=b"abc", headers={"Authorization": ""})
    assert status == 401
    status, _, _ = request(server, "PUT", "nofolder/file.iso", body=b"abc", headers={"Content-Length": "3"})
    assert status == 404
    status, _, _ = request(server, "PUT", "x.iso", body=b"abc", headers={"Content-Length": "3"}, ds="nosuchds")
    assert status == 404
    assert not os.path.exists(os.path.join(server.datastore_dir, "huge.iso"))
    assert not os.path.exists(os.path.join(server.datastore_dir, "nocreds.iso"))


def test_file_manager_copies_moves_and_deletes(server, si):
    fm, dc = file_manager(si), datacenter(si)
    ds = server.datastore_dir
    os.makedirs(os.path.join(ds, "src", "inner"), exist_ok=True)
    with open(os.path.join(ds, "src", "inner", "data.bin"), "wb") as f:
        f.write(b"payload" * 1000)
    WaitForTask(fm.CopyDatastoreFile_Task(sourceName="[datastore1] src", sourceDatacenter=dc,
                                          destinationName="[datastore1] copy", destinationDatacenter=dc))
    with open(os.path.join(ds, "copy", "inner", "data.bin"), "rb") as f:
        assert f.read() == b"payload" * 1000
    with pytest.raises(vim.fault.FileAlreadyExists):
        WaitForTask(fm.CopyDatastoreFile_Task(sourceName="[datastore1] src", destinationName="[datastore1] copy"))
    WaitForTask(fm.MoveDatastoreFile_Task(sourceName="[datastore1] copy/inner/data.bin",
                                          destinationName="[datastore1] moved.bin"))
    assert os.path.isfile(os.path.join(ds, "moved.bin"))
    assert not os.path.exists(os.path.join(ds, "copy", "inner", "data.bin"))
    WaitForTask(fm.DeleteDatastoreFile_Task(name="[datastore1] copy", datacenter=dc))
    assert not os.path.exists(os.path.join(ds, "copy"))
    with pytest.raises(vim.fault.FileNotFound):
        WaitForTask(fm.DeleteDatastoreFile_Task(name="[datastore1] copy"))
    with pytest.raises(vim.fault.FileAlreadyExists):
        fm.MakeDirectory(name="[datastore1] src")
    with pytest.raises(vim.fault.InvalidDatastore):
        fm.MakeDirectory(name="[nosuchds] folder")
    status, _, _ = request(server, "DELETE", "moved.bin")
    assert status == 204 and not os.path.exists(os.path.join(ds, "moved.bin"))
    assert leftovers(ds) == []


class Canary:
    """A folder outside the datastore with one file, and what it held."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="vireo-canary-")
        self.file = os.path.join(self.dir, "secret")
        with open(self.file, "wb") as f:
            f.write(b"canary")

    def assert_untouched(self):
        assert sorted(os.listdir(self.dir)) == ["secret"]
        with open(self.file, "rb") as f:
            assert f.read() == b"canary"


@pytest.fixture
def canary():
    c = Canary()
    yield c
    shutil.rmtree(c.dir, ignore_errors=True)


def test_no_path_leaves_the_datastore(server, si, canary):
    fm = file_manager(si)
    ds = server.datastore_dir
    os.symlink(canary.dir, os.path.join(ds, "escape"))
    os.symlink(canary.file, os.path.join(ds, "secret-link"))
    try:
        os.makedirs(os.path.join(ds, "src"), exist_ok=True)
        for path in ["%2e%2e/%2e%2e/etc/passwd", "../secret", "escape/secret", "escape/new.iso",
                     "%2Fetc%2Fpasswd"]:
            for method in ["GET", "HEAD", "PUT", "DELETE"]:
                status, _, body = request(server, method, path, body=b"evil" if method == "PUT" else None)
                assert status in (400, 403, 404), (method, path, status, body)
        for method in ["GET", "PUT"]:
            status, _, body = request(server, method, "secret-link", body=b"evil" if method == "PUT" else None)
            assert status == 403, (method, status, body)
        relative = os.path.relpath(canary.file, ds)
        for name in [f"[datastore1] {relative}", "[datastore1] ../secret", "[datastore1] escape/secret",
                     "[datastore1] escape/new"]:
            with pytest.raises((vim.fault.InvalidDatastore, vim.fault.FileFault)):
                fm.MakeDirectory(name=name, createParentDirectories=True)
            with pytest.raises((vim.fault.InvalidDatastore, vim.fault.FileFault)):
                WaitForTask(fm.DeleteDatastoreFile_Task(name=name))
            with pytest.raises((vim.fault.InvalidDatastore, vim.fault.FileFault)):
                WaitForTask(fm.CopyDatastoreFile_Task(sourceName=name, destinationName="[datastore1] stolen"))
            with pytest.raises((vim.fault.InvalidDatastore, vim.fault.FileFault)):
                WaitForTask(fm.MoveDatastoreFile_Task(sourceName="[datastore1] src", destinationName=name,
                                                      force=True))
        with pytest.raises(vim.fault.InvalidDatastore):
            WaitForTask(fm.DeleteDatastoreFile_Task(name="[datastore1] "))
        # A leading slash names a path inside the datastore, as on ESXi.
        fm.MakeDirectory(name="[datastore1] /tmp-rooted", createParentDirectories=True)
        assert os.path.isdir(os.path.join(ds, "tmp-rooted"))
        # Deleting the links removes the links, never what they point to.
        WaitForTask(fm.DeleteDatastoreFile_Task(name="[datastore1] escape"))
        status, _, _ = request(server, "DELETE", "secret-link")
        assert status == 204
        assert not os.path.lexists(os.path.join(ds, "escape"))
        assert not os.path.lexists(os.path.join(ds, "stolen"))
        canary.assert_untouched()
    finally:
        for link in ["escape", "secret-link"]:
            if os.path.lexists(os.path.join(ds, link)):
                os.unlink(os.path.join(ds, link))


def test_a_read_only_user_reads_but_changes_nothing(server, si):
    spec = vim.host.LocalAccountManager.AccountSpecification(id="filereader", password="Reader-Pass1!",
                                                             description="read-only")
    si.content.accountManager.CreateUser(spec)
    permission = vim.AuthorizationManager.Permission(principal="filereader", group=False, roleId=-2, propagate=True)
    si.content.authorizationManager.SetEntityPermissions(si.content.rootFolder, [permission])
    reader = basic("filereader", "Reader-Pass1!")
    os.makedirs(os.path.join(server.datastore_dir, "ro"), exist_ok=True)
    status, _, _ = request(server, "PUT", "ro/x.iso", body=b"abc", headers={"Authorization": reader})
    assert status == 403
    status, _, _ = request(server, "DELETE", "ro", headers={"Authorization": reader})
    assert status == 403
    connection = server.connect("filereader", "Reader-Pass1!")
    try:
        with pytest.raises(vim.fault.NoPermission):
            connection.content.fileManager.MakeDirectory(name="[datastore1] ro/sub")
        with pytest.raises(vim.fault.NoPermission):
            connection.content.fileManager.DeleteDatastoreFile_Task(name="[datastore1] ro")
    finally:
        Disconnect(connection)
    assert os.listdir(os.path.join(server.datastore_dir, "ro")) == []
