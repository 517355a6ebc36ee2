//! Facts: what `meshfwd check` reads from the system, and nothing else.
//!
//! Files under /proc, /sys, /lib/modules and /etc flow in, together with the
//! results of opening /dev/net/tun, a raw GRE socket and (with `--encap udp`)
//! a UDP bind of the GRE-in-UDP port; a [`Facts`] value flows out to the
//! verdicts. Changes nothing on the system. The /proc and resolv.conf parsers
//! are pure and public, so they are unit-tested on their own.

use crate::datapath::Encap;
use crate::layout::Layout;
use crate::procfs::{parse_cap_eff, parse_proc_net_route, parse_proc_net_udp, Route};
use crate::sys::netdev::{self, IfAddr};
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;

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
    /// What `--datapath auto` depends on.
    pub kernel_dp: KernelDpFacts,
    /// Why this namespace cannot carry the IPv6 overlay
    /// ([`crate::procfs::ipv6_disabled`]), `None` if it can.
    pub ipv6_off: Option<String>,
    /// `net.ipv6.conf.all.forwarding` (`None`: unreadable, e.g. no IPv6).
    pub ipv6_forwarding: Option<u32>,
}

/// What the kernel datapath needs, as found: BPF and the tc modules
/// (ip_gre is in [`GreFacts`], the release in `GreFacts::release`).
#[derive(Debug)]
pub struct KernelDpFacts {
    /// Creating a one-slot per-CPU array map (the counters' kind): BPF is
    /// allowed to this process.
    pub bpf_map: Result<(), String>,
    /// `kernel.unprivileged_bpf_disabled`.
    pub unprivileged_bpf_disabled: Option<u32>,
    /// (module, loaded or built in, module file present) for sch_ingress
    /// (clsact) and cls_bpf.
    pub tc_modules: Vec<(&'static str, bool, bool)>,
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
    let euid = crate::sys::privs::euid();
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
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Some(
            crate::procfs::abstract_socket_owners(&crate::sys::instance::lock_name(tun)),
        ),
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
        kernel_dp: gather_kernel_dp(),
        ipv6_off: crate::procfs::ipv6_disabled(),
        ipv6_forwarding: std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding")
            .ok()
            .and_then(|s| s.trim().parse().ok()),
    }
}

fn gather_kernel_dp() -> KernelDpFacts {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let moddir = Path::new("/lib/modules").join(&release);
    let builtin = std::fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
    let tc_modules = ["sch_ingress", "cls_bpf"]
        .into_iter()
        .map(|m| {
            let loaded = Path::new("/sys/module").join(m).exists()
                || builtin.lines().any(|l| l.ends_with(&format!("/{m}.ko")));
            let file = std::fs::read_dir(moddir.join("kernel/net/sched")).is_ok_and(|rd| {
                rd.flatten().any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("{m}.ko"))
                })
            });
            (m, loaded, file)
        })
        .collect();
    KernelDpFacts {
        bpf_map: crate::sys::ebpf::CounterMap::create("meshfwd_check", 1)
            .map(drop)
            .map_err(|e| e.to_string()),
        unprivileged_bpf_disabled: read_u32("/proc/sys/kernel/unprivileged_bpf_disabled"),
        tc_modules,
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
