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
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest request head (request line + headers + blank line) read, in bytes.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Time a connection may take, from accept to close, reading and writing.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(5);
/// Connections served at once; more are answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 8;
/// After answering: how long to discard what the client still sends before
/// closing (a close with unread input resets, and the client may lose the
/// answer). Never past [`CONNECTION_DEADLINE`].
pub const LINGER: Duration = Duration::from_secs(1);

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

/// Binds the listener (before privileges are dropped, so low ports work).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("--metrics {addr}: bind: {e}")))
}

/// Serves `/metrics` forever on its own thread (see the module doc for the
/// limits).
pub fn serve(listener: TcpListener, workers: Arc<Vec<SharedCounters>>, id: Identity) {
    serve_with(listener, workers, id, Limits::default());
}

/// The limits of [`serve`], smaller in tests.
#[derive(Debug, Clone, Copy)]
struct Limits {
    deadline: Duration,
    linger: Duration,
    max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: CONNECTION_DEADLINE,
            linger: LINGER,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// One connection slot, given back when the connection thread ends (or when
/// it could not be started: the closure owning it is dropped).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn serve_with(
    listener: TcpListener,
    workers: Arc<Vec<SharedCounters>>,
    id: Identity,
    limits: Limits,
) {
    let id = Arc::new(id);
    let active = Arc::new(AtomicUsize::new(0));
    let spawned = std::thread::Builder::new()
        .name("meshfwd-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let s = match conn {
                    Ok(s) => s,
                    Err(e) => {
                        // EMFILE and the like repeat at once: do not spin.
                        log::debug!("metrics accept: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                };
                if active.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
                    active.fetch_sub(1, Ordering::AcqRel);
                    log::debug!(
                        "metrics: {} connections busy, answering 503",
                        limits.max_connections
                    );
                    refuse_busy(s);
                    continue;
                }
                let slot = Slot(active.clone());
                let (workers, id) = (workers.clone(), id.clone());
                let started = std::thread::Builder::new()
                    .name("meshfwd-scrape".into())
                    .spawn(move || {
                        let _slot = slot;
                        if let Err(e) = handle(s, &workers, &id, limits) {
                            log::debug!("metrics connection: {e}");
                        }
                    });
                if let Err(e) = started {
                    log::debug!("metrics: cannot start a connection thread: {e}");
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("metrics: cannot start listener thread: {e}");
    }
}

/// All slots busy: a 503 if the socket takes it right now (a fresh socket's
/// send buffer is empty, so it does), then close. Never blocks the accept loop.
fn refuse_busy(s: TcpStream) {
    let _ = s.set_nonblocking(true);
    // Whatever request already arrived is discarded first, so the close is a
    // FIN rather than a reset that could destroy the 503.
    let mut junk = [0u8; 1024];
    let _ = (&s).read(&mut junk);
    let body = "busy; try again\n";
    let _ = write!(
        &s,
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.shutdown(Shutdown::Write);
}

/// What [`parse_request`] found in the start of a connection's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse<'a> {
    /// No complete request head yet (and under [`MAX_REQUEST`]): read more.
    Incomplete,
    /// A syntactically valid request head; method and request target.
    Request { method: &'a str, target: &'a str },
    /// [`MAX_REQUEST`] bytes without the end of the request head: 431.
    TooLarge,
    /// Not an HTTP request head: 400.
    Bad,
}

/// Parses the request head at the start of `buf`, of which only the first
/// [`MAX_REQUEST`] bytes are looked at. `eof`: the client sent all it will,
/// so a request line (and headers) without the final blank line is taken as
/// complete, as the old reader did (`printf 'GET /metrics' | nc`).
///
/// Pure, allocation-free and monotone: once it answers anything but
/// `Incomplete` for a prefix (with `eof` false), appending bytes never changes
/// the answer, so a reader can stop at the first definite answer. Lines end in
/// LF or CRLF; a CR elsewhere, or any other control byte but HT, is `Bad`.
pub fn parse_request(buf: &[u8], eof: bool) -> Parse<'_> {
    let window = &buf[..buf.len().min(MAX_REQUEST)];
    let mut request: Option<(&str, &str)> = None;
    let mut rest = window;
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        rest = &rest[nl + 1..];
        match request {
            None => match request_line(line) {
                Some(r) => request = Some(r),
                None => return Parse::Bad,
            },
            Some((method, target)) if line.is_empty() => {
                return Parse::Request { method, target };
            }
            Some(_) if !header_line(line) => return Parse::Bad,
            Some(_) => {}
        }
    }
    // `rest` is a partial line: reject it now if no ending can make it valid.
    let partial = rest.strip_suffix(b"\r").unwrap_or(rest);
    let partial_ok = if request.is_none() {
        partial.iter().all(|&b| request_line_byte(b))
    } else {
        partial.iter().all(|&b| header_byte(b))
    };
    if !partial_ok {
        return Parse::Bad;
    }
    if buf.len() >= MAX_REQUEST {
        return Parse::TooLarge;
    }
    if !eof {
        return Parse::Incomplete;
    }
    match request {
        None => match request_line(rest) {
            Some((method, target)) => Parse::Request { method, target },
            None => Parse::Bad,
        },
        Some((method, target)) if rest.is_empty() || header_line(rest) => {
            Parse::Request { method, target }
        }
        Some(_) => Parse::Bad,
    }
}

