//! IPv4 header view (RFC 791) over a byte buffer.
//!
//! `Ipv4Packet::new_checked` validates version, IHL and total length once;
//! afterwards every accessor is in bounds and cannot panic. `Ipv4Repr` is the
//! parsed/emittable form used to write outer headers.

use super::checksum;
use super::WireError;
use std::net::Ipv4Addr;

pub const HEADER_LEN: usize = 20;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_GRE: u8 = 47;

/// Flags/fragment-offset bits.
pub const FLAG_DF: u16 = 0x4000;
pub const FLAG_MF: u16 = 0x2000;
pub const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// ECN codepoints (RFC 3168), the low two bits of the TOS byte.
pub const ECN_MASK: u8 = 0b11;
pub const ECN_NOT_ECT: u8 = 0b00;
pub const ECN_CE: u8 = 0b11;

mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// A validated view of an IPv4 packet.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checks; only `check_len` and `version` are safe to call.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps and validates: at least 20 bytes, version 4, 5 ≤ IHL, header ≤ total
    /// length ≤ buffer length. Bytes past `total_len` (link padding) are allowed.
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
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::Version);
        }
        let hl = self.header_len();
        let tl = self.total_len() as usize;
        if hl < HEADER_LEN || tl < hl {
            return Err(WireError::Malformed);
        }
        if tl > b.len() {
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
    pub fn version(&self) -> u8 {
        self.b()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[field::VER_IHL] & 0x0f) * 4
    }

    #[inline]
    pub fn tos(&self) -> u8 {
        self.b()[field::TOS]
    }

    #[inline]
    pub fn dscp(&self) -> u8 {
        self.tos() >> 2
    }

    #[inline]
    pub fn ecn(&self) -> u8 {
        self.tos() & ECN_MASK
    }

    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.b(), field::LENGTH.start)
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.b(), field::IDENT.start)
    }

    #[inline]
    fn flags_frag(&self) -> u16 {
        be16(self.b(), field::FLG_OFF.start)
    }

    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_frag() & FLAG_DF != 0
    }

    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_frag() & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (self.flags_frag() & FRAG_OFFSET_MASK) * 8
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.b()[field::TTL]
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        self.b()[field::PROTOCOL]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.b(), field::CHECKSUM.start)
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src_raw())
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst_raw())
    }

    #[inline]
    pub fn src_raw(&self) -> u32 {
        be32(self.b(), field::SRC.start)
    }

    #[inline]
    pub fn dst_raw(&self) -> u32 {
        be32(self.b(), field::DST.start)
    }

    pub fn verify_checksum(&self) -> bool {
        checksum::verify(&self.b()[..self.header_len()])
    }

    /// The payload (after the header, up to total length).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..self.total_len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    #[inline]
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets the ECN bits, updating the header checksum incrementally.
    pub fn set_ecn(&mut self, ecn: u8) {
        let b = self.bm();
        let old = u16::from_be_bytes([b[0], b[1]]);
        b[field::TOS] = (b[field::TOS] & !ECN_MASK) | (ecn & ECN_MASK);
        let new = u16::from_be_bytes([b[0], b[1]]);
        let c = checksum::update(be16(b, field::CHECKSUM.start), old, new);
        b[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    /// Recomputes and stores the header checksum.
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        let b = self.bm();
        b[field::CHECKSUM].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&b[..hl]);
        b[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
}

/// The fields meshfwd writes into an outer header (no options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub tos: u8,
    pub ttl: u8,
    pub dont_frag: bool,
    pub ident: u16,
    /// Length of everything after the 20-byte header.
    pub payload_len: usize,
}

