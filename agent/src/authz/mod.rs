//! Authorization as ESXi does it: roles ([`roles`]), permissions on inventory entities with
//! propagation ([`permissions`]), local groups of users (which permissions may name), and the
//! store that holds them, persisted in the data dir (`authz.json`, mode 0600, replaced
//! atomically). Root holds Admin on the root folder from
//! the first start; any other account holds nothing until granted.
//!
//! Lock order: callers may hold the inventory lock while reading this store, so nothing here
//! ever takes the inventory lock; callers compute entity paths first.

mod memo;
pub mod permissions;
pub mod publish;
pub mod roles;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vireo_api::schema::Schema;
use vireo_api::{MoRef, Value};

use crate::inventory::esxi::refs;
use crate::inventory::Inventory;
use memo::{Memo, Reach};
pub use permissions::{EntityRef, Permission, Principal};
pub use roles::Role;

/// The file, under the data dir.
const FILE: &str = "authz.json";
/// Longest parent chain followed (the ESXi tree is a few levels deep).
const MAX_DEPTH: usize = 64;
/// Privileges any session holds on objects outside the inventory tree.
const SESSION_PRIVILEGES: [&str; 3] = ["System.Anonymous", "System.View", "System.Read"];

/// Why the store could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the file failed.
    #[error("authorization file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid store.
    #[error("authorization file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// Why a role could not be added, changed or removed.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    /// Another role has this name.
    #[error("a role named {0} already exists")]
    NameTaken(String),
    /// No role has this id.
    #[error("no role {0}")]
    NotFound(i32),
    /// System roles cannot be changed.
    #[error("role {0} is a system role")]
    System(i32),
    /// A privilege id this host does not know.
    #[error("unknown privilege {0}")]
    UnknownPrivilege(String),
    /// The name is empty or has control characters.
    #[error("invalid role name {0:?}")]
    BadName(String),
    /// Permissions use the role and the caller asked to fail then.
    #[error("role {0} is used by permissions")]
    InUse(i32),
    /// Saving failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why permissions could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum PermissionError {
    /// The permission names a role that does not exist.
    #[error("no role {0}")]
    UnknownRole(i32),
    /// No permission for this principal on the entity.
    #[error("no permission for {0} on this entity")]
    NotFound(String),
    /// The change would leave no user with Admin on the root folder.
    #[error("the last Admin permission on the root folder cannot be removed")]
    LastAdmin,
    /// Saving failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a group or a membership could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// A group of this name exists.
    #[error("group {0} exists")]
    Exists(String),
    /// No group of this name.
    #[error("no group {0}")]
    NotFound(String),
    /// The user is in the group already.
    #[error("{user} is already a member of {group}")]
    Member {
        /// The user.
        user: String,
        /// The group.
        group: String,
    },
    /// The user is not in the group.
    #[error("{user} is not a member of {group}")]
    NotMember {
        /// The user.
        user: String,
        /// The group.
        group: String,
    },
    /// The group's permissions could not be removed.
    #[error(transparent)]
    Permission(#[from] PermissionError),
    /// Saving failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Serialize, Deserialize, Default)]
struct Stored {
    roles: Vec<Role>,
    permissions: Vec<Permission>,
    /// Each local group and its members.
    #[serde(default)]
    groups: BTreeMap<String, BTreeSet<String>>,
}

/// Roles and permissions.
pub struct Authz {
    /// Where it persists (`None`: kept in memory only, for tests).
    path: Option<PathBuf>,
    known: BTreeSet<String>,
    roles: Vec<Role>,
    permissions: Vec<Permission>,
    groups: BTreeMap<String, BTreeSet<String>>,
    /// Who reaches what through which roles; forgotten on every change ([`Authz::commit`]).
    memo: Memo,
}

impl Authz {
    /// Loads the store from `data_dir`, or starts one with root as Admin on the root folder.
    pub fn open(data_dir: &Path, schema: &Schema) -> Result<Authz, StoreError> {
        let path = data_dir.join(FILE);
        let known = roles::known_privileges(schema);
        let stored = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Parse {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored {
                permissions: vec![root_admin()],
                ..Stored::default()
            },
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let mut all = roles::system_roles(&known);
        all.extend(stored.roles.into_iter().filter(|r| !r.is_system()));
        let mut authz = Authz {
            path: Some(path),
            known,
            roles: all,
            permissions: stored.permissions,
            groups: stored.groups,
            memo: Memo::default(),
        };
        authz.commit()?;
        Ok(authz)
    }

    /// Root as Admin on the root folder, kept in memory only (for tests).
    #[cfg(test)]
    pub fn ephemeral(schema: &Schema) -> Authz {
        let known = roles::known_privileges(schema);
        Authz {
            path: None,
            roles: roles::system_roles(&known),
            known,
            permissions: vec![root_admin()],
            groups: BTreeMap::new(),
            memo: Memo::default(),
        }
    }

    /// Takes a change to roles or permissions into account: forgets what the memo derived
    /// from the old ones and persists the new ones.
    fn commit(&mut self) -> Result<(), StoreError> {
        self.memo.forget();
        let Some(path) = &self.path else {
            return Ok(());
        };
        let stored = Stored {
            roles: self
                .roles
                .iter()
                .filter(|r| !r.is_system())
                .cloned()
                .collect(),
            permissions: self.permissions.clone(),
            groups: self.groups.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&stored).map_err(|source| StoreError::Parse {
            path: path.clone(),
            source,
        })?;
        crate::users::replace_private(path, &bytes).map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })
    }

    /// Every privilege id this host knows.
    pub fn known_privileges(&self) -> &BTreeSet<String> {
        &self.known
    }

    /// Every role, system roles first.
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    /// A role by id.
    pub fn role(&self, id: i32) -> Option<&Role> {
        self.roles.iter().find(|r| r.id == id)
    }

    fn check_role(
        &self,
        id: Option<i32>,
        name: &str,
        privileges: &[String],
    ) -> Result<(), RoleError> {
        if name.trim().is_empty() || name.chars().any(char::is_control) {
            return Err(RoleError::BadName(name.to_string()));
        }
        if self
            .roles
            .iter()
            .any(|r| r.name == name && Some(r.id) != id)
        {
            return Err(RoleError::NameTaken(name.to_string()));
        }
        match privileges.iter().find(|p| !self.known.contains(*p)) {
            Some(unknown) => Err(RoleError::UnknownPrivilege(unknown.clone())),
            None => Ok(()),
        }
    }

    /// Adds a custom role; returns its id.
    pub fn add_role(&mut self, name: &str, privileges: &[String]) -> Result<i32, RoleError> {
        self.check_role(None, name, privileges)?;
        let id = self
            .roles
            .iter()
            .map(|r| r.id + 1)
            .max()
            .unwrap_or(0)
            .max(roles::FIRST_CUSTOM);
        self.roles.push(Role::custom(id, name, privileges));
        self.commit()?;
        Ok(id)
    }

    /// Renames a custom role and/or replaces its privileges.
    pub fn update_role(
        &mut self,
        id: i32,
        name: &str,
        privileges: Option<&[String]>,
    ) -> Result<(), RoleError> {
        let role = self.role(id).ok_or(RoleError::NotFound(id))?;
        if role.is_system() {
            return Err(RoleError::System(id));
        }
        let privileges: Vec<String> = match privileges {
            Some(list) => list.to_vec(),
            None => role.privileges.iter().cloned().collect(),
        };
        self.check_role(Some(id), name, &privileges)?;
        let updated = Role::custom(id, name, &privileges);
        if let Some(role) = self.roles.iter_mut().find(|r| r.id == id) {
            *role = updated;
        }
        Ok(self.commit()?)
    }

    /// Removes a custom role and the permissions that use it (unless `fail_if_used`).
    pub fn remove_role(&mut self, id: i32, fail_if_used: bool) -> Result<(), RoleError> {
        let role = self.role(id).ok_or(RoleError::NotFound(id))?;
        if role.is_system() {
            return Err(RoleError::System(id));
        }
        if fail_if_used && self.permissions.iter().any(|p| p.role_id == id) {
            return Err(RoleError::InUse(id));
        }
        self.roles.retain(|r| r.id != id);
        self.permissions.retain(|p| p.role_id != id);
        Ok(self.commit()?)
    }

    /// Every permission.
    pub fn permissions(&self) -> &[Permission] {
        &self.permissions
    }

    /// Applies `change` to the permission list if every role it names exists and some user
    /// keeps Admin on the root folder; saves.
    fn change_permissions(
        &mut self,
        change: impl FnOnce(&mut Vec<Permission>) -> Result<(), PermissionError>,
    ) -> Result<(), PermissionError> {
        let mut next = self.permissions.clone();
        change(&mut next)?;
        if let Some(p) = next.iter().find(|p| self.role(p.role_id).is_none()) {
            return Err(PermissionError::UnknownRole(p.role_id));
        }
        let root = EntityRef::from(&refs::root_folder());
        if !next
            .iter()
            .any(|p| p.role_id == roles::ADMIN && !p.group && p.entity == root)
        {
            return Err(PermissionError::LastAdmin);
        }
        self.permissions = next;
        Ok(self.commit()?)
    }

    /// Sets permissions on their entities, replacing any for the same principal there.
    pub fn set_permissions(&mut self, set: Vec<Permission>) -> Result<(), PermissionError> {
        self.change_permissions(|list| {
            for p in set {
                list.retain(|q| {
                    !(q.entity == p.entity && q.principal == p.principal && q.group == p.group)
                });
                list.push(p);
            }
            Ok(())
        })
    }

    /// Replaces every permission on `entity` with `set`.
    pub fn reset_permissions(
        &mut self,
        entity: &EntityRef,
        set: Vec<Permission>,
    ) -> Result<(), PermissionError> {
        self.change_permissions(|list| {
            list.retain(|q| q.entity != *entity);
            list.extend(set);
            Ok(())
        })
    }

    /// Removes the permission of one principal on `entity`.
    pub fn remove_permission(
        &mut self,
        entity: &EntityRef,
        principal: &str,
        group: bool,
    ) -> Result<(), PermissionError> {
        self.change_permissions(|list| {
            let before = list.len();
            list.retain(|q| !(q.entity == *entity && q.principal == principal && q.group == group));
            if list.len() == before {
                return Err(PermissionError::NotFound(principal.to_string()));
            }
            Ok(())
        })
    }

    /// Removes every permission and group membership of a user (whose account is being
    /// removed).
    pub fn remove_principal(&mut self, user: &str) -> Result<(), PermissionError> {
        self.change_permissions(|list| {
            list.retain(|q| q.group || q.principal != user);
            Ok(())
        })?;
        for members in self.groups.values_mut() {
            members.remove(user);
        }
        Ok(self.commit()?)
    }

    /// Every local group with its members.
    pub fn groups(&self) -> &BTreeMap<String, BTreeSet<String>> {
        &self.groups
    }

    /// The groups `user` is a member of.
    pub fn groups_of(&self, user: &str) -> BTreeSet<String> {
        self.groups
            .iter()
            .filter(|(_, members)| members.contains(user))
            .map(|(group, _)| group.clone())
            .collect()
    }

    /// Adds an empty group.
    pub fn add_group(&mut self, group: &str) -> Result<(), GroupError> {
        if self.groups.contains_key(group) {
            return Err(GroupError::Exists(group.to_string()));
        }
        self.groups.insert(group.to_string(), BTreeSet::new());
        Ok(self.commit()?)
    }

    /// Removes a group and every permission naming it.
    pub fn remove_group(&mut self, group: &str) -> Result<(), GroupError> {
        if !self.groups.contains_key(group) {
            return Err(GroupError::NotFound(group.to_string()));
        }
        self.change_permissions(|list| {
            list.retain(|q| !(q.group && q.principal == group));
            Ok(())
        })?;
        self.groups.remove(group);
        Ok(self.commit()?)
    }

    /// Makes `user` a member of `group` (`add`) or no longer one.
    pub fn set_membership(&mut self, group: &str, user: &str, add: bool) -> Result<(), GroupError> {
        let members = self
            .groups
            .get_mut(group)
            .ok_or_else(|| GroupError::NotFound(group.to_string()))?;
        let (user, group) = (user.to_string(), group.to_string());
        match add {
            true if !members.insert(user.clone()) => Err(GroupError::Member { user, group }),
            false if !members.remove(&user) => Err(GroupError::NotMember { user, group }),
            _ => Ok(self.commit()?),
        }
    }

    /// Moves every permission of role `from` to role `to` (MergePermissions); the last Admin
    /// permission on the root folder cannot move away.
    pub fn merge_permissions(&mut self, from: i32, to: i32) -> Result<(), PermissionError> {
        for id in [from, to] {
            if self.role(id).is_none() {
                return Err(PermissionError::UnknownRole(id));
            }
        }
        self.change_permissions(|list| {
            for p in list.iter_mut().filter(|p| p.role_id == from) {
                p.role_id = to;
            }
            Ok(())
        })
    }

    /// Whether `user` holds `privilege` on `obj` as it stands in `inv` (an object that does not
    /// exist grants nothing; one outside the inventory tree answers to the root folder, except
    /// that any session may read it). Remembered per inventory generation.
    pub fn holds_on(
        &self,
        schema: &Schema,
        inv: &Inventory,
        user: &str,
        privilege: &str,
        obj: &MoRef,
    ) -> bool {
        if inv.get(obj).is_none() {
            return false;
        }
        let reach = || {
            let groups = self.groups_of(user);
            let who = Principal {
                user,
                groups: &groups,
            };
            match paths(schema, inv, obj) {
                Some(paths) => {
                    Reach::Tree(permissions::deciding_roles(&self.permissions, who, &paths))
                }
                None => Reach::Outside(permissions::deciding_roles(
                    &self.permissions,
                    who,
                    &[vec![refs::root_folder()]],
                )),
            }
        };
        self.memo.with(inv, user, obj, reach, |reach| match reach {
            Reach::Tree(roles) => self.any_grants(roles, privilege),
            Reach::Outside(roles) => {
                SESSION_PRIVILEGES.contains(&privilege) || self.any_grants(roles, privilege)
            }
        })
    }

    fn any_grants(&self, roles: &[i32], privilege: &str) -> bool {
        roles
            .iter()
            .filter_map(|id| self.role(*id))
            .any(|role| role.grants(privilege))
    }

    /// Every privilege `user` holds on the entity whose parent paths are `paths`.
    pub fn privileges(&self, user: &str, paths: &[Vec<MoRef>]) -> BTreeSet<String> {
        let groups = self.groups_of(user);
        let who = Principal {
            user,
            groups: &groups,
        };
        permissions::deciding_roles(&self.permissions, who, paths)
            .into_iter()
            .filter_map(|id| self.role(id))
            .flat_map(|role| role.privileges.iter().cloned())
            .collect()
    }
}

