//! OvfManager's import side: ParseDescriptor (what a package holds), ValidateHost (sizes and
//! whether this host can run it) and CreateImportSpec (the VirtualMachineImportSpec that
//! ResourcePool.ImportVApp takes, plus the files the client uploads). Problems with a package
//! are answered in the results' `error`/`warning` lists as ESXi does, never thrown.
//! Networks: a `networkMapping` entry wins, then a host port group of the OVF network's name,
//! then "VM Network".

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Fault, MoRef, Value};

use super::{Call, MethodResult};
use crate::faults;
use crate::nfc::import_key;
use crate::ovf::package::{self, Package, PackageError};
use crate::ovf::plan::{plan, Finding, ImportPlan, PlannedDisk, PlannedNic};
use crate::vm::device_change::add_spec;
use crate::vm::network::objects::network_of;
use crate::vm::properties::option_values;

/// The controller key of the disks' paravirtual SCSI controller in an import spec.
const SCSI_KEY: i32 = 1000;
/// Disk provisioning types clients may ask for; all become thin qcow2 images here.
const PROVISIONING: &[&str] = &[
    "",
    "thin",
    "sparse",
    "monolithicSparse",
    "twoGbMaxExtentSparse",
    "seSparse",
    "thick",
    "flat",
    "monolithicFlat",
    "twoGbMaxExtentFlat",
    "eagerZeroedThick",
];

/// ParseDescriptor.
pub(super) fn parse_descriptor(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let mut result = DataObject::of(schema, "OvfParseDescriptorResult")
        .with(schema, "virtualApp", false)
        .with(schema, "defaultDeploymentOption", "");
    match package::parse(call.str_arg("ovfDescriptor")?) {
        Ok(package) => {
            let planned = plan(&package, None);
            let networks: Vec<Value> = package
                .networks
                .iter()
                .map(|n| {
                    DataObject::of(schema, "OvfNetworkInfo")
                        .with(schema, "name", n.name.as_str())
                        .with(schema, "description", n.description.as_str())
                        .into()
                })
                .collect();
            result.set(schema, "annotation", planned.annotation.as_str());
            result.set(schema, "defaultEntityName", planned.name.as_str());
            set_array(schema, &mut result, "network", "OvfNetworkInfo", networks);
            let eulas = package.eulas.iter().map(|e| e.as_str().into()).collect();
            set_array(schema, &mut result, "eula", "string", eulas);
            set_sizes(schema, &mut result, &package, "approximate");
            report(schema, &mut result, &planned.findings);
        }
        Err(error) => {
            result.set(schema, "annotation", "");
            result.set(schema, "defaultEntityName", "");
            report_error(schema, &mut result, &error);
        }
    }
    Ok(Some(result.into()))
}

/// ValidateHost.
pub(super) fn validate_host(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let mut result = DataObject::of(schema, "OvfValidateHostResult");
    set_array(
        schema,
        &mut result,
        "supportedDiskProvisioning",
        "string",
        vec!["thin".into()],
    );
    match package::parse(call.str_arg("ovfDescriptor")?) {
        Ok(package) => {
            set_sizes(schema, &mut result, &package, "");
            let errors: Vec<Finding> = plan(&package, None)
                .findings
                .into_iter()
                .filter(Finding::is_error)
                .collect();
            report(schema, &mut result, &errors);
        }
        Err(error) => report_error(schema, &mut result, &error),
    }
    Ok(Some(result.into()))
}

