//! vireo-agent: see README.md of this crate.
