//! Reads a SOAP request envelope into a [`Request`]: the method, `_this` and the arguments as
//! value trees typed by the schema (`xsi:type` honoured, namespace-aware). Unknown elements are
//! skipped so newer clients still work; malformed input is an error, never a panic. Work is
//! linear in the input: every element's attributes and namespace declarations are capped
//! ([`crate::limits`]) before anything looks them up, and prefixes resolve in constant time.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{PrefixDeclaration, QName};
use quick_xml::Reader;

use super::datetime;
use crate::fault::Fault;
use crate::limits::{
    clip, MAX_ATTRIBUTES, MAX_DEPTH, MAX_ELEMENTS, MAX_NAME, MAX_NAMESPACES_IN_SCOPE,
    MAX_NAMESPACE_DECLARATIONS,
};
use crate::schema::{MethodId, Primitive, Schema, TypeId, TypeKind};
use crate::value::{DataObject, MoRef, Value};

const XSI_NAMESPACE: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// A decoded method call.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method called.
    pub method: MethodId,
    /// The object it is called on.
    pub this: MoRef,
    /// Arguments by parameter position; arrays are `Value::Array`.
    pub args: Vec<Option<Value>>,
}

impl Request {
    /// An argument by parameter name. The name must be a parameter of the method: debug builds
    /// (and so tests) panic on any other, since a misspelt name would read as unset.
    pub fn arg(&self, schema: &Schema, name: &str) -> Option<&Value> {
        let method = schema.method(self.method);
        let index = method.params.iter().position(|p| &*p.name == name);
        debug_assert!(index.is_some(), "{} has no parameter {name}", method.name);
        self.args[index?].as_ref()
    }
}

/// Why a request could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeRequestError {
    /// Not well-formed XML or not a SOAP envelope with a body.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The method name is unknown to the schema.
    #[error("unknown method {method}")]
    UnknownMethod {
        /// The object the method was called on.
        receiver: MoRef,
        /// The method name.
        method: String,
    },
    /// An argument has the wrong type or an unparsable value, or a required one is missing.
    #[error("invalid argument {name}: {problem}")]
    InvalidArgument {
        /// The argument.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// The request exceeds one of the decoder's caps ([`crate::limits`]).
    #[error("request too complex: {0}")]
    LimitExceeded(String),
}

impl DecodeRequestError {
    /// The vim25 fault for this error.
    pub fn to_fault(&self, schema: &Schema) -> Fault {
        match self {
            DecodeRequestError::Malformed(why) => Fault::invalid_request(schema, why.clone()),
            DecodeRequestError::LimitExceeded(why) => {
                Fault::invalid_request(schema, format!("request too complex: {why}"))
            }
            DecodeRequestError::UnknownMethod { receiver, method } => {
                Fault::method_not_found(schema, receiver, method)
            }
            DecodeRequestError::InvalidArgument { name, problem } => Fault::invalid_argument(
                schema,
                name,
                format!("A specified parameter was not correct: {name} ({problem})"),
            ),
        }
    }
}

type Result<T> = std::result::Result<T, DecodeRequestError>;

fn malformed(why: impl std::fmt::Display) -> DecodeRequestError {
    DecodeRequestError::Malformed(clip(&why.to_string()).into_owned())
}

fn too_complex(why: String) -> DecodeRequestError {
    DecodeRequestError::LimitExceeded(why)
}

/// Decodes one SOAP request body.
pub fn decode_request(schema: &Schema, body: &[u8]) -> Result<Request> {
    let text = std::str::from_utf8(body).map_err(|_| malformed("request is not UTF-8"))?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut decoder = Decoder {
        schema,
        input: text,
        reader,
        open: 0,
        elements: 0,
        namespaces: Namespaces::default(),
        types: TypeAttributes::default(),
    };
    decoder.envelope()
}

struct Decoder<'s, 'i> {
    schema: &'s Schema,
    /// The body the reader reads: the events' names, raw attribute values and texts are
    /// slices of it.
    input: &'i str,
    reader: Reader<&'i [u8]>,
    /// Elements open around the reader's position.
    open: usize,
    /// Elements read so far (skipped subtrees are not read element by element).
    elements: usize,
    namespaces: Namespaces<'i>,
    /// The `type` attributes of the element entered last.
    types: TypeAttributes<'i>,
}

