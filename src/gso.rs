//! Receive offload metadata: what the kernel says about a GRE packet it
//! merged (GRE GRO) or left with a partial checksum, and the virtio-net
//! header the decapsulated inner packet is written to the TUN with.
//!
//! Where the kernel has GRE GRO (`gre_offload`, built into the core) and GRO
//! is on on the underlay device, consecutive GRE packets of one inner TCP
//! flow (same outer addresses, TOS, TTL, GRE flags and key; same inner
//! addresses and ports; no sequence numbers) are merged into one
//! super-packet before any socket sees it: outer and inner IPv4 lengths and
//! header checksums are rewritten, the GRE checksum (if any) is the first
//! segment's, and the inner TCP checksum field holds only the pseudo-header
//! sum (`CHECKSUM_PARTIAL`). Every segment's checksums were verified on the
//! way in (`gre_gro_receive`, `tcp4_gro_receive`; a bad one is never merged).
//!
//! A packet socket with `PACKET_VNET_HDR` receives that metadata in front of
//! each packet (`virtio_net_hdr_from_skb`): GSO type and segment size for a
//! merged packet, `NEEDS_CSUM` with `csum_start`/`csum_offset` (counted from
//! the link-layer header) for a partial checksum, `DATA_VALID` for a
//! checksum the kernel verified. [`RxOffload::inner_header`] turns it into
//! the header of the inner packet: the same segmentation, the checksum start
//! moved back by everything decapsulation stripped, and only when the
//! metadata fits the inner packet exactly (an inner TCP/IPv4 packet, the
//! checksum field where TCP's is). Without that metadata nothing is trusted:
//! a packet without it goes through the ordinary path, which verifies every
//! checksum itself.

