//! IPv6 header view (RFC 8200) over a byte buffer, and the IPv6 pseudo-header
//! of TCP, UDP and ICMPv6 checksums.
//!
//! `Ipv6Packet::new_checked` validates the version and the payload length
//! once; afterwards every accessor is in bounds and cannot panic. `Ipv6Repr`
//! is the parsed/emittable form of the fixed header. Extension headers are the
//! caller's business (see [`upper_layer`]).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Traffic Class |           Flow Label                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Payload Length        |  Next Header  |   Hop Limit   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  Source Address (16 bytes)                    |
//! |               Destination Address (16 bytes)                  |
//! ```

use super::checksum;
use super::WireError;
use std::net::Ipv6Addr;

pub const HEADER_LEN: usize = 40;
/// The minimum link MTU of IPv6 (RFC 8200 section 5): every link carries it.
pub const MIN_MTU: usize = 1280;

pub const NEXT_HOP_BY_HOP: u8 = 0;
pub const NEXT_IPV4: u8 = 4;
pub const NEXT_TCP: u8 = 6;
pub const NEXT_UDP: u8 = 17;
pub const NEXT_IPV6: u8 = 41;
pub const NEXT_ROUTING: u8 = 43;
pub const NEXT_FRAGMENT: u8 = 44;
pub const NEXT_GRE: u8 = 47;
pub const NEXT_ICMPV6: u8 = 58;
pub const NEXT_NONE: u8 = 59;
pub const NEXT_DEST_OPTS: u8 = 60;

/// ECN codepoints, the low two bits of the Traffic Class (RFC 3168).
pub const ECN_MASK: u8 = 0b11;

mod field {
    use core::ops::Range;
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

/// A validated view of an IPv6 packet.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer without checks; only `check_len` is safe to call.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps and validates: at least 40 bytes, version 6, 40 + payload length
    /// ≤ buffer length. Bytes past the payload (link padding) are allowed. A
    /// jumbogram (payload length 0 with a hop-by-hop jumbo option) reads as an
    /// empty payload: meshfwd never carries one.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(WireError::Version);
        }
        if self.total_len() > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    #[inline]
    fn first_word(&self) -> u32 {
        let b = self.b();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.b()[0] >> 4
    }

    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (self.first_word() >> 20) as u8
    }

    #[inline]
    pub fn dscp(&self) -> u8 {
        self.traffic_class() >> 2
    }

    #[inline]
    pub fn ecn(&self) -> u8 {
        self.traffic_class() & ECN_MASK
    }

    /// The 20-bit flow label.
    #[inline]
    pub fn flow_label(&self) -> u32 {
        self.first_word() & 0x000f_ffff
    }

    #[inline]
    pub fn payload_len(&self) -> u16 {
        u16::from_be_bytes([
            self.b()[field::LENGTH.start],
            self.b()[field::LENGTH.start + 1],
        ])
    }

    /// Header plus payload: the packet's length without link padding.
    #[inline]
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }

    #[inline]
    pub fn next_header(&self) -> u8 {
        self.b()[field::NEXT_HEADER]
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.b()[field::HOP_LIMIT]
    }

    #[inline]
    pub fn src_raw(&self) -> u128 {
        be128(&self.b()[field::SRC])
    }

    #[inline]
    pub fn dst_raw(&self) -> u128 {
        be128(&self.b()[field::DST])
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.src_raw())
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.dst_raw())
    }

    /// The payload (after the fixed header, up to the payload length).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.b()[HEADER_LEN..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets the ECN bits of the Traffic Class (no header checksum in IPv6).
    pub fn set_ecn(&mut self, ecn: u8) {
        // The Traffic Class straddles bytes 0 and 1: ECN is bits 4-5 of byte 1.
        let b = self.buffer.as_mut();
        b[1] = (b[1] & !(ECN_MASK << 4)) | ((ecn & ECN_MASK) << 4);
    }
}

