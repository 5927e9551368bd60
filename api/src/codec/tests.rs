use std::path::PathBuf;

use super::*;
use crate::fault::Fault;
use crate::schema::{vim25, TypeRef};
use crate::value::{DataObject, MoRef, Value};

fn reference_dir() -> PathBuf {
    // A copy of shared/reference/vim25-trace-vcsim-esx65 (the .http.txt files left out), so the
    // tests do not depend on where the checkout lives.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/vim25-trace-vcsim-esx65")
}

fn envelope(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema"><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"#
    )
}

fn response_text(method: &str, value: &Value, version: &str) -> String {
    let s = vim25();
    let mut out = Vec::new();
    let v = s.versions().by_wire_id(version).unwrap();
    encode_response(s, v, s.method_id(method).unwrap(), Some(value), &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn every_recorded_request_decodes() {
    let s = vim25();
    let mut count = 0;
    for entry in
        std::fs::read_dir(reference_dir()).expect("api/tests/data holds the recorded traffic")
    {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let Some(stem) = name.strip_suffix(".req.xml") else {
            continue;
        };
        let method = stem.split_once('-').unwrap().1;
        let request = decode_request(s, &std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&*s.method(request.method).name, method, "{name}");
        count += 1;
    }
    assert!(count > 100, "only {count} requests found");
}

#[test]
fn retrieve_properties_ex_request_has_typed_selection_specs() {
    let s = vim25();
    let body = std::fs::read(reference_dir().join("105-RetrievePropertiesEx.req.xml")).unwrap();
    let request = decode_request(s, &body).unwrap();
    assert_eq!(
        request.this,
        MoRef::new("PropertyCollector", "ha-property-collector")
    );
    let spec_set = request.arg(s, "specSet").unwrap();
    let spec = spec_set.items()[0].as_data().unwrap();
    let object_spec = spec.get(s, "objectSet").unwrap().items()[0]
        .as_data()
        .unwrap();
    assert_eq!(object_spec.get(s, "skip"), Some(&Value::Bool(true)));
    let selection = object_spec.get(s, "selectSet").unwrap().items()[0]
        .as_data()
        .unwrap();
    assert_eq!(
        selection.ty,
        s.known_type("TraversalSpec"),
        "xsi:type picks the subclass"
    );
    assert_eq!(
        selection.get(s, "path").and_then(Value::as_str),
        Some("view")
    );
    let options = request.arg(s, "options").unwrap().as_data().unwrap();
    assert_eq!(options.get(s, "maxObjects"), Some(&Value::Int(100)));
}

/// Recognises the expected decode error.
type ErrorCheck = fn(&DecodeRequestError) -> bool;

#[test]
fn bad_requests_are_typed_errors() {
    let s = vim25();
    let cases: [(&str, ErrorCheck); 7] = [
        ("garbage", |e| matches!(e, DecodeRequestError::Malformed(_))),
        ("<soapenv:Envelope", |e| matches!(e, DecodeRequestError::Malformed(_))),
        ("<a><b></a>", |e| matches!(e, DecodeRequestError::Malformed(_))),
        (
            &*Box::leak(envelope(r#"<NoSuchMethod xmlns="urn:vim25"><_this type="Folder">f</_this></NoSuchMethod>"#).into_boxed_str()),
            |e| matches!(e, DecodeRequestError::UnknownMethod { method, .. } if method == "NoSuchMethod"),
        ),
        (
            &*Box::leak(envelope(r#"<CreateContainerView xmlns="urn:vim25"><_this type="ViewManager">ViewManager</_this><container type="Folder">x</container><recursive>maybe</recursive></CreateContainerView>"#).into_boxed_str()),
            |e| matches!(e, DecodeRequestError::InvalidArgument { name, .. } if name == "recursive"),
        ),
        (
            &*Box::leak(envelope(r#"<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">pc</_this><specSet xsi:type="AboutInfo"/><options/></RetrievePropertiesEx>"#).into_boxed_str()),
            |e| matches!(e, DecodeRequestError::InvalidArgument { name, .. } if name == "specSet"),
        ),
        (
            &*Box::leak(envelope(r#"<Login xmlns="urn:vim25"><_this type="SessionManager">ha-sessionmgr</_this><userName>root</userName></Login>"#).into_boxed_str()),
            |e| matches!(e, DecodeRequestError::InvalidArgument { name, .. } if name == "password"),
        ),
    ];
    for (body, check) in cases {
        let error = decode_request(s, body.as_bytes()).expect_err(body);
        assert!(check(&error), "{body}: {error:?}");
    }
    let truncated =
        std::fs::read(reference_dir().join("105-RetrievePropertiesEx.req.xml")).unwrap();
    for cut in (0..truncated.len() - 1).step_by(37) {
        assert!(
            decode_request(s, &truncated[..cut]).is_err(),
            "truncated at {cut}"
        );
    }
}

#[test]
fn entities_and_any_arrays_decode() {
    let s = vim25();
    let body = envelope(
        r#"<Login xmlns="urn:vim25"><_this type="SessionManager">ha-sessionmgr</_this><userName>a&amp;b&#33;</userName><password><![CDATA[<p>]]></password></Login>"#,
    );
    let request = decode_request(s, body.as_bytes()).unwrap();
    assert_eq!(
        request.arg(s, "userName").and_then(Value::as_str),
        Some("a&b!")
    );
    assert_eq!(
        request.arg(s, "password").and_then(Value::as_str),
        Some("<p>")
    );
}

#[test]
fn characters_xml_forbids_are_refused_in_requests_and_replaced_in_responses() {
    let s = vim25();
    for name in ["a\u{0}b", "a&#0;b", "a&#1;b", "a\u{1b}b", "a&#xFFFE;b"] {
        let body = envelope(&format!(
            r#"<Login xmlns="urn:vim25"><_this type="SessionManager">ha-sessionmgr</_this><userName>{name}</userName><password>p</password></Login>"#
        ));
        let error = decode_request(s, body.as_bytes()).expect_err(name);
        assert!(
            matches!(error, DecodeRequestError::Malformed(_)),
            "{name}: {error:?}"
        );
    }
    let mut out = Vec::new();
    encode::escape(&mut out, "a\u{0}b\u{7}c\u{FFFF}d\té<&\u{FFFD}");
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "a\u{FFFD}b\u{FFFD}c\u{FFFD}d\té&lt;&amp;\u{FFFD}"
    );
}

#[test]
fn fetch_response_carries_xsi_type_and_version_filtered_fields() {
    let s = vim25();
    let runtime = DataObject::of(s, "VirtualMachineRuntimeInfo")
        .with(s, "host", MoRef::new("HostSystem", "ha-host"))
        .with(
            s,
            "connectionState",
            Value::Enum(
                s.known_type("VirtualMachineConnectionState"),
                "connected".into(),
            ),
        )
        .with(
            s,
            "powerState",
            Value::Enum(s.known_type("VirtualMachinePowerState"), "poweredOn".into()),
        )
        .with(s, "toolsInstallerMounted", false)
        .with(s, "numMksConnections", 0);
    let text = response_text("Fetch", &runtime.into(), "6.5");
    assert!(text.contains(
        r#"<FetchResponse xmlns="urn:vim25"><returnval xsi:type="VirtualMachineRuntimeInfo"><host type="HostSystem">ha-host</host><connectionState>connected</connectionState><powerState>poweredOn</powerState><toolsInstallerMounted>false</toolsInstallerMounted><numMksConnections>0</numMksConnections></returnval></FetchResponse>"#
    ), "{text}");

    let view = Value::Array(
        s.well_known().moref,
        vec![
            MoRef::new("VirtualMachine", "1").into(),
            MoRef::new("VirtualMachine", "2").into(),
        ],
    );
    let text = response_text("Fetch", &view, "8.0.3.0");
    assert!(text.contains(r#"<returnval xsi:type="ArrayOfManagedObjectReference"><ManagedObjectReference type="VirtualMachine">1</ManagedObjectReference><ManagedObjectReference type="VirtualMachine">2</ManagedObjectReference></returnval>"#), "{text}");

    let names = Value::Array(s.well_known().string, vec!["a".into()]);
    assert!(response_text("Fetch", &names, "8.0.3.0")
        .contains(r#"<returnval xsi:type="ArrayOfString"><string>a</string></returnval>"#));

    let about = DataObject::of(s, "AboutInfo")
        .with(s, "name", "Vireo")
        .with(s, "patchLevel", "0");
    let text = response_text("Fetch", &about.clone().into(), "6.5");
    assert!(
        !text.contains("patchLevel"),
        "patchLevel is newer than 6.5: {text}"
    );
    assert!(response_text("Fetch", &about.into(), "8.0.3.0").contains("<patchLevel>0</patchLevel>"));
}

#[test]
fn subclass_in_typed_field_gets_xsi_type() {
    let s = vim25();
    let device = DataObject::of(s, "VirtualDisk").with(s, "key", 2000);
    let hardware = DataObject::of(s, "VirtualHardware")
        .with(s, "numCPU", 1)
        .with(
            s,
            "device",
            Value::Array(s.known_type("VirtualDevice"), vec![device.into()]),
        );
    let mut out = Vec::new();
    let field = TypeRef {
        ty: s.known_type("VirtualHardware"),
        array: false,
    };
    encode_element(
        s,
        s.versions().newest(),
        "hardware",
        field,
        &hardware.into(),
        &mut out,
    );
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        text,
        r#"<hardware><numCPU>1</numCPU><device xsi:type="VirtualDisk"><key>2000</key></device></hardware>"#
    );
}

#[test]
fn fault_has_detail_element_and_xsi_type() {
    let s = vim25();
    let fault = Fault::method_not_found(
        s,
        &MoRef::new("VirtualMachine", "vm-9"),
        "CreateScreenshot_Task",
    );
    let mut out = Vec::new();
    encode_fault(s, s.versions().newest(), &fault, &mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains(r#"<faultstring>VirtualMachine:vm-9 does not implement: CreateScreenshot_Task</faultstring><detail><MethodNotFoundFault xmlns="urn:vim25" xsi:type="MethodNotFound"><receiver type="VirtualMachine">vm-9</receiver><method>CreateScreenshot_Task</method></MethodNotFoundFault></detail>"#), "{text}");
}

#[test]
fn corrupted_recorded_requests_never_panic() {
    let s = vim25();
    let mut decoded = 0;
    for entry in std::fs::read_dir(reference_dir()).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".req.xml") {
            continue;
        }
        let original = std::fs::read(&path).unwrap();
        // Deterministic corruptions: each byte position in turn gets one of a few hostile bytes.
        for (i, hostile) in [b'<', b'>', b'&', b'"', 0xff, b'/', b' ']
            .iter()
            .cycle()
            .enumerate()
            .take(original.len())
        {
            let mut corrupted = original.clone();
            corrupted[i] = *hostile;
            if decode_request(s, &corrupted).is_ok() {
                decoded += 1;
            }
        }
    }
    assert!(decoded > 0, "some corruptions (inside text) still decode");
}

#[test]
fn fault_valued_fields_travel_as_localized_method_faults() {
    let s = vim25();
    let object = MoRef::new("Folder", "ha-folder-root");
    let fault = Fault::not_authenticated(s, &object, "System.View");
    let missing = |value: DataObject| {
        DataObject::of(s, "MissingProperty")
            .with(s, "path", "name")
            .with(s, "fault", value)
    };
    let expected = r#"<fault xsi:type="LocalizedMethodFault"><fault xsi:type="NotAuthenticated"><object type="Folder">ha-folder-root</object><privilegeId>System.View</privilegeId></fault>"#;
    for value in [fault.data.clone(), fault.localized(s)] {
        let mut out = Vec::new();
        let field = TypeRef {
            ty: s.known_type("MissingProperty"),
            array: false,
        };
        encode_element(
            s,
            s.versions().newest(),
            "m",
            field,
            &missing(value).into(),
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(expected), "{text}");
        assert_eq!(
            text.matches("LocalizedMethodFault").count(),
            1,
            "wrapped once: {text}"
        );
    }
}

/// A RetrievePropertiesEx envelope whose PropertySpec carries `attributes` and `path_sets`.
fn property_spec_request(attributes: &str, path_sets: &str) -> String {
    envelope(&format!(
        r#"<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">pc</_this><specSet><propSet {attributes}><type>HostSystem</type>{path_sets}</propSet><objectSet><obj type="HostSystem">ha-host</obj></objectSet></specSet><options/></RetrievePropertiesEx>"#
    ))
}

fn is_limit(error: &DecodeRequestError) -> bool {
    matches!(error, DecodeRequestError::LimitExceeded(_))
}

#[test]
fn hostile_bodies_hit_the_caps_instead_of_quadratic_work() {
    let s = vim25();
    let attributes: String = (0..150_000).map(|i| format!(" a{i}=\"x\"")).collect();
    let error = decode_request(s, property_spec_request(&attributes, "").as_bytes()).unwrap_err();
    assert!(is_limit(&error), "150k attributes: {error:?}");

    let declarations: String = (0..100_000)
        .map(|i| format!(" xmlns:p{i}=\"urn:x{i}\""))
        .collect();
    let error = decode_request(s, property_spec_request(&declarations, "").as_bytes()).unwrap_err();
    assert!(is_limit(&error), "100k xmlns: {error:?}");

    // Declarations spread over nested elements add up in scope: 20 levels of 10 fit, 40 do not.
    let nested = |levels: usize| {
        let open: String = (0..levels)
            .map(|d| {
                let decls: String = (0..10).map(|i| format!(" xmlns:n{d}x{i}=\"u\"")).collect();
                format!(r#"<selectSet xsi:type="TraversalSpec"{decls}>"#)
            })
            .collect();
        envelope(&format!(
            r#"<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">pc</_this><specSet><objectSet><obj type="Folder">f</obj>{open}{}</objectSet></specSet><options/></RetrievePropertiesEx>"#,
            "</selectSet>".repeat(levels)
        ))
    };
    assert!(decode_request(s, nested(20).as_bytes()).is_ok());
    assert!(is_limit(
        &decode_request(s, nested(40).as_bytes()).unwrap_err()
    ));

    let path_sets = "<pathSet>name</pathSet>".repeat(crate::limits::MAX_ELEMENTS);
    let error = decode_request(s, property_spec_request("", &path_sets).as_bytes()).unwrap_err();
    assert!(is_limit(&error), "too many elements: {error:?}");
}

#[test]
fn deep_nesting_and_huge_names_are_refused_with_short_messages() {
    let s = vim25();
    let deep = format!(
        "{}{}",
        r#"<selectSet xsi:type="TraversalSpec">"#.repeat(200_000),
        "</selectSet>".repeat(200_000)
    );
    let body = envelope(&format!(
        r#"<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">pc</_this><specSet><objectSet><obj type="Folder">f</obj>{deep}</objectSet></specSet><options/></RetrievePropertiesEx>"#
    ));
    let error = decode_request(s, body.as_bytes()).unwrap_err();
    assert!(
        matches!(&error, DecodeRequestError::Malformed(m) if m.contains("too deeply")),
        "{error:?}"
    );

    // A deep subtree the decoder skips (an unknown header) costs linear time and decodes.
    let header = format!(
        "<soapenv:Header>{}{}</soapenv:Header>",
        "<h>".repeat(200_000),
        "</h>".repeat(200_000)
    );
    let body = envelope(
        r#"<Logout xmlns="urn:vim25"><_this type="SessionManager">ha-sessionmgr</_this></Logout>"#,
    )
    .replace("<soapenv:Body>", &format!("{header}<soapenv:Body>"));
    assert!(decode_request(s, body.as_bytes()).is_ok());

    let name = "M".repeat(4 << 20);
    let body = envelope(&format!(
        r#"<{name} xmlns="urn:vim25"><_this type="Folder">f</_this></{name}>"#
    ));
    let error = decode_request(s, body.as_bytes()).unwrap_err();
    assert!(is_limit(&error), "{error:?}");
    assert!(error.to_string().len() < 1024, "method name echoed whole");
    let long_attribute = property_spec_request(&format!(r#"{name}="x""#), "");
    assert!(is_limit(
        &decode_request(s, long_attribute.as_bytes()).unwrap_err()
    ));

    let body = property_spec_request(&format!(r#"xsi:type="{name}""#), "");
    let error = decode_request(s, body.as_bytes()).unwrap_err();
    assert!(error.to_string().len() < 1024, "type name echoed whole");
    let body = format!("<{name}>");
    assert!(
        decode_request(s, body.as_bytes())
            .unwrap_err()
            .to_string()
            .len()
            < 1024
    );
}

#[test]
fn xsi_prefixes_resolve_by_scope() {
    let s = vim25();
    let xsi = "http://www.w3.org/2001/XMLSchema-instance";
    let spec_type = |request: &Request| {
        let spec = request.arg(s, "specSet").unwrap().items()[0].clone();
        let Value::Data(object) = spec else { panic!() };
        s.ty(object.ty).name.to_string()
    };
    // Another prefix bound to XSI on the element itself.
    let body = envelope(&format!(
        r#"<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">pc</_this><specSet xmlns:q="{xsi}" q:type="PropertyFilterSpec"><objectSet><obj type="Folder">f</obj></objectSet></specSet><options/></RetrievePropertiesEx>"#
    ));
    assert_eq!(
        spec_type(&decode_request(s, body.as_bytes()).unwrap()),
        "PropertyFilterSpec"
    );
    // `xsi` rebound to another namespace: its `type` is not an xsi:type, so a bad name is ignored.
    let body = envelope(
        r#"<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">pc</_this><specSet xmlns:xsi="urn:other" xsi:type="NoSuchType"><objectSet><obj type="Folder">f</obj></objectSet></specSet><options/></RetrievePropertiesEx>"#,
    );
    assert!(decode_request(s, body.as_bytes()).is_ok());
    // A binding made by a sibling is out of scope.
    let body = envelope(&format!(
        r#"<RetrievePropertiesEx xmlns="urn:vim25"><_this xmlns:q="{xsi}" type="PropertyCollector">pc</_this><specSet q:type="NoSuchType"><objectSet><obj type="Folder">f</obj></objectSet></specSet><options/></RetrievePropertiesEx>"#
    ));
    assert!(decode_request(s, body.as_bytes()).is_ok());
    // The same binding on an ancestor is in scope.
    let in_scope = body.replace(
        r#"<RetrievePropertiesEx xmlns="urn:vim25">"#,
        &format!(r#"<RetrievePropertiesEx xmlns="urn:vim25" xmlns:q="{xsi}">"#),
    );
    assert!(decode_request(s, in_scope.as_bytes()).is_err());
    // Bound to another namespace on the ancestor and to XSI only on a sibling: out of scope
    // again once the sibling closes.
    let rebound = body.replace(
        r#"<RetrievePropertiesEx xmlns="urn:vim25">"#,
        r#"<RetrievePropertiesEx xmlns="urn:vim25" xmlns:q="urn:other">"#,
    );
    assert!(decode_request(s, rebound.as_bytes()).is_ok());
}

#[test]
fn a_repeated_type_attribute_is_malformed() {
    let s = vim25();
    let xsi = "http://www.w3.org/2001/XMLSchema-instance";
    for attributes in [
        r#"<obj type="Folder" type="HostSystem">f</obj>"#.to_string(),
        format!(
            r#"<obj xmlns:q="{xsi}" type="Folder" q:type="ManagedObjectReference" xsi:type="ManagedObjectReference">f</obj>"#
        ),
    ] {
        let body = envelope(&format!(
            r#"<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">pc</_this><specSet><objectSet>{attributes}</objectSet></specSet><options/></RetrievePropertiesEx>"#
        ));
        let error = decode_request(s, body.as_bytes()).unwrap_err();
        assert!(
            matches!(&error, DecodeRequestError::Malformed(why) if why.contains("duplicate attribute")),
            "{error}"
        );
    }
}

/// A name the schema lacks is a bug in our code, not an unset value: debug builds (and so every
/// test) panic on a misspelt argument name instead of reading it as unset.
#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "RevertToCurrentSnapshot_Task has no parameter suppressPowerOnn")]
fn a_misspelt_argument_name_panics() {
    let s = vim25();
    let request = Request {
        method: s.method_id("RevertToCurrentSnapshot_Task").unwrap(),
        this: MoRef::new("VirtualMachine", "1"),
        args: vec![None; 2],
    };
    assert_eq!(request.arg(s, "suppressPowerOn"), None);
    request.arg(s, "suppressPowerOnn");
}

/// The same for a field of a data object.
#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "VirtualMachineCloneSpec has no field powerOnn")]
fn a_misspelt_field_name_panics() {
    let s = vim25();
    let spec = DataObject::of(s, "VirtualMachineCloneSpec").with(s, "powerOn", true);
    assert_eq!(spec.get(s, "powerOn"), Some(&Value::Bool(true)));
    assert_eq!(
        spec.lookup(s, "powerOnn"),
        None,
        "lookup is for names that may be absent"
    );
    spec.get(s, "powerOnn");
}

#[test]
fn fault_arguments_arrive_unwrapped_from_their_localized_method_fault() {
    let s = vim25();
    let abort = |fault: &str| {
        let body = envelope(&format!(
            r#"<HttpNfcLeaseAbort xmlns="urn:vim25"><_this type="HttpNfcLease">l1</_this>{fault}</HttpNfcLeaseAbort>"#
        ));
        let request = decode_request(s, body.as_bytes()).unwrap();
        let Some(Value::Data(fault)) = request.arg(s, "fault") else {
            panic!("no fault in {body}");
        };
        (*fault.clone(), s.ty(fault.ty).name.to_string())
    };
    // pyVmomi's and govmomi's form: the wrapper without xsi:type, the fault typed inside it.
    let (fault, ty) = abort(
        r#"<fault><fault xsi:type="SystemError"><reason>gave up</reason></fault><localizedMessage>the client gave up</localizedMessage></fault>"#,
    );
    assert_eq!(ty, "SystemError");
    assert_eq!(
        fault.get(s, "reason").and_then(Value::as_str),
        Some("gave up")
    );
    assert_eq!(
        fault.get(s, "msg").and_then(Value::as_str),
        Some("the client gave up")
    );
    let (_, ty) =
        abort(r#"<fault xsi:type="LocalizedMethodFault"><fault xsi:type="NotFound"/></fault>"#);
    assert_eq!(ty, "NotFound");
    // A bare fault is taken as it is.
    let (fault, ty) = abort(r#"<fault xsi:type="InvalidState"><msg>no</msg></fault>"#);
    assert_eq!(
        (ty.as_str(), fault.get(s, "msg").and_then(Value::as_str)),
        ("InvalidState", Some("no"))
    );
    let (fault, ty) = abort(r#"<fault><msg>plain</msg></fault>"#);
    assert_eq!(
        (ty.as_str(), fault.get(s, "msg").and_then(Value::as_str)),
        ("MethodFault", Some("plain"))
    );
}

#[test]
fn attribute_values_with_references_are_unescaped() {
    let s = vim25();
    let xsi_escaped = "http://www.w3.org/2001/XMLSchema&#45;instance";
    let body = envelope(&format!(
        r#"<RetrievePropertiesEx xmlns="urn:vim25"><_this type="Property&#67;ollector">pc</_this><specSet xmlns:q="{xsi_escaped}" q:type="NoSuchType"><objectSet><obj type="Folder">f</obj></objectSet></specSet><options/></RetrievePropertiesEx>"#
    ));
    // The escaped URI is the XSI namespace, so q:type is an xsi:type naming an unknown type.
    assert!(decode_request(s, body.as_bytes()).is_err());
    let body = body.replace(r#" q:type="NoSuchType""#, "");
    let request = decode_request(s, body.as_bytes()).unwrap();
    assert_eq!(request.this, MoRef::new("PropertyCollector", "pc"));
}
