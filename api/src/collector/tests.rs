use std::borrow::Cow;
use std::collections::HashMap;

use super::*;
use crate::codec::decode_request;
use crate::schema::{vim25, Schema, TypeId};
use crate::value::{DataObject, MoRef, Value};
use crate::Fault;

/// A tiny ESXi-shaped inventory: root folder → datacenter → vm folder → two VMs.
struct FakeInventory {
    objects: HashMap<MoRef, (TypeId, HashMap<&'static str, Value>)>,
}

impl FakeInventory {
    fn new(s: &Schema) -> FakeInventory {
        let mut objects = HashMap::new();
        let refs = |items: &[MoRef]| {
            Value::Array(
                s.well_known().moref,
                items.iter().cloned().map(Value::MoRef).collect(),
            )
        };
        let root = MoRef::new("Folder", "ha-folder-root");
        let dc = MoRef::new("Datacenter", "ha-datacenter");
        let vm_folder = MoRef::new("Folder", "ha-folder-vm");
        let vms = [
            MoRef::new("VirtualMachine", "1"),
            MoRef::new("VirtualMachine", "2"),
        ];
        objects.insert(
            root.clone(),
            (
                s.known_type("Folder"),
                HashMap::from([
                    ("name", "Datacenters".into()),
                    ("childEntity", refs(std::slice::from_ref(&dc))),
                ]),
            ),
        );
        objects.insert(
            dc.clone(),
            (
                s.known_type("Datacenter"),
                HashMap::from([
                    ("name", "ha-datacenter".into()),
                    ("vmFolder", vm_folder.clone().into()),
                ]),
            ),
        );
        objects.insert(
            vm_folder,
            (
                s.known_type("Folder"),
                HashMap::from([("name", "vm".into()), ("childEntity", refs(&vms))]),
            ),
        );
        for (i, vm) in vms.iter().enumerate() {
            let runtime = DataObject::of(s, "VirtualMachineRuntimeInfo").with(
                s,
                "powerState",
                Value::Enum(
                    s.known_type("VirtualMachinePowerState"),
                    "poweredOff".into(),
                ),
            );
            objects.insert(
                vm.clone(),
                (
                    s.known_type("VirtualMachine"),
                    HashMap::from([
                        ("name", format!("vm{i}").into()),
                        ("runtime", runtime.into()),
                    ]),
                ),
            );
        }
        FakeInventory { objects }
    }
}

impl ObjectSource for FakeInventory {
    fn type_of(&self, obj: &MoRef) -> Option<TypeId> {
        self.objects.get(obj).map(|(ty, _)| *ty)
    }

    fn property(&self, obj: &MoRef, name: &str) -> Result<Option<Cow<'_, Value>>, Fault> {
        if name == "config" {
            return Err(Fault::no_permission(
                vim25(),
                obj,
                "VirtualMachine.Config.Settings",
            ));
        }
        Ok(self
            .objects
            .get(obj)
            .and_then(|(_, props)| props.get(name).map(Cow::Borrowed)))
    }
}

fn spec_from(body: &str) -> FilterSpec {
    let s = vim25();
    let envelope = format!(
        r#"<Envelope xmlns="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><Body><RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">ha-property-collector</_this><specSet>{body}</specSet><options/></RetrievePropertiesEx></Body></Envelope>"#
    );
    let request = decode_request(s, envelope.as_bytes()).unwrap();
    FilterSpec::parse(s, &request.arg(s, "specSet").unwrap().items()[0]).unwrap()
}

const RECURSIVE_WALK: &str = r#"<objectSet><obj type="Folder">ha-folder-root</obj><skip>true</skip>
    <selectSet xsi:type="TraversalSpec"><name>folderTraversal</name><type>Folder</type><path>childEntity</path>
        <selectSet><name>folderTraversal</name></selectSet><selectSet><name>dcToVm</name></selectSet></selectSet>
    <selectSet xsi:type="TraversalSpec"><name>dcToVm</name><type>Datacenter</type><path>vmFolder</path>
        <selectSet><name>folderTraversal</name></selectSet></selectSet></objectSet>"#;

