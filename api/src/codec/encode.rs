//! Writes SOAP responses and faults from value trees, following the schema: field order,
//! `xsi:type` on Any values and on subclasses, `ArrayOfX` inside Any, MoRefs, and leaving out
//! every field and type the client's negotiated version does not know.

use base64::Engine;

use super::datetime;
use crate::fault::Fault;
use crate::schema::{ClientVersion, MethodId, Primitive, Schema, TypeId, TypeRef};
use crate::value::{DataObject, Value};

const ENVELOPE_START: &str = concat!(
    r#"<?xml version="1.0" encoding="UTF-8"?>"#,
    "\n",
    r#"<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" "#,
    r#"xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" "#,
    r#"xmlns:xsd="http://www.w3.org/2001/XMLSchema" "#,
    r#"xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">"#,
    "\n<soapenv:Body>"
);
const ENVELOPE_END: &str = "</soapenv:Body>\n</soapenv:Envelope>";

/// Appends the response envelope of `method` carrying `result` (None for void or unset).
pub fn encode_response(
    schema: &Schema,
    version: ClientVersion,
    method: MethodId,
    result: Option<&Value>,
    out: &mut Vec<u8>,
) {
    let def = schema.method(method);
    out.extend_from_slice(ENVELOPE_START.as_bytes());
    out.push(b'<');
    out.extend_from_slice(def.name.as_bytes());
    out.extend_from_slice(b"Response xmlns=\"urn:vim25\">");
    if let (Some(value), Some(declared)) = (result, def.result) {
        Encoder {
            schema,
            version,
            out: &mut *out,
        }
        .field("returnval", declared, value, FaultForm::Localized);
    }
    out.extend_from_slice(b"</");
    out.extend_from_slice(def.name.as_bytes());
    out.extend_from_slice(b"Response>");
    out.extend_from_slice(ENVELOPE_END.as_bytes());
}

/// Appends a SOAP fault envelope: `faultcode`, `faultstring` and a typed `detail`.
pub fn encode_fault(schema: &Schema, version: ClientVersion, fault: &Fault, out: &mut Vec<u8>) {
    let ty = schema.known_ancestor(fault.data.ty, version);
    let name = &schema.ty(ty).name;
    out.extend_from_slice(ENVELOPE_START.as_bytes());
    out.extend_from_slice(b"<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>");
    escape(out, &fault.message);
    out.extend_from_slice(b"</faultstring><detail><");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"Fault xmlns=\"urn:vim25\" xsi:type=\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\">");
    Encoder {
        schema,
        version,
        out: &mut *out,
    }
    .fields(&fault.data, ty);
    out.extend_from_slice(b"</");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"Fault></detail></soapenv:Fault>");
    out.extend_from_slice(ENVELOPE_END.as_bytes());
}

/// Appends one element `<name>` holding `value` declared as `declared`.
pub fn encode_element(
    schema: &Schema,
    version: ClientVersion,
    name: &str,
    declared: TypeRef,
    value: &Value,
    out: &mut Vec<u8>,
) {
    Encoder {
        schema,
        version,
        out,
    }
    .field(name, declared, value, FaultForm::Localized);
}

/// How a MethodFault value is written: wrapped in a LocalizedMethodFault (everywhere a client
/// reads a fault-typed field; pyVmomi insists), or bare (inside that wrapper and in SOAP fault
/// details).
#[derive(Clone, Copy, PartialEq, Eq)]
enum FaultForm {
    Localized,
    Bare,
}

struct Encoder<'a> {
    schema: &'a Schema,
    version: ClientVersion,
    out: &'a mut Vec<u8>,
}

