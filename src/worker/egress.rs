//! Egress, the half every underlay shares: one read from the TUN (with a
//! virtio-net header when offload is on) becomes encapsulated packets in a
//! contiguous arena, ready for the underlay to send.
//!
//! A TSO/USO super-packet is split by `tun_rs::gso_split` straight into the
//! arena at a stride of (meshfwd's header + one segment), leaving room for
//! the header in front of each segment; a plain packet is copied in after the
//! same room. `Datapath::encapsulate` then writes each header in place. Each
//! good packet is handed to the underlay as a [`Segment`]; drops are counted.
//! No I/O happens here (the caller reads the TUN), so benches and tests run it
//! as the worker does.

use crate::counters::Counters;
use crate::datapath::{Datapath, DropReason};
use std::net::Ipv4Addr;
use tun_rs::{VirtioNetHdr, VIRTIO_NET_HDR_LEN};

/// Largest IPv4 packet.
pub const MAX_PACKET: usize = 65535;
/// Egress arena: room for a batch of super-packets split into segments.
pub const ARENA: usize = 2 << 20;
/// Free arena bytes required before another TUN read: one 64 KiB super-packet
/// grows by a header copy per segment (at most `MAX_SEGMENTS` are accepted).
pub const READ_ROOM: usize = 160 << 10;
/// Most segments one super-packet may split into (64 KiB at an MSS ≥ 512).
pub const MAX_SEGMENTS: usize = 128;

const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;

/// One encapsulated packet: `arena[start..start + len]` (meshfwd's headers
/// first) goes to underlay address `peer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub start: usize,
    pub len: usize,
    pub peer: Ipv4Addr,
    /// The inner packet's TOS byte (DSCP + ECN), for an outer header the
    /// kernel writes.
    pub tos: u8,
    /// Distance between consecutive segments of the same super-packet (a
    /// full segment is exactly this long); 0 for a packet read on its own.
    pub stride: usize,
    /// The first segment of its TUN read: nothing before it belongs to the
    /// same super-packet (or flow), even if it lies right before it.
    pub first: bool,
}

/// The egress buffers of one worker.
pub struct Egress {
    /// One raw TUN read (virtio-net header + up to 64 KiB).
    pub read: Vec<u8>,
    pub arena: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
}

impl Default for Egress {
    fn default() -> Self {
        Self::new()
    }
}

impl Egress {
    pub fn new() -> Egress {
        Egress {
            read: vec![0; VIRTIO_NET_HDR_LEN + MAX_PACKET + 1],
            arena: vec![0; ARENA],
            pos: 0,
            sizes: vec![0; MAX_SEGMENTS],
        }
    }

    /// Starts a new batch (the previous one was sent).
    pub fn clear(&mut self) {
        self.pos = 0;
    }

    /// Whether one more TUN read is sure to fit.
    pub fn has_room(&self) -> bool {
        ARENA - self.pos >= READ_ROOM
    }

    /// Takes `read[..n]` (one TUN read; `vnet`: it starts with a virtio-net
    /// header), encapsulates what it holds into the arena and hands each
    /// packet to `push` with the arena. Counts what was read and dropped.
    pub fn take(
        &mut self,
        n: usize,
        vnet: bool,
        dp: &Datapath,
        c: &mut Counters,
        push: &mut impl FnMut(&[u8], Segment),
    ) {
        let n = n.min(self.read.len());
        let (hdr, from) = if vnet {
            match (n > VIRTIO_NET_HDR_LEN)
                .then(|| VirtioNetHdr::decode(&self.read[..VIRTIO_NET_HDR_LEN]).ok())
                .flatten()
            {
                Some(h) => (Some(h), VIRTIO_NET_HDR_LEN),
                None => {
                    c.drop(DropReason::OffloadMalformed);
                    return;
                }
            }
        } else {
            (None, 0)
        };
        match hdr {
            Some(h) if h.gso_type != VIRTIO_NET_HDR_GSO_NONE => self.split(h, from, n, dp, c, push),
            _ => {
                let len = n - from;
                c.tun_rx_packets += 1;
                c.tun_rx_bytes += len as u64;
                let pkt = &mut self.read[from..n];
                if let Some(h) = hdr {
                    if h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0
                        && !complete_checksum(pkt, h.csum_start, h.csum_offset)
                    {
                        c.drop(DropReason::OffloadMalformed);
                        return;
                    }
                }
                let hl = dp.header_len();
                let at = self.pos;
                self.arena[at + hl..at + hl + len].copy_from_slice(pkt);
                match dp.encapsulate(&mut self.arena[at..at + hl + len], hl, len) {
                    Ok(e) => {
                        self.pos += e.len;
                        let seg = Segment {
                            start: at,
                            len: e.len,
                            peer: e.peer,
                            tos: inner_tos(&self.arena[at + hl..]),
                            stride: 0,
                            first: true,
                        };
                        push(&self.arena, seg);
                    }
                    Err(r) => c.drop(r),
                }
            }
        }
    }

