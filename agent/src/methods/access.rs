//! Which privileges a call needs, on which objects, and whether the caller holds them: the
//! privilege the schema lists for the method on `_this`, the dynamic privileges the API
//! reference gives for methods the schema lists none for (Destroy_Task, ReconfigVM_Task's
//! per-setting privileges, CloneVM_Task, AcquireTicket, CancelTask), and privileges on the
//! entities a call creates under or changes (a folder, pool or datastore argument, the entity
//! whose permissions change). Objects outside the inventory tree answer to the root folder,
//! except that any session may read them.

use std::collections::BTreeSet;

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Fault, MoRef, Value};

use super::Call;
use crate::authz::Authz;
use crate::host::Host;
use crate::inventory::esxi::refs;
use crate::inventory::Inventory;

/// Whether `user` holds `privilege` on `obj` (an object that does not exist grants nothing).
pub fn holds(
    schema: &Schema,
    inv: &Inventory,
    authz: &Authz,
    user: &str,
    privilege: &str,
    obj: &MoRef,
) -> bool {
    authz.holds_on(schema, inv, user, privilege, obj)
}

/// Whether `user` may see every session (their keys among them): Sessions.TerminateSession.
pub fn may_see_sessions(host: &Host, inv: &Inventory, user: &str) -> bool {
    let privilege = "Sessions.TerminateSession";
    holds(
        host.schema,
        inv,
        &host.authz(),
        user,
        privilege,
        &refs::session_manager(),
    )
}

/// Whether `user` may see `obj` (System.Read on it).
pub fn may_read(host: &Host, inv: &Inventory, user: &str, obj: &MoRef) -> bool {
    holds(host.schema, inv, &host.authz(), user, "System.Read", obj)
}

/// Checks that `user` holds every privilege `call` needs (`privilege` being what the schema
/// lists for the method or the property read), or NoPermission naming the first one missing.
pub fn check(call: &Call<'_>, user: &str, privilege: &str) -> Result<(), Fault> {
    let schema = call.schema;
    let inv = call.host.inventory();
    let needs = requirements(call, &inv, privilege);
    let authz = call.host.authz();
    for (privilege, obj) in needs {
        // A missing argument object is the method's own ManagedObjectNotFound to report.
        if inv.get(&obj).is_some() && !holds(schema, &inv, &authz, user, &privilege, &obj) {
            return Err(Fault::no_permission(schema, &obj, &privilege));
        }
    }
    Ok(())
}

/// The privilege a method needs on `_this` when the schema lists none (the API reference's
/// dynamic privileges); `None` when the listed one (or System.View) applies.
pub fn dynamic_privilege(method: &str, this_ty: &str) -> Option<&'static str> {
    Some(match (method, this_ty) {
        ("Destroy_Task", "VirtualMachine") => "VirtualMachine.Inventory.Delete",
        ("Destroy_Task", "Folder") => "Folder.Delete",
        ("CloneVM_Task", _) => "VirtualMachine.Provisioning.Clone",
        ("ReconfigVM_Task", _) => "VirtualMachine.Config.Settings",
        ("AcquireTicket", _) => "VirtualMachine.Interact.ConsoleInteract",
        ("UpdateNetworkConfig", _) => "Host.Config.Network",
        _ => return None,
    })
}

/// Every (privilege, object) pair the call needs.
fn requirements(call: &Call<'_>, inv: &Inventory, listed: &str) -> Vec<(String, MoRef)> {
    let schema = call.schema;
    let this = call.this().clone();
    let method = &*schema.method(call.request.method).name;
    let mut needs = Vec::new();
    let mut need = |privilege: &str, obj: Option<&MoRef>| {
        if let Some(obj) = obj {
            needs.push((privilege.to_string(), obj.clone()));
        }
    };
    let arg = |name: &str| call.arg(name).and_then(Value::as_moref);
    let data = |name: &str| call.arg(name).and_then(Value::as_data);
    match method {
        "ReconfigVM_Task" => {
            for privilege in data("spec")
                .map(|s| reconfig_privileges(schema, s))
                .unwrap_or_default()
            {
                need(privilege, Some(&this));
            }
        }
        "CancelTask" => {
            let (privilege, entity) = task_privilege(schema, inv, &this);
            need(&privilege, entity.as_ref());
        }
        _ => need(
            dynamic_privilege(method, &this.ty).unwrap_or(listed),
            Some(&this),
        ),
    }
    match method {
        "CreateVM_Task" | "RegisterVM_Task" => {
            need("Resource.AssignVMToPool", arg("pool"));
            if method == "CreateVM_Task" {
                let vmx = data("config")
                    .and_then(|c| c.get(schema, "files"))
                    .and_then(Value::as_data)
                    .and_then(|f| f.get(schema, "vmPathName"))
                    .and_then(Value::as_str);
                need("Datastore.AllocateSpace", datastore_of(vmx).as_ref());
            }
        }
        "ImportVApp" => {
            need("VApp.Import", arg("folder"));
            let vmx = data("spec")
                .and_then(|s| s.get(schema, "configSpec"))
                .and_then(Value::as_data)
                .and_then(|c| c.get(schema, "files"))
                .and_then(Value::as_data)
                .and_then(|f| f.get(schema, "vmPathName"))
                .and_then(Value::as_str);
            need("Datastore.AllocateSpace", datastore_of(vmx).as_ref());
        }
        "CloneVM_Task" => {
            need("VirtualMachine.Inventory.CreateFromExisting", arg("folder"));
            let location = data("spec")
                .and_then(|s| s.get(schema, "location"))
                .and_then(Value::as_data);
            let location_ref = |name: &str| {
                location
                    .and_then(|l| l.get(schema, name))
                    .and_then(Value::as_moref)
            };
            need("Resource.AssignVMToPool", location_ref("pool"));
            need("Datastore.AllocateSpace", location_ref("datastore"));
        }
        "SetEntityPermissions" | "ResetEntityPermissions" | "RemoveEntityPermission" => {
            need("Authorization.ModifyPermissions", arg("entity"));
        }
        "RetrieveEntityPermissions" => need("System.Read", arg("entity")),
        _ => {}
    }
    if let Some(privilege) = guest_operation_privilege(method) {
        need(privilege, arg("vm"));
    }
    for (privilege, name) in datastore_file_privileges(method) {
        let path = call.arg(name).and_then(Value::as_str);
        need(privilege, datastore_of(path).as_ref());
    }
    needs
}

