//! Zero-copy receive coalescing (GRO) for the TUN.
//!
//! What flows through: decapsulated inner IPv4 and IPv6 packets, in arrival order, each
//! still where the socket put it (`Piece`: buffer index, offset, length) →
//! `push` either appends the packet to the open super-packet (same flow, next
//! TCP sequence number, headers the kernel's GRO would also merge, segment no
//! longer than the first) or closes that one and opens a new one → `finish`
//! closes the last → the I/O shell writes every `Write` with one `writev`:
//! `prefix` (virtio-net header, then for a merged packet its rewritten IPv4 +
//! TCP/UDP headers) followed by the pieces, which are never copied.
//!
//! Why not tun-rs' `GROTable`: it wants every packet in its own contiguous
//! buffer, copies each candidate once more into a fresh `Vec` (an allocation
//! per packet) and again into the first buffer when merging. With GRE-in-UDP
//! the segments of a flow already arrive back to back in one UDP GRO message,
//! so describing them is enough.
//!
//! Semantics follow Linux `tcp_gro_receive`/`inet_gro_receive`: merge only
//! ACK or ACK|PSH segments with payload, equal TOS/TTL/DF, addresses, ports,
//! ACK number, window, header length and option bytes; IPv4 IDs that go up by
//! one per segment (any ID with DF set: RFC 6864 makes it meaningless there);
//! PSH or a shorter segment ends a super-packet. Every merged segment's IPv4
//! header checksum and TCP (or UDP) checksum are verified first, because the
//! merged packet gets fresh headers and is written as NEEDS_CSUM, so the
//! kernel will not look at the payload again; a packet that fails is written
//! alone, as it came, and the kernel drops and counts it as it would.
//! IPv6 (issue #17): TCP segments directly behind the fixed header (no
//! extension headers) merge into a TCPV6 super-packet when version, Traffic
//! Class, flow label, next header, hop limit and addresses are equal and the
//! TCP rules above hold; the merged packet gets a fresh payload length and
//! the IPv6 pseudo-header sum. UDP over IPv6 is not merged.
//! IPv4 with options, fragments and everything else pass through alone, with
//! an empty virtio-net header (the kernel checks them itself: DATA_VALID means
//! nothing in this direction).

use crate::gso::InnerOffload;
use crate::wire::checksum;
use tun_rs::{VirtioNetHdr, VIRTIO_NET_HDR_LEN};

/// Longest prefix: virtio-net header + IPv6 (no extension headers) + TCP
/// with options.
pub const PREFIX_MAX: usize = VIRTIO_NET_HDR_LEN + IP6_LEN + 60;
/// Segments per super-packet (one `writev` iovec each, plus the prefix).
pub const MAX_SEGMENTS: usize = 64;
/// A super-packet is still one IPv4 packet.
const MAX_TOTAL: usize = 65535;

const IP_LEN: usize = 20;
const IP6_LEN: usize = 40;
const TCP: u8 = 6;
const UDP: u8 = 17;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
const F_NEEDS_CSUM: u8 = 1;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;

/// Where one packet (or one segment's payload) lies in the receive buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub buf: u32,
    pub start: u32,
    pub len: u32,
}

/// One TUN write: `prefix[..prefix_len]`, then `pieces[first..first + count]`.
#[derive(Clone, Copy, Debug)]
pub struct Write {
    pub prefix: [u8; PREFIX_MAX],
    pub prefix_len: u8,
    pub first: u32,
    pub count: u32,
    /// Inner packets and their bytes, for the TUN counters.
    pub packets: u32,
    pub bytes: u32,
}

