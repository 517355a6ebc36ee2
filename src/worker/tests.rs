//! The worker's real loop without root, the way wireguard-go tests its device
//! against `tuntest`/`bindtest`: a unix datagram pair stands in for the TUN
//! (one write, one packet, virtio-net headers included) and [`Fake`] for the
//! underlay (messages recorded in memory, inbound datagrams queued by the
//! test, failures injected). The worker's own `egress_batch`,
//! `ingress_batch` and `run` move the packets.

use super::*;
use crate::datapath::Encap;
use crate::gro::testutil::{tcp, DST, SRC};
use crate::gro::Piece;
use crate::layout::Layout;
use crate::sys::batch::Transmit;
use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;
use underlay::{Message, RxBatch};

/// The VMs of the shared test packets' addresses (wide layout): SRC
/// 240.1.2.10 lives on VM 192.168.0.16, DST 240.3.4.20 on VM 192.168.0.48
/// (`meshfwd addr`).
const VM_SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 16);
const VM_DST: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 48);

#[derive(Default)]
struct Wire {
    /// What the worker sent: (destination, bytes, GSO segment size).
    sent: Vec<(SocketAddrV4, Vec<u8>, u16)>,
    /// What the worker will receive (whole outer packets, raw GRE).
    inbound: VecDeque<Vec<u8>>,
    /// What the worker will receive on its stray socket.
    stray: VecDeque<Vec<u8>>,
    /// Errors the next sends return, one per call.
    fail: VecDeque<i32>,
}

/// An in-memory raw-GRE underlay.
struct Fake {
    wire: Arc<Mutex<Wire>>,
    /// Poll registration only: the test writes a byte to wake ingress.
    wake: UnixDatagram,
    /// The stray socket's registration, when the test asked for one.
    stray: Option<UnixDatagram>,
    items: Vec<Transmit>,
    rx: RxBatch,
}

impl Fake {
    fn new() -> (Fake, Arc<Mutex<Wire>>, UnixDatagram) {
        let wire = Arc::new(Mutex::new(Wire::default()));
        let (a, b) = UnixDatagram::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let f = Fake {
            wire: wire.clone(),
            wake: a,
            stray: None,
            items: Vec::new(),
            rx: RxBatch::new(8, 65536),
        };
        (f, wire, b)
    }
}

impl Underlay for Fake {
    fn fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }
    fn has_room(&self) -> bool {
        self.items.len() + egress::MAX_SEGMENTS <= 256
    }
    fn push(&mut self, _arena: &[u8], s: Segment) {
        self.items.push(Transmit {
            start: s.start as u32,
            len: s.len as u32,
            dst: SocketAddrV4::new(s.peer, 0),
            segment: 0,
            tos: None,
        });
    }
    fn queued(&self) -> &[Transmit] {
        &self.items
    }
    fn clear(&mut self) {
        self.items.clear();
    }
    fn send(&mut self, arena: &[u8], from: usize) -> io::Result<usize> {
        let mut w = self.wire.lock().unwrap();
        if let Some(e) = w.fail.pop_front() {
            return Err(io::Error::from_raw_os_error(e));
        }
        // Like sendmmsg: at most 64 per call.
        let n = (self.items.len() - from).min(64);
        for t in &self.items[from..from + n] {
            let (s, l) = (t.start as usize, t.len as usize);
            w.sent.push((t.dst, arena[s..s + l].to_vec(), t.segment));
        }
        Ok(n)
    }
    fn send_one(&mut self, buf: &[u8], start: usize, len: usize, peer: Ipv4Addr) -> io::Result<()> {
        let mut w = self.wire.lock().unwrap();
        if let Some(e) = w.fail.pop_front() {
            return Err(io::Error::from_raw_os_error(e));
        }
        w.sent.push((
            SocketAddrV4::new(peer, 0),
            buf[start..start + len].to_vec(),
            0,
        ));
        Ok(())
    }
    fn rx(&mut self) -> &mut RxBatch {
        &mut self.rx
    }
    fn recv(&mut self) -> io::Result<usize> {
        self.fill(false)
    }
    fn stray_fd(&self) -> Option<RawFd> {
        self.stray.as_ref().map(|s| s.as_raw_fd())
    }
    fn recv_stray(&mut self) -> io::Result<usize> {
        self.fill(true)
    }
    fn decapsulate(dp: &Datapath, m: Message<'_>, c: &mut Counters, g: &mut Coalescer) {
        <RawGre as Underlay>::decapsulate(dp, m, c, g)
    }
}

