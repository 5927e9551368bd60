//! The vim25 type schema: data, enum and managed types with their fields, properties and
//! methods, and the wire versions that introduced each. Loaded once from the generated data file
//! `api/schema/vim25.schema` (see `api/schema/generate.py`); never hand-typed.

mod load;
mod version;

use crate::fast_hash::FastMap;
use std::sync::OnceLock;

pub use load::LoadSchemaError;
pub use version::{ClientVersion, VersionIdx, Versions};

/// Index of a type in the schema's type table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TypeId(pub u32);

/// Index of a method in the schema's method table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MethodId(pub u32);

/// A declared type: a type, or an array of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeRef {
    /// The (element) type.
    pub ty: TypeId,
    /// Whether the declaration is an array of `ty`.
    pub array: bool,
}

/// The xsd/vmodl primitive types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Primitive {
    /// xsd:string.
    String,
    /// xsd:boolean.
    Boolean,
    /// xsd:byte.
    Byte,
    /// xsd:short.
    Short,
    /// xsd:int.
    Int,
    /// xsd:long.
    Long,
    /// xsd:float.
    Float,
    /// xsd:double.
    Double,
    /// xsd:dateTime.
    DateTime,
    /// xsd:base64Binary.
    Binary,
    /// xsd:anyType.
    AnyType,
    /// vmodl TypeName.
    TypeName,
    /// vmodl MethodName.
    MethodName,
    /// vmodl PropertyPath.
    PropertyPath,
    /// xsd:anyURI.
    AnyUri,
}

impl Primitive {
    /// Every primitive with its schema-file name, in type-table order.
    pub const ALL: [(Primitive, &'static str); 15] = [
        (Primitive::String, "string"),
        (Primitive::Boolean, "boolean"),
        (Primitive::Byte, "byte"),
        (Primitive::Short, "short"),
        (Primitive::Int, "int"),
        (Primitive::Long, "long"),
        (Primitive::Float, "float"),
        (Primitive::Double, "double"),
        (Primitive::DateTime, "dateTime"),
        (Primitive::Binary, "base64Binary"),
        (Primitive::AnyType, "anyType"),
        (Primitive::TypeName, "TypeName"),
        (Primitive::MethodName, "MethodName"),
        (Primitive::PropertyPath, "PropertyPath"),
        (Primitive::AnyUri, "anyURI"),
    ];

    /// The `xsi:type` a value of this primitive carries inside an Any.
    pub fn xsi_type(self) -> &'static str {
        match self {
            Primitive::String | Primitive::TypeName | Primitive::MethodName => "xsd:string",
            Primitive::PropertyPath => "xsd:string",
            Primitive::Boolean => "xsd:boolean",
            Primitive::Byte => "xsd:byte",
            Primitive::Short => "xsd:short",
            Primitive::Int => "xsd:int",
            Primitive::Long => "xsd:long",
            Primitive::Float => "xsd:float",
            Primitive::Double => "xsd:double",
            Primitive::DateTime => "xsd:dateTime",
            Primitive::Binary => "xsd:base64Binary",
            Primitive::AnyType => "xsd:anyType",
            Primitive::AnyUri => "xsd:anyURI",
        }
    }
}

/// A field of a data type, a property of a managed type or a method parameter.
#[derive(Debug)]
pub struct FieldDef {
    /// Wire (element) name.
    pub name: Box<str>,
    /// Declared type.
    pub ty: TypeRef,
    /// Version that introduced it.
    pub version: VersionIdx,
    /// Whether it may be unset.
    pub optional: bool,
    /// Privilege needed to read it (managed properties) or on the passed object (parameters).
    pub privilege: Option<Box<str>>,
}

/// What kind of type a [`TypeDef`] is, with its kind-specific members.
#[derive(Debug)]
pub enum TypeKind {
    /// A primitive (xsd) type.
    Primitive(Primitive),
    /// The pseudo type `ManagedObjectReference`.
    MoRef,
    /// A data object type; `fields` include inherited ones, parents' first.
    Data {
        /// Its fields.
        fields: Vec<FieldDef>,
    },
    /// An enumeration.
    Enum {
        /// Its values.
        values: Vec<Box<str>>,
    },
    /// A managed object type; `properties` include inherited ones, `methods` only its own.
    Managed {
        /// Its properties.
        properties: Vec<FieldDef>,
        /// Its methods.
        methods: Vec<MethodId>,
    },
}

/// One type of the schema.
#[derive(Debug)]
pub struct TypeDef {
    /// WSDL name.
    pub name: Box<str>,
    /// Parent type (data and managed types).
    pub parent: Option<TypeId>,
    /// Version that introduced it.
    pub version: VersionIdx,
    /// Kind and members.
    pub kind: TypeKind,
}

/// One method of a managed type.
#[derive(Debug)]
pub struct MethodDef {
    /// WSDL name (the request element name).
    pub name: Box<str>,
    /// The managed type declaring it.
    pub owner: TypeId,
    /// Version that introduced it.
    pub version: VersionIdx,
    /// Parameters after `_this`, in order.
    pub params: Vec<FieldDef>,
    /// Result type; `None` for void.
    pub result: Option<TypeRef>,
    /// Privilege the caller needs on `_this` (`None` when it depends on the call, as for Fetch).
    pub privilege: Option<Box<str>>,
    /// Faults the method declares.
    pub faults: Vec<TypeId>,
}