    /// Splits the super-packet `read[from..n]` into headroom-prefixed
    /// segments at `arena[pos..]` and encapsulates each in place.
    fn split(
        &mut self,
        h: VirtioNetHdr,
        from: usize,
        n: usize,
        dp: &Datapath,
        c: &mut Counters,
        push: &mut impl FnMut(&[u8], Segment),
    ) {
        let hl = dp.header_len();
        // TSO6 super-packets only with the IPv6 overlay; gso_split then
        // writes each segment's payload length and the IPv6 pseudo-header sum.
        let is_v6 = match self.read.get(from).map(|v| v >> 4) {
            Some(4) => false,
            Some(6) if dp.overlay6().is_some() => true,
            _ => {
                c.tun_rx_packets += 1;
                c.drop(DropReason::NotIpv4);
                return;
            }
        };
        let stride = hl + usize::from(h.hdr_len) + usize::from(h.gso_size);
        let pos = self.pos;
        let room = ((ARENA - pos) / stride).min(MAX_SEGMENTS);
        let mut views = self.arena[pos..].chunks_exact_mut(stride);
        let mut slots: [&mut [u8]; MAX_SEGMENTS] =
            std::array::from_fn(|_| views.next().unwrap_or_default());
        let k = match tun_rs::gso_split(
            &mut self.read[from..n],
            h,
            &mut slots[..room],
            &mut self.sizes[..room],
            hl,
            is_v6,
        ) {
            // (no segment: a GSO read without payload; counted, not lost)
            Ok(k) if k > 0 => k,
            _ => {
                c.tun_rx_packets += 1;
                c.drop(DropReason::OffloadMalformed);
                return;
            }
        };
        self.pos = pos + k * stride;
        for i in 0..k {
            let len = self.sizes[i];
            c.tun_rx_packets += 1;
            c.tun_rx_bytes += len as u64;
            let at = pos + i * stride;
            match dp.encapsulate(&mut self.arena[at..at + hl + len], hl, len) {
                Ok(e) => {
                    let seg = Segment {
                        start: at,
                        len: e.len,
                        peer: e.peer,
                        tos: inner_tos(&self.arena[at + hl..]),
                        stride,
                        first: i == 0,
                    };
                    push(&self.arena, seg);
                }
                Err(r) => c.drop(r),
            }
        }
    }
}

/// The inner packet's TOS byte (IPv4) or Traffic Class (IPv6): DSCP + ECN.
#[inline]
pub fn inner_tos(inner: &[u8]) -> u8 {
    match inner {
        [b0, b1, ..] if b0 >> 4 == 6 => (b0 << 4) | (b1 >> 4),
        [_, b1, ..] => *b1,
        _ => 0,
    }
}

/// Fills in a transport checksum the kernel left partial (virtio-net
/// NEEDS_CSUM): the field holds the pseudo-header sum; the checksum covers
/// everything from `start`. False if the offsets lie outside the packet.
pub fn complete_checksum(pkt: &mut [u8], start: u16, offset: u16) -> bool {
    let (start, at) = (usize::from(start), usize::from(start) + usize::from(offset));
    if at + 2 > pkt.len() || start > at {
        return false;
    }
    let sum = crate::wire::checksum::checksum(&pkt[start..]);
    pkt[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_tos_of_both_families() {
        assert_eq!(inner_tos(&[0x45, 0xb8, 0, 0]), 0xb8);
        // IPv6: version 6, Traffic Class 0xb9 spread over the first two bytes
        assert_eq!(inner_tos(&[0x6b, 0x90, 0, 0]), 0xb9);
        assert_eq!(inner_tos(&[0x45]), 0);
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
