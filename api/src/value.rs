//! The generic value tree the codec reads requests into and writes responses from: primitives,
//! enums, managed object references, data objects (fields in schema order) and arrays.

use std::sync::Arc;

use crate::schema::{Schema, TypeId};

/// A reference to a managed object: its type name and id (`<x type="HostSystem">ha-host</x>`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MoRef {
    /// WSDL name of the managed type.
    pub ty: Arc<str>,
    /// The object's id.
    pub id: Arc<str>,
}

impl MoRef {
    /// A reference from its parts.
    pub fn new(ty: impl Into<Arc<str>>, id: impl Into<Arc<str>>) -> MoRef {
        MoRef {
            ty: ty.into(),
            id: id.into(),
        }
    }
}

impl std::fmt::Display for MoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.ty, self.id)
    }
}

/// One vim25 value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// xsd:boolean.
    Bool(bool),
    /// xsd:byte.
    Byte(i8),
    /// xsd:short.
    Short(i16),
    /// xsd:int.
    Int(i32),
    /// xsd:long.
    Long(i64),
    /// xsd:float.
    Float(f32),
    /// xsd:double.
    Double(f64),
    /// xsd:string (also TypeName, MethodName, PropertyPath, anyURI).
    String(Arc<str>),
    /// xsd:dateTime as microseconds since the Unix epoch, UTC.
    DateTime(i64),
    /// xsd:base64Binary.
    Binary(Arc<[u8]>),
    /// A value of an enum type.
    Enum(TypeId, Arc<str>),
    /// A managed object reference.
    MoRef(MoRef),
    /// A data object.
    Data(Box<DataObject>),
    /// An array whose elements are of `TypeId` (or its subtypes).
    Array(TypeId, Vec<Value>),
}

impl Value {
    /// The string inside a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) | Value::Enum(_, s) => Some(s),
            _ => None,
        }
    }

    /// The boolean inside a boolean value.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// Any integer value widened to i64.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Byte(v) => Some(*v as i64),
            Value::Short(v) => Some(*v as i64),
            Value::Int(v) => Some(*v as i64),
            Value::Long(v) => Some(*v),
            _ => None,
        }
    }

    /// The reference inside a MoRef value.
    pub fn as_moref(&self) -> Option<&MoRef> {
        match self {
            Value::MoRef(m) => Some(m),
            _ => None,
        }
    }

    /// The data object inside a data value.
    pub fn as_data(&self) -> Option<&DataObject> {
        match self {
            Value::Data(d) => Some(d),
            _ => None,
        }
    }

    /// Roughly how many bytes the value holds beyond its own size (strings, binaries, nested
    /// objects and arrays), for bounding stores of values.
    pub fn heap_size(&self) -> usize {
        match self {
            Value::String(s) | Value::Enum(_, s) => s.len(),
            Value::Binary(b) => b.len(),
            Value::MoRef(m) => m.ty.len() + m.id.len(),
            Value::Data(d) => std::mem::size_of::<DataObject>() + d.heap_size(),
            Value::Array(_, items) => items
                .iter()
                .map(|v| std::mem::size_of::<Value>() + v.heap_size())
                .sum(),
            _ => 0,
        }
    }

    /// The elements of an array value; a single value reads as a one-element slice.
    pub fn items(&self) -> &[Value] {
        match self {
            Value::Array(_, items) => items,
            single => std::slice::from_ref(single),
        }
    }

    /// A string value.
    pub fn string(s: impl Into<Arc<str>>) -> Value {
        Value::String(s.into())
    }

    /// A value of the enum type named `ty`; panics if our own code names an unknown type.
    pub fn enumeration(schema: &Schema, ty: &str, value: &str) -> Value {
        Value::Enum(schema.known_type(ty), value.into())
    }

    /// An array of strings.
    pub fn strings<S: AsRef<str>>(schema: &Schema, items: impl IntoIterator<Item = S>) -> Value {
        Value::Array(
            schema.well_known().string,
            items
                .into_iter()
                .map(|s| Value::string(s.as_ref()))
                .collect(),
        )
    }

    /// An array of references.
    pub fn refs<'a>(schema: &Schema, items: impl IntoIterator<Item = &'a MoRef>) -> Value {
        Value::Array(
            schema.well_known().moref,
            items.into_iter().cloned().map(Value::MoRef).collect(),
        )
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.into())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s.into())
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Value {
        Value::Int(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Long(v)
    }
}

impl From<MoRef> for Value {
    fn from(m: MoRef) -> Value {
        Value::MoRef(m)
    }
}

impl From<DataObject> for Value {
    fn from(d: DataObject) -> Value {
        Value::Data(Box::new(d))
    }
}

/// An instance of a data object type: one slot per schema field (inherited first).
#[derive(Clone, Debug, PartialEq)]
pub struct DataObject {
    /// Its (most derived) type.
    pub ty: TypeId,
    /// Field values by schema position; `None` is unset.
    pub fields: Vec<Option<Value>>,
}

impl DataObject {
    /// An object of `ty` with every field unset.
    pub fn new(schema: &Schema, ty: TypeId) -> DataObject {
        DataObject {
            ty,
            fields: vec![None; schema.fields(ty).len()],
        }
    }

    /// An object of the type named `ty`; panics if our own code names a type the schema lacks.
    pub fn of(schema: &Schema, ty: &str) -> DataObject {
        DataObject::new(schema, schema.known_type(ty))
    }

    /// Sets a field by name; panics if our own code names a field the type lacks.
    pub fn set(&mut self, schema: &Schema, field: &str, value: impl Into<Value>) -> &mut Self {
        let i = schema
            .field_index(self.ty, field)
            .unwrap_or_else(|| panic!("{} has no field {field}", schema.ty(self.ty).name));
        self.fields[i] = Some(value.into());
        self
    }

    /// Builder form of [`DataObject::set`].
    pub fn with(mut self, schema: &Schema, field: &str, value: impl Into<Value>) -> Self {
        self.set(schema, field, value);
        self
    }

    /// Roughly how many bytes the object's fields hold (see [`Value::heap_size`]).
    pub fn heap_size(&self) -> usize {
        self.fields
            .iter()
            .map(|f| std::mem::size_of::<Option<Value>>() + f.as_ref().map_or(0, Value::heap_size))
            .sum()
    }

    /// A field's value by name, if set. The name must be a field of the object's type: debug
    /// builds (and so tests) panic on any other, since a misspelt name would read as unset.
    pub fn get(&self, schema: &Schema, field: &str) -> Option<&Value> {
        let index = schema.field_index(self.ty, field);
        debug_assert!(
            index.is_some(),
            "{} has no field {field}",
            schema.ty(self.ty).name
        );
        self.fields[index?].as_ref()
    }

    /// A field's value by a name that may not be a field of the object's type (a client's
    /// property path, or a probe across subtypes): `None` then.
    pub fn lookup(&self, schema: &Schema, field: &str) -> Option<&Value> {
        schema
            .field_index(self.ty, field)
            .and_then(|i| self.fields[i].as_ref())
    }
}
