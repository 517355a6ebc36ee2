//! One forwarding worker: a pinned thread with its own mio poll loop, its own
//! TUN queue, its own raw GRE socket (receiving only its shard) and its own
//! buffers. The datapath decisions come from [`Datapath`]; this file only moves
//! bytes and counts.
//!
//! Egress: TUN queue → `recv_multiple` (with offload: one TCP/UDP super-packet
//! read and split into MSS-sized segments, checksums filled in) into arena
//! slots at `HEADROOM` → `encapsulate` writes outer IPv4 + GRE in front of each
//! → one `sendmmsg` for up to `TX_SLOTS` packets to their peer VMs.
//!
//! Ingress: raw socket → `recvmmsg` of up to `RX_BATCH` GRE packets, each into
//! its own buffer → `decapsulate` → each accepted
//! inner packet, where it lies, goes to [`Coalescer`], which (with offload)
//! merges consecutive TCP/UDP segments of a flow (GRO) → one `writev` per
//! resulting packet: rewritten headers, then the payloads from the receive
//! buffers; without offload, one plain write per packet.
//!
//! With `--encap udp` the underlay is a GRE-in-UDP socket instead and both
//! directions take the paths in [`udp`]: TUN super-packets are split straight
//! into one contiguous run of GRE-framed segments sent with UDP GSO, and UDP
//! GRO batches are split, checked and coalesced again for the TUN.
//!
//! Registrations are edge-triggered, so each side is drained until `WouldBlock`,
//! alternating batches so neither direction starves the other.
//!
//! Asynchronous errors: with IP_RECVERR the kernel
//! both queues an ICMP error about an earlier packet on the socket's error
//! queue (drained and counted as `icmp_*`) and sets the socket's pending
//! error, which the next send or receive call on that socket reports and
//! clears, whatever it was doing. A send or receive that fails is therefore
//! tried once more before it is counted (`send_*`, `recv`): the retry tells a
//! stale report about some other packet (often to another peer) from a
//! failure of this one. Before this, each such ICMP cost an unrelated packet
//! (`send_other`: ENOPROTOOPT from protocol-unreachable) or ended a receive
//! batch early (`recv`).

use crate::counters::{Counters, IoError, SharedCounters};
use crate::datapath::{Datapath, DropReason, TooBigAction, HEADROOM};
use crate::gro::{Coalescer, Piece, MAX_SEGMENTS};
use crate::sys::mmsg::{Mmsg, SendItem};
use crate::sys::raw::RawGreSocket;
use crate::sys::tun::write_gathered;
use crate::sys::udp::{UdpGreSocket, UdpItem, UdpMmsg, UdpRecvd};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest IPv4 packet.
const MAX_PACKET: usize = 65535;
/// Egress slot: headroom plus the largest packet the TUN may hand us.
pub const TX_SLOT: usize = HEADROOM + MAX_PACKET + 1;
/// Egress slots per `sendmmsg` batch.
pub const TX_SLOTS: usize = 256;
/// Free slots required before another TUN read: one super-packet of 64 KiB
/// splits into at most this many segments at any MSS ≥ 512.
pub const TX_READ_ROOM: usize = 128;
/// Ingress datagrams per `recvmmsg`.
pub const RX_BATCH: usize = 64;
/// Ingress buffer size: the largest IPv4 datagram (outer header included).
/// Inner packets are written to the TUN from where they were received, so no
/// room around them is needed.
pub const RX_CAP: usize = MAX_PACKET + 1;

const TUN: Token = Token(0);
const SOCK: Token = Token(1);
pub const WAKE: Token = Token(2);
const OTHER: Token = Token(3);
/// Tokens `SENDER + i` are the UDP sender sockets (their error queues).
const SENDER: usize = 16;

mod udp;

/// The underlay socket a worker sends and receives GRE through.
pub enum Underlay {
    /// Raw IP protocol 47 (this worker's shard).
    Raw(RawGreSocket),
    /// GRE-in-UDP to/from this UDP port (one member of a SO_REUSEPORT group).
    Udp(UdpGreSocket, u16),
}