/// The whole vim25 schema with pre-built name lookups.
#[derive(Debug)]
pub struct Schema {
    types: Vec<TypeDef>,
    methods: Vec<MethodDef>,
    type_by_name: FastMap<Box<str>, TypeId>,
    method_by_name: FastMap<Box<str>, MethodId>,
    versions: Versions,
    well_known: WellKnown,
}

/// Types the codec and the collector refer to directly, resolved once at load.
#[derive(Debug, Clone, Copy)]
pub struct WellKnown {
    /// `anyType`.
    pub any: TypeId,
    /// `string`.
    pub string: TypeId,
    /// `ManagedObjectReference`.
    pub moref: TypeId,
    /// `MethodFault`.
    pub method_fault: TypeId,
    /// `LocalizedMethodFault`.
    pub localized_method_fault: TypeId,
    /// `DataObject`.
    pub data_object: TypeId,
    /// `ManagedObject`.
    pub managed_object: TypeId,
}

static VIM25: OnceLock<Schema> = OnceLock::new();

/// The embedded vim25 schema, loaded on first use.
pub fn vim25() -> &'static Schema {
    VIM25.get_or_init(|| {
        Schema::parse(include_str!("../../schema/vim25.schema"))
            .expect("the embedded vim25 schema is well-formed (checked by unit tests)")
    })
}

impl Schema {
    /// Parses a schema file in the generator's line format.
    pub fn parse(text: &str) -> Result<Schema, LoadSchemaError> {
        load::parse(text)
    }

    /// Type definition by id.
    pub fn ty(&self, id: TypeId) -> &TypeDef {
        &self.types[id.0 as usize]
    }

    /// Type id by WSDL name.
    pub fn type_id(&self, name: &str) -> Option<TypeId> {
        self.type_by_name.get(name).copied()
    }

    /// Type id by WSDL name, for names our own code uses; panics on a name the schema lacks.
    pub fn known_type(&self, name: &str) -> TypeId {
        self.type_id(name)
            .unwrap_or_else(|| panic!("type {name} is not in the vim25 schema"))
    }

    /// Method definition by id.
    pub fn method(&self, id: MethodId) -> &MethodDef {
        &self.methods[id.0 as usize]
    }

    /// Method id by WSDL name.
    pub fn method_id(&self, name: &str) -> Option<MethodId> {
        self.method_by_name.get(name).copied()
    }

    /// Every method.
    pub fn methods(&self) -> impl Iterator<Item = &MethodDef> {
        self.methods.iter()
    }

    /// Every type with its id.
    pub fn types(&self) -> impl Iterator<Item = (TypeId, &TypeDef)> {
        self.types
            .iter()
            .enumerate()
            .map(|(i, t)| (TypeId(i as u32), t))
    }

    /// The version table.
    pub fn versions(&self) -> &Versions {
        &self.versions
    }

    /// Types referred to directly by the codec.
    pub fn well_known(&self) -> WellKnown {
        self.well_known
    }

    /// Whether `ty` is `ancestor` or derives from it. `anyType` is everyone's ancestor.
    pub fn is_a(&self, ty: TypeId, ancestor: TypeId) -> bool {
        if ancestor == self.well_known.any {
            return true;
        }
        let mut current = Some(ty);
        while let Some(id) = current {
            if id == ancestor {
                return true;
            }
            current = self.ty(id).parent;
        }
        false
    }

    /// Fields of a data type (inherited first); empty for other kinds.
    pub fn fields(&self, ty: TypeId) -> &[FieldDef] {
        match &self.ty(ty).kind {
            TypeKind::Data { fields } => fields,
            TypeKind::Managed { properties, .. } => properties,
            _ => &[],
        }
    }

    /// Position of a field or property by name.
    pub fn field_index(&self, ty: TypeId, name: &str) -> Option<usize> {
        self.fields(ty).iter().position(|f| &*f.name == name)
    }

    /// Whether the type is a managed object type.
    pub fn is_managed(&self, ty: TypeId) -> bool {
        matches!(self.ty(ty).kind, TypeKind::Managed { .. })
    }

    /// Finds a method by name on a managed type or its ancestors.
    pub fn method_of(&self, ty: TypeId, name: &str) -> Option<MethodId> {
        let id = self.method_id(name)?;
        self.is_a(ty, self.method(id).owner).then_some(id)
    }

    /// The nearest type at or above `ty` that a client of `version` knows.
    pub fn known_ancestor(&self, ty: TypeId, version: ClientVersion) -> TypeId {
        let mut id = ty;
        loop {
            let def = self.ty(id);
            if self.versions.knows(version, def.version) {
                return id;
            }
            match def.parent {
                Some(parent) => id = parent,
                None => return id,
            }
        }
    }
}

#[cfg(test)]
mod tests;
