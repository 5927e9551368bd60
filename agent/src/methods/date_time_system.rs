//! HostDateTimeSystem, read-only: the host's clock is the machine's and vireod does not set
//! it. `dateTimeInfo` holds the machine's time zone (`/etc/localtime`'s zone and its current
//! UTC offset) and the NTP servers its time service is configured with (systemd-timesyncd,
//! chrony or ntpd); QueryDateTime answers the clock; RefreshDateTimeSystem reads them again;
//! the methods that would change them answer NotSupported.

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Fault, Value};

use super::{Call, Handler, MethodResult, MethodTable};
use crate::host::Host;
use crate::inventory::esxi::refs;
use crate::inventory::now_micros;

/// HostDateTimeSystem's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "HostDateTimeSystem",
    methods: &[
        ("QueryDateTime", Handler::Sync(query_date_time)),
        ("RefreshDateTimeSystem", Handler::Sync(refresh)),
        ("QueryAvailableTimeZones", Handler::Sync(time_zones)),
        ("UpdateDateTime", Handler::Sync(not_ours)),
        ("UpdateDateTimeConfig", Handler::Sync(not_ours)),
    ],
};

/// NTP configuration files and the directive naming servers in each.
const NTP_FILES: &[(&str, &[&str])] = &[
    ("/etc/systemd/timesyncd.conf", &["NTP"]),
    ("/etc/chrony/chrony.conf", &["server", "pool"]),
    ("/etc/chrony.conf", &["server", "pool"]),
    ("/etc/ntp.conf", &["server", "pool"]),
];

fn query_date_time(_call: &Call<'_>) -> MethodResult {
    Ok(Some(Value::DateTime(now_micros())))
}

fn refresh(call: &Call<'_>) -> MethodResult {
    publish(call.host);
    Ok(None)
}

fn time_zones(call: &Call<'_>) -> MethodResult {
    Ok(Some(Value::Array(
        call.schema.known_type("HostDateTimeSystemTimeZone"),
        vec![time_zone(call.schema).into()],
    )))
}

fn not_ours(call: &Call<'_>) -> MethodResult {
    Err(Fault::not_supported(
        call.schema,
        "The host's clock and time service belong to the machine vireod runs on; set them there.",
    ))
}

/// Publishes `dateTimeInfo` from the machine's files.
pub fn publish(host: &Host) {
    let schema = host.schema;
    let mut info =
        DataObject::of(schema, "HostDateTimeInfo").with(schema, "timeZone", time_zone(schema));
    let (files, servers) = ntp_servers();
    if !files.is_empty() {
        info.set(
            schema,
            "ntpConfig",
            DataObject::of(schema, "HostNtpConfig")
                .with(schema, "server", Value::strings(schema, &servers))
                .with(schema, "configFile", Value::strings(schema, &files)),
        );
        info.set(schema, "systemClockProtocol", "ntp");
    }
    host.mutate(|inv| inv.set(schema, &refs::date_time_system(), "dateTimeInfo", info));
}

/// The machine's zone: the name `/etc/localtime` links to, with its offset now.
fn time_zone(schema: &Schema) -> DataObject {
    let name = std::fs::read_link("/etc/localtime")
        .ok()
        .and_then(|target| {
            let text = target.to_string_lossy().into_owned();
            Some(text.split_once("zoneinfo/")?.1.to_string())
        })
        .unwrap_or_else(|| "UTC".to_string());
    let offset = utc_offset_secs();
    DataObject::of(schema, "HostDateTimeSystemTimeZone")
        .with(schema, "key", name.as_str())
        .with(schema, "name", name.as_str())
        .with(
            schema,
            "description",
            format!(
                "{name} (UTC{:+03}:{:02})",
                offset / 3600,
                (offset % 3600).abs() / 60
            ),
        )
        .with(schema, "gmtOffset", offset)
}

/// The local time's offset from UTC now, in seconds.
fn utc_offset_secs() -> i32 {
    let now = libc::time_t::try_from(now_micros() / 1_000_000).unwrap_or_default();
    // libc's: nix has no localtime_r, and the offset is the C library's reading of the zone.
    // SAFETY: an all-zero tm is a valid value; localtime_r fills the tm we own from a time_t
    // we own and keeps no pointer to either.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            0
        } else {
            tm.tm_gmtoff as i32
        }
    }
}

/// The configuration files present and the NTP servers they name.
fn ntp_servers() -> (Vec<String>, Vec<String>) {
    let mut files = Vec::new();
    let mut servers = Vec::new();
    for (file, directives) in NTP_FILES {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        files.push(file.to_string());
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            for directive in *directives {
                if let Some(rest) = line.strip_prefix(directive) {
                    let values = rest.trim_start_matches([' ', '\t', '=']);
                    let names = if *directive == "NTP" {
                        values.split_whitespace().collect::<Vec<_>>()
                    } else {
                        values.split_whitespace().take(1).collect()
                    };
                    servers.extend(names.into_iter().map(str::to_string));
                }
            }
        }
    }
    (files, servers)
}
