//! The properties of a fixed VM — two disks, a NIC, one snapshot — made through CreateVM's and
//! CreateSnapshot's own code on a scratch test host, read back from the inventory.

use std::sync::Arc;

use vireo_api::{DataObject, Value};

use crate::host::{test_host, TestHost};
use crate::vm::device_change::add_spec;
use crate::vm::snapshots::{self, NewSnapshot};
use crate::vm::Vm;

/// Disk sizes of the fixture, in bytes.
const DISK_SIZES: [i64; 2] = [1 << 20, 2 << 20];
/// A manual MAC (CreateVM refuses one outside 00:50:56:00:00:00-00:50:56:3f:ff:ff, as ESXi does).
const MAC: &str = "00:50:56:2a:bb:01";

/// The test host with "fixture": two new disks, one vmxnet3 NIC, then a snapshot "s1".
fn fixture() -> (TestHost, Arc<Vm>) {
    let host = test_host();
    let schema = host.schema;
    let change = |device: DataObject, create: bool| add_spec(schema, device, create);
    let disk = |bytes: i64| {
        DataObject::of(schema, "VirtualDisk")
            .with(schema, "key", -1)
            .with(schema, "capacityInBytes", bytes)
            .with(
                schema,
                "backing",
                DataObject::of(schema, "VirtualDiskFlatVer2BackingInfo")
                    .with(schema, "fileName", "")
                    .with(schema, "diskMode", "persistent"),
            )
    };
    let nic = DataObject::of(schema, "VirtualVmxnet3")
        .with(schema, "key", -1)
        .with(schema, "macAddress", MAC)
        .with(
            schema,
            "backing",
            DataObject::of(schema, "VirtualEthernetCardNetworkBackingInfo").with(
                schema,
                "deviceName",
                "VM Network",
            ),
        );
    let changes = vec![
        change(disk(DISK_SIZES[0]), true),
        change(disk(DISK_SIZES[1]), true),
        change(nic, false),
    ];
    let spec = DataObject::of(schema, "VirtualMachineConfigSpec")
        .with(schema, "name", "fixture")
        .with(schema, "numCPUs", 2)
        .with(schema, "memoryMB", 128i64)
        .with(
            schema,
            "deviceChange",
            Value::Array(schema.known_type("VirtualDeviceConfigSpec"), changes),
        );
    let vm = crate::vm::create::create_vm(&host, &spec).expect("CreateVM of the fixture");
    let snapshot = NewSnapshot {
        name: "s1".into(),
        description: "first".into(),
        memory: false,
        quiesce: false,
    };
    snapshots::create(&host, &vm, snapshot).expect("a snapshot of the powered-off fixture");
    (host, vm)
}

/// The value at a dotted property path of the VM (`config.hardware.device`).
fn read(host: &TestHost, vm: &Vm, path: &str) -> Option<Value> {
    let schema = host.schema;
    let mut parts = path.split('.');
    let inventory = host.inventory();
    let mut value = inventory.stored(schema, &vm.moref, parts.next()?)?;
    for part in parts {
        value = value.as_data()?.get(schema, part)?;
    }
    Some(value.clone())
}

fn text(value: Option<&Value>) -> &str {
    value.and_then(Value::as_str).unwrap_or_default()
}

fn devices_of(host: &TestHost, vm: &Vm, ty: &str) -> Vec<DataObject> {
    let schema = host.schema;
    let devices = read(host, vm, "config.hardware.device").expect("devices");
    devices
        .items()
        .iter()
        .filter_map(Value::as_data)
        .filter(|d| &*schema.ty(d.ty).name == ty)
        .cloned()
        .collect()
}

#[test]
fn config_and_summary_describe_the_spec() {
    let (host, vm) = fixture();
    let number = |path: &str| read(&host, &vm, path).and_then(|v| v.as_i64());
    assert_eq!(text(read(&host, &vm, "config.name").as_ref()), "fixture");
    assert_eq!(number("config.hardware.numCPU"), Some(2));
    assert_eq!(number("config.hardware.memoryMB"), Some(128));
    assert_eq!(number("summary.config.numVirtualDisks"), Some(2));
    assert_eq!(number("summary.config.numEthernetCards"), Some(1));
    let uuid = read(&host, &vm, "config.uuid");
    assert_eq!(text(uuid.as_ref()), vm.state().spec.uuid);
    let flag =
        |name: &str| read(&host, &vm, &format!("capability.{name}")).and_then(|v| v.as_bool());
    assert_eq!(flag("snapshotOperationsSupported"), Some(true));
    assert_eq!(flag("recordReplaySupported"), Some(false));
}

