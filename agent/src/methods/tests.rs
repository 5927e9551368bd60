//! The dispatch tables against the schema.

use std::collections::HashSet;

use vireo_api::schema::{vim25, Schema};

use super::{handler, Call, Handler, MethodResult, MethodTable, TABLES};

/// What is wrong with `tables` against the schema: a type the schema lacks or that is not
/// managed, an entry that is not a method of its table's type (declared or inherited), an
/// entry listed twice.
fn table_errors(schema: &Schema, tables: &[&MethodTable]) -> Vec<String> {
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    for table in tables {
        let Some(ty) = schema.type_id(table.ty) else {
            errors.push(format!("table for {}, a type the schema lacks", table.ty));
            continue;
        };
        if !schema.is_managed(ty) {
            errors.push(format!("{} is not a managed type", table.ty));
        }
        for (method, _) in table.methods {
            if schema.method_of(ty, method).is_none() {
                errors.push(format!(
                    "{}'s table has {method}, which is not a method of {}",
                    table.ty, table.ty
                ));
            }
            if !seen.insert((table.ty, *method)) {
                errors.push(format!("{}.{method} is in the tables twice", table.ty));
            }
        }
    }
    errors
}

/// Every entry of a type's table is a method of that type (declared by it or inherited), so a
/// misspelt or misfiled method fails here instead of answering NotSupported at run time.
#[test]
fn every_table_entry_is_a_method_of_its_managed_type() {
    assert_eq!(table_errors(vim25(), TABLES), Vec::<String>::new());
}

/// The check catches a Folder method filed under VirtualMachine, a misspelt method and a
/// table for a data type.
#[test]
fn a_misfiled_or_misspelt_entry_is_reported() {
    fn serve(_: &Call<'_>) -> MethodResult {
        Ok(None)
    }
    const MISFILED: MethodTable = MethodTable {
        ty: "VirtualMachine",
        methods: &[
            ("PowerOnVM_Task", Handler::Sync(serve)),
            ("CreateVM_Task", Handler::Sync(serve)),
            ("PowerOnVm_Task", Handler::Sync(serve)),
        ],
    };
    const DATA: MethodTable = MethodTable {
        ty: "VirtualMachineConfigSpec",
        methods: &[],
    };
    assert_eq!(
        table_errors(vim25(), &[&MISFILED, &DATA]),
        [
            "VirtualMachine's table has CreateVM_Task, which is not a method of VirtualMachine",
            "VirtualMachine's table has PowerOnVm_Task, which is not a method of VirtualMachine",
            "VirtualMachineConfigSpec is not a managed type",
        ]
    );
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