impl Ipv4Repr {
    /// Reads the representable fields of a validated packet.
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Ipv4Repr {
        Ipv4Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            protocol: p.protocol(),
            tos: p.tos(),
            ttl: p.ttl(),
            dont_frag: p.dont_frag(),
            ident: p.ident(),
            payload_len: usize::from(p.total_len()).saturating_sub(p.header_len()),
        }
    }

    /// Writes a 20-byte header with checksum into `buf[..20]`.
    /// Fails when `buf` is short or the total length exceeds 65535.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let total = HEADER_LEN + self.payload_len;
        if total > usize::from(u16::MAX) {
            return Err(WireError::TooLong);
        }
        let h = buf.get_mut(..HEADER_LEN).ok_or(WireError::Truncated)?;
        let flags = if self.dont_frag { FLAG_DF } else { 0 };
        h[0] = 0x45;
        h[1] = self.tos;
        h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        h[4..6].copy_from_slice(&self.ident.to_be_bytes());
        h[6..8].copy_from_slice(&flags.to_be_bytes());
        h[8] = self.ttl;
        h[9] = self.protocol;
        h[10..12].copy_from_slice(&[0, 0]);
        h[12..16].copy_from_slice(&self.src.octets());
        h[16..20].copy_from_slice(&self.dst.octets());
        let c = checksum::checksum(h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        Ok(())
    }
}

