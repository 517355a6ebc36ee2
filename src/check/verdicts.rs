//! Verdicts: pure functions from [`Facts`] to [`Check`] lines.
//!
//! Facts flow in (already gathered; nothing here touches the system), one
//! `ok` / `warn` / `fail` [`Check`] per `check_*` function flows out, and
//! [`evaluate`] puts them in report order. Unit-tested without root.

use super::facts::{Facts, GreFacts, Holder, KernelDpFacts, UdpPortFacts};
use super::Check;
use crate::datapath::Encap;
use crate::layout::{Cidr, Layout};
use crate::layout6::Layout6;
use crate::procfs::Route;
use crate::sys::netdev::IfAddr;
use std::io;
use std::net::Ipv4Addr;

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;

pub fn check_tun_device(
    open: &Result<(), io::Error>,
    node: Option<(u32, u32)>,
    euid: u32,
) -> Check {
    const N: &str = "tun_device";
    let node_desc = node.map_or(String::new(), |(mode, uid)| {
        format!(" (mode {mode:04o}, owner uid {uid})")
    });
    let e = match open {
        Ok(()) => {
            return Check::ok(
                N,
                format!("/dev/net/tun opens read-write{node_desc}; creating the TUN also needs CAP_NET_ADMIN"),
            )
        }
        Err(e) => e,
    };
    match e.raw_os_error() {
        Some(libc::ENOENT) => Check::fail(
            N,
            "/dev/net/tun does not exist",
            "modprobe tun; if the node is still missing: mkdir -p /dev/net && mknod /dev/net/tun c 10 200 && chmod 0666 /dev/net/tun",
        ),
        Some(libc::ENODEV) | Some(libc::ENXIO) => Check::fail(
            N,
            format!("/dev/net/tun exists but has no driver: {e}"),
            "modprobe tun (kernel option CONFIG_TUN)",
        ),
        Some(libc::EACCES) => Check::fail(
            N,
            format!("cannot open /dev/net/tun as uid {euid}: {e}{node_desc}"),
            "run as root, or make the node usable by meshfwd's user: chmod 0666 /dev/net/tun (udev's default; creating a TUN still needs CAP_NET_ADMIN)",
        ),
        Some(libc::EPERM) => Check::fail(
            N,
            format!("opening /dev/net/tun is not permitted: {e} (a device cgroup or security policy refuses it)"),
            "allow the device: under systemd DeviceAllow=/dev/net/tun rw (see scripts/systemd/meshfwd@.service); in a container pass --device /dev/net/tun",
        ),
        _ => Check::fail(
            N,
            format!("cannot open /dev/net/tun: {e}"),
            "modprobe tun and check the device node (char 10:200, mode 0666)",
        ),
    }
}

pub fn check_capabilities(cap_eff: Option<u64>, euid: u32, encap: Encap) -> Check {
    const N: &str = "capabilities";
    let Some(eff) = cap_eff else {
        return Check::warn(
            N,
            "cannot read CapEff from /proc/self/status",
            "make sure meshfwd runs with CAP_NET_ADMIN and CAP_NET_RAW (root, or the systemd unit)",
        );
    };
    let has = |bit: u32| eff & (1u64 << bit) != 0;
    let (admin, raw) = (has(CAP_NET_ADMIN), has(CAP_NET_RAW));
    let grant = "run as root, or use scripts/systemd/meshfwd@.service (AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW), or setcap cap_net_admin,cap_net_raw+ep /usr/local/bin/meshfwd";
    if admin && raw {
        return Check::ok(
            N,
            format!("CAP_NET_ADMIN and CAP_NET_RAW are effective (uid {euid}, CapEff {eff:016x})"),
        );
    }
    if encap == Encap::Udp {
        if admin {
            return Check::warn(
                N,
                format!(
                    "CAP_NET_ADMIN is effective, CAP_NET_RAW is not (uid {euid}, CapEff {eff:016x}); with --encap udp that is enough to forward, but raw GRE from peers still on --encap gre is not counted (wrong_encap)"
                ),
                "grant CAP_NET_RAW too if you want wrong_encap counted, or ignore this",
            );
        }
        return Check::fail(
            N,
            format!(
                "missing CAP_NET_ADMIN (uid {euid}, CapEff {eff:016x}); with --encap udp meshfwd needs it for the TUN, its address/MTU and socket buffers (CAP_NET_RAW is optional)"
            ),
            grant,
        );
    }
    let missing: Vec<&str> = [(admin, "CAP_NET_ADMIN"), (raw, "CAP_NET_RAW")]
        .into_iter()
        .filter(|(has, _)| !has)
        .map(|(_, n)| n)
        .collect();
    Check::fail(
        N,
        format!(
            "missing {} (uid {euid}, CapEff {eff:016x}); meshfwd needs CAP_NET_ADMIN for the TUN, its address/MTU and socket buffers, CAP_NET_RAW for the raw GRE sockets",
            missing.join(" and ")
        ),
        grant,
    )
}

