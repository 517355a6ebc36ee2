//! `meshfwd attach NETNS --container N` / `meshfwd detach NETNS`: the command
//! line over [`crate::netns`], which does the wiring (what attach creates,
//! what detach removes, the refusals: see there). Parsed flags
//! ([`AttachArgs`], [`DetachArgs`]) flow in and are resolved (layout, this
//! VM's underlay address) into a [`Request`] or a NETNS key; out flow one
//! sentence or a JSON object on stdout, notes and errors on stderr, and the
//! exit status of the [`Failure`]: 1 refusal, 2 usage or layout.

use crate::cli::{AttachArgs, DetachArgs};
use crate::netns::{self, nl, Attached, Detached, Failure, Families, Request};
use crate::sys::netlink::Netlink;
use std::process::ExitCode;

pub fn attach(args: &AttachArgs) -> ExitCode {
    match run_attach(args) {
        Ok(a) => {
            if args.json {
                println!("{}", to_json(&a));
            } else {
                println!("{}", sentence(&a));
            }
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("meshfwd attach: error: {}", f.message());
            ExitCode::from(f.code())
        }
    }
}

fn run_attach(args: &AttachArgs) -> Result<Attached, Failure> {
    let layout = args.layout.resolve().map_err(Failure::Usage)?;
    let layout6 = args.layout6().map_err(Failure::Usage)?;
    let families = match (args.ipv4_only, args.ipv6_only) {
        (true, _) => Families::Ipv4Only,
        (_, true) => Families::Ipv6Only,
        _ => Families::Dual,
    };
    // Validate what needs no system access before detecting the local address.
    netns::netns_key(&args.netns)?;
    netns::check_ifname(&args.ifname).map_err(Failure::Usage)?;
    netns::check_container_for(&layout, args.layout.name(), args.container, families)?;
    let (local, underlay_if) =
        crate::config::detect_local(&layout, args.local).map_err(Failure::Usage)?;
    netns::wire_netns(&Request {
        layout: &layout,
        layout_name: args.layout.name(),
        local,
        underlay_if: underlay_if.as_deref(),
        netns: &args.netns,
        container: args.container,
        ifname: &args.ifname,
        mtu: args.mtu,
        tun: &args.tun,
        layout6: &layout6,
        families,
        ipv6_required: args.ipv6_only || args.overlay6.is_some(),
    })
}

/// The `--json` output: one object. `address` is null for an IPv6-only
/// container, `address6` and `vm_overlay6` for an IPv4-only one.
fn to_json(a: &Attached) -> String {
    let p = &a.plan;
    let s = |v: Option<String>| v.map_or(serde_json::Value::Null, serde_json::Value::String);
    serde_json::json!({
        "netns": p.netns,
        "container": p.container,
        "address": s(p.address.map(|a| a.to_string())),
        "address6": s(p.address6.map(|a| a.to_string())),
        "vm_overlay6": s(p.vm_overlay6.map(|a| a.to_string())),
        "families": p.families().name(),
        "ipv6_forwarding": a.ipv6_forwarding,
        "ipv6_unavailable": a.ipv6_unavailable,
        "vm": p.vm.to_string(),
        "vm_overlay": p.vm_overlay.to_string(),
        "veth": p.veth,
        "ifname": p.ifname,
        "mtu": a.mtu,
        "ip_forward": a.ip_forward,
        "lo_address_added": a.lo_address_added,
    })
    .to_string()
}

/// The default output: one line.
fn sentence(a: &Attached) -> String {
    let p = &a.plan;
    let (addrs, via) = match (p.address, p.address6.zip(p.vm_overlay6)) {
        (Some(a4), Some((a6, v6))) => (
            format!("{a4}/32 and {a6}/128"),
            format!("{} and {v6}", p.vm_overlay),
        ),
        (Some(a4), None) => (format!("{a4}/32"), p.vm_overlay.to_string()),
        (None, Some((a6, v6))) => (format!("{a6}/128"), v6.to_string()),
        (None, None) => (String::new(), String::new()),
    };
    format!(
        "attached {}: container #{} {addrs} on {}, veth {}, via {via}, mtu {}",
        p.netns, p.container, p.ifname, p.veth, a.mtu
    )
}

pub fn detach(args: &DetachArgs) -> ExitCode {
    match run_detach(args) {
        Ok(Detached::Removed(lines)) => {
            for l in lines {
                println!("{l}");
            }
            ExitCode::SUCCESS
        }
        Ok(Detached::NotAttached(note)) => {
            eprintln!("meshfwd detach: note: {note}");
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("meshfwd detach: error: {}", f.message());
            ExitCode::from(f.code())
        }
    }
}