impl Write {
    pub fn prefix(&self) -> &[u8] {
        &self.prefix[..usize::from(self.prefix_len)]
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp,
    Udp,
}

/// The super-packet being built.
struct Open {
    kind: Kind,
    /// Network header length: 20 (IPv4 without options) or 40 (IPv6).
    ip_len: usize,
    /// The first packet's IP + transport headers.
    hdr: [u8; IP6_LEN + 60],
    hdr_len: usize,
    /// The first packet, whole (used as is when nothing joins it).
    whole: Piece,
    /// Index in `pieces` of the first packet's entry.
    first_piece: usize,
    gso_size: usize,
    payload: usize,
    next_seq: u32,
    count: u32,
    psh: bool,
    /// No more segments may join (PSH seen, or a segment shorter than the first).
    closed: bool,
}

/// What `classify` found out about a packet.
enum Candidate {
    /// Written alone, unchanged.
    Alone,
    Tcp {
        /// IP + TCP header length.
        hdr_len: usize,
        /// IP header length (20 or 40).
        ip_len: usize,
        seq: u32,
        psh: bool,
    },
    Udp,
}

/// Per-worker coalescer; `writes` and `pieces` keep their capacity across
/// batches, so the steady state allocates nothing.
pub struct Coalescer {
    vnet: bool,
    udp: bool,
    open: Option<Open>,
    pub writes: Vec<Write>,
    pub pieces: Vec<Piece>,
}

impl Coalescer {
    /// `vnet`: the TUN takes virtio-net headers (offload on); without them
    /// every packet is written alone with no prefix. `udp`: the TUN accepts
    /// UDP segmentation offload, so UDP datagrams may be merged too.
    pub fn new(vnet: bool, udp: bool) -> Coalescer {
        Coalescer {
            vnet,
            udp: udp && vnet,
            open: None,
            writes: Vec::with_capacity(1024),
            pieces: Vec::with_capacity(4096),
        }
    }

    /// Forgets the previous batch.
    pub fn clear(&mut self) {
        self.open = None;
        self.writes.clear();
        self.pieces.clear();
    }

    /// Adds the inner packet `pkt`, which lies at `at` in the receive buffers.
    pub fn push(&mut self, pkt: &[u8], at: Piece) {
        debug_assert_eq!(pkt.len(), at.len as usize);
        if !self.vnet {
            self.alone(at);
            return;
        }
        match classify(pkt, self.udp) {
            Candidate::Alone => {
                self.close();
                self.alone(at);
            }
            Candidate::Tcp {
                hdr_len,
                ip_len,
                seq,
                psh,
            } => {
                if !self.append_tcp(pkt, at, hdr_len, ip_len, seq, psh) {
                    self.close();
                    self.open(Kind::Tcp, pkt, at, (ip_len, hdr_len), seq, psh);
                }
            }
            Candidate::Udp => {
                if !self.append_udp(pkt, at) {
                    self.close();
                    self.open(Kind::Udp, pkt, at, (IP_LEN, IP_LEN + 8), 0, false);
                }
            }
        }
    }

    /// Adds the inner packet at `at` that the kernel merged (or left with a
    /// partial checksum), as one write after the virtio-net header `o`
    /// computed from the kernel's metadata (`crate::gso`): never coalesced
    /// further, never checksum-verified here (its TCP checksum holds only
    /// the pseudo-header sum; the kernel completes it). `false` when the
    /// TUN takes no virtio-net headers: nothing is written (the caller
    /// drops and counts it).
    pub fn push_offloaded(&mut self, at: Piece, o: &InnerOffload) -> bool {
        if !self.vnet {
            return false;
        }
        self.close();
        self.pieces.push(at);
        let mut prefix = [0u8; PREFIX_MAX];
        prefix[..VIRTIO_NET_HDR_LEN].copy_from_slice(&o.hdr);
        self.writes.push(Write {
            prefix,
            prefix_len: VIRTIO_NET_HDR_LEN as u8,
            first: (self.pieces.len() - 1) as u32,
            count: 1,
            packets: o.segments,
            bytes: at.len,
        });
        true
    }

    /// Closes the open super-packet; call once after the last `push`.
    pub fn finish(&mut self) {
        self.close();
    }

    /// A write of one unmodified packet.
    fn alone(&mut self, at: Piece) {
        self.pieces.push(at);
        self.single(self.pieces.len() - 1);
    }

    /// A write of the one packet at `pieces[i]`, after an empty virtio-net
    /// header when the TUN takes them (all zeros: no GSO, no checksum offload).
    fn single(&mut self, i: usize) {
        self.writes.push(Write {
            prefix: [0u8; PREFIX_MAX],
            prefix_len: if self.vnet {
                VIRTIO_NET_HDR_LEN as u8
            } else {
                0
            },
            first: i as u32,
            count: 1,
            packets: 1,
            bytes: self.pieces[i].len,
        });
    }

    /// Records the payload of the packet at `at` (headers `hdr_len` long).
    fn push_payload(&mut self, at: Piece, hdr_len: usize) {
        self.pieces.push(Piece {
            buf: at.buf,
            start: at.start + hdr_len as u32,
            len: at.len - hdr_len as u32,
        });
    }

