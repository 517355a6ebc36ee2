//! The kernel datapath's device: one collect-metadata GRE device with the
//! two tc programs of [`crate::ebpf::programs`] attached (issue #15).
//!
//! [`KernelDevice::create`] loads the counter map and both programs (no side
//! effect yet), creates the device down, sets its MTU explicitly, adds a
//! clsact qdisc and the ingress filter, then the egress filter, the overlay
//! address, and only then brings it up: a device that is up always has its
//! ingress program (fail closed). Any failure part-way deletes the device,
//! which takes the qdisc and filters with it; the programs and the map go
//! with their last file descriptor. The device carries the alias
//! [`ALIAS`], so a restart after `kill -9` can tell its stale device from
//! someone else's (one collect-metadata GRE device per network namespace).

use super::ebpf::{BpfError, CounterMap, Program};
use super::netlink::{Link, Netlink};
use crate::ebpf::Insn;
use std::fmt;
use std::io;
use std::net::Ipv4Addr;

/// `IFLA_IFALIAS` of meshfwd's device.
pub const ALIAS: &str = "meshfwd kernel datapath";
/// `IFLA_IFALIAS` of the device that keeps ip_gre quiet beside userspace
/// meshfwd ([`KernelDevice::create_quiet`]); never reclaimed by
/// [`ALIAS`]'s rules (another meshfwd in the namespace may own it).
pub const QUIET_ALIAS: &str = "meshfwd ip_gre quiet";
const MAP_NAME: &str = "meshfwd_drops";
const EGRESS_NAME: &str = "meshfwd_egress";
const INGRESS_NAME: &str = "meshfwd_ingress";

/// What the device is made of.
pub struct DeviceSpec<'a> {
    pub name: &'a str,
    pub mtu: u32,
    /// The VM's overlay address and the overlay prefix length (none: no
    /// address, nothing routed to the device).
    pub addr: Option<Ipv4Addr>,
    pub prefix: u8,
    /// `IFLA_IFALIAS`: [`ALIAS`] or [`QUIET_ALIAS`].
    pub alias: &'a str,
    /// `icsum`/`ocsum` on the device (exactly when `--csum`).
    pub csum: bool,
    pub egress: &'a [Insn],
    pub ingress: &'a [Insn],
    /// Number of counter slots the programs index.
    pub slots: u32,
}

/// Which step of the setup failed, and why.
#[derive(Debug)]
pub struct SetupError {
    pub step: String,
    pub error: String,
    /// The kernel has no GRE device type (no ip_gre): `EOPNOTSUPP` from
    /// RTM_NEWLINK, "Unknown device type" in iproute2's words.
    pub no_gre: bool,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.error)
    }
}

impl std::error::Error for SetupError {}

fn io_err(step: impl Into<String>, e: io::Error) -> SetupError {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => " (needs CAP_NET_ADMIN)",
        Some(libc::EOPNOTSUPP) => " (no GRE device type in this kernel: ip_gre missing)",
        _ => "",
    };
    SetupError {
        step: step.into(),
        no_gre: e.raw_os_error() == Some(libc::EOPNOTSUPP),
        error: format!("{e}{hint}"),
    }
}

fn bpf_err(e: BpfError) -> SetupError {
    SetupError {
        step: e.context.clone(),
        error: {
            let s = e.to_string();
            s.strip_prefix(&format!("{}: ", e.context))
                .unwrap_or(&s)
                .to_string()
        },
        no_gre: false,
    }
}

/// Packets and bytes of one interface, from /proc/net/dev.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// The line of `ifname` in a /proc/net/dev text.
pub fn parse_proc_net_dev(text: &str, ifname: &str) -> Option<DevStats> {
    text.lines().find_map(|l| {
        let (name, rest) = l.split_once(':')?;
        if name.trim() != ifname {
            return None;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        (v.len() >= 10).then(|| DevStats {
            rx_bytes: v[0],
            rx_packets: v[1],
            tx_bytes: v[8],
            tx_packets: v[9],
        })
    })
}

/// Deletes the device when dropped, unless disarmed: the cleanup of a
/// setup that fails part-way.
struct Created<'a> {
    nl: &'a mut Netlink,
    index: u32,
    armed: bool,
}

impl Drop for Created<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = self.nl.del_link(self.index) {
                log::warn!("cleanup: delete interface {}: {e}", self.index);
            }
        }
    }
}

