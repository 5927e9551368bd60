"""PerformanceManager as ESXi and VM performance scripts read it: the counter catalogue (names,
ids, levels), the provider summary, the available metrics, and the 20-second real-time
samples. Values are measured, so they are checked against the machine: a VM running the test
guest's disk benchmark shows the IOPS of the guest's own reads (within 10 %: the benchmark is
started at a sample boundary and runs through three whole 20-second samples) and, over the
samples covering it, the number of reads the guest reports (within 5 %); its consumed memory
is its VMM's resident set, and the host's uptime is /proc/uptime's."""
import os
import re
import time

import pytest
from pyVmomi import vim, vmodl

from test_vm_lifecycle import agent, create_vm, power_on_booted, si, wait_for  # noqa: F401 (fixtures)
from test_vm_lifecycle import console
from test_vm_snapshots import control

INTERVAL = 20
# Three whole samples.
BENCH_SECONDS = 3 * INTERVAL


def counters_by_name(perf):
    return {f"{c.groupInfo.key}.{c.nameInfo.key}.{c.rollupType}": c.key for c in perf.perfCounter}


def query(perf, entity, metric_ids, **spec):
    result = perf.QueryPerf(querySpec=[vim.PerformanceManager.QuerySpec(entity=entity, metricId=metric_ids,
                                                                        intervalId=20, **spec)])
    return result[0] if result else None


def series(metric, counter, instance=""):
    for s in metric.value:
        if s.id.counterId == counter and s.id.instance == instance:
            return list(s.value)
    raise AssertionError(f"no series {counter}/{instance!r}")


def bench(agent, vm):
    """Runs the guest's random-read benchmark on its disk; returns its report line (the guest
    may take longer than its own seconds on a loaded host)."""
    before = len(console(agent, vm))
    control(agent, vm, {"cmd": "serial-input", "text": f"blk bench 0 randread 4096 4 {BENCH_SECONDS}\n"})
    pattern = re.compile(r"^(bench .*)\n", re.M)
    wait_for(lambda: pattern.search(console(agent, vm)[before:]), "the benchmark's report", timeout=5 * BENCH_SECONDS)
    return pattern.search(console(agent, vm)[before:]).group(1)


def vmm_rss_kb(agent, vm):
    with open(os.path.join(agent.data_dir, "run", f"vm-{vm._moId}", "vmm.pid")) as f:
        pid = int(f.read().split()[0])
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))


def test_catalogue_and_summaries(si):
    perf = si.content.perfManager
    names = counters_by_name(perf)
    for name, key in [("cpu.usage.average", 1), ("cpu.usagemhz.average", 5), ("cpu.ready.summation", 11),
                      ("mem.usage.average", 65537), ("mem.consumed.average", 65611), ("mem.active.average", 65545),
                      ("disk.read.average", 131078), ("disk.numberWrite.summation", 131077),
                      ("virtualDisk.numberReadAveraged.average", 589824), ("net.received.average", 196614),
                      ("net.packetsTx.summation", 196613), ("sys.uptime.latest", 262144)]:
        assert names[name] == key
    infos = perf.QueryPerfCounter(counterId=[1, 589824, 424242])
    assert [i.key for i in infos] == [1, 589824]
    level1 = {c.key for c in perf.QueryPerfCounterByLevel(level=1)}
    assert 1 in level1 and 12 not in level1
    host = si.content.rootFolder.childEntity[0].hostFolder.childEntity[0].host[0]
    summary = perf.QueryPerfProviderSummary(entity=host)
    assert summary.currentSupported and summary.summarySupported and summary.refreshRate == 20
    datastore = host.datastore[0]
    assert not perf.QueryPerfProviderSummary(entity=datastore).currentSupported
    # The historical interval ESXi keeps (5-minute samples for a day) is known; others are not.
    [(period, length, name)] = [(i.samplingPeriod, i.length, i.name) for i in perf.historicalInterval]
    assert (period, length, name) == (300, 86400, "Past day")
    for result in perf.QueryPerf(querySpec=[vim.PerformanceManager.QuerySpec(entity=host, intervalId=300)]):
        assert all(info.interval == 300 and info.timestamp.minute % 5 == 0 for info in result.sampleInfo)
    with pytest.raises(vmodl.fault.InvalidArgument):
        perf.QueryPerf(querySpec=[vim.PerformanceManager.QuerySpec(entity=host, intervalId=7200)])