    /// Opens a super-packet with `pkt`, whose headers are `(ip_len, hdr_len)` long.
    fn open(
        &mut self,
        kind: Kind,
        pkt: &[u8],
        at: Piece,
        (ip_len, hdr_len): (usize, usize),
        seq: u32,
        psh: bool,
    ) {
        let payload = pkt.len() - hdr_len;
        let mut hdr = [0u8; IP6_LEN + 60];
        hdr[..hdr_len].copy_from_slice(&pkt[..hdr_len]);
        self.push_payload(at, hdr_len);
        self.open = Some(Open {
            kind,
            ip_len,
            hdr,
            hdr_len,
            whole: at,
            first_piece: self.pieces.len() - 1,
            gso_size: payload,
            payload,
            next_seq: seq.wrapping_add(payload as u32),
            count: 1,
            psh,
            closed: psh,
        });
    }

    /// Whether `pkt` may join the open packet on the IP level.
    fn joinable(o: &Open, kind: Kind, pkt: &[u8], payload: usize) -> bool {
        let h = &o.hdr;
        let common = o.kind == kind
            && !o.closed
            && (o.count as usize) < MAX_SEGMENTS
            && payload <= o.gso_size
            && o.hdr_len + o.payload + payload <= MAX_TOTAL;
        if o.ip_len == IP6_LEN {
            // Version, Traffic Class and flow label; next header and hop
            // limit; addresses: all equal (Linux ipv6_gro_receive).
            return common
                && pkt[..4] == h[..4]
                && pkt[6..8] == h[6..8]
                && pkt[8..IP6_LEN] == h[8..IP6_LEN];
        }
        common
            && pkt[1] == h[1]
            && pkt[8] == h[8]
            && (pkt[6] ^ h[6]) & 0x40 == 0
            && pkt[12..20] == h[12..20]
            && (h[6] & 0x40 != 0 || {
                // Without DF the IDs must go up by one, as Linux requires.
                let first = u16::from_be_bytes([h[4], h[5]]);
                u16::from_be_bytes([pkt[4], pkt[5]]) == first.wrapping_add(o.count as u16)
            })
    }

    fn append_tcp(
        &mut self,
        pkt: &[u8],
        at: Piece,
        hdr_len: usize,
        ip_len: usize,
        seq: u32,
        psh: bool,
    ) -> bool {
        let Some(o) = &mut self.open else {
            return false;
        };
        let payload = pkt.len() - hdr_len;
        let t = ip_len;
        let h = &o.hdr;
        let same = ip_len == o.ip_len
            && Self::joinable(o, Kind::Tcp, pkt, payload)
            && hdr_len == o.hdr_len
            && seq == o.next_seq
            // ports, then ACK number
            && pkt[t..t + 4] == h[t..t + 4]
            && pkt[t + 8..t + 12] == h[t + 8..t + 12]
            // data offset and window (flags were checked by classify)
            && pkt[t + 12] == h[t + 12]
            && pkt[t + 14..t + 16] == h[t + 14..t + 16]
            // options, byte for byte (timestamps included), as Linux does
            && pkt[t + 20..hdr_len] == h[t + 20..hdr_len];
        if !same {
            return false;
        }
        o.payload += payload;
        o.next_seq = seq.wrapping_add(payload as u32);
        o.count += 1;
        o.psh |= psh;
        o.closed = psh || payload < o.gso_size;
        self.push_payload(at, hdr_len);
        true
    }

    fn append_udp(&mut self, pkt: &[u8], at: Piece) -> bool {
        let Some(o) = &mut self.open else {
            return false;
        };
        let hdr_len = IP_LEN + 8;
        let payload = pkt.len() - hdr_len;
        let same = o.ip_len == IP_LEN
            && Self::joinable(o, Kind::Udp, pkt, payload)
            && pkt[IP_LEN..IP_LEN + 4] == o.hdr[IP_LEN..IP_LEN + 4];
        if !same {
            return false;
        }
        o.payload += payload;
        o.count += 1;
        o.closed = payload < o.gso_size;
        self.push_payload(at, hdr_len);
        true
    }

