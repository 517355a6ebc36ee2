//! Start-up, supervision and shutdown of the forwarder.
//!
//! 1. Validate everything that can be validated without side effects: layout,
//!    local underlay address, CPUs, MTU. Errors exit 2 with one line.
//! 2. Open one underlay socket per worker (raw GRE: fails early without
//!    CAP_NET_RAW; or GRE-in-UDP in one SO_REUSEPORT group), then
//!    the multi-queue TUN (creating and configuring it unless --no-configure).
//! 3. Spawn one pinned worker per queue, log one summary line, write the stats file.
//! 4. Supervise: on SIGINT/SIGTERM stop the workers and exit 0; if a worker fails
//!    (e.g. the TUN was deleted) stop the others and exit 1. Final counters are
//!    logged in both cases.

use crate::cli::{parse_cpu_list, RunArgs};
use crate::counters::{aggregate, SharedCounters};
use crate::datapath::{Datapath, Encap};
use crate::layout::Layout;
use crate::sys;
use crate::worker::{OtherEncap, Underlay, Worker, WAKE};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;
/// Socket buffers sized for bursts of a full batch on every worker.
const SOCK_RCVBUF: usize = 8 << 20;
const SOCK_SNDBUF: usize = 4 << 20;
/// GRE-in-UDP source ports per worker (flows are spread over them by hash).
const UDP_SENDERS: usize = 8;

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
    pub udp_port: u16,
    pub cpus: Vec<Option<core_affinity::CoreId>>,
    pub configure: bool,
    pub offload: bool,
    /// UDP GSO/GRO (with --encap udp).
    pub udp_offload: bool,
}