fn run_detach(args: &DetachArgs) -> Result<Detached, Failure> {
    // The layout flags are accepted for symmetry with attach and validated;
    // detach itself finds everything from the alias record.
    let layout = args.layout.resolve().map_err(Failure::Usage)?;
    crate::cli::resolve_overlay6(args.overlay6.as_deref()).map_err(Failure::Usage)?;
    if let Some(l) = args.local {
        layout
            .check_local(l)
            .map_err(|e| Failure::Usage(format!("--local: {e}")))?;
    }
    let key = netns::netns_key(&args.netns)?;
    let mut vm = Netlink::open().map_err(nl("open rtnetlink socket"))?;
    netns::unwire_netns(&mut vm, &key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;

    #[test]
    fn json_and_sentence_dual_stack_and_ipv6_only() {
        let l6 = crate::layout6::Layout6::default();
        let vm = "192.168.16.32".parse().unwrap();
        let plan = netns::plan_for(
            &Layout::wide(),
            "wide",
            &l6,
            Families::Dual,
            vm,
            "web1",
            1,
            "eth0",
            None,
        )
        .unwrap();
        let a = Attached {
            plan,
            mtu: 1476,
            ip_forward: Some(true),
            lo_address_added: false,
            ipv6_forwarding: Some(true),
            ipv6_unavailable: None,
        };
        assert_eq!(
            to_json(&a),
            r#"{"address":"241.2.0.2","address6":"fd6d:6573:6866:0:c0a8:1020:0:2","container":1,"families":"dual","ifname":"eth0","ip_forward":true,"ipv6_forwarding":true,"ipv6_unavailable":null,"lo_address_added":false,"mtu":1476,"netns":"web1","veth":"mfc1","vm":"192.168.16.32","vm_overlay":"241.2.0.1","vm_overlay6":"fd6d:6573:6866:0:c0a8:1020:0:1"}"#
        );
        assert_eq!(
            sentence(&a),
            "attached web1: container #1 241.2.0.2/32 and fd6d:6573:6866:0:c0a8:1020:0:2/128 on eth0, veth mfc1, via 241.2.0.1 and fd6d:6573:6866:0:c0a8:1020:0:1, mtu 1476"
        );
        let plan = netns::plan_for(
            &Layout::wide(),
            "wide",
            &l6,
            Families::Ipv6Only,
            vm,
            "web1",
            5000,
            "eth0",
            None,
        )
        .unwrap();
        let a = Attached { plan, ..a };
        let j: serde_json::Value = serde_json::from_str(&to_json(&a)).unwrap();
        assert_eq!(j["address"], serde_json::Value::Null);
        assert_eq!(j["address6"], "fd6d:6573:6866:0:c0a8:1020:0:1389");
        assert_eq!(j["families"], "ipv6");
        assert_eq!(j["veth"], "mfc5000");
        assert_eq!(
            sentence(&a),
            "attached web1: container #5000 fd6d:6573:6866:0:c0a8:1020:0:1389/128 on eth0, veth mfc5000, via fd6d:6573:6866:0:c0a8:1020:0:1, mtu 1476"
        );
        // dual-stack numbers stop at the IPv4 block; IPv6-only ones do not
        let e =
            netns::check_container_for(&Layout::wide(), "wide", 5000, Families::Dual).unwrap_err();
        assert!(
            e.message().contains("--ipv6-only allows up to 4294967294"),
            "{}",
            e.message()
        );
        assert!(
            netns::check_container_for(&Layout::wide(), "wide", u32::MAX, Families::Ipv6Only)
                .is_err()
        );
        assert!(netns::check_container_for(
            &Layout::wide(),
            "wide",
            4294967294,
            Families::Ipv6Only
        )
        .is_ok());
    }

    #[test]
    fn json_and_sentence() {
        let plan = netns::plan(
            &Layout::wide(),
            "wide",
            "192.168.16.32".parse().unwrap(),
            "web1",
            1,
            "eth0",
            None,
        )
        .unwrap();
        let a = Attached {
            plan,
            mtu: 1476,
            ip_forward: Some(true),
            lo_address_added: false,
            ipv6_forwarding: None,
            ipv6_unavailable: None,
        };
        let j: serde_json::Value = serde_json::from_str(&to_json(&a)).unwrap();
        assert_eq!(j["container"], 1);
        assert_eq!(j["address"], "241.2.0.2");
        assert_eq!(j["vm"], "192.168.16.32");
        assert_eq!(j["vm_overlay"], "241.2.0.1");
        assert_eq!(j["veth"], "mfc1");
        assert_eq!(j["ifname"], "eth0");
        assert_eq!(j["mtu"], 1476);
        assert_eq!(j["netns"], "web1");
        assert_eq!(j["address6"], serde_json::Value::Null);
        assert_eq!(j["families"], "ipv4");
        assert_eq!(
            sentence(&a),
            "attached web1: container #1 241.2.0.2/32 on eth0, veth mfc1, via 241.2.0.1, mtu 1476"
        );
    }
}
