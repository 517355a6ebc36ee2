//! Start-up, supervision and shutdown of the forwarder.
//!
//! 0. After step 1, with `--datapath kernel|auto`, try the kernel datapath
//!    ([`crate::kernel_mode`]): if it is set up, supervise it instead of
//!    steps 2-4 (SIGINT/SIGTERM remove the device and exit 0).
//! 1. Validate everything that can be validated without side effects: layout,
//!    local underlay address, CPUs, MTU. Errors exit 2 with one line.
//! 2. Open one underlay socket per worker (raw GRE: fails early without
//!    CAP_NET_RAW; or GRE-in-UDP in one SO_REUSEPORT group), then
//!    the multi-queue TUN (creating and configuring it unless --no-configure).
//! 3. Spawn one pinned worker per queue, log one summary line, write the stats file.
//! 4. Supervise: on SIGINT/SIGTERM stop the workers and exit 0; if a worker fails
//!    (e.g. the TUN was deleted) stop the others and exit 1. Final counters are
//!    logged in both cases.

use crate::cli::{DatapathName, GreReceive, RunArgs};
use crate::config::{resolve, Config, Overlay6Off};
use crate::counters::{aggregate, SharedCounters};
use crate::datapath::{Datapath, Encap};
use crate::kernel_mode;
use crate::sys;
use crate::sys::gredev::KernelDevice;
use crate::worker::{FanoutGre, OtherEncap, RawGre, TunQueue, UdpGre, Underlay, Worker, WAKE};
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
    let holders: Vec<String> =
        crate::procfs::abstract_socket_owners(&sys::instance::lock_name(tun))
            .iter()
            .map(|o| o.to_string())
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
    if let Some(dev) = choose_kernel(cfg)? {
        return run_kernel(
            cfg,
            dev,
            stats_file,
            stats_interval,
            user,
            keep_privileges,
            metrics_addr,
        );
    }
    let mut dp =
        Datapath::new(cfg.layout, cfg.local, cfg.key).with_options(cfg.encap, cfg.csum, cfg.seq);
    if let Some(l6) = cfg.overlay6 {
        dp = dp.with_overlay6(l6);
    }
    log_overlay6_off(cfg);
    let block = cfg.layout.block(cfg.local).expect("local checked");
    let vm_overlay = cfg
        .layout
        .vm_overlay_addr(cfg.local)
        .expect("local checked");

    // Underlay sockets first: raw ones fail fast without privileges, and none
    // changes anything.
    let open_err = |e: std::io::Error| (EXIT_CONFIG, format!("{e}{}", permission_hint(&e)));
    let fanout = match (cfg.encap, cfg.gre_receive) {
        (Encap::Gre, GreReceive::Auto | GreReceive::Fanout) => match open_fanout(cfg, n) {
            Ok(v) => Some(v),
            Err(why) if cfg.gre_receive == GreReceive::Fanout => {
                return Err((EXIT_CONFIG, format!("--gre-receive fanout: {why}")))
            }
            Err(why) => {
                log::warn!(
                    "GRE receive: no packet fanout group ({why}); using one raw GRE socket per \
                     worker instead, each of which gets a copy of every GRE packet. Raw sockets \
                     get no offload metadata: where the kernel merges GRE (GRE GRO, GRO on the \
                     underlay device) TCP into containers fails with checksum errors; turn it \
                     off there (ethtool -K DEV gro off)"
                );
                None
            }
        },
        _ => None,
    };
    // Held until meshfwd exits (dropping it removes the device).
    let _quiet = quiet_ip_gre(cfg.encap);
    let receive_mode = match (cfg.encap, &fanout) {
        (Encap::Udp, _) => "udp",
        (Encap::Gre, Some(_)) => "fanout",
        (Encap::Gre, None) => "shard",
    };
    let receive_desc = match (cfg.encap, &fanout) {
        (Encap::Udp, _) => "udp sockets".to_string(),
        (Encap::Gre, Some(_)) => format!("fanout on {}", cfg.underlay_if.as_deref().unwrap_or("?")),
        (Encap::Gre, None) => "shard".to_string(),
    };
    let underlays = match (cfg.encap, fanout) {
        (Encap::Gre, Some(v)) => Underlays::Fanout(v),
        (Encap::Gre, None) => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                let (s, flushed) = sys::raw::RawGreSocket::open(
                    cfg.local,
                    i as u32,
                    n as u32,
                    SOCK_RCVBUF,
                    SOCK_SNDBUF,
                )
                .map_err(open_err)?;
                v.push((RawGre::new(s), flushed));
            }
            Underlays::Raw(v)
        }
        (Encap::Udp, _) => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let s = sys::udp::UdpGreSocket::open_with(
                    cfg.local,
                    cfg.udp_port,
                    SOCK_RCVBUF,
                    SOCK_SNDBUF,
                    cfg.udp_offload,
                )
                .map_err(open_err)?;
                // Per worker, sender sockets on kernel-chosen source ports;
                // the inner flow's hash picks one (RFC 8086 entropy).
                let mut senders = Vec::with_capacity(UDP_SENDERS);
                for _ in 0..UDP_SENDERS {
                    senders.push(
                        sys::udp::UdpGreSocket::open_with(
                            cfg.local,
                            0,
                            0,
                            SOCK_SNDBUF,
                            cfg.udp_offload,
                        )
                        .map_err(open_err)?,
                    );
                }
                if v.is_empty() {
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
                v.push((UdpGre::new(s, cfg.udp_port, senders, dp.header_len()), 0));
            }
            Underlays::Udp(v)
        }
    };
    // A socket of the other encapsulation, so that a peer configured
    // differently shows up as wrong_encap instead of vanishing.
    let other = match cfg.encap {
        Encap::Gre => sys::udp::UdpGreSocket::open(cfg.local, cfg.udp_port, 0, 0)
            .map(|s| OtherEncap(Box::new(s)))
            .map_err(|e| format!("{e}")),
        Encap::Udp => sys::raw::RawGreSocket::open(cfg.local, 0, 1, 0, 0)
            .map(|(s, _)| OtherEncap(Box::new(s)))
            .map_err(|e| format!("{e}")),
    }
    .map_err(|e| log::warn!("wrong_encap will not be counted: {e}"))
    .ok();
    let tun_cfg = sys::tun::TunConfig {
        addr: vm_overlay,
        prefix: cfg.layout.overlay().prefix(),
        mtu: cfg.mtu,
        addr6: cfg.overlay6.map(|l6| l6.vm_addr(cfg.local)),
    };
    let queues = sys::tun::open_tun(&cfg.tun, n, cfg.configure.then_some(&tun_cfg), cfg.offload)
        .map_err(|e| (EXIT_CONFIG, format!("{e}{}", permission_hint(&e))))?;
    let offload = queues.first().is_some_and(|q| q.tcp_gso());
    let uso = queues.first().is_some_and(|q| q.udp_gso());
    let offload_desc = match (offload, uso) {
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
    // With the ip_gre quiet device, CAP_NET_ADMIN stays to delete it at exit.
    if !keep_privileges && _quiet.is_some() {
        let uid = sys::privs::drop_privileges_keeping(user, &[sys::privs::CAP_NET_ADMIN])
            .map_err(|e| (EXIT_CONFIG, e.to_string()))?;
        log::debug!(
            "kept CAP_NET_ADMIN only (to delete {QUIET_DEV} at exit), running as uid {uid}"
        );
    } else if !keep_privileges {
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
    let spawn = Spawn {
        tun_name: &cfg.tun,
        dp: &dp,
        shared: &shared,
        stop: &stop,
        cpus: &cfg.cpus,
        offload,
        uso,
        done: &done_tx,
    };
    let (wakers, handles) = match underlays {
        Underlays::Raw(v) => spawn.all(queues, v, other)?,
        Underlays::Fanout(v) => spawn.all(queues, v, other)?,
        Underlays::Udp(v) => spawn.all(queues, v, other)?,
    };
    drop(done_tx);

    let cpus: Vec<String> = cfg
        .cpus
        .iter()
        .map(|c| c.map_or("-".into(), |c| c.id.to_string()))
        .collect();
    log::info!(
        "meshfwd {} on {}: layout {} ({}), local VM {} (underlay if {}), block {}, VM overlay {}, IPv6 {}, {} worker(s) on CPUs [{}], MTU {}{}, encap {}, receive {}, key {}, csum {}, seq {}, offload {}",
        env!("CARGO_PKG_VERSION"),
        cfg.tun,
        cfg.layout_name,
        cfg.layout,
        cfg.local,
        cfg.underlay_if.as_deref().unwrap_or("?"),
        block,
        vm_overlay,
        cfg.overlay6.map_or("off".to_string(), |l6| format!(
            "block {} (VM {})",
            l6.block(cfg.local),
            l6.vm_addr(cfg.local)
        )),
        n,
        cpus.join(","),
        cfg.mtu,
        cfg.underlay_mtu
            .map_or(String::new(), |u| format!(" (underlay MTU {u})")),
        match cfg.encap {
            Encap::Gre => "gre".to_string(),
            Encap::Udp => format!("udp port {}", cfg.udp_port),
        },
        receive_desc,
        cfg.key.map_or("none".into(), |k| k.to_string()),
        if cfg.csum { "on" } else { "off" },
        if cfg.seq { "on" } else { "off" },
        offload_desc,
    );
    if let Some(l) = metrics {
        let at = serve_metrics(l, &shared, cfg, &block.to_string(), offload_desc);
        log::info!("metrics at http://{at}/metrics");
    }
    if !cfg.configure {
        log::info!(
            "--no-configure: leaving address, MTU and link state of {} alone",
            cfg.tun
        );
    }

    let stats = StatsFile {
        path: stats_file,
        shared: &shared,
        tun: &cfg.tun,
        receive: receive_mode,
    };
    stats.write();
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
            stats.write();
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
            stats.write();
            last_stats = Instant::now();
        }
        if stats_interval > 0 && last_log.elapsed() >= Duration::from_secs(stats_interval) {
            let (_, tx_drop) = crate::procfs::kernel_if_drops(&cfg.tun).unwrap_or_default();
            log::info!(
                "stats: {}; kernel dropped {tx_drop} packets queued for the workers",
                aggregate(&shared).summary()
            );
            last_log = Instant::now();
        }
    }
    stats.write();
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
    stats.write();
    log::info!(
        "final counters after {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        aggregate(&shared).summary()
    );
    Ok(exit)
}

