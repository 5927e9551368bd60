//! runtime (power, boot and suspend times, consolidationNeeded, the pending question) and
//! summary.quickStats.

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Value};

use super::enum_value;
use crate::inventory::esxi::refs;
use crate::inventory::now_micros;
use crate::vm::question::Question;
use crate::vm::VmState;

pub(super) fn runtime_info(schema: &Schema, state: &VmState) -> DataObject {
    let mut runtime = DataObject::of(schema, "VirtualMachineRuntimeInfo")
        .with(schema, "host", refs::host())
        .with(
            schema,
            "connectionState",
            enum_value(schema, "VirtualMachineConnectionState", "connected"),
        )
        .with(
            schema,
            "powerState",
            enum_value(schema, "VirtualMachinePowerState", state.power.as_str()),
        )
        .with(
            schema,
            "faultToleranceState",
            enum_value(schema, "VirtualMachineFaultToleranceState", "notConfigured"),
        )
        .with(
            schema,
            "toolsInstallerMounted",
            state.cdroms.tools_installer.is_some(),
        )
        .with(schema, "suspendInterval", 0i64)
        .with(schema, "maxMemoryUsage", state.spec.memory_mb as i32)
        .with(schema, "numMksConnections", 0)
        .with(
            schema,
            "recordReplayState",
            enum_value(schema, "VirtualMachineRecordReplayState", "inactive"),
        )
        .with(schema, "onlineStandby", false)
        .with(
            schema,
            "consolidationNeeded",
            state.disk_views.iter().any(|v| v.consolidation_needed),
        )
        .with(
            schema,
            "paused",
            state.question.as_ref().is_some_and(Question::pauses),
        );
    if let Some(question) = &state.question {
        runtime.set(schema, "question", question.info(schema));
    }
    if let Some(boot) = state.boot_time {
        runtime.set(schema, "bootTime", Value::DateTime(boot));
    }
    if let Some(suspended) = state.suspend_time {
        runtime.set(schema, "suspendTime", Value::DateTime(suspended));
    }
    runtime
}

/// CPU and memory use of the VMM process from /proc (at the time of the last change).
pub(super) fn quick_stats(schema: &Schema, state: &VmState) -> DataObject {
    let mut stats = DataObject::of(schema, "VirtualMachineQuickStats").with(
        schema,
        "guestHeartbeatStatus",
        enum_value(schema, "ManagedEntityStatus", state.tools.heartbeat_color()),
    );
    if let Some(process) = &state.process {
        let rss_mb = std::fs::read_to_string(format!("/proc/{}/status", process.pid))
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok())
            })
            .map(|kib| (kib / 1024) as i32)
            .unwrap_or(0);
        stats.set(schema, "hostMemoryUsage", rss_mb);
        stats.set(schema, "overallCpuUsage", state.cpu_usage_mhz);
        stats.set(
            schema,
            "guestMemoryUsage",
            rss_mb.min(state.spec.memory_mb as i32),
        );
    }
    if let Some(boot) = state.boot_time {
        stats.set(
            schema,
            "uptimeSeconds",
            ((now_micros() - boot) / 1_000_000) as i32,
        );
    }
    stats
}
