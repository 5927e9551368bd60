//! ConfigSpec cpuAllocation and memoryAllocation: a VM's reservation, limit and shares, kept in
//! the `.vmx` under ESXi's keys (`sched.cpu.min` / `.max` / `.shares`, `sched.mem.*`) and shown
//! in config.cpuAllocation, config.memoryAllocation and resourceConfig; limits and shares are
//! enforced on the running VMM by [`crate::vm::cgroup`].

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Fault, Value};

use crate::vm::spec::VmSpec;

/// The ConfigSpec fields read here.
pub const FIELDS: [&str; 2] = ["cpuAllocation", "memoryAllocation"];

/// One of the two allocations.
#[derive(Clone, Copy)]
pub enum Resource {
    /// CPU, in MHz; shares per vCPU.
    Cpu,
    /// Memory, in MB; shares per MB.
    Memory,
}

impl Resource {
    fn field(self) -> &'static str {
        match self {
            Resource::Cpu => "cpuAllocation",
            Resource::Memory => "memoryAllocation",
        }
    }

    fn key(self, what: &str) -> String {
        match self {
            Resource::Cpu => format!("sched.cpu.{what}"),
            Resource::Memory => format!("sched.mem.{what}"),
        }
    }

    /// ESXi's shares for `level` (low, normal, high) of this VM.
    fn level_shares(self, spec: &VmSpec, level: &str) -> i64 {
        let per_unit = match self {
            Resource::Cpu => 1000 * i64::from(spec.num_cpus),
            Resource::Memory => 10 * spec.memory_mb,
        };
        match level {
            "low" => per_unit / 2,
            "high" => per_unit * 2,
            _ => per_unit,
        }
    }
}

/// Reads the allocations `config` sets into `next`; InvalidArgument for a negative
/// reservation, a limit below it, or a shares level that is not ESXi's.
pub fn apply(schema: &Schema, config: &DataObject, next: &mut VmSpec) -> Result<(), Fault> {
    for resource in [Resource::Cpu, Resource::Memory] {
        if let Some(info) = config
            .get(schema, resource.field())
            .and_then(Value::as_data)
        {
            apply_one(schema, resource, info, next)?;
        }
    }
    Ok(())
}

fn apply_one(
    schema: &Schema,
    resource: Resource,
    info: &DataObject,
    next: &mut VmSpec,
) -> Result<(), Fault> {
    let field = resource.field();
    let invalid = |what: &str, why: &str| {
        Fault::invalid_argument(schema, &format!("{field}.{what}"), why.to_string())
    };
    let number = |name: &str| info.get(schema, name).and_then(Value::as_i64);
    let reservation = number("reservation").or_else(|| stored(next, resource, "min"));
    if reservation.is_some_and(|r| r < 0) {
        return Err(invalid("reservation", "a reservation cannot be negative"));
    }
    let limit = number("limit")
        .or_else(|| stored(next, resource, "max"))
        .filter(|l| *l != -1);
    if limit.is_some_and(|l| l < 0 || reservation.is_some_and(|r| l < r)) {
        return Err(invalid(
            "limit",
            "a limit is -1 (none) or at least the reservation",
        ));
    }
    if let Some(shares) = info.get(schema, "shares").and_then(Value::as_data) {
        let level = shares
            .get(schema, "level")
            .and_then(Value::as_str)
            .unwrap_or("normal");
        let value = match level {
            "low" | "normal" | "high" => level.to_string(),
            "custom" => shares
                .get(schema, "shares")
                .and_then(Value::as_i64)
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid("shares.shares", "custom shares are a positive number"))?
                .to_string(),
            _ => return Err(invalid("shares.level", "not a SharesLevel")),
        };
        next.set_extra(&resource.key("shares"), &value);
    }
    let text = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
    next.set_extra(&resource.key("min"), &text(reservation.filter(|r| *r > 0)));
    next.set_extra(&resource.key("max"), &text(limit));
    Ok(())
}

fn stored(spec: &VmSpec, resource: Resource, what: &str) -> Option<i64> {
    spec.extra(&resource.key(what))?.trim().parse().ok()
}

/// The limit the `.vmx` records for `resource` (MHz or MB); None: unlimited.
pub fn limit(spec: &VmSpec, resource: Resource) -> Option<i64> {
    stored(spec, resource, "max").filter(|l| *l >= 0)
}

/// The shares level the `.vmx` records for `resource` and its shares.
fn level_and_shares(spec: &VmSpec, resource: Resource) -> (&'static str, i64) {
    let recorded = spec.extra(&resource.key("shares")).unwrap_or("normal");
    match recorded.trim().parse::<i64>() {
        Ok(custom) => ("custom", custom),
        Err(_) => {
            let level = match recorded {
                "low" => "low",
                "high" => "high",
                _ => "normal",
            };
            (level, resource.level_shares(spec, level))
        }
    }
}

/// The shares the `.vmx` records for `resource` (ESXi's for its level, or custom ones).
pub fn shares(spec: &VmSpec, resource: Resource) -> i64 {
    level_and_shares(spec, resource).1
}

/// The ResourceAllocationInfo the `.vmx` records for `resource` (ESXi's defaults: no
/// reservation, no limit, normal shares).
pub fn show(schema: &Schema, spec: &VmSpec, resource: Resource) -> DataObject {
    let (level, shares) = level_and_shares(spec, resource);
    DataObject::of(schema, "ResourceAllocationInfo")
        .with(
            schema,
            "reservation",
            stored(spec, resource, "min").unwrap_or(0),
        )
        .with(schema, "expandableReservation", false)
        .with(schema, "limit", limit(spec, resource).unwrap_or(-1))
        .with(
            schema,
            "shares",
            DataObject::of(schema, "SharesInfo")
                .with(schema, "shares", i32::try_from(shares).unwrap_or(i32::MAX))
                .with(
                    schema,
                    "level",
                    Value::enumeration(schema, "SharesLevel", level),
                ),
        )
}
