//! Just enough AML to power off: the `_S5_` package of the DSDT, found by its byte pattern
//! (NameOp "_S5_" PackageOp) rather than by interpreting the table.

const NAME_S5: &[u8] = &[0x08, b'_', b'S', b'5', b'_', 0x12];
const BYTE_PREFIX: u8 = 0x0a;

/// SLP_TYPa of `\_S5_` (the first package element), if the DSDT has one.
pub fn s5_sleep_type(aml: &[u8]) -> Option<u8> {
    let at = aml
        .windows(NAME_S5.len())
        .position(|window| window == NAME_S5)?;
    let package = &aml[at + NAME_S5.len()..];
    // PkgLength: bits 7-6 of the lead byte count the bytes that follow it.
    let pkg_length_bytes = 1 + usize::from(package.first()? >> 6);
    // Then NumElements, then the first element.
    let element = package.get(pkg_length_bytes + 1..)?;
    match *element.first()? {
        BYTE_PREFIX => element.get(1).copied(),
        constant => Some(constant),
    }
}
