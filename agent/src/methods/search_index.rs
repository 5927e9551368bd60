//! SearchIndex: finds entities by inventory path, by name under a parent, by BIOS/instance UUID,
//! by datastore path and by DNS name — among the objects the caller may see.

use vireo_api::schema::Schema;
use vireo_api::{Fault, MoRef, Value};

use super::{Call, MethodResult};
use crate::inventory::esxi::refs;
use crate::inventory::Inventory;

/// Serves SearchIndex methods.
pub fn handle(call: &Call<'_>, method: &str) -> MethodResult {
    let schema = call.schema;
    let inv = call.host.inventory();
    let found: Vec<MoRef> = match method {
        "FindByInventoryPath" => by_inventory_path(schema, &inv, call.str_arg("inventoryPath")?)
            .into_iter()
            .collect(),
        "FindChild" => {
            let entity = call.moref_arg("entity")?;
            if inv.get(entity).is_none() {
                return Err(Fault::managed_object_not_found(schema, entity));
            }
            child_named(schema, &inv, entity, call.str_arg("name")?)
                .into_iter()
                .collect()
        }
        "FindByUuid" | "FindAllByUuid" => {
            let uuid = call.str_arg("uuid")?.to_ascii_lowercase();
            let vm_search = call
                .arg("vmSearch")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let instance = call
                .arg("instanceUuid")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let (ty, path) = match (vm_search, instance) {
                (true, true) => ("VirtualMachine", "config.instanceUuid"),
                (true, false) => ("VirtualMachine", "config.uuid"),
                (false, _) => ("HostSystem", "hardware.systemInfo.uuid"),
            };
            matching(schema, &inv, ty, path, |v| v.to_ascii_lowercase() == uuid)
        }
        "FindByDatastorePath" => {
            let path = call.str_arg("path")?.to_string();
            matching(
                schema,
                &inv,
                "VirtualMachine",
                "config.files.vmPathName",
                |v| v == path,
            )
        }
        "FindByDnsName" | "FindAllByDnsName" => {
            let name = call.str_arg("dnsName")?.to_ascii_lowercase();
            let vm_search = call
                .arg("vmSearch")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if vm_search {
                matching(schema, &inv, "VirtualMachine", "guest.hostName", |v| {
                    v.to_ascii_lowercase() == name
                })
            } else {
                matching(schema, &inv, "HostSystem", "name", |v| {
                    v.to_ascii_lowercase() == name
                })
            }
        }
        "FindByIp" | "FindAllByIp" => {
            let ip = call.str_arg("ip")?.to_string();
            matching(schema, &inv, "VirtualMachine", "guest.ipAddress", |v| {
                v == ip
            })
        }
        _ => return Err(Fault::not_supported(schema, method.to_string())),
    };
    // Objects the caller may not see are not found.
    let objects = call.objects(&inv);
    let found: Vec<MoRef> = found
        .into_iter()
        .filter(|o| objects.visible_type(o).is_some())
        .collect();
    if method.starts_with("FindAll") {
        return Ok(Some(Value::refs(schema, &found)));
    }
    Ok(found.into_iter().next().map(Value::MoRef))
}

/// `ha-datacenter/vm/name`: a datacenter under the root folder, then names down the tree.
pub fn by_inventory_path(schema: &Schema, inv: &Inventory, path: &str) -> Option<MoRef> {
    let mut current = refs::root_folder();
    for segment in path.trim_matches('/').split('/').filter(|s| !s.is_empty()) {
        let name = segment.replace("%2f", "/").replace("%2F", "/");
        current = child_named(schema, inv, &current, &name)?;
    }
    Some(current)
}

/// The direct child of `parent` named `name`.
pub fn child_named(schema: &Schema, inv: &Inventory, parent: &MoRef, name: &str) -> Option<MoRef> {
    inv.children(schema, parent)
        .into_iter()
        .find(|c| inv.stored(schema, c, "name").and_then(Value::as_str) == Some(name))
}

fn matching(
    schema: &Schema,
    inv: &Inventory,
    ty: &str,
    path: &str,
    wanted: impl Fn(&str) -> bool,
) -> Vec<MoRef> {
    let (first, rest) = path
        .split_once('.')
        .map_or((path, None), |(a, b)| (a, Some(b)));
    inv.all_of_type(schema, schema.known_type(ty))
        .into_iter()
        .filter(|obj| {
            let Some(value) = inv.stored(schema, obj, first) else {
                return false;
            };
            let value = match rest {
                Some(rest) => vireo_api::collector::retrieve::descend(schema, value, rest),
                None => Some(value),
            };
            value.and_then(Value::as_str).is_some_and(&wanted)
        })
        .collect()
}
