//! `meshfwd check`: a preflight that says whether this host can run meshfwd,
//! and how to fix what is missing.
//!
//! Two halves: [`gather`] reads the system (files under /proc and /sys, one
//! `open` of /dev/net/tun, one raw GRE socket, `getifaddrs`, `SIOCGIFMTU`;
//! with `--encap udp` one UDP bind of the GRE-in-UDP port, closed at once) and
//! changes nothing; the `check_*` functions are pure verdicts over those facts,
//! unit-tested without root. Every check is `ok`, `warn` or `fail`; a failure
//! means meshfwd will not start or will not forward container traffic.
//!
//! Exit status: 0 when nothing failed (warnings allowed), 1 when a check
//! failed, 2 on bad usage (layout, `--local` outside the underlay, TUN name).

use crate::cli::CheckArgs;
use crate::datapath::Encap;
use crate::layout::{Cidr, Layout};
use crate::sys::netdev::{self, IfAddr};
use serde::Serialize;
use std::fmt::Write as _;
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::ExitCode;

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;

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

// ------------------------------------------------------------------ facts --

/// Presence of kernel GRE support (meshfwd needs none of it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GreFacts {
    /// Content of /proc/modules (`None`: absent, e.g. a kernel without modules).
    pub proc_modules: Option<String>,
    /// /sys/module/ip_gre and /sys/module/gre exist (loaded or built in).
    pub sys_ip_gre: bool,
    pub sys_gre: bool,
    /// `uname -r`.
    pub release: String,
    /// /lib/modules/RELEASE exists.
    pub modules_dir: bool,
    /// ip_gre.ko* / gre.ko* files found under /lib/modules/RELEASE/kernel/net/ipv4/.
    pub module_files: Vec<String>,
    /// modules.builtin lists ip_gre.
    pub builtin: bool,
}

/// A route of the main table (from /proc/net/route).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Interface, or `*` for unreachable/blackhole/prohibit routes.
    pub ifname: String,
    pub dst: Cidr,
    pub gateway: Option<Ipv4Addr>,
    pub metric: u32,
}

/// Everything the checks look at, read by [`gather`].
#[derive(Debug)]
pub struct Facts {
    /// Result of `open("/dev/net/tun", O_RDWR)`.
    pub tun_open: Result<(), io::Error>,
    /// (mode, uid) of /dev/net/tun when it exists.
    pub tun_node: Option<(u32, u32)>,
    pub euid: u32,
    /// CapEff from /proc/self/status.
    pub cap_eff: Option<u64>,
    pub gre: GreFacts,
    /// Result of `socket(AF_INET, SOCK_RAW, IPPROTO_GRE)`.
    pub raw_socket: Result<(), io::Error>,
    /// With `--encap udp` and a known local address: the GRE-in-UDP port.
    pub udp_port: Option<UdpPortFacts>,
    pub ip_forward: Option<u32>,
    /// rp_filter of `all`, `default`, the underlay interface, the TUN (if present).
    pub rp_filter: Vec<(String, u32)>,
    /// `config::detect_local`.
    pub local: Result<(Ipv4Addr, Option<String>), String>,
    pub addrs: Vec<IfAddr>,
    pub underlay_mtu: Option<u32>,
    /// MTU of the TUN if it exists already.
    pub tun_mtu: Option<u32>,
    /// Main-table routes (`None`: /proc/net/route unreadable).
    pub routes: Option<Vec<Route>>,
    /// (file, nameservers) for each resolver configuration read.
    pub resolvers: Vec<(String, Vec<Ipv4Addr>)>,
    /// `None`: no process holds the TUN's instance lock in this network
    /// namespace; `Some`: the processes holding it (empty: not visible).
    pub instance: Option<Vec<crate::procfs::SocketOwner>>,
}

/// Whether meshfwd could bind its GRE-in-UDP port, and who holds it if not.
#[derive(Debug)]
pub struct UdpPortFacts {
    pub local: Ipv4Addr,
    pub port: u16,
    /// Result of binding a UDP socket (without `SO_REUSEPORT`, so a running
    /// meshfwd's group is never joined) to `local:port`.
    pub bind: Result<(), io::Error>,
    /// When the port is taken: who holds the sockets on it.
    pub holders: Vec<Holder>,
}