/// The privilege a guest operation needs on its `vm` argument (the API reference's).
fn guest_operation_privilege(method: &str) -> Option<&'static str> {
    Some(match method {
        "StartProgramInGuest" | "TerminateProcessInGuest" => {
            "VirtualMachine.GuestOperations.Execute"
        }
        "ValidateCredentialsInGuest"
        | "AcquireCredentialsInGuest"
        | "ReleaseCredentialsInGuest"
        | "ListProcessesInGuest"
        | "ReadEnvironmentVariableInGuest"
        | "ListFilesInGuest"
        | "InitiateFileTransferFromGuest" => "VirtualMachine.GuestOperations.Query",
        "MakeDirectoryInGuest"
        | "DeleteFileInGuest"
        | "DeleteDirectoryInGuest"
        | "MoveFileInGuest"
        | "MoveDirectoryInGuest"
        | "CreateTemporaryFileInGuest"
        | "CreateTemporaryDirectoryInGuest"
        | "ChangeFileAttributesInGuest"
        | "InitiateFileTransferToGuest" => "VirtualMachine.GuestOperations.Modify",
        _ => return None,
    })
}

/// The privileges a datastore file or disk method needs on the datastores its path arguments
/// name (the API reference's), as (privilege, argument).
fn datastore_file_privileges(method: &str) -> &'static [(&'static str, &'static str)] {
    const MANAGE: &str = "Datastore.FileManagement";
    match method {
        "MakeDirectory" => &[(MANAGE, "name")],
        "DeleteDatastoreFile_Task" => &[("Datastore.DeleteFile", "name")],
        "MoveDatastoreFile_Task" | "CopyDatastoreFile_Task" => {
            &[(MANAGE, "sourceName"), (MANAGE, "destinationName")]
        }
        "CreateVirtualDisk_Task"
        | "DeleteVirtualDisk_Task"
        | "ExtendVirtualDisk_Task"
        | "InflateVirtualDisk_Task"
        | "ZeroFillVirtualDisk_Task"
        | "SetVirtualDiskUuid" => &[(MANAGE, "name")],
        "QueryVirtualDiskUuid" => &[("Datastore.Browse", "name")],
        "SearchDatastore_Task" | "SearchDatastoreSubFolders_Task" => {
            &[("Datastore.Browse", "datastorePath")]
        }
        "CopyVirtualDisk_Task" | "MoveVirtualDisk_Task" => {
            &[(MANAGE, "sourceName"), (MANAGE, "destName")]
        }
        _ => &[],
    }
}

/// The datastore a `[name] path` names.
fn datastore_of(path: Option<&str>) -> Option<MoRef> {
    let name = path?.strip_prefix('[')?.split_once(']')?.0;
    Some(MoRef::new("Datastore", name))
}

/// What cancelling a task needs: the privilege its method needs, on its entity.
fn task_privilege(schema: &Schema, inv: &Inventory, task: &MoRef) -> (String, Option<MoRef>) {
    let info = inv.stored(schema, task, "info").and_then(Value::as_data);
    let field = |name: &str| info.and_then(|i| i.get(schema, name));
    let entity = field("entity").and_then(Value::as_moref).cloned();
    let method = field("name").and_then(Value::as_str).unwrap_or_default();
    let entity_ty = entity
        .as_ref()
        .map(|e| e.ty.to_string())
        .unwrap_or_default();
    let listed = schema
        .method_id(method)
        .and_then(|id| schema.method(id).privilege.as_deref().map(str::to_string));
    let privilege = listed
        .or_else(|| dynamic_privilege(method, &entity_ty).map(str::to_string))
        .unwrap_or_else(|| "System.Read".to_string());
    (privilege, entity)
}

