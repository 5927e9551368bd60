"""The host as Ansible's host modules read and change it, run unmodified against a fresh vireod:
vmware_host_facts (facts checked against this machine), vmware_datastore_info (statvfs),
vsphere_copy (an upload read back from the datastore directory) and vmware_host_datastore; and
the configManager views behind them read through pyVmomi (storage, vSAN, services, firewall,
power, boot device, CPU scheduler), each compared with what /proc and /sys say."""
import os
import secrets

import pytest
from pyVmomi import vmodl

from ansible_modules import run_module
from conftest import connection_to, own_vireod


server = own_vireod()
si = connection_to("server")


@pytest.fixture
def host(si):
    return si.content.rootFolder.childEntity[0].hostFolder.childEntity[0].host[0]


def meminfo_mb(field):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024
    raise AssertionError(f"no {field} in /proc/meminfo")


def physical_disks():
    return sorted(d for d in os.listdir("/sys/block") if os.path.exists(f"/sys/block/{d}/device"))


def test_vmware_host_facts_describe_this_machine(server):
    result = run_module(server, "vmware_host_facts")
    assert not result.get("failed"), result.get("msg")
    facts = result["ansible_facts"]
    with open("/proc/cpuinfo") as f:
        threads = sum(1 for line in f if line.startswith("processor"))
    assert facts["ansible_processor_vcpus"] == threads
    assert facts["ansible_memtotal_mb"] == meminfo_mb("MemTotal")
    # Free memory is the machine's: total less what is in use (MemAvailable, read by vireod).
    assert 0 < facts["ansible_memfree_mb"] < facts["ansible_memtotal_mb"]
    assert abs(facts["ansible_memfree_mb"] - meminfo_mb("MemAvailable")) < meminfo_mb("MemTotal") // 10
    assert [d["name"] for d in facts["ansible_datastore"]] == ["datastore1"]
    assert facts["ansible_distribution"] == "Vireo"
    assert facts["ansible_host_connection_state"] == "connected"
    # No vSAN here: the module reads QueryHostStatus and gets what an ESXi host without it says.
    assert facts["vsan_health"] == "unknown" and facts["vsan_cluster_uuid"] is None
    assert facts["host_date_time"]["year"]


def test_host_config_sections_read_the_machine(server):
    wanted = ["config.storageDevice", "config.fileSystemVolume", "config.hyperThread",
              "config.service", "config.firewall", "config.powerSystemInfo",
              "config.dateTimeInfo", "config.datastoreCapabilities", "configManager"]
    result = run_module(server, "vmware_host_facts", schema="vsphere", properties=wanted)
    assert not result.get("failed"), result.get("msg")
    config = result["ansible_facts"]["config"]
    disks = [lun["canonicalName"] for lun in config["storageDevice"]["scsiLun"]]
    assert disks == physical_disks()
    for lun in config["storageDevice"]["scsiLun"]:
        with open(f"/sys/block/{lun['canonicalName']}/size") as f:
            assert lun["capacity"]["block"] * lun["capacity"]["blockSize"] == int(f.read()) * 512
    volumes = {m["volume"]["name"]: m for m in config["fileSystemVolume"]["mountInfo"]}
    datastore = volumes["datastore1"]
    assert datastore["mountInfo"]["path"] == server.datastore_dir
    stat = os.statvfs(server.datastore_dir)
    assert datastore["volume"]["capacity"] == stat.f_blocks * stat.f_frsize
    assert volumes["/"]["volume"]["device"].startswith("/dev/")
    smt = open("/sys/devices/system/cpu/smt/active").read().strip() == "1"
    assert config["hyperThread"]["active"] == smt
    services = {s["key"]: s for s in config["service"]["service"]}
    assert services["hostd"]["running"] and services["hostd"]["ruleset"] == ["vSphereClient"]
    rules = config["firewall"]["ruleset"][0]["rule"]
    assert [(r["port"], r["protocol"], r["direction"]) for r in rules] == [(server.port, "tcp", "inbound")]
    governor = "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"
    if not os.path.exists(governor):
        assert config["powerSystemInfo"]["currentPolicy"]["shortName"] == "static"
    assert config["dateTimeInfo"]["timeZone"]["name"]
    assert config["datastoreCapabilities"]["localDatastoreSupported"] is True
    managers = result["ansible_facts"]["configManager"]
    for name in ["storageSystem", "datastoreSystem", "vsanSystem", "serviceSystem", "firewallSystem",
                 "memoryManager", "powerSystem", "bootDeviceSystem", "cpuScheduler",
                 "dateTimeSystem", "advancedOption", "autoStartManager"]:
        assert managers[name], name


