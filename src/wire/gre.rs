//! GRE header view (RFC 2784 with the key and sequence extensions of RFC 2890).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |C|R|K|S|  Reserved0      | Ver |         Protocol Type         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |      Checksum (if C)          |       Reserved1 (if C)        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Key (if K)                            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Sequence Number (if S)                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! Header length is 4 + 4 per flag. Version must be 0; the routing bit (RFC 1701)
//! and every other reserved bit are rejected (Linux rejects version and routing;
//! we are stricter because no peer of ours sends the others).

use super::checksum;
use super::WireError;

pub const FLAG_C: u16 = 0x8000;
pub const FLAG_R: u16 = 0x4000;
pub const FLAG_K: u16 = 0x2000;
pub const FLAG_S: u16 = 0x1000;
/// Bits 4–12: strict source route, recursion control and Reserved0.
pub const RESERVED_MASK: u16 = 0x0ff8;
pub const VERSION_MASK: u16 = 0x0007;

pub const PROTO_IPV4: u16 = 0x0800;
/// IPv6 inside GRE (the EtherType, as Linux ip_gre and ip6gre send it).
pub const PROTO_IPV6: u16 = 0x86DD;
pub const BASE_LEN: usize = 4;
pub const MAX_LEN: usize = 16;

/// Why a GRE header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GreError {
    Truncated,
    Version,
    /// Routing bit or a reserved bit set.
    Flags,
}

/// Header length implied by the C/K/S bits of the first 16 bits.
#[inline]
pub const fn header_len_for(flags: u16) -> usize {
    BASE_LEN
        + 4 * ((flags & FLAG_C != 0) as usize)
        + 4 * ((flags & FLAG_K != 0) as usize)
        + 4 * ((flags & FLAG_S != 0) as usize)
}

/// A validated view of a GRE header followed by its payload.
#[derive(Debug, Clone, Copy)]
pub struct GrePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GrePacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        GrePacket { buffer }
    }

    /// Validates version 0, no routing or reserved bits, and that the buffer holds
    /// the whole header the flags announce.
    pub fn new_checked(buffer: T) -> Result<Self, GreError> {
        let b = buffer.as_ref();
        if b.len() < BASE_LEN {
            return Err(GreError::Truncated);
        }
        let flags = u16::from_be_bytes([b[0], b[1]]);
        if flags & VERSION_MASK != 0 {
            return Err(GreError::Version);
        }
        if flags & (FLAG_R | RESERVED_MASK) != 0 {
            return Err(GreError::Flags);
        }
        if b.len() < header_len_for(flags) {
            return Err(GreError::Truncated);
        }
        Ok(GrePacket { buffer })
    }

    #[inline]
    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    #[inline]
    pub fn flags(&self) -> u16 {
        u16::from_be_bytes([self.b()[0], self.b()[1]])
    }

    #[inline]
    pub fn has_checksum(&self) -> bool {
        self.flags() & FLAG_C != 0
    }

    #[inline]
    pub fn has_key(&self) -> bool {
        self.flags() & FLAG_K != 0
    }

    #[inline]
    pub fn has_seq(&self) -> bool {
        self.flags() & FLAG_S != 0
    }

    #[inline]
    pub fn protocol(&self) -> u16 {
        u16::from_be_bytes([self.b()[2], self.b()[3]])
    }

    #[inline]
    pub fn header_len(&self) -> usize {
        header_len_for(self.flags())
    }

    #[inline]
    fn word(&self, at: usize) -> u32 {
        let b = self.b();
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    pub fn checksum(&self) -> Option<u16> {
        self.has_checksum()
            .then(|| u16::from_be_bytes([self.b()[4], self.b()[5]]))
    }

    #[inline]
    pub fn key(&self) -> Option<u32> {
        self.has_key()
            .then(|| self.word(BASE_LEN + 4 * self.has_checksum() as usize))
    }

    #[inline]
    pub fn seq(&self) -> Option<u32> {
        self.has_seq().then(|| {
            self.word(BASE_LEN + 4 * self.has_checksum() as usize + 4 * self.has_key() as usize)
        })
    }

    /// Verifies the checksum over header and payload; true when C is not set.
    pub fn verify_checksum(&self) -> bool {
        !self.has_checksum() || checksum::verify(self.b())
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..]
    }
}

/// What meshfwd writes in front of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GreRepr {
    pub protocol: u16,
    pub checksum: bool,
    pub key: Option<u32>,
    pub seq: Option<u32>,
}

impl GreRepr {
    #[inline]
    pub fn flags(&self) -> u16 {
        (if self.checksum { FLAG_C } else { 0 })
            | (if self.key.is_some() { FLAG_K } else { 0 })
            | (if self.seq.is_some() { FLAG_S } else { 0 })
    }

    #[inline]
    pub fn header_len(&self) -> usize {
        header_len_for(self.flags())
    }

