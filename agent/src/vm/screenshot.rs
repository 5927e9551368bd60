//! Pictures of a running VM's console: the VMM hands over a PNG of its framebuffer on request.
//! CreateScreenshot keeps it in the VM folder (`<name>-<n>.png`); `GET /screen` hands the
//! bytes over.

use std::time::Duration;

use vireo_api::Fault;
use vireo_vmm_protocol::control::{Request, Screenshot};

use super::{control, Power, Vm};
use crate::faults;
use crate::host::Host;

/// How long the VMM may take to write a screenshot.
const SCREENSHOT_TIMEOUT: Duration = Duration::from_secs(30);

/// Asks the VMM of a running VM for a PNG of its console.
fn take(host: &Host, vm: &Vm) -> Result<Vec<u8>, Fault> {
    let power = vm.state().power;
    if power != Power::On {
        return Err(faults::invalid_power_state(
            host.schema,
            Some(Power::On),
            power,
        ));
    }
    control::call::<Screenshot>(
        &vm.run_dir.join("control.sock"),
        &Request::Screenshot,
        SCREENSHOT_TIMEOUT,
    )
    .map(|shot| shot.png)
    .map_err(|e| Fault::system_error(host.schema, format!("cannot take a screenshot: {e}")))
}

/// CreateScreenshot: a PNG in the VM folder; returns its datastore path.
pub fn create(host: &Host, vm: &Vm) -> Result<String, Fault> {
    let schema = host.schema;
    let stem = vm
        .vmx_file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "screenshot".into());
    let name = (1..)
        .map(|n| format!("{stem}-{n}.png"))
        .find(|name| !vm.file(name).exists())
        .expect("some number is free");
    let png = take(host, vm)?;
    let path = vm.file(&name);
    super::vmx_file::write_atomically(&path, &png).map_err(|e| {
        faults::file_fault(
            schema,
            &path.display().to_string(),
            format!("cannot write the screenshot: {e}"),
        )
    })?;
    Ok(vm.datastore_path_of(&name))
}

/// A PNG of the console now (for `GET /screen`).
pub fn capture(host: &Host, vm: &Vm) -> Result<Vec<u8>, Fault> {
    take(host, vm)
}