impl Fake {
    /// Moves queued inbound packets (of the stray socket with `stray`) into
    /// the receive batch, like `recvmmsg`.
    fn fill(&mut self, stray: bool) -> io::Result<usize> {
        let mut drain = [0u8; 16];
        let wake = if stray {
            self.stray.as_ref()
        } else {
            Some(&self.wake)
        };
        while wake.is_some_and(|w| w.recv(&mut drain).is_ok()) {}
        self.rx.allocate();
        let mut w = self.wire.lock().unwrap();
        let queue = if stray { &mut w.stray } else { &mut w.inbound };
        let mut n = 0;
        while n < self.rx.capacity() {
            let Some(p) = queue.pop_front() else {
                break;
            };
            self.rx.bufs[n][..p.len()].copy_from_slice(&p);
            self.rx.meta[n] = crate::sys::batch::RecvMeta {
                len: p.len(),
                segment: p.len(),
                ..Default::default()
            };
            n += 1;
        }
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
}

/// A worker on VM `local` with a fake TUN (offload on) and the fake underlay;
/// returns it with the test's ends of the TUN and the wire.
fn worker(local: Ipv4Addr) -> (Worker<Fake>, UnixDatagram, Arc<Mutex<Wire>>, UnixDatagram) {
    let (tun, tun_peer) = UnixDatagram::pair().unwrap();
    tun.set_nonblocking(true).unwrap();
    tun_peer
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (fake, wire, wake) = Fake::new();
    let w = Worker {
        id: 0,
        tun_name: "faketun".into(),
        tun: TunQueue {
            owner: Box::new(tun),
            vnet: true,
            uso: false,
        },
        underlay: fake,
        other: None,
        dp: Datapath::new(Layout::wide(), local, None),
        poll: Poll::new().unwrap(),
        shared: Arc::new(vec![SharedCounters::default()]),
        stop: Arc::new(AtomicBool::new(false)),
        cpu: None,
        flushed: 0,
    };
    (w, tun_peer, wire, wake)
}

fn state(w: &Worker<Fake>) -> State {
    State::new(&w.tun)
}

/// A virtio-net header (10 bytes) for a TCP/IPv4 super-packet of MSS `mss`.
fn vnet_tso(mss: u16) -> [u8; 10] {
    let mut h = [0u8; 10];
    h[0] = 1; // NEEDS_CSUM
    h[1] = 1; // GSO_TCPV4
    h[2..4].copy_from_slice(&40u16.to_le_bytes());
    h[4..6].copy_from_slice(&mss.to_le_bytes());
    h[6..8].copy_from_slice(&20u16.to_le_bytes());
    h[8..10].copy_from_slice(&16u16.to_le_bytes());
    h
}

/// Ten consecutive 1,000-byte segments of one TCP flow, SRC -> DST.
fn ten_segments(size: usize) -> Vec<Vec<u8>> {
    (0..10u32)
        .map(|i| tcp(i * size as u32, 0x10, &vec![i as u8; size], &[]))
        .collect()
}

#[test]
fn egress_turns_a_tso_super_packet_into_encapsulated_segments() {
    let (mut w, tun_peer, wire, _wake) = worker(VM_SRC);
    let mut st = state(&w);
    // One 10,000-byte TCP super-packet as the kernel hands it to a TUN with TSO.
    let payload: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let mut sp = vnet_tso(1000).to_vec();
    sp.extend_from_slice(&tcp(0, 0x18, &payload, &[]));
    tun_peer.send(&sp).unwrap();
    assert!(w.egress_batch(&mut st).unwrap(), "TUN drained");
    let sent = std::mem::take(&mut wire.lock().unwrap().sent);
    assert_eq!(sent.len(), 10);
    assert_eq!((st.c.tun_rx_packets, st.c.tx_packets), (10, 10));
    assert_eq!(st.c.tx_bytes, 10 * (24 + 40 + 1000));
    // Each is a whole GRE packet the peer VM accepts, in order.
    let peer = Datapath::new(Layout::wide(), VM_DST, None);
    for (i, (dst, bytes, seg)) in sent.into_iter().enumerate() {
        assert_eq!((*dst.ip(), seg), (VM_DST, 0));
        let mut b = bytes.clone();
        let d = peer
            .decapsulate(&mut b, bytes.len())
            .expect("peer accepts it");
        let inner = &b[d.start..d.start + d.len];
        assert_eq!(inner.len(), 40 + 1000);
        assert_eq!(&inner[40..], &payload[i * 1000..(i + 1) * 1000]);
        assert!(
            crate::wire::checksum::verify(&inner[..20]),
            "inner IPv4 header checksum"
        );
    }
}

#[test]
fn ingress_coalesces_segments_into_one_tun_write() {
    let (mut w, tun_peer, wire, _wake) = worker(VM_DST);
    let mut st = state(&w);
    let sender = Datapath::new(Layout::wide(), VM_SRC, None);
    let segs = ten_segments(1000);
    for s in &segs {
        let mut b = vec![0u8; HEADROOM + s.len()];
        b[HEADROOM..].copy_from_slice(s);
        let e = sender.encapsulate(&mut b, HEADROOM, s.len()).unwrap();
        wire.lock()
            .unwrap()
            .inbound
            .push_back(b[e.start..e.start + e.len].to_vec());
    }
    // Eight per receive batch: two batches, drained after the second.
    assert!(!w.ingress_batch(&mut st, false).unwrap());
    assert!(w.ingress_batch(&mut st, false).unwrap());
    let mut buf = vec![0u8; 70_000];
    let mut writes = Vec::new();
    tun_peer.set_nonblocking(true).unwrap();
    while let Ok(n) = tun_peer.recv(&mut buf) {
        writes.push(buf[..n].to_vec());
    }
    assert_eq!(writes.len(), 2, "one coalesced write per receive batch");
    assert_eq!(writes[0].len(), 10 + 40 + 8000);
    assert_eq!(writes[1].len(), 10 + 40 + 2000);
    assert_eq!(writes[0][1], 1, "GSO_TCPV4 in the virtio-net header");
    assert_eq!((st.c.rx_packets, st.c.tun_tx_packets), (10, 10));
    assert_eq!(st.c.drops.iter().sum::<u64>(), 0);
}

#[test]
fn drops_are_counted_by_reason_in_both_directions() {
    let (mut w, tun_peer, wire, _wake) = worker(VM_DST);
    let mut st = state(&w);
    // Ingress: SRC's packet sent by a third VM (spoofing), and garbage.
    let s = tcp(0, 0x10, &[1; 100], &[]);
    let mut b = vec![0u8; HEADROOM + s.len()];
    b[HEADROOM..].copy_from_slice(&s);
    // Built as VM_SRC would, then the outer source rewritten to the third VM.
    let e = Datapath::new(Layout::wide(), VM_SRC, None)
        .encapsulate(&mut b, HEADROOM, s.len())
        .unwrap();
    let mut spoofed = b[e.start..e.start + e.len].to_vec();
    spoofed[12..16].copy_from_slice(&Ipv4Addr::new(192, 168, 9, 9).octets());
    spoofed[10..12].fill(0);
    let c = crate::wire::checksum::checksum(&spoofed[..20]);
    spoofed[10..12].copy_from_slice(&c.to_be_bytes());
    {
        let mut wl = wire.lock().unwrap();
        wl.inbound.push_back(spoofed);
        wl.inbound.push_back(vec![0x45, 0, 0, 10]);
    }
    w.ingress_batch(&mut st, false).unwrap();
    assert_eq!(st.c.rx_packets, 2);
    assert_eq!(st.c.drops[DropReason::SpoofedSource.index()], 1);
    assert_eq!(st.c.drops[DropReason::TooShort.index()], 1);
    assert_eq!(st.c.tun_tx_packets, 0);
    // Egress: a packet to this VM's own block, not sent anywhere.
    let mut own = s.clone();
    own[12..16].copy_from_slice(&DST);
    own[16..20].copy_from_slice(&[240, 3, 0, 77]); // in DST's block, no such container here
    own[10..12].fill(0);
    let c = crate::wire::checksum::checksum(&own[..20]);
    own[10..12].copy_from_slice(&c.to_be_bytes());
    let mut plain = vec![0u8; 10];
    plain.extend_from_slice(&own);
    tun_peer.send(&plain).unwrap();
    w.egress_batch(&mut st).unwrap();
    assert_eq!(st.c.drops[DropReason::DstLocalVm.index()], 1);
    assert!(wire.lock().unwrap().sent.is_empty());
}

#[test]
fn a_stale_send_error_is_retried_and_a_real_one_counted() {
    let (mut w, tun_peer, wire, _wake) = worker(VM_SRC);
    let mut st = state(&w);
    let one = |seq| {
        let mut p = vec![0u8; 10];
        p.extend_from_slice(&tcp(seq, 0x10, &[3; 200], &[]));
        p
    };
    // A pending ICMP error reported by the first send: retried, nothing lost.
    wire.lock().unwrap().fail.push_back(libc::ECONNREFUSED);
    tun_peer.send(&one(0)).unwrap();
    w.egress_batch(&mut st).unwrap();
    assert_eq!(wire.lock().unwrap().sent.len(), 1);
    assert_eq!(st.c.errors.iter().sum::<u64>(), 0);
    // The same error twice: that packet is counted and dropped.
    {
        let mut wl = wire.lock().unwrap();
        wl.fail.extend([libc::EHOSTUNREACH, libc::EHOSTUNREACH]);
    }
    tun_peer.send(&one(200)).unwrap();
    tun_peer.send(&one(400)).unwrap();
    w.egress_batch(&mut st).unwrap();
    assert_eq!(st.c.errors[IoError::SendUnreachable as usize], 1);
    assert_eq!(
        wire.lock().unwrap().sent.len(),
        2,
        "the second packet still went out"
    );
    assert_eq!(st.c.tx_packets, 2);
}

/// A GRE packet from VM_DST to SRC's container, as VM_DST sends it.
fn reply_from_dst() -> Vec<u8> {
    let mut r = tcp(1, 0x10, &[6; 300], &[]);
    r[12..16].copy_from_slice(&DST);
    r[16..20].copy_from_slice(&SRC);
    r[10..12].fill(0);
    let c = crate::wire::checksum::checksum(&r[..20]);
    r[10..12].copy_from_slice(&c.to_be_bytes());
    let mut b = vec![0u8; HEADROOM + r.len()];
    b[HEADROOM..].copy_from_slice(&r);
    let e = Datapath::new(Layout::wide(), VM_DST, None)
        .encapsulate(&mut b, HEADROOM, r.len())
        .unwrap();
    b[e.start..e.start + e.len].to_vec()
}

/// Worker 0 of a fanout group also reads its stray socket (GRE that arrived
/// on another interface): the poll loop wakes on it alone and delivers what
/// it holds through the same checks, and both sources drain.
#[test]
fn the_poll_loop_reads_the_stray_socket_too() {
    let (mut w, tun_peer, wire, _wake) = worker(VM_SRC);
    let (a, stray_wake) = UnixDatagram::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    w.underlay.stray = Some(a);
    let stop = w.stop.clone();
    let shared = w.shared.clone();
    let waker = Arc::new(mio::Waker::new(w.poll.registry(), WAKE).unwrap());
    let h = std::thread::spawn(move || w.run());
    let mut spoofed = reply_from_dst();
    spoofed[12..16].copy_from_slice(&Ipv4Addr::new(192, 168, 9, 9).octets());
    wire.lock()
        .unwrap()
        .stray
        .extend([reply_from_dst(), spoofed]);
    stray_wake.send(&[1]).unwrap();
    let mut buf = vec![0u8; 2048];
    let n = tun_peer
        .recv(&mut buf)
        .expect("delivered from the stray socket");
    assert_eq!(n, 10 + 340);
    stop.store(true, Ordering::Relaxed);
    waker.wake().unwrap();
    assert_eq!(h.join().unwrap(), Ok(()));
    let c = shared[0].snapshot();
    assert_eq!((c.rx_packets, c.tun_tx_packets), (2, 1));
    assert_eq!(c.drops[DropReason::SpoofedSource.index()], 1);
    assert!(wire.lock().unwrap().stray.is_empty());
}

#[test]
fn the_poll_loop_forwards_both_ways_and_stops() {
    let (w, tun_peer, wire, wake) = worker(VM_SRC);
    let stop = w.stop.clone();
    let shared = w.shared.clone();
    let waker = Arc::new(mio::Waker::new(w.poll.registry(), WAKE).unwrap());
    let h = std::thread::spawn(move || w.run());
    let mut p = vec![0u8; 10];
    p.extend_from_slice(&tcp(0, 0x10, &[5; 300], &[]));
    tun_peer.send(&p).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while wire.lock().unwrap().sent.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let sent = wire.lock().unwrap().sent.clone();
    assert_eq!(sent.len(), 1, "egress through the loop");
    // The reverse: VM_DST answers; the worker on VM_SRC delivers it.
    wire.lock().unwrap().inbound.push_back(reply_from_dst());
    wake.send(&[1]).unwrap();
    let mut buf = vec![0u8; 2048];
    let n = tun_peer.recv(&mut buf).expect("ingress through the loop");
    assert_eq!(n, 10 + 340);
    stop.store(true, Ordering::Relaxed);
    waker.wake().unwrap();
    assert_eq!(h.join().unwrap(), Ok(()));
    let c = shared[0].snapshot();
    assert_eq!((c.tx_packets, c.tun_tx_packets), (1, 1));
}

/// GRE-in-UDP groups a super-packet's segments into GSO runs (real loopback
/// sockets, nothing sent): full segments to one peer form one message, a
/// short last segment ends it, a new peer starts another.
#[test]
fn udp_underlay_groups_segments_into_gso_runs() {
    use crate::sys::udp::UdpGreSocket;
    let lo = Ipv4Addr::LOCALHOST;
    let sock = UdpGreSocket::open(lo, 0, 0, 0).unwrap();
    if !sock.gso() {
        return; // a kernel without UDP GSO sends datagram by datagram
    }
    let dp = Datapath::new(Layout::wide(), VM_SRC, None).with_options(Encap::Udp, false, false);
    let hl = dp.header_len();
    let mut u = UdpGre::new(sock, 4754, Vec::new(), hl);
    let arena = vec![0x45u8; 10_000];
    let stride = 1000;
    let seg = |i: usize, len: usize, peer, first| Segment {
        start: i * stride,
        len,
        peer,
        tos: 0,
        stride,
        first,
    };
    for i in 0..4 {
        u.push(&arena, seg(i, stride, VM_DST, i == 0));
    }
    u.push(&arena, seg(4, 600, VM_DST, false));
    u.push(&arena, seg(5, stride, lo, true));
    // Another super-packet right behind, same MSS and peer: its own message.
    u.push(&arena, seg(6, stride, lo, true));
    u.push(&arena, seg(7, stride, lo, false));
    let q = u.queued();
    assert_eq!(q.len(), 3, "{q:?}");
    assert_eq!((q[0].start, q[0].len, q[0].segment), (0, 4600, 1000));
    assert_eq!(q[0].datagrams(), 5);
    assert_eq!((q[1].start, q[1].len, *q[1].dst.ip()), (5000, 1000, lo));
    assert_eq!((q[2].start, q[2].len, q[2].segment), (6000, 2000, 1000));
    u.clear();
    assert!(u.queued().is_empty());
}

// ------------------------------------------------- TUN writes (GRO output) --

/// A datagram socket pair standing in for the TUN, with a small send buffer
/// on the writer when asked (a TUN that refuses large writes).
fn pair(sndbuf: i32) -> (UnixDatagram, UnixDatagram) {
    let (a, b) = UnixDatagram::pair().unwrap();
    crate::sys::batch::set_int(a.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, sndbuf).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (a, b)
}

/// Reads `n` datagrams on a thread (a small send buffer only drains while
/// someone reads).
fn reader(s: UnixDatagram, n: usize) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 70_000];
        while out.len() < n {
            let got = s.recv(&mut buf).expect("recv");
            out.push(buf[..got].to_vec());
        }
        out
    })
}

