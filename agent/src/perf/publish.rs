//! The PerformanceManager's published properties: the counter catalogue (`perfCounter`), its
//! descriptions, and no historical intervals (only the real-time statistics are kept). The
//! methods that query the statistics are `methods::performance_manager`.

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Value};

use super::catalogue::{Counter, Stats, COUNTERS};
use crate::inventory::esxi::refs;
use crate::inventory::Inventory;

/// Sets the PerformanceManager's properties: the catalogue, its descriptions and no
/// historical intervals (only the real-time statistics are kept).
pub fn publish(schema: &Schema, inv: &mut Inventory) {
    let manager = refs::perf_manager();
    inv.insert(schema, manager.clone(), None);
    let counters: Vec<Value> = COUNTERS
        .iter()
        .map(|c| counter_info(schema, c).into())
        .collect();
    inv.set(
        schema,
        &manager,
        "perfCounter",
        Value::Array(schema.known_type("PerfCounterInfo"), counters),
    );
    let describe = |items: &[(&str, &str)]| {
        let items = items
            .iter()
            .map(|(key, label)| element(schema, key, label, label).into())
            .collect();
        Value::Array(schema.known_type("ElementDescription"), items)
    };
    let description = DataObject::of(schema, "PerformanceDescription")
        .with(
            schema,
            "counterType",
            describe(&[
                ("average", "Average"),
                ("summation", "Summation"),
                ("latest", "Latest"),
            ]),
        )
        .with(
            schema,
            "statsType",
            describe(&[
                ("absolute", "Absolute"),
                ("delta", "Delta"),
                ("rate", "Rate"),
            ]),
        );
    inv.set(schema, &manager, "description", description);
    inv.set(
        schema,
        &manager,
        "historicalInterval",
        Value::Array(schema.known_type("PerfInterval"), Vec::new()),
    );
}

fn element(schema: &Schema, key: &str, label: &str, summary: &str) -> DataObject {
    DataObject::of(schema, "ElementDescription")
        .with(schema, "key", key)
        .with(schema, "label", label)
        .with(schema, "summary", summary)
}

/// The PerfCounterInfo of `counter`.
pub fn counter_info(schema: &Schema, counter: &Counter) -> DataObject {
    let stats = match counter.stats {
        Stats::Absolute => "absolute",
        Stats::Delta => "delta",
        Stats::Rate => "rate",
    };
    DataObject::of(schema, "PerfCounterInfo")
        .with(schema, "key", counter.id)
        .with(
            schema,
            "nameInfo",
            element(schema, counter.name, counter.label, counter.summary),
        )
        .with(
            schema,
            "groupInfo",
            element(schema, counter.group, counter.group, counter.group),
        )
        .with(
            schema,
            "unitInfo",
            element(schema, counter.unit, counter.unit, counter.unit),
        )
        .with(
            schema,
            "rollupType",
            Value::enumeration(schema, "PerfSummaryType", counter.rollup),
        )
        .with(
            schema,
            "statsType",
            Value::enumeration(schema, "PerfStatsType", stats),
        )
        .with(schema, "level", counter.level)
        .with(schema, "perDeviceLevel", 3)
}
