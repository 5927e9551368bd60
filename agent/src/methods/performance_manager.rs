//! PerformanceManager's methods: the counter catalogue (QueryPerfCounter,
//! QueryPerfCounterByLevel; `crate::perf::publish` sets its properties), which entities have statistics (QueryPerfProviderSummary,
//! QueryAvailablePerfMetric) and the samples themselves (QueryPerf in the normal and CSV
//! formats, QueryPerfComposite for the host and its VMs), all from `crate::perf`'s
//! real-time store (20-second samples, one hour kept).

use std::collections::BTreeSet;

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Fault, MoRef, Value};

use super::{Call, Handler, MethodResult, MethodTable};
use crate::inventory::esxi::refs;
use crate::locks::lock;
use crate::perf::catalogue::{self, Counter, COUNTERS};
use crate::perf::publish::counter_info;
use crate::perf::{Sample, INTERVAL_SECS};

/// PerformanceManager's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "PerformanceManager",
    methods: &[
        ("QueryPerfCounter", Handler::Sync(query_counter)),
        (
            "QueryPerfCounterByLevel",
            Handler::Sync(query_counter_by_level),
        ),
        ("QueryPerfProviderSummary", Handler::Sync(provider_summary)),
        ("QueryAvailablePerfMetric", Handler::Sync(available_metrics)),
        ("QueryPerf", Handler::Sync(query_perf)),
        ("QueryPerfComposite", Handler::Sync(query_composite)),
    ],
};

fn counter_infos<'a>(schema: &Schema, counters: impl Iterator<Item = &'a Counter>) -> Value {
    let infos = counters.map(|c| counter_info(schema, c).into()).collect();
    Value::Array(schema.known_type("PerfCounterInfo"), infos)
}

fn query_counter(call: &Call<'_>) -> MethodResult {
    let ids: Vec<i64> = call
        .arg("counterId")
        .map(Value::items)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    let found = ids.iter().filter_map(|&id| catalogue::by_id(id as i32));
    Ok(Some(counter_infos(call.schema, found)))
}

fn query_counter_by_level(call: &Call<'_>) -> MethodResult {
    let level = call.arg("level").and_then(Value::as_i64).unwrap_or(0);
    if !(1..=4).contains(&level) {
        return Err(Fault::invalid_argument(
            call.schema,
            "level",
            "level must be 1 to 4",
        ));
    }
    let found = COUNTERS.iter().filter(|c| i64::from(c.level) <= level);
    Ok(Some(counter_infos(call.schema, found)))
}

/// The entity argument `name`: the host or a VM (what statistics are kept for), else
/// `None`; ManagedObjectNotFound when it does not exist.
fn entity(call: &Call<'_>, object: &MoRef) -> Result<bool, Fault> {
    if *object == refs::host() || call.host.vms.get(object).is_some() {
        return Ok(true);
    }
    match call.host.inventory().get(object) {
        Some(_) => Ok(false),
        None => Err(Fault::managed_object_not_found(call.schema, object)),
    }
}

fn provider_summary(call: &Call<'_>) -> MethodResult {
    let object = call.moref_arg("entity")?;
    let kept = entity(call, object)?;
    let mut summary = DataObject::of(call.schema, "PerfProviderSummary")
        .with(call.schema, "entity", object.clone())
        .with(call.schema, "currentSupported", kept)
        .with(call.schema, "summarySupported", false);
    if kept {
        summary.set(call.schema, "refreshRate", INTERVAL_SECS as i32);
    }
    Ok(Some(summary.into()))
}

/// The interval asked for must be the real-time one (the only one kept).
fn check_interval(call: &Call<'_>, interval: Option<i64>) -> Result<(), Fault> {
    match interval {
        None => Ok(()),
        Some(i) if i == INTERVAL_SECS => Ok(()),
        Some(i) => Err(Fault::invalid_argument(
            call.schema,
            "intervalId",
            format!("interval {i} is not kept: this host keeps the 20-second real-time statistics"),
        )),
    }
}