/// One socket on the GRE-in-UDP port, as /proc tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A meshfwd process; `udp`: started with `--encap udp` (a GRE-mode
    /// meshfwd binds the port too, to count `wrong_encap`).
    Meshfwd { pid: u32, udp: bool },
    /// Another process (`comm`).
    Program { comm: String, pid: u32 },
    /// Inode 0: a socket of the kernel itself (e.g. a FOU receive port).
    Kernel,
    /// A socket no readable /proc/PID/fd holds (another user's process
    /// while the check is not root, or another PID namespace).
    Unseen { uid: u32 },
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Meshfwd { pid, udp: true } => write!(f, "meshfwd --encap udp (pid {pid})"),
            Holder::Meshfwd { pid, udp: false } => write!(
                f,
                "meshfwd in GRE mode (pid {pid}, which binds the port to count wrong_encap)"
            ),
            Holder::Program { comm, pid } => write!(f, "{comm} (pid {pid})"),
            Holder::Kernel => write!(
                f,
                "a kernel socket (for example a FOU receive port: ip fou show)"
            ),
            Holder::Unseen { uid } => write!(
                f,
                "a socket of uid {uid} whose process this check cannot see"
            ),
        }
    }
}

/// The UDP sockets on `port` that a bind to `local:port` collides with,
/// from the text of /proc/net/udp (`v6`: /proc/net/udp6, where `::` and
/// `::ffff:local` collide): `(inode, uid)`, inode 0 for a kernel socket.
pub fn parse_proc_net_udp(text: &str, local: Ipv4Addr, port: u16, v6: bool) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(addr), Some(uid), Some(inode)) = (f.get(1), f.get(7), f.get(9)) else {
            continue;
        };
        let Some((a, p)) = addr.split_once(':') else {
            continue;
        };
        let (Ok(p), Ok(uid), Ok(inode)) = (
            u16::from_str_radix(p, 16),
            uid.parse::<u32>(),
            inode.parse::<u64>(),
        ) else {
            continue;
        };
        // Addresses are raw network-order 32-bit words, each printed as a number.
        let words: Option<Vec<[u8; 4]>> = (0..a.len() / 8)
            .map(|i| {
                u32::from_str_radix(a.get(8 * i..8 * i + 8)?, 16)
                    .ok()
                    .map(u32::to_ne_bytes)
            })
            .collect();
        let Some(words) = words else { continue };
        let collides = match (v6, words.as_slice()) {
            (false, [w]) => {
                let a = Ipv4Addr::from(*w);
                a == local || a.is_unspecified()
            }
            (true, [w0, w1, w2, w3]) => {
                let any = words.iter().all(|w| *w == [0; 4]);
                let mapped = *w0 == [0; 4] && *w1 == [0; 4] && *w2 == [0, 0, 0xff, 0xff];
                any || (mapped && Ipv4Addr::from(*w3) == local)
            }
            _ => false,
        };
        if p == port && collides {
            out.push((inode, uid));
        }
    }
    out
}

/// Who holds each socket `(inode, uid)`: the processes whose /proc/PID/fd
/// link to it (meshfwd recognised by `comm`, its mode by its command line).
fn socket_holders(sockets: &[(u64, u32)]) -> Vec<Holder> {
    let inodes: Vec<u64> = sockets.iter().map(|(i, _)| *i).collect();
    let mut named: Vec<Holder> = Vec::new();
    let mut seen: Vec<u64> = Vec::new();
    for o in crate::procfs::socket_owners(&inodes) {
        seen.extend(&o.inodes);
        let holder = if o.comm == "meshfwd" {
            let udp = o
                .args
                .windows(2)
                .any(|w| w[0] == "--encap" && w[1] == "udp")
                || o.args.iter().any(|a| a == "--encap=udp");
            Holder::Meshfwd { pid: o.pid, udp }
        } else {
            Holder::Program {
                comm: o.comm,
                pid: o.pid,
            }
        };
        named.push(holder);
    }
    for &(inode, uid) in sockets {
        let other = match inode {
            0 => Holder::Kernel,
            i if seen.contains(&i) => continue,
            _ => Holder::Unseen { uid },
        };
        if !named.contains(&other) {
            named.push(other);
        }
    }
    named
}

fn gather_udp_port(local: Ipv4Addr, port: u16) -> UdpPortFacts {
    let bind = std::net::UdpSocket::bind((local, port)).map(drop);
    let holders = match &bind {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let mut sockets = Vec::new();
            for (path, v6) in [("/proc/net/udp", false), ("/proc/net/udp6", true)] {
                if let Ok(t) = std::fs::read_to_string(path) {
                    sockets.extend(parse_proc_net_udp(&t, local, port, v6));
                }
            }
            socket_holders(&sockets)
        }
        _ => Vec::new(),
    };
    UdpPortFacts {
        local,
        port,
        bind,
        holders,
    }
}