/// CreateImportSpec.
pub(super) fn create_import_spec(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let datastore = call.moref_arg("datastore")?;
    if !call
        .host
        .datastores()
        .iter()
        .any(|d| *d.name == *datastore.id)
    {
        return Err(faults::invalid_datastore(
            schema,
            &datastore.id,
            format!("{datastore} is not a datastore of this host"),
        ));
    }
    let params = call.arg("cisp").and_then(Value::as_data);
    let param = |name: &str| params.and_then(|p| p.get(schema, name));
    let entity_name = param("entityName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty());
    let mut result = DataObject::of(schema, "OvfCreateImportSpecResult");
    let package = match package::parse(call.str_arg("ovfDescriptor")?) {
        Ok(package) => package,
        Err(error) => {
            report_error(schema, &mut result, &error);
            return Ok(Some(result.into()));
        }
    };
    let mut planned = plan(&package, entity_name);
    let provisioning = param("diskProvisioning")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut extra = Vec::new();
    if !PROVISIONING.contains(&provisioning) {
        extra.push(provisioning_fault(schema, provisioning, true));
    } else if provisioning.contains("lat") || provisioning.contains("hick") {
        extra.push(provisioning_fault(schema, provisioning, false));
    }
    let mappings = network_mappings(call, param("networkMapping"));
    let (errors, warnings): (Vec<_>, Vec<_>) =
        planned.findings.drain(..).partition(Finding::is_error);
    report(schema, &mut result, &warnings);
    let mut error_values: Vec<Value> = errors
        .iter()
        .map(|f| finding_fault(schema, f).into())
        .collect();
    let (bad, good): (Vec<_>, Vec<_>) = extra.into_iter().partition(|(error, _)| *error);
    error_values.extend(bad.into_iter().map(|(_, f)| f.into()));
    append(
        schema,
        &mut result,
        "warning",
        good.into_iter().map(|(_, f)| f.into()),
    );
    if !error_values.is_empty() {
        set_array(schema, &mut result, "error", "MethodFault", error_values);
        return Ok(Some(result.into()));
    }
    let config = config_spec(call, &planned, &datastore.id, &mappings);
    let spec = DataObject::of(schema, "VirtualMachineImportSpec")
        .with(schema, "configSpec", config)
        .with(
            schema,
            "resPoolEntity",
            call.moref_arg("resourcePool")?.clone(),
        );
    result.set(schema, "importSpec", spec);
    let files: Vec<Value> = planned
        .disks
        .iter()
        .enumerate()
        .filter_map(|(n, disk)| {
            let file = disk.file.as_ref()?;
            let mut item = DataObject::of(schema, "OvfFileItem")
                .with(schema, "deviceId", import_key(&planned.name, unit_of(n)))
                .with(schema, "path", file.href.as_str())
                .with(schema, "cimType", 17)
                .with(schema, "create", false);
            if let Some(size) = file.size {
                item.set(schema, "size", size as i64);
            }
            Some(item.into())
        })
        .collect();
    set_array(schema, &mut result, "fileItem", "OvfFileItem", files);
    Ok(Some(result.into()))
}

/// The SCSI unit of the VM's disk `n` (unit 7 is the controller's own).
pub fn unit_of(n: usize) -> i32 {
    if n >= 7 {
        n as i32 + 1
    } else {
        n as i32
    }
}

/// `networkMapping` as (OVF network name, host network name).
fn network_mappings(call: &Call<'_>, mappings: Option<&Value>) -> Vec<(String, String)> {
    let schema = call.schema;
    let inventory = call.host.inventory();
    mappings
        .map(Value::items)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_data)
        .filter_map(|m| {
            let name = m.get(schema, "name")?.as_str()?.to_string();
            let network = m.get(schema, "network")?.as_moref()?;
            let host_name = inventory
                .stored(schema, network, "name")?
                .as_str()?
                .to_string();
            Some((name, host_name))
        })
        .collect()
}

/// The host network a NIC joins (see the module comment).
fn host_network(call: &Call<'_>, nic: &PlannedNic, mappings: &[(String, String)]) -> String {
    if let Some((_, mapped)) = mappings.iter().find(|(name, _)| *name == nic.ovf_network) {
        return mapped.clone();
    }
    let switches = crate::locks::lock(&call.host.switches);
    if switches.portgroup(&nic.ovf_network).is_ok() {
        return nic.ovf_network.clone();
    }
    "VM Network".to_string()
}

