//! HostFirewallSystem, a read-only view of what vireod opens: it filters nothing itself (the
//! default policy blocks neither direction; the machine's own firewall is outside its view),
//! and its one ruleset is the HTTPS port it listens on (SOAP, /folder, /nfc, /screen).
//! Changing the policy or rulesets answers NotSupported.

use vireo_api::{DataObject, Value};

use super::service_system::HOSTD_RULESET;
use super::{Call, Handler, MethodResult, MethodTable};
use crate::faults::machine_owned;
use crate::host::Host;
use crate::inventory::esxi::refs;
use crate::inventory::host_config::set_section;

/// HostFirewallSystem's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "HostFirewallSystem",
    methods: &[
        ("RefreshFirewall", Handler::Sync(refresh)),
        ("UpdateDefaultPolicy", Handler::Sync(machine_firewall)),
        ("EnableRuleset", Handler::Sync(machine_firewall)),
        ("DisableRuleset", Handler::Sync(machine_firewall)),
        ("UpdateRuleset", Handler::Sync(machine_firewall)),
    ],
};

fn refresh(call: &Call<'_>) -> MethodResult {
    publish(call.host);
    Ok(None)
}

fn machine_firewall(call: &Call<'_>) -> MethodResult {
    Err(machine_owned(call.schema, "Packet filtering"))
}

/// Publishes `firewallInfo` (and `config.firewall`).
pub fn publish(host: &Host) {
    let schema = host.schema;
    let policy = DataObject::of(schema, "HostFirewallDefaultPolicy")
        .with(schema, "incomingBlocked", false)
        .with(schema, "outgoingBlocked", false);
    let rule = DataObject::of(schema, "HostFirewallRule")
        .with(schema, "port", i32::from(host.config.listen.port()))
        .with(
            schema,
            "direction",
            Value::enumeration(schema, "HostFirewallRuleDirection", "inbound"),
        )
        .with(
            schema,
            "portType",
            Value::enumeration(schema, "HostFirewallRulePortType", "dst"),
        )
        .with(schema, "protocol", "tcp");
    let ruleset = DataObject::of(schema, "HostFirewallRuleset")
        .with(schema, "key", HOSTD_RULESET)
        .with(schema, "label", "vSphere API over HTTPS (vireod)")
        .with(schema, "required", true)
        .with(
            schema,
            "rule",
            Value::Array(schema.known_type("HostFirewallRule"), vec![rule.into()]),
        )
        .with(schema, "service", "hostd")
        .with(schema, "enabled", true)
        .with(schema, "userControllable", false);
    let info = DataObject::of(schema, "HostFirewallInfo")
        .with(schema, "defaultPolicy", policy)
        .with(
            schema,
            "ruleset",
            Value::Array(
                schema.known_type("HostFirewallRuleset"),
                vec![ruleset.into()],
            ),
        );
    host.mutate(|inv| {
        inv.set(
            schema,
            &refs::firewall_system(),
            "firewallInfo",
            info.clone(),
        );
        set_section(schema, inv, "firewall", info);
    });
}
