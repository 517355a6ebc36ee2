//! One forwarding worker: a pinned thread with its own mio poll loop, its own
//! TUN queue, its own underlay sockets and its own buffers, written once for
//! every encapsulation. The datapath decisions come from [`Datapath`]; the
//! encapsulation's sockets sit behind [`Underlay`] (raw GRE: [`raw`],
//! GRE-in-UDP: [`udp`]); this file moves bytes between them and counts.
//!
//! Egress: one TUN read (with offload: a TCP/UDP super-packet behind a
//! virtio-net header) → [`egress::Egress`] splits it into MSS-sized segments
//! in one contiguous arena, each behind room for meshfwd's headers, and
//! `encapsulate` writes them in place → the underlay groups the segments into
//! messages (raw: one per segment; UDP: GSO runs) → one `sendmmsg` per batch.
//!
//! Ingress: the underlay's `recvmmsg` → its datagram checks
//! (`decapsulate`/`decapsulate_udp`) → each accepted inner packet, where it
//! lies, goes to [`Coalescer`], which (with offload) merges consecutive
//! TCP/UDP segments of a flow (GRO) → one `writev` per resulting packet:
//! rewritten headers, then the payloads from the receive buffers.
//!
//! Registrations are edge-triggered, so each side is drained until `WouldBlock`,
//! alternating batches so neither direction starves the other.
//!
//! Asynchronous errors: with IP_RECVERR the kernel both queues an ICMP error
//! about an earlier packet on the socket's error queue (drained and counted as
//! `icmp_*`) and sets the socket's pending error, which the next send or
//! receive call on that socket reports and clears, whatever it was doing. A
//! send or receive that fails is therefore tried once more before it is
//! counted (`send_*`, `recv`): the retry tells a stale report about some other
//! packet (often to another peer) from a failure of this one. Before this,
//! each such ICMP could cost an unrelated packet (`send_other`: ENOPROTOOPT
//! from protocol-unreachable) or end a receive batch early (`recv`).

use crate::counters::{Counters, IoError, SharedCounters};
use crate::datapath::{Datapath, DropReason, TooBigAction, HEADROOM};
use crate::gro::{Coalescer, MAX_SEGMENTS};
use crate::sys::batch::{read_packet, recv_one};
use crate::sys::tun::write_gathered;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::io::{self, IoSlice};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod egress;
pub mod fanout;
pub mod raw;
pub mod udp;
mod underlay;

pub use egress::{Egress, Segment};
pub use fanout::FanoutGre;
pub use raw::RawGre;
pub use udp::UdpGre;
pub use underlay::{Message, RxBatch, Underlay};

const TUN: Token = Token(0);
const SOCK: Token = Token(1);
pub const WAKE: Token = Token(2);
const OTHER: Token = Token(3);
const STRAY: Token = Token(4);
/// Tokens `ERRORS + i` are the underlay's further sockets (their error queues).
const ERRORS: usize = 16;

/// A socket of the *other* encapsulation (worker 0 only): what arrives there
/// is read and counted as `wrong_encap`, so a misconfigured peer is visible.
pub struct OtherEncap(pub Box<dyn AsRawFd + Send>);

/// The worker's TUN queue: the fd, whoever keeps it open, and what the
/// queue carries.
pub struct TunQueue {
    /// Keeps the queue open (a `tun_rs::SyncDevice`; a socket in tests).
    pub owner: Box<dyn AsRawFd + Send>,
    /// Reads and writes carry a virtio-net header (TSO/GRO active).
    pub vnet: bool,
    /// The TUN takes UDP segmentation offload (USO) on writes.
    pub uso: bool,
}

/// Everything a worker owns.
pub struct Worker<U: Underlay> {
    pub id: usize,
    pub tun_name: String,
    pub tun: TunQueue,
    pub underlay: U,
    /// Worker 0: the other encapsulation's socket, for the wrong_encap counter.
    pub other: Option<OtherEncap>,
    pub dp: Datapath,
    pub poll: Poll,
    pub shared: Arc<Vec<SharedCounters>>,
    pub stop: Arc<AtomicBool>,
    pub cpu: Option<core_affinity::CoreId>,
    /// Packets discarded when the socket was opened (queued before the shard filter).
    pub flushed: u64,
}