/// One line when the IPv6 overlay is off: info for `--overlay6 none`, a
/// warning when the host decided.
fn log_overlay6_off(cfg: &Config) {
    match &cfg.overlay6_off {
        None => {}
        Some(Overlay6Off::ByOption) => log::info!("IPv6 overlay off (--overlay6 none): IPv4 only"),
        Some(Overlay6Off::Host(why)) => {
            log::warn!("IPv6 overlay off: {why}; forwarding IPv4 only")
        }
    }
}

/// `--datapath`: the kernel device if the kernel datapath is chosen and set
/// up, `None` for userspace. `kernel` fails (exit 2) where `auto` logs one
/// line saying which datapath it picked and why.
fn choose_kernel(cfg: &Config) -> Result<Option<KernelDevice>, (u8, String)> {
    let setup = || {
        let release = kernel_mode::kernel_release();
        kernel_mode::prepare(cfg, &release)
            .and_then(|p| kernel_mode::start(cfg, &p))
            .map(|d| (d, release))
    };
    match cfg.datapath {
        DatapathName::Userspace => Ok(None),
        DatapathName::Kernel => setup()
            .map(|(d, _)| Some(d))
            .map_err(|e| (EXIT_CONFIG, format!("--datapath kernel: {e}"))),
        DatapathName::Auto => match setup() {
            Ok((d, release)) => {
                log::info!(
                    "datapath auto: kernel (Linux {release}: collect-metadata GRE device {} \
                     created, both eBPF programs loaded and attached with clsact)",
                    cfg.tun
                );
                Ok(Some(d))
            }
            Err(why) => {
                log::info!("datapath auto: userspace, because {why}");
                Ok(None)
            }
        },
    }
}