fn coalesced(segs: &[Vec<u8>]) -> Coalescer {
    let mut g = Coalescer::new(true, false);
    for (i, p) in segs.iter().enumerate() {
        let at = Piece {
            buf: i as u32,
            start: 0,
            len: p.len() as u32,
        };
        g.push(p, at);
    }
    g.finish();
    g
}

#[test]
fn a_merged_packet_goes_out_in_one_write() {
    let segs = ten_segments(1400);
    let g = coalesced(&segs);
    let (tx, rx) = pair(1 << 20);
    let rx = reader(rx, 1);
    let mut c = Counters::default();
    write_coalesced(tx.as_raw_fd(), &g, &segs, &mut c).unwrap();
    let got = rx.join().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].len(), tun_rs::VIRTIO_NET_HDR_LEN + 40 + 14_000);
    assert_eq!(c.tun_tx_packets, 10);
    assert_eq!(c.errors[IoError::TunWrite as usize], 0);
}

#[test]
fn a_refused_merged_packet_is_written_segment_by_segment() {
    let segs = ten_segments(1400);
    let g = coalesced(&segs);
    assert_eq!(g.writes.len(), 1);
    // A send buffer too small for the 14 KB super-packet: EMSGSIZE, like a
    // TUN that rejects the GSO form.
    let (tx, rx) = pair(4096);
    let rx = reader(rx, 10);
    let mut c = Counters::default();
    write_coalesced(tx.as_raw_fd(), &g, &segs, &mut c).unwrap();
    let got = rx.join().unwrap();
    assert_eq!(got.len(), 10, "every segment arrives");
    for (d, s) in got.iter().zip(&segs) {
        assert_eq!(
            &d[..tun_rs::VIRTIO_NET_HDR_LEN],
            &[0; tun_rs::VIRTIO_NET_HDR_LEN]
        );
        assert_eq!(&d[tun_rs::VIRTIO_NET_HDR_LEN..], &s[..], "as received");
    }
    assert_eq!(c.tun_tx_packets, 10);
    assert_eq!(c.errors[IoError::TunWrite as usize], 0);
}