/// The VirtualMachineConfigSpec of the planned VM on `datastore`.
fn config_spec(
    call: &Call<'_>,
    planned: &ImportPlan,
    datastore: &str,
    mappings: &[(String, String)],
) -> DataObject {
    let schema = call.schema;
    let folder = format!("[{datastore}]");
    let mut changes: Vec<Value> = vec![add_spec(
        schema,
        DataObject::of(schema, "ParaVirtualSCSIController")
            .with(schema, "key", SCSI_KEY)
            .with(schema, "busNumber", 0)
            .with(
                schema,
                "sharedBus",
                Value::enumeration(schema, "VirtualSCSISharing", "noSharing"),
            ),
        false,
    )];
    for (n, disk) in planned.disks.iter().enumerate() {
        changes.push(add_spec(
            schema,
            disk_device(schema, n, disk, &folder, datastore),
            true,
        ));
    }
    for (n, nic) in planned.nics.iter().enumerate() {
        let network = host_network(call, nic, mappings);
        let backing = DataObject::of(schema, "VirtualEthernetCardNetworkBackingInfo")
            .with(schema, "deviceName", network.as_str())
            .with(schema, "network", network_of(&network));
        let connectable = DataObject::of(schema, "VirtualDeviceConnectInfo")
            .with(schema, "startConnected", nic.start_connected)
            .with(schema, "allowGuestControl", true)
            .with(schema, "connected", false);
        let device = DataObject::of(schema, nic.device_type)
            .with(schema, "key", -100 - n as i32)
            .with(schema, "backing", backing)
            .with(schema, "connectable", connectable)
            .with(schema, "addressType", "generated");
        changes.push(add_spec(schema, device, false));
    }
    let extra = option_values(schema, &planned.extra_config);
    let mut config = DataObject::of(schema, "VirtualMachineConfigSpec")
        .with(schema, "name", planned.name.as_str())
        .with(schema, "version", format!("vmx-{:02}", planned.hw_version))
        .with(schema, "guestId", planned.guest_id.as_str())
        .with(schema, "annotation", planned.annotation.as_str())
        .with(
            schema,
            "files",
            DataObject::of(schema, "VirtualMachineFileInfo").with(schema, "vmPathName", folder),
        )
        .with(
            schema,
            "numCPUs",
            planned.num_cpus.min(i32::MAX as i64) as i32,
        )
        .with(schema, "memoryMB", planned.memory_mb);
    set_array(
        schema,
        &mut config,
        "deviceChange",
        "VirtualDeviceConfigSpec",
        changes,
    );
    set_array(schema, &mut config, "extraConfig", "OptionValue", extra);
    config
}

/// The new thin disk `n` in the VM's folder.
fn disk_device(
    schema: &Schema,
    n: usize,
    disk: &PlannedDisk,
    folder: &str,
    datastore: &str,
) -> DataObject {
    let backing = DataObject::of(schema, "VirtualDiskFlatVer2BackingInfo")
        .with(schema, "fileName", folder)
        .with(schema, "datastore", MoRef::new("Datastore", datastore))
        .with(schema, "diskMode", "persistent")
        .with(schema, "thinProvisioned", true);
    DataObject::of(schema, "VirtualDisk")
        .with(schema, "key", -1 - n as i32)
        .with(schema, "controllerKey", SCSI_KEY)
        .with(schema, "unitNumber", unit_of(n))
        .with(schema, "capacityInKB", disk.capacity.div_ceil(1024) as i64)
        .with(schema, "capacityInBytes", disk.capacity as i64)
        .with(schema, "backing", backing)
}