/// The fields of the fixed IPv6 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
    /// 20 bits; higher bits are ignored on emit.
    pub flow_label: u32,
    /// Length of everything after the 40-byte header.
    pub payload_len: usize,
}

impl Ipv6Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Ipv6Repr {
        Ipv6Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            next_header: p.next_header(),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
            payload_len: usize::from(p.payload_len()),
        }
    }

    /// Writes the 40-byte header into `buf[..40]`. Fails when `buf` is short
    /// or the payload exceeds 65535 bytes.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let len = u16::try_from(self.payload_len).map_err(|_| WireError::TooLong)?;
        let h = buf.get_mut(..HEADER_LEN).ok_or(WireError::Truncated)?;
        let word =
            6u32 << 28 | u32::from(self.traffic_class) << 20 | (self.flow_label & 0x000f_ffff);
        h[field::VER_TC_FLOW].copy_from_slice(&word.to_be_bytes());
        h[field::LENGTH].copy_from_slice(&len.to_be_bytes());
        h[field::NEXT_HEADER] = self.next_header;
        h[field::HOP_LIMIT] = self.hop_limit;
        h[field::SRC].copy_from_slice(&self.src.octets());
        h[field::DST].copy_from_slice(&self.dst.octets());
        Ok(())
    }
}

/// The unfolded sum of the IPv6 pseudo-header (RFC 8200 section 8.1):
/// source, destination, upper-layer length (32 bits) and next header.
#[inline]
pub fn pseudo_header_sum(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, upper_len: u32) -> u64 {
    let s = checksum::sum(&src.octets(), 0);
    let s = checksum::sum(&dst.octets(), s);
    s + u64::from(upper_len >> 16) + u64::from(upper_len & 0xffff) + u64::from(next_header)
}

/// The checksum field value of an upper-layer message `data` (its own checksum
/// field zero) carried with `next_header` between `src` and `dst`. For UDP,
/// a computed 0 is sent as 0xffff (RFC 8200 8.1: zero means "none").
pub fn upper_layer_checksum(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, data: &[u8]) -> u16 {
    let ph = pseudo_header_sum(src, dst, next_header, data.len() as u32);
    let c = !checksum::fold(checksum::sum(data, ph));
    if next_header == NEXT_UDP && c == 0 {
        0xffff
    } else {
        c
    }
}

/// True when `data` (checksum field included) is a valid upper-layer message.
pub fn verify_upper_layer(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, data: &[u8]) -> bool {
    let ph = pseudo_header_sum(src, dst, next_header, data.len() as u32);
    checksum::fold(checksum::sum(data, ph)) == 0xffff
}

/// How many extension headers [`upper_layer`] walks before giving up: more
/// than any legitimate packet carries, few enough to bound the work.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// The upper-layer protocol of a packet and where its header starts in the
/// payload, after the extension headers (hop-by-hop, routing, fragment,
/// destination options). A non-first fragment stops the walk at its fragment
/// header: `(NEXT_FRAGMENT, offset of that header)`, its upper-layer header
/// being in the first fragment. `None` when the chain is truncated or longer
/// than [`MAX_EXTENSION_HEADERS`].
pub fn upper_layer<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Option<(u8, usize)> {
    let payload = p.payload();
    let mut next = p.next_header();
    let mut at = 0usize;
    for _ in 0..MAX_EXTENSION_HEADERS {
        match next {
            NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_DEST_OPTS => {
                let h = payload.get(at..at + 2)?;
                next = h[0];
                at += (usize::from(h[1]) + 1) * 8;
            }
            NEXT_FRAGMENT => {
                let h = payload.get(at..at + 8)?;
                let offset = u16::from_be_bytes([h[2], h[3]]) & 0xfff8;
                if offset != 0 {
                    return Some((NEXT_FRAGMENT, at));
                }
                next = h[0];
                at += 8;
            }
            _ => return (at <= payload.len()).then_some((next, at)),
        }
    }
    None
}