impl Underlay {
    pub fn fd(&self) -> RawFd {
        match self {
            Underlay::Raw(s) => s.fd(),
            Underlay::Udp(s, _) => s.fd(),
        }
    }
}

/// A socket of the *other* encapsulation (worker 0 only): what arrives there
/// is read and counted as `wrong_encap`, so a misconfigured peer is visible.
pub enum OtherEncap {
    Raw(RawGreSocket),
    Udp(UdpGreSocket),
}

impl OtherEncap {
    pub fn fd(&self) -> RawFd {
        match self {
            OtherEncap::Raw(s) => s.fd(),
            OtherEncap::Udp(s) => s.fd(),
        }
    }
}

/// Everything a worker owns.
pub struct Worker {
    pub id: usize,
    pub tun_name: String,
    pub tun: tun_rs::SyncDevice,
    /// Whether the TUN queue carries virtio-net headers (TSO/GRO active).
    pub offload: bool,
    pub sock: Underlay,
    /// Worker 0: the other encapsulation's socket, for the wrong_encap counter.
    pub other: Option<OtherEncap>,
    /// UDP mode: sockets on distinct ephemeral source ports; a flow's hash
    /// picks one (RFC 8086 entropy for ECMP/RSS and the peer's SO_REUSEPORT).
    pub senders: Vec<UdpGreSocket>,
    pub dp: Datapath,
    pub poll: Poll,
    pub shared: Arc<Vec<SharedCounters>>,
    pub stop: Arc<AtomicBool>,
    pub cpu: Option<core_affinity::CoreId>,
    /// Packets discarded when the socket was opened (queued before the shard filter).
    pub flushed: u64,
}