def test_a_vm_running_the_disk_benchmark_shows_its_iops(si, agent):
    perf = si.content.perfManager
    names = counters_by_name(perf)
    iops_counter = names["virtualDisk.numberReadAveraged.average"]
    vm = create_vm(si, "perf-bench", scenario="shell", disk_kb=64 * 1024, nic=False)
    power_on_booted(agent, vm)
    try:
        # Counting starts with the VM's first sample: the benchmark starts after it.
        wanted = [vim.PerformanceManager.MetricId(counterId=iops_counter, instance="*"),
                  vim.PerformanceManager.MetricId(counterId=names["mem.consumed.average"], instance=""),
                  vim.PerformanceManager.MetricId(counterId=names["cpu.usage.average"], instance="")]
        wait_for(lambda: query(perf, vm, wanted) is not None, "the VM's first sample", timeout=60)
        # Samples end on multiples of 20 s of the wall clock: start just after the next one.
        boundary = (time.time() // INTERVAL + 1) * INTERVAL
        time.sleep(boundary - time.time() + 0.2)
        start = time.time()
        line = bench(agent, vm)
        end = time.time()
        guest_ios = int(re.search(r"ios=(\d+)", line).group(1))
        # Wait for the first sample after the benchmark.
        wait_for(lambda: query(perf, vm, wanted).sampleInfo[-1].timestamp.timestamp() > end,
                 "a sample after the benchmark", timeout=60)
        metric = query(perf, vm, wanted)
        stamps = [s.timestamp.timestamp() for s in metric.sampleInfo]
        assert all(s.interval == 20 for s in metric.sampleInfo)
        iops = series(metric, iops_counter, "scsi0:0")
        # The IOPS of the three samples the benchmark ran through, as a chart shows them,
        # against the IOPS of the guest's reads. The guest's own iops divides by its 100 Hz
        # tick, which loses ticks while its vCPU waits for a CPU on a loaded host (60.00 guest
        # seconds took 67.4 s here under load), so its reads are divided by the run's seconds on
        # the host's clock, which the samples use too.
        ran_in = [v for t, v in zip(stamps, iops) if boundary < t <= boundary + BENCH_SECONDS]
        assert len(ran_in) == 3, (boundary, stamps)
        guest_rate = guest_ios / (end - start)
        print(f"perf IOPS {sum(ran_in) / 3:.0f} (samples {ran_in}); the guest's reads {guest_rate:.0f}/s "
              f"over {end - start:.2f} s; its own report: {line}")
        assert sum(ran_in) / 3 == pytest.approx(guest_rate, rel=0.10), (ran_in, guest_rate, line)
        # The reads per second of the samples covering the benchmark add up to the reads the
        # guest made (the idle shell reads nothing else). The guest's own iops divides by its
        # own clock, which lags the host's on a loaded machine, so the count is the oracle.
        covering = [v for t, v in zip(stamps, iops) if t > start and t - 20 < end]
        assert sum(v * 20 for v in covering) == pytest.approx(guest_ios, rel=0.05), (covering, line)
        inside = [v for t, v in zip(stamps, iops) if t - 20 >= start and t <= end]
        assert inside and all(v > 0 for v in inside), (start, end, stamps)
        busy = [v for t, v in zip(stamps, series(metric, names["cpu.usage.average"])) if t - 20 >= start and t <= end]
        assert all(v > 0 for v in busy)
        consumed = series(metric, names["mem.consumed.average"])[-1]
        rss = vmm_rss_kb(agent, vm)
        assert abs(consumed - rss) <= rss * 0.10, (consumed, rss)

        available = perf.QueryAvailablePerfMetric(entity=vm, intervalId=20)
        assert any(m.counterId == iops_counter and m.instance == "scsi0:0" for m in available)
        latest = query(perf, vm, wanted, maxSample=1, format="csv")
        assert latest.sampleInfoCSV.startswith("20,")
        csv = {(v.id.counterId, v.id.instance): v.value for v in latest.value}
        assert csv[(iops_counter, "scsi0:0")] == str(iops[-1])
    finally:
        from pyVim.task import WaitForTask
        WaitForTask(vm.PowerOffVM_Task())


def test_host_counters_match_the_machine(si):
    perf = si.content.perfManager
    names = counters_by_name(perf)
    host = si.content.rootFolder.childEntity[0].hostFolder.childEntity[0].host[0]
    uptime = names["sys.uptime.latest"]
    wanted = [vim.PerformanceManager.MetricId(counterId=uptime, instance=""),
              vim.PerformanceManager.MetricId(counterId=names["cpu.usage.average"], instance="")]
    wait_for(lambda: query(perf, host, wanted) is not None, "a host sample", timeout=60)
    metric = query(perf, host, wanted, maxSample=1)
    stamp = metric.sampleInfo[0].timestamp.timestamp()
    with open("/proc/uptime") as f:
        now_uptime = float(f.read().split()[0])
    expected = now_uptime - (time.time() - stamp)
    assert abs(series(metric, uptime)[0] - expected) <= 2
    composite = perf.QueryPerfComposite(querySpec=vim.PerformanceManager.QuerySpec(entity=host, metricId=wanted,
                                                                                  maxSample=1))
    assert composite.entity.entity == host
