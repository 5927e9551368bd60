//! The per-VM task journal: before a multi-step task changes anything it records its intent in
//! `vireo-journal-<task>.json` in the VM's folder, then each step it completes, every write
//! durable (temp file, fsync, rename, fsync of the folder) before the next step starts; the file
//! goes when the task ends. After a crash of vireod, [`super::recovery`] reads what is left and
//! rolls each task forward or back. Each recorded step is also a crash-injection point
//! ([`crate::crash`]). Beside it `vireo-journal-<task>.reserve` holds [`RESERVE_BYTES`] of the
//! datastore for the task's last writes (its steps, the snapshot list): a task on a datastore
//! too full for it fails before it changes anything, and one whose merge took the last free
//! space can still record what it did ([`Journal::make_room`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vireo_api::schema::Schema;
use vireo_api::Fault;

use super::destroy::OwnedFiles;
use super::snapshots::vmsd::SnapshotMeta;
use super::vmx_file::{write_atomically, write_unsynced};

/// Start of the name of every journal file.
pub const PREFIX: &str = "vireo-journal-";
const SUFFIX: &str = ".json";
const RESERVE_SUFFIX: &str = ".reserve";
/// Space held for a task's last writes (journal steps and a snapshot list are a few KiB).
pub const RESERVE_BYTES: usize = 256 * 1024;

/// What a task set out to do: enough for recovery to finish or undo it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "kebab-case")]
pub enum Intent {
    /// CreateSnapshot: snapshot `meta.uid` on every disk, then in the snapshot list.
    SnapshotCreate {
        /// The snapshot being taken (its uid is reserved: never handed out again).
        meta: SnapshotMeta,
    },
    /// RemoveSnapshot / RemoveAllSnapshots of these uids.
    SnapshotRemove {
        /// The snapshots going.
        uids: Vec<u32>,
        /// Whether the layers nobody needs are merged.
        consolidate: bool,
    },
    /// RevertToSnapshot: every disk made to read as snapshot `uid`.
    SnapshotRevert {
        /// The snapshot reverted to.
        uid: u32,
    },
    /// ConsolidateVMDisks or PromoteDisks: merges under a stunned VM.
    Consolidate,
    /// ReconfigVM growing disks under a stunned VM.
    Reconfigure,
    /// SuspendVM: save into `suspend/`, then the VMM ends.
    Suspend,
    /// CloneVM of this VM into `folder` (registered as `vmx`), from the temporary snapshot
    /// `temporary` when the source was running.
    Clone {
        /// The clone's folder (removed unless the clone got registered).
        folder: PathBuf,
        /// The clone's `.vmx` datastore path.
        vmx: String,
        /// The temporary snapshot of the running source.
        temporary: Option<u32>,
        /// A linked clone's instanceUuid: the name of its hold on the source's layers
        /// (released when the clone was not made).
        #[serde(default)]
        hold: Option<String>,
    },
    /// Destroy_Task: the VM leaves the inventory, then the files it owns go.
    Destroy {
        /// Disks of other VMs this one's disks were built on (their holds are released).
        parents: Vec<PathBuf>,
        /// The VM's instanceUuid (the name of its holds).
        instance_uuid: String,
        /// What the VM owns.
        owned: OwnedFiles,
    },
}

impl Intent {
    /// The task's name in file names, crash points and logs.
    pub fn task(&self) -> &'static str {
        match self {
            Intent::SnapshotCreate { .. } => "snapshot-create",
            Intent::SnapshotRemove { .. } => "snapshot-remove",
            Intent::SnapshotRevert { .. } => "snapshot-revert",
            Intent::Consolidate => "consolidate",
            Intent::Reconfigure => "reconfigure",
            Intent::Suspend => "suspend",
            Intent::Clone { .. } => "clone",
            Intent::Destroy { .. } => "destroy",
        }
    }

    /// Whether the task holds space for its last writes (a deletion, which frees space, and
    /// is how a full datastore is helped, does not).
    fn reserves_space(&self) -> bool {
        !matches!(self, Intent::Destroy { .. })
    }
}

/// A journal as found on disk: the intent and the steps completed, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// What the task set out to do.
    pub intent: Intent,
    /// Steps completed.
    pub steps: Vec<String>,
}

impl Record {
    /// Whether `step` was completed.
    pub fn did(&self, step: &str) -> bool {
        self.steps.iter().any(|s| s == step)
    }
}

/// Why the journal (or its space reserve) could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the task journal {path}: {source}")]
pub struct JournalError {
    /// The journal file.
    pub path: PathBuf,
    /// What failed.
    pub source: std::io::Error,
}

impl JournalError {
    /// The error as the API reports it (FileFault).
    pub fn fault(&self, schema: &Schema) -> Fault {
        crate::faults::file_fault(schema, &self.path.display().to_string(), self)
    }
}

/// The journal of a task under way; dropping it without [`Journal::finish`] leaves the file
/// (the task did not end cleanly, recovery looks at it).
pub struct Journal {
    path: PathBuf,
    record: Record,
    /// The space reserve, until it is released.
    reserve: Option<PathBuf>,
}

fn path_of(dir: &Path, task: &str, suffix: &str) -> PathBuf {
    dir.join(format!("{PREFIX}{task}{suffix}"))
}