impl Encoder<'_> {
    /// A field: one element, or one element per item when declared as an array.
    fn field(&mut self, name: &str, declared: TypeRef, value: &Value, form: FaultForm) {
        if declared.array {
            for item in value.items() {
                self.element(name, declared.ty, item, form);
            }
        } else {
            self.element(name, declared.ty, value, form);
        }
    }

    fn element(&mut self, name: &str, declared: TypeId, value: &Value, form: FaultForm) {
        let schema = self.schema;
        let in_any = declared == schema.well_known().any;
        match value {
            Value::Array(item_ty, items) => {
                let item_ty = schema.known_ancestor(*item_ty, self.version);
                let item_name = &schema.ty(item_ty).name;
                self.open(name);
                self.out.extend_from_slice(b" xsi:type=\"ArrayOf");
                let mut chars = item_name.chars();
                if let Some(first) = chars.next() {
                    self.out.push(first.to_ascii_uppercase() as u8);
                    self.out.extend_from_slice(chars.as_str().as_bytes());
                }
                self.out.extend_from_slice(b"\">");
                let item_element = if item_ty == schema.well_known().moref {
                    "ManagedObjectReference"
                } else {
                    item_name
                };
                for item in items {
                    self.element(item_element, item_ty, item, form);
                }
                self.close(name);
            }
            Value::MoRef(m) => {
                self.open(name);
                if in_any {
                    self.out
                        .extend_from_slice(b" xsi:type=\"ManagedObjectReference\"");
                }
                self.out.extend_from_slice(b" type=\"");
                escape(self.out, &m.ty);
                self.out.extend_from_slice(b"\">");
                escape(self.out, &m.id);
                self.close(name);
            }
            Value::Data(object) if form == FaultForm::Localized && self.is_bare_fault(object) => {
                self.localized_fault(name, object);
            }
            Value::Data(object) => {
                let ty = schema.known_ancestor(object.ty, self.version);
                self.open(name);
                if ty != declared {
                    self.out.extend_from_slice(b" xsi:type=\"");
                    self.out.extend_from_slice(schema.ty(ty).name.as_bytes());
                    self.out.push(b'"');
                }
                self.out.push(b'>');
                self.fields(object, ty);
                self.close(name);
            }
            Value::Enum(ty, text) => {
                self.open(name);
                if in_any {
                    self.out.extend_from_slice(b" xsi:type=\"");
                    self.out.extend_from_slice(schema.ty(*ty).name.as_bytes());
                    self.out.push(b'"');
                }
                self.out.push(b'>');
                escape(self.out, text);
                self.close(name);
            }
            primitive => {
                self.open(name);
                if in_any {
                    self.out.extend_from_slice(b" xsi:type=\"");
                    self.out
                        .extend_from_slice(primitive_of(primitive).xsi_type().as_bytes());
                    self.out.push(b'"');
                }
                self.out.push(b'>');
                self.primitive_text(primitive);
                self.close(name);
            }
        }
    }

    /// The fields of `object` that a client knowing `as_type` (an ancestor of its type) and
    /// the negotiated version can read, in schema order.
    fn fields(&mut self, object: &DataObject, as_type: TypeId) {
        let schema = self.schema;
        let defs = schema.fields(as_type);
        for (def, value) in defs.iter().zip(&object.fields) {
            let Some(value) = value else { continue };
            if !schema.versions().knows(self.version, def.version) {
                continue;
            }
            // The one place a fault goes on the wire bare: inside its LocalizedMethodFault.
            let form =
                if as_type == schema.well_known().localized_method_fault && &*def.name == "fault" {
                    FaultForm::Bare
                } else {
                    FaultForm::Localized
                };
            self.field(&def.name, def.ty, value, form);
        }
    }

    /// A MethodFault value that is not already a LocalizedMethodFault.
    fn is_bare_fault(&self, object: &DataObject) -> bool {
        let known = self.schema.well_known();
        object.ty != known.localized_method_fault && self.schema.is_a(object.ty, known.method_fault)
    }

    /// Writes a fault value inside a LocalizedMethodFault wrapper (its `msg` as the message).
    fn localized_fault(&mut self, name: &str, fault: &DataObject) {
        let schema = self.schema;
        let mut wrapper = DataObject::new(schema, schema.well_known().localized_method_fault);
        wrapper.set(schema, "fault", fault.clone());
        if let Some(message) = fault.get(schema, "msg") {
            wrapper.set(schema, "localizedMessage", message.clone());
        }
        self.element(
            name,
            schema.well_known().method_fault,
            &Value::Data(Box::new(wrapper)),
            FaultForm::Bare,
        );
    }

    fn primitive_text(&mut self, value: &Value) {
        use std::io::Write;
        let out = &mut *self.out;
        let _ = match value {
            Value::Bool(b) => out.write_all(if *b { b"true" } else { b"false" }),
            Value::Byte(v) => write!(out, "{v}"),
            Value::Short(v) => write!(out, "{v}"),
            Value::Int(v) => write!(out, "{v}"),
            Value::Long(v) => write!(out, "{v}"),
            Value::Float(v) => write!(out, "{v}"),
            Value::Double(v) => write!(out, "{v}"),
            Value::String(s) => {
                escape(out, s);
                Ok(())
            }
            Value::DateTime(micros) => {
                let mut text = String::with_capacity(27);
                datetime::format(*micros, &mut text);
                out.write_all(text.as_bytes())
            }
            Value::Binary(bytes) => {
                let text = base64::engine::general_purpose::STANDARD.encode(bytes);
                out.write_all(text.as_bytes())
            }
            Value::Enum(..) | Value::MoRef(_) | Value::Data(_) | Value::Array(..) => Ok(()),
        };
    }

    fn open(&mut self, name: &str) {
        self.out.push(b'<');
        self.out.extend_from_slice(name.as_bytes());
    }

    fn close(&mut self, name: &str) {
        self.out.extend_from_slice(b"</");
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'>');
    }
}

/// The primitive type of a primitive value.
fn primitive_of(value: &Value) -> Primitive {
    match value {
        Value::Bool(_) => Primitive::Boolean,
        Value::Byte(_) => Primitive::Byte,
        Value::Short(_) => Primitive::Short,
        Value::Int(_) => Primitive::Int,
        Value::Long(_) => Primitive::Long,
        Value::Float(_) => Primitive::Float,
        Value::Double(_) => Primitive::Double,
        Value::DateTime(_) => Primitive::DateTime,
        Value::Binary(_) => Primitive::Binary,
        _ => Primitive::String,
    }
}

/// Appends `text` with XML's special characters escaped (safe in text and attributes). A
/// character XML 1.0 cannot carry at all (a control character, e.g. from a file name on disk)
/// becomes U+FFFD, so the document stays well-formed.
pub fn escape(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !ESCAPE_CANDIDATE[b as usize] {
            continue;
        }
        let replacement: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'"' => b"&quot;",
            b'\'' => b"&apos;",
            0xEF if is_nonchar_at(bytes, i) => "\u{FFFD}".as_bytes(),
            0xEF => continue,
            _ => "\u{FFFD}".as_bytes(),
        };
        let width = if b == 0xEF { 3 } else { 1 };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(replacement);
        start = i + width;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// The bytes [`escape`] looks at (one table lookup per byte of text): XML's special
/// characters and every byte [`super::may_start_non_xml_char`] flags.
static ESCAPE_CANDIDATE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = super::may_start_non_xml_char(b as u8)
            || matches!(b as u8, b'&' | b'<' | b'>' | b'"' | b'\'');
        b += 1;
    }
    table
};

/// Whether the UTF-8 at `bytes[i..]` is U+FFFE or U+FFFF (which XML does not allow).
fn is_nonchar_at(bytes: &[u8], i: usize) -> bool {
    matches!(bytes.get(i + 1..i + 3), Some([0xBF, 0xBE | 0xBF]))
}
