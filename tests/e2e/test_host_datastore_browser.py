"""HostDatastoreBrowser as datastore scripts drive it: SearchDatastore_Task and
SearchDatastoreSubFolders_Task with match patterns, each FileQuery type, file details (sizes,
times, owners checked against os.stat), a disk's capacity from its header (qemu-img is the
oracle) and its VM's hardware version, sorting; a powered-on VM's disk is listed; and every way
out of the datastore (`..`, absolute paths, symlinks) is refused or never followed."""
import json
import os
import pwd
import subprocess

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from test_vm_lifecycle import agent, create_vm, power_on_booted, si  # noqa: F401 (fixtures)


def search(browser, path, spec, sub_folders=False):
    method = browser.SearchDatastoreSubFolders_Task if sub_folders else browser.SearchDatastore_Task
    task = method(datastorePath=path, searchSpec=spec)
    WaitForTask(task)
    return task.info.result


def all_details():
    return vim.host.DatastoreBrowser.FileInfo.Details(fileType=True, fileSize=True, modification=True,
                                                       fileOwner=True)


def disk_query():
    details = vim.host.DatastoreBrowser.VmDiskQuery.Details(diskType=True, capacityKb=True, hardwareVersion=True,
                                                            controllerType=True, diskExtents=True, thin=True)
    return vim.host.DatastoreBrowser.VmDiskQuery(details=details)


def datastore(si):
    return si.content.rootFolder.childEntity[0].datastore[0]


@pytest.fixture(scope="module")
def layout(agent):
    """A folder tree beside the VMs: an ISO, a floppy, a log, an nvram, a note, a nested folder,
    a raw disk, and a symlink pointing out of the datastore at a canary."""
    ds = os.path.join(agent.data_dir, "datastore1")
    tree = os.path.join(ds, "browse")
    os.makedirs(os.path.join(tree, "nested", "deeper"))
    files = {"boot.iso": 4096 * 3, "Other.ISO": 2048, "a.flp": 1474560, "run.log": 10, "run.log.1": 7,
             "x.nvram": 8192, "notes.txt": 5, "nested/inner.iso": 2048, "nested/deeper/raw.raw": 1 << 20}
    for name, size in files.items():
        with open(os.path.join(tree, name), "wb") as f:
            f.truncate(size)
    outside = os.path.join(agent.data_dir, "outside")
    os.makedirs(outside)
    with open(os.path.join(outside, "secret.iso"), "wb") as f:
        f.write(b"canary")
    os.symlink(outside, os.path.join(tree, "escape"))
    os.symlink(os.path.join(outside, "secret.iso"), os.path.join(tree, "link.iso"))
    return tree


def names(result):
    return [f.path for f in result.file or []]


def test_search_matches_patterns_types_and_details(si, agent, layout):
    browser = datastore(si).browser
    assert browser == si.content.rootFolder.childEntity[0].hostFolder.childEntity[0].host[0].datastoreBrowser
    spec = vim.host.DatastoreBrowser.SearchSpec(matchPattern=["*.iso"], details=all_details())
    result = search(browser, "[datastore1] browse", spec)
    assert result.folderPath == "[datastore1] browse/"
    assert names(result) == ["boot.iso"]  # case-sensitive; link.iso is a symlink: never listed
    iso = result.file[0]
    assert isinstance(iso, vim.host.DatastoreBrowser.IsoImageInfo)
    st = os.stat(os.path.join(layout, "boot.iso"))
    assert iso.fileSize == st.st_size == 12288
    assert abs(iso.modification.timestamp() - st.st_mtime) < 1e-3
    assert iso.owner == pwd.getpwuid(st.st_uid).pw_name

    spec.searchCaseInsensitive = True
    assert names(search(browser, "[datastore1] browse", spec)) == ["Other.ISO", "boot.iso"]

    # Typed queries: each file type picked out by its own query.
    typed = {
        vim.host.DatastoreBrowser.FolderQuery: ["nested"],  # "escape" is a symlink
        vim.host.DatastoreBrowser.FloppyImageQuery: ["a.flp"],
        vim.host.DatastoreBrowser.VmLogQuery: ["run.log", "run.log.1"],
        vim.host.DatastoreBrowser.VmNvramQuery: ["x.nvram"],
        vim.host.DatastoreBrowser.IsoImageQuery: ["Other.ISO", "boot.iso"],
    }
    for query, expected in typed.items():
        found = search(browser, "[datastore1] browse", vim.host.DatastoreBrowser.SearchSpec(query=[query()]))
        assert names(found) == expected, query
    # No query: every file and folder, without details unless asked.
    plain = search(browser, "[datastore1] browse", vim.host.DatastoreBrowser.SearchSpec())
    assert names(plain) == ["Other.ISO", "a.flp", "boot.iso", "nested", "notes.txt", "run.log", "run.log.1",
                            "x.nvram"]
    assert all(type(f) is vim.host.DatastoreBrowser.FileInfo and f.fileSize is None for f in plain.file)
    first = search(browser, "[datastore1] browse", vim.host.DatastoreBrowser.SearchSpec(sortFoldersFirst=True))
    assert names(first)[0] == "nested"


