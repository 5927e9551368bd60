//! Roles as ESXi has them: the five system roles with their fixed ids (Admin -1, ReadOnly -2,
//! View -3, Anonymous -4, NoAccess -5) and custom roles (ids from 10 up), each a named set of
//! privilege ids. Also the list of privileges this host knows.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use vireo_api::schema::{Schema, TypeKind};

/// Admin: every privilege.
pub const ADMIN: i32 = -1;
/// ReadOnly: see and read everything, change nothing.
pub const READ_ONLY: i32 = -2;
/// View: see objects (System.View), not read their properties.
pub const VIEW: i32 = -3;
/// Anonymous: only what needs no login.
pub const ANONYMOUS: i32 = -4;
/// NoAccess: nothing; hides the entity.
pub const NO_ACCESS: i32 = -5;
/// The first id a custom role gets.
pub const FIRST_CUSTOM: i32 = 10;

/// The privileges every role but NoAccess, Anonymous and View holds, and which ESXi adds to
/// every custom role.
pub const BASE: [&str; 3] = ["System.Anonymous", "System.View", "System.Read"];

/// Privileges the API reference requires of methods whose schema entry lists none (dynamic
/// checks: the entities a method changes, ReconfigVM_Task's per-setting privileges) and of the
/// HTTP file and console paths.
const DYNAMIC: [&str; 23] = [
    "Authorization.ModifyPermissions",
    "Datastore.AllocateSpace",
    "Datastore.Browse",
    "Datastore.DeleteFile",
    "Datastore.FileManagement",
    "Folder.Delete",
    "Resource.AssignVMToPool",
    "VirtualMachine.Config.AddNewDisk",
    "VirtualMachine.Config.AddRemoveDevice",
    "VirtualMachine.Config.AdvancedConfig",
    "VirtualMachine.Config.Annotation",
    "VirtualMachine.Config.CPUCount",
    "VirtualMachine.Config.ChangeTracking",
    "VirtualMachine.Config.EditDevice",
    "VirtualMachine.Config.Memory",
    "VirtualMachine.Config.Rename",
    "VirtualMachine.GuestOperations.Execute",
    "VirtualMachine.GuestOperations.Modify",
    "VirtualMachine.GuestOperations.Query",
    "VirtualMachine.Inventory.CreateFromExisting",
    "VirtualMachine.Inventory.Delete",
    "VirtualMachine.Interact.ConsoleInteract",
    "VirtualMachine.Provisioning.Clone",
];

/// A role: a named set of privileges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Role {
    /// Role id (negative for system roles).
    pub id: i32,
    /// Unique name.
    pub name: String,
    /// Privileges held (Admin holds every privilege whatever this lists).
    pub privileges: BTreeSet<String>,
}

impl Role {
    /// Whether this is one of the five system roles (which cannot be changed).
    pub fn is_system(&self) -> bool {
        self.id < 0
    }

    /// Whether the role grants `privilege`.
    pub fn grants(&self, privilege: &str) -> bool {
        self.id == ADMIN || self.privileges.contains(privilege)
    }

    /// A custom role: the given privileges plus [`BASE`], as ESXi stores them.
    pub fn custom(id: i32, name: &str, privileges: &[String]) -> Role {
        let mut held: BTreeSet<String> = privileges.iter().cloned().collect();
        held.extend(BASE.map(String::from));
        Role {
            id,
            name: name.to_string(),
            privileges: held,
        }
    }
}

/// The system roles, Admin holding every privilege in `known`.
pub fn system_roles(known: &BTreeSet<String>) -> Vec<Role> {
    let role = |id, name: &str, held: &[&str]| Role {
        id,
        name: name.to_string(),
        privileges: held.iter().map(|p| p.to_string()).collect(),
    };
    vec![
        Role {
            id: ADMIN,
            name: "Admin".to_string(),
            privileges: known.clone(),
        },
        role(READ_ONLY, "ReadOnly", &BASE),
        role(VIEW, "View", &BASE[..2]),
        role(ANONYMOUS, "Anonymous", &BASE[..1]),
        role(NO_ACCESS, "NoAccess", &[]),
    ]
}

/// Every privilege this host knows: those the schema's methods and properties name, the
/// dynamic ones, and System.*.
pub fn known_privileges(schema: &Schema) -> BTreeSet<String> {
    let mut privileges: BTreeSet<String> =
        BASE.iter().chain(&DYNAMIC).map(|p| p.to_string()).collect();
    privileges.extend(
        schema
            .methods()
            .filter_map(|m| m.privilege.as_deref().map(String::from)),
    );
    for (_, ty) in schema.types() {
        if let TypeKind::Managed { properties, .. } = &ty.kind {
            privileges.extend(
                properties
                    .iter()
                    .filter_map(|p| p.privilege.as_deref().map(String::from)),
            );
        }
    }
    privileges.retain(|p| p.contains('.'));
    privileges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_roles_hold_what_esxi_gives_them() {
        let known = known_privileges(vireo_api::vim25());
        let roles = system_roles(&known);
        let by_id = |id| roles.iter().find(|r| r.id == id).unwrap();
        assert!(by_id(ADMIN).grants("VirtualMachine.Interact.PowerOn"));
        assert!(by_id(ADMIN).grants("Host.Local.ManageUserGroups"));
        assert!(by_id(READ_ONLY).grants("System.Read"));
        assert!(!by_id(READ_ONLY).grants("VirtualMachine.Interact.PowerOn"));
        assert!(!by_id(READ_ONLY).grants("Datastore.Browse"));
        assert!(by_id(VIEW).grants("System.View") && !by_id(VIEW).grants("System.Read"));
        assert!(by_id(ANONYMOUS).grants("System.Anonymous"));
        assert!(!by_id(ANONYMOUS).grants("System.View"));
        assert!(!by_id(NO_ACCESS).grants("System.Anonymous"));
        assert!(roles.iter().all(Role::is_system));
    }

    #[test]
    fn custom_roles_always_hold_the_base_privileges() {
        let role = Role::custom(10, "power", &["VirtualMachine.Interact.PowerOn".into()]);
        assert!(!role.is_system());
        assert!(role.grants("VirtualMachine.Interact.PowerOn"));
        assert!(BASE.iter().all(|p| role.grants(p)));
        assert!(!role.grants("VirtualMachine.Interact.PowerOff"));
    }

    #[test]
    fn known_privileges_include_schema_and_dynamic_ones() {
        let known = known_privileges(vireo_api::vim25());
        for p in [
            "Sessions.TerminateSession",
            "Datastore.Browse",
            "System.Read",
        ] {
            assert!(known.contains(p), "{p}");
        }
        assert!(!known.contains("-"));
    }
}