/// Reads the facts. Changes nothing on the system; opens and closes
/// /dev/net/tun (no TUNSETIFF, so no device is created), a raw socket and,
/// with `Encap::Udp`, a UDP socket bound to the GRE-in-UDP port.
pub fn gather(
    layout: &Layout,
    local: Option<Ipv4Addr>,
    tun: &str,
    encap: Encap,
    udp_port: u16,
) -> Facts {
    let tun_open = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map(drop);
    let tun_node = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/dev/net/tun")
            .ok()
            .map(|m| (m.mode() & 0o7777, m.uid()))
    };
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let cap_eff = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_cap_eff(&s));
    let raw_socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(libc::IPPROTO_GRE)),
    )
    .map(drop);
    let ip_forward = read_u32("/proc/sys/net/ipv4/ip_forward");
    let addrs = netdev::ipv4_addrs().unwrap_or_default();
    let local = crate::config::detect_local(layout, local);
    let underlay_if = local.as_ref().ok().and_then(|(_, i)| i.clone());
    let udp_port = match (&local, encap) {
        (Ok((a, _)), Encap::Udp) => Some(gather_udp_port(*a, udp_port)),
        _ => None,
    };
    let tun_exists = netdev::interface_exists(tun);
    let mut rp_filter = Vec::new();
    let mut rp_names = vec!["all".to_string(), "default".to_string()];
    rp_names.extend(underlay_if.clone());
    if tun_exists {
        rp_names.push(tun.to_string());
    }
    for n in rp_names {
        if let Some(v) = read_u32(&format!("/proc/sys/net/ipv4/conf/{n}/rp_filter")) {
            rp_filter.push((n, v));
        }
    }
    let underlay_mtu = underlay_if
        .as_deref()
        .and_then(|i| netdev::interface_mtu(i).ok());
    let tun_mtu = tun_exists
        .then(|| netdev::interface_mtu(tun).ok())
        .flatten();
    let routes = std::fs::read_to_string("/proc/net/route")
        .ok()
        .map(|t| parse_proc_net_route(&t));
    let mut resolvers = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/resolv.conf") {
        let ns = parse_resolv_conf(&t);
        // systemd-resolved's stub: the real upstream servers are listed elsewhere.
        let stub = ns.contains(&Ipv4Addr::new(127, 0, 0, 53));
        resolvers.push(("/etc/resolv.conf".to_string(), ns));
        let upstream = "/run/systemd/resolve/resolv.conf";
        if stub {
            if let Ok(t) = std::fs::read_to_string(upstream) {
                resolvers.push((upstream.to_string(), parse_resolv_conf(&t)));
            }
        }
    }
    let instance = match crate::sys::instance::acquire(tun) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Some(crate::procfs::socket_owners(
            &crate::procfs::abstract_unix_inodes(&crate::sys::instance::lock_name(tun)),
        )),
        _ => None,
    };
    Facts {
        tun_open,
        tun_node,
        euid,
        cap_eff,
        gre: gather_gre(),
        raw_socket,
        udp_port,
        ip_forward,
        rp_filter,
        local,
        addrs,
        underlay_mtu,
        tun_mtu,
        routes,
        resolvers,
        instance,
    }
}

fn read_u32(path: &str) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn gather_gre() -> GreFacts {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let moddir = Path::new("/lib/modules").join(&release);
    let mut module_files = Vec::new();
    if let Ok(rd) = std::fs::read_dir(moddir.join("kernel/net/ipv4")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("ip_gre.ko") || name.starts_with("gre.ko") {
                module_files.push(e.path().display().to_string());
            }
        }
    }
    module_files.sort();
    let builtin = std::fs::read_to_string(moddir.join("modules.builtin"))
        .is_ok_and(|t| t.lines().any(|l| l.ends_with("/ip_gre.ko")));
    GreFacts {
        proc_modules: std::fs::read_to_string("/proc/modules").ok(),
        sys_ip_gre: Path::new("/sys/module/ip_gre").exists(),
        sys_gre: Path::new("/sys/module/gre").exists(),
        modules_dir: !release.is_empty() && moddir.is_dir(),
        release,
        module_files,
        builtin,
    }
}

// ---------------------------------------------------------------- parsers --

/// The effective capability mask (`CapEff:` line of /proc/PID/status).
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// IPv4 `nameserver` lines of a resolv.conf (IPv6 servers and comments ignored).
pub fn parse_resolv_conf(text: &str) -> Vec<Ipv4Addr> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next()? == "nameserver").then_some(())?;
            f.next()?.parse().ok()
        })
        .collect()
}

/// Routes of /proc/net/route (main table). Addresses there are hexadecimal
/// renderings of network-order words in host byte order.
pub fn parse_proc_net_route(text: &str) -> Vec<Route> {
    const RTF_GATEWAY: u32 = 0x2;
    let word = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.to_ne_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let dst = word(f[1])?;
            let gw = word(f[2])?;
            let flags = u32::from_str_radix(f[3], 16).ok()?;
            let metric = f[6].parse().ok()?;
            let mask = word(f[7])?;
            let prefix = u32::from(mask).leading_ones() as u8;
            Some(Route {
                ifname: f[0].to_string(),
                dst: Cidr::new(dst, prefix).ok()?,
                gateway: (flags & RTF_GATEWAY != 0).then_some(gw),
                metric,
            })
        })
        .collect()
}