#[test]
fn write_errors_are_counted_per_packet() {
    let segs: Vec<Vec<u8>> = (0..3u32)
        .map(|i| tcp(i * 100, 0x10, &[1; 100], &[]))
        .collect();
    let g = coalesced(&segs);
    let (tx, rx) = pair(1 << 20);
    drop(rx); // every write now fails with ECONNREFUSED
    let mut c = Counters::default();
    write_coalesced(tx.as_raw_fd(), &g, &segs, &mut c).unwrap();
    assert_eq!(c.errors[IoError::TunWrite as usize], 3);
    assert_eq!(c.tun_tx_packets, 0);
}

/// A GRE packet as GRE GRO hands it up: VM_SRC's three segments of one TCP
/// flow (GRE key 5 and checksum) merged into one, the inner TCP checksum
/// only the pseudo-header sum, the GRE checksum no longer matching (it was
/// the first segment's). Returns the outer packet.
fn merged_gre() -> Vec<u8> {
    let opts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]; // NOP NOP timestamps
    let mut inner = tcp(1000, 0x10, &[7; 3000], &opts);
    let l4 = (inner.len() - 20) as u16;
    let l = l4.to_be_bytes();
    let pseudo = crate::wire::checksum::sum(&[240, 1, 2, 10, 240, 3, 4, 20, 0, 6, l[0], l[1]], 0);
    inner[36..38].copy_from_slice(&crate::wire::checksum::fold(pseudo).to_be_bytes());
    let sender =
        Datapath::new(Layout::wide(), VM_SRC, Some(5)).with_options(Encap::Gre, true, false);
    let mut b = vec![0u8; HEADROOM + inner.len()];
    b[HEADROOM..].copy_from_slice(&inner);
    let e = sender.encapsulate(&mut b, HEADROOM, inner.len()).unwrap();
    let mut p = b[e.start..e.start + e.len].to_vec();
    p[24] ^= 0x5a; // the GRE checksum: the first segment's
    p
}

