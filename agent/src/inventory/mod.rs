//! The object store behind every managed object vireod serves: each object's type, its stored
//! property values and, for session-scoped objects (views, filters, collectors), the owning
//! session. [`esxi`] builds the host's fixed tree; VMs enter through `crate::vm`.

pub mod esxi;
pub mod host_config;
pub mod host_facts;
pub mod machine;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vireo_api::fast_hash::FastMap;
use vireo_api::schema::{Schema, TypeId};
use vireo_api::{MoRef, Value};

/// One managed object: type, property slots (schema order) and owner session if scoped.
#[derive(Debug, Clone)]
pub struct ManagedObject {
    /// Its managed type.
    pub ty: TypeId,
    /// Property values by schema position; `None` is unset.
    pub props: Vec<Option<Value>>,
    /// The session that created it, for objects that die with their session.
    pub owner: Option<Arc<str>>,
}

/// Every managed object by reference.
#[derive(Debug, Default)]
pub struct Inventory {
    objects: FastMap<MoRef, ManagedObject>,
    /// How many objects each session owns.
    owned: FastMap<Arc<str>, usize>,
    /// See [`Inventory::generation`].
    generation: u64,
}

/// The last generation any inventory took.
static GENERATIONS: AtomicU64 = AtomicU64::new(0);

impl Inventory {
    /// Changes whenever anything in this inventory changes, to a number no inventory had
    /// before: what is computed from one generation holds for as long as it is current.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Called by every method that changes something.
    fn changing(&mut self) {
        self.generation = GENERATIONS.fetch_add(1, Ordering::Relaxed) + 1;
    }

    /// Adds (or replaces) an object with every property unset.
    pub fn insert(
        &mut self,
        schema: &Schema,
        obj: MoRef,
        owner: Option<Arc<str>>,
    ) -> &mut ManagedObject {
        self.changing();
        let ty = schema.known_type(&obj.ty);
        if let Some(owner) = &owner {
            *self.owned.entry(owner.clone()).or_default() += 1;
        }
        let object = ManagedObject {
            ty,
            props: vec![None; schema.fields(ty).len()],
            owner,
        };
        if let Some(replaced) = self.objects.insert(obj.clone(), object) {
            self.disown(&replaced);
        }
        self.objects.get_mut(&obj).expect("just inserted")
    }

    /// An object by reference.
    pub fn get(&self, obj: &MoRef) -> Option<&ManagedObject> {
        self.objects.get(obj)
    }

    /// Removes an object.
    pub fn remove(&mut self, obj: &MoRef) -> Option<ManagedObject> {
        self.changing();
        let removed = self.objects.remove(obj)?;
        self.disown(&removed);
        Some(removed)
    }

    /// Removes every object owned by a session.
    pub fn remove_owned_by(&mut self, session: &str) {
        self.changing();
        self.objects
            .retain(|_, o| o.owner.as_deref() != Some(session));
        self.owned.remove(session);
    }

    /// How many objects a session owns.
    pub fn owned_by(&self, session: &str) -> usize {
        self.owned.get(session).copied().unwrap_or(0)
    }

    fn disown(&mut self, object: &ManagedObject) {
        let Some(owner) = &object.owner else { return };
        if let Some(count) = self.owned.get_mut(owner) {
            *count -= 1;
            if *count == 0 {
                self.owned.remove(owner);
            }
        }
    }

    /// Sets a stored property; panics if our code names a property the type lacks.
    pub fn set(&mut self, schema: &Schema, obj: &MoRef, name: &str, value: impl Into<Value>) {
        self.changing();
        let Some(object) = self.objects.get_mut(obj) else {
            return;
        };
        let i = schema
            .field_index(object.ty, name)
            .unwrap_or_else(|| panic!("{} has no property {name}", schema.ty(object.ty).name));
        object.props[i] = Some(value.into());
    }

    /// Unsets a stored property (an optional property that no longer has a value).
    pub fn unset(&mut self, schema: &Schema, obj: &MoRef, name: &str) {
        self.changing();
        let Some(object) = self.objects.get_mut(obj) else {
            return;
        };
        if let Some(i) = schema.field_index(object.ty, name) {
            object.props[i] = None;
        }
    }

    /// A stored property value.
    pub fn stored(&self, schema: &Schema, obj: &MoRef, name: &str) -> Option<&Value> {
        let object = self.objects.get(obj)?;
        schema
            .field_index(object.ty, name)
            .and_then(|i| object.props[i].as_ref())
    }

    /// Appends a reference to an array property (no duplicates).
    pub fn push_ref(&mut self, schema: &Schema, obj: &MoRef, name: &str, item: &MoRef) {
        let mut items: Vec<Value> = self
            .stored(schema, obj, name)
            .map(|v| v.items().to_vec())
            .unwrap_or_default();
        if !items.iter().any(|v| v.as_moref() == Some(item)) {
            items.push(item.clone().into());
        }
        self.set(
            schema,
            obj,
            name,
            Value::Array(schema.well_known().moref, items),
        );
    }

    /// Removes `item` from the reference array `name` of `obj` (if `obj` exists).
    pub fn pull_ref(&mut self, schema: &Schema, obj: &MoRef, name: &str, item: &MoRef) {
        if self.get(obj).is_none() {
            return;
        }
        let kept: Vec<MoRef> = self
            .refs(schema, obj, name)
            .into_iter()
            .filter(|r| r != item)
            .collect();
        self.set(schema, obj, name, Value::refs(schema, &kept));
    }

    /// References to every object whose type is `ty` or derives from it.
    pub fn all_of_type(&self, schema: &Schema, ty: TypeId) -> Vec<MoRef> {
        let mut refs: Vec<MoRef> = self
            .objects
            .iter()
            .filter(|(_, o)| schema.is_a(o.ty, ty))
            .map(|(r, _)| r.clone())
            .collect();
        refs.sort();
        refs
    }

    /// The references held by a property (single or array), in order.
    pub fn refs(&self, schema: &Schema, obj: &MoRef, name: &str) -> Vec<MoRef> {
        self.stored(schema, obj, name)
            .map(|v| {
                v.items()
                    .iter()
                    .filter_map(Value::as_moref)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The inventory children of a container entity (folder children, a datacenter's folders,
    /// a compute resource's hosts and pool, a pool's VMs and child pools).
    pub fn children(&self, schema: &Schema, obj: &MoRef) -> Vec<MoRef> {
        match &*obj.ty {
            "Folder" => self.refs(schema, obj, "childEntity"),
            "Datacenter" => ["vmFolder", "hostFolder", "datastoreFolder", "networkFolder"]
                .iter()
                .flat_map(|p| self.refs(schema, obj, p))
                .collect(),
            "ComputeResource" | "ClusterComputeResource" => {
                let mut refs = self.refs(schema, obj, "host");
                refs.extend(self.refs(schema, obj, "resourcePool"));
                refs
            }
            "ResourcePool" | "VirtualApp" => {
                let mut refs = self.refs(schema, obj, "resourcePool");
                refs.extend(self.refs(schema, obj, "vm"));
                refs
            }
            _ => Vec::new(),
        }
    }
}

/// Now, in microseconds since the epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