/// Root's Admin permission on the root folder, as ESXi starts.
fn root_admin() -> Permission {
    Permission {
        entity: EntityRef::from(&refs::root_folder()),
        principal: "root".into(),
        group: false,
        role_id: roles::ADMIN,
        propagate: true,
    }
}

/// The paths from `obj` up to the root folder along which permissions reach it: through
/// `parent`, and for a VM also through its resource pool. A snapshot answers to its VM, a task
/// to its entity. `None` for objects outside the inventory tree (managers, views,
/// collectors), which answer to the root folder for any privilege beyond System.Read.
pub fn paths(schema: &Schema, inv: &Inventory, obj: &MoRef) -> Option<Vec<Vec<MoRef>>> {
    let object = inv.get(obj)?;
    if schema.is_a(object.ty, schema.known_type("ManagedEntity")) {
        let mut paths = vec![up(schema, inv, obj.clone())];
        if &*obj.ty == "VirtualMachine" {
            if let Some(pool) = inv.refs(schema, obj, "resourcePool").into_iter().next() {
                let mut path = vec![obj.clone()];
                path.extend(up(schema, inv, pool));
                paths.push(path);
            }
        }
        return Some(paths);
    }
    let owner = match &*obj.ty {
        "VirtualMachineSnapshot" => inv.refs(schema, obj, "vm").into_iter().next(),
        "Task" => inv
            .stored(schema, obj, "info")
            .and_then(Value::as_data)
            .and_then(|info| info.get(schema, "entity"))
            .and_then(Value::as_moref)
            .cloned(),
        _ => return None,
    };
    owner
        .filter(|o| o != obj)
        .and_then(|o| paths(schema, inv, &o))
        .or_else(|| Some(vec![vec![refs::root_folder()]]))
}

