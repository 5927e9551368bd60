//! RetrieveProperties: walks a filter spec's objects and traversals over an [`ObjectSource`],
//! then reads each selected object's requested properties by dotted path (unset ones omitted,
//! per-property faults reported as missing).

use std::borrow::Cow;
use std::sync::Arc;

use super::spec::{FilterSpec, Selection, TraversalSpec};
use crate::fast_hash::FastSet;
use crate::fault::Fault;
use crate::schema::{ClientVersion, Schema, TypeId, TypeKind, TypeRef};
use crate::value::{DataObject, MoRef, Value};

/// Where the collector reads objects from.
pub trait ObjectSource {
    /// The managed type of an existing object, `None` if there is no such object.
    fn type_of(&self, obj: &MoRef) -> Option<TypeId>;
    /// A top-level property: `Ok(None)` when unset, `Err` for a per-property fault. Stored
    /// values are lent, not copied, so reading one field of a large property stays cheap.
    fn property(&self, obj: &MoRef, name: &str) -> Result<Option<Cow<'_, Value>>, Fault>;
}

/// One property read: its path and value.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyValue {
    /// The dotted path as requested.
    pub path: Arc<str>,
    /// Its value.
    pub value: Value,
}

/// What was read from one object.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectContent {
    /// The object.
    pub obj: MoRef,
    /// Set properties, in request order.
    pub props: Vec<PropertyValue>,
    /// Properties that could not be read, with why.
    pub missing: Vec<(Arc<str>, Fault)>,
}

impl ObjectContent {
    /// As an `ObjectContent` data object (the values move, not copied).
    pub fn into_value(self, schema: &Schema) -> DataObject {
        let mut content = DataObject::of(schema, "ObjectContent").with(schema, "obj", self.obj);
        if !self.props.is_empty() {
            let props = self
                .props
                .into_iter()
                .map(|p| dynamic_property(schema, p.path, p.value).into())
                .collect();
            content.set(
                schema,
                "propSet",
                Value::Array(schema.known_type("DynamicProperty"), props),
            );
        }
        if !self.missing.is_empty() {
            content.set(
                schema,
                "missingSet",
                missing_properties(schema, &self.missing),
            );
        }
        content
    }
}

/// A `DynamicProperty` (name, val).
fn dynamic_property(schema: &Schema, path: Arc<str>, value: Value) -> DataObject {
    DataObject::of(schema, "DynamicProperty")
        .with(schema, "name", Value::String(path))
        .with(schema, "val", value)
}

/// `MissingProperty[]` for (path, fault) pairs.
pub(crate) fn missing_properties(schema: &Schema, missing: &[(Arc<str>, Fault)]) -> Value {
    let items = missing
        .iter()
        .map(|(path, fault)| {
            DataObject::of(schema, "MissingProperty")
                .with(schema, "path", &**path)
                .with(schema, "fault", fault.localized(schema))
                .into()
        })
        .collect();
    Value::Array(schema.known_type("MissingProperty"), items)
}

/// Runs one filter spec: the objects it selects, each with its requested properties.
/// Objects no PropertySpec applies to are left out. `version` bounds what `all` returns.
pub fn retrieve(
    schema: &Schema,
    source: &dyn ObjectSource,
    spec: &FilterSpec,
    version: ClientVersion,
) -> Result<Vec<ObjectContent>, Fault> {
    let objects = select_objects(schema, source, spec)?;
    let mut out = Vec::with_capacity(objects.len());
    for (obj, ty) in objects {
        let paths = requested_paths(schema, spec, ty, version)?;
        let Some(paths) = paths else { continue };
        let mut content = ObjectContent {
            obj,
            props: Vec::with_capacity(paths.len()),
            missing: Vec::new(),
        };
        for path in paths {
            match read_path(schema, source, &content.obj, &path) {
                Ok(Some(value)) => content.props.push(PropertyValue { path, value }),
                Ok(None) => {}
                Err(fault) => content.missing.push((path, fault)),
            }
        }
        out.push(content);
    }
    Ok(out)
}

/// The objects a spec selects, in discovery order, without duplicates.
fn select_objects(
    schema: &Schema,
    source: &dyn ObjectSource,
    spec: &FilterSpec,
) -> Result<Vec<(MoRef, TypeId)>, Fault> {
    let mut walk = Walk {
        schema,
        source,
        spec,
        selected: Vec::new(),
        seen: FastSet::default(),
        followed: FastSet::default(),
    };
    for object_spec in &spec.object_set {
        let Some(ty) = source.type_of(&object_spec.obj) else {
            if spec.report_missing_objects {
                continue;
            }
            return Err(Fault::managed_object_not_found(schema, &object_spec.obj));
        };
        walk.visit(
            &object_spec.obj,
            ty,
            object_spec.skip,
            &object_spec.select,
            0,
        )?;
    }
    Ok(walk.selected)
}

