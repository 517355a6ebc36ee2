//! Configuration resolution: command-line arguments plus what this host
//! reads like (its underlay address and interface, MTUs, allowed CPUs) become
//! one validated [`Config`]. Reads the system, changes nothing. Used by the
//! daemon (`runtime`), `check`, `attach` and the CNI plugin, which all need
//! this VM's underlay address the same way ([`detect_local`]).

use crate::cli::{parse_cpu_list, RunArgs};
use crate::datapath::{Datapath, Encap};
use crate::layout::Layout;
use crate::sys;
use std::net::Ipv4Addr;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub tun: String,
    pub layout: Layout,
    pub layout_name: &'static str,
    pub local: Ipv4Addr,
    pub underlay_if: Option<String>,
    pub underlay_mtu: Option<u32>,
    pub mtu: u16,
    pub key: Option<u32>,
    pub csum: bool,
    pub seq: bool,
    pub encap: Encap,
    pub datapath: crate::cli::DatapathName,
    /// How GRE mode receives (fanout group or sharded raw sockets).
    pub gre_receive: crate::cli::GreReceive,
    pub udp_port: u16,
    pub cpus: Vec<Option<core_affinity::CoreId>>,
    pub configure: bool,
    pub offload: bool,
    /// UDP GSO/GRO (with --encap udp).
    pub udp_offload: bool,
    /// The IPv6 overlay (dual-stack), unless it is off.
    pub overlay6: Option<crate::layout6::Layout6>,
    /// Why the IPv6 overlay is off (`None` when it is on), for one log line.
    pub overlay6_off: Option<Overlay6Off>,
}

/// Why a daemon runs IPv4 only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay6Off {
    /// `--overlay6 none`.
    ByOption,
    /// The host cannot (IPv6 disabled, or a TUN MTU below 1280): the reason.
    Host(String),
}

/// The IPv6 minimum link MTU (RFC 8200 section 5): a TUN below it cannot
/// carry IPv6 (the kernel turns IPv6 off on such a device).
pub const IPV6_MIN_MTU: u16 = 1280;

/// The IPv6 overlay of `--overlay6 spec`, given the TUN MTU, the underlay MTU
/// and what the host allows (`host_off`: [`crate::procfs::ipv6_disabled`]).
pub fn resolve_overlay6(
    spec: &str,
    mtu: u16,
    underlay_mtu: Option<u32>,
    overhead: u32,
    host_off: Option<String>,
) -> Result<(Option<crate::layout6::Layout6>, Option<Overlay6Off>), String> {
    let Some(l6) = crate::cli::parse_overlay6(spec)? else {
        return Ok((None, Some(Overlay6Off::ByOption)));
    };
    if let Some(why) = host_off {
        return Ok((None, Some(Overlay6Off::Host(why))));
    }
    if mtu < IPV6_MIN_MTU {
        let from = underlay_mtu.map_or(String::new(), |u| {
            format!(" (underlay MTU {u} minus {overhead} bytes of encapsulation)")
        });
        return Ok((
            None,
            Some(Overlay6Off::Host(format!(
                "the TUN MTU {mtu}{from} is below IPv6's minimum link MTU {IPV6_MIN_MTU}; \
                 raise the underlay MTU to at least {}",
                u32::from(IPV6_MIN_MTU) + overhead
            ))),
        ));
    }
    Ok((Some(l6), None))
}

/// A name the kernel takes for a TUN: 1-15 bytes, no '/' or spaces.
pub fn valid_tun_name(name: &str) -> bool {
    !name.is_empty() && name.len() < libc::IFNAMSIZ && !name.contains('/') && !name.contains(' ')
}