/// `part`, a slice of `input`, borrowed for as long as `input` is. Every element name, raw
/// attribute value and text the slice reader returns is one, cut where markup begins or ends
/// (never inside a character), so this checks character boundaries rather than validating the
/// bytes again. Anything else is an error, not a panic.
fn within<'i>(input: &'i str, part: &[u8]) -> Result<&'i str> {
    let offset = (part.as_ptr() as usize).wrapping_sub(input.as_ptr() as usize);
    input
        .get(offset..offset.wrapping_add(part.len()))
        .filter(|slice| slice.as_ptr() == part.as_ptr())
        .ok_or_else(|| malformed("the XML reader returned text outside the request"))
}

/// The namespace prefixes in scope, for resolving `xsi:type`. Bindings are dropped lazily: on
/// entering an element at level `n`, every binding made at level `n` or deeper belongs to an
/// element already closed. Each binding is added and dropped once, and a lookup is one hash.
/// Only prefixes with an XSI binding in scope are tracked (from that binding on): another
/// prefix's innermost binding cannot be the XSI namespace, so its bindings are only counted.
/// Prefixes are borrowed from the request, so tracking one costs no allocation.
#[derive(Default)]
struct Namespaces<'i> {
    /// Per tracked prefix, the position in `in_scope` of its innermost binding.
    innermost: HashMap<&'i [u8], usize>,
    /// Every binding in scope in document order.
    in_scope: Vec<Binding<'i>>,
}

/// A namespace declaration in scope.
struct Binding<'i> {
    /// The level of the element that made it.
    level: usize,
    /// For a tracked prefix: the prefix, whether it is bound to the XSI namespace, and the
    /// position in `in_scope` of the binding of the same prefix it shadows.
    tracked: Option<(&'i [u8], bool, Option<usize>)>,
}

/// The attributes of an element the decoder reads by name, found in the one pass over its
/// attributes that [`Decoder::enter`] makes: the unprefixed `type` of a MoRef and `xsi:type`.
#[derive(Default)]
struct TypeAttributes<'i> {
    /// The element's name, which identifies the element (it is a slice of the input).
    element: &'i [u8],
    /// The unprefixed `type` attribute.
    plain: Found<'i>,
    /// The `type` attribute whose prefix is bound to the XSI namespace.
    xsi: Found<'i>,
}

/// What an element holds of an attribute it may carry once.
#[derive(Default)]
enum Found<'i> {
    /// None.
    #[default]
    Absent,
    /// One.
    One(Attribute<'i>),
    /// More than one, under this name: the request is malformed if the value is read.
    Duplicate(&'i [u8]),
}

impl<'i> Found<'i> {
    fn add(&mut self, attr: Attribute<'i>) {
        *self = match self {
            Found::Absent => Found::One(attr),
            _ => Found::Duplicate(attr.key.into_inner()),
        };
    }

    /// The unescaped value, if the attribute is there once.
    fn value(&self) -> Result<Option<Cow<'i, str>>> {
        match self {
            Found::Absent => Ok(None),
            Found::One(attr) => attribute_value(attr).map(Some),
            Found::Duplicate(name) => Err(malformed(format!(
                "duplicate attribute {}",
                String::from_utf8_lossy(name)
            ))),
        }
    }
}

impl<'i> Namespaces<'i> {
    /// Drops the bindings of the elements closed before an element at `level` begins.
    fn leave_closed(&mut self, level: usize) {
        while self.in_scope.last().is_some_and(|b| b.level >= level) {
            let Some(Binding {
                tracked: Some((prefix, _, shadows)),
                ..
            }) = self.in_scope.pop()
            else {
                continue;
            };
            match shadows {
                Some(shadowed) => self.innermost.insert(prefix, shadowed),
                None => self.innermost.remove(prefix),
            };
        }
    }

    /// Records the binding of `prefix` (the default namespace when `None`) to `uri` made by
    /// the element at `level`, counted against the caps.
    fn declare(
        &mut self,
        level: usize,
        prefix: Option<&'i [u8]>,
        uri: &Attribute<'i>,
    ) -> Result<()> {
        let Some(prefix) = prefix else {
            return Ok(());
        };
        if self.in_scope.len() == MAX_NAMESPACES_IN_SCOPE {
            return Err(too_complex(format!(
                "more than {MAX_NAMESPACES_IN_SCOPE} namespace declarations in scope"
            )));
        }
        let xsi = attribute_value(uri)? == XSI_NAMESPACE;
        let shadows = self.innermost.get(prefix).copied();
        let tracked = (xsi || shadows.is_some()).then(|| {
            self.innermost.insert(prefix, self.in_scope.len());
            (prefix, xsi, shadows)
        });
        self.in_scope.push(Binding { level, tracked });
        Ok(())
    }

