//! Changed-block tracking over a disk tree: changeIds, the tracking points recorded at each
//! snapshot (kept in the tree sidecar, so merges and deletions never change an answer), the
//! live bitmap of the active layer (a qcow2 `auto` bitmap the engine maintains on every
//! write, zero-write and discard), and `changed_areas` (a superset of what changed, never a miss).
//!
//! Points form a tree like the layers do: point p records what was written between its parent
//! point and p. Two states differ at most where the points on the path between them say.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::{json, Value};

use super::{DiskTree, LayerId, TreeError};
use crate::block::BlockError;
use crate::open::{probe_format, ImageFormat, OpenError};
use crate::qcow2::bitmap_store::is_locked_by_writer;
use crate::qcow2::bitmaps::{DirtyBitmap, FLAG_AUTO};
use crate::qcow2::header::AUTOCLEAR_BITMAPS;
use crate::qcow2::{ExtentKind, Qcow2Image, Qcow2Options};

/// log2 of the bytes one tracking bit covers (64 KiB).
const GRANULARITY_BITS: u8 = 16;
/// Prefix of the live bitmap's name; the tracking UUID in hex follows.
const BITMAP_PREFIX: &str = "vireo-cbt-";

/// A point in a disk's change history: tracking UUID and sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChangeId {
    /// The tracking session.
    pub uuid: [u8; 16],
    /// The point within it.
    pub seq: u64,
}

impl fmt::Display for ChangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex: Vec<String> = self.uuid.iter().map(|b| format!("{b:02x}")).collect();
        write!(
            f,
            "{}-{}/{}",
            hex[..8].join(" "),
            hex[8..].join(" "),
            self.seq
        )
    }
}

impl FromStr for ChangeId {
    type Err = CbtError;

