//! vireo-vmm: see README.md of this crate.
