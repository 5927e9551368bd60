//! Pictures of a running VM's console: the VMM writes a PNG of its framebuffer on request.
//! CreateScreenshot keeps it in the VM folder (`<name>-<n>.png`); `GET /screen` takes one
//! into the VM's run directory and hands the bytes over.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use vireo_api::Fault;
use vireo_vmm_protocol::control::{Request, Screenshot};

use super::{control, Power, Vm};
use crate::faults;
use crate::host::Host;

/// How long the VMM may take to write a screenshot.
const SCREENSHOT_TIMEOUT: Duration = Duration::from_secs(30);

/// Asks the VMM of a running VM for a PNG at `path`.
fn take(host: &Host, vm: &Vm, path: &Path) -> Result<(), Fault> {
    let schema = host.schema;
    let power = vm.state().power;
    if power != Power::On {
        return Err(faults::invalid_power_state(schema, Some(Power::On), power));
    }
    control::call::<Screenshot>(
        &vm.run_dir.join("control.sock"),
        &Request::Screenshot {
            path: path.to_owned(),
        },
        SCREENSHOT_TIMEOUT,
    )
    .map(drop)
    .map_err(|e| {
        faults::file_fault(
            schema,
            &path.display().to_string(),
            format!("cannot take a screenshot: {e}"),
        )
    })
}

/// CreateScreenshot: a PNG in the VM folder; returns its datastore path.
pub fn create(host: &Host, vm: &Vm) -> Result<String, Fault> {
    let stem = vm
        .vmx_file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "screenshot".into());
    let name = (1..)
        .map(|n| format!("{stem}-{n}.png"))
        .find(|name| !vm.file(name).exists())
        .expect("some number is free");
    take(host, vm, &vm.file(&name))?;
    Ok(vm.datastore_path_of(&name))
}

/// A PNG of the console now (for `GET /screen`).
pub fn capture(host: &Host, vm: &Vm) -> Result<Vec<u8>, Fault> {
    std::fs::create_dir_all(&vm.run_dir)
        .map_err(|e| Fault::system_error(host.schema, e.to_string()))?;
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = vm.run_dir.join(format!("screen-{n}.png"));
    take(host, vm, &path)?;
    let bytes = std::fs::read(&path).map_err(|e| Fault::system_error(host.schema, e.to_string()));
    let _ = std::fs::remove_file(&path);
    bytes
}
