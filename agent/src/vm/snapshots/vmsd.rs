//! The VM's snapshot list as kept in its folder: `<name>.vmsd`, in the `.vmx` syntax
//! (`snapshot.current`, `snapshotN.uid`, `.parent`, `.displayName`, ...). Pure data and its
//! file form; the disks and memory files of each snapshot are handled by the modules beside.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::super::vmx_file::VmxFile;

/// Power state a snapshot captured (VirtualMachinePowerState).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CapturedPower {
    /// Disks only: a revert leaves the VM powered off.
    Off,
    /// Disks and running memory: a revert resumes the guest.
    On,
    /// Taken while suspended: disks and the suspended state.
    Suspended,
}

impl CapturedPower {
    /// The VirtualMachinePowerState value.
    pub fn as_str(self) -> &'static str {
        match self {
            CapturedPower::Off => "poweredOff",
            CapturedPower::On => "poweredOn",
            CapturedPower::Suspended => "suspended",
        }
    }

    fn parse(text: &str) -> CapturedPower {
        match text {
            "poweredOn" => CapturedPower::On,
            "suspended" => CapturedPower::Suspended,
            _ => CapturedPower::Off,
        }
    }

    /// Whether the snapshot holds a saved machine state (`snapshot-<uid>/vm.state`).
    pub fn has_memory(self) -> bool {
        self != CapturedPower::Off
    }
}

/// One snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Its id within the VM (VirtualMachineSnapshotTree.id), never reused.
    pub uid: u32,
    /// Its parent snapshot.
    pub parent: Option<u32>,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// When it was taken (µs since the epoch).
    pub create_time: i64,
    /// What it captured.
    pub power: CapturedPower,
    /// Whether the guest's filesystems were frozen while its disks were snapshotted.
    pub quiesced: bool,
}

/// Every snapshot of a VM and which one the VM currently descends from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotList {
    /// Highest uid handed out.
    pub last_uid: u32,
    /// The snapshot the VM's current state is based on.
    pub current: Option<u32>,
    /// Every snapshot, in creation order.
    pub snapshots: Vec<SnapshotMeta>,
}

impl SnapshotList {
    /// Reads `path`; a missing file is an empty list.
    pub fn load(path: &Path) -> std::io::Result<SnapshotList> {
        match VmxFile::read(path) {
            Ok(vmx) => Ok(SnapshotList::from_vmsd(&vmx)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SnapshotList::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes `path` atomically (removing it when there are no snapshots).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if self.snapshots.is_empty() && self.last_uid == 0 {
            return match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        self.to_vmsd().write(path)
    }

    fn from_vmsd(vmx: &VmxFile) -> SnapshotList {
        let number = |key: &str| vmx.get(key).and_then(|v| v.trim().parse::<u32>().ok());
        let count = number("snapshot.numSnapshots").unwrap_or(0);
        let snapshots = (0..count)
            .filter_map(|n| {
                let get = |k: &str| vmx.get(&format!("snapshot{n}.{k}"));
                Some(SnapshotMeta {
                    uid: get("uid")?.trim().parse().ok()?,
                    parent: get("parent").and_then(|p| p.trim().parse().ok()),
                    name: get("displayName").unwrap_or_default().to_string(),
                    description: get("description").unwrap_or_default().to_string(),
                    create_time: get("createTime")
                        .and_then(|t| t.trim().parse().ok())
                        .unwrap_or(0),
                    power: CapturedPower::parse(get("powerState").unwrap_or_default()),
                    quiesced: get("quiesced").is_some_and(|q| q.eq_ignore_ascii_case("TRUE")),
                })
            })
            .collect();
        SnapshotList {
            last_uid: number("snapshot.lastUID").unwrap_or(0),
            current: number("snapshot.current"),
            snapshots,
        }
    }

    fn to_vmsd(&self) -> VmxFile {
        let mut vmx = VmxFile::default();
        vmx.set("snapshot.lastUID", &self.last_uid.to_string());
        vmx.set("snapshot.numSnapshots", &self.snapshots.len().to_string());
        if let Some(current) = self.current {
            vmx.set("snapshot.current", &current.to_string());
        }
        for (n, s) in self.snapshots.iter().enumerate() {
            let mut set = |k: &str, v: &str| vmx.set(&format!("snapshot{n}.{k}"), v);
            set("uid", &s.uid.to_string());
            if let Some(parent) = s.parent {
                set("parent", &parent.to_string());
            }
            set("displayName", &s.name);
            set("description", &s.description);
            set("createTime", &s.create_time.to_string());
            set("powerState", s.power.as_str());
            set("quiesced", if s.quiesced { "TRUE" } else { "FALSE" });
        }
        vmx
    }

    /// A snapshot by uid.
    pub fn get(&self, uid: u32) -> Option<&SnapshotMeta> {
        self.snapshots.iter().find(|s| s.uid == uid)
    }

    /// A snapshot by uid, to change it.
    pub fn get_mut(&mut self, uid: u32) -> Option<&mut SnapshotMeta> {
        self.snapshots.iter_mut().find(|s| s.uid == uid)
    }

    /// The children of `parent` (`None`: the roots), oldest first.
    pub fn children(&self, parent: Option<u32>) -> Vec<&SnapshotMeta> {
        self.snapshots
            .iter()
            .filter(|s| s.parent == parent)
            .collect()
    }

    /// `uid` and every snapshot below it.
    pub fn subtree(&self, uid: u32) -> Vec<u32> {
        let mut out = vec![uid];
        let mut i = 0;
        while i < out.len() {
            out.extend(self.children(Some(out[i])).iter().map(|c| c.uid));
            i += 1;
        }
        out
    }

    /// Adds a snapshot as a child of the current one and makes it current; returns its uid.
    pub fn add(&mut self, mut meta: SnapshotMeta) -> u32 {
        self.last_uid += 1;
        meta.uid = self.last_uid;
        meta.parent = self.current;
        self.current = Some(meta.uid);
        self.snapshots.push(meta);
        self.last_uid
    }

    /// Removes one snapshot: its children move up to its parent, and if it was current its
    /// parent becomes current.
    pub fn remove(&mut self, uid: u32) {
        let Some(parent) = self.get(uid).map(|s| s.parent) else {
            return;
        };
        for s in &mut self.snapshots {
            if s.parent == Some(uid) {
                s.parent = parent;
            }
        }
        if self.current == Some(uid) {
            self.current = parent;
        }
        self.snapshots.retain(|s| s.uid != uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str) -> SnapshotMeta {
        SnapshotMeta {
            uid: 0,
            parent: None,
            name: name.into(),
            description: format!("about {name}\nwith \"quotes\""),
            create_time: 1_700_000_000_000_000,
            power: CapturedPower::On,
            quiesced: false,
        }
    }

    #[test]
    fn the_file_round_trips_and_removal_reparents() {
        let mut list = SnapshotList::default();
        let a = list.add(meta("a"));
        let b = list.add(meta("b"));
        list.current = Some(a);
        let c = list.add(meta("c"));
        assert_eq!(list.children(Some(a)).len(), 2);
        assert_eq!(list.subtree(a), vec![a, b, c]);
        let back = SnapshotList::from_vmsd(&VmxFile::parse(&list.to_vmsd().render()));
        assert_eq!(back, list);
        list.remove(a);
        assert_eq!(list.children(None).len(), 2);
        assert_eq!(list.current, Some(c));
        list.remove(c);
        assert_eq!(list.current, None);
        assert_eq!(list.last_uid, 3);
    }
}