    /// Whether `prefix` is bound to the XSI namespace where the last entered element is.
    fn is_xsi(&self, prefix: &[u8]) -> bool {
        self.innermost
            .get(prefix)
            .and_then(|&i| self.in_scope[i].tracked)
            .is_some_and(|(_, xsi, _)| xsi)
    }
}

impl<'i> Decoder<'_, 'i> {
    /// The next event; element starts are counted, capped and their namespaces recorded.
    fn next(&mut self) -> Result<Event<'i>> {
        let event = self.reader.read_event().map_err(malformed)?;
        match &event {
            Event::Start(start) => {
                self.enter(start)?;
                self.open += 1;
            }
            Event::Empty(start) => self.enter(start)?,
            Event::End(_) => self.open = self.open.saturating_sub(1),
            _ => {}
        }
        Ok(event)
    }

    /// Counts an element start against the caps, checks its name and attributes, records its
    /// namespace declarations and its `type` attributes: one pass over its attributes.
    fn enter(&mut self, start: &BytesStart<'_>) -> Result<()> {
        self.elements += 1;
        if self.elements > MAX_ELEMENTS {
            return Err(too_complex(format!("more than {MAX_ELEMENTS} elements")));
        }
        let name = start.name().into_inner();
        if name.len() > MAX_NAME {
            return Err(too_complex(format!(
                "an element name is longer than {MAX_NAME} bytes"
            )));
        }
        let level = self.open + 1;
        self.namespaces.leave_closed(level);
        self.types = TypeAttributes {
            element: within(self.input, name)?.as_bytes(),
            ..TypeAttributes::default()
        };
        if !has_attributes(start) {
            return Ok(());
        }
        let mut declarations = 0;
        // Prefixed `type` attributes: whether the prefix is XSI's is known once every
        // declaration of the element is read. The first is kept; more are rare and re-read.
        let (mut prefixed_type, mut more_prefixed_types) = (None, false);
        // Duplicates are checked where attributes are read (xsi:type, MoRef type), on at most
        // MAX_ATTRIBUTES of them.
        for (count, attr) in start.attributes().with_checks(false).enumerate() {
            if count == MAX_ATTRIBUTES {
                return Err(too_complex(format!(
                    "an element has more than {MAX_ATTRIBUTES} attributes"
                )));
            }
            let attr = attr.map_err(malformed)?;
            if attr.key.as_ref().len() > MAX_NAME {
                return Err(too_complex(format!(
                    "an attribute name is longer than {MAX_NAME} bytes"
                )));
            }
            let attr = self.borrowed(&attr)?;
            if let Some(declaration) = attr.key.as_namespace_binding() {
                declarations += 1;
                if declarations > MAX_NAMESPACE_DECLARATIONS {
                    return Err(too_complex(format!(
                        "an element declares more than {MAX_NAMESPACE_DECLARATIONS} namespaces"
                    )));
                }
                let prefix = match declaration {
                    PrefixDeclaration::Named(prefix) => Some(prefix),
                    PrefixDeclaration::Default => None,
                };
                self.namespaces.declare(level, prefix, &attr)?;
            } else if attr.key.local_name().as_ref() == b"type" {
                match attr.key.prefix() {
                    None => self.types.plain.add(attr),
                    Some(_) if prefixed_type.is_none() => prefixed_type = Some(attr),
                    Some(_) => more_prefixed_types = true,
                }
            }
        }
        if more_prefixed_types {
            for attr in start.attributes().with_checks(false) {
                let attr = self.borrowed(&attr.map_err(malformed)?)?;
                if self.is_xsi_type(attr.key) {
                    self.types.xsi.add(attr);
                }
            }
        } else if let Some(attr) = prefixed_type.filter(|attr| self.is_xsi_type(attr.key)) {
            self.types.xsi.add(attr);
        }
        Ok(())
    }

    /// An attribute of an element start, as slices of the input.
    fn borrowed(&self, attr: &Attribute<'_>) -> Result<Attribute<'i>> {
        let value = match &attr.value {
            Cow::Borrowed(raw) => Cow::Borrowed(within(self.input, raw)?.as_bytes()),
            Cow::Owned(value) => Cow::Owned(value.clone()),
        };
        Ok(Attribute {
            key: QName(within(self.input, attr.key.into_inner())?.as_bytes()),
            value,
        })
    }

    /// Whether `key` is `type` with a prefix bound to the XSI namespace.
    fn is_xsi_type(&self, key: QName<'_>) -> bool {
        key.local_name().as_ref() == b"type"
            && key
                .prefix()
                .is_some_and(|p| self.namespaces.is_xsi(p.as_ref()))
    }

    /// The `type` attributes of `start`, the element entered last.
    fn types_of(&self, start: &BytesStart<'_>) -> &TypeAttributes<'i> {
        debug_assert!(
            std::ptr::eq(start.name().into_inner(), self.types.element),
            "the type attributes asked for are not the last entered element's"
        );
        &self.types
    }

    /// The next child element start of the current element, or `None` at its end.
    fn next_child(&mut self) -> Result<Option<(BytesStart<'i>, bool)>> {
        loop {
            match self.next()? {
                Event::Start(e) => return Ok(Some((e, false))),
                Event::Empty(e) => return Ok(Some((e, true))),
                Event::End(_) => return Ok(None),
                Event::Eof => return Err(malformed("unexpected end of document")),
                Event::Text(t) if t.iter().all(u8::is_ascii_whitespace) => {}
                Event::Text(_) | Event::CData(_) | Event::GeneralRef(_) => {
                    return Err(malformed("unexpected text between elements"))
                }
                Event::Comment(_) | Event::PI(_) | Event::Decl(_) | Event::DocType(_) => {}
            }
        }
    }

    fn skip(&mut self, start: &BytesStart<'i>, empty: bool) -> Result<()> {
        if !empty {
            self.reader.read_to_end(start.name()).map_err(malformed)?;
            self.open -= 1;
        }
        Ok(())
    }

    fn envelope(&mut self) -> Result<Request> {
        let (envelope, empty) = self.next_child_top()?;
        if envelope.local_name().as_ref() != b"Envelope" || empty {
            return Err(malformed("expected a SOAP Envelope"));
        }
        let mut request = None;
        while let Some((child, empty)) = self.next_child()? {
            if child.local_name().as_ref() == b"Body" && !empty && request.is_none() {
                request = Some(self.body()?);
            } else {
                self.skip(&child, empty)?;
            }
        }
        let request = request.ok_or_else(|| malformed("SOAP Envelope has no Body"))?;
        loop {
            match self.next()? {
                Event::Eof => return Ok(request),
                Event::Text(t) if t.iter().all(u8::is_ascii_whitespace) => {}
                Event::Comment(_) | Event::PI(_) => {}
                _ => return Err(malformed("content after the SOAP Envelope")),
            }
        }
    }

    /// The document's root element, skipping the prolog.
    fn next_child_top(&mut self) -> Result<(BytesStart<'i>, bool)> {
        loop {
            match self.next()? {
                Event::Start(e) => return Ok((e, false)),
                Event::Empty(e) => return Ok((e, true)),
                Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
                Event::Text(t) if t.iter().all(u8::is_ascii_whitespace) => {}
                _ => return Err(malformed("expected a SOAP Envelope")),
            }
        }
    }

    fn body(&mut self) -> Result<Request> {
        let (call, empty) = self
            .next_child()?
            .ok_or_else(|| malformed("SOAP Body is empty"))?;
        let method_name = std::str::from_utf8(call.local_name().into_inner()).map_err(malformed)?;
        let method = self.schema.method_id(method_name);
        let param_count = method.map_or(0, |m| self.schema.method(m).params.len());
        let mut this = None;
        let mut args: Vec<Option<Value>> = vec![None; param_count];
        if !empty {
            while let Some((child, empty)) = self.next_child()? {
                if child.local_name().as_ref() == b"_this" {
                    let moref = self.moref(&child, empty, None)?;
                    this = Some(moref);
                    continue;
                }
                let Some(method) = method else {
                    self.skip(&child, empty)?;
                    continue;
                };
                let params = &self.schema.method(method).params;
                let local = child.local_name();
                let Some(i) = params
                    .iter()
                    .position(|p| p.name.as_bytes() == local.as_ref())
                else {
                    self.skip(&child, empty)?;
                    continue;
                };
                let ty = params[i].ty;
                let value = self
                    .value(&child, empty, ty.ty, 1)
                    .map_err(|e| name_argument(e, &params[i].name))?;
                push_argument(&mut args[i], ty.array, ty.ty, value);
            }
        }
        // Skip to the end of the Body.
        while let Some((child, empty)) = self.next_child()? {
            self.skip(&child, empty)?;
        }
        let this = this.ok_or_else(|| DecodeRequestError::InvalidArgument {
            name: "_this".into(),
            problem: "missing".into(),
        })?;
        let Some(method) = method else {
            return Err(DecodeRequestError::UnknownMethod {
                receiver: this,
                method: clip(method_name).into_owned(),
            });
        };
        for (param, arg) in self.schema.method(method).params.iter().zip(&args) {
            if arg.is_none() && !param.optional && !param.ty.array {
                return Err(DecodeRequestError::InvalidArgument {
                    name: param.name.to_string(),
                    problem: "missing".into(),
                });
            }
        }
        Ok(Request { method, this, args })
    }

    /// The local type name of the `xsi:type` attribute of `start`, if present.
    fn xsi_type(&self, start: &BytesStart<'_>) -> Result<Option<Cow<'i, str>>> {
        let Some(value) = self.types_of(start).xsi.value()? else {
            return Ok(None);
        };
        Ok(Some(match value {
            Cow::Borrowed(value) => Cow::Borrowed(value.rsplit(':').next().unwrap_or_default()),
            Cow::Owned(value) => {
                Cow::Owned(value.rsplit(':').next().unwrap_or_default().to_string())
            }
        }))
    }

    /// The unprefixed `type` attribute of a MoRef element.
    fn moref_type_attr(&self, start: &BytesStart<'_>) -> Result<Option<Arc<str>>> {
        let value = self.types_of(start).plain.value()?;
        Ok(value.map(|value| Arc::from(&*value)))
    }

    fn moref(
        &mut self,
        start: &BytesStart<'i>,
        empty: bool,
        declared: Option<&str>,
    ) -> Result<MoRef> {
        let ty = self
            .moref_type_attr(start)?
            .or_else(|| declared.map(Arc::from));
        let ty = ty.ok_or_else(|| bad_value("managed object reference without a type"))?;
        let id = self.text(empty)?;
        Ok(MoRef::new(ty, &*id))
    }

    /// Text content up to the element's end: borrowed from the input when it is one run of
    /// text (the usual case), else assembled.
    fn text(&mut self, empty: bool) -> Result<Cow<'i, str>> {
        let mut out = Cow::Borrowed("");
        if empty {
            return Ok(out);
        }
        loop {
            let piece = match self.next()? {
                Event::Text(t) => Cow::Borrowed(within(self.input, &t)?),
                Event::CData(t) => t.decode().map_err(malformed)?,
                Event::GeneralRef(r) => Cow::Owned(resolve_reference(&r)?.to_string()),
                Event::End(_) => return xml_chars_only(out),
                Event::Comment(_) | Event::PI(_) => continue,
                Event::Start(_) | Event::Empty(_) => {
                    return Err(bad_value("element inside a simple value"))
                }
                Event::Eof => return Err(malformed("unexpected end of document")),
                Event::Decl(_) | Event::DocType(_) => {
                    return Err(malformed("declaration inside the body"))
                }
            };
            if out.is_empty() {
                out = piece;
            } else {
                out.to_mut().push_str(&piece);
            }
        }
    }

    /// The type an element actually carries: its `xsi:type` (checked against `declared`) or
    /// the declared one. The bool is true for `ArrayOfX`.
    fn actual_type(&self, start: &BytesStart<'i>, declared: TypeId) -> Result<(TypeId, bool)> {
        let Some(name) = self.xsi_type(start)? else {
            return Ok((declared, false));
        };
        let schema = self.schema;
        let (ty, array) = match schema.type_id(&name) {
            Some(ty) => (ty, false),
            None => {
                let item = name
                    .strip_prefix("ArrayOf")
                    .ok_or_else(|| bad_value(format!("unknown type {name}")))?;
                let ty = schema
                    .type_id(item)
                    .or_else(|| schema.type_id(&lower_first(item)));
                (
                    ty.ok_or_else(|| bad_value(format!("unknown type {name}")))?,
                    true,
                )
            }
        };
        let any = schema.well_known().any;
        let fits = declared == any
            || schema.is_a(ty, declared)
            || (ty == schema.well_known().moref && schema.is_managed(declared));
        if !fits && !array {
            return Err(bad_value(format!(
                "{name} is not a {}",
                schema.ty(declared).name
            )));
        }
        if array && declared != any {
            return Err(bad_value(format!(
                "{name} where a {} is expected",
                schema.ty(declared).name
            )));
        }
        Ok((ty, array))
    }

    fn value(
        &mut self,
        start: &BytesStart<'i>,
        empty: bool,
        declared: TypeId,
        depth: usize,
    ) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(malformed("request nests too deeply"));
        }
        let (ty, array) = self.actual_type(start, declared)?;
        let known = self.schema.well_known();
        if !array
            && declared == known.method_fault
            && (ty == known.method_fault || ty == known.localized_method_fault)
        {
            // A MethodFault-typed value travels as a LocalizedMethodFault (as we encode it).
            let wrapper = self.value_of(start, empty, known.localized_method_fault, depth)?;
            return Ok(unwrap_localized(self.schema, wrapper));
        }
        if array {
            let mut items = Vec::new();
            if !empty {
                while let Some((child, empty)) = self.next_child()? {
                    items.push(self.value(&child, empty, ty, depth + 1)?);
                }
            }
            return Ok(Value::Array(ty, items));
        }
        self.value_of(start, empty, ty, depth)
    }

    /// The value of an element of (actual, not array) type `ty`.
    fn value_of(
        &mut self,
        start: &BytesStart<'i>,
        empty: bool,
        ty: TypeId,
        depth: usize,
    ) -> Result<Value> {
        let schema = self.schema;
        match &schema.ty(ty).kind {
            TypeKind::Primitive(p) => parse_primitive(*p, &self.text(empty)?),
            TypeKind::MoRef => Ok(Value::MoRef(self.moref(start, empty, None)?)),
            TypeKind::Managed { .. } => Ok(Value::MoRef(self.moref(
                start,
                empty,
                Some(&schema.ty(ty).name),
            )?)),
            TypeKind::Enum { values } => {
                let text = self.text(empty)?;
                if !values.iter().any(|v| **v == *text) {
                    return Err(bad_value(format!("{text} is not a {}", schema.ty(ty).name)));
                }
                Ok(Value::Enum(ty, text.into()))
            }
            TypeKind::Data { fields } => {
                let mut object = DataObject {
                    ty,
                    fields: vec![None; fields.len()],
                };
                if !empty {
                    while let Some((child, empty)) = self.next_child()? {
                        let local = child.local_name();
                        let Some(i) = fields
                            .iter()
                            .position(|f| f.name.as_bytes() == local.as_ref())
                        else {
                            self.skip(&child, empty)?;
                            continue;
                        };
                        let field_ty = fields[i].ty;
                        let value = self.value(&child, empty, field_ty.ty, depth + 1)?;
                        push_argument(&mut object.fields[i], field_ty.array, field_ty.ty, value);
                    }
                }
                Ok(Value::Data(Box::new(object)))
            }
        }
    }
}

