//! Prometheus / OpenMetrics endpoint: `GET /metrics` on `--metrics ADDR:PORT`.
//!
//! Workers never see this module: on each scrape the collector reads the
//! per-worker published counters ([`SharedCounters`]) and encodes them with
//! prometheus-client. The listener is a single thread serving one connection at
//! a time with short timeouts — a metrics port, not a web server.

use crate::counters::{IoError, SharedCounters};
use crate::datapath::DropReason;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

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
        if let Some((rx, tx)) = crate::runtime::kernel_if_drops(&self.id.tun) {
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

/// Binds the listener (before privileges are dropped, so low ports work).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("--metrics {addr}: bind: {e}")))
}

/// Serves `/metrics` forever on its own thread.
pub fn serve(listener: TcpListener, workers: Arc<Vec<SharedCounters>>, id: Identity) {
    let spawned = std::thread::Builder::new()
        .name("meshfwd-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => {
                        if let Err(e) = handle(s, &workers, &id) {
                            log::debug!("metrics connection: {e}");
                        }
                    }
                    Err(e) => log::debug!("metrics accept: {e}"),
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("metrics: cannot start listener thread: {e}");
    }
}

fn handle(s: TcpStream, workers: &Arc<Vec<SharedCounters>>, id: &Identity) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    // Drain the request headers (bounded), then answer.
    let mut hdr = String::new();
    for _ in 0..100 {
        hdr.clear();
        if r.read_line(&mut hdr)? == 0 || hdr == "\r\n" || hdr == "\n" {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut s = s;
    let (status, ctype, body) =
        if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
            (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                render(workers, id),
            )
        } else if method == "GET" && path == "/" {
            (
                "200 OK",
                "text/plain; charset=utf-8",
                "meshfwd: metrics at /metrics\n".to_string(),
            )
        } else {
            (
                "404 Not Found",
                "text/plain; charset=utf-8",
                "not found; try /metrics\n".to_string(),
            )
        };
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::Counters;

    #[test]
    fn renders_counters_with_reason_labels() {
        let w = Arc::new(vec![SharedCounters::default(), SharedCounters::default()]);
        let mut c = Counters {
            tx_packets: 5,
            ..Default::default()
        };
        c.drop(DropReason::SpoofedSource);
        w[1].publish(&c);
        let id = Identity {
            tun: "tun-none-x".into(),
            layout: "wide".into(),
            overlay: "240.0.0.0/4".into(),
            underlay: "192.168.0.0/16".into(),
            local: "192.168.16.32".into(),
            block: "241.2.0.0/20".into(),
            key: false,
            offload: "off".into(),
        };
        let text = render(&w, &id);
        assert!(
            text.contains("meshfwd_underlay_sent_packets_total{worker=\"1\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("meshfwd_drops_total{reason=\"spoofed_source\",worker=\"1\"} 1"),
            "{text}"
        );
        assert!(text.contains("meshfwd_drops_total{reason=\"key_mismatch\",worker=\"0\"} 0"));
        assert!(
            text.contains("meshfwd_layout_info{tun=\"tun-none-x\",layout=\"wide\""),
            "{text}"
        );
        assert!(text.contains("meshfwd_build_info{version="));
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn serves_http_on_loopback() {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let w = Arc::new(vec![SharedCounters::default()]);
        let id = Identity {
            tun: "t".into(),
            layout: "wide".into(),
            overlay: String::new(),
            underlay: String::new(),
            local: String::new(),
            block: String::new(),
            key: false,
            offload: String::new(),
        };
        serve(l, w, id);
        let get = |path: &str| {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut out = String::new();
            std::io::Read::read_to_string(&mut s, &mut out).unwrap();
            out
        };
        let r = get("/metrics");
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        assert!(r.contains("meshfwd_workers 1"), "{r}");
        assert!(get("/nope").starts_with("HTTP/1.1 404"));
    }
}
