//! `meshfwd addr`: explains an overlay (IPv4 or IPv6) or underlay address, or
//! composes one. Pure: input strings in, a report (sentences or JSON) out.
//!
//! The first line of every text report and every JSON key that existed before
//! the IPv6 layout are contracts of scripts: IPv6 adds lines and keys only.

use crate::layout::{Cidr, Layout, Role};
use crate::layout6::{self, Cidr6, Layout6};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What an address is under a layout.
#[derive(Debug, Clone, PartialEq)]
pub enum Explained {
    Overlay {
        overlay: Ipv4Addr,
        vm: Ipv4Addr,
        host: u32,
        role: Role,
        block: Cidr,
        /// Set when the VM bits name the underlay network/broadcast address.
        vm_not_unicast: bool,
        /// The IPv6 twin: same VM, index = host part.
        overlay6: Ipv6Addr,
        block6: Cidr6,
    },
    Underlay {
        vm: Ipv4Addr,
        block: Cidr,
        vm_overlay: Ipv4Addr,
        max_container: u32,
        vm_not_unicast: bool,
        block6: Cidr6,
    },
    /// An address of the IPv6 mesh prefix.
    Overlay6 {
        overlay6: Ipv6Addr,
        vm: Ipv4Addr,
        index: u32,
        role: Role,
        block6: Cidr6,
        /// The IPv4 twin; `None` for an IPv6-only index.
        overlay: Option<Ipv4Addr>,
        /// The VM's IPv4 block, for the IPv4 side of the JSON.
        block: Cidr,
        vm_not_unicast: bool,
    },
}

fn parse_ip(s: &str, what: &str) -> Result<Ipv4Addr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{what} '{s}' is not an IPv4 address (expected A.B.C.D)"))
}

/// Explains an IPv4 overlay or underlay address, or an IPv6 mesh address.
pub fn explain(layout: &Layout, layout6: &Layout6, addr: &str) -> Result<Explained, String> {
    let a: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("address '{addr}' is not an IPv4 (A.B.C.D) or IPv6 address"))?;
    let a = match a {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => return explain6(layout, layout6, a),
    };
    if let Some(d) = layout.decompose(a) {
        let block6 = layout6.block(d.vm);
        return Ok(Explained::Overlay {
            overlay: a,
            vm: d.vm,
            host: d.host,
            role: Role::of_host(d.host),
            block: layout.block(d.vm).ok_or("internal: VM outside underlay")?,
            vm_not_unicast: !layout.is_unicast_vm(d.vm),
            overlay6: layout6.compose(d.vm, d.host),
            block6,
        });
    }
    if layout.in_underlay(a) {
        return Ok(Explained::Underlay {
            vm: a,
            block: layout.block(a).ok_or("internal: VM outside underlay")?,
            vm_overlay: layout.vm_overlay_addr(a).ok_or("internal")?,
            max_container: layout.max_container(),
            vm_not_unicast: !layout.is_unicast_vm(a),
            block6: layout6.block(a),
        });
    }
    Err(format!(
        "{a} is neither in the overlay {} nor in the underlay {}",
        layout.overlay(),
        layout.underlay()
    ))
}

fn explain6(layout: &Layout, layout6: &Layout6, a: Ipv6Addr) -> Result<Explained, String> {
    let d = layout6
        .decompose(a)
        .ok_or_else(|| format!("{a} is not in the IPv6 mesh prefix {layout6}"))?;
    if !layout.in_underlay(d.vm) {
        return Err(format!(
            "{a}: bits 64-95 name {}, which is outside the underlay {}: no VM of this mesh owns it",
            d.vm,
            layout.underlay()
        ));
    }
    Ok(Explained::Overlay6 {
        overlay6: a,
        vm: d.vm,
        index: d.index,
        role: Role::of_host(d.index),
        block6: layout6.block(d.vm),
        overlay: layout.compose(d.vm, d.index),
        block: layout.block(d.vm).ok_or("internal: VM outside underlay")?,
        vm_not_unicast: !layout.is_unicast_vm(d.vm),
    })
}

