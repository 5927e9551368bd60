//! The dispatch tables against the schema.

use std::collections::HashSet;

use vireo_api::schema::vim25;

use super::{handler, TABLES};

/// Every entry of a type's table is a method of that type (declared by it or inherited), so a
/// misspelt or misfiled method fails here instead of answering NotSupported at run time.
#[test]
fn every_table_entry_is_a_method_of_its_managed_type() {
    let schema = vim25();
    let mut seen = HashSet::new();
    for table in TABLES {
        let ty = schema
            .type_id(table.ty)
            .unwrap_or_else(|| panic!("table for {}, a type the schema lacks", table.ty));
        assert!(schema.is_managed(ty), "{} is not a managed type", table.ty);
        for (method, _) in table.methods {
            assert!(
                schema.method_of(ty, method).is_some(),
                "{}'s table has {method}, which is not a method of {}",
                table.ty,
                table.ty
            );
            assert!(
                seen.insert((table.ty, *method)),
                "{}.{method} is in the tables twice",
                table.ty
            );
        }
    }
}

/// A subtype's table serves an inherited method for that subtype only.
#[test]
fn inherited_methods_are_found_from_the_object_type_up() {
    let schema = vim25();
    let ty = |name| schema.known_type(name);
    assert!(handler(schema, ty("VirtualMachine"), "Destroy_Task").is_some());
    assert!(handler(schema, ty("Folder"), "Destroy_Task").is_none());
    assert!(handler(schema, ty("ContainerView"), "DestroyView").is_some());
    assert!(handler(schema, ty("HostSystem"), "Fetch").is_some());
    assert!(handler(schema, ty("VirtualMachine"), "NoSuchMethod").is_none());
}