use tun_rs::VIRTIO_NET_HDR_LEN;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`, `_TCPV4`, and the `_ECN` flag bit.
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_ECN: u8 = 0x80;

const TCP: u8 = 6;
const UDP: u8 = 17;
/// Where the checksum lies in a TCP and a UDP header.
const TCP_CSUM_OFFSET: u16 = 16;
const UDP_CSUM_OFFSET: u16 = 6;

/// A received packet's virtio-net header (the kernel writes it in the
/// host's byte order, little-endian on every platform this runs on).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxOffload {
    pub flags: u8,
    pub gso_type: u8,
    pub gso_size: u16,
    /// From the start of the link-layer header.
    pub csum_start: u16,
    pub csum_offset: u16,
}

/// The TUN write of an inner packet with kernel metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InnerOffload {
    /// Its virtio-net header.
    pub hdr: [u8; VIRTIO_NET_HDR_LEN],
    /// The segments it stands for (1 without GSO), for the TUN counters.
    pub segments: u32,
}

impl RxOffload {
    /// Reads `struct virtio_net_hdr` (flags, gso_type, hdr_len, gso_size,
    /// csum_start, csum_offset; `hdr_len` is only a hint and not kept).
    pub fn parse(b: &[u8; VIRTIO_NET_HDR_LEN]) -> RxOffload {
        let u = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        RxOffload {
            flags: b[0],
            gso_type: b[1],
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        }
    }

    /// Nothing to carry over: neither merged nor a partial checksum
    /// (`DATA_VALID` alone carries nothing; the ordinary path verifies).
    #[inline]
    pub fn is_plain(&self) -> bool {
        self.flags & F_NEEDS_CSUM == 0 && self.gso_type == GSO_NONE
    }

    /// A merged packet (GSO): its GRE checksum is the first segment's only.
    #[inline]
    pub fn is_gso(&self) -> bool {
        self.gso_type != GSO_NONE
    }

    /// The virtio-net header for the inner IPv4 packet `inner`, which starts
    /// `stripped` bytes after the link-layer header (link header, outer IPv4
    /// and GRE). `None` when the metadata does not describe `inner` exactly:
    /// a GSO type other than TCPv4 (with or without ECN), no `NEEDS_CSUM`
    /// on a merged packet, a checksum start other than the inner transport
    /// header, a checksum offset other than TCP's (or, without GSO, UDP's),
    /// a fragment, or headers longer than the packet.
    pub fn inner_header(&self, stripped: usize, inner: &[u8]) -> Option<InnerOffload> {
        if self.flags & F_NEEDS_CSUM == 0 {
            return None;
        }
        let (&v, proto) = (inner.first()?, *inner.get(9)?);
        let ihl = usize::from(v & 0x0f) * 4;
        let frag = u16::from_be_bytes([*inner.get(6)?, *inner.get(7)?]) & 0x3fff;
        if v >> 4 != 4 || ihl < 20 || frag != 0 {
            return None;
        }
        if usize::from(self.csum_start).checked_sub(stripped)? != ihl {
            return None;
        }
        let l4_hdr = match (proto, self.csum_offset) {
            (TCP, TCP_CSUM_OFFSET) => usize::from(*inner.get(ihl + 12)? >> 4) * 4,
            (UDP, UDP_CSUM_OFFSET) if !self.is_gso() => 8,
            _ => return None,
        };
        let hdr_len = ihl + l4_hdr;
        if (proto == TCP && l4_hdr < 20) || hdr_len > inner.len() {
            return None;
        }
        let (gso_type, gso_size, segments) = if self.is_gso() {
            let payload = inner.len() - hdr_len;
            let size = usize::from(self.gso_size);
            if self.gso_type & !GSO_ECN != GSO_TCPV4 || size == 0 || payload == 0 {
                return None;
            }
            (self.gso_type, self.gso_size, payload.div_ceil(size) as u32)
        } else {
            (GSO_NONE, 0, 1)
        };
        let mut hdr = [0u8; VIRTIO_NET_HDR_LEN];
        hdr[0] = F_NEEDS_CSUM;
        hdr[1] = gso_type;
        hdr[2..4].copy_from_slice(&(hdr_len as u16).to_le_bytes());
        hdr[4..6].copy_from_slice(&gso_size.to_le_bytes());
        hdr[6..8].copy_from_slice(&(ihl as u16).to_le_bytes());
        hdr[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        Some(InnerOffload { hdr, segments })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ethernet (14) + outer IPv4 (20) + GRE with key (8).
    const STRIPPED: usize = 42;

    /// An inner TCP/IPv4 packet: `ihl` bytes of IPv4, a 32-byte TCP header
    /// (timestamps), `payload` bytes.
    fn inner(ihl: usize, payload: usize) -> Vec<u8> {
        let mut p = vec![0u8; ihl + 32 + payload];
        p[0] = 0x40 | (ihl / 4) as u8;
        p[6] = 0x40; // DF
        p[9] = TCP;
        p[ihl + 12] = 8 << 4;
        p
    }

    /// What `virtio_net_hdr_from_skb` writes for a GRO-merged GRE packet:
    /// gso TCPV4, NEEDS_CSUM, csum_start at the inner TCP header counted
    /// from the Ethernet header, hdr_len = skb_headlen (a hint).
    const MERGED: [u8; 10] = [
        0x01, 0x01, // flags NEEDS_CSUM, gso_type TCPV4
        0x80, 0x00, // hdr_len 128 (whatever the linear part was)
        0x7c, 0x05, // gso_size 1404
        0x3e, 0x00, // csum_start 62 = 14 + 20 + 8 + 20
        0x10, 0x00, // csum_offset 16
    ];

    #[test]
    fn parses_the_kernels_bytes() {
        let o = RxOffload::parse(&MERGED);
        assert_eq!(
            o,
            RxOffload {
                flags: 1,
                gso_type: 1,
                gso_size: 1404,
                csum_start: 62,
                csum_offset: 16
            }
        );
        assert!(!o.is_plain() && o.is_gso());
        // DATA_VALID only, or nothing: the ordinary path
        assert!(RxOffload::parse(&[2, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_plain());
        assert!(RxOffload::parse(&[0; 10]).is_plain());
    }

    #[test]
    fn merged_tcp_becomes_a_tso_write_of_the_inner_packet() {
        let p = inner(20, 3 * 1404 + 100);
        let got = RxOffload::parse(&MERGED)
            .inner_header(STRIPPED, &p)
            .unwrap();
        assert_eq!(
            got.hdr,
            [
                0x01, 0x01, // NEEDS_CSUM, TCPV4
                52, 0x00, // hdr_len: IPv4 20 + TCP 32
                0x7c, 0x05, // gso_size 1404, unchanged
                20, 0x00, // csum_start: the inner TCP header
                16, 0x00, // csum_offset: TCP's checksum
            ]
        );
        assert_eq!(got.segments, 4);
        // ECN (CWR seen) is kept
        let mut ecn = MERGED;
        ecn[1] = GSO_TCPV4 | GSO_ECN;
        let got = RxOffload::parse(&ecn).inner_header(STRIPPED, &p).unwrap();
        assert_eq!(got.hdr[1], 0x81);
    }

    #[test]
    fn inner_ip_options_and_other_link_headers_shift_the_start() {
        // inner IPv4 with 8 bytes of options; no link header (ARPHRD_NONE),
        // GRE without key: stripped 24, csum_start 24 + 28
        let p = inner(28, 2000);
        let mut h = MERGED;
        h[6] = 52;
        let got = RxOffload::parse(&h).inner_header(24, &p).unwrap();
        assert_eq!(&got.hdr[2..4], &[60, 0]);
        assert_eq!(&got.hdr[6..8], &[28, 0]);
        assert_eq!(got.segments, 2);
    }

    #[test]
    fn partial_checksum_without_gso() {
        // a single TCP segment with CHECKSUM_PARTIAL (a local sender on a veth)
        let p = inner(20, 1000);
        let h = [1, 0, 0, 0, 0, 0, 62, 0, 16, 0];
        let got = RxOffload::parse(&h).inner_header(STRIPPED, &p).unwrap();
        assert_eq!(got.hdr, [1, 0, 52, 0, 0, 0, 20, 0, 16, 0]);
        assert_eq!(got.segments, 1);
        // UDP: checksum at 6, header 8
        let mut u = p.clone();
        u[9] = UDP;
        let h = [1, 0, 0, 0, 0, 0, 62, 0, 6, 0];
        let got = RxOffload::parse(&h).inner_header(STRIPPED, &u).unwrap();
        assert_eq!(got.hdr, [1, 0, 28, 0, 0, 0, 20, 0, 6, 0]);
    }

    #[test]
    fn metadata_that_does_not_fit_the_inner_packet_is_refused() {
        let p = inner(20, 3000);
        let o = RxOffload::parse(&MERGED);
        let bad = |o: RxOffload, stripped: usize, p: &[u8]| o.inner_header(stripped, p);
        // checksum start one byte off either way, or before the inner packet
        assert_eq!(bad(o, STRIPPED + 1, &p), None);
        assert_eq!(bad(o, STRIPPED - 1, &p), None);
        assert_eq!(bad(o, 100, &p), None);
        // merged without NEEDS_CSUM; DATA_VALID instead
        assert_eq!(bad(RxOffload { flags: 2, ..o }, STRIPPED, &p), None);
        // other GSO types: UDP (UFO), TCPV6, UDP_L4
        for t in [3, 4, 5] {
            assert_eq!(
                bad(RxOffload { gso_type: t, ..o }, STRIPPED, &p),
                None,
                "{t}"
            );
        }
        // checksum offset of UDP on a TCP packet, or a merged UDP packet
        assert_eq!(
            bad(
                RxOffload {
                    csum_offset: 6,
                    ..o
                },
                STRIPPED,
                &p
            ),
            None
        );
        let mut u = p.clone();
        u[9] = UDP;
        assert_eq!(
            bad(
                RxOffload {
                    csum_offset: 6,
                    ..o
                },
                STRIPPED,
                &u
            ),
            None
        );
        // inner protocol neither TCP nor UDP
        let mut icmp = p.clone();
        icmp[9] = 1;
        assert_eq!(bad(o, STRIPPED, &icmp), None);
        // gso_size 0; headers only, no payload to segment
        assert_eq!(bad(RxOffload { gso_size: 0, ..o }, STRIPPED, &p), None);
        assert_eq!(bad(o, STRIPPED, &p[..52]), None);
        // TCP data offset below 5 or beyond the packet
        let mut doff = p.clone();
        doff[32] = 4 << 4;
        assert_eq!(bad(o, STRIPPED, &doff), None);
        let mut long = inner(20, 0);
        long[32] = 15 << 4;
        assert_eq!(bad(o, STRIPPED, &long), None);
        // a fragment (MF, or an offset); IPv6; IHL < 5
        let mut mf = p.clone();
        mf[6] = 0x20;
        assert_eq!(bad(o, STRIPPED, &mf), None);
        let mut off = p.clone();
        off[7] = 1;
        assert_eq!(bad(o, STRIPPED, &off), None);
        let mut v6 = p.clone();
        v6[0] = 0x65;
        assert_eq!(bad(o, STRIPPED, &v6), None);
        let mut ihl = p.clone();
        ihl[0] = 0x44;
        assert_eq!(bad(o, STRIPPED, &ihl), None);
        // short or empty packets never panic
        for n in 0..60 {
            let _ = bad(o, STRIPPED, &p[..n]);
        }
    }
}
