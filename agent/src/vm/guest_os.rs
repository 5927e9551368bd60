//! The guest OS table: which guestIds exist (the schema's VirtualMachineGuestOsIdentifier), the
//! full name ESXi shows for each (`debian12_64Guest` → "Debian GNU/Linux 12 (64-bit)") and its
//! family.

use vireo_api::schema::{Schema, TypeKind};

/// Families by identifier prefix, longest first where one prefix starts another.
const FAMILIES: &[(&str, &str)] = &[
    ("otherLinux", "Other Linux"),
    ("other24xLinux", "Other 2.4.x Linux"),
    ("other26xLinux", "Other 2.6.x Linux"),
    ("other3xLinux", "Other 3.x Linux"),
    ("other4xLinux", "Other 4.x Linux"),
    ("other5xLinux", "Other 5.x Linux"),
    ("other6xLinux", "Other 6.x or later Linux"),
    ("other7xLinux", "Other 7.x or later Linux"),
    ("genericLinux", "Generic Linux"),
    ("otherGuest", "Other"),
    ("debian", "Debian GNU/Linux"),
    ("ubuntu", "Ubuntu Linux"),
    ("centos", "CentOS"),
    ("rhel", "Red Hat Enterprise Linux"),
    ("oracleLinux", "Oracle Linux"),
    ("sles", "SUSE Linux Enterprise"),
    ("opensuse", "SUSE openSUSE"),
    ("fedora", "Red Hat Fedora"),
    ("rockylinux", "Rocky Linux"),
    ("almalinux", "AlmaLinux"),
    ("amazonlinux", "Amazon Linux"),
    ("coreos", "CoreOS Linux"),
    ("photon", "VMware Photon OS"),
    ("freebsd", "FreeBSD"),
    ("windows2019srvNext", "Microsoft Windows Server 2022"),
    ("windows2019srv", "Microsoft Windows Server 2019"),
    ("windows2022srvNext", "Microsoft Windows Server 2025"),
    ("windows9Server", "Microsoft Windows Server 2016 or later"),
    ("windows11", "Microsoft Windows 11"),
    ("windows9", "Microsoft Windows 10"),
    ("windows8Server", "Microsoft Windows Server 2012"),
    ("windows8", "Microsoft Windows 8"),
    ("windows7Server", "Microsoft Windows Server 2008 R2"),
    ("windows7", "Microsoft Windows 7"),
    ("darwin", "Apple macOS"),
    ("solaris", "Oracle Solaris"),
];

/// Every guest OS identifier of the API, in the schema's order.
pub fn all(schema: &Schema) -> &[Box<str>] {
    let ty = schema.known_type("VirtualMachineGuestOsIdentifier");
    match &schema.ty(ty).kind {
        TypeKind::Enum { values } => values,
        _ => &[],
    }
}

/// Whether `guest_id` is a guest OS identifier of the API.
pub fn is_known(schema: &Schema, guest_id: &str) -> bool {
    all(schema).iter().any(|v| &**v == guest_id)
}

/// The GuestOsFamily of a guest OS (`linuxGuest`, `windowsGuest`, ...).
pub fn family(guest_id: &str) -> &'static str {
    let id = guest_id.to_ascii_lowercase();
    let linux = [
        "linux", "debian", "ubuntu", "centos", "rhel", "sles", "suse", "fedora", "coreos",
        "photon", "mandr", "redhat", "asianux", "turbo", "novell", "oracle",
    ];
    if id.starts_with("win") {
        "windowsGuest"
    } else if id.starts_with("darwin") {
        "darwinGuestFamily"
    } else if id.starts_with("solaris") {
        "solarisGuest"
    } else if id.starts_with("netware") {
        "netwareGuest"
    } else if linux.iter().any(|l| id.contains(l)) {
        "linuxGuest"
    } else {
        "otherGuestFamily"
    }
}

/// The full name of a guest OS (`ubuntu64Guest` → "Ubuntu Linux (64-bit)"); an identifier
/// outside the table shows as itself without its `Guest` suffix.
pub fn full_name(guest_id: &str) -> String {
    let id = guest_id.strip_suffix("Guest").unwrap_or(guest_id);
    let Some((prefix, family)) = FAMILIES
        .iter()
        .filter(|(prefix, _)| id.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.len())
    else {
        return id.to_string();
    };
    let rest = &id[prefix.len()..];
    let bits64 = rest.ends_with("64");
    let version: String = rest
        .trim_end_matches("64")
        .trim_matches('_')
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect::<String>()
        .replace('_', ".");
    let mut name = family.to_string();
    if !version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.') {
        name.push(' ');
        name.push_str(&version);
    }
    name.push_str(if bits64 { " (64-bit)" } else { " (32-bit)" });
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_names_read_as_esxi_shows_them() {
        assert_eq!(full_name("otherLinux64Guest"), "Other Linux (64-bit)");
        assert_eq!(
            full_name("debian12_64Guest"),
            "Debian GNU/Linux 12 (64-bit)"
        );
        assert_eq!(full_name("ubuntuGuest"), "Ubuntu Linux (32-bit)");
        assert_eq!(
            full_name("rhel9_64Guest"),
            "Red Hat Enterprise Linux 9 (64-bit)"
        );
        assert_eq!(
            full_name("windows2019srv_64Guest"),
            "Microsoft Windows Server 2019 (64-bit)"
        );
        assert_eq!(full_name("other5xLinux64Guest"), "Other 5.x Linux (64-bit)");
        assert_eq!(full_name("zOsGuest"), "zOs");
    }

    #[test]
    fn known_guest_ids_are_the_schema_s() {
        let schema = vireo_api::schema::vim25();
        assert!(is_known(schema, "otherLinux64Guest"));
        assert!(is_known(schema, "debian12_64Guest"));
        assert!(!is_known(schema, "debian12-64Guest"));
        assert!(!is_known(schema, "../x"));
        assert_eq!(family("debian12_64Guest"), "linuxGuest");
        assert_eq!(family("windows9_64Guest"), "windowsGuest");
        assert_eq!(family("freebsd13_64Guest"), "otherGuestFamily");
    }
}