/// What `virtio_net_hdr_from_skb` writes for `merged_gre` received on an
/// Ethernet device: TCPV4, gso_size 1400, NEEDS_CSUM at the inner TCP
/// header (14 + 20 + GRE 12 + 20 = 66), hdr_len the linear part (a hint).
const MERGED_VNET: [u8; 10] = [1, 1, 200, 0, 0x78, 0x05, 66, 0, 16, 0];

fn ingress_fanout(p: &[u8], vnet: [u8; 10], tun_offload: bool) -> (Counters, Coalescer) {
    let dp = Datapath::new(Layout::wide(), VM_DST, Some(5)).with_options(Encap::Gre, true, false);
    let mut c = Counters::default();
    let mut g = Coalescer::new(tun_offload, false);
    let mut buf = p.to_vec();
    let meta = crate::sys::batch::RecvMeta {
        len: p.len(),
        segment: p.len(),
        vnet,
        link_len: 14,
        ..Default::default()
    };
    <fanout::FanoutGre as underlay::Underlay>::decapsulate(
        &dp,
        Message {
            buf: &mut buf,
            index: 0,
            meta,
        },
        &mut c,
        &mut g,
    );
    g.finish();
    (c, g)
}

#[test]
fn a_gro_merged_packet_goes_to_the_tun_as_one_tso_write() {
    let p = merged_gre();
    let (c, g) = ingress_fanout(&p, MERGED_VNET, true);
    assert_eq!(c.drops.iter().sum::<u64>(), 0, "{:?}", c.drops);
    assert_eq!(g.writes.len(), 1);
    let w = &g.writes[0];
    // NEEDS_CSUM, TCPV4, hdr_len 52 (IPv4 20 + TCP 32), gso_size 1400,
    // csum_start 20, csum_offset 16
    assert_eq!(w.prefix(), &[1, 1, 52, 0, 0x78, 0x05, 20, 0, 16, 0]);
    assert_eq!((w.count, w.packets, w.bytes), (1, 3, 3052));
    let piece = g.pieces[w.first as usize];
    assert_eq!(
        (piece.start, piece.len),
        (32, 3052),
        "the inner packet, in place"
    );
}

