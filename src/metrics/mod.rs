//! Prometheus / OpenMetrics endpoint: `GET /metrics` on `--metrics ADDR:PORT`.
//!
//! What flows through it: in, at most [`MAX_REQUEST`] bytes of HTTP request
//! head per connection (request line and headers; anything after the blank
//! line is never read as a request); out, one response and a close. On a
//! scrape the collector reads the per-worker published counters
//! ([`SharedCounters`], plain atomic loads) and encodes them with
//! prometheus-client ([`render`]). Workers never see this module, take no lock
//! it takes and never wait for it, so a slow or hostile client can cost the
//! metrics port its answers but cannot slow forwarding.
//!
//! Limits (a metrics port, not a web server):
//! * request head: [`MAX_REQUEST`] (8 KiB) into a fixed stack buffer, no
//!   allocation that grows with the input; past it, `431 Request Header Fields
//!   Too Large`. Malformed request line or header: `400`. Routes: `GET` or
//!   `HEAD` of `/metrics` (query string allowed) and `/`; other methods on them
//!   `405`, other paths `404`.
//! * time: one deadline per connection, [`CONNECTION_DEADLINE`] (5 s) from
//!   accept, covering reading the request and writing the answer (each read
//!   and write waits at most for what is left of it); then the connection is
//!   closed. After an answer the server stops writing and discards input for
//!   at most [`LINGER`] (1 s, and never past the deadline), so a client still
//!   sending (e.g. an oversized request) reads its 431 instead of a reset.
//! * concurrency: one accept thread that never reads from a client, plus at
//!   most [`MAX_CONNECTIONS`] (8) connection threads. A connection beyond that
//!   gets a best-effort non-blocking `503` and is closed at once. So a client
//!   holding one connection open costs one slot for at most the deadline,
//!   and a scrape is refused (503) only if all slots are held.
//!
//! Why std threads and a hand-written parser rather than an HTTP crate: two
//! routes, no bodies, no keep-alive; a bounded pure parser ([`parse_request`])
//! is about a hundred lines that can be fuzzed and property-tested; an HTTP
//! server crate (with its own runtime or thread pool) would be more code to
//! audit than this module.

use crate::counters::{IoError, SharedCounters};
use crate::datapath::DropReason;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::Arc;

mod http;
pub use http::{
    bind, parse_request, serve, Parse, CONNECTION_DEADLINE, LINGER, MAX_CONNECTIONS, MAX_REQUEST,
};

/// Static facts about this instance, exported as info metrics.
#[derive(Debug, Clone)]
pub struct Identity {
    pub tun: String,
    pub layout: String,
    pub overlay: String,
    pub underlay: String,
    pub local: String,
    pub block: String,
    pub key: bool,
    pub offload: String,
}

#[derive(Debug)]
struct MeshCollector {
    workers: Arc<Vec<SharedCounters>>,
    id: Identity,
}

