//! The worker's GRE-in-UDP paths (`--encap udp`).
//!
//! Egress: one raw TUN read (virtio-net header + up to 64 KiB) into `tun_read`
//! → for a TSO/USO super-packet, `gso_split` writes the MSS-sized segments
//! straight into the UDP arena at a stride of GRE header + segment, leaving
//! room for the GRE header in front of each → `encapsulate` writes each GRE
//! header in place → the run is one message for UDP GSO (`UDP_SEGMENT` =
//! stride), cut at 64 segments / 64 KiB → one `sendmmsg` for the whole batch.
//! Where a GSO message is refused, its datagrams are retried one by one; one
//! refused as too big takes the ICMP/fragmentation slow path of GRE mode.
//!
//! Ingress: `recvmmsg` of up to `RX_MESSAGES` messages; with UDP GRO one
//! message holds many datagrams of one sender, `segment` bytes each → each
//! datagram is checked by `decapsulate_udp` (sender and outer TOS from the
//! message) → the inner packet, where it lies, goes to `gro::Coalescer`, which
//! merges consecutive TCP segments (and UDP datagrams where the TUN takes USO)
//! into super-packets described as a rewritten header + payload pieces → one
//! `writev` per super-packet to the TUN. The payload is never copied in
//! userspace on the way in.

use super::{Buffers, Underlay, Worker, HEADROOM, TX_READ_ROOM};
use crate::counters::{Counters, IoError};
use crate::datapath::{flow_hash, DropReason, MAX_UDP_PAYLOAD, UDP_OUTER_LEN};
use crate::gro::Piece;
use crate::sys::udp::{UdpItem, MAX_GSO_SEGMENTS};
use std::io;
use tun_rs::{VirtioNetHdr, VIRTIO_NET_HDR_LEN};

/// Egress arena: room for a batch of super-packets split into segments.
pub const ARENA: usize = 2 << 20;
/// Free arena bytes required before another TUN read: one 64 KiB super-packet
/// grows by a header copy per segment (at most 128 segments are accepted).
const READ_ROOM: usize = 160 << 10;
/// Messages per `sendmmsg` (super-packets usually need one or two each).
pub const MAX_MESSAGES: usize = 256;
/// Messages per `recvmmsg`; with GRO each holds up to 64 KiB.
pub const RX_MESSAGES: usize = 16;
/// A GRO message is at most one 64 KiB UDP payload.
pub const RX_BUF: usize = 65536;

const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;

impl Worker {
    /// The sender socket for a flow hash, if there are any.
    pub(super) fn sender_fd(&self, hash: u32) -> Option<i32> {
        let n = self.senders.len();
        (n > 0).then(|| self.senders[hash as usize % n].fd())
    }

    /// The fd of sender socket `i` (the listening socket when there are none).
    fn sock_fd(&self, i: u8) -> i32 {
        match self.senders.get(usize::from(i)) {
            Some(s) => s.fd(),
            None => self.sock.fd(),
        }
    }

    /// Index of the sender socket for the inner packet `inner`.
    fn sender_of(&self, inner: &[u8]) -> u8 {
        match self.senders.len() {
            0 => 0,
            n => (flow_hash(inner) as usize % n) as u8,
        }
    }

    fn udp_port(&self) -> (i32, u16, bool) {
        match &self.sock {
            Underlay::Udp(s, p) => (s.fd(), *p, s.gso()),
            Underlay::Raw(s) => (s.fd(), 0, false),
        }
    }