/// The device with its programs attached; removed by [`KernelDevice::remove`]
/// or when dropped.
pub struct KernelDevice {
    nl: Netlink,
    name: String,
    index: u32,
    map: CounterMap,
    // Attached through the filters; kept so the ids stay meaningful in logs.
    _egress: Program,
    _ingress: Program,
    removed: bool,
    /// Verifier statistics of (egress, ingress).
    pub verifier: (String, String),
    /// A stale device of an earlier run that was removed first, if any.
    pub reclaimed: Option<String>,
}

impl KernelDevice {
    /// Sets everything up (see the module comment); on error nothing is
    /// left behind.
    pub fn create(spec: &DeviceSpec<'_>) -> Result<KernelDevice, SetupError> {
        let mut nl = Netlink::open().map_err(|e| io_err("open rtnetlink socket", e))?;
        let map = CounterMap::create(MAP_NAME, spec.slots).map_err(bpf_err)?;
        let egress =
            Program::load_sched_cls(EGRESS_NAME, spec.egress, &map, true).map_err(bpf_err)?;
        let ingress =
            Program::load_sched_cls(INGRESS_NAME, spec.ingress, &map, true).map_err(bpf_err)?;
        let reclaimed = if spec.alias == ALIAS {
            reclaim_stale(&mut nl, spec.name)?
        } else {
            None
        };
        let create = |nl: &mut Netlink| nl.add_gre_collect_md(spec.name, spec.mtu, spec.csum);
        let step = format!(
            "create collect-metadata GRE device {} (ip link add {} type gre external{})",
            spec.name,
            spec.name,
            if spec.csum { " icsum ocsum" } else { "" }
        );
        match create(&mut nl) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                let others: Vec<String> = nl
                    .links()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|l| l.kind.as_deref() == Some("gre") && l.name != "gre0")
                    .map(|l| l.name)
                    .collect();
                return Err(SetupError {
                    step,
                    error: format!(
                        "{e}: this network namespace already has a collect-metadata GRE device \
                         (one is allowed per namespace; GRE devices here: {}); delete it or run \
                         meshfwd in another namespace",
                        if others.is_empty() {
                            "none listed".into()
                        } else {
                            others.join(", ")
                        }
                    ),
                    no_gre: false,
                });
            }
            Err(e) => return Err(io_err(step, e)),
        }
        let link = nl
            .link_by_name(spec.name)
            .map_err(|e| io_err(format!("look up {}", spec.name), e))?
            .ok_or_else(|| SetupError {
                step: format!("look up {}", spec.name),
                error: "created but not found".into(),
                no_gre: false,
            })?;
        let index = link.index;
        let mut guard = Created {
            nl: &mut nl,
            index,
            armed: true,
        };
        let nl2 = &mut *guard.nl;
        nl2.set_alias(index, spec.alias)
            .map_err(|e| io_err(format!("set alias of {}", spec.name), e))?;
        nl2.set_mtu(index, spec.mtu)
            .map_err(|e| io_err(format!("set MTU {} on {}", spec.mtu, spec.name), e))?;
        nl2.add_clsact(index)
            .map_err(|e| io_err(format!("add clsact qdisc to {}", spec.name), e))?;
        nl2.add_bpf_filter(index, true, ingress.raw_fd() as u32, INGRESS_NAME)
            .map_err(|e| io_err(format!("attach the ingress program to {}", spec.name), e))?;
        nl2.add_bpf_filter(index, false, egress.raw_fd() as u32, EGRESS_NAME)
            .map_err(|e| io_err(format!("attach the egress program to {}", spec.name), e))?;
        disable_ipv6(spec.name);
        if let Some(addr) = spec.addr {
            nl2.add_addr(index, addr, spec.prefix, None)
                .map_err(|e| io_err(format!("add {addr}/{} to {}", spec.prefix, spec.name), e))?;
        }
        nl2.set_up(index, true)
            .map_err(|e| io_err(format!("set {} up", spec.name), e))?;
        guard.armed = false;
        drop(guard);
        Ok(KernelDevice {
            nl,
            name: spec.name.to_string(),
            index,
            map,
            verifier: (
                egress.verifier_stats.trim().replace('\n', "; "),
                ingress.verifier_stats.trim().replace('\n', "; "),
            ),
            _egress: egress,
            _ingress: ingress,
            removed: false,
            reclaimed,
        })
    }

    /// The device that keeps ip_gre quiet beside userspace meshfwd: a
    /// collect-metadata GRE device `name`, up, without address, with
    /// `drop_all` on ingress and egress. ip_gre hands it every GRE packet
    /// no tunnel of its own matches (`ip_tunnel_lookup` prefers a
    /// collect-metadata device to the fallback `gre0`, and without either
    /// `gre_rcv` answers with ICMP port unreachable); the packet and raw
    /// sockets got their copies before. Removed like the kernel datapath's
    /// device. `EEXIST`: the namespace has a collect-metadata GRE device
    /// already, which takes those packets in its place.
    pub fn create_quiet(name: &str, drop_all: &[Insn]) -> Result<KernelDevice, SetupError> {
        KernelDevice::create(&DeviceSpec {
            name,
            mtu: 1280,
            addr: None,
            prefix: 0,
            alias: QUIET_ALIAS,
            csum: false,
            egress: drop_all,
            ingress: drop_all,
            slots: 1,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drop counters by slot, summed over CPUs.
    pub fn drops(&self) -> Result<Vec<u64>, BpfError> {
        self.map.read_all()
    }

    /// The device's packet and byte counters; `None` once it is gone.
    pub fn stats(&self) -> Option<DevStats> {
        let t = std::fs::read_to_string("/proc/net/dev").ok()?;
        parse_proc_net_dev(&t, &self.name)
    }

    /// Whether the device still exists (someone may delete it).
    pub fn exists(&mut self) -> bool {
        matches!(self.nl.link_by_index(self.index), Ok(Some(l)) if l.name == self.name)
    }

    /// Deletes the device (qdisc and filters go with it); the programs and
    /// the map are freed when this value is dropped.
    pub fn remove(&mut self) -> io::Result<()> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        match self.nl.del_link(self.index) {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            r => r,
        }
    }
}

impl Drop for KernelDevice {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            log::warn!("delete {}: {e}", self.name);
        }
    }
}

