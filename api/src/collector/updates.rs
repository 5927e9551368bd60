//! The change detection behind WaitForUpdates: a filter's last reported state, and the
//! enter/modify/leave object updates between it and a fresh retrieval.

use std::collections::HashMap;
use std::sync::Arc;

use super::retrieve::{missing_properties, ObjectContent};
use crate::schema::Schema;
use crate::value::{DataObject, MoRef, Value};

/// What a filter last reported: per object, its property values by path.
#[derive(Debug, Default, Clone)]
pub struct FilterSnapshot {
    objects: HashMap<MoRef, ObjectContent>,
}

impl FilterSnapshot {
    /// Undoes the part of a diff about `obj`, so that its update is reported again next time
    /// (WaitForUpdatesEx truncated by maxObjectUpdates).
    pub fn defer(&mut self, previous: &FilterSnapshot, obj: &MoRef) {
        match previous.objects.get(obj) {
            Some(before) => {
                self.objects.insert(obj.clone(), before.clone());
            }
            None => {
                self.objects.remove(obj);
            }
        }
    }
}

/// How an object changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// Newly in the filter.
    Enter,
    /// Properties changed.
    Modify,
    /// No longer in the filter.
    Leave,
}

/// One object's update: kind and changed properties (`None` value = became unset).
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectUpdate {
    /// The object.
    pub obj: MoRef,
    /// Enter, modify or leave.
    pub kind: UpdateKind,
    /// Changed properties.
    pub changes: Vec<(Arc<str>, Option<Value>)>,
    /// Properties that could not be read.
    pub missing: Vec<(Arc<str>, crate::fault::Fault)>,
}

impl ObjectUpdate {
    /// As an `ObjectUpdate` data object.
    pub fn to_value(&self, schema: &Schema) -> DataObject {
        let kind = match self.kind {
            UpdateKind::Enter => "enter",
            UpdateKind::Modify => "modify",
            UpdateKind::Leave => "leave",
        };
        let mut update = DataObject::of(schema, "ObjectUpdate")
            .with(
                schema,
                "kind",
                Value::Enum(schema.known_type("ObjectUpdateKind"), kind.into()),
            )
            .with(schema, "obj", self.obj.clone());
        if !self.changes.is_empty() {
            let op = Value::Enum(schema.known_type("PropertyChangeOp"), "assign".into());
            let changes = self
                .changes
                .iter()
                .map(|(path, value)| {
                    let mut change = DataObject::of(schema, "PropertyChange")
                        .with(schema, "name", &**path)
                        .with(schema, "op", op.clone());
                    if let Some(val) = value {
                        change.set(schema, "val", val.clone());
                    }
                    change.into()
                })
                .collect();
            update.set(
                schema,
                "changeSet",
                Value::Array(schema.known_type("PropertyChange"), changes),
            );
        }
        if !self.missing.is_empty() {
            update.set(
                schema,
                "missingSet",
                missing_properties(schema, &self.missing),
            );
        }
        update
    }
}

/// Compares a fresh retrieval with the last snapshot, returning the updates and the new
/// snapshot. Object order follows the fresh retrieval; leaves come last.
pub fn diff(
    previous: &FilterSnapshot,
    current: Vec<ObjectContent>,
) -> (Vec<ObjectUpdate>, FilterSnapshot) {
    let mut updates = Vec::new();
    let mut next = FilterSnapshot {
        objects: HashMap::with_capacity(current.len()),
    };
    for content in current {
        match previous.objects.get(&content.obj) {
            None => updates.push(ObjectUpdate {
                obj: content.obj.clone(),
                kind: UpdateKind::Enter,
                changes: content
                    .props
                    .iter()
                    .map(|p| (p.path.clone(), Some(p.value.clone())))
                    .collect(),
                missing: content.missing.clone(),
            }),
            Some(before) => {
                let mut changes: Vec<(Arc<str>, Option<Value>)> = Vec::new();
                for p in &content.props {
                    if before
                        .props
                        .iter()
                        .find(|b| b.path == p.path)
                        .map(|b| &b.value)
                        != Some(&p.value)
                    {
                        changes.push((p.path.clone(), Some(p.value.clone())));
                    }
                }
                for b in &before.props {
                    if !content.props.iter().any(|p| p.path == b.path) {
                        changes.push((b.path.clone(), None));
                    }
                }
                if !changes.is_empty() {
                    updates.push(ObjectUpdate {
                        obj: content.obj.clone(),
                        kind: UpdateKind::Modify,
                        changes,
                        missing: Vec::new(),
                    });
                }
            }
        }
        next.objects.insert(content.obj.clone(), content);
    }
    let mut leaving: Vec<&MoRef> = previous
        .objects
        .keys()
        .filter(|obj| !next.objects.contains_key(*obj))
        .collect();
    leaving.sort();
    for obj in leaving {
        updates.push(ObjectUpdate {
            obj: obj.clone(),
            kind: UpdateKind::Leave,
            changes: Vec::new(),
            missing: Vec::new(),
        });
    }
    (updates, next)
}