/// Turns arguments into a configuration, reading (not changing) the system.
pub fn resolve(args: &RunArgs) -> Result<Config, String> {
    let tun = args.tun.clone().ok_or("missing TUN device name")?;
    if !valid_tun_name(&tun) {
        return Err(format!(
            "'{tun}' is not a valid interface name (1-15 characters, no '/' or spaces)"
        ));
    }
    let layout = args.layout.resolve()?;
    let (local, underlay_if) = detect_local(&layout, args.local)?;
    let encap = Encap::from(args.encap);
    if args.datapath == crate::cli::DatapathName::Kernel && encap == Encap::Udp {
        return Err(
            "--datapath kernel carries GRE over IP only: GRE-in-UDP (--encap udp) has no kernel \
             datapath; use --datapath userspace or auto"
                .into(),
        );
    }
    let dp = Datapath::new(layout, local, args.key).with_options(encap, args.csum, args.seq);
    let overhead = dp.overhead() as u32;
    let underlay_mtu = underlay_if
        .as_deref()
        .and_then(|i| sys::netdev::interface_mtu(i).ok());
    let mtu = match (args.mtu, underlay_mtu) {
        (Some(m), _) => {
            if u32::from(m) + overhead > 65535 {
                return Err(format!(
                    "--mtu {m} plus {overhead} bytes of encapsulation exceeds 65535"
                ));
            }
            if let Some(u) = underlay_mtu {
                if u32::from(m) + overhead > u {
                    log::warn!("--mtu {m} + {overhead} bytes of GRE exceeds the underlay MTU {u}; large packets will be dropped (send_emsgsize)");
                }
            }
            m
        }
        (None, Some(u)) if u > overhead + 68 => (u - overhead).min(65535 - overhead) as u16,
        (None, Some(u)) => {
            return Err(format!(
                "underlay MTU {u} is too small for {overhead} bytes of encapsulation; pass --mtu"
            ))
        }
        (None, None) => (1500 - overhead) as u16,
    };

    let (overlay6, overlay6_off) = resolve_overlay6(
        &args.overlay6,
        mtu,
        underlay_mtu,
        overhead,
        crate::procfs::ipv6_disabled(),
    )?;

    let allowed = core_affinity::get_core_ids().unwrap_or_default();
    let allowed_ids: Vec<usize> = allowed.iter().map(|c| c.id).collect();
    let pin_list: Vec<usize> = match &args.cpus {
        Some(s) => {
            let list = parse_cpu_list(s)?;
            for c in &list {
                if !allowed_ids.contains(c) {
                    return Err(format!(
                        "--cpus: CPU {c} is not available to this process (allowed: {})",
                        fmt_list(&allowed_ids)
                    ));
                }
            }
            list
        }
        None => allowed_ids.clone(),
    };
    let threads = match args.threads {
        Some(t) if args.seq && t > 1 => {
            return Err(format!(
                "--seq needs a single worker (--threads 1): packets to one VM must leave \
                 in sequence order, and {t} workers would interleave them"
            ))
        }
        Some(t) => usize::from(t),
        // One worker sends everything, so each VM's sequence numbers leave in order.
        None if args.seq => 1,
        None => pin_list.len().max(1),
    };
    let cpus = (0..threads)
        .map(|i| {
            if args.no_pin || pin_list.is_empty() {
                None
            } else {
                Some(core_affinity::CoreId {
                    id: pin_list[i % pin_list.len()],
                })
            }
        })
        .collect();
    Ok(Config {
        tun,
        layout,
        layout_name: args.layout.name(),
        local,
        underlay_if,
        underlay_mtu,
        mtu,
        key: args.key,
        csum: args.csum,
        seq: args.seq,
        encap,
        datapath: args.datapath,
        gre_receive: args.gre_receive,
        udp_port: args.udp_port,
        cpus,
        configure: !args.no_configure,
        offload: !args.no_offload,
        udp_offload: !args.no_offload && !args.no_udp_offload,
        overlay6,
        overlay6_off,
    })
}

/// This VM's underlay address and the interface that carries it: `--local` if
/// given (validated against the layout), else the one unicast address of this
/// host inside the underlay prefix. Errors say what to do.
pub fn detect_local(
    layout: &Layout,
    local: Option<Ipv4Addr>,
) -> Result<(Ipv4Addr, Option<String>), String> {
    let addrs = sys::netdev::ipv4_addrs().map_err(|e| format!("list interface addresses: {e}"))?;
    let found = match local {
        Some(l) => {
            layout.check_local(l).map_err(|e| format!("--local: {e}"))?;
            let ifname = addrs.iter().find(|a| a.addr == l).map(|a| a.ifname.clone());
            if ifname.is_none() {
                log::warn!("--local {l} is not assigned to any interface of this host; peers will not reach it");
            }
            (l, ifname)
        }
        None => {
            let mine: Vec<_> = addrs
                .iter()
                .filter(|a| layout.is_unicast_vm(a.addr))
                .collect();
            match mine.as_slice() {
                [one] => (one.addr, Some(one.ifname.clone())),
                [] => {
                    return Err(format!(
                    "no address of this host is inside the underlay {}; assign one or pass --local",
                    layout.underlay()
                ))
                }
                many => {
                    let list: Vec<String> = many
                        .iter()
                        .map(|a| format!("{} on {}", a.addr, a.ifname))
                        .collect();
                    return Err(format!(
                        "several addresses of this host are inside the underlay {} ({}); choose one with --local",
                        layout.underlay(),
                        list.join(", ")
                    ));
                }
            }
        }
    };
    Ok(found)
}

fn fmt_list(v: &[usize]) -> String {
    v.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay6_on_off() {
        let def = crate::layout6::DEFAULT_OVERLAY6;
        let (l6, off) = resolve_overlay6(def, 1476, Some(1500), 24, None).unwrap();
        assert_eq!(l6.unwrap().to_string(), def);
        assert_eq!(off, None);
        assert_eq!(
            resolve_overlay6("none", 1476, None, 24, None).unwrap(),
            (None, Some(Overlay6Off::ByOption))
        );
        let (l6, off) =
            resolve_overlay6(def, 1476, None, 24, Some("IPv6 is disabled".into())).unwrap();
        assert_eq!(l6, None);
        assert_eq!(off, Some(Overlay6Off::Host("IPv6 is disabled".into())));
        // 1280 itself is enough; 1279 is not, and the line says what to do
        assert!(resolve_overlay6(def, 1280, Some(1304), 24, None)
            .unwrap()
            .0
            .is_some());
        let (l6, off) = resolve_overlay6(def, 1276, Some(1300), 24, None).unwrap();
        assert_eq!(l6, None);
        let Some(Overlay6Off::Host(why)) = off else {
            panic!("{off:?}")
        };
        assert!(
            why.contains("TUN MTU 1276 (underlay MTU 1300 minus 24"),
            "{why}"
        );
        assert!(why.contains("at least 1304"), "{why}");
        assert!(resolve_overlay6("fd00::/48", 1476, None, 24, None).is_err());
    }
}
