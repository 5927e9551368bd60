//! VirtualMachine console methods: AcquireTicket ("webmks" and "mks"), AcquireMksTicket,
//! SetScreenResolution, PutUsbScanCodes (keys typed on the guest's console) and SendNMI. A
//! ticket unlocks the console endpoint once (`console::session`); the ticket store is
//! `console::tickets`.

use std::net::SocketAddr;

use std::time::Duration;

use vireo_api::{DataObject, Fault, Value};
use vireo_vmm_protocol::Request;

use crate::console::keyboard::hid_usage_byte;
use crate::console::tickets::Holder;
use crate::vm::control;

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

/// How long the VMM may take to act on a console request.
const CONSOLE_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// PutUsbScanCodes: each key event (usbHidCode = HID usage << 16 | 7, with its modifiers) is
/// typed on the guest's serial console, the VM's console input; answers how many keys were
/// typed (keys a console has no byte for, like arrows, are left out).
pub(super) fn put_usb_scan_codes(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let vm = call.this_vm()?;
    require_powered_on(call, &vm)?;
    let spec = call
        .arg("spec")
        .and_then(Value::as_data)
        .ok_or_else(|| Fault::invalid_argument(schema, "spec", "spec is required"))?;
    let events = spec
        .get(schema, "keyEvents")
        .map(Value::items)
        .unwrap_or_default();
    let mut text = String::new();
    for event in events.iter().filter_map(Value::as_data) {
        let code = event
            .get(schema, "usbHidCode")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let modifiers = event.get(schema, "modifiers").and_then(Value::as_data);
        let held = |names: [&str; 2]| {
            names.iter().any(|name| {
                modifiers
                    .and_then(|m| m.get(schema, name))
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            })
        };
        let usage = u8::try_from(code >> 16).ok();
        let shift = held(["leftShift", "rightShift"]);
        let control = held(["leftControl", "rightControl"]);
        if let Some(byte) = usage.and_then(|u| hid_usage_byte(u, shift, control)) {
            text.push(char::from(byte));
        }
    }
    let typed = text.len() as i32;
    if typed > 0 {
        control::command(
            &vm.run_dir.join("control.sock"),
            Request::SerialInput { text },
            CONSOLE_REQUEST_TIMEOUT,
        )
        .map_err(|e| Fault::system_error(schema, e.to_string()))?;
    }
    Ok(Some(Value::Int(typed)))
}

/// SendNMI: a non-maskable interrupt into the guest's boot vCPU, through its VMM.
pub(super) fn send_nmi(call: &Call<'_>) -> MethodResult {
    let vm = call.this_vm()?;
    require_powered_on(call, &vm)?;
    control::command(
        &vm.run_dir.join("control.sock"),
        Request::Nmi,
        CONSOLE_REQUEST_TIMEOUT,
    )
    .map_err(|e| Fault::system_error(call.schema, e.to_string()))?;
    Ok(None)
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
    let session = call.session()?;
    let holder = Holder {
        session: session.key.to_string(),
        user: session.user.clone(),
    };
    let ticket = host
        .console_tickets
        .issue(&vm.moref, holder)
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