def test_sub_folder_search_walks_the_tree_and_reads_disks(si, agent, layout):
    browser = datastore(si).browser
    vm = create_vm(si, "browse-vm", disk_kb=32 * 1024)
    disks = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
    disk_name = disks[0].backing.fileName
    folder, file = disk_name.rsplit("/", 1)
    power_on_booted(agent, vm)
    try:
        spec = vim.host.DatastoreBrowser.SearchSpec(query=[disk_query()], details=all_details())
        results = search(browser, "[datastore1]", spec, sub_folders=True)
        folders = [r.folderPath for r in results]
        assert folders[0] == "[datastore1]"
        assert "[datastore1] browse/" in folders and "[datastore1] browse/nested/deeper/" in folders
        assert not any("escape" in f for f in folders)  # the symlinked folder is not followed
        by_path = {r.folderPath + f.path: f for r in results for f in r.file or []}
        running = by_path[f"{folder}/{file}"]
        host_file = os.path.join(agent.data_dir, "datastore1", disk_name.split("] ", 1)[1])
        info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", host_file],
                                         capture_output=True, text=True, check=True).stdout)
        assert running.capacityKb * 1024 == info["virtual-size"] == 32 * 1024 * 1024
        assert running.thin is True and running.diskType is vim.vm.device.VirtualDisk.FlatVer2BackingInfo
        assert running.hardwareVersion == int(vm.config.version.split("-")[1])
        assert running.controllerType is vim.vm.device.ParaVirtualSCSIController
        assert running.diskExtents == [disk_name]
        raw = by_path["[datastore1] browse/nested/deeper/raw.raw"]
        assert raw.capacityKb == 1024 and raw.thin is False and raw.hardwareVersion is None

        # The VM's config file, with its config.version read from it.
        config = vim.host.DatastoreBrowser.VmConfigQuery(
            details=vim.host.DatastoreBrowser.VmConfigQuery.Details(configVersion=True))
        found = search(browser, folder, vim.host.DatastoreBrowser.SearchSpec(query=[config]))
        assert [f.path for f in found.file] == [vm.config.files.vmPathName.rsplit("/", 1)[1]]
        assert found.file[0].configVersion == 8
        none = vim.host.DatastoreBrowser.VmConfigQuery(
            filter=vim.host.DatastoreBrowser.VmConfigQuery.Filter(matchConfigVersion=[7]))
        assert search(browser, folder, vim.host.DatastoreBrowser.SearchSpec(query=[none])).file == []
        thick = vim.host.DatastoreBrowser.VmDiskQuery(filter=vim.host.DatastoreBrowser.VmDiskQuery.Filter(thin=False))
        results = search(browser, "[datastore1]", vim.host.DatastoreBrowser.SearchSpec(query=[thick]),
                         sub_folders=True)
        assert [r.folderPath + f.path for r in results for f in r.file or []] == [
            "[datastore1] browse/nested/deeper/raw.raw"]
    finally:
        WaitForTask(vm.PowerOffVM_Task())


@pytest.mark.parametrize("path, fault", [
    ("[datastore1] ..", vim.fault.InvalidDatastorePath),
    ("[datastore1] browse/../..", vim.fault.InvalidDatastorePath),
    ("[datastore1] /etc", vim.fault.FileNotFound),
    ("[datastore1] browse/escape", vim.fault.FileFault),
    ("[nosuch] x", vim.fault.InvalidDatastore),
    ("/etc", vim.fault.InvalidDatastorePath),
])
def test_paths_leaving_the_datastore_are_refused(si, agent, layout, path, fault):
    browser = datastore(si).browser
    with pytest.raises(fault):
        search(browser, path, vim.host.DatastoreBrowser.SearchSpec(), sub_folders=True)
