//! A memo of which roles decide each user's access to each inventory object, so that the checks
//! every call makes (the method's privilege, System.Read on every object a collector returns)
//! cost a map look-up instead of a walk up the inventory and through the permission list.
//!
//! Validity: an entry is computed from the permissions and from one state of the inventory
//! (parents, resource pools, a snapshot's VM, a task's entity). [`Authz`](super::Authz) forgets
//! every entry on any role or permission change, and the memo forgets every entry as soon as
//! it is asked about a different inventory generation ([`Inventory::generation`] changes on
//! every inventory change), so an answer is never older than the state it is asked about.

use std::sync::{Arc, Mutex};

use vireo_api::fast_hash::FastMap;
use vireo_api::MoRef;

use crate::inventory::Inventory;
use crate::locks::lock;

/// Entries kept before the memo starts over (each is a few dozen bytes).
const CAPACITY: usize = 16 * 1024;

/// How a user reaches one existing object.
#[derive(Debug)]
pub enum Reach {
    /// An inventory object: the roles deciding along each of its parent paths.
    Tree(Vec<i32>),
    /// An object outside the inventory tree (a manager, view or collector): any session may
    /// read it; anything more answers to the roles deciding on the root folder.
    Outside(Vec<i32>),
}

/// The memo; shared by every request, locked only for a look-up or an insert.
#[derive(Default)]
pub struct Memo {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The inventory generation the entries were computed from.
    generation: u64,
    by_user: FastMap<Arc<str>, FastMap<MoRef, Reach>>,
    len: usize,
}

impl Memo {
    /// Runs `answer` on how `user` reaches `obj` in `inv`, computing it with `compute` (and
    /// remembering it) unless known for this inventory generation.
    pub fn with<R>(
        &self,
        inv: &Inventory,
        user: &str,
        obj: &MoRef,
        compute: impl FnOnce() -> Reach,
        answer: impl FnOnce(&Reach) -> R,
    ) -> R {
        let mut state = lock(&self.state);
        if state.generation != inv.generation() {
            state.forget();
            state.generation = inv.generation();
        }
        if let Some(reach) = state.by_user.get(user).and_then(|objects| objects.get(obj)) {
            return answer(reach);
        }
        if state.len >= CAPACITY {
            state.forget();
        }
        state.len += 1;
        let reach = state
            .by_user
            .entry(Arc::from(user))
            .or_default()
            .entry(obj.clone())
            .or_insert_with(compute);
        answer(reach)
    }

    /// Forgets every entry (roles or permissions changed).
    pub fn forget(&mut self) {
        self.state
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .forget();
    }

    /// How many entries are remembered.
    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        lock(&self.state).len
    }
}

impl State {
    fn forget(&mut self) {
        self.by_user.clear();
        self.len = 0;
    }
}
