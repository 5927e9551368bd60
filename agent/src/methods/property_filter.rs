//! PropertyFilter: DestroyPropertyFilter (the filter leaves its collector and the inventory).

use super::{Call, Handler, MethodResult, MethodTable};
use crate::locks::lock;

/// PropertyFilter's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "PropertyFilter",
    methods: &[("DestroyPropertyFilter", Handler::Sync(destroy))],
};

fn destroy(call: &Call<'_>) -> MethodResult {
    let session = call.session()?;
    let filter = call.this().clone();
    for state in lock(&session.collectors).values_mut() {
        state.forget_filter(&filter);
    }
    call.host.mutate(|inv| inv.remove(&filter));
    Ok(None)
}