/// Deletes meshfwd's own stale device (alias [`ALIAS`], any name, or a GRE
/// device with the name we are about to use) left by a process that was
/// killed. The caller holds the instance lock for `name`, so no live
/// meshfwd uses it. Refuses to touch another kind of device named `name`.
fn reclaim_stale(nl: &mut Netlink, name: &str) -> Result<Option<String>, SetupError> {
    let links = nl.links().map_err(|e| io_err("list interfaces", e))?;
    let ours = |l: &Link| {
        l.kind.as_deref() == Some("gre") && (l.alias.as_deref() == Some(ALIAS) || l.name == name)
    };
    if let Some(l) = links.iter().find(|l| l.name == name && !ours(l)) {
        return Err(SetupError {
            step: format!("create {name}"),
            error: format!(
                "an interface named {name} already exists (kind {}) and is not meshfwd's \
                 kernel-datapath device; choose another name",
                l.kind.as_deref().unwrap_or("unknown")
            ),
            no_gre: false,
        });
    }
    let mut removed = None;
    for l in links.iter().filter(|l| ours(l)) {
        nl.del_link(l.index)
            .map_err(|e| io_err(format!("remove stale device {}", l.name), e))?;
        removed = Some(l.name.clone());
    }
    Ok(removed)
}

/// No IPv6 on the device: its link-local address would send router
/// solicitations and MLD reports into the egress program, to be counted
/// as not_ipv4. Best effort (IPv6 may be absent).
fn disable_ipv6(name: &str) {
    let path = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    if let Err(e) = std::fs::write(&path, "1") {
        log::debug!("write {path}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_dev_lines() {
        let t = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n    lo:  100  2 0 0 0 0 0 0  300 4 0 0 0 0 0 0\n  mf0: 10 1 0 0 0 0 0 0 20 3 0 5 0 0 0 0\n";
        assert_eq!(
            parse_proc_net_dev(t, "mf0"),
            Some(DevStats {
                rx_packets: 1,
                rx_bytes: 10,
                tx_packets: 3,
                tx_bytes: 20
            })
        );
        assert_eq!(parse_proc_net_dev(t, "lo").unwrap().tx_bytes, 300);
        assert_eq!(parse_proc_net_dev(t, "mf"), None);
        assert_eq!(parse_proc_net_dev("x: 1 2", "x"), None);
    }

    #[test]
    fn setup_errors_say_what_and_why() {
        let e = io_err("create mf0", io::Error::from_raw_os_error(libc::EOPNOTSUPP));
        assert!(e.no_gre);
        assert!(e.to_string().contains("ip_gre missing"), "{e}");
        let e = io_err("x", io::Error::from_raw_os_error(libc::EPERM));
        assert!(!e.no_gre && e.to_string().contains("CAP_NET_ADMIN"));
    }
}
