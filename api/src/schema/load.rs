//! Reads the generator's tab-separated schema file into a [`Schema`] with resolved type ids,
//! flattened inherited fields and name lookups.

use crate::fast_hash::FastMap;

use super::version::{VersionDef, VersionIdx, Versions};
use super::{
    FieldDef, MethodDef, MethodId, Primitive, Schema, TypeDef, TypeId, TypeKind, TypeRef, WellKnown,
};

/// Why a schema file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadSchemaError {
    /// A line does not have the expected shape.
    #[error("schema line {line}: {problem}")]
    BadLine {
        /// The line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// A type name is referenced but never defined.
    #[error("schema references unknown type {0}")]
    UnknownType(String),
    /// More versions than the 64 a known-set bitmask holds.
    #[error("schema has {0} versions; at most 64 are supported")]
    TooManyVersions(usize),
}

/// A type line as read, before names are resolved.
struct RawType<'a> {
    name: &'a str,
    parent: Option<&'a str>,
    version: VersionIdx,
    kind: RawKind<'a>,
}

enum RawKind<'a> {
    Data(Vec<RawField<'a>>),
    Enum(Vec<&'a str>),
    Managed(Vec<RawField<'a>>, Vec<RawMethod<'a>>),
}

struct RawField<'a> {
    name: &'a str,
    ty: &'a str,
    version: VersionIdx,
    flags: &'a str,
    privilege: Option<&'a str>,
}

struct RawMethod<'a> {
    name: &'a str,
    version: VersionIdx,
    result: &'a str,
    privilege: Option<&'a str>,
    faults: Vec<&'a str>,
    params: Vec<RawField<'a>>,
}

pub(super) fn parse(text: &str) -> Result<Schema, LoadSchemaError> {
    let (versions, raw) = read_lines(text)?;
    let mut type_by_name: FastMap<Box<str>, TypeId> = FastMap::default();
    let mut types: Vec<TypeDef> = Vec::new();
    for (primitive, name) in Primitive::ALL {
        type_by_name.insert(name.into(), TypeId(types.len() as u32));
        types.push(TypeDef {
            name: name.into(),
            parent: None,
            version: VersionIdx(0),
            kind: TypeKind::Primitive(primitive),
        });
    }
    type_by_name.insert("ManagedObjectReference".into(), TypeId(types.len() as u32));
    types.push(TypeDef {
        name: "ManagedObjectReference".into(),
        parent: None,
        version: VersionIdx(0),
        kind: TypeKind::MoRef,
    });
    let first_declared = types.len();
    for (i, r) in raw.iter().enumerate() {
        type_by_name.insert(r.name.into(), TypeId((first_declared + i) as u32));
    }
    let resolve = |name: &str| -> Result<TypeRef, LoadSchemaError> {
        let (base, array) = match name.strip_suffix("[]") {
            Some(base) => (base, true),
            None => (name, false),
        };
        let ty = *type_by_name
            .get(base)
            .ok_or_else(|| LoadSchemaError::UnknownType(base.to_string()))?;
        Ok(TypeRef { ty, array })
    };
    let field = |f: &RawField| -> Result<FieldDef, LoadSchemaError> {
        Ok(FieldDef {
            name: f.name.into(),
            ty: resolve(f.ty)?,
            version: f.version,
            optional: f.flags.contains('o'),
            privilege: f.privilege.map(Into::into),
        })
    };

    let mut methods: Vec<MethodDef> = Vec::new();
    let mut method_by_name = FastMap::default();
    for (i, r) in raw.iter().enumerate() {
        let id = TypeId((first_declared + i) as u32);
        let parent = r.parent.map(|p| resolve(p).map(|t| t.ty)).transpose()?;
        let kind = match &r.kind {
            RawKind::Data(fields) => TypeKind::Data {
                fields: fields.iter().map(field).collect::<Result<_, _>>()?,
            },
            RawKind::Enum(values) => TypeKind::Enum {
                values: values.iter().map(|v| (*v).into()).collect(),
            },
            RawKind::Managed(props, raw_methods) => {
                let mut ids = Vec::new();
                for m in raw_methods {
                    let method_id = MethodId(methods.len() as u32);
                    methods.push(MethodDef {
                        name: m.name.into(),
                        owner: id,
                        version: m.version,
                        params: m.params.iter().map(field).collect::<Result<_, _>>()?,
                        result: if m.result == "void" {
                            None
                        } else {
                            Some(resolve(m.result)?)
                        },
                        privilege: m.privilege.map(Into::into),
                        faults: m
                            .faults
                            .iter()
                            .map(|f| resolve(f).map(|t| t.ty))
                            .collect::<Result<_, _>>()?,
                    });
                    method_by_name.insert(m.name.into(), method_id);
                    ids.push(method_id);
                }
                TypeKind::Managed {
                    properties: props.iter().map(field).collect::<Result<_, _>>()?,
                    methods: ids,
                }
            }
        };
        types.push(TypeDef {
            name: r.name.into(),
            parent,
            version: r.version,
            kind,
        });
    }
    flatten_inherited_members(&mut types);
    let well_known = |name: &str| {
        type_by_name
            .get(name)
            .copied()
            .ok_or_else(|| LoadSchemaError::UnknownType(name.into()))
    };
    let well_known = WellKnown {
        any: well_known("anyType")?,
        string: well_known("string")?,
        moref: well_known("ManagedObjectReference")?,
        method_fault: well_known("MethodFault")?,
        localized_method_fault: well_known("LocalizedMethodFault")?,
        data_object: well_known("DataObject")?,
        managed_object: well_known("ManagedObject")?,
    };
    Ok(Schema {
        types,
        methods,
        type_by_name,
        method_by_name,
        versions,
        well_known,
    })
}