pub fn check_raw_socket(r: &Result<(), io::Error>, encap: Encap) -> Check {
    const N: &str = "raw_socket";
    if encap == Encap::Udp {
        return match r {
            Ok(()) => Check::ok(
                N,
                "raw IPPROTO_GRE socket opens (with --encap udp it only counts raw GRE from peers still on --encap gre, as wrong_encap)",
            ),
            Err(e) => Check::warn(
                N,
                format!("cannot open a raw IPPROTO_GRE socket: {e}; with --encap udp meshfwd forwards without it, but raw GRE from peers still on --encap gre is not counted (wrong_encap)"),
                "grant CAP_NET_RAW if you want wrong_encap counted, or ignore this",
            ),
        };
    }
    match r {
        Ok(()) => Check::ok(
            N,
            "raw IPPROTO_GRE socket opens (meshfwd sends and receives GRE itself)",
        ),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => {
            Check::fail(
                N,
                format!("cannot open a raw IPPROTO_GRE socket: {e}"),
                "grant CAP_NET_RAW (run as root, or see the capabilities check)",
            )
        }
        Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => Check::fail(
            N,
            format!("cannot open a raw IPPROTO_GRE socket: {e}"),
            "AF_INET is blocked (systemd RestrictAddressFamilies= must allow AF_INET)",
        ),
        Err(e) => Check::fail(
            N,
            format!("cannot open a raw IPPROTO_GRE socket: {e}"),
            "check seccomp/LSM policy for socket(AF_INET, SOCK_RAW, 47)",
        ),
    }
}

pub fn check_gre_modules(g: &GreFacts, encap: Encap) -> Check {
    const N: &str = "gre_modules";
    let listed = |m: &str| {
        g.proc_modules
            .as_deref()
            .is_some_and(|t| t.lines().any(|l| l.split_whitespace().next() == Some(m)))
    };
    let not_needed = match encap {
        Encap::Gre => "meshfwd does not need them (it speaks GRE itself over raw IPPROTO_GRE sockets)",
        Encap::Udp => "meshfwd does not need them (with --encap udp it speaks GRE-in-UDP itself over UDP sockets)",
    };
    if listed("ip_gre") || g.sys_ip_gre {
        return Check::ok(
            N,
            format!(
                "kernel GRE (ip_gre) is loaded or built in; {not_needed}. Note: ip_gre answers GRE that matches none of its own tunnels with ICMP port-unreachable; in GRE mode meshfwd creates the collect-metadata device mfgrequiet (drop-all tc programs) so that it does not (needs CAP_BPF at start-up)"
            ),
        );
    }
    let mut seen = Vec::new();
    if listed("gre") || g.sys_gre {
        seen.push("gre (demux) loaded".to_string());
    }
    if g.builtin {
        seen.push("ip_gre listed in modules.builtin".to_string());
    }
    seen.extend(g.module_files.iter().map(|f| format!("{f} available")));
    if !seen.is_empty() {
        return Check::ok(
            N,
            format!("ip_gre not loaded ({}); {not_needed}", seen.join(", ")),
        );
    }
    let mut looked = vec!["/sys/module/ip_gre, /sys/module/gre".to_string()];
    looked.push(if g.proc_modules.is_some() {
        "/proc/modules".into()
    } else {
        "/proc/modules (absent: no loadable modules)".into()
    });
    let dir = format!("/lib/modules/{}", g.release);
    looked.push(if g.modules_dir {
        dir
    } else {
        format!("{dir} (absent)")
    });
    Check::ok(
        N,
        format!(
            "no kernel GRE support found (looked at {}); {not_needed}",
            looked.join(", ")
        ),
    )
}

