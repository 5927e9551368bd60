//! NAT behind "VM Network": a private /24 per vireod instance on its bridge (the bridge holds
//! the gateway address `.1`), an nftables table `vireo_<id>` that masquerades the subnet's
//! traffic leaving through any other interface, and a dnsmasq that vireod starts and keeps
//! running on the bridge for DHCP and DNS (leases in `<data dir>/network/dnsmasq-<bridge>.leases`).
//!
//! Everything here is named by the instance (bridge, table, files under `<data dir>/network`),
//! so [`Nat::bring_up`] at start reconciles what a killed vireod left and [`remove`] takes away
//! exactly what this instance added: nothing else of the host's network is read or changed,
//! except IPv4 forwarding, which masquerading needs (as libvirt, vireod turns it on).

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{interface_exists, set_ipv4, tool, Network, NetworkError};

/// The file in the data dir that keeps the chosen subnet.
const SUBNET_FILE: &str = "network-nat-subnet";
/// The folder in the data dir for dnsmasq's pid, lease and log files.
const STATE_DIR: &str = "network";
/// The /24s a NAT network may use: 172.16.0.0/12.
const POOL_FIRST: u32 = 0xac10_0000;
const POOL_SIZE: u32 = 1 << 12;
/// How long a lease lasts.
const LEASE_TIME: &str = "1h";
/// How long to wait between restarts of a dnsmasq that ended.
const RESTART_DELAY: Duration = Duration::from_secs(1);

/// A /24 that a NAT network's guests live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: u32,
}

impl Subnet {
    /// The host's address on the bridge: the guests' router and DNS server.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network + 1)
    }

    fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.network + n)
    }

    /// Whether `ip` is in the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & 0xffff_ff00 == self.network
    }

    fn parse(text: &str) -> Option<Subnet> {
        let network: Ipv4Addr = text.trim().strip_suffix("/24")?.parse().ok()?;
        let network = u32::from(network);
        (network & 0xff == 0).then_some(Subnet { network })
    }

    /// Whether a route to `destination`/`mask` covers any of this subnet (or it covers one).
    fn overlaps(&self, destination: u32, mask: u32) -> bool {
        let mask = mask & 0xffff_ff00;
        self.network & mask == destination & mask
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}/24", Ipv4Addr::from(self.network))
    }
}