/// RFC 9110 token characters (methods, header names).
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn request_line_byte(b: u8) -> bool {
    b.is_ascii_graphic() || b == b' ' || b == b'\t'
}

fn header_byte(b: u8) -> bool {
    !(b.is_ascii_control() && b != b'\t')
}

/// `METHOD TARGET [HTTP/x.y]`, any run of spaces or tabs between (as the old
/// whitespace split allowed).
fn request_line(line: &[u8]) -> Option<(&str, &str)> {
    if !line.iter().all(|&b| request_line_byte(b)) {
        return None;
    }
    let mut parts = line
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|p| !p.is_empty());
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next());
    if parts.next().is_some() || method.len() > 32 || !method.iter().all(|&b| tchar(b)) {
        return None;
    }
    if let Some(v) = version {
        let n = v.strip_prefix(b"HTTP/")?;
        if n.is_empty() || n.len() > 8 || !n.iter().all(|&b| b.is_ascii_digit() || b == b'.') {
            return None;
        }
    }
    // All ASCII, checked above.
    Some((
        std::str::from_utf8(method).ok()?,
        std::str::from_utf8(target).ok()?,
    ))
}

/// `Name: value`; no obsolete line folding.
fn header_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    colon > 0 && line[..colon].iter().all(|&b| tchar(b)) && line.iter().all(|&b| header_byte(b))
}

/// Time left before `deadline`, or a `TimedOut` error when none is.
fn left(deadline: Instant) -> io::Result<Duration> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "connection deadline passed",
        ))
    } else {
        Ok(d)
    }
}

/// A byte source whose next read can be bounded in time.
trait TimedRead: Read {
    fn read_timeout(&mut self, d: Duration) -> io::Result<()>;
}

impl TimedRead for TcpStream {
    fn read_timeout(&mut self, d: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(d))
    }
}

/// Reads into `buf` (so never more than [`MAX_REQUEST`] bytes) until
/// [`parse_request`] has a definite answer or the client closes; each read
/// waits only for what is left before `deadline`. Returns the bytes read and
/// whether the client closed; `TimedOut` once the deadline has passed.
fn read_request<R: TimedRead>(
    r: &mut R,
    buf: &mut [u8; MAX_REQUEST],
    deadline: Instant,
) -> io::Result<(usize, bool)> {
    let mut n = 0;
    loop {
        if n == buf.len() || parse_request(&buf[..n], false) != Parse::Incomplete {
            return Ok((n, false));
        }
        r.read_timeout(left(deadline)?)?;
        match r.read(&mut buf[n..]) {
            Ok(0) => return Ok((n, true)),
            Ok(k) => n += k,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) =>
            {
                // A read timeout: the loop asks for the time left, and ends
                // with TimedOut once there is none.
            }
            Err(e) => return Err(e),
        }
    }
}

