//! UUIDs in their two spellings: the API form `564d1234-5678-9abc-def0-123456789abc` (VM BIOS and
//! instance UUIDs, the host's UUID, session keys) and the `.vmx` form
//! `56 4d 12 34 56 78 9a bc-de f0 12 34 56 78 9a bc` (`uuid.bios`, `vc.uuid`).

/// The API form of sixteen bytes.
pub fn from_bytes(bytes: &[u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The API form of any spelling with 32 hex digits (the `.vmx` form, or bare hex); other text
/// is returned as it is.
pub fn to_api(text: &str) -> String {
    match hex_bytes(text) {
        Some(bytes) => from_bytes(&bytes),
        None => text.to_string(),
    }
}

/// The API form of a client's UUID, if it spells one (32 hex digits, dashes and spaces aside).
pub fn parse(text: &str) -> Option<String> {
    let spelt = text
        .chars()
        .all(|c| c.is_ascii_hexdigit() || c == '-' || c == ' ');
    hex_bytes(text)
        .filter(|_| spelt)
        .map(|bytes| from_bytes(&bytes))
}

/// The `.vmx` form of an API UUID: sixteen hex bytes, a dash after the eighth; other text is
/// returned as it is.
pub fn to_vmx(uuid: &str) -> String {
    let Some(bytes) = hex_bytes(uuid) else {
        return uuid.to_string();
    };
    let byte = |b: &u8| format!("{b:02x}");
    let (high, low) = bytes.split_at(8);
    let half = |part: &[u8]| part.iter().map(byte).collect::<Vec<_>>().join(" ");
    format!("{}-{}", half(high), half(low))
}

/// A random version-4 UUID in API form.
pub fn try_random() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Ok(from_bytes(&bytes))
}

/// A random version-4 UUID in API form; panics only if the kernel has no random source.
pub fn random() -> String {
    try_random().expect("the kernel's random source")
}

/// The sixteen bytes spelt by exactly 32 hex digits among other characters.
pub fn hex_bytes(text: &str) -> Option<[u8; 16]> {
    let digits: Vec<u8> = text
        .chars()
        .filter_map(|c| c.to_digit(16))
        .map(|d| d as u8)
        .collect();
    if digits.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks(2)) {
        *byte = pair[0] << 4 | pair[1];
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmx_and_api_forms_convert_both_ways() {
        let vmx = "56 4d 12 34 56 78 9a bc-de f0 12 34 56 78 9A BC";
        let api = "564d1234-5678-9abc-def0-123456789abc";
        assert_eq!(to_api(vmx), api);
        assert_eq!(to_vmx(api), vmx.to_ascii_lowercase());
        assert_eq!(to_api(&to_vmx(api)), api);
        assert_eq!(to_api("564D12345678"), "564D12345678", "too short: kept");
    }

    #[test]
    fn random_uuids_are_version_4_and_differ() {
        let (a, b) = (random(), random());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        assert_eq!(to_api(&a), a);
    }
}
