//! The PropertyCollector's semantics, independent of where objects live: filter specs read
//! from request values ([`spec`]), object selection by traversal and property retrieval by
//! dotted path ([`retrieve`]), and the enter/modify/leave diff behind WaitForUpdates ([`updates`]).
//! Sessions, paging state and blocking waits belong to the agent.

pub mod retrieve;
pub mod spec;
pub mod updates;

pub use retrieve::{retrieve, ObjectContent, ObjectSource, PropertyValue};
pub use spec::{FilterSpec, ParseSpecError};
pub use updates::{diff, FilterSnapshot, ObjectUpdate, UpdateKind};

#[cfg(test)]
mod tests;
