//! Permissions: (entity, principal, group flag, role, propagate) and how they resolve, as
//! vSphere merges them. Along a path from an entity up to the root folder, the nearest entity
//! with a permission that applies to the user decides (one on the entity itself, or a
//! propagating one on an ancestor), so a permission set lower down overrides one inherited from
//! above. On that entity a permission naming the user takes precedence over every group
//! permission; without one, the user gets the union of the roles of the groups it belongs to
//! that have a permission there. An entity with several parents in the inventory (a VM has its
//! folder and its resource pool) gets the union of what each path grants.

use std::collections::BTreeSet;

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

/// Who is asking: a user and the groups it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    /// The user name.
    pub user: &'a str,
    /// The groups the user is a member of.
    pub groups: &'a BTreeSet<String>,
}

impl Permission {
    /// Whether this permission names the user itself.
    fn names_user(&self, who: Principal<'_>) -> bool {
        !self.group && self.principal == who.user
    }

    /// Whether this permission names one of the user's groups.
    fn names_group_of(&self, who: Principal<'_>) -> bool {
        self.group && who.groups.contains(&self.principal)
    }
}

/// The roles that decide `who`'s access along each of `paths` (each path runs from the entity
/// up to the root folder): on each path, those of the nearest entity with an applicable
/// permission — the user's own permission there, else every permission of its groups there.
pub fn deciding_roles(
    permissions: &[Permission],
    who: Principal<'_>,
    paths: &[Vec<MoRef>],
) -> Vec<i32> {
    let mut roles = Vec::new();
    for path in paths {
        for (depth, obj) in path.iter().enumerate() {
            let here: Vec<&Permission> = permissions
                .iter()
                .filter(|p| p.entity.is(obj) && (depth == 0 || p.propagate))
                .collect();
            if let Some(own) = here.iter().find(|p| p.names_user(who)) {
                roles.push(own.role_id);
                break;
            }
            let from_groups: Vec<i32> = here
                .iter()
                .filter(|p| p.names_group_of(who))
                .map(|p| p.role_id)
                .collect();
            if !from_groups.is_empty() {
                roles.extend(from_groups);
                break;
            }
        }
    }
    roles
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

    /// What `user` (in `groups`) gets along `paths`.
    fn roles_of(
        perms: &[Permission],
        user: &str,
        groups: &[&str],
        paths: &[Vec<MoRef>],
    ) -> Vec<i32> {
        let groups = groups.iter().map(|g| g.to_string()).collect();
        deciding_roles(
            perms,
            Principal {
                user,
                groups: &groups,
            },
            paths,
        )
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
        assert_eq!(roles_of(&perms, "alice", &[], &[path(&VM_PATH)]), [-2]);
        assert!(roles_of(&perms, "bob", &[], &[path(&VM_PATH)]).is_empty());
    }

    #[test]
    fn a_non_propagating_permission_stays_on_its_entity() {
        let perms = [
            perm("Folder", "ha-folder-root", "alice", -1, true),
            perm("Datacenter", "ha-datacenter", "alice", -2, false),
        ];
        assert_eq!(roles_of(&perms, "alice", &[], &[path(&VM_PATH)]), [-1]);
        assert_eq!(roles_of(&perms, "alice", &[], &[path(&VM_PATH[2..])]), [-2]);
    }

    #[test]
    fn the_nearest_permission_overrides_inherited_ones() {
        let perms = [
            perm("Folder", "ha-folder-root", "alice", -1, true),
            perm("VirtualMachine", "1", "alice", -5, true),
        ];
        assert_eq!(roles_of(&perms, "alice", &[], &[path(&VM_PATH)]), [-5]);
        let other_vm = path(&[("VirtualMachine", "2"), VM_PATH[1], VM_PATH[2], VM_PATH[3]]);
        assert_eq!(roles_of(&perms, "alice", &[], &[other_vm]), [-1]);
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
            roles_of(&perms, "alice", &[], &[path(&VM_PATH), pool_path]),
            [10, 11]
        );
    }

    #[test]
    fn group_permissions_reach_members_only() {
        let mut p = perm("Folder", "ha-folder-root", "admins", -1, true);
        p.group = true;
        let perms = [p];
        assert_eq!(
            roles_of(&perms, "alice", &["admins"], &[path(&VM_PATH)]),
            [-1]
        );
        assert!(roles_of(&perms, "admins", &[], &[path(&VM_PATH)]).is_empty());
        assert!(roles_of(&perms, "bob", &["others"], &[path(&VM_PATH)]).is_empty());
    }

    fn group_perm(ty: &str, id: &str, group: &str, role_id: i32) -> Permission {
        Permission {
            group: true,
            ..perm(ty, id, group, role_id, true)
        }
    }

    #[test]
    fn groups_on_one_entity_merge_and_the_users_own_permission_wins() {
        let perms = [
            group_perm("Folder", "ha-folder-vm", "operators", 10),
            group_perm("Folder", "ha-folder-vm", "auditors", -2),
            group_perm("Folder", "ha-folder-root", "everyone", -1),
        ];
        let vm = [path(&VM_PATH)];
        // Two groups on the same entity: the union of their roles; the root's is overridden.
        let mut both = roles_of(&perms, "alice", &["operators", "auditors", "everyone"], &vm);
        both.sort();
        assert_eq!(both, [-2, 10]);
        // The user's own permission on that entity takes precedence over its groups'.
        let mut with_own = perms.to_vec();
        with_own.push(perm("Folder", "ha-folder-vm", "alice", -5, true));
        assert_eq!(
            roles_of(&with_own, "alice", &["operators", "auditors"], &vm),
            [-5]
        );
        // A group permission lower down overrides the user's own one higher up.
        let lower = [
            perm("Folder", "ha-folder-root", "alice", -1, true),
            group_perm("VirtualMachine", "1", "auditors", -2),
        ];
        assert_eq!(roles_of(&lower, "alice", &["auditors"], &vm), [-2]);
        assert_eq!(roles_of(&lower, "alice", &[], &vm), [-1]);
    }
}