/// downloadSize / flatDeploymentSize / sparseDeploymentSize, with `prefix` ("approximate"
/// for ParseDescriptor's names).
fn set_sizes(schema: &Schema, result: &mut DataObject, package: &Package, prefix: &str) {
    let name = |base: &str| {
        if prefix.is_empty() {
            base.to_string()
        } else {
            let mut chars = base.chars();
            let first = chars.next().map(|c| c.to_ascii_uppercase());
            format!("{prefix}{}{}", first.unwrap_or_default(), chars.as_str())
        }
    };
    let sizes = [
        ("downloadSize", package.download_size()),
        ("flatDeploymentSize", package.flat_size()),
        ("sparseDeploymentSize", package.sparse_size()),
    ];
    for (field, bytes) in sizes {
        result.set(schema, &name(field), bytes.min(i64::MAX as u64) as i64);
    }
}

fn provisioning_fault(schema: &Schema, asked: &str, unknown: bool) -> (bool, DataObject) {
    let message = if unknown {
        format!("'{asked}' is not a disk provisioning type")
    } else {
        format!("Disks are thin-provisioned qcow2 images on this host, not '{asked}'")
    };
    let fault = fault(schema, "OvfUnsupportedDiskProvisioning", message)
        .with(schema, "diskProvisioning", asked)
        .with(schema, "supportedDiskProvisioning", "thin");
    (unknown, fault)
}

/// A MethodFault value with its message in `msg`.
fn fault(schema: &Schema, ty: &str, message: String) -> DataObject {
    Fault::new(schema, ty, message.clone())
        .data
        .with(schema, "msg", message)
}

/// The fault ESXi reports for a finding.
fn finding_fault(schema: &Schema, finding: &Finding) -> DataObject {
    let message = finding.message();
    match finding {
        Finding::UnsupportedDevice {
            instance_id,
            name,
            resource_type,
        } => fault(schema, "OvfUnsupportedType", message)
            .with(schema, "name", name.as_str())
            .with(schema, "instanceId", instance_id.as_str())
            .with(schema, "deviceType", *resource_type as i32),
        Finding::UnsupportedSection(section) => fault(schema, "OvfUnsupportedSection", message)
            .with(schema, "name", section.as_str())
            .with(schema, "info", section.as_str()),
        Finding::ExtraConfigRefused(key) => fault(schema, "OvfUnsupportedAttributeValue", message)
            .with(schema, "elementName", "ExtraConfig")
            .with(schema, "attributeName", "vmw:key")
            .with(schema, "value", key.as_str()),
        Finding::NoHardwareFamily(families) => fault(
            schema,
            "OvfNoSupportedHardwareFamily",
            message,
        )
        .with(schema, "version", families.as_str()),
        Finding::DiskNotFound(resource) => fault(schema, "OvfDiskMappingNotFound", message)
            .with(schema, "diskName", resource.as_str())
            .with(schema, "vmName", ""),
        Finding::TooManyDevices { .. } => fault(schema, "OvfHardwareCheck", message),
        Finding::InvalidName(name) => {
            fault(schema, "OvfInvalidVmName", message).with(schema, "name", name.as_str())
        }
    }
}

/// The fault for a descriptor that cannot be read.
fn package_fault(schema: &Schema, error: &PackageError) -> DataObject {
    let message = error.to_string();
    match error {
        PackageError::Xml(_) => fault(schema, "OvfXmlFormat", message.clone())
            .with(schema, "lineNumber", 0)
            .with(schema, "description", message),
        PackageError::Missing(what) => fault(schema, "OvfMissingElement", message)
            .with(schema, "lineNumber", 0)
            .with(schema, "name", what.as_str()),
        PackageError::InvalidValue { name, value } => {
            invalid_value(schema, message, "", name, value)
        }
        PackageError::BadFileName(name) => invalid_value(schema, message, "File", "ovf:href", name),
        PackageError::DiskTooLarge { disk, bytes } => {
            fault(schema, "OvfUnsupportedAttributeValue", message)
                .with(schema, "elementName", format!("Disk {disk}"))
                .with(schema, "attributeName", "ovf:capacity")
                .with(schema, "value", bytes.to_string())
        }
        PackageError::Collection => fault(schema, "OvfUnsupportedSection", message)
            .with(schema, "name", "VirtualSystemCollection")
            .with(schema, "info", "vApp"),
        PackageError::NotAnEnvelope(_) | PackageError::TooMany(_) => {
            fault(schema, "OvfInvalidPackage", message).with(schema, "lineNumber", 0)
        }
    }
}

