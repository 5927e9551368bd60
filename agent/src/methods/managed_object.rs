//! ManagedObject: `Fetch`, which every managed object serves.

use vireo_api::collector::retrieve::{check_path, read_path};

use super::{Call, Handler, MethodResult, MethodTable};

/// ManagedObject's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "ManagedObject",
    methods: &[("Fetch", Handler::Sync(fetch))],
};

/// `Fetch(prop)`: one property (dotted paths allowed) of `_this`, unset → empty response.
fn fetch(call: &Call<'_>) -> MethodResult {
    let schema = call.schema;
    let prop = call.str_arg("prop")?;
    let ty = schema.known_type(&call.this().ty);
    check_path(schema, ty, prop)?;
    let inv = call.host.inventory();
    read_path(schema, &call.objects(&inv), call.this(), prop)
}