/// The kernel datapath: meshfwd stays resident as its supervisor.
fn run_kernel(
    cfg: &Config,
    dev: KernelDevice,
    stats_file: Option<&Path>,
    stats_interval: u64,
    user: Option<&str>,
    keep_privileges: bool,
    metrics_addr: Option<std::net::SocketAddr>,
) -> Result<u8, (u8, String)> {
    let block = cfg.layout.block(cfg.local).expect("local checked");
    let vm_overlay = cfg
        .layout
        .vm_overlay_addr(cfg.local)
        .expect("local checked");
    let metrics = match metrics_addr {
        Some(a) => Some(crate::metrics::bind(a).map_err(|e| (EXIT_CONFIG, e.to_string()))?),
        None => None,
    };
    // Deleting the device at exit needs CAP_NET_ADMIN, reading the counter
    // map CAP_BPF (unprivileged BPF is off by default): keep those two only.
    if !keep_privileges {
        let uid = sys::privs::drop_privileges_keeping(
            user,
            &[sys::privs::CAP_NET_ADMIN, sys::privs::CAP_BPF],
        )
        .map_err(|e| (EXIT_CONFIG, e.to_string()))?;
        log::debug!("kept CAP_NET_ADMIN and CAP_BPF only, running as uid {uid}");
    }
    let signalled = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, signalled.clone())
            .map_err(|e| (EXIT_RUNTIME, format!("install signal handler: {e}")))?;
    }
    let hangup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hangup.clone())
        .map_err(|e| (EXIT_RUNTIME, format!("install signal handler: {e}")))?;
    let shared: Arc<Vec<SharedCounters>> = Arc::new(vec![SharedCounters::default()]);
    if let Some(old) = &dev.reclaimed {
        log::warn!("removed the stale kernel-datapath device {old} of an earlier run");
    }
    if cfg.overlay6.is_some() {
        log::warn!(
            "IPv6 overlay off: the kernel datapath carries IPv4 only (use --datapath userspace \
             for dual-stack); forwarding IPv4 only"
        );
    } else {
        log_overlay6_off(cfg);
    }
    log::info!(
        "meshfwd {} on {}: datapath kernel (Linux {}, collect-metadata GRE + eBPF via clsact), \
         layout {} ({}), local VM {}, block {}, VM overlay {}, MTU {}{}, key {}, csum {}, seq {}; \
         verifier: egress {}; ingress {}",
        env!("CARGO_PKG_VERSION"),
        cfg.tun,
        kernel_mode::kernel_release(),
        cfg.layout_name,
        cfg.layout,
        cfg.local,
        block,
        vm_overlay,
        cfg.mtu,
        cfg.underlay_mtu
            .map_or(String::new(), |u| format!(" (underlay MTU {u})")),
        cfg.key.map_or("none".into(), |k| k.to_string()),
        if cfg.csum { "on" } else { "off" },
        if cfg.seq { "on" } else { "off" },
        dev.verifier.0,
        dev.verifier.1,
    );
    if let Some(l) = metrics {
        let at = serve_metrics(l, &shared, cfg, &block.to_string(), "kernel");
        log::info!("metrics at http://{at}/metrics");
    }
    let write = |_helper_failed: u64| write_stats(stats_file, &shared, &cfg.tun, "kernel");
    let out = kernel_mode::Outputs {
        shared: &shared,
        write_stats: &write,
        stats_interval,
    };
    Ok(kernel_mode::supervise(dev, &signalled, &hangup, &out))
}