/// The privileges a VirtualMachineConfigSpec needs, per setting it changes.
pub fn reconfig_privileges(schema: &Schema, spec: &DataObject) -> BTreeSet<&'static str> {
    let mut privileges = BTreeSet::new();
    for (field, value) in schema.fields(spec.ty).iter().zip(&spec.fields) {
        let Some(value) = value else { continue };
        match &*field.name {
            "name" => privileges.insert("VirtualMachine.Config.Rename"),
            "annotation" => privileges.insert("VirtualMachine.Config.Annotation"),
            "numCPUs" | "numCoresPerSocket" => privileges.insert("VirtualMachine.Config.CPUCount"),
            "memoryMB" => privileges.insert("VirtualMachine.Config.Memory"),
            "extraConfig" => privileges.insert("VirtualMachine.Config.AdvancedConfig"),
            "changeTrackingEnabled" => privileges.insert("VirtualMachine.Config.ChangeTracking"),
            "deviceChange" => {
                privileges.extend(
                    value
                        .items()
                        .iter()
                        .filter_map(Value::as_data)
                        .map(|c| device_privilege(schema, c)),
                );
                true
            }
            _ => privileges.insert("VirtualMachine.Config.Settings"),
        };
    }
    privileges
}

/// The privilege one VirtualDeviceConfigSpec needs.
fn device_privilege(schema: &Schema, change: &DataObject) -> &'static str {
    let text = |name: &str| change.get(schema, name).and_then(Value::as_str);
    let is_disk = change
        .get(schema, "device")
        .and_then(Value::as_data)
        .is_some_and(|d| schema.is_a(d.ty, schema.known_type("VirtualDisk")));
    match (text("operation"), is_disk, text("fileOperation")) {
        (Some("add"), true, Some("create")) => "VirtualMachine.Config.AddNewDisk",
        (Some("add"), true, _) => "VirtualMachine.Config.AddExistingDisk",
        (Some("remove"), true, _) => "VirtualMachine.Config.RemoveDisk",
        (Some("add" | "remove"), false, _) => "VirtualMachine.Config.AddRemoveDevice",
        _ => "VirtualMachine.Config.EditDevice",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconfiguration_needs_one_privilege_per_setting() {
        let schema = vireo_api::vim25();
        let disk = DataObject::of(schema, "VirtualDisk");
        let add_disk = DataObject::of(schema, "VirtualDeviceConfigSpec")
            .with(
                schema,
                "operation",
                Value::enumeration(schema, "VirtualDeviceConfigSpecOperation", "add"),
            )
            .with(
                schema,
                "fileOperation",
                Value::enumeration(schema, "VirtualDeviceConfigSpecFileOperation", "create"),
            )
            .with(schema, "device", disk);
        let spec = DataObject::of(schema, "VirtualMachineConfigSpec")
            .with(schema, "memoryMB", 256i64)
            .with(
                schema,
                "deviceChange",
                Value::Array(
                    schema.known_type("VirtualDeviceConfigSpec"),
                    vec![add_disk.into()],
                ),
            )
            .with(schema, "guestId", "otherGuest64");
        let needed: Vec<_> = reconfig_privileges(schema, &spec).into_iter().collect();
        assert_eq!(
            needed,
            [
                "VirtualMachine.Config.AddNewDisk",
                "VirtualMachine.Config.Memory",
                "VirtualMachine.Config.Settings"
            ]
        );
    }

    #[test]
    fn datastore_paths_name_their_datastore() {
        assert_eq!(
            datastore_of(Some("[datastore1] vm/vm.vmx")),
            Some(MoRef::new("Datastore", "datastore1"))
        );
        assert_eq!(datastore_of(Some("vm.vmx")), None);
    }

    #[test]
    fn objects_outside_the_tree_are_readable_by_any_session() {
        let host = crate::host::test_host();
        let inv = host.inventory();
        let authz = host.authz();
        let schema = host.schema;
        let manager = refs::authorization_manager();
        assert!(holds(
            schema,
            &inv,
            &authz,
            "alice",
            "System.View",
            &manager
        ));
        assert!(!holds(
            schema,
            &inv,
            &authz,
            "alice",
            "Authorization.ModifyRoles",
            &manager
        ));
        assert!(holds(
            schema,
            &inv,
            &authz,
            "root",
            "Authorization.ModifyRoles",
            &manager
        ));
        let vm = MoRef::new("VirtualMachine", "1");
        assert!(!holds(schema, &inv, &authz, "alice", "System.Read", &vm));
        assert!(!holds(
            schema,
            &inv,
            &authz,
            "root",
            "System.Read",
            &MoRef::new("VirtualMachine", "99")
        ));
    }
}