#[inline]
fn be128(b: &[u8]) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    u128::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// ICMPv6 echo request fd6d:6573:6866:0:c0a8:1020:0:2 → …:c0a8:1021:0:2,
    /// traffic class 0xb9 (DSCP 46, ECT(1)), flow label 0x12345, hop limit 64,
    /// 8 bytes of payload (type 128, checksum 0x4795, id 1, seq 1).
    pub(crate) const ECHO6: [u8; 48] = [
        0x6b, 0x91, 0x23, 0x45, 0x00, 0x08, 58, 64, //
        0xfd, 0x6d, 0x65, 0x73, 0x68, 0x66, 0, 0, 0xc0, 0xa8, 0x10, 0x20, 0, 0, 0, 2, //
        0xfd, 0x6d, 0x65, 0x73, 0x68, 0x66, 0, 0, 0xc0, 0xa8, 0x10, 0x21, 0, 0, 0, 2, //
        128, 0, 0x47, 0x95, 0, 1, 0, 1,
    ];

    #[test]
    fn parses_fields() {
        let p = Ipv6Packet::new_checked(&ECHO6[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb9);
        assert_eq!(p.dscp(), 46);
        assert_eq!(p.ecn(), 0b01);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 8);
        assert_eq!(p.total_len(), 48);
        assert_eq!(p.next_header(), NEXT_ICMPV6);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), ip6("fd6d:6573:6866:0:c0a8:1020:0:2"));
        assert_eq!(p.dst_addr(), ip6("fd6d:6573:6866:0:c0a8:1021:0:2"));
        assert_eq!(p.payload(), &ECHO6[40..]);
        assert!(verify_upper_layer(
            p.src_addr(),
            p.dst_addr(),
            NEXT_ICMPV6,
            p.payload()
        ));
        // An independent parser agrees.
        let (eh, _) = etherparse::Ipv6Header::from_slice(&ECHO6).unwrap();
        assert_eq!(eh.traffic_class, 0xb9);
        assert_eq!(u32::from(eh.flow_label), 0x12345);
        assert_eq!(eh.hop_limit, 64);
        assert_eq!(eh.payload_length, 8);
        assert_eq!(Ipv6Addr::from(eh.source), p.src_addr());
    }

    #[test]
    fn icmpv6_checksum_matches_an_independent_implementation() {
        let p = Ipv6Packet::new_checked(&ECHO6[..]).unwrap();
        let mut msg = p.payload().to_vec();
        msg[2..4].copy_from_slice(&[0, 0]);
        let c = upper_layer_checksum(p.src_addr(), p.dst_addr(), NEXT_ICMPV6, &msg);
        assert_eq!(c, 0x4795);
        let (eh, _) = etherparse::Ipv6Header::from_slice(&ECHO6).unwrap();
        let want =
            etherparse::Icmpv6Type::EchoRequest(etherparse::IcmpEchoHeader { id: 1, seq: 1 })
                .calc_checksum(eh.source, eh.destination, &[])
                .unwrap();
        assert_eq!(c, want);
    }

    #[test]
    fn udp_checksum_zero_is_sent_as_ffff() {
        // Find a payload whose checksum computes to 0 and check the substitution.
        let (s, d) = (ip6("fd00::1"), ip6("fd00::2"));
        let mut data = [0u8; 10];
        data[..2].copy_from_slice(&[0x12, 0x34]);
        let c = upper_layer_checksum(s, d, NEXT_UDP, &data);
        // Put the checksum in a spare word: the sum becomes 0xffff, whose
        // checksum is 0, sent as 0xffff for UDP only.
        data[8..10].copy_from_slice(&c.to_be_bytes());
        assert_eq!(upper_layer_checksum(s, d, NEXT_UDP, &data), 0xffff);
        assert!(verify_upper_layer(s, d, NEXT_UDP, &data));
        let c = upper_layer_checksum(s, d, NEXT_TCP, &[0x12, 0x34, 0, 0]);
        let mut tcp = [0x12, 0x34, 0, 0];
        tcp[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(upper_layer_checksum(s, d, NEXT_TCP, &tcp), 0);
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(
            Ipv6Packet::new_checked(&ECHO6[..39]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            Ipv6Packet::new_checked(&ECHO6[..47]).unwrap_err(),
            WireError::Truncated
        );
        let mut v4 = ECHO6;
        v4[0] = 0x45;
        assert_eq!(
            Ipv6Packet::new_checked(&v4[..]).unwrap_err(),
            WireError::Version
        );
        let mut padded = ECHO6.to_vec();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(
            Ipv6Packet::new_checked(&padded[..])
                .unwrap()
                .payload()
                .len(),
            8
        );
    }

    #[test]
    fn emit_roundtrip() {
        let p = Ipv6Packet::new_checked(&ECHO6[..]).unwrap();
        let r = Ipv6Repr::parse(&p);
        let mut buf = [0u8; 40];
        r.emit(&mut buf).unwrap();
        assert_eq!(&buf[..], &ECHO6[..40]);
        assert!(r.emit(&mut [0u8; 39]).is_err());
        let long = Ipv6Repr {
            payload_len: 65536,
            ..r
        };
        assert_eq!(long.emit(&mut buf).unwrap_err(), WireError::TooLong);
        let wide_label = Ipv6Repr {
            flow_label: 0xfff1_2345,
            ..r
        };
        wide_label.emit(&mut buf).unwrap();
        assert_eq!(&buf[..], &ECHO6[..40]);
    }

    #[test]
    fn set_ecn_touches_only_the_ecn_bits() {
        let mut b = ECHO6;
        for ecn in [0b00, 0b10, 0b11, 0b01] {
            let mut p = Ipv6Packet::new_checked(&mut b[..]).unwrap();
            p.set_ecn(ecn);
            assert_eq!(p.ecn(), ecn);
            assert_eq!(p.dscp(), 46);
            assert_eq!(p.flow_label(), 0x12345);
            assert_eq!(p.version(), 6);
        }
    }

    #[test]
    fn upper_layer_walks_extension_headers() {
        let p = Ipv6Packet::new_checked(&ECHO6[..]).unwrap();
        assert_eq!(upper_layer(&p), Some((NEXT_ICMPV6, 0)));
        // Hop-by-hop (8 bytes) → destination options (16 bytes) → fragment
        // (offset 0) → ICMPv6.
        let mut b = ECHO6[..40].to_vec();
        b[6] = NEXT_HOP_BY_HOP;
        b.extend_from_slice(&[NEXT_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        b.extend_from_slice(&[NEXT_FRAGMENT, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        b.extend_from_slice(&[NEXT_ICMPV6, 0, 0, 1, 0, 0, 0, 7]);
        b.extend_from_slice(&ECHO6[40..]);
        let n = (b.len() - 40) as u16;
        b[4..6].copy_from_slice(&n.to_be_bytes());
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(upper_layer(&p), Some((NEXT_ICMPV6, 32)));
        // A non-first fragment has no upper-layer header to see.
        b[40 + 24 + 2..40 + 24 + 4].copy_from_slice(&[0, 8]);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(upper_layer(&p), Some((NEXT_FRAGMENT, 24)));
        // A chain running past the payload, and an endless chain.
        let mut t = ECHO6[..40].to_vec();
        t[6] = NEXT_DEST_OPTS;
        t.extend_from_slice(&[NEXT_TCP, 3]);
        t[4..6].copy_from_slice(&2u16.to_be_bytes());
        assert_eq!(upper_layer(&Ipv6Packet::new_checked(&t[..]).unwrap()), None);
        let mut e = ECHO6[..40].to_vec();
        e[6] = NEXT_DEST_OPTS;
        for _ in 0..MAX_EXTENSION_HEADERS + 1 {
            e.extend_from_slice(&[NEXT_DEST_OPTS, 0, 0, 0, 0, 0, 0, 0]);
        }
        let n = (e.len() - 40) as u16;
        e[4..6].copy_from_slice(&n.to_be_bytes());
        assert_eq!(upper_layer(&Ipv6Packet::new_checked(&e[..]).unwrap()), None);
    }
}