#[test]
fn named_recursive_traversal_with_base_type_property_spec() {
    let s = vim25();
    let spec = spec_from(&format!(
        "<propSet><type>ManagedEntity</type><pathSet>name</pathSet></propSet>{RECURSIVE_WALK}"
    ));
    let result = retrieve(s, &FakeInventory::new(s), &spec, s.versions().newest()).unwrap();
    let names: Vec<_> = result
        .iter()
        .map(|c| {
            (
                c.obj.id.to_string(),
                c.props[0].value.as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("ha-datacenter", "ha-datacenter"),
            ("ha-folder-vm", "vm"),
            ("1", "vm0"),
            ("2", "vm1")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
}

#[test]
fn dotted_paths_missing_properties_and_type_filtering() {
    let s = vim25();
    let spec = spec_from(&format!(
        "<propSet><type>VirtualMachine</type><pathSet>runtime.powerState</pathSet><pathSet>config</pathSet><pathSet>snapshot</pathSet></propSet>{RECURSIVE_WALK}"
    ));
    let result = retrieve(s, &FakeInventory::new(s), &spec, s.versions().newest()).unwrap();
    assert_eq!(result.len(), 2, "only VirtualMachines have a PropertySpec");
    let first = &result[0];
    assert_eq!(&*first.props[0].path, "runtime.powerState");
    assert_eq!(first.props[0].value.as_str(), Some("poweredOff"));
    assert_eq!(first.props.len(), 1, "unset snapshot is omitted");
    assert_eq!(&*first.missing[0].0, "config");
    assert_eq!(first.missing[0].1.type_name(s), "NoPermission");
}

#[test]
fn invalid_paths_and_missing_objects_fault() {
    let s = vim25();
    let spec = spec_from(
        r#"<propSet><type>VirtualMachine</type><pathSet>runtime.nonsense</pathSet></propSet><objectSet><obj type="VirtualMachine">1</obj></objectSet>"#,
    );
    let fault = retrieve(s, &FakeInventory::new(s), &spec, s.versions().newest()).unwrap_err();
    assert_eq!(fault.type_name(s), "InvalidProperty");
    let spec = spec_from(
        r#"<propSet><type>VirtualMachine</type><all>true</all></propSet><objectSet><obj type="VirtualMachine">77</obj></objectSet>"#,
    );
    let fault = retrieve(s, &FakeInventory::new(s), &spec, s.versions().newest()).unwrap_err();
    assert_eq!(fault.type_name(s), "ManagedObjectNotFound");
}

#[test]
fn all_properties_and_update_diffs() {
    let s = vim25();
    let mut inventory = FakeInventory::new(s);
    let spec = spec_from(
        r#"<propSet><type>VirtualMachine</type><all>true</all></propSet><objectSet><obj type="VirtualMachine">1</obj></objectSet>"#,
    );
    let version = s.versions().newest();
    let first = retrieve(s, &inventory, &spec, version).unwrap();
    let paths: Vec<_> = first[0].props.iter().map(|p| p.path.to_string()).collect();
    assert_eq!(paths, ["name", "runtime"]);
    let (updates, snapshot) = diff(&FilterSnapshot::default(), first);
    assert_eq!(updates[0].kind, UpdateKind::Enter);

    let (_, props) = inventory
        .objects
        .get_mut(&MoRef::new("VirtualMachine", "1"))
        .unwrap();
    props.insert("name", "renamed".into());
    let (updates, snapshot) = diff(&snapshot, retrieve(s, &inventory, &spec, version).unwrap());
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].kind, UpdateKind::Modify);
    assert_eq!(
        updates[0].changes,
        vec![("name".into(), Some("renamed".into()))]
    );

    let (updates, snapshot) = diff(&snapshot, retrieve(s, &inventory, &spec, version).unwrap());
    assert!(updates.is_empty());
    inventory.objects.remove(&MoRef::new("VirtualMachine", "1"));
    let spec = spec_from(
        r#"<propSet><type>VirtualMachine</type><all>true</all></propSet><objectSet><obj type="VirtualMachine">1</obj></objectSet><reportMissingObjectsInResults>true</reportMissingObjectsInResults>"#,
    );
    let (updates, _) = diff(&snapshot, retrieve(s, &inventory, &spec, version).unwrap());
    assert_eq!(updates[0].kind, UpdateKind::Leave);
}

#[test]
fn deferred_updates_are_reported_again() {
    let s = vim25();
    let inventory = FakeInventory::new(s);
    let spec = spec_from(&format!(
        "<propSet><type>ManagedEntity</type><pathSet>name</pathSet></propSet>{RECURSIVE_WALK}"
    ));
    let version = s.versions().newest();
    let empty = FilterSnapshot::default();
    let (updates, mut snapshot) = diff(&empty, retrieve(s, &inventory, &spec, version).unwrap());
    assert_eq!(updates.len(), 4);
    for deferred in &updates[1..] {
        snapshot.defer(&empty, &deferred.obj);
    }
    let (rest, _) = diff(&snapshot, retrieve(s, &inventory, &spec, version).unwrap());
    assert_eq!(
        rest.iter().map(|u| u.obj.clone()).collect::<Vec<_>>(),
        updates[1..]
            .iter()
            .map(|u| u.obj.clone())
            .collect::<Vec<_>>()
    );
    assert!(rest.iter().all(|u| u.kind == UpdateKind::Enter));
}
