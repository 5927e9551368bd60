//! PropertyFilterSpec, PropertySpec, ObjectSpec, SelectionSpec and TraversalSpec read out of the
//! decoded request values into plain structs, with selection names resolved.

use std::collections::HashMap;
use std::sync::Arc;

use crate::fault::Fault;
use crate::schema::{Schema, TypeId};
use crate::value::{DataObject, MoRef, Value};

/// A filter spec: which objects, and which of their properties.
#[derive(Debug, Clone)]
pub struct FilterSpec {
    /// Property specs, by managed type.
    pub prop_set: Vec<PropertySpec>,
    /// Starting objects with their traversals.
    pub object_set: Vec<ObjectSpec>,
    /// Report missing start objects in results instead of failing.
    pub report_missing_objects: bool,
    /// Named traversal specs, for SelectionSpecs that refer by name.
    pub named: HashMap<String, Arc<TraversalSpec>>,
}

/// Which properties to read from objects of a type (and its subtypes).
#[derive(Debug, Clone)]
pub struct PropertySpec {
    /// The managed type.
    pub ty: TypeId,
    /// All properties.
    pub all: bool,
    /// Dotted property paths.
    pub paths: Vec<Arc<str>>,
}

/// A starting object.
#[derive(Debug, Clone)]
pub struct ObjectSpec {
    /// The object.
    pub obj: MoRef,
    /// Whether to leave it out of the results (only traverse from it).
    pub skip: bool,
    /// Where to go from it.
    pub select: Vec<Selection>,
}

/// A SelectionSpec: a reference to a named traversal, or a traversal itself.
#[derive(Debug, Clone)]
pub enum Selection {
    /// `SelectionSpec` with only a name.
    Named(String),
    /// A `TraversalSpec`.
    Traversal(Arc<TraversalSpec>),
}

/// A TraversalSpec: from objects of `ty`, follow the references in property `path`.
#[derive(Debug)]
pub struct TraversalSpec {
    /// Its name, if others refer to it.
    pub name: Option<String>,
    /// The managed type it applies to (subtypes included).
    pub ty: TypeId,
    /// The property holding the references to follow.
    pub path: String,
    /// Whether reached objects are left out of the results.
    pub skip: bool,
    /// Where to go from reached objects.
    pub select: Vec<Selection>,
}

/// Why a filter spec is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ParseSpecError {
    /// A type name that is not a managed type.
    #[error("{0} is not a managed object type")]
    UnknownType(String),
    /// A required member is missing.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// A SelectionSpec names a traversal that is not in the spec.
    #[error("no TraversalSpec named {0}")]
    UnknownSelection(String),
}

impl ParseSpecError {
    /// The vim25 fault for this error.
    pub fn to_fault(&self, schema: &Schema) -> Fault {
        match self {
            ParseSpecError::UnknownType(name) => Fault::invalid_argument(
                schema,
                "type",
                format!("{name} is not a managed object type"),
            ),
            ParseSpecError::Missing(what) => {
                Fault::invalid_argument(schema, what, format!("{what} is missing"))
            }
            ParseSpecError::UnknownSelection(name) => Fault::invalid_argument(
                schema,
                "selectSet",
                format!("no TraversalSpec named {name}"),
            ),
        }
    }
}

impl FilterSpec {
    /// Reads a `PropertyFilterSpec` value.
    pub fn parse(schema: &Schema, value: &Value) -> Result<FilterSpec, ParseSpecError> {
        let spec = value.as_data().ok_or(ParseSpecError::Missing("spec"))?;
        let mut named = HashMap::new();
        let prop_set = items(schema, spec, "propSet")
            .map(|p| parse_property_spec(schema, p))
            .collect::<Result<Vec<_>, _>>()?;
        let object_set = items(schema, spec, "objectSet")
            .map(|o| parse_object_spec(schema, o, &mut named))
            .collect::<Result<Vec<_>, _>>()?;
        let report_missing_objects = spec
            .get(schema, "reportMissingObjectsInResults")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let filter = FilterSpec {
            prop_set,
            object_set,
            report_missing_objects,
            named,
        };
        filter.check_names()?;
        Ok(filter)
    }

