//! GRE-in-UDP (RFC 8086, `--encap udp`) as an [`Underlay`].
//!
//! Egress: consecutive full-size segments of one super-packet to one peer
//! with one TOS form a run that goes out as one UDP GSO message
//! (`UDP_SEGMENT` = stride), cut at 64 segments / 64 KiB; a flow's messages
//! leave through one of the sender sockets, picked by the inner flow hash
//! (RFC 8086 source-port entropy). One `sendmmsg` per run of messages that
//! share a socket.
//!
//! Ingress: `recvmmsg` of up to `RX_MESSAGES` messages; with UDP GRO one
//! message holds many datagrams of one sender, `segment` bytes each → each
//! datagram is checked by `decapsulate_udp` (sender and outer TOS from the
//! message) → the inner packet, where it lies, goes to the coalescer. The
//! payload is never copied in userspace on the way in.

use super::egress::Segment;
use super::underlay::{deliver, Message, RxBatch, Underlay};
use crate::counters::Counters;
use crate::datapath::{flow_hash, Datapath, DropReason, MAX_UDP_PAYLOAD, UDP_OUTER_LEN};
use crate::gro::Coalescer;
use crate::sys::batch::{Batch, Transmit};
use crate::sys::udp::{UdpGreSocket, MAX_GSO_SEGMENTS};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;

/// Messages per `sendmmsg` (super-packets usually need one or two each).
pub const MAX_MESSAGES: usize = 256;
/// Messages per `recvmmsg`; with GRO each holds up to 64 KiB.
pub const RX_MESSAGES: usize = 16;
/// A GRO message is at most one 64 KiB UDP payload.
pub const RX_BUF: usize = 65536;

pub struct UdpGre {
    sock: UdpGreSocket,
    port: u16,
    /// Sockets on distinct ephemeral source ports (none: send from `sock`).
    senders: Vec<UdpGreSocket>,
    sender_fds: Vec<RawFd>,
    gso: bool,
    items: Vec<Transmit>,
    /// Index into `senders` of each of `items`.
    socks: Vec<u8>,
    /// The message still open for more full segments of its super-packet
    /// (a GSO run): its `segment` is the stride, its length a multiple of it.
    run: Option<usize>,
    tx: Batch,
    rx: RxBatch,
    /// Bytes meshfwd writes in front of an inner packet (the GRE header).
    header_len: usize,
}

impl UdpGre {
    /// `sock` receives on `local:port`; `senders` send (flows spread over
    /// them); `header_len` = `Datapath::header_len()`.
    pub fn new(
        sock: UdpGreSocket,
        port: u16,
        senders: Vec<UdpGreSocket>,
        header_len: usize,
    ) -> UdpGre {
        let gso = sock.gso();
        UdpGre {
            sender_fds: senders.iter().map(|s| s.fd()).collect(),
            sock,
            port,
            senders,
            gso,
            items: Vec::with_capacity(MAX_MESSAGES),
            socks: Vec::with_capacity(MAX_MESSAGES),
            run: None,
            tx: Batch::new(MAX_MESSAGES),
            rx: RxBatch::new(RX_MESSAGES, RX_BUF),
            header_len,
        }
    }

    /// The sender socket index for inner packet `inner`.
    fn sender_of(&self, inner: &[u8]) -> u8 {
        match self.senders.len() {
            0 => 0,
            n => (flow_hash(inner) as usize % n) as u8,
        }
    }

    fn sock_fd(&self, i: u8) -> RawFd {
        self.sender_fds
            .get(usize::from(i))
            .copied()
            .unwrap_or(self.sock.fd())
    }

    fn transmit(&self, start: usize, len: usize, peer: Ipv4Addr, tos: u8) -> Transmit {
        Transmit {
            start: start as u32,
            len: len as u32,
            dst: SocketAddrV4::new(peer, self.port),
            segment: 0,
            tos: Some(tos),
        }
    }
}

impl Underlay for UdpGre {
    fn fd(&self) -> RawFd {
        self.sock.fd()
    }

