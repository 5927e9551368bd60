//! VirtualMachine console methods: AcquireTicket ("webmks" and "mks"), AcquireMksTicket and
//! SetScreenResolution. A ticket unlocks the console endpoint once (`console::session`); the
//! ticket store is `console::tickets`.

use std::net::SocketAddr;

use vireo_api::{DataObject, Fault};

use crate::faults;
use crate::methods::{Call, MethodResult};
use crate::vm::{Power, Vm};

pub(super) fn acquire_ticket(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let vm = call.this_vm()?;
    let kind = call.str_arg("ticketType")?;
    match kind {
        "webmks" | "mks" => ticket(call, &vm, "VirtualMachineTicket", kind == "webmks"),
        "device" => Err(Fault::invalid_argument(
            schema,
            "ticketType",
            "device tickets unlock remote device backings (CD-ROM, USB), which this host \
             does not serve; use \"webmks\" or \"mks\" for the console",
        )),
        other => Err(Fault::invalid_argument(
            schema,
            "ticketType",
            format!("this host issues \"webmks\" and \"mks\" tickets, not \"{other}\""),
        )),
    }
}

pub(super) fn acquire_mks_ticket(call: &Call<'_>) -> MethodResult {
    ticket(call, &*call.this_vm()?, "VirtualMachineMksTicket", false)
}

pub(super) fn set_screen_resolution(call: &Call<'_>) -> MethodResult {
    require_powered_on(call, &*call.this_vm()?)?;
    Err(Fault::not_supported(
        call.schema,
        "The screen resolution cannot be changed: the virtual display is a fixed-mode \
         linear framebuffer that guests cannot switch to another mode.",
    ))
}

fn require_powered_on(call: &Call<'_>, vm: &Vm) -> Result<(), Fault> {
    let power = vm.state().power;
    if power != Power::On {
        return Err(faults::invalid_power_state(
            call.schema,
            Some(Power::On),
            power,
        ));
    }
    Ok(())
}

/// Issues a one-time ticket for the VM's console as a `ty` (VirtualMachineTicket or
/// VirtualMachineMksTicket), with the `wss://` URL when `with_url`.
fn ticket(call: &Call<'_>, vm: &Vm, ty: &str, with_url: bool) -> MethodResult {
    let (host, schema) = (call.host, call.schema);
    require_powered_on(call, vm)?;
    let ticket = host
        .console_tickets
        .issue(&vm.moref)
        .map_err(|e| Fault::system_error(schema, e.to_string()))?;
    let server: SocketAddr = call.peer.server.unwrap_or(host.config.listen);
    let mut result = DataObject::of(schema, ty)
        .with(schema, "ticket", ticket.as_str())
        .with(schema, "cfgFile", vm.vmx_file.display().to_string())
        .with(schema, "host", server.ip().to_string())
        .with(schema, "port", i32::from(server.port()))
        .with(schema, "sslThumbprint", host.certificate_sha1.as_str());
    if with_url {
        // SocketAddr's Display brackets IPv6 addresses, as a URL needs.
        result.set(schema, "url", format!("wss://{server}/ticket/{ticket}"));
    }
    Ok(Some(result.into()))
}