/// The fault inside a decoded LocalizedMethodFault `wrapper` (its `localizedMessage` as the
/// fault's `msg` when the fault has none), as pyVmomi and govmomi send MethodFault-typed
/// arguments; a wrapper without a `fault` is a bare MethodFault whose fields it carries.
fn unwrap_localized(schema: &Schema, wrapper: Value) -> Value {
    let Value::Data(mut wrapper) = wrapper else {
        return wrapper;
    };
    let message = wrapper.get(schema, "localizedMessage").cloned();
    let mut fault = match wrapper.get(schema, "fault") {
        Some(Value::Data(fault)) => (**fault).clone(),
        _ => {
            let method_fault = schema.well_known().method_fault;
            wrapper.fields.truncate(schema.fields(method_fault).len());
            DataObject {
                ty: method_fault,
                fields: wrapper.fields,
            }
        }
    };
    if let (None, Some(message)) = (fault.get(schema, "msg"), message) {
        fault.set(schema, "msg", message);
    }
    Value::Data(Box::new(fault))
}

/// An attribute's value: its text as written when it holds no reference (the usual case; the
/// body is already known to be UTF-8), else unescaped.
fn attribute_value<'a>(attr: &Attribute<'a>) -> Result<Cow<'a, str>> {
    match &attr.value {
        Cow::Borrowed(raw) if !raw.contains(&b'&') => std::str::from_utf8(raw)
            .map(Cow::Borrowed)
            .map_err(malformed),
        _ => attr.unescape_value().map_err(malformed),
    }
}

