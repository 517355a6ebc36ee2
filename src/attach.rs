//! `meshfwd attach NETNS --container N` / `meshfwd detach NETNS`: the command
//! line over [`crate::netns`], which does the wiring (what attach creates,
//! what detach removes, the refusals: see there). Parsed flags
//! ([`AttachArgs`], [`DetachArgs`]) flow in and are resolved (layout, this
//! VM's underlay address) into a [`Request`] or a NETNS key; out flow one
//! sentence or a JSON object on stdout, notes and errors on stderr, and the
//! exit status of the [`Failure`]: 1 refusal, 2 usage or layout.

use crate::cli::{AttachArgs, DetachArgs};
use crate::netns::{self, nl, Attached, Detached, Failure, Request};
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
    // Validate what needs no system access before detecting the local address.
    netns::netns_key(&args.netns)?;
    netns::check_ifname(&args.ifname).map_err(Failure::Usage)?;
    netns::check_container(&layout, args.layout.name(), args.container)?;
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
    })
}

/// The `--json` output: one object.
fn to_json(a: &Attached) -> String {
    let p = &a.plan;
    serde_json::json!({
        "netns": p.netns,
        "container": p.container,
        "address": p.address.to_string(),
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
    format!(
        "attached {}: container #{} {}/32 on {}, veth {}, via {}, mtu {}",
        p.netns, p.container, p.address, p.ifname, p.veth, p.vm_overlay, a.mtu
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
        assert_eq!(
            sentence(&a),
            "attached web1: container #1 241.2.0.2/32 on eth0, veth mfc1, via 241.2.0.1, mtu 1476"
        );
    }
}