struct Walk<'a> {
    schema: &'a Schema,
    source: &'a dyn ObjectSource,
    spec: &'a FilterSpec,
    selected: Vec<(MoRef, TypeId)>,
    seen: FastSet<MoRef>,
    /// (object, traversal) pairs already followed, so recursive specs terminate.
    followed: FastSet<(MoRef, *const TraversalSpec)>,
}

impl Walk<'_> {
    fn visit(
        &mut self,
        obj: &MoRef,
        ty: TypeId,
        skip: bool,
        select: &[Selection],
        depth: usize,
    ) -> Result<(), Fault> {
        if !skip && self.seen.insert(obj.clone()) {
            self.selected.push((obj.clone(), ty));
        }
        if depth > 256 {
            return Ok(());
        }
        for selection in select {
            let Some(traversal) = self.spec.resolve(selection) else {
                continue;
            };
            let traversal = traversal.clone();
            if !self.schema.is_a(ty, traversal.ty)
                || !self.followed.insert((obj.clone(), Arc::as_ptr(&traversal)))
            {
                continue;
            }
            let value = match read_path(self.schema, self.source, obj, &traversal.path) {
                Ok(value) => value,
                Err(_) => continue,
            };
            let Some(value) = value else { continue };
            for target in value.items().iter().filter_map(Value::as_moref) {
                if let Some(target_ty) = self.source.type_of(target) {
                    self.visit(
                        target,
                        target_ty,
                        traversal.skip,
                        &traversal.select,
                        depth + 1,
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// The paths to read from an object of `ty`, or `None` when no PropertySpec applies to it.
fn requested_paths(
    schema: &Schema,
    spec: &FilterSpec,
    ty: TypeId,
    version: ClientVersion,
) -> Result<Option<Vec<Arc<str>>>, Fault> {
    let mut paths: Vec<Arc<str>> = Vec::new();
    let mut applies = false;
    for prop_spec in spec.prop_set.iter().filter(|p| schema.is_a(ty, p.ty)) {
        applies = true;
        if prop_spec.all {
            for property in schema.fields(ty) {
                if schema.versions().knows(version, property.version)
                    && !paths.iter().any(|p| **p == *property.name)
                {
                    paths.push(Arc::from(&*property.name));
                }
            }
        }
        for path in &prop_spec.paths {
            check_path(schema, prop_spec.ty, path)?;
            if !paths.iter().any(|p| **p == **path) {
                paths.push(path.clone());
            }
        }
    }
    Ok(applies.then_some(paths))
}

/// Checks a dotted path against the declared types, starting at managed type `ty`.
pub fn check_path(schema: &Schema, ty: TypeId, path: &str) -> Result<(), Fault> {
    let mut declared = TypeRef { ty, array: false };
    for segment in path.split('.') {
        let field = (!declared.array)
            .then(|| schema.field_index(declared.ty, segment))
            .flatten()
            .map(|i| &schema.fields(declared.ty)[i]);
        match field {
            Some(field) => declared = field.ty,
            None => return Err(Fault::invalid_property(schema, path)),
        }
    }
    Ok(())
}

/// Reads a dotted path from an object; `Ok(None)` when it or a parent is unset.
pub fn read_path(
    schema: &Schema,
    source: &dyn ObjectSource,
    obj: &MoRef,
    path: &str,
) -> Result<Option<Value>, Fault> {
    let (first, rest) = match path.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (path, None),
    };
    let Some(value) = source.property(obj, first)? else {
        return Ok(None);
    };
    match rest {
        None => Ok(Some(value.into_owned())),
        Some(rest) => Ok(descend(schema, &value, rest).cloned()),
    }
}

/// Follows `path` through nested data objects.
pub fn descend<'v>(schema: &Schema, mut value: &'v Value, path: &str) -> Option<&'v Value> {
    for segment in path.split('.') {
        let object = value.as_data()?;
        if !matches!(schema.ty(object.ty).kind, TypeKind::Data { .. }) {
            return None;
        }
        value = object.lookup(schema, segment)?;
    }
    Some(value)
}
