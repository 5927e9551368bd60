//! [`VmEdit`]: a VM's state locked for a change whose end publishes the VM's properties, so
//! that changing the state and telling clients are one step.

use std::ops::{Deref, DerefMut};
use std::sync::MutexGuard;

use super::publish;
use crate::host::Host;
use crate::vm::{Vm, VmState};

/// A VM's locked state; when dropped it publishes the VM's properties if the state was
/// borrowed mutably (read-only uses, such as checks that refuse, publish nothing).
pub struct VmEdit<'a> {
    host: &'a Host,
    vm: &'a Vm,
    state: MutexGuard<'a, VmState>,
    changed: bool,
}

impl<'a> VmEdit<'a> {
    pub(in crate::vm) fn new(host: &'a Host, vm: &'a Vm, state: MutexGuard<'a, VmState>) -> Self {
        VmEdit {
            host,
            vm,
            state,
            changed: false,
        }
    }

    /// Ends the edit without publishing: what changed is nothing clients see (tools
    /// bookkeeping, a heartbeat colour that stayed).
    pub fn unpublished(mut self) {
        self.changed = false;
    }
}

impl Deref for VmEdit<'_> {
    type Target = VmState;

    fn deref(&self) -> &VmState {
        &self.state
    }
}

impl DerefMut for VmEdit<'_> {
    fn deref_mut(&mut self) -> &mut VmState {
        self.changed = true;
        &mut self.state
    }
}

impl Drop for VmEdit<'_> {
    fn drop(&mut self) {
        if self.changed {
            publish(self.host, self.vm, &self.state);
        }
    }
}