/// Turns arguments into a configuration, reading (not changing) the system.
pub fn resolve(args: &RunArgs) -> Result<Config, String> {
    let tun = args.tun.clone().ok_or("missing TUN device name")?;
    if tun.is_empty() || tun.len() >= libc::IFNAMSIZ || tun.contains('/') || tun.contains(' ') {
        return Err(format!(
            "'{tun}' is not a valid interface name (1-15 characters, no '/' or spaces)"
        ));
    }
    let layout = args.layout.resolve()?;
    let (local, underlay_if) = detect_local(&layout, args.local)?;
    let encap = Encap::from(args.encap);
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
        udp_port: args.udp_port,
        cpus,
        configure: !args.no_configure,
        offload: !args.no_offload,
        udp_offload: !args.no_offload && !args.no_udp_offload,
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

pub fn main(args: RunArgs) -> ExitCode {
    crate::logging::init(args.log_level());
    let cfg = match resolve(&args) {
        Ok(c) => c,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(u) = &args.user {
        // Resolve before touching anything, so a typo exits 2 cleanly.
        if let Err(e) = sys::privs::lookup_user(u) {
            log::error!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    match run(
        &cfg,
        args.stats_file.as_deref(),
        args.stats_interval,
        args.user.as_deref(),
        args.keep_privileges,
        args.metrics,
    ) {
        Ok(code) => ExitCode::from(code),
        Err((code, e)) => {
            log::error!("{e}");
            ExitCode::from(code)
        }
    }
}

fn permission_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            " (meshfwd needs CAP_NET_ADMIN, and CAP_NET_RAW unless --encap udp: run as root)"
        }
        _ => "",
    }
}

/// Why the instance lock on `tun` could not be taken, naming the holder.
fn instance_error(tun: &str, e: &std::io::Error) -> String {
    if e.kind() != std::io::ErrorKind::AddrInUse {
        return format!(
            "take the instance lock @{}: {e}",
            sys::instance::lock_name(tun)
        );
    }
    let inodes = crate::procfs::abstract_unix_inodes(&sys::instance::lock_name(tun));
    let holders: Vec<String> = crate::procfs::socket_owners(&inodes)
        .iter()
        .map(|o| format!("pid {} ({})", o.pid, o.args.join(" ")))
        .collect();
    let who = if holders.is_empty() {
        "another process".to_string()
    } else {
        format!("another meshfwd, {},", holders.join("; "))
    };
    format!(
        "{who} already forwards on {tun} in this network namespace; a second instance would \
         receive and deliver every packet twice. Stop it first, or use another TUN name"
    )
}

fn run(
    cfg: &Config,
    stats_file: Option<&Path>,
    stats_interval: u64,
    user: Option<&str>,
    keep_privileges: bool,
    metrics_addr: Option<std::net::SocketAddr>,
) -> Result<u8, (u8, String)> {
    let n = cfg.cpus.len();
    // Before anything else: a second instance on this TUN would attach to the
    // first one's queues and deliver every packet twice.
    let _instance = sys::instance::acquire(&cfg.tun)
        .map_err(|e| (EXIT_CONFIG, instance_error(&cfg.tun, &e)))?;
    let dp =
        Datapath::new(cfg.layout, cfg.local, cfg.key).with_options(cfg.encap, cfg.csum, cfg.seq);
    let block = cfg.layout.block(cfg.local).expect("local checked");
    let vm_overlay = cfg
        .layout
        .vm_overlay_addr(cfg.local)
        .expect("local checked");

    // Underlay sockets first: raw ones fail fast without privileges, and none
    // changes anything.
    let mut socks = Vec::with_capacity(n);
    for i in 0..n {
        let s = match cfg.encap {
            Encap::Gre => sys::raw::RawGreSocket::open(
                cfg.local,
                i as u32,
                n as u32,
                SOCK_RCVBUF,
                SOCK_SNDBUF,
            )
            .map(|(s, flushed)| (Underlay::Raw(s), flushed)),
            Encap::Udp => sys::udp::UdpGreSocket::open_with(
                cfg.local,
                cfg.udp_port,
                SOCK_RCVBUF,
                SOCK_SNDBUF,
                cfg.udp_offload,
            )
            .map(|s| (Underlay::Udp(s, cfg.udp_port), 0)),
        }
        .map_err(|e| (EXIT_CONFIG, format!("{e}{}", permission_hint(&e))))?;
        socks.push(s);
    }
    // UDP mode: per worker, sender sockets on kernel-chosen source ports; the
    // inner flow's hash picks one (RFC 8086 entropy).
    let mut senders = Vec::with_capacity(n);
    for _ in 0..n {
        let mut set = Vec::new();
        if cfg.encap == Encap::Udp {
            for _ in 0..UDP_SENDERS {
                set.push(
                    sys::udp::UdpGreSocket::open_with(
                        cfg.local,
                        0,
                        0,
                        SOCK_SNDBUF,
                        cfg.udp_offload,
                    )
                    .map_err(|e| (EXIT_CONFIG, format!("{e}{}", permission_hint(&e))))?,
                );
            }
        }
        senders.push(set);
    }
    if let Some((Underlay::Udp(s, _), _)) = socks.first() {
        log::info!(
            "GRE-in-UDP on {}:{}: UDP GSO {}, UDP GRO {}",
            cfg.local,
            cfg.udp_port,
            match (s.gso(), cfg.udp_offload) {
                (true, _) => "on",
                (false, false) => "off (by option)",
                (false, true) => "unavailable (one datagram per packet)",
            },
            match (s.gro(), cfg.udp_offload) {
                (true, _) => "on",
                (false, false) => "off (by option)",
                (false, true) => "unavailable",
            },
        );
    }
    // A socket of the other encapsulation, so that a peer configured
    // differently shows up as wrong_encap instead of vanishing.
    let mut other = match cfg.encap {
        Encap::Gre => sys::udp::UdpGreSocket::open(cfg.local, cfg.udp_port, 0, 0)
            .map(OtherEncap::Udp)
            .map_err(|e| format!("{e}")),
        Encap::Udp => sys::raw::RawGreSocket::open(cfg.local, 0, 1, 0, 0)
            .map(|(s, _)| OtherEncap::Raw(s))
            .map_err(|e| format!("{e}")),
    }
    .map_err(|e| log::warn!("wrong_encap will not be counted: {e}"))
    .ok();
    let tun_cfg = sys::tun::TunConfig {
        addr: vm_overlay,
        prefix: cfg.layout.overlay().prefix(),
        mtu: cfg.mtu,
    };
    let queues = sys::tun::open_tun(&cfg.tun, n, cfg.configure.then_some(&tun_cfg), cfg.offload)
        .map_err(|e| (EXIT_CONFIG, format!("{e}{}", permission_hint(&e))))?;
    let offload = queues.first().is_some_and(|q| q.tcp_gso());
    let offload_desc = match (offload, queues.first().is_some_and(|q| q.udp_gso())) {
        (true, true) => "TSO+USO/GRO",
        (true, false) => "TSO/GRO",
        (false, _) => "off",
    };
    let metrics = match metrics_addr {
        Some(a) => Some(crate::metrics::bind(a).map_err(|e| (EXIT_CONFIG, e.to_string()))?),
        None => None,
    };

    // Everything privileged is open: keep no capability (and, with --user, no
    // root identity) for the rest of the process's life.
    if !keep_privileges {
        let uid = sys::privs::drop_privileges(user).map_err(|e| (EXIT_CONFIG, e.to_string()))?;
        log::debug!("dropped all capabilities, running as uid {uid}");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let signalled = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, signalled.clone())
            .map_err(|e| (EXIT_RUNTIME, format!("install signal handler: {e}")))?;
    }
    // SIGHUP (a closed terminal, `systemctl reload`, `pkill -HUP`): there is no
    // configuration file to re-read, so log the counters, rewrite the stats
    // file and keep forwarding. Its default action would end the daemon
    // without final counters.
    let hangup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hangup.clone())
        .map_err(|e| (EXIT_RUNTIME, format!("install signal handler: {e}")))?;
    let shared: Arc<Vec<SharedCounters>> =
        Arc::new((0..n).map(|_| SharedCounters::default()).collect());
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<(usize, Result<(), String>)>();
    let mut wakers = Vec::with_capacity(n);
    let mut handles = Vec::with_capacity(n);
    for (i, (tun, (sock, flushed))) in queues.into_iter().zip(socks).enumerate() {
        let poll = mio::Poll::new().map_err(|e| (EXIT_RUNTIME, format!("create poll: {e}")))?;
        let waker = mio::Waker::new(poll.registry(), WAKE)
            .map_err(|e| (EXIT_RUNTIME, format!("create waker: {e}")))?;
        wakers.push(waker);
        let w = Worker {
            id: i,
            tun_name: cfg.tun.clone(),
            tun,
            offload,
            sock,
            other: if i == 0 { other.take() } else { None },
            senders: std::mem::take(&mut senders[i]),
            dp: dp.clone(),
            poll,
            shared: shared.clone(),
            stop: stop.clone(),
            cpu: cfg.cpus[i],
            flushed,
        };
        let tx = done_tx.clone();
        let h = std::thread::Builder::new()
            .name(format!("meshfwd-w{i}"))
            .spawn(move || {
                let r = w.run();
                let _ = tx.send((i, r));
            })
            .map_err(|e| (EXIT_RUNTIME, format!("spawn worker {i}: {e}")))?;
        handles.push(h);
    }
    drop(done_tx);

    let cpus: Vec<String> = cfg
        .cpus
        .iter()
        .map(|c| c.map_or("-".into(), |c| c.id.to_string()))
        .collect();
    log::info!(
        "meshfwd {} on {}: layout {} ({}), local VM {} (underlay if {}), block {}, VM overlay {}, {} worker(s) on CPUs [{}], MTU {}{}, encap {}, key {}, csum {}, seq {}, offload {}",
        env!("CARGO_PKG_VERSION"),
        cfg.tun,
        cfg.layout_name,
        cfg.layout,
        cfg.local,
        cfg.underlay_if.as_deref().unwrap_or("?"),
        block,
        vm_overlay,
        n,
        cpus.join(","),
        cfg.mtu,
        cfg.underlay_mtu
            .map_or(String::new(), |u| format!(" (underlay MTU {u})")),
        match cfg.encap {
            Encap::Gre => "gre".to_string(),
            Encap::Udp => format!("udp port {}", cfg.udp_port),
        },
        cfg.key.map_or("none".into(), |k| k.to_string()),
        if cfg.csum { "on" } else { "off" },
        if cfg.seq { "on" } else { "off" },
        offload_desc,
    );
    if let Some(l) = metrics {
        let at = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        crate::metrics::serve(
            l,
            shared.clone(),
            crate::metrics::Identity {
                tun: cfg.tun.clone(),
                layout: cfg.layout_name.to_string(),
                overlay: cfg.layout.overlay().to_string(),
                underlay: cfg.layout.underlay().to_string(),
                local: cfg.local.to_string(),
                block: block.to_string(),
                key: cfg.key.is_some(),
                offload: offload_desc.to_string(),
            },
        );
        log::info!("metrics at http://{at}/metrics");
    }
    if !cfg.configure {
        log::info!(
            "--no-configure: leaving address, MTU and link state of {} alone",
            cfg.tun
        );
    }

    write_stats(stats_file, &shared, n, &cfg.tun);
    let started = Instant::now();
    let mut last_stats = Instant::now();
    let mut last_log = Instant::now();
    let mut exit = 0u8;
    let mut finished = 0usize;
    loop {
        if signalled.load(Ordering::Relaxed) {
            log::info!("signal received, shutting down");
            break;
        }
        if hangup.swap(false, Ordering::Relaxed) {
            write_stats(stats_file, &shared, n, &cfg.tun);
            log::info!(
                "SIGHUP: nothing to reload, still forwarding; after {:.1} s: {}",
                started.elapsed().as_secs_f64(),
                aggregate(&shared).summary()
            );
        }
        match done_rx.recv_timeout(Duration::from_millis(100)) {
            Ok((i, r)) => {
                finished += 1;
                match r {
                    Ok(()) => log::warn!("worker {i} stopped unexpectedly"),
                    Err(e) => log::error!("{e}"),
                }
                exit = EXIT_RUNTIME;
                break;
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        if last_stats.elapsed() >= Duration::from_secs(1) {
            write_stats(stats_file, &shared, n, &cfg.tun);
            last_stats = Instant::now();
        }
        if stats_interval > 0 && last_log.elapsed() >= Duration::from_secs(stats_interval) {
            let (_, tx_drop) = kernel_if_drops(&cfg.tun).unwrap_or_default();
            log::info!(
                "stats: {}; kernel dropped {tx_drop} packets queued for the workers",
                aggregate(&shared).summary()
            );
            last_log = Instant::now();
        }
    }
    write_stats(stats_file, &shared, n, &cfg.tun);
    stop.store(true, Ordering::Relaxed);
    for w in &wakers {
        let _ = w.wake();
    }
    while finished < n {
        match done_rx.recv_timeout(Duration::from_secs(5)) {
            Ok((i, Err(e))) if exit == 0 => {
                log::error!("worker {i}: {e}");
                exit = EXIT_RUNTIME;
                finished += 1;
            }
            Ok(_) => finished += 1,
            Err(_) => {
                log::error!("workers did not stop within 5 s");
                exit = EXIT_RUNTIME;
                break;
            }
        }
    }
    for h in handles {
        if h.is_finished() {
            let _ = h.join();
        }
    }
    write_stats(stats_file, &shared, n, &cfg.tun);
    log::info!(
        "final counters after {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        aggregate(&shared).summary()
    );
    Ok(exit)
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

/// Atomically replaces the stats file (write to a temporary, then rename).
/// The last kernel drop counters seen for the TUN, kept so the final snapshot
/// still has them after the device disappears with its last queue.
static LAST_KERNEL_DROPS: std::sync::Mutex<Option<(u64, u64)>> = std::sync::Mutex::new(None);

fn write_stats(path: Option<&Path>, shared: &[SharedCounters], workers: usize, tun: &str) {
    let Some(path) = path else { return };
    let mut v = aggregate(shared).to_json(workers);
    let drops = {
        let mut last = LAST_KERNEL_DROPS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(now) = kernel_if_drops(tun) {
            *last = Some(now);
        }
        *last
    };
    if let Some((rx, tx)) = drops {
        v["tun_kernel_rx_dropped"] = rx.into();
        v["tun_kernel_tx_dropped"] = tx.into();
    }
    v["log_lines_lost"] = crate::logging::lost_lines().into();
    let json = v.to_string();
    let tmp = path.with_extension("tmp");
    let r = std::fs::write(&tmp, json + "\n").and_then(|_| std::fs::rename(&tmp, path));
    // Log a failure once, and the recovery, not every second.
    static FAILING: AtomicBool = AtomicBool::new(false);
    match r {
        Err(e) if !FAILING.swap(true, Ordering::Relaxed) => {
            log::warn!(
                "write stats file {}: {e} (will keep trying silently)",
                path.display()
            )
        }
        Ok(()) if FAILING.swap(false, Ordering::Relaxed) => {
            log::info!("stats file {} written again", path.display())
        }
        _ => {}
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
}