fn counter_family<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl Iterator<Item = (Vec<(&'a str, String)>, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for MeshCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snaps: Vec<_> = self.workers.iter().map(|w| w.snapshot()).collect();
        let w = |i: usize| i.to_string();
        type Field = fn(&crate::counters::Counters) -> u64;
        let per_worker: [(&str, &str, Field); 11] = [
            (
                "meshfwd_tun_read_packets",
                "Packets read from the TUN (after offload splitting).",
                |c| c.tun_rx_packets,
            ),
            ("meshfwd_tun_read_bytes", "Bytes read from the TUN.", |c| {
                c.tun_rx_bytes
            }),
            (
                "meshfwd_underlay_sent_packets",
                "GRE packets sent to peer VMs.",
                |c| c.tx_packets,
            ),
            (
                "meshfwd_underlay_sent_bytes",
                "Bytes of GRE packets sent, outer headers included.",
                |c| c.tx_bytes,
            ),
            (
                "meshfwd_underlay_received_packets",
                "GRE packets received from the underlay, before checks.",
                |c| c.rx_packets,
            ),
            (
                "meshfwd_underlay_received_bytes",
                "Bytes of GRE packets received.",
                |c| c.rx_bytes,
            ),
            (
                "meshfwd_tun_written_packets",
                "Inner packets delivered to the TUN.",
                |c| c.tun_tx_packets,
            ),
            (
                "meshfwd_tun_written_bytes",
                "Bytes of inner packets delivered to the TUN.",
                |c| c.tun_tx_bytes,
            ),
            (
                "meshfwd_icmp_frag_needed_sent",
                "ICMP fragmentation-needed messages sent to inner sources (PMTU).",
                |c| c.icmp_tx,
            ),
            (
                "meshfwd_icmp_rate_limited",
                "ICMP replies suppressed by the rate limit.",
                |c| c.icmp_rate_limited,
            ),
            (
                "meshfwd_fragments_sent",
                "GRE packets carrying fragments of too-big non-DF inner packets.",
                |c| c.tx_fragmented,
            ),
        ];
        for (name, help, f) in per_worker {
            counter_family(
                &mut enc,
                name,
                help,
                snaps
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (vec![("worker", w(i))], f(c))),
            )?;
        }
        counter_family(
            &mut enc,
            "meshfwd_drops",
            "Packets dropped, by reason (see docs/OPERATIONS.md).",
            snaps.iter().enumerate().flat_map(|(i, c)| {
                DropReason::ALL.iter().map(move |r| {
                    (
                        vec![("reason", r.name().to_string()), ("worker", i.to_string())],
                        c.drops[r.index()],
                    )
                })
            }),
        )?;
        counter_family(
            &mut enc,
            "meshfwd_errors",
            "Send/receive/TUN errors and kernel-side socket overflow, by kind.",
            snaps.iter().enumerate().flat_map(|(i, c)| {
                IoError::ALL.iter().map(move |e| {
                    (
                        vec![("kind", e.name().to_string()), ("worker", i.to_string())],
                        c.errors[*e as usize],
                    )
                })
            }),
        )?;
        if let Some((rx, tx)) = crate::procfs::kernel_if_drops(&self.id.tun) {
            counter_family(
                &mut enc,
                "meshfwd_tun_kernel_dropped",
                "Packets the kernel dropped at the TUN (tx: queued for meshfwd but not read in time).",
                [(vec![("direction", "rx".to_string())], rx), (vec![("direction", "tx".to_string())], tx)]
                    .into_iter(),
            )?;
        }
        let workers = ConstGauge::new(self.workers.len() as i64);
        workers.encode(enc.encode_descriptor(
            "meshfwd_workers",
            "Forwarding worker threads.",
            None,
            workers.metric_type(),
        )?)?;
        let build = Info::new(vec![("version", env!("CARGO_PKG_VERSION").to_string())]);
        build.encode(enc.encode_descriptor(
            "meshfwd_build",
            "Build information.",
            None,
            build.metric_type(),
        )?)?;
        let id = &self.id;
        let layout = Info::new(vec![
            ("tun", id.tun.clone()),
            ("layout", id.layout.clone()),
            ("overlay", id.overlay.clone()),
            ("underlay", id.underlay.clone()),
            ("local", id.local.clone()),
            ("block", id.block.clone()),
            ("key", if id.key { "set" } else { "none" }.to_string()),
            ("offload", id.offload.clone()),
        ]);
        layout.encode(enc.encode_descriptor(
            "meshfwd_layout",
            "The active address layout and this VM's place in it.",
            None,
            layout.metric_type(),
        )?)?;
        Ok(())
    }
}

/// Renders the whole exposition (OpenMetrics text, ending in `# EOF`).
pub fn render(workers: &Arc<Vec<SharedCounters>>, id: &Identity) -> String {
    let mut reg = Registry::default();
    reg.register_collector(Box::new(MeshCollector {
        workers: workers.clone(),
        id: id.clone(),
    }));
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
        out = "# encoding failed\n".into();
    }
    out
}