/// `obj` and its ancestors through `parent`.
fn up(schema: &Schema, inv: &Inventory, obj: MoRef) -> Vec<MoRef> {
    let mut path = vec![obj];
    while path.len() < MAX_DEPTH {
        let last = path.last().expect("path is never empty");
        match inv.refs(schema, last, "parent").into_iter().next() {
            Some(parent) => path.push(parent),
            None => break,
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vireo-authz-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn grant(entity: &MoRef, user: &str, role_id: i32, propagate: bool) -> Permission {
        Permission {
            entity: entity.into(),
            principal: user.into(),
            group: false,
            role_id,
            propagate,
        }
    }

    #[test]
    fn root_is_admin_and_others_hold_nothing_until_granted() {
        let host = crate::host::test_host();
        let dir = scratch("default");
        let authz = Authz::open(&dir, host.schema).unwrap();
        let inv = host.inventory();
        let vm = MoRef::new("VirtualMachine", "1");
        assert_eq!(
            paths(host.schema, &inv, &vm).unwrap().len(),
            2,
            "a VM is reached through its folder and its pool"
        );
        let holds = |user, privilege| authz.holds_on(host.schema, &inv, user, privilege, &vm);
        assert!(holds("root", "VirtualMachine.Interact.PowerOn"));
        assert!(!holds("alice", "System.Read"));
        let mode = std::fs::metadata(dir.join(FILE)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn roles_and_permissions_persist_and_propagate() {
        let host = crate::host::test_host();
        let dir = scratch("persist");
        let mut authz = Authz::open(&dir, host.schema).unwrap();
        let id = authz
            .add_role("power", &["VirtualMachine.Interact.PowerOn".into()])
            .unwrap();
        assert_eq!(id, roles::FIRST_CUSTOM);
        let pool = refs::root_pool();
        authz
            .set_permissions(vec![grant(&pool, "alice", id, true)])
            .unwrap();
        drop(authz);
        let authz = Authz::open(&dir, host.schema).unwrap();
        let inv = host.inventory();
        let vm = MoRef::new("VirtualMachine", "1");
        let holds =
            |privilege, obj: &MoRef| authz.holds_on(host.schema, &inv, "alice", privilege, obj);
        assert!(holds("VirtualMachine.Interact.PowerOn", &vm));
        assert!(holds("System.Read", &vm));
        assert!(!holds("VirtualMachine.Interact.PowerOff", &vm));
        assert!(
            !holds("System.Read", &MoRef::new("Datastore", "datastore1")),
            "the pool is not above datastores"
        );
        let privileges = authz.privileges("alice", &paths(host.schema, &inv, &vm).unwrap());
        assert!(privileges.contains("VirtualMachine.Interact.PowerOn"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn every_change_takes_effect_on_the_next_check() {
        let host = crate::host::test_host();
        let schema = host.schema;
        let mut authz = Authz::ephemeral(schema);
        let vm = MoRef::new("VirtualMachine", "1");
        let holds = |authz: &Authz, privilege| {
            authz.holds_on(schema, &host.inventory(), "alice", privilege, &vm)
        };
        let rename = "VirtualMachine.Config.Rename";
        let role = authz.add_role("rename", &[rename.into()]).unwrap();
        let folder = refs::vm_folder();
        authz
            .set_permissions(vec![grant(&folder, "alice", role, true)])
            .unwrap();
        assert!(holds(&authz, rename) && holds(&authz, "System.Read"));
        assert!(authz.memo.remembered() > 0, "the answer is remembered");

        // A role losing a privilege.
        authz.update_role(role, "rename", Some(&[])).unwrap();
        assert!(!holds(&authz, rename) && holds(&authz, "System.Read"));
        authz
            .update_role(role, "rename", Some(&[rename.into()]))
            .unwrap();
        assert!(holds(&authz, rename));

        // A permission revoked, then granted again.
        authz
            .remove_permission(&EntityRef::from(&folder), "alice", false)
            .unwrap();
        assert!(!holds(&authz, "System.Read"));
        authz
            .set_permissions(vec![grant(&folder, "alice", role, true)])
            .unwrap();
        assert!(holds(&authz, rename));

        // The VM moved out of the folder the permission is on (the inventory changed, not
        // the permissions).
        host.mutate(|inv| inv.set(schema, &vm, "parent", refs::root_folder()));
        assert!(!holds(&authz, rename) && !holds(&authz, "System.Read"));
        host.mutate(|inv| inv.set(schema, &vm, "parent", folder.clone()));
        assert!(holds(&authz, rename));

        // A role removed with its permissions.
        authz.remove_role(role, false).unwrap();
        assert!(!holds(&authz, "System.Read"));
    }

    #[test]
    fn role_arithmetic_refuses_what_esxi_refuses() {
        let host = crate::host::test_host();
        let dir = scratch("roles");
        let mut authz = Authz::open(&dir, host.schema).unwrap();
        let a = authz.add_role("a", &[]).unwrap();
        let b = authz.add_role("b", &["Datastore.Browse".into()]).unwrap();
        assert_eq!(b, a + 1);
        assert!(matches!(
            authz.add_role("a", &[]),
            Err(RoleError::NameTaken(_))
        ));
        assert!(matches!(
            authz.add_role("ReadOnly", &[]),
            Err(RoleError::NameTaken(_))
        ));
        assert!(matches!(
            authz.add_role(" ", &[]),
            Err(RoleError::BadName(_))
        ));
        assert!(matches!(
            authz.add_role("a\nb", &[]),
            Err(RoleError::BadName(_))
        ));
        assert!(matches!(
            authz.add_role("c", &["No.Such".into()]),
            Err(RoleError::UnknownPrivilege(_))
        ));
        assert!(matches!(
            authz.update_role(-2, "x", None),
            Err(RoleError::System(-2))
        ));
        assert!(matches!(
            authz.update_role(b, "a", None),
            Err(RoleError::NameTaken(_))
        ));
        authz.update_role(b, "browse", None).unwrap();
        assert!(
            authz.role(b).unwrap().grants("Datastore.Browse"),
            "privileges kept"
        );
        authz
            .set_permissions(vec![grant(&refs::datacenter(), "bob", b, false)])
            .unwrap();
        assert!(matches!(
            authz.remove_role(b, true),
            Err(RoleError::InUse(_))
        ));
        authz.remove_role(b, false).unwrap();
        assert!(authz.permissions().iter().all(|p| p.principal != "bob"));
        assert!(matches!(
            authz.remove_role(-1, false),
            Err(RoleError::System(-1))
        ));
        assert!(matches!(
            authz.remove_role(99, false),
            Err(RoleError::NotFound(99))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_last_admin_cannot_be_removed() {
        let host = crate::host::test_host();
        let dir = scratch("admin");
        let mut authz = Authz::open(&dir, host.schema).unwrap();
        let root = EntityRef::from(&refs::root_folder());
        assert!(matches!(
            authz.remove_permission(&root, "root", false),
            Err(PermissionError::LastAdmin)
        ));
        assert!(matches!(
            authz.set_permissions(vec![grant(&refs::root_folder(), "root", -2, true)]),
            Err(PermissionError::LastAdmin)
        ));
        assert!(matches!(
            authz.set_permissions(vec![grant(&refs::root_folder(), "x", 77, true)]),
            Err(PermissionError::UnknownRole(77))
        ));
        authz
            .set_permissions(vec![grant(&refs::root_folder(), "alice", -1, true)])
            .unwrap();
        authz.remove_principal("root").unwrap();
        assert!(matches!(
            authz.remove_permission(&root, "nobody", false),
            Err(PermissionError::NotFound(_))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