/// Writes all of `data`, each write waiting only for what is left before
/// `deadline`.
fn write_by(s: &mut TcpStream, mut data: &[u8], deadline: Instant) -> io::Result<()> {
    while !data.is_empty() {
        s.set_write_timeout(Some(left(deadline)?))?;
        match s.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => data = &data[k..],
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The answer to a request head. The metrics body is rendered only for a
/// metrics request.
struct Answer {
    status: &'static str,
    /// Extra header lines, each ending in CRLF.
    extra: &'static str,
    content_type: &'static str,
    body: String,
    /// HEAD: headers only (Content-Length still that of the body).
    head_only: bool,
}

fn respond(parsed: Parse<'_>, workers: &Arc<Vec<SharedCounters>>, id: &Identity) -> Answer {
    let text = |status, extra, body: &str, head_only| Answer {
        status,
        extra,
        content_type: "text/plain; charset=utf-8",
        body: body.to_string(),
        head_only,
    };
    let (method, target) = match parsed {
        Parse::Request { method, target } => (method, target),
        Parse::TooLarge => {
            return text(
                "431 Request Header Fields Too Large",
                "",
                "request head too large\n",
                false,
            )
        }
        Parse::Bad | Parse::Incomplete => {
            return text("400 Bad Request", "", "bad request\n", false)
        }
    };
    let head_only = method == "HEAD";
    let metrics = target == "/metrics" || target.starts_with("/metrics?");
    if !metrics && target != "/" {
        return text("404 Not Found", "", "not found; try /metrics\n", head_only);
    }
    if method != "GET" && !head_only {
        return text(
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            "method not allowed; use GET\n",
            false,
        );
    }
    if metrics {
        Answer {
            status: "200 OK",
            extra: "",
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body: render(workers, id),
            head_only,
        }
    } else {
        text("200 OK", "", "meshfwd: metrics at /metrics\n", head_only)
    }
}

fn handle(
    mut s: TcpStream,
    workers: &Arc<Vec<SharedCounters>>,
    id: &Identity,
    limits: Limits,
) -> io::Result<()> {
    let deadline = Instant::now() + limits.deadline;
    let mut buf = [0u8; MAX_REQUEST];
    let (n, eof) = read_request(&mut s, &mut buf, deadline)?;
    if n == 0 && eof {
        return Ok(()); // connected and closed: nothing to answer
    }
    let a = respond(parse_request(&buf[..n], eof), workers, id);
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
        a.status,
        a.content_type,
        a.body.len(),
        a.extra
    );
    write_by(&mut s, head.as_bytes(), deadline)?;
    if !a.head_only {
        write_by(&mut s, a.body.as_bytes(), deadline)?;
    }
    s.shutdown(Shutdown::Write)?;
    // Lingering close: discard input until the client closes, for at most
    // `linger` and never past the deadline.
    let until = deadline.min(Instant::now() + limits.linger);
    while let Ok(d) = left(until) {
        s.set_read_timeout(Some(d))?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::Counters;
    use proptest::prelude::*;

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

    /// Sends `req` as is, then reads the whole answer.
    fn exchange(addr: SocketAddr, req: &[u8], close_write: bool) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(req).unwrap();
        if close_write {
            s.shutdown(Shutdown::Write).unwrap();
        }
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn serves_http_on_loopback() {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        serve(
            l,
            Arc::new(vec![SharedCounters::default()]),
            test_identity(),
        );
        let get = |path: &str| {
            exchange(
                addr,
                format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
                false,
            )
        };
        let r = get("/metrics");
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        assert!(
            r.contains(
                "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"
            ),
            "{r}"
        );
        assert!(r.contains("meshfwd_workers 1"), "{r}");
        assert!(r.trim_end().ends_with("# EOF"), "{r}");
        assert!(get("/metrics?name[]=x").contains("meshfwd_workers 1"));
        assert!(get("/").ends_with("\r\n\r\nmeshfwd: metrics at /metrics\n"));
        assert!(get("/nope").starts_with("HTTP/1.1 404"));
        assert!(get("/metricsx").starts_with("HTTP/1.1 404"));
        // Bare LF line ends, no version (as before).
        let r = exchange(addr, b"GET /metrics\n\n", false);
        assert!(r.contains("meshfwd_workers 1"), "{r}");
        // Request line only, then EOF (as before: `printf 'GET /metrics' | nc`).
        let r = exchange(addr, b"GET /metrics", true);
        assert!(r.contains("meshfwd_workers 1"), "{r}");
        let r = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n", false);
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 200 OK") && body.is_empty(),
            "{r}"
        );
        let r = exchange(
            addr,
            b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(
            r.starts_with("HTTP/1.1 405 ") && r.contains("\r\nAllow: GET, HEAD\r\n"),
            "{r}"
        );
        let r = exchange(addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", false);
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        let r = exchange(
            addr,
            b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
            false,
        );
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        // Connect and close without a byte: no answer, and the server goes on.
        drop(TcpStream::connect(addr).unwrap());
        assert!(get("/metrics").starts_with("HTTP/1.1 200 OK"));
    }

    fn test_identity() -> Identity {
        Identity {
            tun: "t".into(),
            layout: "wide".into(),
            overlay: String::new(),
            underlay: String::new(),
            local: String::new(),
            block: String::new(),
            key: false,
            offload: String::new(),
        }
    }

    /// Reads from `s` until the end of the response head, EOF, an error or
    /// `within` has passed; returns what arrived.
    fn read_head(s: &mut TcpStream, within: Duration) -> String {
        use std::io::Read;
        let end = std::time::Instant::now() + within;
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match s.read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&b[..n]),
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    /// Issue #19 defect 2: `GET /` then 1 MiB with no newline must be answered
    /// 431 promptly (at the 8 KiB cap), not buffered until a timeout.
    #[test]
    fn oversized_request_gets_431() {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        serve(
            l,
            Arc::new(vec![SharedCounters::default()]),
            test_identity(),
        );
        let mut s = TcpStream::connect(addr).unwrap();
        let mut w = s.try_clone().unwrap();
        w.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
        let t0 = std::time::Instant::now();
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(b"GET /");
            let chunk = [b'a'; 64 * 1024];
            for _ in 0..16 {
                if w.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        let head = read_head(&mut s, Duration::from_secs(3));
        let took = t0.elapsed();
        assert!(
            head.starts_with("HTTP/1.1 431 "),
            "got {head:?} after {took:?}"
        );
        assert!(took < Duration::from_secs(1), "431 took {took:?}");
        drop(s);
        writer.join().unwrap();
    }

    /// Issue #19 defect 3: clients trickling a byte every 100 ms must not stop
    /// a concurrent scrape from succeeding within a second.
    #[test]
    fn slow_clients_do_not_block_scrapes() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        serve(
            l,
            Arc::new(vec![SharedCounters::default()]),
            test_identity(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let slow: Vec<_> = (0..3)
            .map(|_| {
                let mut c = TcpStream::connect(addr).unwrap();
                c.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let _ = c.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ");
                    while !stop.load(Ordering::Relaxed) {
                        if c.write_all(b"a").is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        for _ in 0..3 {
            let t0 = std::time::Instant::now();
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let head = read_head(&mut s, Duration::from_secs(1));
            let took = t0.elapsed();
            assert!(
                head.starts_with("HTTP/1.1 200 OK"),
                "got {head:?} after {took:?}"
            );
            assert!(took < Duration::from_secs(1), "scrape took {took:?}");
        }
        stop.store(true, Ordering::Relaxed);
        for t in slow {
            t.join().unwrap();
        }
    }

    #[test]
    fn parses_examples() {
        use Parse::*;
        let req = |method, target| Request { method, target };
        fn p(b: &[u8]) -> Parse<'_> {
            parse_request(b, false)
        }
        assert_eq!(p(b""), Incomplete);
        assert_eq!(p(b"GET /metrics HTTP/1.1\r\n"), Incomplete);
        assert_eq!(p(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r"), Incomplete);
        assert_eq!(
            p(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            req("GET", "/metrics")
        );
        assert_eq!(
            p(b"GET /metrics HTTP/1.1\r\n\r\nrest ignored\x00"),
            req("GET", "/metrics")
        );
        assert_eq!(p(b"GET  /a?b=c\tHTTP/1.0\n\n"), req("GET", "/a?b=c"));
        assert_eq!(p(b"GET /\r\nX-Obs: caf\xc3\xa9\t\r\n\r\n"), req("GET", "/"));
        assert_eq!(parse_request(b"GET /", true), req("GET", "/"));
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: x", true),
            req("GET", "/")
        );
        assert_eq!(parse_request(b"", true), Bad);
        assert_eq!(parse_request(b"GET", true), Bad);
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nHost", true), Bad);
        // Bad as soon as it cannot become valid, complete or not.
        assert_eq!(p(b"\r\n"), Bad);
        assert_eq!(p(b"GET /\x00"), Bad);
        assert_eq!(p(b"GET /\rX"), Bad);
        assert_eq!(p(b"GET /caf\xc3\xa9 HTTP/1.1\r\n"), Bad);
        assert_eq!(p(b"GET / HTTP/1.1 extra\r\n"), Bad);
        assert_eq!(p(b"GET / FTP/1.1\r\n"), Bad);
        assert_eq!(p(b"G(T / HTTP/1.1\r\n"), Bad);
        assert_eq!(p(b"GET / HTTP/1.1\r\n folded: x\r\n"), Bad);
        assert_eq!(p(b"GET / HTTP/1.1\r\n: x\r\n"), Bad);
        assert_eq!(p(b"GET / HTTP/1.1\r\nX: \x1b[31m"), Bad);
        // The cap: exactly MAX_REQUEST bytes ending in the blank line is fine.
        let mut fits = b"GET / HTTP/1.1\r\nX: ".to_vec();
        fits.resize(MAX_REQUEST - 4, b'a');
        fits.extend_from_slice(b"\r\n\r\n");
        assert_eq!(p(&fits), req("GET", "/"));
        let mut over = fits.clone();
        over.insert(20, b'a');
        assert_eq!(p(&over), TooLarge);
        assert_eq!(p(&over[..MAX_REQUEST]), TooLarge);
        assert_eq!(parse_request(&over[..MAX_REQUEST], true), TooLarge);
    }

    /// A source of `prefix` then endless `fill` bytes, counting what it gave;
    /// `delay` per read, reads of at most `chunk` bytes.
    struct Source<'a> {
        prefix: &'a [u8],
        fill: u8,
        given: usize,
        chunk: usize,
        delay: Duration,
    }

    impl Read for Source<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(self.delay);
            let k = out.len().min(self.chunk);
            for (i, b) in out[..k].iter_mut().enumerate() {
                *b = self
                    .prefix
                    .get(self.given + i)
                    .copied()
                    .unwrap_or(self.fill);
            }
            self.given += k;
            Ok(k)
        }
    }

    impl TimedRead for Source<'_> {
        fn read_timeout(&mut self, d: Duration) -> io::Result<()> {
            assert!(!d.is_zero());
            Ok(())
        }
    }

    /// The reader stops at the cap: `GET /` and then endless bytes without a
    /// newline is TooLarge after exactly MAX_REQUEST bytes taken from the
    /// source, in any read size.
    #[test]
    fn reader_takes_at_most_the_cap() {
        for chunk in [1, 7, 4096, 1 << 20] {
            let mut src = Source {
                prefix: b"GET /",
                fill: b'a',
                given: 0,
                chunk,
                delay: Duration::ZERO,
            };
            let mut buf = [0u8; MAX_REQUEST];
            let deadline = Instant::now() + Duration::from_secs(5);
            let (n, eof) = read_request(&mut src, &mut buf, deadline).unwrap();
            assert_eq!((n, eof, src.given), (MAX_REQUEST, false, MAX_REQUEST));
            assert_eq!(parse_request(&buf[..n], eof), Parse::TooLarge);
        }
        // Garbage stops it at once.
        let mut src = Source {
            prefix: b"\x16\x03\x01",
            fill: 0,
            given: 0,
            chunk: 1,
            delay: Duration::ZERO,
        };
        let mut buf = [0u8; MAX_REQUEST];
        let (n, _) =
            read_request(&mut src, &mut buf, Instant::now() + Duration::from_secs(5)).unwrap();
        assert_eq!((n, parse_request(&buf[..n], false)), (1, Parse::Bad));
    }

    /// The deadline is per connection, not per read: a source giving a byte
    /// every 10 ms (each read well within any per-read timeout) is cut off
    /// when the connection's time is up.
    #[test]
    fn reader_deadline_is_per_connection() {
        let mut src = Source {
            prefix: b"GET / HTTP/1.1\r\nX: ",
            fill: b'a',
            given: 0,
            chunk: 1,
            delay: Duration::from_millis(10),
        };
        let mut buf = [0u8; MAX_REQUEST];
        let t0 = Instant::now();
        let e = read_request(&mut src, &mut buf, t0 + Duration::from_millis(200)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(
            t0.elapsed() < Duration::from_millis(400),
            "{:?}",
            t0.elapsed()
        );
    }

    /// The same on a socket: a client trickling bytes is closed at the
    /// deadline without an answer, and takes its slot with it.
    #[test]
    fn trickling_client_is_closed_at_the_deadline() {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let limits = Limits {
            deadline: Duration::from_millis(300),
            linger: Duration::from_millis(100),
            max_connections: 1,
        };
        serve_with(
            l,
            Arc::new(vec![SharedCounters::default()]),
            test_identity(),
            limits,
        );
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ").unwrap();
        let mut r = c.try_clone().unwrap();
        r.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let t0 = Instant::now();
        let closed_after = loop {
            let _ = c.write_all(b"a");
            match r.read(&mut [0u8; 64]) {
                Ok(0) => break t0.elapsed(),
                Ok(n) => panic!("answered {n} bytes to an incomplete request"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break t0.elapsed(),
            }
            assert!(t0.elapsed() < Duration::from_secs(3), "never closed");
        };
        assert!(closed_after < Duration::from_secs(1), "{closed_after:?}");
        // Its slot is free again (max_connections is 1).
        std::thread::sleep(Duration::from_millis(50));
        let r = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n", false);
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
    }

    /// Beyond max_connections a scrape is refused at once with 503, not
    /// queued behind the held connections.
    #[test]
    fn busy_server_answers_503_at_once() {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let limits = Limits {
            deadline: Duration::from_secs(5),
            linger: Duration::from_millis(100),
            max_connections: 2,
        };
        serve_with(
            l,
            Arc::new(vec![SharedCounters::default()]),
            test_identity(),
            limits,
        );
        let held: Vec<_> = (0..2)
            .map(|_| {
                let mut c = TcpStream::connect(addr).unwrap();
                c.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
                c
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let t0 = Instant::now();
        let r = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n", false);
        assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "{:?}",
            t0.elapsed()
        );
        drop(held);
        std::thread::sleep(Duration::from_millis(100));
        let r = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n", false);
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
    }

    fn tchar_string(max: usize) -> impl Strategy<Value = String> {
        proptest::string::string_regex(&format!("[A-Za-z0-9!#$%&'*+.^_`|~-]{{1,{max}}}")).unwrap()
    }

    /// A well-formed request head, its method and target.
    fn arb_request() -> impl Strategy<Value = (Vec<u8>, String, String)> {
        (
            tchar_string(12),
            "/[!-~]{0,200}",
            prop::option::of("HTTP/[0-9]\\.[0-9]"),
            prop::collection::vec((tchar_string(20), "[ \t!-~\u{80}-\u{ff}]{0,100}"), 0..20),
            any::<bool>(),
        )
            .prop_map(|(method, target, version, headers, crlf)| {
                let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
                let mut b = format!("{method} {target}").into_bytes();
                if let Some(v) = version {
                    b.extend_from_slice(format!(" {v}").as_bytes());
                }
                b.extend_from_slice(eol);
                for (name, value) in headers {
                    b.extend_from_slice(name.as_bytes());
                    b.push(b':');
                    // Values as bytes: obs-text (0x80..=0xff) is allowed.
                    b.extend(value.chars().map(|c| c as u32 as u8));
                    b.extend_from_slice(eol);
                }
                b.extend_from_slice(eol);
                (b, method, target)
            })
    }

    /// Bytes around the cap: a request line, arbitrary bytes, then filler up
    /// to MAX_REQUEST - 1 ..= MAX_REQUEST + 1 bytes.
    fn near_the_cap() -> impl Strategy<Value = Vec<u8>> {
        (prop::collection::vec(any::<u8>(), 0..32), 0usize..3).prop_map(|(mut v, k)| {
            let mut b = b"GET /metrics HTTP/1.1\r\n".to_vec();
            b.append(&mut v);
            b.resize(MAX_REQUEST - 1 + k, b'x');
            b
        })
    }

    /// Arbitrary bytes, rich in the ones the parser looks at.
    fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            Just(b'\r'),
            Just(b'\n'),
            Just(b':'),
            Just(b' '),
            Just(b'a'),
            Just(b'/'),
            any::<u8>()
        ];
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::vec(byte, 0..64),
            near_the_cap(),
        ]
    }

    fn control_byte() -> impl Strategy<Value = u8> {
        prop_oneof![0u8..9, 11u8..13, 14u8..32, Just(127u8)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Well-formed heads parse to their method and target, whatever
        /// follows, and every strict prefix is Incomplete (so the reader never
        /// stops early).
        #[test]
        fn parses_well_formed_heads(
            (req, method, target) in arb_request(),
            tail in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            for k in 0..req.len() {
                prop_assert_eq!(parse_request(&req[..k], false), Parse::Incomplete, "prefix {}", k);
            }
            let mut full = req.clone();
            full.extend_from_slice(&tail);
            let want = Parse::Request { method: &method, target: &target };
            prop_assert_eq!(parse_request(&req, false), want);
            prop_assert_eq!(parse_request(&full, false), want);
            prop_assert_eq!(parse_request(&full, true), want);
        }

        /// A control byte (not HT, CR or LF) put anywhere in a head, up to and
        /// including the start of the final blank line, makes it Bad.
        #[test]
        fn control_bytes_are_bad(
            (req, _, _) in arb_request(),
            at in any::<prop::sample::Index>(),
            c in control_byte(),
        ) {
            let blank_line = req.len() - if req.ends_with(b"\r\n\r\n") { 2 } else { 1 };
            let mut bad = req.clone();
            bad.insert(at.index(blank_line + 1), c);
            prop_assert_eq!(parse_request(&bad, false), Parse::Bad);
            prop_assert_eq!(parse_request(&bad, true), Parse::Bad);
        }

        /// Any bytes: no panic; only the first MAX_REQUEST bytes matter; a
        /// definite answer for a prefix is the answer for the whole (what the
        /// reader relies on); a request found is made of allowed bytes.
        #[test]
        fn parser_is_bounded_and_monotone(
            data in arb_bytes(),
            cut in any::<prop::sample::Index>(),
            eof in any::<bool>(),
        ) {
            let whole = parse_request(&data, eof);
            prop_assert_eq!(whole, parse_request(&data[..data.len().min(MAX_REQUEST)], eof));
            let part = parse_request(&data[..cut.index(data.len() + 1)], false);
            if part != Parse::Incomplete {
                prop_assert_eq!(part, parse_request(&data, false));
            }
            if data.len() >= MAX_REQUEST {
                prop_assert_ne!(whole, Parse::Incomplete);
            }
            if let Parse::Request { method, target } = whole {
                prop_assert!(!method.is_empty() && method.bytes().all(tchar));
                prop_assert!(!target.is_empty() && target.bytes().all(|b| b.is_ascii_graphic()));
            }
        }

        /// The reader, fed a head (padded to either side of the cap) in
        /// arbitrary pieces, ends with the answer for the whole head, having
        /// taken no more than the cap from the source.
        #[test]
        fn reader_agrees_with_parser_in_any_pieces(
            (req, method, target) in arb_request(),
            pad in 0usize..2 * MAX_REQUEST,
            chunk in 1usize..512,
        ) {
            // An X-Pad header of `pad` bytes before the final blank line.
            let blank_line = req.len() - if req.ends_with(b"\r\n\r\n") { 2 } else { 1 };
            let mut head = req[..blank_line].to_vec();
            head.extend_from_slice(b"X-Pad: ");
            head.resize(head.len() + pad, b'p');
            head.extend_from_slice(&req[blank_line - (req.len() - blank_line)..]);
            let mut src = Source { prefix: &head, fill: b'z', given: 0, chunk, delay: Duration::ZERO };
            let mut buf = [0u8; MAX_REQUEST];
            let deadline = Instant::now() + Duration::from_secs(5);
            let (n, eof) = read_request(&mut src, &mut buf, deadline).unwrap();
            prop_assert!(!eof && n <= MAX_REQUEST && src.given == n);
            let want = if head.len() <= MAX_REQUEST {
                Parse::Request { method: &method, target: &target }
            } else {
                Parse::TooLarge
            };
            prop_assert_eq!(parse_request(&buf[..n], eof), want);
        }
    }
}