fn available_metrics(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let object = call.moref_arg("entity")?;
    entity(call, object)?;
    check_interval(call, call.arg("intervalId").and_then(Value::as_i64))?;
    let begin = call.arg("beginTime").and_then(date);
    let end = call.arg("endTime").and_then(date);
    let store = lock(&call.host.perf);
    let ids: BTreeSet<(i32, String)> = store
        .samples(object)
        .filter(|s| in_window(s.timestamp, begin, end))
        .flat_map(|s| s.values.keys().cloned())
        .collect();
    let ids = ids
        .iter()
        .map(|(c, i)| metric_id(schema, *c, i).into())
        .collect();
    Ok(Some(Value::Array(schema.known_type("PerfMetricId"), ids)))
}

fn date(value: &Value) -> Option<i64> {
    match value {
        Value::DateTime(micros) => Some(*micros),
        _ => None,
    }
}

/// Whether a sample at `t` falls in (`begin`, `end`] (the API's start is exclusive).
fn in_window(t: i64, begin: Option<i64>, end: Option<i64>) -> bool {
    begin.is_none_or(|b| t > b) && end.is_none_or(|e| t <= e)
}

fn metric_id(schema: &Schema, counter: i32, instance: &str) -> DataObject {
    DataObject::of(schema, "PerfMetricId")
        .with(schema, "counterId", counter)
        .with(schema, "instance", instance)
}

fn query_perf(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let specs: Vec<&DataObject> = call
        .arg("querySpec")
        .map(Value::items)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_data)
        .collect();
    let mut results = Vec::new();
    for spec in specs {
        if let Some(metric) = entity_metric(call, spec)? {
            results.push(metric.into());
        }
    }
    Ok(Some(Value::Array(
        schema.known_type("PerfEntityMetricBase"),
        results,
    )))
}

fn query_composite(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let spec = call
        .arg("querySpec")
        .and_then(Value::as_data)
        .ok_or_else(|| Fault::invalid_argument(schema, "querySpec", "querySpec is required"))?;
    let host_entity = spec.get(schema, "entity").and_then(Value::as_moref);
    if host_entity != Some(&refs::host()) {
        return Err(Fault::invalid_argument(
            schema,
            "querySpec.entity",
            "a composite query is of the host (ha-host)",
        ));
    }
    let mut composite = DataObject::of(schema, "PerfCompositeMetric");
    if let Some(metric) = entity_metric(call, spec)? {
        composite.set(schema, "entity", metric);
    }
    let mut children = Vec::new();
    for vm in call.host.vms.all() {
        let child = spec.clone().with(schema, "entity", vm.moref.clone());
        if let Some(metric) = entity_metric(call, &child)? {
            children.push(metric.into());
        }
    }
    composite.set(
        schema,
        "childEntity",
        Value::Array(schema.known_type("PerfEntityMetricBase"), children),
    );
    Ok(Some(composite.into()))
}