/// Why the NAT network could not be set up or removed.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    /// The subnet file could not be read or written.
    #[error("cannot read or keep the NAT subnet in {path}: {source}")]
    SubnetFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Every /24 of 172.16.0.0/12 is routed somewhere on this host already.
    #[error("no /24 of 172.16.0.0/12 is free on this host for the NAT network")]
    NoFreeSubnet,
    /// The bridge or its address failed.
    #[error(transparent)]
    Interface(#[from] NetworkError),
    /// IPv4 forwarding could not be turned on.
    #[error("cannot turn on IPv4 forwarding: {0}")]
    Forwarding(std::io::Error),
    /// nft refused the table or could not run.
    #[error("nft could not {action} table {table}: {detail}")]
    Nft {
        /// What was attempted.
        action: &'static str,
        /// The table.
        table: String,
        /// nft's message.
        detail: String,
    },
    /// dnsmasq's files could not be made.
    #[error("cannot prepare dnsmasq's files in {path}: {source}")]
    StateDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The NAT network of one vireod instance.
#[derive(Debug, Clone)]
pub struct Nat {
    network: Network,
    subnet: Subnet,
    state_dir: PathBuf,
}

impl Nat {
    /// The NAT network of `network`, with the subnet kept in `data_dir` (chosen at first use:
    /// the first /24 from the instance's own slot on that no route of this host touches).
    pub fn of(network: Network, data_dir: &Path) -> Result<Nat, NatError> {
        let path = data_dir.join(SUBNET_FILE);
        let failed = |source| NatError::SubnetFile {
            path: path.clone(),
            source,
        };
        let subnet = match std::fs::read_to_string(&path) {
            Ok(text) => Subnet::parse(&text)
                .ok_or_else(|| failed(std::io::ErrorKind::InvalidData.into()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let subnet = free_subnet(network.instance, &routes().map_err(failed)?)?;
                std::fs::write(&path, format!("{subnet}\n")).map_err(failed)?;
                subnet
            }
            Err(e) => return Err(failed(e)),
        };
        Ok(Nat {
            network,
            subnet,
            state_dir: data_dir.join(STATE_DIR),
        })
    }

    /// The subnet the guests get addresses in.
    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// Makes the network whole: the bridge up with the gateway address, forwarding on, the
    /// masquerade table (replaced whole), and a fresh supervised dnsmasq (one a killed vireod
    /// left running is stopped first). Safe to call at every start.
    pub fn bring_up(&self) -> Result<(), NatError> {
        self.network.ensure_bridge()?;
        set_ipv4(&self.network.bridge(), Some(self.subnet.gateway()), 24)?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(NatError::Forwarding)?;
        let table = table_name(self.network);
        nft(&self.nft_rules(), "create", &table)?;
        std::fs::create_dir_all(&self.state_dir).map_err(|source| NatError::StateDir {
            path: self.state_dir.clone(),
            source,
        })?;
        stop_dnsmasq(&self.pid_file(), &self.lease_file());
        self.supervise_dnsmasq()
    }

    fn pid_file(&self) -> PathBuf {
        self.state_dir
            .join(format!("dnsmasq-{}.pid", self.network.bridge()))
    }

    fn lease_file(&self) -> PathBuf {
        lease_file_in(&self.state_dir, self.network)
    }

    /// The table: masquerade what leaves the subnet through another interface; let nothing
    /// from outside open a connection into it; drop what the bridge sends from a foreign
    /// source address. The leading `table`/`delete` pair makes the load a replacement.
    fn nft_rules(&self) -> String {
        let table = table_name(self.network);
        let bridge = self.network.bridge();
        let subnet = self.subnet;
        format!(
            "table ip {table}\n\
             delete table ip {table}\n\
             table ip {table} {{\n\
             \tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\tip saddr {subnet} ip daddr != {subnet} oifname != \"{bridge}\" masquerade\n\
             \t}}\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority filter; policy accept;\n\
             \t\tiifname \"{bridge}\" oifname \"{bridge}\" accept\n\
             \t\tiifname \"{bridge}\" ip saddr != {subnet} drop\n\
             \t\toifname \"{bridge}\" ct state established,related accept\n\
             \t\toifname \"{bridge}\" drop\n\
             \t}}\n\
             }}\n"
        )
    }

    fn dnsmasq_command(&self) -> Command {
        let subnet = self.subnet;
        let mut command = Command::new(tool("dnsmasq"));
        command
            .arg("--keep-in-foreground")
            .arg("--conf-file=/dev/null")
            .arg(format!("--interface={}", self.network.bridge()))
            .arg("--except-interface=lo")
            .arg("--bind-dynamic")
            .arg("--strict-order")
            .arg(format!(
                "--dhcp-range={},{},255.255.255.0,{LEASE_TIME}",
                subnet.host(10),
                subnet.host(254)
            ))
            .arg("--dhcp-authoritative")
            .arg("--dhcp-no-override")
            .arg(format!("--dhcp-leasefile={}", self.lease_file().display()))
            .arg("--log-facility=-")
            .arg("--log-dhcp")
            .stdin(Stdio::null());
        command
    }

    /// Starts dnsmasq on a thread that starts it again whenever it ends.
    fn supervise_dnsmasq(&self) -> Result<(), NatError> {
        let log_path = self
            .state_dir
            .join(format!("dnsmasq-{}.log", self.network.bridge()));
        let nat = self.clone();
        std::thread::Builder::new()
            .name("dnsmasq".into())
            .spawn(move || loop {
                match nat.run_dnsmasq(&log_path) {
                    Ok(status) => tracing::warn!("dnsmasq for {} ended: {status}", nat.subnet),
                    Err(error) => tracing::error!("cannot run dnsmasq for {}: {error}", nat.subnet),
                }
                std::thread::sleep(RESTART_DELAY);
            })
            .map(|_| ())
            .map_err(|source| NatError::StateDir {
                path: self.state_dir.clone(),
                source,
            })
    }

    /// Runs dnsmasq once, logging to `log_path`, until it ends.
    fn run_dnsmasq(&self, log_path: &Path) -> std::io::Result<std::process::ExitStatus> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)?;
        let mut child = self
            .dnsmasq_command()
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut pid_file = std::fs::File::create(self.pid_file())?;
        writeln!(pid_file, "{}", child.id())?;
        tracing::info!(pid = child.id(), "dnsmasq serving {}", self.subnet);
        child.wait()
    }
}

/// dnsmasq's lease file for the NAT network of `network` in the vireod data dir `data_dir`.
pub fn lease_file_of(network: Network, data_dir: &Path) -> PathBuf {
    lease_file_in(&data_dir.join(STATE_DIR), network)
}

fn lease_file_in(state_dir: &Path, network: Network) -> PathBuf {
    state_dir.join(format!("dnsmasq-{}.leases", network.bridge()))
}