/// Whether an element start carries any attribute (most in a request carry none).
fn has_attributes(start: &BytesStart<'_>) -> bool {
    !start.attributes_raw().iter().all(u8::is_ascii_whitespace)
}

/// Stores a decoded element into its slot, appending when the slot is an array.
fn push_argument(slot: &mut Option<Value>, array: bool, item_ty: TypeId, value: Value) {
    if !array {
        *slot = Some(value);
        return;
    }
    match slot {
        Some(Value::Array(_, items)) => items.push(value),
        _ => *slot = Some(Value::Array(item_ty, vec![value])),
    }
}

fn bad_value(problem: impl Into<String>) -> DecodeRequestError {
    DecodeRequestError::InvalidArgument {
        name: String::new(),
        problem: clip(&problem.into()).into_owned(),
    }
}

/// Fills in the parameter name of an InvalidArgument raised deeper down.
fn name_argument(error: DecodeRequestError, name: &str) -> DecodeRequestError {
    match error {
        DecodeRequestError::InvalidArgument { name: n, problem } if n.is_empty() => {
            DecodeRequestError::InvalidArgument {
                name: name.to_string(),
                problem,
            }
        }
        other => other,
    }
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_ascii_lowercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// `text` if every character in it is one XML 1.0 allows (a NUL or other control character,
/// raw or as a character reference, makes the request malformed).
fn xml_chars_only(text: Cow<'_, str>) -> Result<Cow<'_, str>> {
    if !text.bytes().any(crate::codec::may_start_non_xml_char) {
        return Ok(text);
    }
    match text.chars().find(|&c| !crate::codec::xml_char(c)) {
        Some(c) => Err(malformed(format!(
            "character U+{:04X} is not allowed in XML",
            c as u32
        ))),
        None => Ok(text),
    }
}

fn resolve_reference(r: &quick_xml::events::BytesRef<'_>) -> Result<char> {
    if let Some(c) = r.resolve_char_ref().map_err(malformed)? {
        return Ok(c);
    }
    match r.as_ref() {
        b"amp" => Ok('&'),
        b"lt" => Ok('<'),
        b"gt" => Ok('>'),
        b"quot" => Ok('"'),
        b"apos" => Ok('\''),
        _ => Err(malformed("unknown entity reference")),
    }
}

/// Parses the text of a primitive value.
pub(crate) fn parse_primitive(p: Primitive, text: &str) -> Result<Value> {
    let t = text.trim();
    let bad = || bad_value(format!("{t:?} is not a valid {p:?}"));
    Ok(match p {
        Primitive::String
        | Primitive::TypeName
        | Primitive::MethodName
        | Primitive::PropertyPath
        | Primitive::AnyUri => Value::String(Arc::from(text)),
        Primitive::AnyType => Value::String(Arc::from(text)),
        Primitive::Boolean => match t {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => return Err(bad()),
        },
        Primitive::Byte => Value::Byte(t.parse().map_err(|_| bad())?),
        Primitive::Short => Value::Short(t.parse().map_err(|_| bad())?),
        Primitive::Int => Value::Int(t.parse().map_err(|_| bad())?),
        Primitive::Long => Value::Long(t.parse().map_err(|_| bad())?),
        Primitive::Float => Value::Float(t.parse().map_err(|_| bad())?),
        Primitive::Double => Value::Double(t.parse().map_err(|_| bad())?),
        Primitive::DateTime => Value::DateTime(datetime::parse(t).ok_or_else(bad)?),
        Primitive::Binary => {
            let compact: String = t.split_ascii_whitespace().collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|_| bad())?;
            Value::Binary(bytes.into())
        }
    })
}