/// The opened underlay of every worker, with the packets its socket
/// discarded at start (raw GRE's shard flush).
enum Underlays {
    Fanout(Vec<(FanoutGre, u64)>),
    Raw(Vec<(RawGre, u64)>),
    Udp(Vec<(UdpGre, u64)>),
}

/// The fanout receive path for `n` workers: a packet fanout group on the
/// interface that carries `--local` (one socket per worker, each with its
/// own send-only raw socket), plus the one raw GRE socket for worker 0.
/// Everything opened so far is closed again on failure (dropped).
/// The collect-metadata GRE device with drop-all programs that keeps a
/// loaded ip_gre from answering our GRE with ICMP port unreachable
/// ([`KernelDevice::create_quiet`]); only in GRE mode where ip_gre is
/// loaded. A failure is logged and changes nothing else.
const QUIET_DEV: &str = "mfgrequiet";

fn quiet_ip_gre(encap: Encap) -> Option<KernelDevice> {
    if encap != Encap::Gre || !Path::new("/sys/module/ip_gre").exists() {
        return None;
    }
    match KernelDevice::create_quiet(QUIET_DEV, &crate::ebpf::programs::drop_all()) {
        Ok(d) => {
            log::info!(
                "ip_gre is loaded: created {QUIET_DEV} (collect-metadata GRE, drop-all tc \
                 programs) so that ip_gre drops the GRE meant for meshfwd quietly instead of \
                 answering it with ICMP port unreachable; removed on exit"
            );
            Some(d)
        }
        Err(e) => {
            log::warn!(
                "ip_gre is loaded and may answer GRE meant for meshfwd with ICMP port \
                 unreachable (peers count errors.icmp_port_unreachable): {e}"
            );
            None
        }
    }
}

