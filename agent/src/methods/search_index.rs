//! SearchIndex: finds entities by inventory path, by name under a parent, by BIOS/instance UUID,
//! by datastore path and by DNS name — among the objects the caller may see.

use vireo_api::schema::Schema;
use vireo_api::{Fault, MoRef, Value};

use super::{Call, Handler, MethodResult, MethodTable};
use crate::inventory::esxi::refs;
use crate::inventory::Inventory;

/// SearchIndex's methods; `FindX` answers the first match, `FindAllX` every match.
pub const METHODS: MethodTable = MethodTable {
    ty: "SearchIndex",
    methods: &[
        (
            "FindByInventoryPath",
            Handler::Sync(|c| first(c, path_match(c))),
        ),
        ("FindChild", Handler::Sync(|c| first(c, child_match(c)))),
        ("FindByUuid", Handler::Sync(|c| first(c, uuid_matches(c)))),
        ("FindAllByUuid", Handler::Sync(|c| all(c, uuid_matches(c)))),
        (
            "FindByDatastorePath",
            Handler::Sync(|c| first(c, vmx_matches(c))),
        ),
        ("FindByDnsName", Handler::Sync(|c| first(c, dns_matches(c)))),
        (
            "FindAllByDnsName",
            Handler::Sync(|c| all(c, dns_matches(c))),
        ),
        ("FindByIp", Handler::Sync(|c| first(c, ip_matches(c)))),
        ("FindAllByIp", Handler::Sync(|c| all(c, ip_matches(c)))),
    ],
};

fn first(call: &Call<'_>, found: Result<Vec<MoRef>, Fault>) -> MethodResult {
    Ok(visible(call, found?).into_iter().next().map(Value::MoRef))
}

fn all(call: &Call<'_>, found: Result<Vec<MoRef>, Fault>) -> MethodResult {
    Ok(Some(Value::refs(call.schema, &visible(call, found?))))
}

/// Objects the caller may not see are not found.
fn visible(call: &Call<'_>, found: Vec<MoRef>) -> Vec<MoRef> {
    let inv = call.host.inventory();
    let objects = call.objects(&inv);
    found
        .into_iter()
        .filter(|o| objects.visible_type(o).is_some())
        .collect()
}

fn path_match(call: &Call<'_>) -> Result<Vec<MoRef>, Fault> {
    let inv = call.host.inventory();
    let path = call.str_arg("inventoryPath")?;
    Ok(by_inventory_path(call.schema, &inv, path)
        .into_iter()
        .collect())
}

fn child_match(call: &Call<'_>) -> Result<Vec<MoRef>, Fault> {
    let schema = call.schema;
    let inv = call.host.inventory();
    let entity = call.moref_arg("entity")?;
    if inv.get(entity).is_none() {
        return Err(Fault::managed_object_not_found(schema, entity));
    }
    Ok(child_named(schema, &inv, entity, call.str_arg("name")?)
        .into_iter()
        .collect())
}

fn uuid_matches(call: &Call<'_>) -> Result<Vec<MoRef>, Fault> {
    let uuid = call.str_arg("uuid")?.to_ascii_lowercase();
    let flag = |name: &str| call.arg(name).and_then(Value::as_bool).unwrap_or(false);
    let (ty, path) = match (flag("vmSearch"), flag("instanceUuid")) {
        (true, true) => ("VirtualMachine", "config.instanceUuid"),
        (true, false) => ("VirtualMachine", "config.uuid"),
        (false, _) => ("HostSystem", "hardware.systemInfo.uuid"),
    };
    let inv = call.host.inventory();
    Ok(matching(call.schema, &inv, ty, path, |v| {
        v.to_ascii_lowercase() == uuid
    }))
}

fn vmx_matches(call: &Call<'_>) -> Result<Vec<MoRef>, Fault> {
    let path = call.str_arg("path")?;
    let inv = call.host.inventory();
    Ok(matching(
        call.schema,
        &inv,
        "VirtualMachine",
        "config.files.vmPathName",
        |v| v == path,
    ))
}

fn dns_matches(call: &Call<'_>) -> Result<Vec<MoRef>, Fault> {
    let name = call.str_arg("dnsName")?.to_ascii_lowercase();
    let vm_search = call
        .arg("vmSearch")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let (ty, path) = if vm_search {
        ("VirtualMachine", "guest.hostName")
    } else {
        ("HostSystem", "name")
    };
    let inv = call.host.inventory();
    Ok(matching(call.schema, &inv, ty, path, |v| {
        v.to_ascii_lowercase() == name
    }))
}

fn ip_matches(call: &Call<'_>) -> Result<Vec<MoRef>, Fault> {
    let ip = call.str_arg("ip")?;
    let inv = call.host.inventory();
    Ok(matching(
        call.schema,
        &inv,
        "VirtualMachine",
        "guest.ipAddress",
        |v| v == ip,
    ))
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
