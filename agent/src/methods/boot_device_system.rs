//! HostBootDeviceSystem: the machine booted from the disk holding its root filesystem;
//! QueryBootDevices names it (the only boot device vireod can vouch for). Choosing another
//! boot device is the firmware's business and answers NotSupported.

use std::path::Path;

use vireo_api::{DataObject, Value};

use super::{Call, Handler, MethodResult, MethodTable};
use crate::faults::machine_owned;
use crate::inventory::machine;

/// HostBootDeviceSystem's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "HostBootDeviceSystem",
    methods: &[
        ("QueryBootDevices", Handler::Sync(query_boot_devices)),
        ("UpdateBootDevice", Handler::Sync(machine_firmware)),
    ],
};

fn machine_firmware(call: &Call<'_>) -> MethodResult {
    Err(machine_owned(call.schema, "The boot device order"))
}

fn query_boot_devices(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let mounts = machine::mounts();
    let root = machine::mount_of(&mounts, Path::new("/")).filter(|m| m.on_disk());
    let devices: Vec<Value> = root
        .map(|m| {
            DataObject::of(schema, "HostBootDevice")
                .with(schema, "key", m.source.as_str())
                .with(
                    schema,
                    "description",
                    format!("{} (root filesystem, {})", m.source, m.fstype),
                )
                .into()
        })
        .into_iter()
        .collect();
    let mut info = DataObject::of(schema, "HostBootDeviceInfo").with(
        schema,
        "bootDevices",
        Value::Array(schema.known_type("HostBootDevice"), devices),
    );
    if let Some(root) = root {
        info.set(schema, "currentBootDeviceKey", root.source.as_str());
    }
    Ok(Some(info.into()))
}