    fn close(&mut self) {
        let Some(o) = self.open.take() else { return };
        if o.count == 1 {
            // Nothing joined: write the first packet as it came.
            self.pieces[o.first_piece] = o.whole;
            self.single(o.first_piece);
            return;
        }
        let bytes = (o.count as usize * o.hdr_len + o.payload) as u32;
        let mut prefix = [0u8; PREFIX_MAX];
        let v6 = o.ip_len == IP6_LEN;
        let (gso_type, csum_offset, proto) = match (o.kind, v6) {
            (Kind::Tcp, false) => (GSO_TCPV4, 16u16, TCP),
            (Kind::Tcp, true) => (GSO_TCPV6, 16u16, TCP),
            (Kind::Udp, _) => (GSO_UDP_L4, 6u16, UDP),
        };
        let ip_len = o.ip_len;
        let v = VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            gso_type,
            hdr_len: o.hdr_len as u16,
            gso_size: o.gso_size as u16,
            csum_start: ip_len as u16,
            csum_offset,
        };
        let _ = v.encode(&mut prefix);
        let h = &mut prefix[VIRTIO_NET_HDR_LEN..VIRTIO_NET_HDR_LEN + o.hdr_len];
        h.copy_from_slice(&o.hdr[..o.hdr_len]);
        let total = o.hdr_len + o.payload;
        let l4_len = total - ip_len;
        let pseudo = if v6 {
            // IPv6: a payload length, no header checksum.
            h[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            pseudo_sum6(&h[8..24], &h[24..40], proto, l4_len as u32)
        } else {
            h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            h[10..12].fill(0);
            let ip_csum = checksum::checksum(&h[..IP_LEN]);
            h[10..12].copy_from_slice(&ip_csum.to_be_bytes());
            pseudo_sum(&h[12..16], &h[16..20], proto, l4_len as u16)
        };
        if o.kind == Kind::Tcp && o.psh {
            h[ip_len + 13] |= TCP_PSH;
        }
        if o.kind == Kind::Udp {
            h[IP_LEN + 4..IP_LEN + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        }
        // NEEDS_CSUM: the field holds the pseudo-header sum, not complemented;
        // the kernel adds the rest when it segments or delivers.
        let at = ip_len + usize::from(csum_offset);
        h[at..at + 2].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
        self.writes.push(Write {
            prefix,
            prefix_len: (VIRTIO_NET_HDR_LEN + o.hdr_len) as u8,
            first: o.first_piece as u32,
            count: o.count,
            packets: o.count,
            bytes,
        });
    }
}

fn pseudo_sum(src: &[u8], dst: &[u8], proto: u8, len: u16) -> u64 {
    let l = len.to_be_bytes();
    checksum::sum(
        &[
            src[0], src[1], src[2], src[3], dst[0], dst[1], dst[2], dst[3], 0, proto, l[0], l[1],
        ],
        0,
    )
}

/// The IPv6 pseudo-header sum (RFC 8200 section 8.1).
fn pseudo_sum6(src: &[u8], dst: &[u8], proto: u8, len: u32) -> u64 {
    let l = len.to_be_bytes();
    let tail = [l[0], l[1], l[2], l[3], 0, 0, 0, proto];
    checksum::sum(&tail, checksum::sum(dst, checksum::sum(src, 0)))
}

/// True when the TCP checksum of IPv6 packet `pkt` (no extension headers) is good.
fn transport_valid6(pkt: &[u8]) -> bool {
    let l4 = &pkt[IP6_LEN..];
    let pseudo = pseudo_sum6(&pkt[8..24], &pkt[24..40], TCP, l4.len() as u32);
    tun_rs::checksum(l4, pseudo) == 0xffff
}

/// IPv6: only TCP directly after the fixed header (no extension headers),
/// ACK or ACK|PSH with payload, a payload length that matches, a good
/// checksum. Anything else is written alone.
fn classify6(pkt: &[u8]) -> Candidate {
    if pkt.len() < IP6_LEN + 20
        || usize::from(u16::from_be_bytes([pkt[4], pkt[5]])) + IP6_LEN != pkt.len()
        || pkt[6] != TCP
    {
        return Candidate::Alone;
    }
    let hdr_len = IP6_LEN + usize::from(pkt[IP6_LEN + 12] >> 4) * 4;
    let flags = pkt[IP6_LEN + 13];
    if hdr_len < IP6_LEN + 20
        || hdr_len >= pkt.len()
        || (flags != TCP_ACK && flags != TCP_ACK | TCP_PSH)
        || !transport_valid6(pkt)
    {
        return Candidate::Alone;
    }
    let t = IP6_LEN;
    Candidate::Tcp {
        hdr_len,
        ip_len: IP6_LEN,
        seq: u32::from_be_bytes([pkt[t + 4], pkt[t + 5], pkt[t + 6], pkt[t + 7]]),
        psh: flags & TCP_PSH != 0,
    }
}

/// True when the transport checksum of `pkt` (IPv4 header `IP_LEN` long) is good.
fn transport_valid(pkt: &[u8], proto: u8) -> bool {
    let l4 = &pkt[IP_LEN..];
    let pseudo = pseudo_sum(&pkt[12..16], &pkt[16..20], proto, l4.len() as u16);
    // tun-rs' checksum is SIMD-dispatched; the sums are interchangeable.
    tun_rs::checksum(l4, pseudo) == 0xffff
}

fn classify(pkt: &[u8], udp: bool) -> Candidate {
    if pkt.first().is_some_and(|b| b >> 4 == 6) {
        return classify6(pkt);
    }
    if pkt.len() < IP_LEN
        || pkt[0] != 0x45
        || usize::from(u16::from_be_bytes([pkt[2], pkt[3]])) != pkt.len()
        // MF or a fragment offset: not a whole datagram
        || (pkt[6] & 0x3f) != 0
        || pkt[7] != 0
        // the merged packet gets a fresh header checksum: never launder a bad one
        || !checksum::verify(&pkt[..IP_LEN])
    {
        return Candidate::Alone;
    }
    match pkt[9] {
        TCP if pkt.len() >= IP_LEN + 20 => {
            let hdr_len = IP_LEN + usize::from(pkt[IP_LEN + 12] >> 4) * 4;
            let flags = pkt[IP_LEN + 13];
            if hdr_len < IP_LEN + 20
                || hdr_len >= pkt.len()
                || (flags != TCP_ACK && flags != TCP_ACK | TCP_PSH)
            {
                return Candidate::Alone;
            }
            if !transport_valid(pkt, TCP) {
                return Candidate::Alone;
            }
            let seq = u32::from_be_bytes([pkt[24], pkt[25], pkt[26], pkt[27]]);
            Candidate::Tcp {
                hdr_len,
                ip_len: IP_LEN,
                seq,
                psh: flags & TCP_PSH != 0,
            }
        }
        UDP if udp && pkt.len() > IP_LEN + 8 => {
            let ulen = usize::from(u16::from_be_bytes([pkt[24], pkt[25]]));
            let zero_csum = pkt[26] == 0 && pkt[27] == 0;
            if ulen != pkt.len() - IP_LEN || zero_csum || !transport_valid(pkt, UDP) {
                return Candidate::Alone;
            }
            Candidate::Udp
        }
        _ => Candidate::Alone,
    }
}

/// Test packets shared with the worker's tests.
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    pub const SRC: [u8; 4] = [240, 1, 2, 10];
    pub const DST: [u8; 4] = [240, 3, 4, 20];

