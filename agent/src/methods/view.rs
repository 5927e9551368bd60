//! View: DestroyView, for every kind of view.

use super::{Call, Handler, MethodResult, MethodTable};

/// View's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "View",
    methods: &[("DestroyView", Handler::Sync(destroy))],
};

fn destroy(call: &Call<'_>) -> MethodResult {
    call.host.mutate(|inv| inv.remove(call.this()));
    Ok(None)
}