/// `--vm V --container N` or `--vm V --host H`; with `ipv6_only`, N and H
/// range over the IPv6 indices and the result is the IPv6 address alone.
pub fn compose(
    layout: &Layout,
    layout6: &Layout6,
    vm: &str,
    container: Option<u64>,
    host: Option<u64>,
    ipv6_only: bool,
) -> Result<Explained, String> {
    let vm_ip = parse_ip(vm, "--vm")?;
    if !layout.in_underlay(vm_ip) {
        return Err(format!(
            "--vm {vm_ip} is outside the underlay {}",
            layout.underlay()
        ));
    }
    if ipv6_only {
        let index = match (container, host) {
            (Some(n), _) => {
                if n == 0 || n > u64::from(layout6::MAX_CONTAINER) {
                    return Err(format!(
                        "--container {n} is out of range: IPv6 containers are 1..={} per VM",
                        layout6::MAX_CONTAINER
                    ));
                }
                n + 1
            }
            (None, Some(h)) => {
                if h > u64::from(layout6::MAX_INDEX) {
                    return Err(format!(
                        "--host {h} is out of range: IPv6 indices are 0..={}",
                        layout6::MAX_INDEX
                    ));
                }
                h
            }
            (None, None) => return Err("--ipv6-only needs --container or --host".into()),
        };
        return explain6(layout, layout6, layout6.compose(vm_ip, index as u32));
    }
    let host = match (container, host) {
        (Some(n), _) => {
            if n == 0 || n > u64::from(layout.max_container()) {
                return Err(format!(
                    "--container {n} is out of range: this layout has containers 1..={} per VM ({} host bits); \
                     IPv6-only containers go up to {} (add --ipv6-only)",
                    layout.max_container(),
                    layout.host_bits(),
                    layout6::MAX_CONTAINER
                ));
            }
            n + 1
        }
        (None, Some(h)) => {
            if h >= layout.block_size() {
                return Err(format!(
                    "--host {h} is out of range: host parts are 0..={} ({} host bits)",
                    layout.block_size() - 1,
                    layout.host_bits()
                ));
            }
            h
        }
        (None, None) => {
            return explain(layout, layout6, vm);
        }
    };
    let a = layout
        .compose(vm_ip, host as u32)
        .ok_or("internal: compose failed")?;
    explain(layout, layout6, &a.to_string())
}

impl Explained {
    /// The `--json` object. The IPv6 keys (`overlay6`, `block6`,
    /// `vm_overlay6`, …, `layout.overlay6`) come beside the IPv4 ones.
    pub fn to_json(&self, layout: &Layout) -> serde_json::Value {
        let lay = |block6: &Cidr6| {
            json!({
                "overlay": layout.overlay().to_string(),
                "underlay": layout.underlay().to_string(),
                "host_bits": layout.host_bits(),
                "overlay6": mesh_prefix(block6).to_string(),
            })
        };
        match self {
            Explained::Overlay {
                overlay,
                vm,
                host,
                role,
                block,
                vm_not_unicast,
                overlay6,
                block6,
            } => json!({
                "kind": "overlay",
                "overlay": overlay.to_string(),
                "vm": vm.to_string(),
                "host": host,
                "role": role.name(),
                "container": container_json(role),
                "block": block.to_string(),
                "vm_overlay": block_vm_addr(block).to_string(),
                "vm_is_host": !vm_not_unicast,
                "overlay6": overlay6.to_string(),
                "block6": block6.to_string(),
                "vm_overlay6": block6_vm_addr(block6).to_string(),
                "layout": lay(block6),
            }),
            Explained::Underlay {
                vm,
                block,
                vm_overlay,
                max_container,
                vm_not_unicast,
                block6,
            } => json!({
                "kind": "underlay",
                "vm": vm.to_string(),
                "block": block.to_string(),
                "vm_overlay": vm_overlay.to_string(),
                "containers": max_container,
                "vm_is_host": !vm_not_unicast,
                "block6": block6.to_string(),
                "vm_overlay6": block6_vm_addr(block6).to_string(),
                "containers6": layout6::MAX_CONTAINER,
                "layout": lay(block6),
            }),
            Explained::Overlay6 {
                overlay6,
                vm,
                index,
                role,
                block6,
                overlay,
                block,
                vm_not_unicast,
            } => json!({
                "kind": "overlay6",
                "overlay6": overlay6.to_string(),
                "overlay": overlay.map(|a| a.to_string()),
                "ipv6_only": overlay.is_none(),
                "vm": vm.to_string(),
                "index": index,
                "role": role.name(),
                "container": container_json(role),
                "block6": block6.to_string(),
                "vm_overlay6": block6_vm_addr(block6).to_string(),
                "block": block.to_string(),
                "vm_overlay": block_vm_addr(block).to_string(),
                "vm_is_host": !vm_not_unicast,
                "layout": lay(block6),
            }),
        }
    }

