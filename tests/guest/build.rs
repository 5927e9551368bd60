//! Lets the linker find `link.ld` and rebuilds when the linker script or the ring-0 assembly change.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-search={dir}");
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=src/arch");
}