    /// Resolves a selection to its traversal.
    pub fn resolve<'a>(&'a self, selection: &'a Selection) -> Option<&'a Arc<TraversalSpec>> {
        match selection {
            Selection::Named(name) => self.named.get(name),
            Selection::Traversal(t) => Some(t),
        }
    }

    fn check_names(&self) -> Result<(), ParseSpecError> {
        fn check(
            spec: &FilterSpec,
            selections: &[Selection],
            depth: usize,
        ) -> Result<(), ParseSpecError> {
            for s in selections {
                match s {
                    Selection::Named(name) if !spec.named.contains_key(name) => {
                        return Err(ParseSpecError::UnknownSelection(name.clone()))
                    }
                    Selection::Traversal(t) if depth < 64 => check(spec, &t.select, depth + 1)?,
                    _ => {}
                }
            }
            Ok(())
        }
        for o in &self.object_set {
            check(self, &o.select, 0)?;
        }
        Ok(())
    }
}

fn items<'a>(
    schema: &Schema,
    object: &'a DataObject,
    field: &str,
) -> impl Iterator<Item = &'a DataObject> {
    object
        .get(schema, field)
        .map(Value::items)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_data)
}

fn managed_type(
    schema: &Schema,
    name: Option<&str>,
    what: &'static str,
) -> Result<TypeId, ParseSpecError> {
    let name = name.ok_or(ParseSpecError::Missing(what))?;
    schema
        .type_id(name)
        .filter(|t| schema.is_managed(*t))
        .ok_or_else(|| ParseSpecError::UnknownType(name.to_string()))
}

fn parse_property_spec(schema: &Schema, spec: &DataObject) -> Result<PropertySpec, ParseSpecError> {
    Ok(PropertySpec {
        ty: managed_type(
            schema,
            spec.get(schema, "type").and_then(Value::as_str),
            "type",
        )?,
        all: spec
            .get(schema, "all")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        paths: spec
            .get(schema, "pathSet")
            .map(Value::items)
            .unwrap_or_default()
            .iter()
            .filter_map(|p| match p {
                Value::String(path) | Value::Enum(_, path) => Some(path.clone()),
                _ => None,
            })
            .collect(),
    })
}

fn parse_object_spec(
    schema: &Schema,
    spec: &DataObject,
    named: &mut HashMap<String, Arc<TraversalSpec>>,
) -> Result<ObjectSpec, ParseSpecError> {
    Ok(ObjectSpec {
        obj: spec
            .get(schema, "obj")
            .and_then(Value::as_moref)
            .cloned()
            .ok_or(ParseSpecError::Missing("obj"))?,
        skip: spec
            .get(schema, "skip")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        select: parse_selections(schema, spec, named, 0)?,
    })
}

fn parse_selections(
    schema: &Schema,
    spec: &DataObject,
    named: &mut HashMap<String, Arc<TraversalSpec>>,
    depth: usize,
) -> Result<Vec<Selection>, ParseSpecError> {
    let traversal_type = schema.known_type("TraversalSpec");
    let mut out = Vec::new();
    for selection in items(schema, spec, "selectSet") {
        let name = selection
            .get(schema, "name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        if selection.ty != traversal_type || depth > 64 {
            out.push(Selection::Named(
                name.ok_or(ParseSpecError::Missing("name"))?,
            ));
            continue;
        }
        let traversal = Arc::new(TraversalSpec {
            name: name.clone(),
            ty: managed_type(
                schema,
                selection.get(schema, "type").and_then(Value::as_str),
                "type",
            )?,
            path: selection
                .get(schema, "path")
                .and_then(Value::as_str)
                .ok_or(ParseSpecError::Missing("path"))?
                .to_string(),
            skip: selection
                .get(schema, "skip")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            select: parse_selections(schema, selection, named, depth + 1)?,
        });
        if let Some(name) = name {
            named.insert(name, traversal.clone());
        }
        out.push(Selection::Traversal(traversal));
    }
    Ok(out)
}