    /// Reads from the TUN until the arena is full or the queue is drained,
    /// encapsulates and sends. Returns Ok(true) once the TUN queue is drained.
    pub(super) fn egress_batch_udp(
        &mut self,
        b: &mut Buffers,
        c: &mut Counters,
    ) -> Result<bool, String> {
        b.udp_items.clear();
        b.udp_socks.clear();
        let (_, _, gso) = self.udp_port();
        let gl = self.dp.header_len();
        let mut pos = 0usize;
        let mut drained = false;
        while ARENA - pos >= READ_ROOM && b.udp_items.len() + 8 <= MAX_MESSAGES {
            let n = match self.tun.recv(&mut b.tun_read) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.tun_failed("read", &e)),
            };
            let (hdr, from) = if self.offload {
                if n <= VIRTIO_NET_HDR_LEN {
                    c.drop(DropReason::OffloadMalformed);
                    continue;
                }
                match VirtioNetHdr::decode(&b.tun_read[..VIRTIO_NET_HDR_LEN]) {
                    Ok(h) => (Some(h), VIRTIO_NET_HDR_LEN),
                    Err(_) => {
                        c.drop(DropReason::OffloadMalformed);
                        continue;
                    }
                }
            } else {
                (None, 0)
            };
            match hdr {
                Some(h) if h.gso_type != VIRTIO_NET_HDR_GSO_NONE => {
                    pos = self.split_super_packet(b, c, h, from, n, pos, gso);
                }
                _ => {
                    let len = n - from;
                    c.tun_rx_packets += 1;
                    c.tun_rx_bytes += len as u64;
                    let pkt = &mut b.tun_read[from..n];
                    if let Some(h) = hdr {
                        if h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0
                            && !complete_checksum(pkt, h.csum_start, h.csum_offset)
                        {
                            c.drop(DropReason::OffloadMalformed);
                            continue;
                        }
                    }
                    b.udp_arena[pos + gl..pos + gl + len].copy_from_slice(pkt);
                    match self
                        .dp
                        .encapsulate(&mut b.udp_arena[pos..pos + gl + len], gl, len)
                    {
                        Ok(e) => {
                            let tos = b.udp_arena[pos + gl + 1];
                            let sock = self.sender_of(&b.udp_arena[pos + gl..pos + e.len]);
                            b.udp_socks.push(sock);
                            b.udp_items.push(UdpItem {
                                start: pos as u32,
                                len: e.len as u32,
                                segment: 0,
                                tos,
                                dst: e.peer,
                            });
                            pos += e.len;
                        }
                        Err(r) => c.drop(r),
                    }
                }
            }
        }
        self.flush_udp(b, c);
        Ok(drained)
    }

    /// Splits the super-packet `b.tun_read[from..n]` into GRE-framed segments
    /// at `b.udp_arena[pos..]`, queues them as GSO messages; returns the new `pos`.
    #[allow(clippy::too_many_arguments)]
    fn split_super_packet(
        &mut self,
        b: &mut Buffers,
        c: &mut Counters,
        h: VirtioNetHdr,
        from: usize,
        n: usize,
        pos: usize,
        gso: bool,
    ) -> usize {
        let gl = self.dp.header_len();
        if b.tun_read.get(from).map(|v| v >> 4) != Some(4) {
            c.tun_rx_packets += 1;
            c.drop(DropReason::NotIpv4);
            return pos;
        }
        let stride = gl + usize::from(h.hdr_len) + usize::from(h.gso_size);
        let room = ((ARENA - pos) / stride).min(TX_READ_ROOM);
        let mut views = b.udp_arena[pos..].chunks_exact_mut(stride);
        let mut slots: [&mut [u8]; TX_READ_ROOM] =
            std::array::from_fn(|_| views.next().unwrap_or_default());
        let k = match tun_rs::gso_split(
            &mut b.tun_read[from..n],
            h,
            &mut slots[..room],
            &mut b.tx_sizes[..room],
            gl,
            false,
        ) {
            Ok(k) => k,
            Err(_) => {
                c.tun_rx_packets += 1;
                c.drop(DropReason::OffloadMalformed);
                return pos;
            }
        };
        // Every segment carries the flow's addresses and ports: one socket.
        let sock = match k {
            0 => 0,
            _ => self.sender_of(&b.udp_arena[pos + gl..pos + gl + b.tx_sizes[0]]),
        };
        let items = &mut b.udp_items;
        let socks = &mut b.udp_socks;
        let mut push_run = |r: (usize, usize, std::net::Ipv4Addr, u8), bytes: usize| {
            push_run(items, pos, stride, r, bytes);
            socks.push(sock);
        };
        // Encapsulate each segment in place; consecutive good segments of
        // full size form runs that go out as GSO messages.
        let max_run = MAX_GSO_SEGMENTS.min(MAX_UDP_PAYLOAD / stride).max(1);
        let mut run: Option<(usize, usize, std::net::Ipv4Addr, u8)> = None; // (first, count, peer, tos)
        for i in 0..k {
            let len = b.tx_sizes[i];
            c.tun_rx_packets += 1;
            c.tun_rx_bytes += len as u64;
            let at = pos + i * stride;
            let r = self
                .dp
                .encapsulate(&mut b.udp_arena[at..at + gl + len], gl, len);
            match r {
                Ok(e) => {
                    let tos = b.udp_arena[at + gl + 1];
                    let full = e.len == stride;
                    match &mut run {
                        Some((_, count, peer, rtos))
                            if gso && *peer == e.peer && *rtos == tos && *count < max_run =>
                        {
                            *count += 1;
                        }
                        _ => {
                            if let Some(r) = run.take() {
                                push_run(r, stride * r.1);
                            }
                            run = Some((i, 1, e.peer, tos));
                        }
                    }
                    if !full || !gso {
                        // A short segment ends its run (it must be the last one).
                        if let Some(r) = run.take() {
                            let bytes = stride * (r.1 - 1) + e.len;
                            push_run(r, bytes);
                        }
                    }
                }
                Err(r) => {
                    c.drop(r);
                    if let Some(r) = run.take() {
                        push_run(r, stride * r.1);
                    }
                }
            }
        }
        if let Some(r) = run.take() {
            push_run(r, stride * r.1);
        }
        pos + k * stride
    }

    /// Sends the queued messages; refused GSO messages are retried datagram by
    /// datagram, datagrams refused as too big take the ICMP/fragment path.
    fn flush_udp(&mut self, b: &mut Buffers, c: &mut Counters) {
        let (_, port, _) = self.udp_port();
        let mut off = 0;
        let mut retried = usize::MAX;
        while off < b.udp_items.len() {
            // One sendmmsg per run of messages leaving through the same socket.
            let sock = b.udp_socks[off];
            let run_end = b.udp_socks[off..]
                .iter()
                .position(|&s| s != sock)
                .map_or(b.udp_items.len(), |p| off + p);
            let fd = self.sock_fd(sock);
            match b
                .udp_tx
                .send(fd, &b.udp_arena, port, &b.udp_items[off..run_end])
            {
                Ok(n) if n > 0 => {
                    for it in &b.udp_items[off..off + n] {
                        let (pkts, bytes) = wire_counts(it);
                        c.tx_packets += pkts;
                        c.tx_bytes += bytes;
                    }
                    off += n;
                }
                Ok(_) => {
                    c.error(IoError::SendOther);
                    off += 1;
                }
                // Maybe the socket's pending asynchronous error (see the worker doc):
                // the same message once more before blaming it.
                Err(_) if retried != off => retried = off,
                Err(e) => {
                    let it = b.udp_items[off];
                    let errno = e.raw_os_error().unwrap_or(0);
                    if it.segment > 0 && it.len > u32::from(it.segment) {
                        self.send_segments(b, c, it, fd);
                    } else if errno == libc::EMSGSIZE {
                        let (s, l) = (it.start as usize, it.len as usize);
                        b.spill[..l].copy_from_slice(&b.udp_arena[s..s + l]);
                        self.too_big(b, c, l, it.dst);
                    } else {
                        c.error(IoError::from_send_errno(errno));
                    }
                    off += 1;
                }
            }
        }
    }

    /// Sends the datagrams of a GSO message one by one.
    fn send_segments(&mut self, b: &mut Buffers, c: &mut Counters, it: UdpItem, fd: i32) {
        let (_, port, _) = self.udp_port();
        let seg = usize::from(it.segment);
        let end = (it.start + it.len) as usize;
        let mut at = it.start as usize;
        while at < end {
            let len = seg.min(end - at);
            let one = [UdpItem {
                start: at as u32,
                len: len as u32,
                segment: 0,
                ..it
            }];
            match b.udp_tx.send(fd, &b.udp_arena, port, &one) {
                Ok(1) => {
                    c.tx_packets += 1;
                    c.tx_bytes += (len + UDP_OUTER_LEN) as u64;
                }
                Ok(_) => c.error(IoError::SendOther),
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    b.spill[..len].copy_from_slice(&b.udp_arena[at..at + len]);
                    self.too_big(b, c, len, it.dst);
                }
                Err(e) => c.error(IoError::from_send_errno(e.raw_os_error().unwrap_or(0))),
            }
            at += len;
        }
    }

    /// Receives up to RX_MESSAGES messages (each possibly many coalesced
    /// datagrams) and delivers the inner packets. Ok(true) once drained.
    pub(super) fn ingress_batch_udp(
        &mut self,
        b: &mut Buffers,
        c: &mut Counters,
    ) -> Result<bool, String> {
        let (fd, _, _) = self.udp_port();
        let recv = |b: &mut Buffers| b.udp_rx.recv(fd, &mut b.udp_rx_bufs, &mut b.udp_rx_out);
        // As in GRE mode: a first failure may be the pending asynchronous error.
        let n = match recv(b).or_else(|e| match e.kind() {
            io::ErrorKind::WouldBlock => Err(e),
            _ => recv(b),
        }) {
            Ok(n) => {
                c.errors[IoError::RxOverflow as usize] = u64::from(b.udp_rx.rx_queue_drops());
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
            let o = b.udp_rx_out[i];
            if o.len == usize::MAX {
                c.rx_packets += 1;
                c.drop(DropReason::Truncated);
                continue;
            }
            let Some(src) = o.src else {
                c.rx_packets += 1;
                c.drop(DropReason::OuterSrcNotUnderlay);
                continue;
            };
            let seg = o.segment.max(1);
            let mut at = 0;
            // Runs at least once: an empty datagram is a received packet too
            // (counted, then dropped as too_short).
            loop {
                let len = seg.min(o.len - at);
                c.rx_packets += 1;
                c.rx_bytes += (len + UDP_OUTER_LEN) as u64;
                let dgram = &mut b.udp_rx_bufs[i][at..at + len];
                match self.dp.decapsulate_udp(dgram, len, src, o.tos) {
                    Ok(d) => g.push(
                        &dgram[d.start..d.start + d.len],
                        Piece {
                            buf: i as u32,
                            start: (at + d.start) as u32,
                            len: d.len as u32,
                        },
                    ),
                    Err(r) => c.drop(r),
                }
                at += len;
                if at >= o.len {
                    break;
                }
            }
        }
        g.finish();
        self.write_coalesced(&b.coalescer, &b.udp_rx_bufs, c)?;
        Ok(n < RX_MESSAGES)
    }
}