// ----------------------------------------------------------------- checks --

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
                "kernel GRE (ip_gre) is loaded or built in; {not_needed}. Note: ip_gre answers GRE that matches none of its own tunnels with ICMP port-unreachable; meshfwd still receives it, but peers see that noise (modprobe -r ip_gre if no kernel GRE tunnel is used)"
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
            let who: Vec<String> = owners
                .iter()
                .map(|o| format!("pid {} ({})", o.pid, o.args.join(" ")))
                .collect();
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

pub fn evaluate(layout: &Layout, tun: &str, f: &Facts, encap: Encap, udp_port: u16) -> Vec<Check> {
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
    ]);
    checks
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
    if tun.is_empty() || tun.len() >= libc::IFNAMSIZ || tun.contains('/') || tun.contains(' ') {
        return usage(&format!(
            "--tun '{tun}' is not a valid interface name (1-15 characters, no '/' or spaces)"
        ));
    }
    let encap = Encap::from(args.encap);
    let facts = gather(&layout, args.local, tun, encap, args.udp_port);
    let report = Report::new(evaluate(&layout, tun, &facts, encap, args.udp_port));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn ifa(ifname: &str, addr: &str, prefix: u8) -> IfAddr {
        IfAddr {
            ifname: ifname.into(),
            addr: ip(addr),
            prefix,
        }
    }

    #[test]
    fn instance_check_names_the_running_meshfwd() {
        use crate::procfs::SocketOwner;
        assert_eq!(check_instance("tun0", None).status, Status::Ok);
        assert_eq!(check_instance("tun0", Some(&[])).status, Status::Warn);
        let own = |comm: &str| SocketOwner {
            pid: 4242,
            comm: comm.into(),
            args: vec!["meshfwd".into(), "tun0".into()],
            inodes: vec![7],
        };
        let c = check_instance("tun0", Some(&[own("meshfwd")]));
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(
            c.message.contains("already running") && c.message.contains("pid 4242 (meshfwd tun0)"),
            "{c:?}"
        );
        let c = check_instance("tun0", Some(&[own("squatter")]));
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(c.fix.unwrap().contains("pid 4242"));
    }

    fn vals(v: &[(&str, u32)]) -> Vec<(String, u32)> {
        v.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn errno(e: i32) -> Result<(), io::Error> {
        Err(io::Error::from_raw_os_error(e))
    }

    #[test]
    fn cap_eff_bits() {
        let s = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\nCapBnd:\t0\n";
        assert_eq!(parse_cap_eff(s), Some(0x1fffeffffff));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
        assert_eq!(
            check_capabilities(Some(0x1fffeffffff), 0, Encap::Gre).status,
            Status::Ok
        );
        assert_eq!(
            check_capabilities(Some(0x3000), 65534, Encap::Gre).status,
            Status::Ok
        );
        let c = check_capabilities(Some(0x1000), 65534, Encap::Gre);
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.message.contains("missing CAP_NET_RAW")
                && !c.message.contains("missing CAP_NET_ADMIN"),
            "{c:?}"
        );
        let c = check_capabilities(Some(0), 65534, Encap::Gre);
        assert!(
            c.message.contains("missing CAP_NET_ADMIN and CAP_NET_RAW"),
            "{c:?}"
        );
        assert!(c.fix.unwrap().contains("AmbientCapabilities"));
        assert_eq!(check_capabilities(None, 0, Encap::Gre).status, Status::Warn);
    }

    #[test]
    fn tun_device_errors_say_how_to_fix() {
        assert_eq!(
            check_tun_device(&Ok(()), Some((0o666, 0)), 0).status,
            Status::Ok
        );
        let c = check_tun_device(&errno(libc::ENOENT), None, 0);
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.as_deref().unwrap().contains("modprobe tun"));
        assert!(c
            .fix
            .as_deref()
            .unwrap()
            .contains("mknod /dev/net/tun c 10 200"));
        let c = check_tun_device(&errno(libc::ENODEV), Some((0o666, 0)), 0);
        assert!(c.fix.as_deref().unwrap().contains("modprobe tun"));
        let c = check_tun_device(&errno(libc::EACCES), Some((0o600, 0)), 65534);
        assert!(
            c.message.contains("mode 0600") && c.message.contains("uid 65534"),
            "{c:?}"
        );
        assert!(c.fix.as_deref().unwrap().contains("chmod 0666"));
        let c = check_tun_device(&errno(libc::EPERM), Some((0o666, 0)), 0);
        assert!(c
            .fix
            .as_deref()
            .unwrap()
            .contains("DeviceAllow=/dev/net/tun rw"));
    }

    #[test]
    fn udp_encap_needs_only_cap_net_admin() {
        let u = Encap::Udp;
        assert_eq!(check_capabilities(Some(0x3000), 0, u).status, Status::Ok);
        let c = check_capabilities(Some(0x1000), 65534, u);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(c.message.contains("wrong_encap"), "{c:?}");
        let c = check_capabilities(Some(0x2000), 65534, u);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.message.contains("missing CAP_NET_ADMIN") && c.message.contains("optional"));
        assert_eq!(check_raw_socket(&Ok(()), u).status, Status::Ok);
        let c = check_raw_socket(&errno(libc::EPERM), u);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(c.message.contains("Operation not permitted"), "{c:?}");
        // GRE mode is unchanged by all this.
        assert_eq!(
            check_raw_socket(&errno(libc::EPERM), Encap::Gre).status,
            Status::Fail
        );
        assert_eq!(
            check_capabilities(Some(0x1000), 0, Encap::Gre).status,
            Status::Fail
        );
    }

    #[test]
    fn udp_encap_mtu_overhead() {
        let c = check_mtu(Some(("eth0", 1500)), "tun0", None, Encap::Udp);
        assert_eq!(c.status, Status::Ok);
        assert!(
            c.message.contains(
                "TUN MTU 1468 (minus 32: IPv4 20 + UDP 8 + GRE 4; 1464 with --key, minus 36)"
            ),
            "{c:?}"
        );
        let c = check_mtu(Some(("eth0", 1500)), "tun0", Some(1476), Encap::Udp);
        assert_eq!(
            c.status,
            Status::Warn,
            "the GRE MTU is too big for UDP: {c:?}"
        );
        assert_eq!(
            check_mtu(Some(("eth0", 100)), "tun0", None, Encap::Udp).status,
            Status::Fail
        );
        assert!(check_mtu(None, "tun0", None, Encap::Udp)
            .message
            .contains("TUN MTU 1468"));
    }

    #[test]
    fn udp_port_verdicts() {
        let at = |bind, holders| UdpPortFacts {
            local: ip("192.168.16.32"),
            port: 4754,
            bind,
            holders,
        };
        let inuse = || errno(libc::EADDRINUSE);
        let c = check_udp_port(Some(&at(Ok(()), vec![])), 4754);
        assert_eq!(c.status, Status::Ok);
        assert!(
            c.message.contains("UDP 192.168.16.32:4754 is free"),
            "{c:?}"
        );
        let own = Holder::Meshfwd { pid: 7, udp: true };
        let c = check_udp_port(Some(&at(inuse(), vec![own.clone()])), 4754);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c
            .message
            .contains("meshfwd --encap udp (pid 7) (already running)"));
        // A GRE-mode meshfwd holds the port too (wrong_encap counting).
        let gre = Holder::Meshfwd { pid: 8, udp: false };
        let c = check_udp_port(Some(&at(inuse(), vec![gre])), 4754);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            c.fix
                .as_deref()
                .unwrap()
                .contains("stop the GRE-mode meshfwd"),
            "{c:?}"
        );
        let py = Holder::Program {
            comm: "python3".into(),
            pid: 9,
        };
        let c = check_udp_port(Some(&at(inuse(), vec![own.clone(), py])), 4754);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            c.message.contains("python3 (pid 9)")
                && c.fix.as_deref().unwrap().contains("ip fou del port 4754")
        );
        let c = check_udp_port(Some(&at(inuse(), vec![Holder::Kernel])), 4754);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        // Sockets nobody could be named for: not a failure (an unprivileged
        // check cannot see another user's meshfwd), and never "ok" either.
        let c = check_udp_port(
            Some(&at(inuse(), vec![own, Holder::Unseen { uid: 1000 }])),
            4754,
        );
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(c.message.contains("uid 1000"), "{c:?}");
        assert_eq!(
            check_udp_port(Some(&at(inuse(), vec![])), 4754).status,
            Status::Warn
        );
        let c = check_udp_port(Some(&at(errno(libc::EADDRNOTAVAIL), vec![])), 4754);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert_eq!(check_udp_port(None, 4754).status, Status::Warn);
    }

    #[test]
    fn proc_net_udp_lines() {
        let t = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  118: 2010A8C0:1292 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 41234 2 0000000000000000 0
  119: 00000000:1292 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 0 2 0000000000000000 0
  120: 2110A8C0:1292 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 555 2 0000000000000000 0
  121: 2010A8C0:1293 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 777 2 0000000000000000 0
garbage
";
        let t6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
   1: 00000000000000000000000000000000:1292 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000   105        0 900 2 0000000000000000 0
   2: 0000000000000000FFFF00002010A8C0:1292 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 901 2 0000000000000000 0
   3: 0000000000000000FFFF00002110A8C0:1292 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 902 2 0000000000000000 0
";
        // 0x1292 = 4754; 2010A8C0 is 192.168.16.32 as printed on a little-endian host.
        if cfg!(target_endian = "little") {
            let a = ip("192.168.16.32");
            assert_eq!(
                parse_proc_net_udp(t, a, 4754, false),
                vec![(41234, 0), (0, 0)]
            );
            assert_eq!(
                parse_proc_net_udp(t, ip("192.168.16.33"), 4754, false),
                vec![(0, 0), (555, 1000)]
            );
            assert_eq!(parse_proc_net_udp(t, a, 4755, false), vec![(777, 0)]);
            assert_eq!(
                parse_proc_net_udp(t6, a, 4754, true),
                vec![(900, 105), (901, 0)]
            );
        }
        assert!(parse_proc_net_udp(t, ip("10.0.0.1"), 1, false).is_empty());
        assert!(parse_proc_net_udp(t6, ip("10.0.0.1"), 4754, false).is_empty());
    }

    #[test]
    fn raw_socket_needs_cap_net_raw() {
        assert_eq!(check_raw_socket(&Ok(()), Encap::Gre).status, Status::Ok);
        let c = check_raw_socket(&errno(libc::EPERM), Encap::Gre);
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("CAP_NET_RAW"));
        let c = check_raw_socket(&errno(libc::EAFNOSUPPORT), Encap::Gre);
        assert!(c.fix.unwrap().contains("RestrictAddressFamilies"));
    }

    #[test]
    fn gre_modules_are_ok_either_way_and_not_needed() {
        let none = GreFacts {
            release: "6.18.0".into(),
            ..Default::default()
        };
        let c = check_gre_modules(&none, Encap::Gre);
        assert_eq!(c.status, Status::Ok);
        assert!(c.message.contains("no kernel GRE support found"), "{c:?}");
        assert!(c.message.contains("does not need"));
        assert!(c.message.contains("/proc/modules (absent"));
        assert!(c.message.contains("/lib/modules/6.18.0 (absent)"));
        let avail = GreFacts {
            proc_modules: Some("bridge 1 0 - Live 0x0\n".into()),
            modules_dir: true,
            module_files: vec!["/lib/modules/6.1/kernel/net/ipv4/ip_gre.ko.xz".into()],
            ..none.clone()
        };
        let c = check_gre_modules(&avail, Encap::Gre);
        assert_eq!(c.status, Status::Ok);
        assert!(
            c.message.contains("ip_gre not loaded") && c.message.contains("ip_gre.ko.xz available")
        );
        let loaded = GreFacts {
            proc_modules: Some("ip_gre 32768 0 - Live 0x0\ngre 16384 1 ip_gre, Live 0x0\n".into()),
            ..none.clone()
        };
        let c = check_gre_modules(&loaded, Encap::Gre);
        assert_eq!(c.status, Status::Ok);
        assert!(c.message.contains("is loaded") && c.message.contains("does not need"));
        let sys = GreFacts {
            sys_ip_gre: true,
            ..none
        };
        assert!(check_gre_modules(&sys, Encap::Gre)
            .message
            .contains("is loaded"));
    }

    #[test]
    fn ip_forward() {
        assert_eq!(check_ip_forward(Some(1)).status, Status::Ok);
        let c = check_ip_forward(Some(0));
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("sysctl -w net.ipv4.ip_forward=1"));
        assert_eq!(check_ip_forward(None).status, Status::Warn);
    }

    #[test]
    fn rp_filter_strict_warns_with_effective_value() {
        let ok = check_rp_filter(
            &vals(&[("all", 0), ("default", 2), ("eth0", 0)]),
            Some("eth0"),
            "tun0",
        );
        assert_eq!(ok.status, Status::Ok, "{ok:?}");
        assert!(
            ok.message
                .contains("tun0 (TUN, not created yet: inherits default) = 2"),
            "{ok:?}"
        );
        // strict on the underlay interface
        let c = check_rp_filter(
            &vals(&[("all", 0), ("default", 0), ("eth0", 1)]),
            Some("eth0"),
            "tun0",
        );
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.contains("eth0 (underlay)"), "{c:?}");
        let fix = c.fix.unwrap();
        assert!(fix.contains("net.ipv4.conf.eth0.rp_filter=2"), "{fix}");
        assert!(!fix.contains("conf.all."), "{fix}");
        // all=1 makes every interface strict: the fix must lower `all` too
        let c = check_rp_filter(
            &vals(&[("all", 1), ("default", 0), ("eth0", 0)]),
            Some("eth0"),
            "tun0",
        );
        assert_eq!(c.status, Status::Warn);
        let fix = c.fix.unwrap();
        assert!(fix.contains("net.ipv4.conf.all.rp_filter=2"), "{fix}");
        // loose wins over strict (max), all=2 with eth0=1 is loose
        let c = check_rp_filter(
            &vals(&[("all", 2), ("default", 1), ("eth0", 1)]),
            Some("eth0"),
            "tun0",
        );
        assert_eq!(c.status, Status::Ok, "{c:?}");
        // a TUN not created yet inherits `default`
        let c = check_rp_filter(&vals(&[("all", 0), ("default", 1)]), None, "tun0");
        assert_eq!(c.status, Status::Warn);
        assert!(c.fix.unwrap().contains("net.ipv4.conf.default.rp_filter=2"));
        // an existing TUN uses its own value, not default
        let c = check_rp_filter(
            &vals(&[("all", 0), ("default", 1), ("tun0", 0)]),
            None,
            "tun0",
        );
        assert_eq!(c.status, Status::Ok, "{c:?}");
    }

    #[test]
    fn local_address_found_ambiguous_none() {
        let l = Layout::wide();
        let c = check_local_address(&l, &Ok((ip("192.168.16.32"), Some("eth0".into()))), &[]);
        assert_eq!(c.status, Status::Ok);
        assert!(
            c.message.contains("241.2.0.0/20") && c.message.contains("241.2.0.1"),
            "{c:?}"
        );
        let c = check_local_address(&l, &Ok((ip("192.168.16.32"), None)), &[]);
        assert_eq!(c.status, Status::Warn);
        let addrs = [
            ifa("eth0", "192.168.1.1", 16),
            ifa("eth1", "192.168.2.1", 16),
        ];
        let c = check_local_address(&l, &Err("several addresses".into()), &addrs);
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("--local"));
        let c = check_local_address(
            &l,
            &Err("no address".into()),
            &[ifa("eth0", "192.0.2.2", 24)],
        );
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("192.168.0.0/16"));
    }

    #[test]
    fn layout_fit() {
        let l = Layout::wide();
        let lo = ifa("lo", "127.0.0.1", 8);
        let c = check_layout(
            &l,
            &[lo.clone(), ifa("eth0", "192.168.16.32", 16)],
            "tun0",
            None,
        );
        assert_eq!(c.status, Status::Ok, "{c:?}");
        // nothing inside the underlay: suggest a layout over the host's network
        let c = check_layout(
            &l,
            &[lo.clone(), ifa("eth0", "192.0.2.2", 24)],
            "tun0",
            None,
        );
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.contains("192.0.2.2/24 on eth0"), "{c:?}");
        assert_eq!(
            c.fix.unwrap(),
            "if the VMs share 192.0.2.0/24: --overlay 240.0.0.0/4 --underlay 192.0.2.0/24 (on every VM)"
        );
        // a host address inside the classic overlay on another interface
        let l = Layout::classic();
        let own = l.block(ip("192.168.16.32"));
        let addrs = [
            lo.clone(),
            ifa("eth0", "192.168.16.32", 16),
            ifa("eth1", "10.200.0.5", 16),
            ifa("lo", "10.16.32.1", 32),
            ifa("tun0", "10.16.32.1", 8),
        ];
        let c = check_layout(&l, &addrs, "tun0", own);
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.contains("10.200.0.5/16 on eth1"), "{c:?}");
        assert!(!c.message.contains("10.16.32.1"), "{c:?}");
        let c = check_layout(&l, &addrs[..2], "tun0", own);
        assert_eq!(c.status, Status::Ok);
    }

    #[test]
    fn mtu_arithmetic() {
        let c = check_mtu(Some(("eth0", 1500)), "tun0", None, Encap::Gre);
        assert_eq!(c.status, Status::Ok);
        assert!(
            c.message.contains("TUN MTU 1476") && c.message.contains("1472 with --key"),
            "{c:?}"
        );
        let c = check_mtu(Some(("eth0", 9000)), "tun0", Some(8976), Encap::Gre);
        assert_eq!(c.status, Status::Ok);
        assert!(c.message.contains("too large if --key"));
        let c = check_mtu(Some(("eth0", 1500)), "tun0", Some(1500), Encap::Gre);
        assert_eq!(c.status, Status::Warn);
        assert!(c.fix.unwrap().contains("ip link set tun0 mtu 1476"));
        assert_eq!(
            check_mtu(Some(("eth0", 90)), "tun0", None, Encap::Gre).status,
            Status::Fail
        );
        assert_eq!(
            check_mtu(None, "tun0", None, Encap::Gre).status,
            Status::Warn
        );
    }

    const PROC_ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