/// Removes what the NAT network of `network` added: its dnsmasq, its nft table, the bridge's
/// address. The bridge itself stays (internal networks keep using it). Nothing missing is an
/// error.
pub fn remove(network: Network, data_dir: &Path) -> Result<(), NatError> {
    let nat_state = data_dir.join(STATE_DIR);
    let bridge = network.bridge();
    stop_dnsmasq(
        &nat_state.join(format!("dnsmasq-{bridge}.pid")),
        &lease_file_in(&nat_state, network),
    );
    let table = table_name(network);
    nft(
        &format!("table ip {table}\ndelete table ip {table}\n"),
        "delete",
        &table,
    )?;
    if interface_exists(&bridge) {
        set_ipv4(&bridge, None, 0)?;
    }
    Ok(())
}

/// The nft table of an instance.
pub fn table_name(network: Network) -> String {
    format!("vireo_{:04x}", network.instance)
}

/// Runs `nft -f -` with `script`; returns what nft printed (for `list` commands).
pub(super) fn nft(script: &str, action: &'static str, table: &str) -> Result<String, NatError> {
    let failed = |detail: String| NatError::Nft {
        action,
        table: table.to_string(),
        detail,
    };
    let mut child = Command::new(tool("nft"))
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| failed(e.to_string()))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(failed(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ))
    }
}

/// Ends the dnsmasq recorded in `pid_file` if it is the one serving `lease_file` (a pid reused
/// by another process is left alone), and waits for it to go.
fn stop_dnsmasq(pid_file: &Path, lease_file: &Path) {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
    else {
        return;
    };
    let ours = format!("--dhcp-leasefile={}", lease_file.display());
    let serves_ours = |pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|cmdline| cmdline.split(|&b| b == 0).any(|arg| arg == ours.as_bytes()))
            .unwrap_or(false)
    };
    if !serves_ours(pid) {
        return;
    }
    tracing::info!(pid, "stopping the dnsmasq an earlier vireod left");
    // The pid's command line shows it is our dnsmasq.
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while serves_ours(pid) && !is_zombie(pid) {
        if Instant::now() > deadline {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(pid_file);
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// The host's IPv4 routes as (destination, mask), from /proc/net/route.
fn routes() -> std::io::Result<Vec<(u32, u32)>> {
    Ok(parse_routes(&std::fs::read_to_string("/proc/net/route")?))
}

/// The (destination, mask) pairs of /proc/net/route's text, which prints each network-order
/// address as the hex of its bytes read in the host's order.
fn parse_routes(text: &str) -> Vec<(u32, u32)> {
    let address = |field: &str| {
        u32::from_str_radix(field, 16)
            .ok()
            .map(|raw| u32::from_be_bytes(raw.to_ne_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some((address(fields.get(1)?)?, address(fields.get(7)?)?))
        })
        .collect()
}

/// The first /24 of the pool, from the instance's own slot on, that no route overlaps (the
/// default route, mask 0, overlaps everything and is not counted).
fn free_subnet(instance: u16, routes: &[(u32, u32)]) -> Result<Subnet, NatError> {
    (0..POOL_SIZE)
        .map(|step| Subnet {
            network: POOL_FIRST + ((u32::from(instance) + step) % POOL_SIZE) * 256,
        })
        .find(|subnet| {
            !routes
                .iter()
                .any(|&(destination, mask)| mask != 0 && subnet.overlaps(destination, mask))
        })
        .ok_or(NatError::NoFreeSubnet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_avoid_routed_ones_and_start_at_the_instance_slot() {
        let routes = [
            (0, 0),
            (u32::from(Ipv4Addr::new(172, 16, 5, 0)), 0xffff_ff00),
            (u32::from(Ipv4Addr::new(172, 16, 6, 0)), 0xffff_fe00),
        ];
        let subnet = free_subnet(5, &routes).unwrap();
        assert_eq!(subnet.to_string(), "172.16.8.0/24");
        assert_eq!(subnet.gateway(), Ipv4Addr::new(172, 16, 8, 1));
        assert_eq!(
            free_subnet(0x0fff, &[]).unwrap().to_string(),
            "172.31.255.0/24"
        );
        assert_eq!(
            free_subnet(0x1000, &[]).unwrap().to_string(),
            "172.16.0.0/24"
        );
        let everything = [(u32::from(Ipv4Addr::new(172, 16, 0, 0)), 0xfff0_0000)];
        assert!(matches!(
            free_subnet(1, &everything),
            Err(NatError::NoFreeSubnet)
        ));
        assert_eq!(
            Subnet::parse("172.20.3.0/24\n"),
            Some(Subnet {
                network: 0xac14_0300
            })
        );
        assert_eq!(Subnet::parse("172.20.3.1/24"), None);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn routes_read_in_network_order() {
        let text = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                    eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n\
                    eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        let routes = parse_routes(text);
        assert_eq!(routes, [(0, 0), (0xc000_0200, 0xffff_ff00)]);
    }
}
