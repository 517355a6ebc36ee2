//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Bytes flow in, a folded one's-complement sum flows out. Used for IPv4 and
//! ICMP headers and the optional GRE checksum.

/// One's-complement sum of `data` as big-endian 16-bit words, not yet folded.
/// Summing 8 bytes at a time into a u64 keeps the loop short for 1400-byte payloads.
#[inline]
pub fn sum(data: &[u8], initial: u64) -> u64 {
    let mut acc = initial;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let (s, carry) = acc.overflowing_add(w);
        acc = s + carry as u64;
    }
    // Fold before adding the tail: the accumulator may be close to u64::MAX.
    acc = (acc >> 32) + (acc & 0xffff_ffff);
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
        i += 2;
    }
    if i < rest.len() {
        acc += u64::from(rest[i]) << 8;
    }
    acc
}

/// Folds a wide sum down to 16 bits.
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    acc = (acc >> 32) + (acc & 0xffff_ffff);
    acc = (acc >> 32) + (acc & 0xffff_ffff);
    acc = (acc >> 16) + (acc & 0xffff);
    acc = (acc >> 16) + (acc & 0xffff);
    acc as u16
}

/// The checksum field value for `data` (whose checksum field must be zero).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data, 0))
}

/// True when `data`, checksum field included, sums to 0xffff.
#[inline]
pub fn verify(data: &[u8]) -> bool {
    fold(sum(data, 0)) == 0xffff
}

/// RFC 1624 eqn. 3: the new checksum after one 16-bit word changed from `old` to `new`.
#[inline]
pub fn update(check: u16, old: u16, new: u16) -> u16 {
    let acc = u64::from(!check) + u64::from(!old) + u64::from(new);
    !fold(acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The straightforward 16-bit reference implementation.
    fn reference(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            let w = if pair.len() == 2 {
                u16::from_be_bytes([pair[0], pair[1]])
            } else {
                u16::from_be_bytes([pair[0], 0])
            };
            acc += u32::from(w);
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&d, 0)), 0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        // A textbook header with checksum 0xb861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert!(verify(&h));
    }

    proptest! {
        #[test]
        fn matches_reference(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(checksum(&data), reference(&data));
        }

        #[test]
        fn incremental_matches_full(mut data in proptest::collection::vec(any::<u8>(), 4..64), idx in 0usize..30, new in any::<u16>()) {
            let len = data.len() & !1;
            data.truncate(len);
            let i = (idx * 2) % len;
            let before = checksum(&data);
            let old = u16::from_be_bytes([data[i], data[i + 1]]);
            data[i..i + 2].copy_from_slice(&new.to_be_bytes());
            let after = checksum(&data);
            // One's complement has two zeros; compare as sums.
            let inc = update(before, old, new);
            prop_assert!(inc == after || (inc == 0xffff && after == 0) || (inc == 0 && after == 0xffff));
        }
    }
}

#[cfg(test)]
mod regression {
    use super::*;

    /// Found by `cargo fuzz` (crash-8aadf4c7, GRE checksum re-emission): a long run of 0xff drove
    /// the 64-bit accumulator to u64::MAX, and the tail bytes were added without
    /// an end-around carry (wrapping in release builds).
    #[test]
    fn fuzz_crash_8aadf4c7() {
        let mut d = vec![0xffu8; 64];
        d.push(0x04);
        assert_eq!(checksum(&d), reference_checksum(&d));
        let mut g = vec![0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00];
        g.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0xff]);
        g.extend(std::iter::repeat_n(0xff, 60));
        g.push(0x04);
        let c = checksum(&g);
        g[4..6].copy_from_slice(&c.to_be_bytes());
        assert!(verify(&g), "checksum {c:#06x}");
    }

    fn reference_checksum(d: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for p in d.chunks(2) {
            acc += u32::from(u16::from_be_bytes([p[0], *p.get(1).unwrap_or(&0)]));
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }
}