#[test]
fn a_merged_packet_without_kernel_metadata_is_not_trusted() {
    let p = merged_gre();
    // no metadata (all zeros) or DATA_VALID only: the GRE checksum is checked
    for vnet in [[0; 10], [2, 0, 0, 0, 0, 0, 0, 0, 0, 0]] {
        let (c, g) = ingress_fanout(&p, vnet, true);
        assert_eq!(c.drops[DropReason::GreChecksum.index()], 1);
        assert!(g.writes.is_empty());
    }
    // partial checksum without GSO: the GRE checksum is still checked
    let mut partial = MERGED_VNET;
    partial[1] = 0;
    let (c, _) = ingress_fanout(&p, partial, true);
    assert_eq!(c.drops[DropReason::GreChecksum.index()], 1);
}

#[test]
fn a_merged_packet_still_gets_every_check() {
    let p = merged_gre();
    // metadata pointing one byte off: refused
    let mut off = MERGED_VNET;
    off[6] = 65;
    let (c, g) = ingress_fanout(&p, off, true);
    assert_eq!(c.drops[DropReason::OffloadMalformed.index()], 1);
    assert!(g.writes.is_empty());
    // a TUN without offload cannot take it
    let (c, _) = ingress_fanout(&p, MERGED_VNET, false);
    assert_eq!(c.drops[DropReason::OffloadMalformed.index()], 1);
    // outer source of a third VM: spoofing, merged or not
    let mut spoofed = p.clone();
    spoofed[12..16].copy_from_slice(&[192, 168, 9, 9]);
    spoofed[10..12].fill(0);
    let s = crate::wire::checksum::checksum(&spoofed[..20]);
    spoofed[10..12].copy_from_slice(&s.to_be_bytes());
    let (c, _) = ingress_fanout(&spoofed, MERGED_VNET, true);
    assert_eq!(c.drops[DropReason::SpoofedSource.index()], 1);
    // wrong key
    let mut key = p.clone();
    key[31] = 6;
    let (c, _) = ingress_fanout(&key, MERGED_VNET, true);
    assert_eq!(c.drops[DropReason::KeyMismatch.index()], 1);
    // outer header checksum
    let mut bad = p.clone();
    bad[10] ^= 1;
    let (c, _) = ingress_fanout(&bad, MERGED_VNET, true);
    assert_eq!(c.drops[DropReason::BadIpChecksum.index()], 1);
}