/// `--encap udp`: meshfwd binds one socket per worker to `local:port`.
pub fn check_udp_port(u: Option<&UdpPortFacts>, port: u16) -> Check {
    const N: &str = "udp_port";
    let Some(u) = u else {
        return Check::warn(
            N,
            format!("UDP port {port} not checked: the local underlay address is unknown"),
            "fix the local_address check first",
        );
    };
    let at = format!("UDP {}:{}", u.local, u.port);
    let e = match &u.bind {
        Ok(()) => {
            return Check::ok(
                N,
                format!("{at} is free (meshfwd binds one socket per worker there; peers must be able to reach it)"),
            )
        }
        Err(e) => e,
    };
    if e.kind() != io::ErrorKind::AddrInUse {
        return Check::fail(
            N,
            format!("cannot bind {at}: {e}"),
            "fix the local_address check, or check seccomp/LSM policy for UDP sockets",
        );
    }
    let other_fix = format!(
        "stop what holds it (a kernel FOU port: ip fou del port {}), or choose another --udp-port on every VM of the mesh",
        u.port
    );
    let list = |h: &[Holder]| {
        h.iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let h = &u.holders;
    if !h.is_empty()
        && h.iter()
            .all(|h| matches!(h, Holder::Meshfwd { udp: true, .. }))
    {
        return Check::ok(N, format!("{at} is held by {} (already running)", list(h)));
    }
    if h.iter().any(|h| {
        matches!(
            h,
            Holder::Program { .. } | Holder::Kernel | Holder::Meshfwd { udp: false, .. }
        )
    }) {
        let fix = if h
            .iter()
            .any(|h| matches!(h, Holder::Meshfwd { udp: false, .. }))
        {
            format!("stop the GRE-mode meshfwd before starting --encap udp (all VMs of a mesh use one encapsulation); otherwise {other_fix}")
        } else {
            other_fix
        };
        return Check::fail(
            N,
            format!(
                "{at} is in use by {}: meshfwd --encap udp cannot bind it",
                list(h)
            ),
            fix,
        );
    }
    // Only sockets this check cannot attribute (or none found at all).
    Check::warn(
        N,
        format!(
            "{at} is in use by {}: fine if that is this host's meshfwd --encap udp, otherwise meshfwd cannot bind it",
            if h.is_empty() { "a socket not listed in /proc/net/udp{,6}".to_string() } else { list(h) }
        ),
        format!("run the check as root to see who holds it; {other_fix}"),
    )
}

pub fn check_ip_forward(v: Option<u32>) -> Check {
    const N: &str = "ip_forward";
    let fix = "sysctl -w net.ipv4.ip_forward=1 (persist: echo net.ipv4.ip_forward=1 > /etc/sysctl.d/60-meshfwd.conf)";
    match v {
        Some(1) => Check::ok(N, "net.ipv4.ip_forward = 1"),
        Some(v) => Check::fail(
            N,
            format!("net.ipv4.ip_forward = {v}: the kernel will not forward between the containers' veths and the TUN, so no container is reachable"),
            fix,
        ),
        None => Check::warn(N, "cannot read /proc/sys/net/ipv4/ip_forward", fix),
    }
}

/// Effective reverse-path filter (the kernel uses max(all, interface)) on the
/// underlay interface and on the TUN (its current value, or `default` if it
/// does not exist yet — it inherits `default` when meshfwd creates it).
pub fn check_rp_filter(values: &[(String, u32)], underlay_if: Option<&str>, tun: &str) -> Check {
    const N: &str = "rp_filter";
    let get = |n: &str| values.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
    let all = get("all").unwrap_or(0);
    let mut rows = Vec::new(); // (what, effective, keys to set)
    if let Some(u) = underlay_if {
        let v = get(u).unwrap_or(0);
        rows.push((format!("{u} (underlay)"), all.max(v), u.to_string()));
    }
    match get(tun) {
        Some(v) => rows.push((format!("{tun} (TUN)"), all.max(v), tun.to_string())),
        None => {
            let d = get("default").unwrap_or(0);
            rows.push((
                format!("{tun} (TUN, not created yet: inherits default)"),
                all.max(d),
                "default".to_string(),
            ))
        }
    }
    let listed: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let strict: Vec<&(String, u32, String)> = rows.iter().filter(|r| r.1 == 1).collect();
    if strict.is_empty() {
        let eff: Vec<String> = rows.iter().map(|(w, v, _)| format!("{w} = {v}")).collect();
        return Check::ok(
            N,
            format!(
                "effective rp_filter: {} ({})",
                eff.join(", "),
                listed.join(" ")
            ),
        );
    }
    let mut keys: Vec<String> = Vec::new();
    if all == 1 {
        keys.push("net.ipv4.conf.all.rp_filter=2".into());
    }
    for r in &strict {
        keys.push(format!("net.ipv4.conf.{}.rp_filter=2", r.2));
    }
    keys.dedup();
    let which: Vec<&str> = strict.iter().map(|r| r.0.as_str()).collect();
    Check::warn(
        N,
        format!(
            "strict reverse-path filtering (1) on {} ({}): the kernel drops packets whose source it would not route back out of the arrival interface, e.g. GRE from peers over an asymmetric or multi-homed underlay, or overlay packets on the TUN whose source has a more specific route elsewhere",
            which.join(", "),
            listed.join(" ")
        ),
        format!(
            "sysctl -w {} (2 = loose: the source must merely be routable; meshfwd checks that an inner source belongs to the sending VM itself) or 0; the effective value is max(all, interface)",
            keys.join(" ")
        ),
    )
}

pub fn check_local_address(
    layout: &Layout,
    local: &Result<(Ipv4Addr, Option<String>), String>,
    addrs: &[IfAddr],
) -> Check {
    const N: &str = "local_address";
    match local {
        Ok((a, Some(ifname))) => Check::ok(
            N,
            format!(
                "{a} on {ifname}: block {}, VM overlay address {}",
                layout.block(*a).map_or("?".into(), |b| b.to_string()),
                layout
                    .vm_overlay_addr(*a)
                    .map_or("?".into(), |b| b.to_string())
            ),
        ),
        Ok((a, None)) => Check::warn(
            N,
            format!("--local {a} is not assigned to any interface of this host; peers will send its GRE elsewhere"),
            format!("assign it (ip addr add {a}/{} dev IFACE) or pass this host's own address", layout.underlay().prefix()),
        ),
        Err(e) => {
            let several = addrs.iter().filter(|a| layout.is_unicast_vm(a.addr)).count() > 1;
            let fix = if several {
                "choose one with --local (and give meshfwd the same --local)".to_string()
            } else {
                format!(
                    "give this VM an address inside {u} (ip addr add 192.168.X.Y/{p} dev eth0), or choose a layout whose --underlay contains this host's address (see the layout check)",
                    u = layout.underlay(),
                    p = layout.underlay().prefix()
                )
            };
            Check::fail(N, e.clone(), fix)
        }
    }
}

/// Does the layout fit this host: some address inside the underlay, and no
/// address of another interface inside the overlay (outside this VM's block).
pub fn check_layout(
    layout: &Layout,
    addrs: &[IfAddr],
    tun: &str,
    own_block: Option<Cidr>,
) -> Check {
    const N: &str = "layout";
    let desc = format!(
        "overlay {} <-> underlay {} ({} host bits, {} addresses per VM)",
        layout.overlay(),
        layout.underlay(),
        layout.host_bits(),
        layout.block_size()
    );
    let host: Vec<&IfAddr> = addrs
        .iter()
        .filter(|a| !a.addr.is_loopback() && a.ifname != tun)
        .collect();
    let fmt = |a: &IfAddr| format!("{}/{} on {}", a.addr, a.prefix, a.ifname);
    let clash: Vec<String> = addrs
        .iter()
        .filter(|a| a.ifname != tun && layout.in_overlay(a.addr))
        .filter(|a| !own_block.is_some_and(|b| b.contains(a.addr)))
        .map(fmt)
        .collect();
    if !clash.is_empty() {
        return Check::warn(
            N,
            format!(
                "{desc}: this host's address {} lies inside the overlay; meshfwd will route that range into the TUN",
                clash.join(", ")
            ),
            "choose an overlay this network does not use (the wide layout 240.0.0.0/4 is not routed anywhere) with --layout or --overlay/--underlay",
        );
    }
    let inside: Vec<String> = host
        .iter()
        .filter(|a| layout.in_underlay(a.addr))
        .map(|a| fmt(a))
        .collect();
    if !inside.is_empty() {
        return Check::ok(N, format!("{desc}; this host: {}", inside.join(", ")));
    }
    let mut fix = format!(
        "the underlay must be the network the VMs reach each other on; e.g. for this host: --overlay {} --underlay NET/PREFIX",
        layout.overlay()
    );
    if let Some(a) = host.first() {
        let mask = u32::MAX.checked_shl(32 - u32::from(a.prefix)).unwrap_or(0);
        if let Ok(net) = Cidr::new(Ipv4Addr::from(u32::from(a.addr) & mask), a.prefix) {
            let fits = ["240.0.0.0/4", "10.0.0.0/8"]
                .iter()
                .map(|o| o.parse::<Cidr>().expect("valid"))
                .find(|o| Layout::new(*o, net).is_ok() && !o.contains(a.addr));
            if let Some(o) = fits {
                fix =
                    format!("if the VMs share {net}: --overlay {o} --underlay {net} (on every VM)");
            }
        }
    }
    let have = if host.is_empty() {
        "none besides loopback".to_string()
    } else {
        host.iter().map(|a| fmt(a)).collect::<Vec<_>>().join(", ")
    };
    Check::warn(
        N,
        format!(
            "{desc}: no address of this host is inside the underlay (this host has: {have}); every VM needs one, it is how peers are found"
        ),
        fix,
    )
}

pub fn check_mtu(
    underlay: Option<(&str, u32)>,
    tun: &str,
    tun_mtu: Option<u32>,
    encap: Encap,
) -> Check {
    const N: &str = "mtu";
    let what = match encap {
        Encap::Gre => "IPv4 20 + GRE 4",
        Encap::Udp => "IPv4 20 + UDP 8 + GRE 4",
    };
    let gre = crate::wire::gre::BASE_LEN;
    let (overhead, overhead_key) = (encap.overhead(gre) as u32, encap.overhead(gre + 4) as u32);
    let Some((ifname, u)) = underlay else {
        return Check::warn(
            N,
            format!(
                "underlay interface unknown (no local address): meshfwd would assume 1500, TUN MTU {}",
                1500 - overhead
            ),
            "fix the local_address check first",
        );
    };
    if u <= overhead + 68 {
        return Check::fail(
            N,
            format!("underlay {ifname} MTU {u} leaves no room for {overhead} bytes of encapsulation ({what})"),
            format!("raise the underlay MTU (ip link set {ifname} mtu 1500) or pass --mtu"),
        );
    }
    let want = u - overhead;
    let msg = format!(
        "underlay {ifname} MTU {u} -> TUN MTU {want} (minus {overhead}: {what}; {} with --key, minus {overhead_key})",
        u - overhead_key
    );
    match tun_mtu {
        Some(t) if t > want => Check::warn(
            N,
            format!("{msg}; but existing {tun} has MTU {t}: larger packets cannot be sent (send_emsgsize drops)"),
            format!("ip link set {tun} mtu {want} (or restart meshfwd without --mtu)"),
        ),
        Some(t) if t > u - overhead_key => Check::ok(
            N,
            format!("{msg}; existing {tun} has MTU {t} (too large if --key is used)"),
        ),
        Some(t) => Check::ok(N, format!("{msg}; existing {tun} has MTU {t}")),
        None => Check::ok(N, msg),
    }
}

/// Routes through another device than the TUN that cover part of the overlay
/// (more specific than or equal to it) or whose gateway lies inside it.
/// Routes inside this VM's own block (its containers' /32 routes) are expected.
pub fn check_overlay_routes(
    routes: Option<&[Route]>,
    overlay: Cidr,
    tun: &str,
    own_block: Option<Cidr>,
) -> Check {
    const N: &str = "overlay_routes";
    let Some(routes) = routes else {
        return Check::warn(
            N,
            "cannot read /proc/net/route",
            format!("check by hand: ip route | grep -v 'dev {tun}'"),
        );
    };
    let dev = |r: &Route| {
        if r.ifname == "*" {
            "(unreachable/blackhole)".to_string()
        } else {
            format!("dev {}", r.ifname)
        }
    };
    let mut bad = Vec::new();
    for r in routes.iter().filter(|r| r.ifname != tun) {
        let inside = r.dst.prefix() >= overlay.prefix() && overlay.contains(r.dst.addr());
        let own =
            own_block.is_some_and(|b| r.dst.prefix() >= b.prefix() && b.contains(r.dst.addr()));
        let via = r.gateway.map_or(String::new(), |g| format!(" via {g}"));
        if inside && !own {
            bad.push(format!("{}{via} {}", r.dst, dev(r)));
        } else if let Some(g) = r.gateway.filter(|g| overlay.contains(*g)) {
            bad.push(format!(
                "{}{via} {} (gateway {g} inside the overlay)",
                r.dst,
                dev(r)
            ));
        }
    }
    if bad.is_empty() {
        let on_tun = routes.iter().any(|r| r.ifname == tun && r.dst == overlay);
        return Check::ok(
            N,
            format!(
                "no route outside {tun} overlaps the overlay {overlay}{}",
                if on_tun {
                    format!(" ({overlay} dev {tun} present)")
                } else {
                    String::new()
                }
            ),
        );
    }
    Check::warn(
        N,
        format!(
            "{} route(s) overlap the overlay {overlay}: {}; overlay traffic to those addresses will not reach {tun}, and what this host reaches there today may end up in {tun}",
            bad.len(),
            bad.join(", ")
        ),
        "choose an overlay this network does not use (the wide layout 240.0.0.0/4 is not routed anywhere), or move the route out of the overlay",
    )
}

pub fn check_resolvers(layout: &Layout, sources: &[(String, Vec<Ipv4Addr>)]) -> Check {
    const N: &str = "dns_resolver";
    let overlay = layout.overlay();
    let mut bad = Vec::new();
    for (file, list) in sources {
        for a in list.iter().filter(|a| overlay.contains(**a)) {
            let vm = layout
                .decompose(*a)
                .map_or(String::new(), |d| format!(", i.e. VM {}'s block", d.vm));
            bad.push(format!("{a} ({file}{vm})"));
        }
    }
    let all: Vec<String> = sources
        .iter()
        .flat_map(|(_, l)| l.iter().map(|a| a.to_string()))
        .collect();
    if !bad.is_empty() {
        return Check::warn(
            N,
            format!(
                "DNS resolver {} inside the overlay {overlay}: once meshfwd runs, queries are routed into the TUN instead of to the resolver",
                bad.join(", ")
            ),
            "use the wide layout (240.0.0.0/4), a custom --overlay that excludes the resolver, or a resolver outside the overlay",
        );
    }
    if sources.is_empty() {
        return Check::ok(N, "no /etc/resolv.conf");
    }
    Check::ok(
        N,
        if all.is_empty() {
            "no IPv4 nameserver configured".to_string()
        } else {
            format!(
                "resolvers {} are outside the overlay {overlay}",
                all.join(", ")
            )
        },
    )
}

/// All checks over gathered facts, in report order.
/// Whether a meshfwd already forwards on `tun` in this network namespace (a
/// second one refuses to start: it would deliver every packet twice).
pub fn check_instance(tun: &str, holders: Option<&[crate::procfs::SocketOwner]>) -> Check {
    const N: &str = "instance";
    match holders {
        None => Check::ok(
            N,
            format!("no meshfwd forwards on {tun} in this network namespace"),
        ),
        Some([]) => Check::warn(
            N,
            format!(
                "a process this check cannot see holds {tun}'s instance lock (@{}): meshfwd {tun} would refuse to start",
                crate::sys::instance::lock_name(tun)
            ),
            "run the check as root to name it; stop it before starting meshfwd",
        ),
        Some(owners) => {
            let who: Vec<String> = owners.iter().map(|o| o.to_string()).collect();
            let msg = format!(
                "{tun} is taken in this network namespace by {}; a second meshfwd {tun} here would refuse to start (exit 2)",
                who.join("; ")
            );
            if owners.iter().all(|o| o.comm == "meshfwd") {
                // Like udp_port: the running instance itself is not a problem.
                Check::ok(N, format!("already running: {msg}"))
            } else {
                let pids: Vec<String> = owners.iter().map(|o| o.pid.to_string()).collect();
                Check::warn(
                    N,
                    msg,
                    format!(
                        "a program other than meshfwd holds the name @{}: stop it (pid {}) or use another TUN name",
                        crate::sys::instance::lock_name(tun),
                        pids.join(" ")
                    ),
                )
            }
        }
    }
}

/// What `--datapath auto` would pick on this host, and why. Informational:
/// userspace works everywhere, so this never fails.
pub fn check_datapath_auto(
    g: &GreFacts,
    k: &KernelDpFacts,
    encap: Encap,
    key: Option<u32>,
) -> Check {
    const N: &str = "datapath_auto";
    let userspace =
        |why: String| Check::ok(N, format!("--datapath auto would pick userspace: {why}"));
    let rel = &g.release;
    if encap == Encap::Udp {
        return userspace("GRE-in-UDP (--encap udp) has no kernel datapath".into());
    }
    let Some(opts) = crate::ebpf::KernelOpts::for_release(rel) else {
        return userspace(format!(
            "Linux {rel} is older than 5.1 (the programs use 32-bit BPF jumps) or unknown"
        ));
    };
    if key.is_none() && !opts.no_tunnel_key {
        return userspace(format!(
            "Linux {rel} is older than 6.3: bpf_skb_set_tunnel_key always sends a GRE key \
             (BPF_F_NO_TUNNEL_KEY), so an unkeyed grid stays in userspace; with --key N (on \
             every VM) auto would try the kernel datapath"
        ));
    }
    let listed = |m: &str| {
        g.proc_modules
            .as_deref()
            .is_some_and(|t| t.lines().any(|l| l.split_whitespace().next() == Some(m)))
    };
    let ip_gre = if listed("ip_gre") || g.sys_ip_gre || g.builtin {
        "ip_gre loaded"
    } else if g.module_files.iter().any(|f| f.contains("ip_gre.ko")) {
        "ip_gre loadable (module file present)"
    } else {
        return userspace(format!(
            "no kernel GRE (ip_gre neither loaded nor found under /lib/modules/{rel})"
        ));
    };
    if let Err(e) = &k.bpf_map {
        return userspace(format!(
            "BPF is not allowed to this process ({e}; kernel.unprivileged_bpf_disabled={})",
            k.unprivileged_bpf_disabled
                .map_or("?".into(), |v| v.to_string())
        ));
    }
    let missing: Vec<&str> = k
        .tc_modules
        .iter()
        .filter(|(_, loaded, file)| !loaded && !file)
        .map(|(m, _, _)| *m)
        .collect();
    if !missing.is_empty() {
        return userspace(format!(
            "no {} (clsact + cls_bpf attach the programs)",
            missing.join(", ")
        ));
    }
    let (major, minor) = crate::ebpf::programs::parse_release(rel).unwrap_or((0, 0));
    let mut limits = Vec::new();
    if (major, minor) < (6, 6) {
        limits.push("attach with clsact + cls_bpf (tcx needs 6.6)".to_string());
    } else {
        limits.push("attach with clsact + cls_bpf (tcx available, not used yet)".to_string());
    }
    if !opts.no_tunnel_key {
        limits.push("below 6.3 every packet carries the GRE key".into());
    }
    if !opts.tuninfo_flags {
        limits.push("below 6.1 ingress compares key values only (no key reads as key 0)".into());
    }
    if !opts.tunnel_key_local {
        limits.push("below 5.19 the outer source is routing's choice".into());
    }
    Check::ok(
        N,
        format!(
            "--datapath auto would try kernel (Linux {rel}: {ip_gre}, BPF allowed; {}); it \
             still falls back to userspace if the device cannot be created or a program does \
             not load or attach",
            limits.join("; ")
        ),
    )
}

/// Whether meshfwd would run dual-stack here, by the daemon's own rule
/// ([`crate::config::resolve_overlay6`]: `--overlay6 none`, IPv6 disabled in
/// this namespace, or a TUN MTU below 1280 mean IPv4 only), and with which
/// IPv6 addresses. `overlay6` is the parsed `--overlay6` (`None`: `none`);
/// `gre_len` the GRE header length (4, 8 with a key). IPv4 only is never a
/// failure: IPv4 forwarding does not depend on it.
#[allow(clippy::too_many_arguments)]
pub fn check_ipv6(
    overlay6: Option<Layout6>,
    local: Option<Ipv4Addr>,
    underlay_mtu: Option<u32>,
    encap: Encap,
    gre_len: usize,
    tun: &str,
    ipv6_off: Option<String>,
    forwarding: Option<u32>,
) -> Check {
    const N: &str = "ipv6";
    let Some(l6) = overlay6 else {
        return Check::ok(N, "--overlay6 none: meshfwd will forward IPv4 only");
    };
    let overhead = encap.overhead(gre_len) as u32;
    let mtu = underlay_mtu
        .map_or(1500 - overhead, |u| u.saturating_sub(overhead))
        .min(65535);
    let spec = l6.to_string();
    let host_off = ipv6_off.is_some();
    match crate::config::resolve_overlay6(&spec, mtu as u16, underlay_mtu, overhead, ipv6_off) {
        Ok((Some(_), _)) => {}
        Ok((None, off)) => {
            let why = match off {
                Some(crate::config::Overlay6Off::Host(why)) => why,
                _ => "--overlay6 none".to_string(),
            };
            // (the reason comes from procfs::ipv6_disabled, or the MTU rule)
            let fix = if !host_off {
                format!(
                    "raise the underlay MTU to at least {}, or run meshfwd --overlay6 none",
                    u32::from(crate::config::IPV6_MIN_MTU) + overhead
                )
            } else if why.contains("no /proc/sys/net/ipv6") {
                "boot without ipv6.disable=1, or run meshfwd --overlay6 none".to_string()
            } else {
                "sysctl -w net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0 \
                 (before meshfwd starts), or run meshfwd --overlay6 none to forward IPv4 only \
                 on purpose"
                    .to_string()
            };
            return Check::warn(
                N,
                format!("IPv6 overlay off: {why}; meshfwd would forward IPv4 only"),
                fix,
            );
        }
        // (the prefix re-parses: it is a parsed Layout6's own text)
        Err(e) => {
            return Check::warn(
                N,
                format!("--overlay6 {spec}: {e}"),
                "pass a ULA /64 or none",
            )
        }
    }
    let addrs = match local {
        Some(vm) => format!(
            "this VM's IPv6 block {}, {tun} gets {}/64",
            l6.block(vm),
            l6.vm_addr(vm)
        ),
        None => "this VM's /96 follows from its underlay address: see local_address".into(),
    };
    let msg = format!(
        "dual-stack: mesh prefix {spec}, {addrs} (TUN MTU {mtu} >= 1280); --datapath kernel \
         would carry IPv4 only"
    );
    match forwarding {
        Some(1) => Check::ok(N, format!("{msg}; net.ipv6.conf.all.forwarding = 1")),
        other => Check::warn(
            N,
            format!(
                "{msg}; but net.ipv6.conf.all.forwarding = {}: the kernel will not forward IPv6 \
                 between the containers' veths and the TUN, so no container is reachable over \
                 IPv6 (IPv4 is not affected)",
                other.map_or("unreadable".to_string(), |v| v.to_string())
            ),
            "sysctl -w net.ipv6.conf.all.forwarding=1 (persist: echo \
             net.ipv6.conf.all.forwarding=1 > /etc/sysctl.d/60-meshfwd.conf)",
        ),
    }
}

/// What the operator will run meshfwd with, as far as the checks depend on it.
#[derive(Debug, Clone, Copy)]
pub struct Intent {
    pub encap: Encap,
    /// GRE-in-UDP port (with `Encap::Udp`).
    pub udp_port: u16,
    /// The grid's GRE key: below Linux 6.3 it changes what `--datapath auto`
    /// picks, and it costs 4 bytes of MTU.
    pub key: Option<u32>,
    /// The IPv6 overlay of `--overlay6` (`None`: `none`).
    pub overlay6: Option<Layout6>,
}

/// Every check, in report order (new checks go last: tools parse the list).
pub fn evaluate(layout: &Layout, tun: &str, f: &Facts, intent: &Intent) -> Vec<Check> {
    let Intent {
        encap,
        udp_port,
        key,
        overlay6,
    } = *intent;
    let (local, underlay_if) = match &f.local {
        Ok((a, i)) => (Some(*a), i.as_deref()),
        Err(_) => (None, None),
    };
    let own_block = local.and_then(|a| layout.block(a));
    let mut checks = vec![
        check_tun_device(&f.tun_open, f.tun_node, f.euid),
        check_capabilities(f.cap_eff, f.euid, encap),
        check_raw_socket(&f.raw_socket, encap),
    ];
    if encap == Encap::Udp {
        checks.push(check_udp_port(f.udp_port.as_ref(), udp_port));
    }
    checks.extend([
        check_gre_modules(&f.gre, encap),
        check_ip_forward(f.ip_forward),
        check_local_address(layout, &f.local, &f.addrs),
        check_layout(layout, &f.addrs, tun, own_block),
        check_mtu(underlay_if.zip(f.underlay_mtu), tun, f.tun_mtu, encap),
        check_rp_filter(&f.rp_filter, underlay_if, tun),
        check_overlay_routes(f.routes.as_deref(), layout.overlay(), tun, own_block),
        check_resolvers(layout, &f.resolvers),
        check_instance(tun, f.instance.as_deref()),
        // New checks go last: tools parse the list.
        check_datapath_auto(&f.gre, &f.kernel_dp, encap, key),
        check_ipv6(
            overlay6,
            local,
            f.underlay_mtu,
            encap,
            crate::wire::gre::BASE_LEN + if key.is_some() { 4 } else { 0 },
            tun,
            f.ipv6_off.clone(),
            f.ipv6_forwarding,
        ),
    ]);
    checks
}