tun0\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n\
c1\t5B20100A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n\
eth1\t00FFFF0A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
*\t0000640A\t00000000\t0201\t0\t0\t0\t0000FFFF\t0\t0\t0\n";

    #[test]
    fn parses_proc_net_route() {
        let r = parse_proc_net_route(PROC_ROUTE);
        assert_eq!(r.len(), 6);
        assert_eq!(r[0].dst.to_string(), "0.0.0.0/0");
        assert_eq!(r[0].gateway, Some(ip("192.0.2.1")));
        assert_eq!(r[1].dst.to_string(), "192.0.2.0/24");
        assert_eq!(r[1].gateway, None);
        assert_eq!(r[2].dst.to_string(), "10.0.0.0/8");
        assert_eq!(r[3].dst.to_string(), "10.16.32.91/32");
        assert_eq!(r[4].metric, 100);
        assert_eq!(r[5].ifname, "*");
        assert!(parse_proc_net_route("Iface\n garbage\n").is_empty());
    }

    #[test]
    fn overlay_route_overlap() {
        let routes = parse_proc_net_route(PROC_ROUTE);
        let l = Layout::classic();
        let own = l.block(ip("192.168.16.32"));
        let c = check_overlay_routes(Some(&routes), l.overlay(), "tun0", own);
        assert_eq!(c.status, Status::Warn);
        // the default route, the underlay subnet, tun0's overlay route and the
        // local container's /32 are fine; 10.255.255.0/24 and the blackhole are not
        assert!(c.message.starts_with("2 route(s)"), "{c:?}");
        assert!(c.message.contains("10.255.255.0/24 dev eth1"), "{c:?}");
        assert!(
            c.message.contains("10.100.0.0/16 (unreachable/blackhole)"),
            "{c:?}"
        );
        assert!(!c.message.contains("10.16.32.91"), "{c:?}");
        // the wide overlay is untouched by the same table
        let w = Layout::wide();
        let c = check_overlay_routes(Some(&routes), w.overlay(), "tun0", None);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        // without a known block, a container /32 is reported
        let c = check_overlay_routes(Some(&routes), l.overlay(), "tun0", None);
        assert!(c.message.contains("10.16.32.91/32 dev c1"), "{c:?}");
        // a gateway inside the overlay
        let r = vec![Route {
            ifname: "eth0".into(),
            dst: "0.0.0.0/0".parse().unwrap(),
            gateway: Some(ip("10.1.1.1")),
            metric: 0,
        }];
        let c = check_overlay_routes(Some(&r), l.overlay(), "tun0", own);
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.message.contains("gateway 10.1.1.1 inside the overlay"),
            "{c:?}"
        );
        assert_eq!(
            check_overlay_routes(None, l.overlay(), "tun0", own).status,
            Status::Warn
        );
    }

    #[test]
    fn resolver_inside_overlay() {
        let t = "# comment\nsearch example\nnameserver 10.255.255.53\nnameserver fd00::53\nnameserver 192.0.2.53 # x\noptions ndots:1\n";
        assert_eq!(
            parse_resolv_conf(t),
            vec![ip("10.255.255.53"), ip("192.0.2.53")]
        );
        let src = vec![("/etc/resolv.conf".to_string(), parse_resolv_conf(t))];
        let c = check_resolvers(&Layout::classic(), &src);
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.message
                .contains("10.255.255.53 (/etc/resolv.conf, i.e. VM 192.168.255.255's block)"),
            "{c:?}"
        );
        assert!(!c.message.contains("192.0.2.53"));
        let c = check_resolvers(&Layout::wide(), &src);
        assert_eq!(c.status, Status::Ok);
        assert!(c.message.contains("10.255.255.53, 192.0.2.53"));
        assert_eq!(check_resolvers(&Layout::wide(), &[]).status, Status::Ok);
    }

    #[test]
    fn report_formats() {
        let r = Report::new(vec![
            Check::ok("tun_device", "fine"),
            Check::warn("rp_filter", "strict", "sysctl"),
        ]);
        assert!(r.ok);
        let j: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(j["ok"], true);
        assert_eq!(j["checks"][0]["status"], "ok");
        assert_eq!(j["checks"][0]["fix"], serde_json::Value::Null);
        assert_eq!(j["checks"][1]["status"], "warn");
        assert_eq!(j["checks"][1]["fix"], "sysctl");
        assert!(r.to_json().starts_with("{\"ok\":true,\"checks\":["));
        let t = r.to_text("hdr");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[1], "ok    tun_device  fine");
        assert_eq!(lines[2], "warn  rp_filter   strict  fix: sysctl");
        assert_eq!(
            lines[3],
            "summary: 1 ok, 1 warn, 0 fail: ready to run meshfwd (read the warnings)"
        );
        let r = Report::new(vec![Check::fail("ip_forward", "0", "sysctl")]);
        assert!(!r.ok);
        assert!(r.to_text("h").contains("FAIL  ip_forward  0  fix: sysctl"));
        assert!(r.to_json().contains("\"status\":\"fail\""));
    }
}