#[test]
fn devices_list_both_disks_with_their_chains_and_the_nic() {
    let (host, vm) = fixture();
    let schema = host.schema;
    let disks = devices_of(&host, &vm, "VirtualDisk");
    assert_eq!(disks.len(), 2);
    for (n, disk) in disks.iter().enumerate() {
        assert_eq!(
            disk.get(schema, "key").and_then(Value::as_i64),
            Some(2000 + n as i64)
        );
        assert_eq!(
            disk.get(schema, "capacityInBytes").and_then(Value::as_i64),
            Some(DISK_SIZES[n])
        );
        // After the snapshot each disk runs on a delta whose parent is its base file.
        let top = disk
            .get(schema, "backing")
            .and_then(Value::as_data)
            .unwrap();
        let parent = top.get(schema, "parent").and_then(Value::as_data).unwrap();
        assert_eq!(text(top.get(schema, "deltaDiskFormat")), "redoLogFormat");
        assert!(parent.get(schema, "parent").is_none());
        let base = if n == 0 {
            "fixture.qcow2"
        } else {
            "fixture_1.qcow2"
        };
        assert_eq!(
            text(parent.get(schema, "fileName")),
            format!("[datastore1] fixture/{base}")
        );
        assert_ne!(
            text(top.get(schema, "fileName")),
            text(parent.get(schema, "fileName"))
        );
    }
    let nics = devices_of(&host, &vm, "VirtualVmxnet3");
    assert_eq!(nics.len(), 1);
    assert_eq!(
        nics[0].get(schema, "key").and_then(Value::as_i64),
        Some(4000)
    );
    assert_eq!(text(nics[0].get(schema, "macAddress")), MAC);
}

#[test]
fn runtime_and_guest_of_a_powered_off_vm_without_tools() {
    let (host, vm) = fixture();
    let path = |p: &str| read(&host, &vm, p);
    assert_eq!(text(path("runtime.powerState").as_ref()), "poweredOff");
    assert_eq!(
        path("runtime.consolidationNeeded").and_then(|v| v.as_bool()),
        Some(false)
    );
    assert!(path("runtime.bootTime").is_none());
    assert!(path("summary.quickStats.uptimeSeconds").is_none());
    assert_eq!(
        text(path("guest.toolsStatus").as_ref()),
        "toolsNotInstalled"
    );
    assert_eq!(text(path("guest.guestState").as_ref()), "notRunning");
    assert!(path("guest.net").is_none());
}

#[test]
fn layout_lists_every_layer_once_and_the_snapshot_chains() {
    let (host, vm) = fixture();
    let schema = host.schema;
    let files = read(&host, &vm, "layoutEx.file").expect("layoutEx.file");
    let kinds: Vec<String> = files
        .items()
        .iter()
        .filter_map(Value::as_data)
        .map(|f| text(f.get(schema, "type")).to_string())
        .collect();
    let count = |kind: &str| kinds.iter().filter(|k| *k == kind).count();
    assert_eq!(count("config"), 1);
    assert_eq!(
        count("diskExtent"),
        4,
        "two bases and two deltas: {kinds:?}"
    );
    assert_eq!(count("snapshotList"), 1);
    let chain_lengths = |value: Option<Value>| -> Vec<usize> {
        value
            .expect("disk layouts")
            .items()
            .iter()
            .filter_map(Value::as_data)
            .map(|d| d.get(schema, "chain").map_or(0, |c| c.items().len()))
            .collect()
    };
    assert_eq!(chain_lengths(read(&host, &vm, "layoutEx.disk")), [2, 2]);
    let snapshots = read(&host, &vm, "layoutEx.snapshot").expect("a snapshot layout");
    assert_eq!(snapshots.items().len(), 1);
    let snapshot_disks = snapshots.items()[0]
        .as_data()
        .and_then(|s| s.get(schema, "disk"))
        .cloned();
    assert_eq!(chain_lengths(snapshot_disks), [1, 1]);
    let sizes: i64 = files
        .items()
        .iter()
        .filter_map(Value::as_data)
        .filter_map(|f| f.get(schema, "size").and_then(Value::as_i64))
        .sum();
    let committed = read(&host, &vm, "summary.storage.committed").and_then(|v| v.as_i64());
    assert_eq!(committed, Some(sizes));
}

#[test]
fn the_snapshot_tree_names_s1_as_current() {
    let (host, vm) = fixture();
    let schema = host.schema;
    let roots = read(&host, &vm, "rootSnapshot").expect("rootSnapshot");
    assert_eq!(roots.items().len(), 1);
    let current = read(&host, &vm, "snapshot.currentSnapshot");
    assert_eq!(current.as_ref(), Some(&roots.items()[0]));
    let tree = read(&host, &vm, "snapshot.rootSnapshotList").expect("the tree");
    let first = tree.items()[0].as_data().unwrap();
    assert_eq!(text(first.get(schema, "name")), "s1");
}

#[test]
fn an_edit_publishes_when_it_changes_the_state_and_only_then() {
    let (host, vm) = fixture();
    let mut changes = host.subscribe();
    changes.mark_unchanged();
    assert_eq!(vm.edit(&host).power, crate::vm::Power::Off);
    assert!(
        !changes.has_changed().unwrap(),
        "a read-only edit publishes nothing"
    );
    vm.edit(&host).spec.annotation = "edited".into();
    assert!(changes.has_changed().unwrap());
    assert_eq!(
        text(read(&host, &vm, "config.annotation").as_ref()),
        "edited"
    );
    changes.mark_unchanged();
    let mut edit = vm.edit(&host);
    edit.spec.annotation = "hidden".into();
    edit.unpublished();
    assert!(!changes.has_changed().unwrap());
    assert_eq!(
        text(read(&host, &vm, "config.annotation").as_ref()),
        "edited"
    );
}