fn open_fanout(cfg: &Config, n: usize) -> Result<Vec<(FanoutGre, u64)>, String> {
    let ifname = cfg.underlay_if.as_deref().ok_or_else(|| {
        format!(
            "{} is not assigned to any interface, so there is no interface to receive on",
            cfg.local
        )
    })?;
    // On a loopback interface the group would see none of the GRE arriving
    // from other VMs (it all came in on other interfaces), and worker 0's
    // raw GRE socket would take everything.
    if sys::netdev::interface_is_loopback(ifname).map_err(|e| e.to_string())? {
        return Err(format!(
            "{} is on the loopback interface {ifname}, and GRE for it arrives on others",
            cfg.local
        ));
    }
    // IPsec transport mode: the group would see ESP, not GRE, and the
    // decrypted GRE re-enters on the same interface, where the raw GRE
    // socket does not take it; and an inbound policy that requires GRE to
    // be encrypted is only enforced on the raw-socket path.
    if sys::netlink::xfrm_in_use().unwrap_or(false) {
        return Err("IPsec (xfrm) states or policies exist in this network namespace".into());
    }
    let ifindex = sys::netdev::interface_index(ifname).map_err(|e| e.to_string())?;
    let (stray, flushed) = sys::raw::RawGreSocket::open_stray(cfg.local, ifindex, SOCK_RCVBUF)
        .map_err(|e| e.to_string())?;
    let mut stray = Some(stray);
    // Ring frames hold the largest packet the underlay interface carries;
    // larger ones (reassembled fragments) come through the socket queue.
    let max_packet = cfg.underlay_mtu.unwrap_or(1500) as usize;
    let mut group = None;
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let (rx, id, drained) =
            sys::packet::PacketSocket::open(ifindex, cfg.local, group, SOCK_RCVBUF, max_packet)
                .map_err(|e| format!("{e} (interface {ifname}, socket {} of {n})", i + 1))?;
        group = Some(id);
        let tx = sys::raw::RawSender::open(cfg.local, SOCK_SNDBUF).map_err(|e| e.to_string())?;
        let flushed = drained + if i == 0 { flushed } else { 0 };
        v.push((FanoutGre::new(rx, tx, stray.take()), flushed));
    }
    Ok(v)
}

/// What every worker gets, whatever its underlay.
struct Spawn<'a> {
    tun_name: &'a str,
    dp: &'a Datapath,
    shared: &'a Arc<Vec<SharedCounters>>,
    stop: &'a Arc<AtomicBool>,
    cpus: &'a [Option<core_affinity::CoreId>],
    offload: bool,
    uso: bool,
    done: &'a crossbeam_channel::Sender<(usize, Result<(), String>)>,
}

