//! vireo-agent: `vireod`, the host agent that vSphere clients drive like an ESXi host. This crate
//! holds the HTTPS/SOAP server, sessions and accounts, the inventory, tasks and events, and the
//! managed object methods; the wire model itself lives in vireo-api.

pub mod authz;
pub mod autostart;
pub mod collectors;
pub mod config;
pub mod connections;
pub mod console;
pub mod crash;
pub mod datastore;
pub mod events;
pub mod fair_slots;
pub mod faults;
pub mod guest_files;
pub mod host;
pub mod http_files;
pub mod inventory;
pub mod json_file;
pub mod locks;
pub mod logins;
pub mod methods;
pub mod nfc;
pub mod ovf;
pub mod perf;
pub mod server;
pub mod sessions;
pub mod settings;
pub mod soap;
pub mod startup;
pub mod tasks;
pub mod tls;
pub mod users;
pub mod vm;