    /// Writes the header into `buf[..header_len]`. When `checksum` is set, the
    /// payload must already follow the header in `buf` (`buf = header ‖ payload`),
    /// because the GRE checksum covers both.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let hl = self.header_len();
        if buf.len() < hl {
            return Err(WireError::Truncated);
        }
        buf[0..2].copy_from_slice(&self.flags().to_be_bytes());
        buf[2..4].copy_from_slice(&self.protocol.to_be_bytes());
        let mut at = BASE_LEN;
        if self.checksum {
            buf[at..at + 4].copy_from_slice(&[0; 4]);
            at += 4;
        }
        if let Some(k) = self.key {
            buf[at..at + 4].copy_from_slice(&k.to_be_bytes());
            at += 4;
        }
        if let Some(s) = self.seq {
            buf[at..at + 4].copy_from_slice(&s.to_be_bytes());
        }
        if self.checksum {
            let c = checksum::checksum(buf);
            buf[4..6].copy_from_slice(&c.to_be_bytes());
        }
        Ok(())
    }

    pub fn parse<T: AsRef<[u8]>>(p: &GrePacket<T>) -> GreRepr {
        GreRepr {
            protocol: p.protocol(),
            checksum: p.has_checksum(),
            key: p.key(),
            seq: p.seq(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: [u8; 4] = [0x45, 0x00, 0x00, 0x14];

    #[test]
    fn every_flag_combination_byte_vectors() {
        // (C, K, S) → expected header bytes for key 0x01020304, seq 0x0a0b0c0d.
        let cases: [(bool, bool, bool, &[u8]); 8] = [
            (false, false, false, &[0x00, 0x00, 0x08, 0x00]),
            (
                false,
                false,
                true,
                &[0x10, 0x00, 0x08, 0x00, 0x0a, 0x0b, 0x0c, 0x0d],
            ),
            (false, true, false, &[0x20, 0x00, 0x08, 0x00, 1, 2, 3, 4]),
            (
                false,
                true,
                true,
                &[0x30, 0x00, 0x08, 0x00, 1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d],
            ),
            (
                true,
                false,
                false,
                &[0x80, 0x00, 0x08, 0x00, 0xff, 0xff, 0, 0],
            ),
            (
                true,
                false,
                true,
                &[
                    0x90, 0x00, 0x08, 0x00, 0xff, 0xff, 0, 0, 0x0a, 0x0b, 0x0c, 0x0d,
                ],
            ),
            (
                true,
                true,
                false,
                &[0xa0, 0x00, 0x08, 0x00, 0xff, 0xff, 0, 0, 1, 2, 3, 4],
            ),
            (
                true,
                true,
                true,
                &[
                    0xb0, 0x00, 0x08, 0x00, 0xff, 0xff, 0, 0, 1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d,
                ],
            ),
        ];
        for (c, k, s, expected) in cases {
            let repr = GreRepr {
                protocol: PROTO_IPV4,
                checksum: c,
                key: k.then_some(0x01020304),
                seq: s.then_some(0x0a0b0c0d),
            };
            assert_eq!(repr.header_len(), expected.len());
            let mut buf = vec![0u8; expected.len() + PAYLOAD.len()];
            buf[expected.len()..].copy_from_slice(&PAYLOAD);
            repr.emit(&mut buf).unwrap();
            let mut want = expected.to_vec();
            if c {
                // Placeholder 0xffff in the table: compute independently.
                want[4..6].copy_from_slice(&[0, 0]);
                let mut whole = want.clone();
                whole.extend_from_slice(&PAYLOAD);
                let sum = !reference_sum(&whole);
                want[4..6].copy_from_slice(&sum.to_be_bytes());
            }
            assert_eq!(&buf[..expected.len()], &want[..], "C={c} K={k} S={s}");
            let p = GrePacket::new_checked(&buf[..]).unwrap();
            assert_eq!(GreRepr::parse(&p), repr);
            assert!(p.verify_checksum());
            assert_eq!(p.payload(), &PAYLOAD);
            // Any single flipped payload bit breaks a present checksum.
            if c {
                let mut bad = buf.clone();
                *bad.last_mut().unwrap() ^= 1;
                assert!(!GrePacket::new_checked(&bad[..]).unwrap().verify_checksum());
            }
            // Truncated by one byte: refused.
            assert_eq!(
                GrePacket::new_checked(&buf[..expected.len() - 1]).unwrap_err(),
                GreError::Truncated
            );
        }
    }

    fn reference_sum(d: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for p in d.chunks(2) {
            acc += u32::from(u16::from_be_bytes([p[0], *p.get(1).unwrap_or(&0)]));
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn rejects_version_routing_and_reserved_bits() {
        assert_eq!(
            GrePacket::new_checked(&[0x00, 0x01, 0x08, 0x00][..]).unwrap_err(),
            GreError::Version
        );
        assert_eq!(
            GrePacket::new_checked(&[0x40, 0x00, 0x08, 0x00, 0, 0, 0, 0][..]).unwrap_err(),
            GreError::Flags
        );
        for bit in 3..=11 {
            let flags: u16 = 1 << bit; // RFC bits 4..12 (MSB = bit 0)
            let b = flags.to_be_bytes();
            assert_eq!(
                GrePacket::new_checked(&[b[0], b[1], 0x08, 0x00][..]).unwrap_err(),
                GreError::Flags,
                "bit {bit}"
            );
        }
        assert_eq!(
            GrePacket::new_checked(&[0x00, 0x00, 0x08][..]).unwrap_err(),
            GreError::Truncated
        );
    }

    #[test]
    fn emit_refuses_short_buffer() {
        let r = GreRepr {
            protocol: PROTO_IPV4,
            key: Some(1),
            ..Default::default()
        };
        assert_eq!(r.emit(&mut [0u8; 7]).unwrap_err(), WireError::Truncated);
    }
}