fn invalid_value(
    schema: &Schema,
    message: String,
    element: &str,
    attribute: &str,
    value: &str,
) -> DataObject {
    fault(schema, "OvfInvalidValue", message)
        .with(schema, "lineNumber", 0)
        .with(schema, "elementName", element)
        .with(schema, "attributeName", attribute)
        .with(schema, "value", value)
}

fn report_error(schema: &Schema, result: &mut DataObject, error: &PackageError) {
    set_array(
        schema,
        result,
        "error",
        "MethodFault",
        vec![package_fault(schema, error).into()],
    );
}

/// Sets `error` and `warning` from `findings`.
fn report(schema: &Schema, result: &mut DataObject, findings: &[Finding]) {
    let (errors, warnings): (Vec<&Finding>, Vec<&Finding>) =
        findings.iter().partition(|f| f.is_error());
    for (field, list) in [("error", errors), ("warning", warnings)] {
        append(
            schema,
            result,
            field,
            list.into_iter().map(|f| finding_fault(schema, f).into()),
        );
    }
}

/// Appends `values` to the MethodFault array `field`.
fn append(
    schema: &Schema,
    result: &mut DataObject,
    field: &str,
    values: impl Iterator<Item = Value>,
) {
    let mut all: Vec<Value> = result
        .get(schema, field)
        .map(|v| v.items().to_vec())
        .unwrap_or_default();
    all.extend(values);
    set_array(schema, result, field, "MethodFault", all);
}

/// Sets the array `field` of `item_type` items, leaving it unset when empty.
fn set_array(
    schema: &Schema,
    object: &mut DataObject,
    field: &str,
    item_type: &str,
    values: Vec<Value>,
) {
    if !values.is_empty() {
        object.set(
            schema,
            field,
            Value::Array(schema.known_type(item_type), values),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovf::xml::XmlError;

    /// Every fault a finding or a package error becomes sets only fields its type has.
    #[test]
    fn every_reported_fault_is_well_formed() {
        let schema = vireo_api::schema::vim25();
        let findings = [
            Finding::UnsupportedDevice {
                instance_id: "4".into(),
                name: "Floppy".into(),
                resource_type: 14,
            },
            Finding::UnsupportedSection("X".into()),
            Finding::ExtraConfigRefused("vireo.x".into()),
            Finding::NoHardwareFamily("vbox".into()),
            Finding::DiskNotFound("ovf:/disk/9".into()),
            Finding::TooManyDevices {
                what: "disks",
                max: 8,
            },
            Finding::InvalidName("..".into()),
        ];
        for finding in &findings {
            let fault = finding_fault(schema, finding);
            assert!(fault.get(schema, "msg").is_some(), "{finding:?}");
        }
        let errors = [
            PackageError::Xml(XmlError::Doctype),
            PackageError::NotAnEnvelope("x".into()),
            PackageError::Missing("y".into()),
            PackageError::InvalidValue {
                name: "n".into(),
                value: "v".into(),
            },
            PackageError::BadFileName("../x".into()),
            PackageError::DiskTooLarge {
                disk: "d".into(),
                bytes: 1,
            },
            PackageError::TooMany("files"),
            PackageError::Collection,
        ];
        for error in &errors {
            let fault = package_fault(schema, error);
            assert!(fault.get(schema, "msg").is_some(), "{error:?}");
        }
        let (unknown, _) = provisioning_fault(schema, "magic", true);
        assert!(unknown);
    }
}