def test_vmware_datastore_info_reports_statvfs(server):
    result = run_module(server, "vmware_datastore_info", datacenter="ha-datacenter")
    assert not result.get("failed"), result.get("msg")
    [datastore] = result["datastores"]
    stat = os.statvfs(server.datastore_dir)
    assert datastore["name"] == "datastore1" and datastore["accessible"]
    assert datastore["capacity"] == stat.f_blocks * stat.f_frsize
    # Free space moves with every other writer on this disk; within 2 GiB of statvfs now.
    assert abs(datastore["freeSpace"] - stat.f_bavail * stat.f_frsize) < 2 << 30


def test_vsphere_copy_uploads_into_the_datastore(server, tmp_path):
    source = tmp_path / "upload.iso"
    payload = secrets.token_bytes(1 << 20)
    source.write_bytes(payload)
    # vsphere_copy builds https://<hostname>/folder/...: the test server's port rides in it.
    result = run_module(server, "vsphere_copy", hostname=f"{server.host}:{server.port}",
                        src=str(source), datacenter="ha-datacenter", datastore="datastore1",
                        path="uploaded.iso")
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] and result["status"] in (200, 201)
    with open(os.path.join(server.datastore_dir, "uploaded.iso"), "rb") as f:
        assert f.read() == payload
    # A folder that does not exist is refused, as on ESXi, and nothing is written.
    result = run_module(server, "vsphere_copy", hostname=f"{server.host}:{server.port}",
                        src=str(source), datacenter="ha-datacenter", datastore="datastore1",
                        path="no-such-folder/uploaded.iso")
    assert result.get("failed") and "404" in result["msg"]
    assert not os.path.exists(os.path.join(server.datastore_dir, "no-such-folder"))


def test_vmware_host_datastore_sees_datastores_and_refuses_nfs(server):
    present = run_module(server, "vmware_host_datastore", datastore_name="datastore1",
                         datastore_type="nfs", nfs_server="192.0.2.1", nfs_path="/export")
    assert not present.get("failed"), present.get("msg")
    assert present["changed"] is False
    nfs = run_module(server, "vmware_host_datastore", datastore_name="nfs1",
                     datastore_type="nfs", nfs_server="192.0.2.1", nfs_path="/export")
    assert nfs.get("failed") and "NotSupported" in nfs["msg"] and "NFS" in nfs["msg"]


def test_host_managers_answer_from_the_machine(host):
    managers = host.configManager
    status = managers.vsanSystem.QueryHostStatus()
    assert status.health == "unknown" and status.nodeState.state == "disabled"
    assert managers.vsanSystem.config.enabled is False
    boot = managers.bootDeviceSystem.QueryBootDevices()
    root = [line.split() for line in open("/proc/self/mounts") if line.split()[1] == "/"][-1][0]
    if root.startswith("/dev/"):
        assert boot.currentBootDeviceKey == root
        assert [d.key for d in boot.bootDevices] == [root]
    assert managers.memoryManager.consoleReservationInfo.unreserved == host.hardware.memorySize
    assert [ds.name for ds in managers.datastoreSystem.datastore] == ["datastore1"]
    assert managers.storageSystem.fileSystemVolumeInfo.mountInfo[0].volume.name == "datastore1"
    managers.storageSystem.RefreshStorageSystem()
    managers.serviceSystem.RefreshServices()
    # What is the machine's is shown, not changed.
    for change in [lambda: managers.serviceSystem.StartService(id="TSM-SSH"),
                   lambda: managers.firewallSystem.DisableRuleset(id="vSphereClient"),
                   lambda: managers.cpuScheduler.DisableHyperThreading(),
                   lambda: managers.powerSystem.ConfigurePowerPolicy(key=1)]:
        with pytest.raises(vmodl.fault.NotSupported):
            change()
    assert host.summary.quickStats.overallMemoryUsage > 0