/// Writes fragment number `index` of `packet` (a valid IPv4 packet without
/// options, DF clear) into `out`, each fragment at most `max_len` bytes; returns
/// the fragment's length, or `Ok(None)` past the last fragment (RFC 791 3.2).
pub fn fragment(
    packet: &[u8],
    max_len: usize,
    index: usize,
    out: &mut [u8],
) -> Result<Option<usize>, WireError> {
    let p = Ipv4Packet::new_checked(packet)?;
    if p.header_len() != HEADER_LEN || p.dont_frag() {
        // Options would have to be filtered per fragment; DF forbids it.
        return Err(WireError::Malformed);
    }
    let chunk = max_len.saturating_sub(HEADER_LEN) & !7;
    if chunk == 0 {
        return Err(WireError::TooLong);
    }
    let payload = p.payload();
    let from = index.saturating_mul(chunk);
    if from >= payload.len() && !(payload.is_empty() && index == 0) {
        return Ok(None);
    }
    let to = (from + chunk).min(payload.len());
    let last = to == payload.len();
    let len = HEADER_LEN + (to - from);
    let o = out.get_mut(..len).ok_or(WireError::Truncated)?;
    o[..HEADER_LEN].copy_from_slice(&packet[..HEADER_LEN]);
    o[HEADER_LEN..].copy_from_slice(&payload[from..to]);
    let offset_units = (usize::from(p.frag_offset()) + from) / 8;
    if offset_units > usize::from(FRAG_OFFSET_MASK) {
        return Err(WireError::TooLong);
    }
    let mf = !last || p.more_frags();
    let field = offset_units as u16 | if mf { FLAG_MF } else { 0 };
    o[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    o[6..8].copy_from_slice(&field.to_be_bytes());
    Ipv4Packet::new_unchecked(&mut o[..]).fill_checksum();
    Ok(Some(len))
}

#[inline]
fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

#[inline]
fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20-byte header + 8 bytes of ICMP echo: 10.16.32.2 → 10.16.33.2, TTL 64, DF.
    pub(crate) const ICMP_PKT: [u8; 28] = [
        0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, 10, 16, 32, 2, 10,
        16, 33, 2, 0x08, 0x00, 0xf7, 0xff, 0x00, 0x00, 0x00, 0x00,
    ];

    fn with_checksum(mut p: [u8; 28]) -> [u8; 28] {
        Ipv4Packet::new_unchecked(&mut p[..]).fill_checksum();
        p
    }

    #[test]
    fn parses_fields() {
        let b = with_checksum(ICMP_PKT);
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), PROTO_ICMP);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 16, 32, 2));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 16, 33, 2));
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 8);
        // Cross-check against an independent implementation.
        let (eh, _) = etherparse::Ipv4Header::from_slice(&b).unwrap();
        assert_eq!(eh.header_checksum, p.checksum());
        assert_eq!(eh.calc_header_checksum(), p.checksum());
    }

    #[test]
    fn rejects_bad_headers() {
        let b = with_checksum(ICMP_PKT);
        assert_eq!(
            Ipv4Packet::new_checked(&b[..19]).unwrap_err(),
            WireError::Truncated
        );
        let mut v6 = b;
        v6[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&v6[..]).unwrap_err(),
            WireError::Version
        );
        let mut ihl4 = b;
        ihl4[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&ihl4[..]).unwrap_err(),
            WireError::Malformed
        );
        let mut ihl_past_total = b;
        ihl_past_total[0] = 0x48; // 32-byte header, total length 28
        assert_eq!(
            Ipv4Packet::new_checked(&ihl_past_total[..]).unwrap_err(),
            WireError::Malformed
        );
        let mut long = b;
        long[3] = 29; // total length past the buffer
        assert_eq!(
            Ipv4Packet::new_checked(&long[..]).unwrap_err(),
            WireError::Truncated
        );
        // Trailing padding is fine; payload stops at total length.
        let mut padded = b.to_vec();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(
            Ipv4Packet::new_checked(&padded[..])
                .unwrap()
                .payload()
                .len(),
            8
        );
    }

    #[test]
    fn emit_roundtrip_and_checksum() {
        let r = Ipv4Repr {
            src: Ipv4Addr::new(192, 168, 16, 32),
            dst: Ipv4Addr::new(192, 168, 16, 33),
            protocol: PROTO_GRE,
            tos: 0xb8 | 0b10,
            ttl: 64,
            dont_frag: true,
            ident: 0,
            payload_len: 32,
        };
        let mut buf = [0u8; 52];
        r.emit(&mut buf).unwrap();
        let mut expected = [
            0x45, 0xba, 0x00, 0x34, 0x00, 0x00, 0x40, 0x00, 0x40, 0x2f, 0, 0, 192, 168, 16, 32,
            192, 168, 16, 33,
        ];
        let c = checksum::checksum(&expected);
        expected[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(&buf[..20], &expected[..]);
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&p), r);
        let (eh, _) = etherparse::Ipv4Header::from_slice(&buf).unwrap();
        assert_eq!(eh.calc_header_checksum(), p.checksum());
        assert!(r.emit(&mut [0u8; 19]).is_err());
        let too_long = Ipv4Repr {
            payload_len: 65516,
            ..r
        };
        assert_eq!(too_long.emit(&mut buf).unwrap_err(), WireError::TooLong);
    }

    #[test]
    fn fragments_reassemble_to_the_original() {
        let mut p = vec![0u8; 1400];
        p[..20].copy_from_slice(&[
            0x45, 0, 0x05, 0x78, 0xab, 0xcd, 0, 0, 64, 17, 0, 0, 10, 16, 32, 2, 10, 16, 33, 2,
        ]);
        for (i, b) in p[20..].iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        Ipv4Packet::new_unchecked(&mut p[..]).fill_checksum();
        let mut got = vec![0u8; 1380];
        let mut out = [0u8; 600];
        let mut n = 0;
        while let Some(len) = fragment(&p, 596, n, &mut out).unwrap() {
            let f = Ipv4Packet::new_checked(&out[..len]).unwrap();
            assert!(len <= 596);
            assert!(f.verify_checksum());
            assert_eq!(f.ident(), 0xabcd);
            let off = usize::from(f.frag_offset());
            got[off..off + f.payload().len()].copy_from_slice(f.payload());
            assert_eq!(f.more_frags(), off + f.payload().len() < 1380);
            n += 1;
        }
        assert_eq!(n, 3); // 576 + 576 + 228
        assert_eq!(&got[..], &p[20..]);
        // DF set or options present: refused.
        let mut df = p.clone();
        df[6] = 0x40;
        Ipv4Packet::new_unchecked(&mut df[..]).fill_checksum();
        assert!(fragment(&df, 596, 0, &mut out).is_err());
        assert!(fragment(&p, 27, 0, &mut out).is_err());
    }

    #[test]
    fn set_ecn_keeps_checksum_valid() {
        let mut b = with_checksum(ICMP_PKT);
        for ecn in [0b01, 0b10, 0b11, 0b00] {
            let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
            p.set_ecn(ecn);
            assert_eq!(p.ecn(), ecn);
            assert!(p.verify_checksum());
        }
    }
}
