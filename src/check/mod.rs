//! `meshfwd check`: a preflight that says whether this host can run meshfwd,
//! and how to fix what is missing.
//!
//! CLI arguments flow in through [`run`]; [`gather`] (in `facts`) reads the
//! system (files under /proc and /sys, one `open` of /dev/net/tun, one raw GRE
//! socket, `getifaddrs`, `SIOCGIFMTU`; with `--encap udp` one UDP bind of the
//! GRE-in-UDP port, closed at once; one one-slot BPF map, freed at once)
//! and changes nothing; the `check_*`
//! functions (in `verdicts`) are pure verdicts over those facts, unit-tested
//! without root; the resulting [`Report`] flows out as text or JSON. Every
//! check is `ok`, `warn` or `fail`; a failure means meshfwd will not start or
//! will not forward container traffic.
//!
//! Exit status: 0 when nothing failed (warnings allowed), 1 when a check
//! failed, 2 on bad usage (layout, `--local` outside the underlay, TUN name,
//! `--overlay6`).

mod facts;
mod verdicts;

#[cfg(test)]
mod tests;

pub use crate::procfs::{parse_cap_eff, parse_proc_net_route, parse_proc_net_udp, Route};
pub use facts::{gather, parse_resolv_conf, Facts, GreFacts, Holder, KernelDpFacts, UdpPortFacts};
pub use verdicts::{
    check_capabilities, check_datapath_auto, check_gre_modules, check_instance, check_ip_forward,
    check_ipv6, check_layout, check_local_address, check_mtu, check_overlay_routes,
    check_raw_socket, check_resolvers, check_rp_filter, check_tun_device, check_udp_port, evaluate,
    Intent,
};

use crate::cli::CheckArgs;
use crate::datapath::Encap;
use serde::Serialize;
use std::fmt::Write as _;
use std::process::ExitCode;

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// One line of the report. `name` is stable (snake_case) for machines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub message: String,
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, message: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Ok,
            message: message.into(),
            fix: None,
        }
    }
    fn warn(name: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Warn,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
    fn fail(name: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Fail,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The `--json` document.
#[derive(Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn new(checks: Vec<Check>) -> Report {
        Report {
            ok: checks.iter().all(|c| c.status != Status::Fail),
            checks,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("report serializes")
    }

    /// One aligned line per check, then a summary line.
    pub fn to_text(&self, header: &str) -> String {
        let w = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut out = format!("{header}\n");
        for c in &self.checks {
            let _ = write!(
                out,
                "{:<4}  {:<w$}  {}",
                c.status.label(),
                c.name,
                c.message
            );
            if let Some(f) = &c.fix {
                let _ = write!(out, "  fix: {f}");
            }
            out.push('\n');
        }
        let n = |s| self.checks.iter().filter(|c| c.status == s).count();
        let (ok, warn, fail) = (n(Status::Ok), n(Status::Warn), n(Status::Fail));
        let verdict = match (fail, warn) {
            (0, 0) => "ready to run meshfwd",
            (0, _) => "ready to run meshfwd (read the warnings)",
            _ => "NOT ready: fix the FAIL lines",
        };
        let _ = writeln!(out, "summary: {ok} ok, {warn} warn, {fail} fail: {verdict}");
        out
    }
}

/// `meshfwd check`.
pub fn run(args: &CheckArgs) -> ExitCode {
    let usage = |e: &str| {
        eprintln!("meshfwd check: error: {e}");
        ExitCode::from(2)
    };
    let layout = match args.layout.resolve() {
        Ok(l) => l,
        Err(e) => return usage(&e),
    };
    if let Some(l) = args.local {
        if let Err(e) = layout.check_local(l) {
            return usage(&format!("--local: {e}"));
        }
    }
    let tun = &args.tun;
    if !crate::config::valid_tun_name(tun) {
        return usage(&format!(
            "--tun '{tun}' is not a valid interface name (1-15 characters, no '/' or spaces)"
        ));
    }
    let overlay6 = match crate::cli::parse_overlay6(&args.overlay6) {
        Ok(l6) => l6,
        Err(e) => return usage(&e),
    };
    let encap = Encap::from(args.encap);
    let facts = gather(&layout, args.local, tun, encap, args.udp_port);
    let intent = Intent {
        encap,
        udp_port: args.udp_port,
        key: args.key,
        overlay6,
    };
    let report = Report::new(evaluate(&layout, tun, &facts, &intent));
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!(
            "{}",
            report.to_text(&format!(
                "meshfwd check: layout {}: {}; TUN {tun}{}",
                args.layout.name(),
                layout,
                match encap {
                    Encap::Gre => String::new(),
                    Encap::Udp => format!("; encap udp port {}", args.udp_port),
                }
            ))
        );
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
