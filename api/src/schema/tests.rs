use super::*;

#[test]
fn embedded_schema_loads_with_inheritance_and_methods() {
    let s = vim25();
    let runtime = s.known_type("VirtualMachineRuntimeInfo");
    // DynamicData's dynamicType comes first, then the type's own fields.
    assert_eq!(&*s.fields(runtime)[0].name, "dynamicType");
    assert!(s.field_index(runtime, "powerState").is_some());
    let login = s.method(s.method_id("Login").unwrap());
    assert_eq!(&*s.ty(login.owner).name, "SessionManager");
    assert_eq!(
        login.params.iter().map(|p| &*p.name).collect::<Vec<_>>(),
        ["userName", "password", "locale"]
    );
    let vm = s.known_type("VirtualMachine");
    assert!(s.is_a(vm, s.known_type("ManagedEntity")));
    assert!(
        s.method_of(vm, "Fetch").is_some(),
        "hidden Fetch is on every managed object"
    );
    assert!(s.method_of(vm, "Login").is_none());
}

#[test]
fn versions_filter_newer_members() {
    let s = vim25();
    let v65 = s.versions().by_wire_id("6.5").unwrap();
    let about = s.known_type("AboutInfo");
    let patch_level = &s.fields(about)[s.field_index(about, "patchLevel").unwrap()];
    assert!(
        !s.versions().knows(v65, patch_level.version),
        "patchLevel is a 7.0.2 field"
    );
    assert!(s
        .versions()
        .knows(s.versions().newest(), patch_level.version));
    assert_eq!(
        s.versions().from_soap_action(Some("\"urn:vim25/6.5\"")),
        v65
    );
    assert_eq!(
        s.versions().from_soap_action(Some("urn:vim25/99.0")),
        s.versions().newest()
    );
    assert_eq!(s.versions().wire_ids().next(), Some("8.0.3.0"));
    let ids: Vec<&str> = s.versions().wire_ids().collect();
    let distinct: std::collections::BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "a wire id names one version");
}

#[test]
fn malformed_schema_lines_are_errors() {
    assert!(Schema::parse("D\tX").is_err());
    assert!(Schema::parse("Q\tsomething").is_err());
    assert!(matches!(
        Schema::parse("V\t0\tv\t-\t0\nD\tA\tNope\t0\n"),
        Err(LoadSchemaError::UnknownType(_))
    ));
}
