//! OvfManager: CreateDescriptor — the OVF envelope of a VM for the package an export builds
//! (the disks' files as the client downloaded them, `cdp.ovfFiles`, matched by deviceId) —
//! and the import side (ParseDescriptor, ValidateHost, CreateImportSpec) in `ovf_import`.

use vireo_api::{DataObject, Fault, Value};
use vireo_disk::source::CopySource;

use super::virtual_machine::device_url_key;
use super::{ovf_import, Call, Handler, MethodResult, MethodTable};
use crate::ovf::{envelope, OvfDisk, OvfNic, OvfSystem};

/// OvfManager's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "OvfManager",
    methods: &[
        ("CreateDescriptor", Handler::Sync(create_descriptor)),
        (
            "ParseDescriptor",
            Handler::Sync(ovf_import::parse_descriptor),
        ),
        ("ValidateHost", Handler::Sync(ovf_import::validate_host)),
        (
            "CreateImportSpec",
            Handler::Sync(ovf_import::create_import_spec),
        ),
    ],
};

/// A file the client put in the package: (deviceId, path, size).
struct PackageFile {
    device_id: String,
    path: String,
    size: u64,
}

fn create_descriptor(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let obj = call.moref_arg("obj")?;
    let vm =
        call.host.vms.get(obj).ok_or_else(|| {
            Fault::not_supported(schema, format!("{obj} is not a virtual machine"))
        })?;
    let params = call.arg("cdp").and_then(Value::as_data);
    let text = |field: &str| {
        params
            .and_then(|p| p.get(schema, field))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let files = package_files(call, params);
    let state = vm.state();
    let spec = &state.spec;
    let disks = (0..spec.disks.len())
        .map(|n| {
            let key = device_url_key(&vm.moref.id, n);
            let populated = state
                .disk_views
                .get(n)
                .and_then(|view| view.active.chain.first())
                .and_then(|top| CopySource::open_chain(top).ok())
                .map_or(0, |source| source.data_bytes());
            OvfDisk {
                capacity: state.disk_capacities.get(n).copied().unwrap_or(0),
                populated,
                file: files
                    .iter()
                    .find(|f| f.device_id == key)
                    .map(|f| (f.path.clone(), f.size)),
            }
        })
        .collect();
    let name = text("name").unwrap_or_else(|| spec.name.clone());
    let annotation = text("description").unwrap_or_else(|| spec.annotation.clone());
    let system = OvfSystem {
        name: &name,
        annotation: &annotation,
        guest_id: &spec.guest_id,
        hw_version: spec.hw_version,
        num_cpus: spec.num_cpus,
        memory_mb: spec.memory_mb,
        disks,
        nics: spec
            .nics
            .iter()
            .map(|nic| OvfNic {
                network: &nic.network,
                device: &nic.virtual_dev,
                start_connected: nic.start_connected,
            })
            .collect(),
        extra_config: spec
            .extra_config
            .iter()
            .filter(|(key, _)| !key.to_ascii_lowercase().starts_with("vireo."))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
    };
    let descriptor = envelope(&system);
    drop(state);
    Ok(Some(
        DataObject::of(schema, "OvfCreateDescriptorResult")
            .with(schema, "ovfDescriptor", descriptor)
            .with(schema, "includeImageFiles", false)
            .into(),
    ))
}

/// `cdp.ovfFiles` as (deviceId, path, size).
fn package_files(call: &Call<'_>, params: Option<&DataObject>) -> Vec<PackageFile> {
    let schema = call.schema;
    let Some(files) = params.and_then(|p| p.get(schema, "ovfFiles")) else {
        return Vec::new();
    };
    files
        .items()
        .iter()
        .filter_map(Value::as_data)
        .filter_map(|file| {
            let field = |name: &str| file.get(schema, name);
            Some(PackageFile {
                device_id: field("deviceId")?.as_str()?.to_string(),
                path: field("path")?.as_str()?.to_string(),
                size: field("size").and_then(Value::as_i64).unwrap_or(0).max(0) as u64,
            })
        })
        .collect()
}