    fn from_str(text: &str) -> Result<Self, CbtError> {
        let bad = || CbtError::Malformed(text.to_string());
        let (uuid, seq) = text.split_once('/').ok_or_else(bad)?;
        let (first, second) = uuid.split_once('-').ok_or_else(bad)?;
        let bytes: Vec<u8> = first
            .split(' ')
            .chain(second.split(' '))
            .map(|b| {
                (b.len() == 2)
                    .then(|| u8::from_str_radix(b, 16).ok())
                    .flatten()
            })
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        Ok(Self {
            uuid: bytes.try_into().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// Why change tracking could not answer or act.
#[derive(Debug, thiserror::Error)]
pub enum CbtError {
    /// Not a changeId
    #[error("malformed changeId {0:?}")]
    Malformed(String),
    /// Tracking is off
    #[error("change tracking is not enabled on this disk")]
    NotEnabled,
    /// The changeId predates the current tracking session (tracking was off or restarted)
    #[error("changeId {0} is from before change tracking was (re)enabled")]
    BeforeTracking(String),
    /// The changeId's session ended because the disk was not closed cleanly
    #[error("changeId {0} is stale: the disk was not closed cleanly since")]
    Stale(String),
    /// The changeId belongs to a tracking session this disk never had
    #[error("changeId {0} belongs to another disk or tracking session")]
    OtherTracking(String),
    /// The session is right but the sequence names no recorded point
    #[error("changeId {0} names no recorded point")]
    UnknownPoint(String),
    /// The snapshot was taken while tracking was off (or in an earlier session)
    #[error("snapshot {0:?} has no changeId of the current tracking session")]
    SnapshotNotTracked(String),
    /// The active layer is open for writing by a running process
    #[error("{0} is open for writing by another process; query a snapshot instead")]
    InUse(PathBuf),
    /// The tree or a layer failed
    #[error(transparent)]
    Tree(#[from] TreeError),
}

impl From<BlockError> for CbtError {
    fn from(e: BlockError) -> Self {
        Self::Tree(e.into())
    }
}

impl From<OpenError> for CbtError {
    fn from(e: OpenError) -> Self {
        Self::Tree(e.into())
    }
}

/// Why a tracking session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retired {
    Disabled,
    UncleanShutdown,
    Reset,
}

/// One recorded point.
#[derive(Debug, Clone, PartialEq)]
struct Point {
    parent: Option<u64>,
    /// Byte ranges written between the parent point and this one.
    extents: Vec<(u64, u64)>,
}

/// The current tracking session.
#[derive(Debug, Clone, PartialEq)]
struct Session {
    uuid: [u8; 16],
    /// The point the active layer's live bitmap counts from.
    base: u64,
    next_seq: u64,
    points: BTreeMap<u64, Point>,
}

/// Everything tracking keeps in the sidecar.
#[derive(Debug, Clone, Default, PartialEq)]
struct Tracking {
    current: Option<Session>,
    retired: Vec<([u8; 16], Retired)>,
}

/// What the active layer's live bitmap says.
enum Live {
    Bitmap(DirtyBitmap),
    /// Missing or left `in_use` by a writer that did not close the image.
    Stale,
    /// A running process has the image open for writing.
    InUse,
}

fn hex(uuid: &[u8; 16]) -> String {
    uuid.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 16]> {
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect();
    bytes?.try_into().ok()
}

fn bitmap_name(uuid: &[u8; 16]) -> String {
    format!("{BITMAP_PREFIX}{}", hex(uuid))
}

fn new_uuid() -> [u8; 16] {
    let mut uuid = [0u8; 16];
    if let Ok(file) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = (&file).read_exact(&mut uuid);
    }
    uuid[6] = (uuid[6] & 0x0f) | 0x40; // version 4
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}

impl Tracking {
    fn from_json(v: Option<&Value>) -> Self {
        let Some(v) = v else {
            return Self::default();
        };
        let current = v["current"].as_object().and_then(|c| {
            let points = c.get("points")?.as_array()?.iter().map(|p| {
                let extents = p["extents"]
                    .as_array()?
                    .iter()
                    .map(|e| Some((e[0].as_u64()?, e[1].as_u64()?)));
                Some((
                    p["seq"].as_u64()?,
                    Point {
                        parent: p["parent"].as_u64(),
                        extents: extents.collect::<Option<_>>()?,
                    },
                ))
            });
            Some(Session {
                uuid: unhex(c.get("uuid")?.as_str()?)?,
                base: c.get("base")?.as_u64()?,
                next_seq: c.get("next-seq")?.as_u64()?,
                points: points.collect::<Option<_>>()?,
            })
        });
        let retired = v["retired"].as_array().map_or(Vec::new(), |list| {
            list.iter()
                .filter_map(|r| {
                    let reason = match r["reason"].as_str()? {
                        "disabled" => Retired::Disabled,
                        "unclean-shutdown" => Retired::UncleanShutdown,
                        _ => Retired::Reset,
                    };
                    Some((unhex(r["uuid"].as_str()?)?, reason))
                })
                .collect()
        });
        Self { current, retired }
    }

    fn to_json(&self) -> Value {
        let current = self.current.as_ref().map(|s| {
            let points: Vec<Value> = s
                .points
                .iter()
                .map(|(seq, p)| {
                    let extents: Vec<Value> =
                        p.extents.iter().map(|&(o, l)| json!([o, l])).collect();
                    json!({"seq": seq, "parent": p.parent, "extents": extents})
                })
                .collect();
            json!({"uuid": hex(&s.uuid), "base": s.base, "next-seq": s.next_seq, "points": points})
        });
        let retired: Vec<Value> = self
            .retired
            .iter()
            .map(|(uuid, reason)| {
                let reason = match reason {
                    Retired::Disabled => "disabled",
                    Retired::UncleanShutdown => "unclean-shutdown",
                    Retired::Reset => "reset",
                };
                json!({"uuid": hex(uuid), "reason": reason})
            })
            .collect();
        json!({"current": current, "retired": retired})
    }

    /// Ends the current session (if any) for `reason` and starts a new one whose first point
    /// is "now"; returns its first changeId.
    fn restart(&mut self, reason: Retired) -> ChangeId {
        if let Some(old) = self.current.take() {
            self.retired.push((old.uuid, reason));
        }
        let uuid = new_uuid();
        let mut points = BTreeMap::new();
        points.insert(
            1,
            Point {
                parent: None,
                extents: Vec::new(),
            },
        );
        self.current = Some(Session {
            uuid,
            base: 1,
            next_seq: 2,
            points,
        });
        ChangeId { uuid, seq: 1 }
    }

    /// The session a changeId must belong to, or the error saying why it does not.
    fn session_for(&self, id: &ChangeId) -> Result<&Session, CbtError> {
        let text = id.to_string();
        match &self.current {
            Some(s) if s.uuid == id.uuid => {
                if s.points.contains_key(&id.seq) {
                    Ok(s)
                } else {
                    Err(CbtError::UnknownPoint(text))
                }
            }
            current => match self.retired.iter().find(|(u, _)| *u == id.uuid) {
                Some((_, Retired::UncleanShutdown)) => Err(CbtError::Stale(text)),
                Some(_) => Err(CbtError::BeforeTracking(text)),
                None if current.is_none() => Err(CbtError::NotEnabled),
                None => Err(CbtError::OtherTracking(text)),
            },
        }
    }
}

impl Session {
    fn ancestors(&self, mut seq: u64) -> Vec<u64> {
        let mut out = vec![seq];
        while let Some(parent) = self.points.get(&seq).and_then(|p| p.parent) {
            if out.len() > self.points.len() {
                break;
            }
            out.push(parent);
            seq = parent;
        }
        out
    }

    /// Ranges that may differ between points `a` and `b`: the points on the path between them.
    fn changes_between(&self, a: u64, b: u64) -> Vec<(u64, u64)> {
        let (from_a, from_b) = (self.ancestors(a), self.ancestors(b));
        let (set_a, set_b): (HashSet<_>, HashSet<_>) =
            (from_a.iter().collect(), from_b.iter().collect());
        let mut extents = Vec::new();
        for seq in from_a
            .iter()
            .filter(|s| !set_b.contains(s))
            .chain(from_b.iter().filter(|s| !set_a.contains(s)))
        {
            extents.extend_from_slice(&self.points[seq].extents);
        }
        extents
    }
}

/// Sorts and merges ranges, keeping only what lies in `[start, start + len)`.
fn normalise(mut extents: Vec<(u64, u64)>, start: u64, len: u64) -> Vec<(u64, u64)> {
    let end = start.saturating_add(len);
    extents.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (o, l) in extents {
        let (s, e) = (o.max(start), (o + l).min(end));
        if s >= e {
            continue;
        }
        match out.last_mut() {
            Some(prev) if prev.0 + prev.1 >= s => prev.1 = prev.1.max(e - prev.0),
            _ => out.push((s, e - s)),
        }
    }
    out
}

fn open_image(path: &Path, read_only: bool) -> Result<Qcow2Image, TreeError> {
    let options = Qcow2Options {
        read_only,
        ..Qcow2Options::default()
    };
    Ok(Qcow2Image::open(path, &options).map_err(OpenError::from)?)
}

/// Reads the live bitmap `uuid` of the layer at `path`. Only a bitmap that was recording
/// every write counts: one disabled (`auto` clear, e.g. `qemu-img bitmap --disable`), left
/// in use, of another kind, missing, or in an image whose bitmaps a writer that does not know
/// them has invalidated (autoclear bit clear) is stale, never a silent miss.
fn read_live(path: &Path, uuid: &[u8; 16]) -> Result<Live, TreeError> {
    let file = std::fs::File::open(path).map_err(|source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if is_locked_by_writer(&file) {
        return Ok(Live::InUse);
    }
    if probe_format(path)? != ImageFormat::Qcow2 {
        return Ok(Live::Stale);
    }
    let image = open_image(path, true)?;
    let name = bitmap_name(uuid);
    let consistent = image.header().autoclear & AUTOCLEAR_BITMAPS != 0;
    match image.bitmap_entries().iter().find(|e| e.name == name) {
        Some(entry) if consistent && entry.is_usable() && entry.flags & FLAG_AUTO != 0 => {
            Ok(image.read_bitmap(&name)?.map_or(Live::Stale, Live::Bitmap))
        }
        _ => Ok(Live::Stale),
    }
}

/// Removes every tracking bitmap from the layer at `path` and, with `uuid`, adds a fresh one.
fn reset_live(
    path: &Path,
    uuid: Option<&[u8; 16]>,
    content: Option<DirtyBitmap>,
) -> Result<(), TreeError> {
    if probe_format(path)? != ImageFormat::Qcow2 {
        return Ok(()); // a raw active layer cannot carry a bitmap: reads will say stale
    }
    let mut image = open_image(path, false)?;
    let ours: Vec<String> = image
        .bitmap_entries()
        .iter()
        .filter(|e| e.name.starts_with(BITMAP_PREFIX))
        .map(|e| e.name.clone())
        .collect();
    for name in ours {
        image.remove_bitmap(&name)?;
    }
    if let Some(uuid) = uuid {
        let size = crate::BlockDevice::capacity(&image);
        let bitmap = content.unwrap_or_else(|| DirtyBitmap::new(size, GRANULARITY_BITS));
        image.add_bitmap(&bitmap_name(uuid), bitmap)?;
    }
    Ok(image.close()?)
}

/// Ranges of the chain `paths` (top first) that hold data, within `[start, start + len)`.
fn allocated_extents(
    paths: &[PathBuf],
    start: u64,
    len: u64,
) -> Result<Vec<(u64, u64)>, TreeError> {
    let mut undecided = vec![(start, len)];
    let mut out = Vec::new();
    for path in paths {
        let extents = if probe_format(path)? == ImageFormat::Raw {
            vec![(0, u64::MAX, ExtentKind::Data)]
        } else {
            let mut image = open_image(path, true)?;
            image
                .layer_extents()?
                .iter()
                .map(|e| (e.offset, e.len, e.kind))
                .collect()
        };
        let mut still = Vec::new();
        for &(us, ul) in &undecided {
            let ue = us + ul;
            let mut covered = us;
            for &(o, l, kind) in extents
                .iter()
                .filter(|(o, l, _)| *o < ue && o.saturating_add(*l) > us)
            {
                let (s, e) = (o.max(us), o.saturating_add(l).min(ue));
                if s > covered {
                    still.push((covered, s - covered));
                }
                match kind {
                    ExtentKind::Data => out.push((s, e - s)),
                    ExtentKind::Zero => {}
                    ExtentKind::Unallocated => still.push((s, e - s)),
                }
                covered = e;
            }
            if covered < ue {
                still.push((covered, ue - covered));
            }
        }
        undecided = still;
    }
    Ok(normalise(out, start, len))
}

impl DiskTree {
    fn tracking(&self) -> Tracking {
        Tracking::from_json(self.state().tracking.as_ref())
    }

    fn store_tracking(&mut self, tracking: &Tracking) -> Result<(), TreeError> {
        self.state_mut().tracking = Some(tracking.to_json());
        self.save_state()
    }

    /// Turns change tracking on (a no-op when it is on); returns the changeId of "now".
    pub fn enable_tracking(&mut self) -> Result<ChangeId, CbtError> {
        let mut tracking = self.tracking();
        if let Some(s) = &tracking.current {
            return Ok(ChangeId {
                uuid: s.uuid,
                seq: s.base,
            });
        }
        let id = tracking.restart(Retired::Disabled);
        self.store_tracking(&tracking)?;
        reset_live(&self.active_path(), Some(&id.uuid), None)?;
        Ok(id)
    }

    /// Turns change tracking off; every changeId issued so far becomes unusable.
    pub fn disable_tracking(&mut self) -> Result<(), CbtError> {
        let mut tracking = self.tracking();
        if let Some(old) = tracking.current.take() {
            tracking.retired.push((old.uuid, Retired::Disabled));
            self.store_tracking(&tracking)?;
        }
        reset_live(&self.active_path(), None, None)?;
        Ok(())
    }

    /// The changeId the active layer's changes are counted from (its last snapshot, revert or
    /// the enabling of tracking).
    pub fn current_change_id(&self) -> Result<ChangeId, CbtError> {
        match &self.tracking().current {
            Some(s) => Ok(ChangeId {
                uuid: s.uuid,
                seq: s.base,
            }),
            None => Err(CbtError::NotEnabled),
        }
    }

    /// Byte ranges of `[start, start + len)` that may differ between the disk at `since`
    /// and the disk as of snapshot `snapshot` (or now, with `None`); `"*"` gives the
    /// allocated ranges. Never misses a change; may over-report.
    pub fn changed_areas(
        &mut self,
        since: &str,
        snapshot: Option<&str>,
        start: u64,
        len: u64,
    ) -> Result<Vec<(u64, u64)>, CbtError> {
        if since == "*" {
            let paths = match snapshot {
                Some(name) => self.chain_of(name)?,
                None => self.active_chain(),
            };
            return Ok(allocated_extents(&paths, start, len)?);
        }
        let since: ChangeId = since.parse()?;
        let mut tracking = self.tracking();
        let (target, live) = match snapshot {
            Some(name) => {
                let layer = self.snapshot_layer(name)?;
                let record = self
                    .state()
                    .snapshots
                    .iter()
                    .find(|s| s.layer == layer && s.name == name);
                let id = record
                    .and_then(|r| r.change_id.as_deref())
                    .ok_or_else(|| CbtError::SnapshotNotTracked(name.to_string()))?;
                let id: ChangeId = id.parse()?;
                if tracking.current.as_ref().is_none_or(|s| s.uuid != id.uuid) {
                    return Err(CbtError::SnapshotNotTracked(name.to_string()));
                }
                (id.seq, Vec::new())
            }
            None => {
                let Some(session) = &tracking.current else {
                    return Err(tracking
                        .session_for(&since)
                        .err()
                        .unwrap_or(CbtError::NotEnabled));
                };
                let base = session.base;
                match read_live(&self.active_path(), &session.uuid)? {
                    Live::Bitmap(bitmap) => (base, bitmap.extents(0, u64::MAX)),
                    Live::InUse => return Err(CbtError::InUse(self.active_path())),
                    Live::Stale => {
                        let id = tracking.restart(Retired::UncleanShutdown);
                        self.store_tracking(&tracking)?;
                        reset_live(&self.active_path(), Some(&id.uuid), None)?;
                        return Err(tracking
                            .session_for(&since)
                            .err()
                            .unwrap_or(CbtError::Stale(since.to_string())));
                    }
                }
            }
        };
        let session = tracking.session_for(&since)?;
        let mut extents = session.changes_between(since.seq, target);
        extents.extend(live);
        Ok(normalise(extents, start, len))
    }
}

/// Snapshot hook, before the new child exists: takes the live bitmap out of the layer being
/// frozen. Returns what it held (`None` = tracking off), `Some(None)` when it was stale.
pub(crate) fn take_live(
    tree: &DiskTree,
    frozen: LayerId,
) -> Result<Option<Option<DirtyBitmap>>, TreeError> {
    let Some(session) = tree.tracking().current else {
        return Ok(None);
    };
    let path = tree.layer_path(frozen);
    let live = match read_live(&path, &session.uuid)? {
        Live::Bitmap(bitmap) => Some(bitmap),
        Live::Stale => None,
        Live::InUse => {
            return Err(TreeError::Block(BlockError::Io {
                path,
                source: std::io::Error::other("the active layer is open for writing"),
            }))
        }
    };
    reset_live(&path, None, None)?;
    Ok(Some(live))
}

/// Snapshot hook, after the new child exists: records the frozen point (or restarts the
/// session when the live bitmap was stale), gives the child a fresh live bitmap and returns
/// the snapshot's changeId. The caller saves the sidecar.
pub(crate) fn record_snapshot(
    tree: &mut DiskTree,
    taken: Option<Option<DirtyBitmap>>,
    child: LayerId,
) -> Result<Option<String>, TreeError> {
    let Some(live) = taken else {
        return Ok(None);
    };
    let mut tracking = tree.tracking();
    let id = match (live, tracking.current.as_mut()) {
        (Some(bitmap), Some(session)) => {
            let seq = session.next_seq;
            session.next_seq += 1;
            let extents = bitmap.extents(0, u64::MAX);
            session.points.insert(
                seq,
                Point {
                    parent: Some(session.base),
                    extents,
                },
            );
            session.base = seq;
            ChangeId {
                uuid: session.uuid,
                seq,
            }
        }
        _ => tracking.restart(Retired::UncleanShutdown),
    };
    tree.state_mut().tracking = Some(tracking.to_json());
    reset_live(&tree.layer_path(child), Some(&id.uuid), None)?;
    Ok(Some(id.to_string()))
}

/// Revert hook: the new active child counts from the snapshot's point; a snapshot outside
/// the current session restarts it. The caller saves the sidecar.
pub(crate) fn record_revert(
    tree: &mut DiskTree,
    snapshot_change_id: Option<&str>,
    child: LayerId,
) -> Result<(), TreeError> {
    let mut tracking = tree.tracking();
    let Some(session) = tracking.current.as_mut() else {
        return Ok(());
    };
    let point = snapshot_change_id
        .and_then(|c| c.parse::<ChangeId>().ok())
        .filter(|c| c.uuid == session.uuid && session.points.contains_key(&c.seq));
    let uuid = match point {
        Some(id) => {
            session.base = id.seq;
            id.uuid
        }
        None => tracking.restart(Retired::Reset).uuid,
    };
    tree.state_mut().tracking = Some(tracking.to_json());
    reset_live(&tree.layer_path(child), Some(&uuid), None)
}

/// Merge hook, after the active layer `from` was copied into `to`: `to` becomes the active
/// layer, so it gets `from`'s live bitmap (a stale one is not carried over, so it stays stale).
pub(crate) fn move_live(tree: &DiskTree, from: LayerId, to: LayerId) -> Result<(), TreeError> {
    let Some(session) = tree.tracking().current else {
        return Ok(());
    };
    match read_live(&tree.layer_path(from), &session.uuid)? {
        Live::Bitmap(bitmap) => reset_live(&tree.layer_path(to), Some(&session.uuid), Some(bitmap)),
        _ => reset_live(&tree.layer_path(to), None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_ids_round_trip_and_refuse_garbage() {
        let text = "52 ab f5 21 86 ad f2 ff-5b ef c0 f2 3b 53 eb 3b/78";
        let id: ChangeId = text.parse().unwrap();
        assert_eq!(id.seq, 78);
        assert_eq!(id.uuid[0], 0x52);
        assert_eq!(id.to_string(), text);
        for bad in [
            "",
            "*x",
            "52 ab/1",
            "52 ab f5 21 86 ad f2 ff-5b ef c0 f2 3b 53 eb/1",
            "52 ab f5 21 86 ad f2 ff-5b ef c0 f2 3b 53 eb 3b/x",
        ] {
            assert!(bad.parse::<ChangeId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn changes_between_points_follow_the_tree_path() {
        let mut t = Tracking::default();
        t.restart(Retired::Disabled);
        let s = t.current.as_mut().unwrap();
        s.points.insert(
            2,
            Point {
                parent: Some(1),
                extents: vec![(0, 10)],
            },
        );
        s.points.insert(
            3,
            Point {
                parent: Some(2),
                extents: vec![(100, 10)],
            },
        );
        s.points.insert(
            4,
            Point {
                parent: Some(2),
                extents: vec![(200, 10)],
            },
        );
        let s = t.current.clone().unwrap();
        assert_eq!(
            normalise(s.changes_between(3, 4), 0, 1000),
            vec![(100, 10), (200, 10)]
        );
        assert_eq!(
            normalise(s.changes_between(1, 3), 0, 1000),
            vec![(0, 10), (100, 10)]
        );
        assert!(s.changes_between(2, 2).is_empty());
        let back = Tracking::from_json(Some(&t.to_json()));
        assert_eq!(back, t);
        let old = ChangeId {
            uuid: [9; 16],
            seq: 1,
        };
        assert!(matches!(
            t.session_for(&old),
            Err(CbtError::OtherTracking(_))
        ));
        let first = ChangeId {
            uuid: s.uuid,
            seq: 1,
        };
        t.restart(Retired::UncleanShutdown);
        assert!(matches!(t.session_for(&first), Err(CbtError::Stale(_))));
    }
}