type Started = (Vec<mio::Waker>, Vec<std::thread::JoinHandle<()>>);

impl Spawn<'_> {
    /// One worker thread per TUN queue and underlay; worker 0 also gets the
    /// other encapsulation's socket.
    fn all<U: Underlay + 'static>(
        &self,
        queues: Vec<tun_rs::SyncDevice>,
        underlays: Vec<(U, u64)>,
        mut other: Option<OtherEncap>,
    ) -> Result<Started, (u8, String)> {
        let mut wakers = Vec::with_capacity(underlays.len());
        let mut handles = Vec::with_capacity(underlays.len());
        for (i, (tun, (underlay, flushed))) in queues.into_iter().zip(underlays).enumerate() {
            let poll = mio::Poll::new().map_err(|e| (EXIT_RUNTIME, format!("create poll: {e}")))?;
            let waker = mio::Waker::new(poll.registry(), WAKE)
                .map_err(|e| (EXIT_RUNTIME, format!("create waker: {e}")))?;
            wakers.push(waker);
            let w = Worker {
                id: i,
                tun_name: self.tun_name.to_string(),
                tun: TunQueue {
                    owner: Box::new(tun),
                    vnet: self.offload,
                    uso: self.uso,
                },
                underlay,
                other: if i == 0 { other.take() } else { None },
                dp: self.dp.clone(),
                poll,
                shared: self.shared.clone(),
                stop: self.stop.clone(),
                cpu: self.cpus[i],
                flushed,
            };
            let tx = self.done.clone();
            let h = std::thread::Builder::new()
                .name(format!("meshfwd-w{i}"))
                .spawn(move || {
                    let r = w.run();
                    let _ = tx.send((i, r));
                })
                .map_err(|e| (EXIT_RUNTIME, format!("spawn worker {i}: {e}")))?;
            handles.push(h);
        }
        Ok((wakers, handles))
    }
}

/// Starts the metrics listener `l` for these workers' counters; returns the
/// address it listens on (for the log).
fn serve_metrics(
    l: std::net::TcpListener,
    shared: &Arc<Vec<SharedCounters>>,
    cfg: &Config,
    block: &str,
    offload: &str,
) -> String {
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
            offload: offload.to_string(),
        },
    );
    at
}

/// Atomically replaces the stats file (write to a temporary, then rename).
/// The last kernel drop counters seen for the TUN, kept so the final snapshot
/// still has them after the device disappears with its last queue.
static LAST_KERNEL_DROPS: std::sync::Mutex<Option<(u64, u64)>> = std::sync::Mutex::new(None);

/// The stats file and what it reports besides the counters.
struct StatsFile<'a> {
    path: Option<&'a Path>,
    shared: &'a [SharedCounters],
    tun: &'a str,
    /// How underlay packets are received: "fanout", "shard" or "udp".
    receive: &'static str,
}

impl StatsFile<'_> {
    fn write(&self) {
        write_stats(self.path, self.shared, self.tun, self.receive)
    }
}

fn write_stats(path: Option<&Path>, shared: &[SharedCounters], tun: &str, receive: &str) {
    let Some(path) = path else { return };
    let mut v = aggregate(shared).to_json(shared.len());
    v["receive"] = receive.into();
    // Which worker handled what: with a fanout group each received packet
    // is counted by exactly one worker, by flow.
    v["per_worker"] = shared
        .iter()
        .map(|w| {
            let c = w.snapshot();
            serde_json::json!({
                "rx_packets": c.rx_packets,
                "tun_tx_packets": c.tun_tx_packets,
                "tun_rx_packets": c.tun_rx_packets,
                "tx_packets": c.tx_packets,
            })
        })
        .collect::<Vec<_>>()
        .into();
    let drops = {
        let mut last = LAST_KERNEL_DROPS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(now) = crate::procfs::kernel_if_drops(tun) {
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