/// Queues the run `(first, count, peer, tos)` of segments starting at
/// `pos + first * stride`, `bytes` long, as one GSO message.
fn push_run(
    items: &mut Vec<UdpItem>,
    pos: usize,
    stride: usize,
    run: (usize, usize, std::net::Ipv4Addr, u8),
    bytes: usize,
) {
    let (first, count, peer, tos) = run;
    items.push(UdpItem {
        start: (pos + first * stride) as u32,
        len: bytes as u32,
        segment: if count > 1 { stride as u16 } else { 0 },
        tos,
        dst: peer,
    });
}

/// Datagrams and bytes on the wire (outer IPv4 + UDP included) of a message.
fn wire_counts(it: &UdpItem) -> (u64, u64) {
    let len = it.len as usize;
    let pkts = if it.segment > 0 {
        len.div_ceil(usize::from(it.segment))
    } else {
        1
    };
    (pkts as u64, (len + pkts * UDP_OUTER_LEN) as u64)
}

/// Fills in a transport checksum the kernel left partial (virtio-net
/// NEEDS_CSUM): the field holds the pseudo-header sum; the checksum covers
/// everything from `start`. False if the offsets lie outside the packet.
fn complete_checksum(pkt: &mut [u8], start: u16, offset: u16) -> bool {
    let (start, at) = (usize::from(start), usize::from(start) + usize::from(offset));
    if at + 2 > pkt.len() || start > at {
        return false;
    }
    let sum = crate::wire::checksum::checksum(&pkt[start..]);
    pkt[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    true
}

// The constants above must agree with the worker's ingress layout.
const _: () = assert!(HEADROOM >= 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_counts_per_message() {
        let one = UdpItem {
            start: 0,
            len: 1000,
            segment: 0,
            tos: 0,
            dst: std::net::Ipv4Addr::LOCALHOST,
        };
        assert_eq!(wire_counts(&one), (1, 1028));
        let gso = UdpItem {
            len: 2500,
            segment: 1000,
            ..one
        };
        assert_eq!(wire_counts(&gso), (3, 2500 + 3 * 28));
    }

    #[test]
    fn complete_checksum_matches_a_full_computation() {
        // UDP over IPv4 with the pseudo-header sum pre-filled, as the kernel does.
        let mut p = vec![0u8; 20 + 8 + 5];
        p[20..22].copy_from_slice(&1234u16.to_be_bytes());
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        p[24..26].copy_from_slice(&13u16.to_be_bytes());
        p[28..].copy_from_slice(b"hello");
        let (src, dst) = ([10u8, 0, 0, 1], [10u8, 0, 0, 2]);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src);
        pseudo.extend_from_slice(&dst);
        pseudo.extend_from_slice(&[0, 17, 0, 13]);
        let partial = crate::wire::checksum::fold(crate::wire::checksum::sum(&pseudo, 0));
        p[26..28].copy_from_slice(&partial.to_be_bytes());
        assert!(complete_checksum(&mut p, 20, 6));
        let mut whole = pseudo.clone();
        whole.extend_from_slice(&p[20..]);
        assert!(crate::wire::checksum::verify(&whole));
        assert!(!complete_checksum(&mut p, 20, 20));
    }
}
