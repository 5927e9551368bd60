//! A bounded XML tree for OVF descriptors, which come from clients and packages nobody
//! vetted: the text is size-capped before parsing, DTDs (and with them entity expansion) are
//! refused, only the five predefined entities and character references are resolved, and
//! the element count and nesting depth are capped. Names are kept without their namespace
//! prefix (`ovf:href` → `href`), as OVF producers disagree on prefixes.

use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::Reader;

/// The largest descriptor accepted, in bytes.
pub const MAX_DESCRIPTOR_BYTES: usize = 4 << 20;
/// The most elements a descriptor may hold.
pub const MAX_ELEMENTS: usize = 50_000;
/// The deepest nesting accepted.
pub const MAX_DEPTH: usize = 32;

/// Why a descriptor is not usable XML.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XmlError {
    /// Larger than `MAX_DESCRIPTOR_BYTES`
    #[error("the descriptor is {0} bytes, more than the {MAX_DESCRIPTOR_BYTES} accepted")]
    TooLarge(usize),
    /// Has a document type declaration
    #[error("document type declarations (DTDs, entities) are not accepted")]
    Doctype,
    /// More elements than `MAX_ELEMENTS`
    #[error("more than {MAX_ELEMENTS} elements")]
    TooManyElements,
    /// Nested deeper than `MAX_DEPTH`
    #[error("elements nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// Not well-formed
    #[error("malformed XML at byte {position}: {reason}")]
    Malformed {
        /// Where the parser stopped.
        position: u64,
        /// What it found.
        reason: String,
    },
}

/// One element: its local name, attributes (local names), text and children.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Element {
    /// The name without a prefix.
    pub name: String,
    /// Attributes as (local name, value).
    pub attrs: Vec<(String, String)>,
    /// The text directly inside it, concatenated.
    pub text: String,
    /// Child elements in order.
    pub children: Vec<Element>,
}

impl Element {
    /// The value of the attribute with this local name.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The children with this local name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The trimmed text of the first child with this local name.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }
}

/// Parses `text` into its root element, within the bounds above.
pub fn parse(text: &str) -> Result<Element, XmlError> {
    if text.len() > MAX_DESCRIPTOR_BYTES {
        return Err(XmlError::TooLarge(text.len()));
    }
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut count = 0usize;
    loop {
        let malformed = |reason: String, reader: &Reader<&[u8]>| XmlError::Malformed {
            position: reader.buffer_position(),
            reason,
        };
        let event = reader
            .read_event()
            .map_err(|e| malformed(e.to_string(), &reader))?;
        match event {
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Start(ref start) | Event::Empty(ref start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(XmlError::TooManyElements);
                }
                let opened = element(start).map_err(|e| malformed(e, &reader))?;
                if matches!(event, Event::Start(_)) {
                    stack.push(opened);
                    continue;
                }
                match stack.last_mut() {
                    Some(parent) => parent.children.push(opened),
                    None => return Ok(opened),
                }
            }
            Event::End(_) => {
                let done = stack
                    .pop()
                    .ok_or_else(|| malformed("unbalanced end tag".into(), &reader))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return Ok(done),
                }
            }
            Event::Text(t) => {
                let piece = t.decode().map_err(|e| malformed(e.to_string(), &reader))?;
                if let Some(current) = stack.last_mut() {
                    current.text.push_str(&piece);
                }
            }
            Event::CData(t) => {
                let piece = t.decode().map_err(|e| malformed(e.to_string(), &reader))?;
                if let Some(current) = stack.last_mut() {
                    current.text.push_str(&piece);
                }
            }
            Event::GeneralRef(r) => {
                let c = reference(&r).map_err(|e| malformed(e, &reader))?;
                if let Some(current) = stack.last_mut() {
                    current.text.push(c);
                }
            }
            Event::Eof => return Err(malformed("the document ends early".into(), &reader)),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
}

/// An element's name and attributes (values unescaped with the predefined entities only).
fn element(start: &BytesStart<'_>) -> Result<Element, String> {
    let name =
        String::from_utf8(start.local_name().as_ref().to_vec()).map_err(|e| e.to_string())?;
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| e.to_string())?;
        let key = String::from_utf8(attr.key.local_name().as_ref().to_vec())
            .map_err(|e| e.to_string())?;
        let value = attr.unescape_value().map_err(|e| e.to_string())?;
        attrs.push((key, value.into_owned()));
    }
    Ok(Element {
        name,
        attrs,
        ..Element::default()
    })
}

/// A character or predefined entity reference; anything else is refused.
fn reference(r: &BytesRef<'_>) -> Result<char, String> {
    if let Some(c) = r.resolve_char_ref().map_err(|e| e.to_string())? {
        return Ok(c);
    }
    match &**r {
        b"amp" => Ok('&'),
        b"lt" => Ok('<'),
        b"gt" => Ok('>'),
        b"quot" => Ok('"'),
        b"apos" => Ok('\''),
        other => Err(format!(
            "unknown entity &{};",
            String::from_utf8_lossy(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_without_prefixes_attributes_and_text() {
        let root = parse(
            "<?xml version=\"1.0\"?><ovf:Envelope xmlns:ovf=\"x\"><a ovf:href=\"d&amp;1\">t&lt;1&#65;</a><b/></ovf:Envelope>",
        )
        .unwrap();
        assert_eq!(root.name, "Envelope");
        let a = root.child("a").unwrap();
        assert_eq!(a.attr("href"), Some("d&1"));
        assert_eq!(a.text, "t<1A");
        assert!(root.child("b").is_some());
    }

    #[test]
    fn refuses_dtds_entities_depth_size_and_broken_documents() {
        let billion = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;\">]><Envelope>&lol2;</Envelope>";
        assert_eq!(parse(billion), Err(XmlError::Doctype));
        assert!(matches!(
            parse("<Envelope>&xxe;</Envelope>"),
            Err(XmlError::Malformed { .. })
        ));
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(&deep), Err(XmlError::TooDeep));
        let wide = format!("<a>{}</a>", "<b/>".repeat(MAX_ELEMENTS + 1));
        assert_eq!(parse(&wide), Err(XmlError::TooManyElements));
        let huge = format!("<a>{}</a>", "x".repeat(MAX_DESCRIPTOR_BYTES));
        assert!(matches!(parse(&huge), Err(XmlError::TooLarge(_))));
        assert!(matches!(
            parse("<a><b></a>"),
            Err(XmlError::Malformed { .. })
        ));
        assert!(matches!(parse("<a>"), Err(XmlError::Malformed { .. })));
    }
}
