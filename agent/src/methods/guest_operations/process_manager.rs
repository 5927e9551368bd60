//! GuestProcessManager: StartProgramInGuest (program, arguments, working directory,
//! environment → pid), ListProcessesInGuest (with the exit codes and end times of finished
//! programs), TerminateProcessInGuest and ReadEnvironmentVariableInGuest, run by the guest.

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Fault, Value};
use vireo_tools::guest_ops::wire::{
    EnvironmentResult, GuestOp, PidResult, ProcessInfo, ProcessList,
};

use super::{parse, run, GuestRequest};
use crate::methods::{Call, Handler, MethodTable, PendingResult};

/// GuestProcessManager's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "GuestProcessManager",
    methods: &[
        ("StartProgramInGuest", Handler::Async(start_program)),
        ("ListProcessesInGuest", Handler::Async(list_processes)),
        ("TerminateProcessInGuest", Handler::Async(terminate_process)),
        (
            "ReadEnvironmentVariableInGuest",
            Handler::Async(read_environment),
        ),
    ],
};

/// A GuestProgramSpec as the guest's start-program.
fn start_request(schema: &Schema, spec: Option<&DataObject>) -> Result<GuestRequest, Fault> {
    let spec = spec.ok_or_else(|| Fault::invalid_argument(schema, "spec", "spec is required"))?;
    let text = |name: &str| spec.get(schema, name).and_then(Value::as_str);
    let path = text("programPath")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            Fault::invalid_argument(schema, "spec.programPath", "a program is required")
        })?
        .to_string();
    let env = spec
        .get(schema, "envVariables")
        .map(Value::items)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    let op = GuestOp::StartProgram {
        path: path.clone(),
        args: text("arguments").unwrap_or_default().to_string(),
        cwd: text("workingDirectory")
            .filter(|d| !d.is_empty())
            .map(str::to_string),
        env,
    };
    Ok(GuestRequest::on_file(op, &path))
}

fn start_program<'c>(call: &'c mut Call<'_>) -> PendingResult<'c> {
    Box::pin(async move {
        let schema = call.schema;
        let request = start_request(schema, call.arg("spec").and_then(Value::as_data))?;
        let started: PidResult = parse(schema, run(call, request).await?)?;
        Ok(Some(Value::Long(started.pid as i64)))
    })
}

/// A guest process as a GuestProcessInfo.
fn process_info(schema: &Schema, process: ProcessInfo) -> Value {
    let ms = |ms: i64| Value::DateTime(ms.saturating_mul(1000));
    let mut info = DataObject::of(schema, "GuestProcessInfo")
        .with(schema, "name", process.name)
        .with(schema, "pid", process.pid as i64)
        .with(schema, "owner", process.owner)
        .with(schema, "cmdLine", process.cmd_line)
        .with(schema, "startTime", ms(process.start_ms));
    if let Some(end) = process.end_ms {
        info = info.with(schema, "endTime", ms(end));
    }
    if let Some(code) = process.exit_code {
        info = info.with(schema, "exitCode", code);
    }
    info.into()
}

fn list_processes<'c>(call: &'c mut Call<'_>) -> PendingResult<'c> {
    Box::pin(async move {
        let schema = call.schema;
        let pids: Vec<u64> = call
            .arg("pids")
            .map(Value::items)
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_i64)
            .filter_map(|pid| u64::try_from(pid).ok())
            .collect();
        let op = GuestOp::ListProcesses { pids: pids.clone() };
        let listed: ProcessList = parse(schema, run(call, GuestRequest::on_file(op, "")).await?)?;
        // A guest may list more than asked for (the test guest lists all it started).
        let infos = listed
            .processes
            .into_iter()
            .filter(|p| pids.is_empty() || pids.contains(&p.pid))
            .map(|p| process_info(schema, p))
            .collect();
        Ok(Some(Value::Array(
            schema.known_type("GuestProcessInfo"),
            infos,
        )))
    })
}

fn terminate_process<'c>(call: &'c mut Call<'_>) -> PendingResult<'c> {
    Box::pin(async move {
        let pid = call.arg("pid").and_then(Value::as_i64).unwrap_or(-1);
        let request = GuestRequest {
            op: GuestOp::TerminateProcess {
                pid: u64::try_from(pid).unwrap_or(u64::MAX),
            },
            file: String::new(),
            pid,
        };
        run(call, request).await?;
        Ok(None)
    })
}

fn read_environment<'c>(call: &'c mut Call<'_>) -> PendingResult<'c> {
    Box::pin(async move {
        let schema = call.schema;
        let names = call.string_list_arg("names");
        let op = GuestOp::ReadEnvironment {
            names: names.clone(),
        };
        let read: EnvironmentResult =
            parse(schema, run(call, GuestRequest::on_file(op, "")).await?)?;
        // A guest may answer with more than asked for (the test guest sends all it has).
        let named = |pair: &String| {
            let name = pair.split_once('=').map_or(pair.as_str(), |(n, _)| n);
            names.is_empty() || names.iter().any(|n| n == name)
        };
        let vars: Vec<String> = read.vars.into_iter().filter(named).collect();
        Ok(Some(Value::strings(schema, vars)))
    })
}
