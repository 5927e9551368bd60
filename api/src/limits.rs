//! Bounds on client input: the caps the SOAP decoder enforces on every request, and [`clip`],
//! which shortens any client-chosen string before it is stored, logged or echoed in a fault.

/// Deepest element nesting accepted inside a request's arguments.
pub const MAX_DEPTH: usize = 64;
/// Most attributes on one element (namespace declarations included).
pub const MAX_ATTRIBUTES: usize = 64;
/// Most namespace declarations (`xmlns`, `xmlns:p`) on one element.
pub const MAX_NAMESPACE_DECLARATIONS: usize = 32;
/// Most namespace declarations in scope at once (on an element and its ancestors).
pub const MAX_NAMESPACES_IN_SCOPE: usize = 256;
/// Longest element or attribute name, in bytes (vim25's longest are under 100).
pub const MAX_NAME: usize = 1024;
/// Most elements decoded into values in one request.
pub const MAX_ELEMENTS: usize = 200_000;
/// Longest client string kept whole, in characters.
pub const MAX_CLIENT_STRING: usize = 256;

/// `text` cut to [`MAX_CLIENT_STRING`] characters, with `…` marking a cut.
pub fn clip(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(MAX_CLIENT_STRING) {
        None => text.into(),
        Some((end, _)) => format!("{}…", &text[..end]).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_strings_and_cuts_long_ones_on_char_boundaries() {
        assert_eq!(clip("root"), "root");
        let exact = "é".repeat(MAX_CLIENT_STRING);
        assert_eq!(clip(&exact), exact);
        let long = "é".repeat(MAX_CLIENT_STRING * 1000);
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), MAX_CLIENT_STRING + 1);
        assert!(clipped.ends_with('…'));
    }
}
