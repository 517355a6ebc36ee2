//! The `--metrics` HTTP listener: in, at most [`MAX_REQUEST`] bytes of
//! request head per connection, parsed by [`parse_request`]; out, one answer
//! (the exposition from [`super::render`], or an error status) and a close.
//! The limits and why they are what they are: see [`super`].

use super::{render, Identity};
use crate::counters::SharedCounters;
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
            // A read timeout: the loop asks for the time left, and ends with
            // TimedOut once there is none.
            Err(e) if waits(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

/// An interrupted or timed-out read or write: try again with the time left.
fn waits(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Writes all of `data`, each write waiting only for what is left before
/// `deadline`.
fn write_by(s: &mut TcpStream, mut data: &[u8], deadline: Instant) -> io::Result<()> {
    while !data.is_empty() {
        s.set_write_timeout(Some(left(deadline)?))?;
        match s.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => data = &data[k..],
            Err(e) if waits(&e) => {}
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
mod tests;