    /// The first line of the text report (for an IPv6 address, the only one).
    pub fn sentence(&self) -> String {
        match self {
            Explained::Overlay {
                overlay,
                vm,
                host,
                role,
                block,
                vm_not_unicast,
                ..
            } => {
                let warn = vm_warning(*vm_not_unicast, vm);
                format!(
                    "{overlay}: {} on VM {vm}, host part {host} of block {block}{warn}",
                    role_words(role)
                )
            }
            Explained::Underlay {
                vm,
                block,
                vm_overlay,
                max_container,
                vm_not_unicast,
                ..
            } => {
                let warn = if *vm_not_unicast {
                    "; warning: this is the underlay's network or broadcast address, not a usable VM"
                } else {
                    ""
                };
                format!(
                    "{vm}: VM underlay address; its block is {block}, its own overlay address {vm_overlay}, containers 1..={max_container}{warn}"
                )
            }
            Explained::Overlay6 {
                overlay6,
                vm,
                index,
                role,
                block6,
                overlay,
                block,
                vm_not_unicast,
            } => {
                let family = match overlay {
                    Some(a) => format!("dual-stack with {a}"),
                    None if *role == Role::Reserved => "reserved".to_string(),
                    None => format!(
                        "IPv6-only (the IPv4 block {block} ends at host part {})",
                        (1u64 << (32 - block.prefix())) - 1
                    ),
                };
                let warn = vm_warning(*vm_not_unicast, vm);
                format!(
                    "{overlay6}: {} on VM {vm}, index {index} of block {block6}; {family}{warn}",
                    role_words(role)
                )
            }
        }
    }

    /// The whole text report: [`Explained::sentence`], then the IPv6 side of
    /// an IPv4 overlay or underlay address on a second line.
    pub fn report(&self) -> String {
        let first = self.sentence();
        match self {
            Explained::Overlay {
                overlay6,
                host,
                block6,
                ..
            } => format!("{first}\n{overlay6}: its IPv6 address, index {host} of block {block6}"),
            Explained::Underlay {
                vm,
                block6,
                max_container,
                ..
            } => format!(
                "{first}\n{vm}: its IPv6 block is {block6}, its own IPv6 overlay address {}, containers 1..={} (1..={max_container} dual-stack)",
                block6_vm_addr(block6),
                layout6::MAX_CONTAINER
            ),
            Explained::Overlay6 { .. } => first,
        }
    }
}

fn role_words(role: &Role) -> String {
    match role {
        Role::Reserved => "reserved (network address of the block)".to_string(),
        Role::Vm => "the VM's own overlay address".to_string(),
        Role::Container(n) => format!("container #{n}"),
    }
}

fn vm_warning(not_unicast: bool, vm: &Ipv4Addr) -> String {
    if not_unicast {
        format!("; warning: {vm} is the underlay's network or broadcast address, not a usable VM")
    } else {
        String::new()
    }
}

fn container_json(role: &Role) -> serde_json::Value {
    match role {
        Role::Container(n) => json!(n),
        _ => json!(null),
    }
}

fn block_vm_addr(block: &Cidr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(block.addr()) | 1)
}

fn block6_vm_addr(block6: &Cidr6) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(block6.addr()) | 1)
}

