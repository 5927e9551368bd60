//! vireo-disk: see README.md of this crate.