    /// A TCP/IPv4 segment with valid checksums; `opts` = TCP option bytes.
    pub fn tcp(seq: u32, flags: u8, payload: &[u8], opts: &[u8]) -> Vec<u8> {
        tcp_with(seq, flags, payload, opts, 77, 0x02)
    }

    pub fn tcp_with(
        seq: u32,
        flags: u8,
        payload: &[u8],
        opts: &[u8],
        ack: u32,
        tos: u8,
    ) -> Vec<u8> {
        let thl = 20 + opts.len();
        let total = IP_LEN + thl + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[1] = tos;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&seq.to_be_bytes()[2..]); // some IP ID
        p[6] = 0x40;
        p[8] = 64;
        p[9] = TCP;
        p[12..16].copy_from_slice(&SRC);
        p[16..20].copy_from_slice(&DST);
        let c = checksum::checksum(&p[..IP_LEN]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let t = &mut p[IP_LEN..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&5201u16.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[12] = ((thl / 4) as u8) << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&502u16.to_be_bytes());
        t[20..thl].copy_from_slice(opts);
        t[thl..].copy_from_slice(payload);
        let ps = pseudo_sum(&SRC, &DST, TCP, (thl + payload.len()) as u16);
        let c = !checksum::fold(checksum::sum(&p[IP_LEN..], ps));
        p[IP_LEN + 16..IP_LEN + 18].copy_from_slice(&c.to_be_bytes());
        p
    }
}

#[cfg(test)]
mod tests;
