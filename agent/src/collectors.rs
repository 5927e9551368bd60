//! The state of the collectors a session holds, below the SOAP layer: a PropertyCollector's
//! filters, update version and retrieval pages (kept in the session), and a history
//! collector's filter, page size and scroll position (kept by the host). Only the state lives
//! here; the methods that read and change it are `methods::property_collector` and
//! `methods::history`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use vireo_api::collector::{FilterSnapshot, FilterSpec, ObjectContent};
use vireo_api::{DataObject, MoRef};

/// One session's state on one PropertyCollector.
#[derive(Default)]
pub struct CollectorState {
    /// Its filters, in creation order.
    pub(crate) filters: Vec<FilterState>,
    /// The version of the last update set handed out.
    pub(crate) version: u64,
    /// Objects still to be returned per token, with the page size asked for.
    pub(crate) pages: HashMap<String, (VecDeque<ObjectContent>, usize)>,
    /// The next retrieval token.
    pub(crate) next_token: u64,
    /// Wakes this collector's waiters for CancelWaitForUpdates.
    pub(crate) cancel: Arc<tokio::sync::Notify>,
}

/// One PropertyFilter of a collector: what it selects and what its client last saw.
pub(crate) struct FilterState {
    pub(crate) obj: MoRef,
    pub(crate) spec: FilterSpec,
    pub(crate) snapshot: FilterSnapshot,
}

impl CollectorState {
    /// References of this collector's filters.
    pub fn filter_refs(&self) -> Vec<MoRef> {
        self.filters.iter().map(|f| f.obj.clone()).collect()
    }

    /// Drops the filter `obj` from this collector.
    pub fn forget_filter(&mut self, obj: &MoRef) {
        self.filters.retain(|f| f.obj != *obj);
    }
}

/// What a history collector reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryKind {
    /// Events (EventFilterSpec).
    Events,
    /// Task infos (TaskFilterSpec).
    Tasks,
}

/// One event or task history collector's state.
pub struct HistoryCollector {
    pub(crate) kind: HistoryKind,
    pub(crate) filter: Option<DataObject>,
    pub(crate) page_size: usize,
    /// Index into the matching items (oldest first) where the scroll view stands.
    pub(crate) position: usize,
}