/// The ICMP scratch buffer: virtio-net header + the IPv6 minimum MTU.
const ICMP_BUF: usize = tun_rs::VIRTIO_NET_HDR_LEN + crate::wire::ipv6::MIN_MTU;

/// Scratch of the slow paths, allocated once.
struct Slow {
    /// ICMP replies (virtio-net header room + IPv4 + ICMP + quote), and
    /// ICMPv6 Packet Too Big, which quotes as much as fits in 1280 bytes.
    icmp: Box<[u8; ICMP_BUF]>,
    icmp_limit: RateLimit,
    /// Fragments of an inner packet too big for the underlay.
    frag: Vec<u8>,
    /// Datagrams `wrong_encap` reads (discarded).
    discard: Vec<u8>,
}

/// Token bucket for ICMP replies, per worker: a flood of oversized packets must
/// not turn into a flood of ICMP (RFC 1812 4.3.2.8).
struct RateLimit {
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    const PER_SEC: f64 = 100.0;
    const BURST: f64 = 20.0;

    fn new() -> RateLimit {
        RateLimit {
            tokens: Self::BURST,
            last: Instant::now(),
        }
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * Self::PER_SEC).min(Self::BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What a worker needs besides its parts: buffers, counters.
struct State {
    egress: Egress,
    coalescer: Coalescer,
    slow: Slow,
    c: Counters,
}

impl State {
    fn new(tun: &TunQueue) -> State {
        State {
            egress: Egress::new(),
            coalescer: Coalescer::new(tun.vnet, tun.uso),
            slow: Slow {
                icmp: Box::new([0; ICMP_BUF]),
                icmp_limit: RateLimit::new(),
                frag: vec![0; HEADROOM + egress::MAX_PACKET + 1],
                discard: vec![0; 2048],
            },
            c: Counters::default(),
        }
    }
}

impl<U: Underlay> Worker<U> {
    /// Runs until `stop` is set (Ok) or the TUN fails (Err with a log-ready message).
    pub fn run(mut self) -> Result<(), String> {
        if let Some(cpu) = self.cpu {
            if !core_affinity::set_for_current(cpu) {
                log::warn!("worker {}: could not pin to CPU {}", self.id, cpu.id);
            }
        }
        let tun_fd = self.tun.owner.as_raw_fd();
        let sock_fd = self.underlay.fd();
        let reg = self.poll.registry();
        reg.register(&mut SourceFd(&tun_fd), TUN, Interest::READABLE)
            .map_err(|e| format!("worker {}: register TUN: {e}", self.id))?;
        reg.register(&mut SourceFd(&sock_fd), SOCK, Interest::READABLE)
            .map_err(|e| format!("worker {}: register socket: {e}", self.id))?;
        if let Some(o) = &self.other {
            reg.register(&mut SourceFd(&o.0.as_raw_fd()), OTHER, Interest::READABLE)
                .map_err(|e| format!("worker {}: register socket: {e}", self.id))?;
        }
        // ICMP errors about our packets go to the error queues and are
        // counted by kind (see the module doc for the pending error).
        for (i, &fd) in self.underlay.error_fds().iter().enumerate() {
            reg.register(&mut SourceFd(&fd), Token(ERRORS + i), Interest::READABLE)
                .map_err(|e| format!("worker {}: register sender socket: {e}", self.id))?;
        }
        let stray_fd = self.underlay.stray_fd();
        if let Some(fd) = stray_fd {
            reg.register(&mut SourceFd(&fd), STRAY, Interest::READABLE)
                .map_err(|e| format!("worker {}: register raw GRE socket: {e}", self.id))?;
        }
        let rx_ip = U::RX_IS_IP.then_some(sock_fd);
        let ip_fds = rx_ip
            .iter()
            .chain(self.underlay.error_fds())
            .chain(&stray_fd);
        for &fd in ip_fds {
            if let Err(e) = crate::sys::errqueue::enable(fd) {
                log::warn!(
                    "worker {}: IP_RECVERR: {e}; ICMP errors from peers will not be counted",
                    self.id
                );
            }
        }

        let mut st = State::new(&self.tun);
        st.c.errors[IoError::StartupFlush as usize] = self.flushed;
        let mut events = Events::with_capacity(16);
        // Drain anything that arrived before registration.
        let mut tun_pending = true;
        let mut sock_pending = true;
        let mut stray_pending = stray_fd.is_some();
        loop {
            while tun_pending || sock_pending || stray_pending {
                if tun_pending {
                    tun_pending = !self.egress_batch(&mut st)?;
                }
                if sock_pending {
                    sock_pending = !self.ingress_batch(&mut st, false)?;
                }
                if stray_pending {
                    stray_pending = !self.ingress_batch(&mut st, true)?;
                }
            }
            self.shared[self.id].publish(&st.c);
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            match self.poll.poll(&mut events, Some(Duration::from_secs(1))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("worker {}: poll: {e}", self.id)),
            }
            for ev in events.iter() {
                match ev.token() {
                    TUN => tun_pending = true,
                    SOCK => {
                        sock_pending = true;
                        if ev.is_error() {
                            if U::RX_IS_IP {
                                drain_errors(sock_fd, &mut st.c);
                            } else {
                                self.underlay.clear_rx_error();
                            }
                        }
                    }
                    STRAY => {
                        stray_pending = true;
                        if let (true, Some(fd)) = (ev.is_error(), stray_fd) {
                            drain_errors(fd, &mut st.c);
                        }
                    }
                    OTHER => self.count_other_encap(&mut st),
                    Token(t) if t >= ERRORS => {
                        if let Some(&fd) = self.underlay.error_fds().get(t - ERRORS) {
                            drain_errors(fd, &mut st.c);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Reads and counts whatever arrived on the other encapsulation's socket.
    fn count_other_encap(&self, st: &mut State) {
        let Some(o) = &self.other else { return };
        for _ in 0..1024 {
            if recv_one(o.0.as_raw_fd(), &mut st.slow.discard).is_err() {
                break;
            }
            st.c.drop(DropReason::WrongEncap);
        }
    }

    fn tun_failed(&self, what: &str, e: &io::Error) -> String {
        format!(
            "TUN {} queue {}: {what} failed: {e} (was the device deleted?)",
            self.tun_name, self.id
        )
    }

    /// Reads from the TUN until the batch is full or the queue is drained,
    /// encapsulates, and sends. Returns Ok(true) once the TUN queue is drained.
    fn egress_batch(&mut self, st: &mut State) -> Result<bool, String> {
        st.egress.clear();
        self.underlay.clear();
        let fd = self.tun.owner.as_raw_fd();
        let mut drained = false;
        while st.egress.has_room() && self.underlay.has_room() {
            let n = match read_packet(fd, &mut st.egress.read) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) => return Err(self.tun_failed("read", &e)),
            };
            let u = &mut self.underlay;
            st.egress
                .take(n, self.tun.vnet, &self.dp, &mut st.c, &mut |arena, s| {
                    u.push(arena, s)
                });
        }
        self.flush(st);
        Ok(drained)
    }

    /// Sends the queued messages. A failure is tried once more (`once_more`); a
    /// GSO message that still fails goes out datagram by datagram; a datagram
    /// refused as too big takes the PMTU slow path.
    fn flush(&mut self, st: &mut State) {
        let extra = (self.dp.overhead() - self.dp.header_len()) as u64;
        let mut off = 0;
        while off < self.underlay.queued().len() {
            match once_more(|| self.underlay.send(&st.egress.arena, off)) {
                Ok(n) if n > 0 => {
                    for t in &self.underlay.queued()[off..off + n] {
                        let k = t.datagrams() as u64;
                        st.c.tx_packets += k;
                        st.c.tx_bytes += u64::from(t.len) + k * extra;
                    }
                    off += n;
                }
                Ok(_) => {
                    st.c.error(IoError::SendOther);
                    off += 1;
                }
                Err(e) => {
                    let t = self.underlay.queued()[off];
                    let (start, len, peer) = (t.start as usize, t.len as usize, *t.dst.ip());
                    if t.datagrams() > 1 {
                        let seg = usize::from(t.segment);
                        let mut at = start;
                        while at < start + len {
                            let l = seg.min(start + len - at);
                            self.send_datagram(st, at, l, peer, false);
                            at += l;
                        }
                    } else if e.raw_os_error() == Some(libc::EMSGSIZE) {
                        self.too_big(st, start, len, peer);
                    } else {
                        st.c.error(IoError::from_send_errno(e.raw_os_error().unwrap_or(0)));
                    }
                    off += 1;
                }
            }
        }
    }

    /// Sends `arena[at..at + len]` alone (from `frag` with `frag`); counts it.
    fn send_datagram(&mut self, st: &mut State, at: usize, len: usize, peer: Ipv4Addr, frag: bool) {
        let buf = if frag {
            &st.slow.frag
        } else {
            &st.egress.arena
        };
        match once_more(|| self.underlay.send_one(buf, at, len, peer)) {
            Ok(()) => {
                st.c.tx_packets += 1;
                st.c.tx_bytes += (len + self.dp.overhead() - self.dp.header_len()) as u64;
                if frag {
                    st.c.tx_fragmented += 1;
                }
            }
            Err(e) if !frag && e.raw_os_error() == Some(libc::EMSGSIZE) => {
                self.too_big(st, at, len, peer)
            }
            Err(e) => {
                st.c.error(IoError::from_send_errno(e.raw_os_error().unwrap_or(0)))
            }
        }
    }

    /// Slow path for `arena[at..at + len]` (headers as `encapsulate` wrote
    /// them, for `peer`) that the underlay refused as too big (EMSGSIZE): ICMP
    /// "fragmentation needed" to a DF sender, or fragmentation of a non-DF one
    /// before encapsulation, as Linux ip_gre does.
    fn too_big(&mut self, st: &mut State, at: usize, len: usize, peer: Ipv4Addr) {
        let outer = &st.egress.arena[at..at + len];
        let hl = self.dp.header_len();
        match self.dp.too_big_action(outer) {
            TooBigAction::Fragment => {
                let mtu = crate::sys::pmtu::path_mtu(peer).unwrap_or(1500) as usize;
                let max_inner = mtu.saturating_sub(self.dp.overhead());
                for index in 0.. {
                    let inner = &st.egress.arena[at + hl..at + len];
                    let flen = match crate::wire::ipv4::fragment(
                        inner,
                        max_inner,
                        index,
                        &mut st.slow.frag[HEADROOM..],
                    ) {
                        Ok(Some(l)) => l,
                        Ok(None) => break,
                        Err(_) => {
                            st.c.drop(DropReason::TooBig);
                            break;
                        }
                    };
                    let e = match self.dp.encapsulate(&mut st.slow.frag, HEADROOM, flen) {
                        Ok(e) => e,
                        Err(r) => {
                            st.c.drop(r);
                            break;
                        }
                    };
                    self.send_datagram(st, e.start, e.len, e.peer, true);
                }
            }
            TooBigAction::DropSilently => st.c.drop(DropReason::TooBig),
            TooBigAction::FragNeeded => {
                st.c.drop(DropReason::TooBig);
                if !st.slow.icmp_limit.allow() {
                    st.c.icmp_rate_limited += 1;
                    return;
                }
                let mtu = crate::sys::pmtu::path_mtu(peer).unwrap_or(1500);
                let vnet = tun_rs::VIRTIO_NET_HDR_LEN;
                let icmp = &mut st.slow.icmp[..];
                let Ok(n) = self.dp.frag_needed(outer, peer, mtu, &mut icmp[vnet..]) else {
                    return;
                };
                // With offload, every TUN write starts with a virtio-net header;
                // all zeros = no GSO, no checksum offload.
                let start = if self.tun.vnet { 0 } else { vnet };
                icmp[..vnet].fill(0);
                let fd = self.tun.owner.as_raw_fd();
                match write_gathered(fd, &[IoSlice::new(&icmp[start..vnet + n])]) {
                    Ok(_) => st.c.icmp_tx += 1,
                    Err(_) => st.c.error(IoError::TunWrite),
                }
            }
        }
    }

    /// Receives one batch from the underlay (its stray socket with `stray`)
    /// and delivers it. Returns Ok(true) once the socket is drained.
    fn ingress_batch(&mut self, st: &mut State, stray: bool) -> Result<bool, String> {
        let u = &mut self.underlay;
        let n = match once_more(|| if stray { u.recv_stray() } else { u.recv() }) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(_) => {
                st.c.error(IoError::Recv);
                return Ok(true);
            }
        };
        let rx = self.underlay.rx();
        st.c.errors[IoError::RxOverflow as usize] = rx.queue_drops();
        let g = &mut st.coalescer;
        g.clear();
        for (index, (buf, &meta)) in rx.bufs.iter_mut().zip(&rx.meta).take(n).enumerate() {
            let m = Message { buf, index, meta };
            U::decapsulate(&self.dp, m, &mut st.c, g);
        }
        g.finish();
        let drained = n < rx.capacity();
        let fd = self.tun.owner.as_raw_fd();
        if let Err(e) = write_coalesced(fd, g, &rx.bufs, &mut st.c) {
            return Err(self.tun_failed("write", &e));
        }
        Ok(drained)
    }
}

/// Runs a send or receive, and once more if it failed other than with
/// `WouldBlock`: a first failure may be the socket's pending asynchronous
/// error (module doc), which that call consumed.
fn once_more<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    call().or_else(|e| match e.kind() {
        io::ErrorKind::WouldBlock => Err(e),
        _ => call(),
    })
}

fn drain_errors(fd: RawFd, c: &mut Counters) {
    use crate::sys::errqueue::{drain, PeerError};
    drain(fd, 1024, |k| {
        c.error(match k {
            PeerError::Unreachable => IoError::IcmpUnreachable,
            PeerError::PortUnreachable => IoError::IcmpPortUnreachable,
            PeerError::ProtoUnreachable => IoError::IcmpProtoUnreachable,
            PeerError::FragNeeded => IoError::IcmpFragNeeded,
            PeerError::Other => IoError::IcmpOther,
        })
    });
}

/// Writes what the coalescer described to the TUN `fd`: one `writev` per
/// (super-)packet, the payloads straight from the receive buffers `bufs`.
/// Errors are counted; only EBADFD (the TUN is gone) is returned.
fn write_coalesced(fd: RawFd, g: &Coalescer, bufs: &[Vec<u8>], c: &mut Counters) -> io::Result<()> {
    let mut parts = [IoSlice::new(&[]); MAX_SEGMENTS + 1];
    for w in &g.writes {
        let mut k = 0;
        if w.prefix_len > 0 {
            parts[0] = IoSlice::new(w.prefix());
            k = 1;
        }
        for p in &g.pieces[w.first as usize..(w.first + w.count) as usize] {
            let (s, l) = (p.start as usize, p.len as usize);
            parts[k] = IoSlice::new(&bufs[p.buf as usize][s..s + l]);
            k += 1;
        }
        match write_gathered(fd, &parts[..k]) {
            Ok(_) => {
                c.tun_tx_packets += u64::from(w.packets);
                c.tun_tx_bytes += u64::from(w.bytes);
            }
            Err(e) if e.raw_os_error() == Some(libc::EBADFD) => return Err(e),
            Err(e) if w.packets > 1 => write_segments(fd, g, w, bufs, c, &e)?,
            Err(_) => c.error(IoError::TunWrite),
        }
    }
    Ok(())
}

/// Slow path for a merged packet the TUN refused: writes its segments one by
/// one as they were received (their headers are still in front of each
/// payload piece), so a kernel that rejects the GSO form loses nothing. Each
/// segment that still fails counts as a TUN write error.
fn write_segments(
    fd: RawFd,
    g: &Coalescer,
    w: &crate::gro::Write,
    bufs: &[Vec<u8>],
    c: &mut Counters,
    why: &io::Error,
) -> io::Result<()> {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        log::warn!(
            "the TUN refused a coalesced packet ({why}); writing its segments one by one \
             (logged once)"
        )
    });
    let empty = [0u8; tun_rs::VIRTIO_NET_HDR_LEN];
    let hdr_len = usize::from(w.prefix_len).saturating_sub(tun_rs::VIRTIO_NET_HDR_LEN);
    for p in &g.pieces[w.first as usize..(w.first + w.count) as usize] {
        let (s, l) = (p.start as usize, p.len as usize);
        let Some(pkt) = s
            .checked_sub(hdr_len)
            .and_then(|from| bufs[p.buf as usize].get(from..s + l))
        else {
            c.error(IoError::TunWrite);
            continue;
        };
        match write_gathered(fd, &[IoSlice::new(&empty), IoSlice::new(pkt)]) {
            Ok(_) => {
                c.tun_tx_packets += 1;
                c.tun_tx_bytes += pkt.len() as u64;
            }
            Err(e) if e.raw_os_error() == Some(libc::EBADFD) => return Err(e),
            Err(_) => c.error(IoError::TunWrite),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