/// A TCP/IPv6 packet (no extension headers) from container 1 of VM_SRC to
/// container 1 of VM_DST carrying `payload`; checksum field left 0 (a TSO
/// super-packet's is filled in per segment).
fn tcp6_packet(payload: &[u8]) -> Vec<u8> {
    let l6 = crate::layout6::Layout6::default();
    let (src, dst) = (
        l6.container_addr(VM_SRC, 1).unwrap(),
        l6.container_addr(VM_DST, 1).unwrap(),
    );
    let mut p = vec![0u8; 40 + 20 + payload.len()];
    p[0] = 0x6b; // version 6, Traffic Class 0xb9 over bytes 0-1
    p[1] = 0x90;
    p[4..6].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    p[6] = 6;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40..42].copy_from_slice(&40000u16.to_be_bytes());
    p[42..44].copy_from_slice(&5201u16.to_be_bytes());
    p[52] = 5 << 4;
    p[53] = 0x18;
    p[54..56].copy_from_slice(&500u16.to_be_bytes());
    p[60..].copy_from_slice(payload);
    p
}

#[test]
fn egress_splits_a_tso6_super_packet_with_the_overlay6() {
    let (mut w, tun_peer, wire, _wake) = worker(VM_SRC);
    let l6 = crate::layout6::Layout6::default();
    w.dp = w.dp.clone().with_overlay6(l6);
    let mut st = state(&w);
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    let mut h = vnet_tso(1000);
    h[1] = 4; // GSO_TCPV6
    h[2..4].copy_from_slice(&60u16.to_le_bytes()); // hdr_len
    h[6..8].copy_from_slice(&40u16.to_le_bytes()); // csum_start
    let mut sp = h.to_vec();
    sp.extend_from_slice(&tcp6_packet(&payload));
    tun_peer.send(&sp).unwrap();
    assert!(w.egress_batch(&mut st).unwrap(), "TUN drained");
    let sent = std::mem::take(&mut wire.lock().unwrap().sent);
    assert_eq!(sent.len(), 10);
    assert_eq!((st.c.tun_rx_packets, st.c.tx_packets), (10, 10));
    assert_eq!(st.c.drops.iter().sum::<u64>(), 0);
    let peer = Datapath::new(Layout::wide(), VM_DST, None).with_overlay6(l6);
    for (i, (dst, bytes, _)) in sent.into_iter().enumerate() {
        assert_eq!(*dst.ip(), VM_DST);
        assert_eq!(bytes[1], 0xb9, "outer TOS = inner Traffic Class");
        let mut b = bytes.clone();
        let d = peer
            .decapsulate(&mut b, bytes.len())
            .expect("peer accepts it");
        let inner = &b[d.start..d.start + d.len];
        assert_eq!(inner.len(), 60 + 1000);
        assert_eq!(
            u16::from_be_bytes([inner[4], inner[5]]),
            1020,
            "payload length"
        );
        assert_eq!(&inner[60..], &payload[i * 1000..(i + 1) * 1000]);
        let v = crate::wire::ipv6::Ipv6Packet::new_checked(inner).unwrap();
        assert!(
            crate::wire::ipv6::verify_upper_layer(v.src_addr(), v.dst_addr(), 6, &inner[40..]),
            "segment {i}: TCP checksum over the IPv6 pseudo-header"
        );
    }
    // A GSO read with headers only (no payload: gso_split makes no segment)
    // is counted as offload_malformed, not lost without a trace (found by
    // the egress fuzz target).
    let mut empty = h.to_vec();
    empty.extend_from_slice(&tcp6_packet(&[]));
    tun_peer.send(&empty).unwrap();
    let mut st = state(&w);
    assert!(w.egress_batch(&mut st).unwrap());
    assert_eq!(st.c.tun_rx_packets, 1);
    assert_eq!(st.c.drops[DropReason::OffloadMalformed.index()], 1);
    assert_eq!(st.c.tx_packets, 0);
    // Without the IPv6 overlay the same super-packet is refused and counted.
    w.dp = Datapath::new(Layout::wide(), VM_SRC, None);
    tun_peer.send(&sp).unwrap();
    let mut st = state(&w);
    assert!(w.egress_batch(&mut st).unwrap());
    assert_eq!(st.c.drops[DropReason::NotIpv4.index()], 1);
    assert_eq!(st.c.tx_packets, 0);
}