/// Per-worker buffers, allocated once. Pages are only touched when used, so
/// the resident size follows the traffic, not the virtual size.
struct Buffers {
    /// Raw TUN read (virtio-net header + super-packet) before splitting.
    tun_read: Vec<u8>,
    tx_arena: Vec<u8>,
    tx_sizes: Vec<usize>,
    tx_items: Vec<SendItem>,
    tx_mmsg: Mmsg,
    rx_bufs: Vec<Vec<u8>>,
    rx_lens: Vec<usize>,
    rx_mmsg: Mmsg,
    /// Zero-copy coalescing of what one `recvmmsg` brought (both modes).
    coalescer: Coalescer,
    /// Scratch for ICMP replies (virtio-net header room + IPv4 + ICMP + quote).
    icmp: [u8; 128],
    icmp_limit: RateLimit,
    /// Scratch for fragments of an inner packet too big for the underlay.
    frag: Vec<u8>,
    /// Copy of a packet the underlay refused as too big, while it is handled.
    spill: Vec<u8>,
    /// UDP mode: egress arena of contiguous GRE-framed segments and its messages.
    udp_arena: Vec<u8>,
    udp_items: Vec<UdpItem>,
    /// Index into `Worker::senders` of each of `udp_items`.
    udp_socks: Vec<u8>,
    udp_tx: UdpMmsg,
    /// UDP mode: receive buffers (one GRO message each) and what arrived.
    udp_rx_bufs: Vec<Vec<u8>>,
    udp_rx_out: Vec<UdpRecvd>,
    udp_rx: UdpMmsg,
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

impl Buffers {
    fn new(vnet: bool, uso: bool) -> Buffers {
        let rx_bufs: Vec<Vec<u8>> = (0..RX_BATCH).map(|_| vec![0u8; RX_CAP]).collect();
        Buffers {
            tun_read: vec![0; tun_rs::VIRTIO_NET_HDR_LEN + MAX_PACKET + 1],
            tx_arena: vec![0; TX_SLOTS * TX_SLOT],
            tx_sizes: vec![0; TX_READ_ROOM],
            tx_items: Vec::with_capacity(TX_SLOTS),
            tx_mmsg: Mmsg::new(TX_SLOTS),
            rx_bufs,
            rx_lens: vec![0; RX_BATCH],
            rx_mmsg: Mmsg::new(RX_BATCH),
            coalescer: Coalescer::new(vnet, uso),
            icmp: [0; 128],
            icmp_limit: RateLimit::new(),
            frag: vec![0; TX_SLOT],
            spill: vec![0; TX_SLOT],
            udp_arena: vec![0; udp::ARENA],
            udp_items: Vec::with_capacity(udp::MAX_MESSAGES),
            udp_socks: Vec::with_capacity(udp::MAX_MESSAGES),
            udp_tx: UdpMmsg::new(udp::MAX_MESSAGES),
            udp_rx_bufs: (0..udp::RX_MESSAGES)
                .map(|_| vec![0u8; udp::RX_BUF])
                .collect(),
            udp_rx_out: vec![UdpRecvd::default(); udp::RX_MESSAGES],
            udp_rx: UdpMmsg::new(udp::RX_MESSAGES),
        }
    }
}

impl Worker {
    /// Runs until `stop` is set (Ok) or the TUN fails (Err with a log-ready message).
    pub fn run(mut self) -> Result<(), String> {
        if let Some(cpu) = self.cpu {
            if !core_affinity::set_for_current(cpu) {
                log::warn!("worker {}: could not pin to CPU {}", self.id, cpu.id);
            }
        }
        let tun_fd = self.tun.as_raw_fd();
        let sock_fd = self.sock.fd();
        let reg = self.poll.registry();
        reg.register(&mut SourceFd(&tun_fd), TUN, Interest::READABLE)
            .map_err(|e| format!("worker {}: register TUN: {e}", self.id))?;
        reg.register(&mut SourceFd(&sock_fd), SOCK, Interest::READABLE)
            .map_err(|e| format!("worker {}: register socket: {e}", self.id))?;
        if let Some(o) = &self.other {
            reg.register(&mut SourceFd(&o.fd()), OTHER, Interest::READABLE)
                .map_err(|e| format!("worker {}: register socket: {e}", self.id))?;
        }
        for (i, s) in self.senders.iter().enumerate() {
            reg.register(
                &mut SourceFd(&s.fd()),
                Token(SENDER + i),
                Interest::READABLE,
            )
            .map_err(|e| format!("worker {}: register sender socket: {e}", self.id))?;
            if let Err(e) = crate::sys::errqueue::enable(s.fd()) {
                log::warn!("worker {}: IP_RECVERR on a sender socket: {e}", self.id);
            }
        }
        // ICMP errors about our packets go to the error queue (never to a later
        // send, which would cost a good packet) and are counted by kind.
        if let Err(e) = crate::sys::errqueue::enable(sock_fd) {
            log::warn!(
                "worker {}: IP_RECVERR: {e}; ICMP errors from peers will not be counted",
                self.id
            );
        }

        let mut b = Buffers::new(self.offload, self.tun.udp_gso());
        let mut c = Counters::default();
        c.errors[IoError::StartupFlush as usize] = self.flushed;
        let mut events = Events::with_capacity(16);
        // Drain anything that arrived before registration.
        let mut tun_pending = true;
        let mut sock_pending = true;
        let udp = matches!(self.sock, Underlay::Udp(..));
        loop {
            while tun_pending || sock_pending {
                if tun_pending {
                    tun_pending = !if udp {
                        self.egress_batch_udp(&mut b, &mut c)?
                    } else {
                        self.egress_batch(&mut b, &mut c)?
                    };
                }
                if sock_pending {
                    sock_pending = !if udp {
                        self.ingress_batch_udp(&mut b, &mut c)?
                    } else {
                        self.ingress_batch(&mut b, &mut c)?
                    };
                }
            }
            self.shared[self.id].publish(&c);
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
                            self.drain_errors(self.sock.fd(), &mut c);
                        }
                    }
                    OTHER => self.count_other_encap(&mut b, &mut c),
                    Token(t) if t >= SENDER => {
                        if let Some(s) = self.senders.get(t - SENDER) {
                            self.drain_errors(s.fd(), &mut c);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Reads and counts whatever arrived on the other encapsulation's socket.
    fn count_other_encap(&self, b: &mut Buffers, c: &mut Counters) {
        let Some(o) = &self.other else { return };
        for _ in 0..1024 {
            // SAFETY: valid fd; `frag` is a live buffer of the given length.
            let r = unsafe {
                libc::recv(
                    o.fd(),
                    b.frag.as_mut_ptr().cast(),
                    b.frag.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if r < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            c.drop(DropReason::WrongEncap);
        }
    }

    fn drain_errors(&self, fd: RawFd, c: &mut Counters) {
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

    fn tun_failed(&self, what: &str, e: &io::Error) -> String {
        format!(
            "TUN {} queue {}: {what} failed: {e} (was the device deleted?)",
            self.tun_name, self.id
        )
    }

    /// Reads from the TUN until the batch is full or the queue is drained,
    /// encapsulates, and sends. Returns Ok(true) once the TUN queue is drained.
    fn egress_batch(&mut self, b: &mut Buffers, c: &mut Counters) -> Result<bool, String> {
        b.tx_items.clear();
        let mut used = 0;
        let mut drained = false;
        while TX_SLOTS - used >= TX_READ_ROOM {
            let mut slots = b.tx_arena[used * TX_SLOT..].chunks_exact_mut(TX_SLOT);
            let mut views: [&mut [u8]; TX_READ_ROOM] =
                std::array::from_fn(|_| slots.next().unwrap_or_default());
            let r = self
                .tun
                .recv_multiple(&mut b.tun_read, &mut views, &mut b.tx_sizes, HEADROOM);
            match r {
                Ok(k) => {
                    for j in 0..k {
                        let len = b.tx_sizes[j];
                        c.tun_rx_packets += 1;
                        c.tun_rx_bytes += len as u64;
                        let slot = used + j;
                        let buf = &mut b.tx_arena[slot * TX_SLOT..(slot + 1) * TX_SLOT];
                        match self.dp.encapsulate(buf, HEADROOM, len) {
                            Ok(e) => b.tx_items.push(SendItem {
                                slot: slot as u32,
                                start: e.start as u32,
                                len: e.len as u32,
                                dst: e.peer,
                            }),
                            Err(r) => c.drop(r),
                        }
                    }
                    used += k;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error().is_some() => return Err(self.tun_failed("read", &e)),
                // Not a syscall error: the virtio header or super-packet could
                // not be split. The read consumed it; count and go on.
                Err(_) => c.drop(DropReason::OffloadMalformed),
            }
        }
        self.flush(b, c);
        Ok(drained)
    }

    fn flush(&mut self, b: &mut Buffers, c: &mut Counters) {
        let fd = self.sock.fd();
        let mut off = 0;
        let mut retried = usize::MAX;
        while off < b.tx_items.len() {
            match b.tx_mmsg.send(fd, &b.tx_arena, TX_SLOT, &b.tx_items[off..]) {
                Ok(n) if n > 0 => {
                    for it in &b.tx_items[off..off + n] {
                        c.tx_packets += 1;
                        c.tx_bytes += u64::from(it.len);
                    }
                    off += n;
                }
                Ok(_) => {
                    c.error(IoError::SendOther);
                    off += 1;
                }
                // Maybe the socket's pending asynchronous error (module doc):
                // the same message once more before blaming it.
                Err(_) if retried != off => retried = off,
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    let it = b.tx_items[off];
                    let at = it.slot as usize * TX_SLOT + it.start as usize;
                    b.spill[..it.len as usize]
                        .copy_from_slice(&b.tx_arena[at..at + it.len as usize]);
                    self.too_big(b, c, it.len as usize, it.dst);
                    off += 1;
                }
                Err(e) => {
                    c.error(IoError::from_send_errno(e.raw_os_error().unwrap_or(0)));
                    off += 1;
                }
            }
        }
    }

    /// Slow path for an encapsulated packet the underlay refused (EMSGSIZE),
    /// copied to `b.spill[..len]` (headers as `encapsulate` wrote them) and
    /// meant for `dst`: ICMP "fragmentation needed" to a DF sender, or
    /// fragmentation of a non-DF one before encapsulation, as Linux ip_gre does.
    fn too_big(&mut self, b: &mut Buffers, c: &mut Counters, len: usize, dst: std::net::Ipv4Addr) {
        // Taken out of `b` (no allocation) so `b` stays usable for sending.
        let spill = std::mem::take(&mut b.spill);
        self.too_big_from(b, c, &spill[..len.min(spill.len())], dst);
        b.spill = spill;
    }

    fn too_big_from(
        &mut self,
        b: &mut Buffers,
        c: &mut Counters,
        outer: &[u8],
        dst: std::net::Ipv4Addr,
    ) {
        let hl = self.dp.header_len();
        match self.dp.too_big_action(outer) {
            TooBigAction::Fragment => {
                let mtu = crate::sys::pmtu::path_mtu(dst).unwrap_or(1500) as usize;
                let max_inner = mtu.saturating_sub(self.dp.overhead());
                let inner = &outer[hl..];
                for index in 0.. {
                    let len = match crate::wire::ipv4::fragment(
                        inner,
                        max_inner,
                        index,
                        &mut b.frag[HEADROOM..],
                    ) {
                        Ok(Some(len)) => len,
                        Ok(None) => break,
                        Err(_) => {
                            c.drop(DropReason::TooBig);
                            break;
                        }
                    };
                    let e = match self.dp.encapsulate(&mut b.frag, HEADROOM, len) {
                        Ok(e) => e,
                        Err(r) => {
                            c.drop(r);
                            break;
                        }
                    };
                    match self.send_one(b, e.start, e.len, e.peer) {
                        Ok(()) => {
                            c.tx_fragmented += 1;
                            c.tx_packets += 1;
                            c.tx_bytes += self.wire_len(e.len) as u64;
                        }
                        Err(e) => c.error(IoError::from_send_errno(e.raw_os_error().unwrap_or(0))),
                    }
                }
            }
            TooBigAction::DropSilently => c.drop(DropReason::TooBig),
            TooBigAction::FragNeeded => {
                c.drop(DropReason::TooBig);
                if !b.icmp_limit.allow() {
                    c.icmp_rate_limited += 1;
                    return;
                }
                let mtu = crate::sys::pmtu::path_mtu(dst).unwrap_or(1500);
                let vnet = tun_rs::VIRTIO_NET_HDR_LEN;
                let Ok(n) = self.dp.frag_needed(outer, dst, mtu, &mut b.icmp[vnet..]) else {
                    return;
                };
                // With offload, every TUN write starts with a virtio-net header;
                // all zeros = no GSO, no checksum offload.
                let start = if self.offload { 0 } else { vnet };
                b.icmp[..vnet].fill(0);
                match self.tun.send(&b.icmp[start..vnet + n]) {
                    Ok(_) => c.icmp_tx += 1,
                    Err(_) => c.error(IoError::TunWrite),
                }
            }
        }
    }

    /// Bytes on the wire for `len` bytes of what meshfwd wrote.
    fn wire_len(&self, len: usize) -> usize {
        len + self.dp.overhead() - self.dp.header_len()
    }

    /// Sends `b.frag[start..start + len]` (as built by `encapsulate`) to `dst`
    /// through the underlay socket, as one datagram.
    fn send_one(
        &self,
        b: &mut Buffers,
        start: usize,
        len: usize,
        dst: std::net::Ipv4Addr,
    ) -> io::Result<()> {
        let sent = match &self.sock {
            Underlay::Raw(s) => {
                let one = [SendItem {
                    slot: 0,
                    start: start as u32,
                    len: len as u32,
                    dst,
                }];
                let size = b.frag.len();
                b.tx_mmsg.send(s.fd(), &b.frag, size, &one)?
            }
            Underlay::Udp(s, port) => {
                let inner = b
                    .frag
                    .get(start + self.dp.header_len()..start + len)
                    .unwrap_or_default();
                let tos = inner.get(1).copied().unwrap_or(0);
                let fd = self
                    .sender_fd(crate::datapath::flow_hash(inner))
                    .unwrap_or(s.fd());
                let one = [UdpItem {
                    start: start as u32,
                    len: len as u32,
                    segment: 0,
                    tos,
                    dst,
                }];
                b.udp_tx.send(fd, &b.frag, *port, &one)?
            }
        };
        if sent == 1 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::EAGAIN))
        }
    }

    /// Receives up to RX_BATCH GRE packets and delivers them. Returns Ok(true)
    /// once the socket is drained.
    fn ingress_batch(&mut self, b: &mut Buffers, c: &mut Counters) -> Result<bool, String> {
        let fd = self.sock.fd();
        let recv = |b: &mut Buffers| b.rx_mmsg.recv_bufs(fd, &mut b.rx_bufs, 0, &mut b.rx_lens);
        // A first failure is the socket's pending asynchronous error (see
        // the module doc), consumed by that call: receive again.
        let n = match recv(b).or_else(|e| match e.kind() {
            io::ErrorKind::WouldBlock => Err(e),
            _ => recv(b),
        }) {
            Ok(n) => {
                c.errors[IoError::RxOverflow as usize] = u64::from(b.rx_mmsg.rx_queue_drops());
                n
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(_) => {
                c.error(IoError::Recv);
                return Ok(true);
            }
        };
        let g = &mut b.coalescer;
        g.clear();
        for i in 0..n {
            c.rx_packets += 1;
            let len = b.rx_lens[i];
            if len == usize::MAX {
                c.drop(DropReason::Truncated);
                continue;
            }
            c.rx_bytes += len as u64;
            let buf = &mut b.rx_bufs[i];
            match self.dp.decapsulate(buf, len) {
                Ok(d) => {
                    let piece = Piece {
                        buf: i as u32,
                        start: d.start as u32,
                        len: d.len as u32,
                    };
                    g.push(&buf[d.start..d.start + d.len], piece);
                }
                Err(r) => c.drop(r),
            }
        }
        g.finish();
        self.write_coalesced(&b.coalescer, &b.rx_bufs, c)?;
        Ok(n < RX_BATCH)
    }

    /// Writes what the coalescer described (see [`write_coalesced`]).
    fn write_coalesced(
        &self,
        g: &Coalescer,
        bufs: &[Vec<u8>],
        c: &mut Counters,
    ) -> Result<(), String> {
        write_coalesced(self.tun.as_raw_fd(), g, bufs, c).map_err(|e| self.tun_failed("write", &e))
    }
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
mod tests {
    use super::*;
    use crate::gro::testutil::tcp;
    use std::os::fd::{FromRawFd, OwnedFd};

    /// A datagram socket pair standing in for the TUN: one write, one packet.
    fn pair(sndbuf: libc::c_int) -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: plain syscalls on fds this test owns.
        unsafe {
            assert_eq!(
                libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, fds.as_mut_ptr()),
                0
            );
            let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            let v = &sndbuf as *const libc::c_int as *const libc::c_void;
            assert_eq!(
                libc::setsockopt(fds[0], libc::SOL_SOCKET, libc::SO_SNDBUF, v, len),
                0
            );
            // A missing datagram fails the test instead of hanging it.
            let t = libc::timeval {
                tv_sec: 5,
                tv_usec: 0,
            };
            let tl = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
            let tp = &t as *const libc::timeval as *const libc::c_void;
            let r = libc::setsockopt(fds[1], libc::SOL_SOCKET, libc::SO_RCVTIMEO, tp, tl);
            assert_eq!(r, 0);
            (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
        }
    }

    /// Reads `n` datagrams on a thread (a small send buffer only drains
    /// while someone reads).
    fn reader(fd: OwnedFd, n: usize) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut buf = vec![0u8; 70_000];
            while out.len() < n {
                // SAFETY: buf is valid for its length.
                let got =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                assert!(got >= 0, "recv: {}", io::Error::last_os_error());
                out.push(buf[..got as usize].to_vec());
            }
            out
        })
    }

    /// Ten consecutive 1,400-byte segments of one TCP flow.
    fn ten_segments() -> Vec<Vec<u8>> {
        (0..10u32)
            .map(|i| tcp(i * 1400, 0x10, &[i as u8; 1400], &[]))
            .collect()
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
        let segs = ten_segments();
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
        let segs = ten_segments();
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
}