impl Journal {
    /// Records `intent` in VM folder `dir` (step `begun`) and reserves space for the task's last
    /// writes; a datastore without that space fails here, with nothing changed.
    pub fn begin(dir: &Path, intent: Intent) -> Result<Journal, JournalError> {
        let reserve = path_of(dir, intent.task(), RESERVE_SUFFIX);
        let mut journal = Journal {
            path: path_of(dir, intent.task(), SUFFIX),
            reserve: intent.reserves_space().then(|| reserve.clone()),
            record: Record {
                intent,
                steps: vec!["begun".to_string()],
            },
        };
        // The space is taken when the write returns; the reserve's contents never matter, so
        // it is not synced.
        let reserved = match journal.reserve {
            Some(_) => write_unsynced(&reserve, &[0; RESERVE_BYTES]),
            None => Ok(()),
        };
        reserved
            .and_then(|()| journal.write(true))
            .map_err(|source| {
                journal.release();
                remove(&journal.path);
                JournalError {
                    path: journal.path.clone(),
                    source,
                }
            })?;
        crate::crash::point(&format!("{}:begun", journal.record.intent.task()));
        Ok(journal)
    }

    /// The task's intent.
    pub fn intent(&self) -> &Intent {
        &self.record.intent
    }

    /// The journal's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that `step` is complete, durably, before the caller goes on (releasing the
    /// space reserve when the datastore is full).
    pub fn step(&mut self, step: &str) -> Result<(), JournalError> {
        self.record_step(step, true)
    }

    /// Records a step that recovery does not read (it learns how far such a task got from the
    /// disk trees and the VMM): as [`Journal::step`], but without waiting for the disk, so a
    /// crash of the host may forget it (a crash of vireod does not). A stunned guest waits for
    /// every durable step; these keep that pause short.
    pub fn mark(&mut self, step: &str) -> Result<(), JournalError> {
        self.record_step(step, false)
    }

    fn record_step(&mut self, step: &str, durable: bool) -> Result<(), JournalError> {
        self.record.steps.push(step.to_string());
        self.write(durable)
            .or_else(|error| match self.make_room() {
                true => self.write(durable),
                false => Err(error),
            })
            .map_err(|source| JournalError {
                path: self.path.clone(),
                source,
            })?;
        crate::crash::point(&format!("{}:{step}", self.record.intent.task()));
        Ok(())
    }

    fn write(&self, durable: bool) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(&self.record).unwrap_or_default();
        match durable {
            true => write_atomically(&self.path, &text),
            false => write_unsynced(&self.path, &text),
        }
    }

    /// Gives the reserved space back to the datastore, for a last write that found it full;
    /// false when it was given back already.
    pub fn make_room(&mut self) -> bool {
        let released = self.reserve.is_some();
        self.release();
        released
    }

    fn release(&mut self) {
        if let Some(reserve) = self.reserve.take() {
            remove(&reserve);
        }
    }

    /// The task ended (well or with a clean failure): the journal and its reserve go.
    pub fn finish(mut self) {
        self.release();
        remove(&self.path);
    }
}

/// Removes a journal file durably (logged when it cannot be).
pub fn remove(path: &Path) {
    let removed = std::fs::remove_file(path).and_then(|()| match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    });
    if let Err(error) = removed {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(journal = %path.display(), "cannot remove the task journal: {error}");
        }
    }
}

/// Every journal left in VM folder `dir` with its file; unreadable ones are logged and
/// removed (a crash while the first write was under way leaves only a `.partial`).
pub fn pending(dir: &Path) -> Vec<(PathBuf, Record)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(PathBuf, Record)> = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(PREFIX) {
            continue;
        }
        let path = entry.path();
        if !name.ends_with(SUFFIX) {
            tracing::info!(file = %path.display(), "removing a half-written task journal or the space it reserved");
            let _ = std::fs::remove_file(&path);
            continue;
        }
        match std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Record>(&bytes).ok())
        {
            Some(record) => found.push((path, record)),
            None => {
                tracing::warn!(file = %path.display(), "removing an unreadable task journal");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    found.sort_by(|a, b| (order(&a.1.intent), &a.0).cmp(&(order(&b.1.intent), &b.0)));
    found
}

/// Recovery order: the clone (which may hold a snapshot) after the snapshot tasks.
fn order(intent: &Intent) -> u8 {
    match intent {
        Intent::Clone { .. } => 1,
        Intent::Destroy { .. } => 2,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::snapshots::vmsd::CapturedPower;

    #[test]
    fn steps_are_recorded_and_a_finished_task_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("vireo-journal-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let meta = SnapshotMeta {
            uid: 7,
            parent: None,
            name: "before \"upgrade\"".into(),
            description: String::new(),
            create_time: 1,
            power: CapturedPower::On,
            quiesced: false,
        };
        let mut journal = Journal::begin(&dir, Intent::SnapshotCreate { meta }).unwrap();
        let reserve = dir.join("vireo-journal-snapshot-create.reserve");
        assert_eq!(
            std::fs::metadata(&reserve).unwrap().len(),
            RESERVE_BYTES as u64
        );
        assert!(journal.make_room() && !reserve.exists() && !journal.make_room());
        journal.step("disks-detached").unwrap();
        let mut clone = Journal::begin(&dir, Intent::Consolidate).unwrap();
        clone.step("vm-paused").unwrap();
        // A marked step is not synced, but a reader (recovery after vireod dies) sees it.
        clone.mark("disks-attached").unwrap();
        std::fs::write(dir.join("vireo-journal-suspend.partial"), b"{").unwrap();
        let found = pending(&dir);
        assert_eq!(found.len(), 2);
        let (_, create) = &found[1];
        assert_eq!(create.intent.task(), "snapshot-create");
        assert!(create.did("begun") && create.did("disks-detached"));
        assert!(!create.did("trees-changed"));
        assert!(found[0].1.did("vm-paused") && found[0].1.did("disks-attached"));
        assert!(!dir.join("vireo-journal-suspend.partial").exists());
        journal.finish();
        clone.finish();
        assert!(pending(&dir).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