    fn error_fds(&self) -> &[RawFd] {
        &self.sender_fds
    }

    fn has_room(&self) -> bool {
        self.items.len() + 8 <= MAX_MESSAGES
    }

    fn push(&mut self, arena: &[u8], s: Segment) {
        let max_run = MAX_UDP_PAYLOAD
            .checked_div(s.stride)
            .map_or(1, |n| n.clamp(1, MAX_GSO_SEGMENTS));
        // A run never spans two TUN reads: the next super-packet may lie
        // right after this one (same MSS, same peer) but be another flow,
        // which must keep its own sender socket (RFC 8086 entropy).
        if s.first {
            self.run = None;
        }
        // Continue the open run: the next full-stride slot in the arena, same
        // stride, peer and TOS, room left.
        if let Some(it) = self.run.map(|i| &mut self.items[i]) {
            if s.stride > 0
                && usize::from(it.segment) == s.stride
                && (it.start + it.len) as usize == s.start
                && it.dst.ip() == &s.peer
                && it.tos == Some(s.tos)
                && (it.len as usize) / s.stride < max_run
            {
                it.len += s.len as u32;
                if s.len < s.stride {
                    // A short segment is the last of its run.
                    self.run = None;
                }
                return;
            }
        }
        self.run = None;
        let hl = self.header_len.min(s.len);
        let sock = self.sender_of(&arena[s.start + hl..s.start + s.len]);
        let mut t = self.transmit(s.start, s.len, s.peer, s.tos);
        if self.gso && s.stride > 0 && s.len == s.stride && max_run > 1 {
            // One full segment so far; `Batch` adds UDP_SEGMENT only once
            // the message holds more than one.
            t.segment = s.stride as u16;
            self.run = Some(self.items.len());
        }
        self.items.push(t);
        self.socks.push(sock);
    }

    fn queued(&self) -> &[Transmit] {
        &self.items
    }

    fn clear(&mut self) {
        self.items.clear();
        self.socks.clear();
        self.run = None;
    }

    fn send(&mut self, arena: &[u8], from: usize) -> io::Result<usize> {
        // One sendmmsg per run of messages leaving through the same socket.
        let sock = self.socks[from];
        let end = self.socks[from..]
            .iter()
            .position(|&s| s != sock)
            .map_or(self.items.len(), |p| from + p);
        let fd = self.sock_fd(sock);
        self.tx.send(fd, arena, &self.items[from..end])
    }

    fn send_one(&mut self, buf: &[u8], start: usize, len: usize, peer: Ipv4Addr) -> io::Result<()> {
        let inner = buf
            .get(start + self.header_len..start + len)
            .unwrap_or_default();
        let tos = super::egress::inner_tos(inner);
        let fd = self.sock_fd(self.sender_of(inner));
        self.tx
            .send_one(fd, buf, self.transmit(start, len, peer, tos))
    }

    fn rx(&mut self) -> &mut RxBatch {
        &mut self.rx
    }

    /// Every datagram of one message (with GRO several of `segment` bytes).
    fn decapsulate(dp: &Datapath, m: Message<'_>, c: &mut Counters, g: &mut Coalescer) {
        if m.meta.truncated {
            c.rx_packets += 1;
            c.drop(DropReason::Truncated);
            return;
        }
        let Some(src) = m.meta.src else {
            c.rx_packets += 1;
            c.drop(DropReason::OuterSrcNotUnderlay);
            return;
        };
        let total = m.meta.len.min(m.buf.len());
        let seg = m.meta.segment.max(1);
        let mut at = 0;
        // Runs at least once: an empty datagram is a received packet too
        // (counted, then dropped as too_short).
        loop {
            let len = seg.min(total - at);
            c.rx_packets += 1;
            c.rx_bytes += (len + UDP_OUTER_LEN) as u64;
            let dgram = &mut m.buf[at..at + len];
            let r = dp.decapsulate_udp(dgram, len, src, m.meta.tos);
            deliver(g, c, dgram, m.index, at, r);
            at += len;
            if at >= total {
                break;
            }
        }
    }
}