/// Prepends every type's inherited fields/properties, parents first.
fn flatten_inherited_members(types: &mut [TypeDef]) {
    let mut done = vec![false; types.len()];
    for i in 0..types.len() {
        flatten_one(types, &mut done, i);
    }
}

fn flatten_one(types: &mut [TypeDef], done: &mut [bool], i: usize) {
    if done[i] {
        return;
    }
    done[i] = true;
    let Some(parent) = types[i].parent else {
        return;
    };
    let parent = parent.0 as usize;
    flatten_one(types, done, parent);
    let inherited: Vec<FieldDef> = match &types[parent].kind {
        TypeKind::Data { fields } => fields.iter().map(copy_field).collect(),
        TypeKind::Managed { properties, .. } => properties.iter().map(copy_field).collect(),
        _ => return,
    };
    match &mut types[i].kind {
        TypeKind::Data { fields }
        | TypeKind::Managed {
            properties: fields, ..
        } => {
            let own = std::mem::take(fields);
            *fields = inherited;
            fields.extend(own);
        }
        _ => {}
    }
}

fn copy_field(f: &FieldDef) -> FieldDef {
    FieldDef {
        name: f.name.clone(),
        ty: f.ty,
        version: f.version,
        optional: f.optional,
        privilege: f.privilege.clone(),
    }
}

/// `None` for the schema file's "-" placeholder.
fn opt(s: &str) -> Option<&str> {
    (s != "-").then_some(s)
}

fn read_lines(text: &str) -> Result<(Versions, Vec<RawType<'_>>), LoadSchemaError> {
    let mut versions = Versions::default();
    let mut raw: Vec<RawType> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |problem: &str| LoadSchemaError::BadLine {
            line: n + 1,
            problem: problem.to_string(),
        };
        let cols: Vec<&str> = line.split('\t').collect();
        let col = |i: usize| cols.get(i).copied().ok_or_else(|| bad("too few columns"));
        let version = |i: usize| -> Result<VersionIdx, LoadSchemaError> {
            col(i)?
                .parse::<u8>()
                .map(VersionIdx)
                .map_err(|_| bad("bad version index"))
        };
        let last_type = |raw: &mut Vec<RawType<'_>>| raw.len().checked_sub(1);
        match cols[0] {
            "V" => {
                let mut known = 0u64;
                for parent in col(4)?.split(',') {
                    let idx: u32 = parent.parse().map_err(|_| bad("bad version parent"))?;
                    if idx >= 64 {
                        return Err(LoadSchemaError::TooManyVersions(idx as usize + 1));
                    }
                    known |= 1 << idx;
                }
                versions.defs.push(VersionDef {
                    wire_id: opt(col(3)?).map(Into::into),
                    known,
                });
            }
            "D" => raw.push(RawType {
                name: col(1)?,
                parent: opt(col(2)?),
                version: version(3)?,
                kind: RawKind::Data(Vec::new()),
            }),
            "E" => raw.push(RawType {
                name: col(1)?,
                parent: None,
                version: version(2)?,
                kind: RawKind::Enum(col(3)?.split(',').filter(|v| !v.is_empty()).collect()),
            }),
            "M" => raw.push(RawType {
                name: col(1)?,
                parent: opt(col(2)?),
                version: version(3)?,
                kind: RawKind::Managed(Vec::new(), Vec::new()),
            }),
            "X" => {
                let i = last_type(&mut raw).ok_or_else(|| bad("method before any type"))?;
                let RawKind::Managed(_, methods) = &mut raw[i].kind else {
                    return Err(bad("method outside a managed type"));
                };
                methods.push(RawMethod {
                    name: col(1)?,
                    version: version(2)?,
                    result: col(3)?,
                    privilege: opt(col(5)?),
                    faults: opt(col(6)?)
                        .map(|f| f.split(',').collect())
                        .unwrap_or_default(),
                    params: Vec::new(),
                });
            }
            "F" | "P" | "A" => {
                let i = last_type(&mut raw).ok_or_else(|| bad("member before any type"))?;
                let member = RawField {
                    name: col(1)?,
                    ty: col(2)?,
                    version: version(3)?,
                    flags: col(4)?,
                    privilege: if cols[0] == "P" { opt(col(5)?) } else { None },
                };
                match (cols[0], &mut raw[i].kind) {
                    ("F", RawKind::Data(fields)) => fields.push(member),
                    ("P", RawKind::Managed(props, _)) => props.push(member),
                    ("A", RawKind::Managed(_, methods)) => {
                        let method = methods
                            .last_mut()
                            .ok_or_else(|| bad("parameter before any method"))?;
                        method.params.push(member);
                    }
                    _ => return Err(bad("member does not fit the preceding type")),
                }
            }
            _ => return Err(bad("unknown line kind")),
        }
    }
    if versions.defs.len() > 64 {
        return Err(LoadSchemaError::TooManyVersions(versions.defs.len()));
    }
    Ok((versions, raw))
}
