//! Permissions: (entity, principal, group flag, role, propagate) and how they resolve. Along a
//! path from an entity up to the root folder, the nearest permission naming the user decides
//! (one on the entity itself, or a propagating one on an ancestor); a permission set lower down
//! overrides one inherited from above. An entity with several parents in the inventory (a VM
//! has its folder and its resource pool) gets the union of what each path grants, as vSphere
//! merges permissions inherited from two parents.

use serde::{Deserialize, Serialize};
use vireo_api::MoRef;

/// A reference to an inventory entity, in a form that persists.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntityRef {
    /// Managed type name.
    pub ty: String,
    /// Object id.
    pub id: String,
}

impl EntityRef {
    /// Whether this names `obj`.
    pub fn is(&self, obj: &MoRef) -> bool {
        *self.ty == *obj.ty && *self.id == *obj.id
    }

    /// The managed object reference.
    pub fn moref(&self) -> MoRef {
        MoRef::new(self.ty.as_str(), self.id.as_str())
    }
}

impl From<&MoRef> for EntityRef {
    fn from(obj: &MoRef) -> EntityRef {
        EntityRef {
            ty: obj.ty.to_string(),
            id: obj.id.to_string(),
        }
    }
}

/// One permission: `principal` holds role `role_id` on `entity` (and below, if `propagate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Permission {
    /// Where it is defined.
    pub entity: EntityRef,
    /// User or group name.
    pub principal: String,
    /// Whether `principal` names a group.
    pub group: bool,
    /// The role granted.
    pub role_id: i32,
    /// Whether it applies to the entity's descendants.
    pub propagate: bool,
}

impl Permission {
    /// Whether this permission names `user` (local accounts belong to no groups, so only user
    /// permissions can match).
    fn names(&self, user: &str) -> bool {
        !self.group && self.principal == user
    }
}

/// The roles that decide `user`'s access along each of `paths` (each path runs from the entity
/// up to the root folder): on each path, the role of the nearest applicable permission.
pub fn deciding_roles(permissions: &[Permission], user: &str, paths: &[Vec<MoRef>]) -> Vec<i32> {
    paths
        .iter()
        .filter_map(|path| {
            path.iter().enumerate().find_map(|(depth, obj)| {
                permissions
                    .iter()
                    .find(|p| p.names(user) && p.entity.is(obj) && (depth == 0 || p.propagate))
                    .map(|p| p.role_id)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(ty: &str, id: &str, user: &str, role_id: i32, propagate: bool) -> Permission {
        Permission {
            entity: EntityRef {
                ty: ty.into(),
                id: id.into(),
            },
            principal: user.into(),
            group: false,
            role_id,
            propagate,
        }
    }

    fn path(ids: &[(&str, &str)]) -> Vec<MoRef> {
        ids.iter().map(|(ty, id)| MoRef::new(*ty, *id)).collect()
    }

    const VM_PATH: [(&str, &str); 4] = [
        ("VirtualMachine", "1"),
        ("Folder", "ha-folder-vm"),
        ("Datacenter", "ha-datacenter"),
        ("Folder", "ha-folder-root"),
    ];

    #[test]
    fn a_propagating_permission_reaches_descendants() {
        let perms = [perm("Folder", "ha-folder-root", "alice", -2, true)];
        assert_eq!(deciding_roles(&perms, "alice", &[path(&VM_PATH)]), [-2]);
        assert!(deciding_roles(&perms, "bob", &[path(&VM_PATH)]).is_empty());
    }

    #[test]
    fn a_non_propagating_permission_stays_on_its_entity() {
        let perms = [
            perm("Folder", "ha-folder-root", "alice", -1, true),
            perm("Datacenter", "ha-datacenter", "alice", -2, false),
        ];
        assert_eq!(deciding_roles(&perms, "alice", &[path(&VM_PATH)]), [-1]);
        assert_eq!(
            deciding_roles(&perms, "alice", &[path(&VM_PATH[2..])]),
            [-2]
        );
    }

    #[test]
    fn the_nearest_permission_overrides_inherited_ones() {
        let perms = [
            perm("Folder", "ha-folder-root", "alice", -1, true),
            perm("VirtualMachine", "1", "alice", -5, true),
        ];
        assert_eq!(deciding_roles(&perms, "alice", &[path(&VM_PATH)]), [-5]);
        let other_vm = path(&[("VirtualMachine", "2"), VM_PATH[1], VM_PATH[2], VM_PATH[3]]);
        assert_eq!(deciding_roles(&perms, "alice", &[other_vm]), [-1]);
    }

    #[test]
    fn every_parent_path_contributes() {
        let perms = [
            perm("Folder", "ha-folder-vm", "alice", 10, true),
            perm("ResourcePool", "ha-root-pool", "alice", 11, true),
        ];
        let pool_path = path(&[
            ("VirtualMachine", "1"),
            ("ResourcePool", "ha-root-pool"),
            ("ComputeResource", "ha-compute-res"),
        ]);
        assert_eq!(
            deciding_roles(&perms, "alice", &[path(&VM_PATH), pool_path]),
            [10, 11]
        );
    }

    #[test]
    fn group_permissions_match_no_local_user() {
        let mut p = perm("Folder", "ha-folder-root", "alice", -1, true);
        p.group = true;
        assert!(deciding_roles(&[p], "alice", &[path(&VM_PATH)]).is_empty());
    }
}
