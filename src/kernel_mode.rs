//! `--datapath kernel|auto` (issue #15): choosing the datapath, and the
//! supervisor of the kernel one.
//!
//! [`prepare`] turns the configuration and the running kernel's version into
//! the two programs (or the reason there are none); [`start`] creates the
//! device ([`crate::sys::gredev`]). [`supervise`] is what meshfwd does while
//! the kernel forwards: publish counters (drops from the per-CPU map, packets
//! and bytes from the device) under the same names as the userspace
//! datapath, watch for the device being deleted, and remove the device and
//! programs on SIGINT/SIGTERM.

use crate::config::Config;
use crate::counters::{Counters, SharedCounters};
use crate::datapath::{DropReason, Encap};
use crate::ebpf::programs::{self, KernelOpts, Params, COUNTER_SLOTS, HELPER_FAILED_SLOT};
use crate::ebpf::Insn;
use crate::sys::gredev::{DeviceSpec, KernelDevice};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The two programs for this configuration on this kernel.
pub struct Programs {
    pub egress: Vec<Insn>,
    pub ingress: Vec<Insn>,
    pub release: String,
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Why the kernel datapath cannot serve this configuration on kernel
/// `release`, before anything is touched; or its programs.
pub fn prepare(cfg: &Config, release: &str) -> Result<Programs, String> {
    if cfg.encap == Encap::Udp {
        return Err("GRE-in-UDP (--encap udp) has no kernel datapath".into());
    }
    let opts = KernelOpts::for_release(release).ok_or_else(|| {
        format!("Linux {release}: the programs need 5.1 or later (32-bit BPF jumps)")
    })?;
    let p = Params {
        layout: cfg.layout,
        local: cfg.local,
        key: cfg.key,
        csum: cfg.csum,
        seq: cfg.seq,
    };
    let egress = programs::egress(&p, &opts).map_err(|e| format!("Linux {release}: {e}"))?;
    let ingress = programs::ingress(&p, &opts).map_err(|e| format!("Linux {release}: {e}"))?;
    Ok(Programs {
        egress,
        ingress,
        release: release.to_string(),
    })
}

/// Creates the device with both programs attached (nothing left behind on
/// error).
pub fn start(cfg: &Config, progs: &Programs) -> Result<KernelDevice, String> {
    let vm_overlay = cfg
        .layout
        .vm_overlay_addr(cfg.local)
        .ok_or_else(|| format!("{} has no overlay block", cfg.local))?;
    let spec = DeviceSpec {
        name: &cfg.tun,
        mtu: u32::from(cfg.mtu),
        addr: Some(vm_overlay),
        prefix: cfg.layout.overlay().prefix(),
        alias: crate::sys::gredev::ALIAS,
        csum: cfg.csum,
        egress: &progs.egress,
        ingress: &progs.ingress,
        slots: COUNTER_SLOTS,
    };
    KernelDevice::create(&spec).map_err(|e| e.to_string())
}

/// The userspace datapath's counters, filled from the kernel's: the
/// device's transmit counters are what left through GRE (`tx_*`, and
/// `tun_rx_*`: what the programs let through), its receive counters what
/// arrived (`rx_*`; `tun_tx_*` = arrived minus what the ingress program
/// dropped, packets only). Drops come from the map, by the same reasons.
pub fn counters(dev: &KernelDevice, last: &mut Counters, helper_failed: &mut u64) -> Counters {
    let mut c = last.clone();
    if let Ok(slots) = dev.drops() {
        for (i, v) in slots.iter().enumerate() {
            if i < DropReason::COUNT {
                c.drops[i] = *v;
            } else if i as u32 == HELPER_FAILED_SLOT {
                *helper_failed = *v;
            }
        }
    }
    if let Some(s) = dev.stats() {
        c.tx_packets = s.tx_packets;
        c.tx_bytes = s.tx_bytes;
        c.tun_rx_packets = s.tx_packets;
        c.tun_rx_bytes = s.tx_bytes;
        c.rx_packets = s.rx_packets;
        c.rx_bytes = s.rx_bytes;
        let ingress_drops: u64 = INGRESS_ONLY.iter().map(|r| c.drops[r.index()]).sum();
        c.tun_tx_packets = s.rx_packets.saturating_sub(ingress_drops);
        c.tun_tx_bytes = s.rx_bytes;
    }
    *last = c.clone();
    c
}

/// Reasons only the ingress program counts (dst_reserved is counted on
/// both sides and left out: `tun_tx_packets` may overcount by those).
const INGRESS_ONLY: [DropReason; 8] = [
    DropReason::OuterSrcNotUnderlay,
    DropReason::GreNotIpv4,
    DropReason::KeyMismatch,
    DropReason::GreChecksumMissing,
    DropReason::InnerMalformed,
    DropReason::InnerSrcNotOverlay,
    DropReason::SpoofedSource,
    DropReason::InnerDstNotLocal,
];

/// What the supervisor writes and serves.
pub struct Outputs<'a> {
    pub shared: &'a Arc<Vec<SharedCounters>>,
    pub write_stats: &'a dyn Fn(u64),
    pub stats_interval: u64,
}

/// Runs until SIGINT/SIGTERM (exit 0) or the device disappears (exit 1);
/// removes the device either way.
pub fn supervise(
    mut dev: KernelDevice,
    signalled: &AtomicBool,
    hangup: &AtomicBool,
    out: &Outputs<'_>,
) -> u8 {
    let started = Instant::now();
    let mut last = Counters::default();
    let mut helper_failed = 0u64;
    let refresh = |dev: &KernelDevice, last: &mut Counters, hf: &mut u64| {
        let c = counters(dev, last, hf);
        out.shared[0].publish(&c);
        (out.write_stats)(*hf);
        c
    };
    refresh(&dev, &mut last, &mut helper_failed);
    let mut last_refresh = Instant::now();
    let mut last_log = Instant::now();
    let mut exit = 0u8;
    loop {
        if signalled.load(Ordering::Relaxed) {
            log::info!("signal received, removing {} and its programs", dev.name());
            break;
        }
        if hangup.swap(false, Ordering::Relaxed) {
            let c = refresh(&dev, &mut last, &mut helper_failed);
            log::info!(
                "SIGHUP: nothing to reload, the kernel still forwards; after {:.1} s: {}",
                started.elapsed().as_secs_f64(),
                c.summary()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
        if last_refresh.elapsed() >= Duration::from_secs(1) {
            if !dev.exists() {
                log::error!(
                    "{} was deleted by someone else; the kernel datapath is gone",
                    dev.name()
                );
                exit = 1;
                break;
            }
            refresh(&dev, &mut last, &mut helper_failed);
            last_refresh = Instant::now();
        }
        if out.stats_interval > 0 && last_log.elapsed() >= Duration::from_secs(out.stats_interval) {
            log::info!("stats: {}", last.summary());
            last_log = Instant::now();
        }
    }
    let c = refresh(&dev, &mut last, &mut helper_failed);
    if let Err(e) = dev.remove() {
        log::error!("delete {}: {e}", dev.name());
        exit = 1;
    } else {
        log::info!(
            "removed {} (qdisc, filters and programs with it)",
            dev.name()
        );
    }
    log::info!(
        "final counters after {:.1} s: {}{}",
        started.elapsed().as_secs_f64(),
        c.summary(),
        if helper_failed > 0 {
            format!("; tunnel-key helper failures {helper_failed}")
        } else {
            String::new()
        }
    );
    exit
}