/// The mesh /64 a VM's /96 lies in.
fn mesh_prefix(block6: &Cidr6) -> Cidr6 {
    let net = u128::from(block6.addr()) & (u128::MAX << 64);
    Cidr6::new(Ipv6Addr::from(net), layout6::PREFIX_LEN).expect("host bits cleared")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l6() -> Layout6 {
        Layout6::default()
    }

    #[test]
    fn explains_classic_container() {
        let l = Layout::classic();
        let e = explain(&l, &l6(), "10.16.32.91").unwrap();
        assert_eq!(
            e.sentence(),
            "10.16.32.91: container #90 on VM 192.168.16.32, host part 91 of block 10.16.32.0/24"
        );
        let j = e.to_json(&l);
        assert_eq!(j["overlay"], "10.16.32.91");
        assert_eq!(j["vm"], "192.168.16.32");
        assert_eq!(j["host"], 91);
        assert_eq!(j["role"], "container");
        assert_eq!(j["container"], 90);
        assert_eq!(j["block"], "10.16.32.0/24");
    }

    #[test]
    fn explains_wide_roles_and_underlay() {
        let l = Layout::wide();
        let e = explain(&l, &l6(), "241.2.15.253").unwrap();
        assert!(e.sentence().contains("container #4092 on VM 192.168.16.32"));
        let j = explain(&l, &l6(), "241.2.0.1").unwrap().to_json(&l);
        assert_eq!(j["role"], "vm");
        assert!(j["container"].is_null());
        let j = explain(&l, &l6(), "241.2.0.0").unwrap().to_json(&l);
        assert_eq!(j["role"], "reserved");
        let u = explain(&l, &l6(), "192.168.16.32").unwrap();
        assert_eq!(
            u.sentence(),
            "192.168.16.32: VM underlay address; its block is 241.2.0.0/20, its own overlay address 241.2.0.1, containers 1..=4094"
        );
        assert!(explain(&l, &l6(), "240.0.0.5")
            .unwrap()
            .sentence()
            .contains("warning"));
    }

    #[test]
    fn composes_and_refuses() {
        let l = Layout::wide();
        let e = compose(&l, &l6(), "192.168.16.32", Some(1), None, false).unwrap();
        assert_eq!(e.to_json(&l)["overlay"], "241.2.0.2");
        let e = compose(&l, &l6(), "192.168.16.32", None, Some(4093), false).unwrap();
        assert_eq!(e.to_json(&l)["overlay"], "241.2.15.253");
        assert!(compose(&l, &l6(), "192.168.16.32", Some(0), None, false).is_err());
        assert!(compose(&l, &l6(), "192.168.16.32", Some(4095), None, false)
            .unwrap_err()
            .contains("1..=4094"));
        assert!(compose(&l, &l6(), "192.168.16.32", None, Some(4096), false).is_err());
        assert!(compose(&l, &l6(), "10.0.0.1", Some(1), None, false).is_err());
        assert!(compose(&l, &l6(), "nope", Some(1), None, false).is_err());
        assert!(explain(&l, &l6(), "8.8.8.8")
            .unwrap_err()
            .contains("neither"));
        assert!(explain(&l, &l6(), "1.2.3").is_err());
    }

    #[test]
    fn ipv4_reports_gain_their_ipv6_side() {
        let l = Layout::wide();
        let e = compose(&l, &l6(), "192.168.16.32", Some(1), None, false).unwrap();
        assert_eq!(
            e.report(),
            "241.2.0.2: container #1 on VM 192.168.16.32, host part 2 of block 241.2.0.0/20\n\
             fd6d:6573:6866:0:c0a8:1020:0:2: its IPv6 address, index 2 of block fd6d:6573:6866:0:c0a8:1020::/96"
        );
        let j = e.to_json(&l);
        assert_eq!(j["overlay6"], "fd6d:6573:6866:0:c0a8:1020:0:2");
        assert_eq!(j["block6"], "fd6d:6573:6866:0:c0a8:1020::/96");
        assert_eq!(j["vm_overlay6"], "fd6d:6573:6866:0:c0a8:1020:0:1");
        assert_eq!(j["layout"]["overlay6"], "fd6d:6573:6866::/64");
        // The keys that existed before IPv6 are all still there.
        for k in [
            "kind",
            "overlay",
            "vm",
            "host",
            "role",
            "container",
            "block",
            "vm_overlay",
            "vm_is_host",
            "layout",
        ] {
            assert!(j.get(k).is_some(), "{k}");
        }
        let u = explain(&l, &l6(), "192.168.16.32").unwrap();
        assert_eq!(
            u.report().lines().nth(1).unwrap(),
            "192.168.16.32: its IPv6 block is fd6d:6573:6866:0:c0a8:1020::/96, its own IPv6 overlay address fd6d:6573:6866:0:c0a8:1020:0:1, containers 1..=4294967294 (1..=4094 dual-stack)"
        );
        let j = u.to_json(&l);
        assert_eq!(j["containers6"], 4_294_967_294u32);
        assert_eq!(j["containers"], 4094);
    }

    #[test]
    fn explains_ipv6_addresses() {
        let l = Layout::classic();
        let e = explain(&l, &l6(), "fd6d:6573:6866:0:c0a8:1020:0:5b").unwrap();
        assert_eq!(
            e.report(),
            "fd6d:6573:6866:0:c0a8:1020:0:5b: container #90 on VM 192.168.16.32, index 91 of block fd6d:6573:6866:0:c0a8:1020::/96; dual-stack with 10.16.32.91"
        );
        let j = e.to_json(&l);
        assert_eq!(j["kind"], "overlay6");
        assert_eq!(j["overlay"], "10.16.32.91");
        assert_eq!(j["index"], 91);
        assert_eq!(j["container"], 90);
        assert_eq!(j["ipv6_only"], false);
        let e = explain(&l, &l6(), "fd6d:6573:6866:0:c0a8:1020:0:100").unwrap();
        assert!(
            e.sentence().ends_with(
                "container #255 on VM 192.168.16.32, index 256 of block fd6d:6573:6866:0:c0a8:1020::/96; \
                 IPv6-only (the IPv4 block 10.16.32.0/24 ends at host part 255)"
            ),
            "{}",
            e.sentence()
        );
        assert!(e.to_json(&l)["overlay"].is_null());
        let j = explain(&l, &l6(), "fd6d:6573:6866:0:c0a8:1020::1")
            .unwrap()
            .to_json(&l);
        assert_eq!(j["role"], "vm");
        let s = explain(&l, &l6(), "fd6d:6573:6866:0:c0a8:1020::")
            .unwrap()
            .sentence();
        assert!(
            s.contains("reserved") && s.ends_with("dual-stack with 10.16.32.0"),
            "{s}"
        );
        assert!(explain(&l, &l6(), "fd6d:6573:6866:0:c0a8:ffff::7")
            .unwrap()
            .sentence()
            .contains("warning"));
        assert!(explain(&l, &l6(), "fd6d:6573:6866:0:a00:1::2")
            .unwrap_err()
            .contains("outside the underlay"));
        assert!(explain(&l, &l6(), "fd00::1")
            .unwrap_err()
            .contains("not in the IPv6 mesh prefix fd6d:6573:6866::/64"));
    }

    #[test]
    fn composes_ipv6_only_containers() {
        let l = Layout::wide();
        let e = compose(&l, &l6(), "192.168.16.32", Some(5000), None, true).unwrap();
        assert_eq!(
            e.to_json(&l)["overlay6"],
            "fd6d:6573:6866:0:c0a8:1020:0:1389"
        );
        let top = compose(&l, &l6(), "192.168.16.32", Some(4_294_967_294), None, true).unwrap();
        assert_eq!(
            top.to_json(&l)["overlay6"],
            "fd6d:6573:6866:0:c0a8:1020:ffff:ffff"
        );
        assert!(compose(&l, &l6(), "192.168.16.32", Some(4_294_967_295), None, true).is_err());
        assert!(compose(&l, &l6(), "192.168.16.32", Some(0), None, true).is_err());
        assert!(compose(&l, &l6(), "192.168.16.32", None, Some(0), true).is_ok());
        assert!(compose(&l, &l6(), "192.168.16.32", None, None, true).is_err());
        assert!(compose(&l, &l6(), "192.168.16.32", Some(5000), None, false)
            .unwrap_err()
            .contains("--ipv6-only"));
        // Dual-stack numbers compose to the twin of the IPv4 address.
        let e = compose(&l, &l6(), "192.168.16.32", Some(3), None, true).unwrap();
        assert_eq!(e.to_json(&l)["overlay"], "241.2.0.4");
    }
}
