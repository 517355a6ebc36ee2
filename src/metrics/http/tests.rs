//! The listener on loopback (limits shortened), the parser by example and
//! by property, and the exposition format.

use super::*;
use crate::counters::Counters;
use crate::datapath::DropReason;
use crate::metrics::render;
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
        r.contains("Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"),
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
    let (n, _) = read_request(&mut src, &mut buf, Instant::now() + Duration::from_secs(5)).unwrap();
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
