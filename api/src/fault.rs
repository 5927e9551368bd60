//! vim25 faults as values: a MethodFault-derived data object plus the human-readable message
//! that becomes `faultstring`, with constructors for the faults the front door raises itself.

use crate::schema::Schema;
use crate::value::{DataObject, MoRef, Value};

/// A fault to return to the client (SOAP fault, or `TaskInfo.error`).
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// The fault object; its type derives from MethodFault.
    pub data: DataObject,
    /// Readable message (`faultstring`, `LocalizedMethodFault.localizedMessage`).
    pub message: String,
}

impl Fault {
    /// A fault of the named type with every field unset.
    pub fn new(schema: &Schema, ty: &str, message: impl Into<String>) -> Fault {
        Fault {
            data: DataObject::of(schema, ty),
            message: message.into(),
        }
    }

    /// Sets a field of the fault object.
    pub fn with(mut self, schema: &Schema, field: &str, value: impl Into<Value>) -> Fault {
        self.data.set(schema, field, value);
        self
    }

    /// The fault's WSDL type name.
    pub fn type_name<'s>(&self, schema: &'s Schema) -> &'s str {
        &schema.ty(self.data.ty).name
    }

    /// `NotAuthenticated`: a call on `object` needing `privilege` without a session.
    pub fn not_authenticated(schema: &Schema, object: &MoRef, privilege: &str) -> Fault {
        Fault::new(
            schema,
            "NotAuthenticated",
            "The session is not authenticated.",
        )
        .with(schema, "object", object.clone())
        .with(schema, "privilegeId", privilege)
    }

    /// `NoPermission`: the session's user lacks `privilege` on `object`.
    pub fn no_permission(schema: &Schema, object: &MoRef, privilege: &str) -> Fault {
        Fault::new(
            schema,
            "NoPermission",
            format!("Permission to perform this operation was denied ({privilege})."),
        )
        .with(schema, "object", object.clone())
        .with(schema, "privilegeId", privilege)
    }

    /// `InvalidLogin`: wrong user name or password.
    pub fn invalid_login(schema: &Schema) -> Fault {
        Fault::new(
            schema,
            "InvalidLogin",
            "Cannot complete login due to an incorrect user name or password.",
        )
    }

    /// `InvalidArgument` naming the offending parameter or property.
    pub fn invalid_argument(schema: &Schema, property: &str, why: impl Into<String>) -> Fault {
        Fault::new(schema, "InvalidArgument", why).with(schema, "invalidProperty", property)
    }

    /// `InvalidRequest`: the request could not be understood.
    pub fn invalid_request(schema: &Schema, why: impl Into<String>) -> Fault {
        Fault::new(schema, "InvalidRequest", why)
    }

    /// `MethodNotFound`: `receiver` has no method `method`.
    pub fn method_not_found(schema: &Schema, receiver: &MoRef, method: &str) -> Fault {
        Fault::new(
            schema,
            "MethodNotFound",
            format!("{receiver} does not implement: {method}"),
        )
        .with(schema, "receiver", receiver.clone())
        .with(schema, "method", method)
    }

    /// `ManagedObjectNotFound`: `object` does not exist (any more).
    pub fn managed_object_not_found(schema: &Schema, object: &MoRef) -> Fault {
        Fault::new(
            schema,
            "ManagedObjectNotFound",
            format!(
                "The object '{}' has already been deleted or has not been completely created",
                object
            ),
        )
        .with(schema, "obj", object.clone())
    }

    /// `InvalidProperty`: a property path that the type does not have.
    pub fn invalid_property(schema: &Schema, name: &str) -> Fault {
        Fault::new(
            schema,
            "InvalidProperty",
            format!("Invalid property: {name}"),
        )
        .with(schema, "name", name)
    }

    /// `NotSupported`: the operation is not supported on this host.
    pub fn not_supported(schema: &Schema, why: impl Into<String>) -> Fault {
        Fault::new(schema, "NotSupported", why)
    }

    /// `NotFound`: a named thing (role, key, token) does not exist.
    pub fn not_found(schema: &Schema, why: impl Into<String>) -> Fault {
        Fault::new(schema, "NotFound", why)
    }

    /// `SystemError`: an internal failure, with its reason.
    pub fn system_error(schema: &Schema, reason: impl Into<String>) -> Fault {
        let reason = reason.into();
        Fault::new(schema, "SystemError", reason.clone()).with(schema, "reason", reason)
    }

    /// The fault as a `LocalizedMethodFault` value (for `TaskInfo.error`, `MissingProperty`).
    pub fn localized(&self, schema: &Schema) -> DataObject {
        DataObject::of(schema, "LocalizedMethodFault")
            .with(schema, "fault", self.data.clone())
            .with(schema, "localizedMessage", self.message.as_str())
    }
}
