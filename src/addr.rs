//! `meshfwd addr`: explains an overlay or underlay address, or composes one.
//! Pure: input strings in, a report (sentence or JSON) out.

use crate::layout::{Layout, Role};
use serde_json::json;
use std::net::Ipv4Addr;

/// What an address is under a layout.
#[derive(Debug, Clone, PartialEq)]
pub enum Explained {
    Overlay {
        overlay: Ipv4Addr,
        vm: Ipv4Addr,
        host: u32,
        role: Role,
        block: crate::layout::Cidr,
        /// Set when the VM bits name the underlay network/broadcast address.
        vm_not_unicast: bool,
    },
    Underlay {
        vm: Ipv4Addr,
        block: crate::layout::Cidr,
        vm_overlay: Ipv4Addr,
        max_container: u32,
        vm_not_unicast: bool,
    },
}

fn parse_ip(s: &str, what: &str) -> Result<Ipv4Addr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{what} '{s}' is not an IPv4 address (expected A.B.C.D)"))
}

pub fn explain(layout: &Layout, addr: &str) -> Result<Explained, String> {
    let a = parse_ip(addr, "address")?;
    if let Some(d) = layout.decompose(a) {
        return Ok(Explained::Overlay {
            overlay: a,
            vm: d.vm,
            host: d.host,
            role: Role::of_host(d.host),
            block: layout.block(d.vm).ok_or("internal: VM outside underlay")?,
            vm_not_unicast: !layout.is_unicast_vm(d.vm),
        });
    }
    if layout.in_underlay(a) {
        return Ok(Explained::Underlay {
            vm: a,
            block: layout.block(a).ok_or("internal: VM outside underlay")?,
            vm_overlay: layout.vm_overlay_addr(a).ok_or("internal")?,
            max_container: layout.max_container(),
            vm_not_unicast: !layout.is_unicast_vm(a),
        });
    }
    Err(format!(
        "{a} is neither in the overlay {} nor in the underlay {}",
        layout.overlay(),
        layout.underlay()
    ))
}

/// `--vm V --container N` or `--vm V --host H`.
pub fn compose(
    layout: &Layout,
    vm: &str,
    container: Option<u64>,
    host: Option<u64>,
) -> Result<Explained, String> {
    let vm_ip = parse_ip(vm, "--vm")?;
    if !layout.in_underlay(vm_ip) {
        return Err(format!(
            "--vm {vm_ip} is outside the underlay {}",
            layout.underlay()
        ));
    }
    let host = match (container, host) {
        (Some(n), _) => {
            if n == 0 || n > u64::from(layout.max_container()) {
                return Err(format!(
                    "--container {n} is out of range: this layout has containers 1..={} per VM ({} host bits)",
                    layout.max_container(),
                    layout.host_bits()
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
            return explain(layout, vm);
        }
    };
    let a = layout
        .compose(vm_ip, host as u32)
        .ok_or("internal: compose failed")?;
    explain(layout, &a.to_string())
}

impl Explained {
    pub fn to_json(&self, layout: &Layout) -> serde_json::Value {
        let lay = json!({
            "overlay": layout.overlay().to_string(),
            "underlay": layout.underlay().to_string(),
            "host_bits": layout.host_bits(),
        });
        match self {
            Explained::Overlay {
                overlay,
                vm,
                host,
                role,
                block,
                vm_not_unicast,
            } => json!({
                "kind": "overlay",
                "overlay": overlay.to_string(),
                "vm": vm.to_string(),
                "host": host,
                "role": role.name(),
                "container": match role { Role::Container(n) => json!(n), _ => json!(null) },
                "block": block.to_string(),
                "vm_overlay": block_vm_addr(block).to_string(),
                "vm_is_host": !vm_not_unicast,
                "layout": lay,
            }),
            Explained::Underlay {
                vm,
                block,
                vm_overlay,
                max_container,
                vm_not_unicast,
            } => json!({
                "kind": "underlay",
                "vm": vm.to_string(),
                "block": block.to_string(),
                "vm_overlay": vm_overlay.to_string(),
                "containers": max_container,
                "vm_is_host": !vm_not_unicast,
                "layout": lay,
            }),
        }
    }

    pub fn sentence(&self) -> String {
        match self {
            Explained::Overlay {
                overlay,
                vm,
                host,
                role,
                block,
                vm_not_unicast,
            } => {
                let what = match role {
                    Role::Reserved => "reserved (network address of the block)".to_string(),
                    Role::Vm => "the VM's own overlay address".to_string(),
                    Role::Container(n) => format!("container #{n}"),
                };
                let warn = if *vm_not_unicast {
                    format!("; warning: {vm} is the underlay's network or broadcast address, not a usable VM")
                } else {
                    String::new()
                };
                format!("{overlay}: {what} on VM {vm}, host part {host} of block {block}{warn}")
            }
            Explained::Underlay {
                vm,
                block,
                vm_overlay,
                max_container,
                vm_not_unicast,
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
        }
    }
}

fn block_vm_addr(block: &crate::layout::Cidr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(block.addr()) | 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_classic_container() {
        let l = Layout::classic();
        let e = explain(&l, "10.16.32.91").unwrap();
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
        let e = explain(&l, "241.2.15.253").unwrap();
        assert!(e.sentence().contains("container #4092 on VM 192.168.16.32"));
        let j = explain(&l, "241.2.0.1").unwrap().to_json(&l);
        assert_eq!(j["role"], "vm");
        assert!(j["container"].is_null());
        let j = explain(&l, "241.2.0.0").unwrap().to_json(&l);
        assert_eq!(j["role"], "reserved");
        let u = explain(&l, "192.168.16.32").unwrap();
        assert_eq!(
            u.sentence(),
            "192.168.16.32: VM underlay address; its block is 241.2.0.0/20, its own overlay address 241.2.0.1, containers 1..=4094"
        );
        assert!(explain(&l, "240.0.0.5")
            .unwrap()
            .sentence()
            .contains("warning"));
    }

    #[test]
    fn composes_and_refuses() {
        let l = Layout::wide();
        let e = compose(&l, "192.168.16.32", Some(1), None).unwrap();
        assert_eq!(e.to_json(&l)["overlay"], "241.2.0.2");
        let e = compose(&l, "192.168.16.32", None, Some(4093)).unwrap();
        assert_eq!(e.to_json(&l)["overlay"], "241.2.15.253");
        assert!(compose(&l, "192.168.16.32", Some(0), None).is_err());
        assert!(compose(&l, "192.168.16.32", Some(4095), None)
            .unwrap_err()
            .contains("1..=4094"));
        assert!(compose(&l, "192.168.16.32", None, Some(4096)).is_err());
        assert!(compose(&l, "10.0.0.1", Some(1), None).is_err());
        assert!(compose(&l, "nope", Some(1), None).is_err());
        assert!(explain(&l, "8.8.8.8").unwrap_err().contains("neither"));
        assert!(explain(&l, "1.2.3").is_err());
    }
}