/// The samples one PerfQuerySpec asks for, in its format; `None` when there are none.
fn entity_metric(call: &Call<'_>, spec: &DataObject) -> Result<Option<DataObject>, Fault> {
    let schema = call.schema;
    let field = |name| spec.get(schema, name);
    let object = field("entity")
        .and_then(Value::as_moref)
        .ok_or_else(|| Fault::invalid_argument(schema, "querySpec.entity", "entity is required"))?;
    entity(call, object)?;
    check_interval(call, field("intervalId").and_then(Value::as_i64))?;
    let csv = match field("format").and_then(Value::as_str) {
        None | Some("normal") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(Fault::invalid_argument(
                schema,
                "querySpec.format",
                format!("format '{other}' is not normal or csv"),
            ))
        }
    };
    let begin = field("startTime").and_then(date);
    let end = field("endTime").and_then(date);
    let store = lock(&call.host.perf);
    let mut samples: Vec<&Sample> = store
        .samples(object)
        .filter(|s| in_window(s.timestamp, begin, end))
        .collect();
    if let Some(max) = field("maxSample")
        .and_then(Value::as_i64)
        .filter(|m| *m > 0)
    {
        let skip = samples.len().saturating_sub(max as usize);
        samples.drain(..skip);
    }
    if samples.is_empty() {
        return Ok(None);
    }
    let wanted: Vec<(i32, String)> = field("metricId")
        .map(Value::items)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_data)
        .filter_map(|id| {
            let counter = id.get(schema, "counterId")?.as_i64()? as i32;
            let instance = id
                .get(schema, "instance")
                .and_then(Value::as_str)
                .unwrap_or("");
            Some((counter, instance.to_string()))
        })
        .collect();
    let present: BTreeSet<&(i32, String)> = samples.iter().flat_map(|s| s.values.keys()).collect();
    let series: Vec<&(i32, String)> = present
        .into_iter()
        .filter(|(counter, instance)| {
            wanted.is_empty()
                || wanted
                    .iter()
                    .any(|(c, i)| c == counter && (i == "*" || i == instance))
        })
        .collect();
    Ok(Some(if csv {
        csv_metric(schema, object, &samples, &series)
    } else {
        normal_metric(schema, object, &samples, &series)
    }))
}

/// A series' values over the samples; -1 where a sample lacks it (as ESXi marks gaps).
fn values<'a>(samples: &'a [&Sample], key: &'a (i32, String)) -> impl Iterator<Item = i64> + 'a {
    samples
        .iter()
        .map(move |s| s.values.get(key).copied().unwrap_or(-1))
}

fn normal_metric(
    schema: &Schema,
    object: &MoRef,
    samples: &[&Sample],
    series: &[&(i32, String)],
) -> DataObject {
    let info = samples
        .iter()
        .map(|s| {
            DataObject::of(schema, "PerfSampleInfo")
                .with(schema, "timestamp", Value::DateTime(s.timestamp))
                .with(schema, "interval", INTERVAL_SECS as i32)
                .into()
        })
        .collect();
    let series = series
        .iter()
        .map(|key| {
            let longs = values(samples, key).map(Value::Long).collect();
            DataObject::of(schema, "PerfMetricIntSeries")
                .with(schema, "id", metric_id(schema, key.0, &key.1))
                .with(
                    schema,
                    "value",
                    Value::Array(schema.known_type("long"), longs),
                )
                .into()
        })
        .collect();
    DataObject::of(schema, "PerfEntityMetric")
        .with(schema, "entity", object.clone())
        .with(
            schema,
            "sampleInfo",
            Value::Array(schema.known_type("PerfSampleInfo"), info),
        )
        .with(
            schema,
            "value",
            Value::Array(schema.known_type("PerfMetricSeries"), series),
        )
}

fn csv_metric(
    schema: &Schema,
    object: &MoRef,
    samples: &[&Sample],
    series: &[&(i32, String)],
) -> DataObject {
    let info: Vec<String> = samples
        .iter()
        .map(|s| {
            let mut time = String::new();
            vireo_api::codec::datetime::format(s.timestamp, &mut time);
            format!("{INTERVAL_SECS},{time}")
        })
        .collect();
    let series = series
        .iter()
        .map(|key| {
            let text: Vec<String> = values(samples, key).map(|v| v.to_string()).collect();
            DataObject::of(schema, "PerfMetricSeriesCSV")
                .with(schema, "id", metric_id(schema, key.0, &key.1))
                .with(schema, "value", text.join(","))
                .into()
        })
        .collect();
    DataObject::of(schema, "PerfEntityMetricCSV")
        .with(schema, "entity", object.clone())
        .with(schema, "sampleInfoCSV", info.join(","))
        .with(
            schema,
            "value",
            Value::Array(schema.known_type("PerfMetricSeriesCSV"), series),
        )
}
