//! What /proc says, in one place: interface drop counters (/proc/net/dev),
//! main-table routes (/proc/net/route), UDP sockets on a port
//! (/proc/net/udp, udp6), the effective capabilities (/proc/PID/status),
//! and who holds a socket: socket inodes (from /proc/net/* tables)
//! are matched against every readable /proc/PID/fd link, and the holders are
//! named by their `comm` and command line. Used at start-up and by
//! `meshfwd check`, never per packet. What an unprivileged reader cannot see
//! (another user's /proc/PID/fd) is simply missing from the answer.

use crate::layout::Cidr;
use std::net::Ipv4Addr;
use std::path::Path;

/// A process holding one or more of the sockets asked about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketOwner {
    pub pid: u32,
    /// /proc/PID/comm, trimmed.
    pub comm: String,
    /// /proc/PID/cmdline, split at NUL.
    pub args: Vec<String>,
    /// Which of the asked inodes it holds.
    pub inodes: Vec<u64>,
}

/// Every process whose open files include `socket:[INODE]` for one of
/// `inodes` (inode 0, a kernel socket, never matches).
pub fn socket_owners(inodes: &[u64]) -> Vec<SocketOwner> {
    let wanted: Vec<(u64, String)> = inodes
        .iter()
        .filter(|i| **i != 0)
        .map(|i| (*i, format!("socket:[{i}]")))
        .collect();
    let mut out = Vec::new();
    if wanted.is_empty() {
        return out;
    }
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        let links: Vec<std::path::PathBuf> = fds
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .collect();
        let held: Vec<u64> = wanted
            .iter()
            .filter(|(_, w)| links.iter().any(|l| l.as_os_str() == w.as_str()))
            .map(|(i, _)| *i)
            .collect();
        if held.is_empty() {
            continue;
        }
        out.push(SocketOwner {
            pid,
            comm: read_comm(&e.path()),
            args: read_cmdline(&e.path()),
            inodes: held,
        });
    }
    out
}

impl std::fmt::Display for SocketOwner {
    /// `pid 4242 (meshfwd --stats-file … tun0)`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.args.join(" "))
    }
}

/// The processes holding the unix socket bound to abstract name `name`.
pub fn abstract_socket_owners(name: &str) -> Vec<SocketOwner> {
    socket_owners(&abstract_unix_inodes(name))
}

fn read_comm(proc_pid: &Path) -> String {
    std::fs::read_to_string(proc_pid.join("comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn read_cmdline(proc_pid: &Path) -> Vec<String> {
    let raw = std::fs::read(proc_pid.join("cmdline")).unwrap_or_default();
    raw.split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Inodes of the unix sockets bound to abstract name `name` (shown as
/// `@name` in /proc/net/unix, which lists this network namespace's sockets).
pub fn abstract_unix_inodes(name: &str) -> Vec<u64> {
    std::fs::read_to_string("/proc/net/unix")
        .map(|t| parse_proc_net_unix(&t, name))
        .unwrap_or_default()
}

/// /proc/net/unix: `Num RefCount Protocol Flags Type St Inode Path`.
pub fn parse_proc_net_unix(text: &str, abstract_name: &str) -> Vec<u64> {
    let want = format!("@{abstract_name}");
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 8 && f[7] == want)
                .then(|| f[6].parse().ok())
                .flatten()
        })
        .collect()
}

/// Kernel-side drop counters of an interface from /proc/net/dev (this process's
/// network namespace): (rx_dropped, tx_dropped). `tx_dropped` on the TUN counts
/// packets the kernel discarded because the workers did not read them in time.
pub fn kernel_if_drops(ifname: &str) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/dev").ok()?;
    parse_proc_net_dev(&text, ifname)
}

fn parse_proc_net_dev(text: &str, ifname: &str) -> Option<(u64, u64)> {
    for line in text.lines().skip(2) {
        let (name, rest) = line.split_once(':')?;
        if name.trim() != ifname {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets errs drop ...
        return Some((*f.get(3)?, *f.get(11)?));
    }
    None
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

/// The effective capability mask (`CapEff:` line of /proc/PID/status).
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
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

/// Why this network namespace cannot carry the IPv6 overlay, or `None` if
/// it can: no IPv6 in the kernel (no /proc/sys/net/ipv6), or
/// `net.ipv6.conf.{all,default}.disable_ipv6 = 1` (a new TUN would start
/// with IPv6 off). Read from the calling thread's namespace.
pub fn ipv6_disabled() -> Option<String> {
    let conf = Path::new("/proc/sys/net/ipv6/conf");
    if !conf.exists() {
        return Some("this kernel has no IPv6 (no /proc/sys/net/ipv6)".into());
    }
    let read = |which: &str| {
        std::fs::read_to_string(conf.join(which).join("disable_ipv6")).unwrap_or_default()
    };
    ipv6_disabled_by(&read("all"), &read("default"))
}

/// The verdict of [`ipv6_disabled`] from the two `disable_ipv6` files' text.
pub fn ipv6_disabled_by(all: &str, default: &str) -> Option<String> {
    let on: Vec<&str> = [("all", all), ("default", default)]
        .iter()
        .filter(|(_, v)| v.trim() == "1")
        .map(|(k, _)| *k)
        .collect();
    match on.as_slice() {
        [] => None,
        keys => Some(format!(
            "IPv6 is disabled on this host ({} = 1)",
            keys.iter()
                .map(|k| format!("net.ipv6.conf.{k}.disable_ipv6"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_dev() {
        let t = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n  tun0: 5923867  113867    0    7    0     0          0         0 583039817  395033    0  153    0     0       0          0\n";
        assert_eq!(parse_proc_net_dev(t, "tun0"), Some((7, 153)));
        assert_eq!(parse_proc_net_dev(t, "tun1"), None);
    }

    #[test]
    fn finds_abstract_unix_sockets_by_name() {
        let t = "Num       RefCount Protocol Flags    Type St Inode Path\n\
                 0000000047886941: 00000003 00000000 00000000 0001 03  1134\n\
                 00000000aa: 00000002 00000000 00010000 0001 01 987654 @meshfwd/tun/tun0\n\
                 00000000ab: 00000002 00000000 00010000 0001 01 987655 @meshfwd/tun/tun01\n\
                 00000000ac: 00000002 00000000 00010000 0001 01 987656 /run/x.sock\n";
        assert_eq!(parse_proc_net_unix(t, "meshfwd/tun/tun0"), vec![987654]);
        assert_eq!(
            parse_proc_net_unix(t, "meshfwd/tun/tun1"),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn finds_its_own_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&l);
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        let inode: u64 = link
            .to_string_lossy()
            .trim_start_matches("socket:[")
            .trim_end_matches(']')
            .parse()
            .unwrap();
        let owners = socket_owners(&[inode, 0]);
        let me = owners
            .iter()
            .find(|o| o.pid == std::process::id())
            .expect("this process holds its listener");
        assert_eq!(me.inodes, vec![inode]);
        assert!(!me.args.is_empty());
    }

    #[test]
    fn ipv6_disabled_verdicts() {
        assert_eq!(ipv6_disabled_by("0\n", "0\n"), None);
        assert_eq!(
            ipv6_disabled_by("1\n", "0\n").unwrap(),
            "IPv6 is disabled on this host (net.ipv6.conf.all.disable_ipv6 = 1)"
        );
        let both = ipv6_disabled_by("1\n", "1\n").unwrap();
        assert!(both.contains("all.disable_ipv6, net.ipv6.conf.default.disable_ipv6 = 1"));
        // unreadable (empty) files do not count as disabled
        assert_eq!(ipv6_disabled_by("", ""), None);
    }
}
