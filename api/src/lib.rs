//! vireo-api: see README.md of this crate.
