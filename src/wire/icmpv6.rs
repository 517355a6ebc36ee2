//! ICMPv6 "Packet Too Big" messages (RFC 4443 section 3.2) built in place.
//!
//! IPv6 routers never fragment: a packet too big for the tunnel is dropped and
//! its source told the MTU that fits, quoting as much of the packet as the
//! error can carry without exceeding the IPv6 minimum MTU (1280 bytes).

use super::ipv6::{self, Ipv6Packet, Ipv6Repr, HEADER_LEN, MIN_MTU, NEXT_ICMPV6};
use super::WireError;
use std::net::Ipv6Addr;

pub const TYPE_PACKET_TOO_BIG: u8 = 2;
pub const HEADER_LEN_ICMPV6: usize = 8;
/// Hop limit of the errors we originate, like a fresh packet of the host's stack.
pub const HOP_LIMIT: u8 = 64;
/// Largest quote: the whole error stays within the minimum MTU (RFC 4443 2.4 (c)).
pub const MAX_QUOTE: usize = MIN_MTU - HEADER_LEN - HEADER_LEN_ICMPV6;

/// ICMPv6 types that are errors (RFC 4443 2.1: types 0-127); no error is ever
/// sent about one (RFC 4443 2.4 (e)).
pub fn is_error_type(icmp_type: u8) -> bool {
    icmp_type < 128
}

/// Writes `IPv6(src → original source) ‖ ICMPv6 Packet Too Big(mtu) ‖ quote`
/// into `out` and returns the length written (at most 1280). `original` must
/// be a valid IPv6 packet; its bytes past the payload length are not quoted.
pub fn emit_packet_too_big(
    out: &mut [u8],
    src: Ipv6Addr,
    original: &[u8],
    mtu: u32,
) -> Result<usize, WireError> {
    let orig = Ipv6Packet::new_checked(original)?;
    let quote_len = orig.total_len().min(MAX_QUOTE);
    let icmp_len = HEADER_LEN_ICMPV6 + quote_len;
    let total = HEADER_LEN + icmp_len;
    if out.len() < total {
        return Err(WireError::Truncated);
    }
    let dst = orig.src_addr();
    Ipv6Repr {
        src,
        dst,
        next_header: NEXT_ICMPV6,
        hop_limit: HOP_LIMIT,
        // The original's DSCP, never its ECN bits (the error is a new flow).
        traffic_class: orig.traffic_class() & !ipv6::ECN_MASK,
        flow_label: 0,
        payload_len: icmp_len,
    }
    .emit(out)?;
    let icmp = &mut out[HEADER_LEN..total];
    icmp[0] = TYPE_PACKET_TOO_BIG;
    icmp[1] = 0;
    icmp[2..4].copy_from_slice(&[0, 0]);
    icmp[4..8].copy_from_slice(&mtu.to_be_bytes());
    icmp[HEADER_LEN_ICMPV6..].copy_from_slice(&original[..quote_len]);
    let c = ipv6::upper_layer_checksum(src, dst, NEXT_ICMPV6, icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Icmpv6Type, SlicedPacket, TransportSlice};

    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// An IPv6/UDP packet of `total` bytes, traffic class 0xbb.
    fn original(total: usize) -> Vec<u8> {
        let mut p = vec![0u8; total];
        Ipv6Repr {
            src: ip6("fd6d:6573:6866:0:c0a8:1020:0:2"),
            dst: ip6("fd6d:6573:6866:0:c0a8:1021:0:2"),
            next_header: ipv6::NEXT_UDP,
            hop_limit: 63,
            traffic_class: 0xbb,
            flow_label: 7,
            payload_len: total - 40,
        }
        .emit(&mut p)
        .unwrap();
        for (i, b) in p[40..].iter_mut().enumerate() {
            *b = i as u8;
        }
        p
    }

    fn check(out: &[u8], orig: &[u8], mtu: u32) {
        let sliced = SlicedPacket::from_ip(out).unwrap();
        let Some(TransportSlice::Icmpv6(icmp)) = sliced.transport else {
            panic!("not ICMPv6: {:?}", sliced.transport)
        };
        assert_eq!(icmp.icmp_type(), Icmpv6Type::PacketTooBig { mtu });
        let ip = Ipv6Packet::new_checked(out).unwrap();
        assert!(ipv6::verify_upper_layer(
            ip.src_addr(),
            ip.dst_addr(),
            NEXT_ICMPV6,
            ip.payload()
        ));
        let (eh, _) = etherparse::Ipv6Header::from_slice(out).unwrap();
        assert_eq!(
            icmp.checksum(),
            icmp.icmp_type()
                .calc_checksum(eh.source, eh.destination, icmp.payload())
                .unwrap()
        );
        assert_eq!(icmp.payload(), &orig[..icmp.payload().len()]);
        assert_eq!(ip.dst_addr(), ip6("fd6d:6573:6866:0:c0a8:1020:0:2"));
        assert_eq!(ip.src_addr(), ip6("fd6d:6573:6866:0:c0a8:1021:0:1"));
        assert_eq!(ip.traffic_class(), 0xb8);
        assert_eq!(ip.hop_limit(), 64);
    }

    #[test]
    fn quotes_as_much_as_fits_in_1280_bytes() {
        let from = ip6("fd6d:6573:6866:0:c0a8:1021:0:1");
        let mut out = [0u8; 1500];
        let orig = original(1500);
        let n = emit_packet_too_big(&mut out, from, &orig, 1476).unwrap();
        assert_eq!(n, 1280);
        check(&out[..n], &orig, 1476);
        // A short original is quoted whole (and its link padding is not).
        let mut small = original(100);
        small.extend_from_slice(&[0xee; 4]);
        let n = emit_packet_too_big(&mut out, from, &small, 1280).unwrap();
        assert_eq!(n, 40 + 8 + 100);
        check(&out[..n], &small, 1280);
    }

    #[test]
    fn exact_header_bytes() {
        let from = ip6("fd6d:6573:6866:0:c0a8:1021:0:1");
        let orig = original(48);
        let mut out = [0u8; 128];
        let n = emit_packet_too_big(&mut out, from, &orig, 1400).unwrap();
        assert_eq!(
            &out[..8],
            &[0x6b, 0x80, 0, 0, 0, 56, 58, 64],
            "version 6, traffic class 0xb8, payload 56, ICMPv6, hop limit 64"
        );
        assert_eq!(&out[40..42], &[2, 0]);
        assert_eq!(&out[44..48], &1400u32.to_be_bytes());
        assert_eq!(&out[48..n], &orig[..]);
    }

    #[test]
    fn refuses_short_output_and_bad_original() {
        let from = Ipv6Addr::LOCALHOST;
        assert!(emit_packet_too_big(&mut [0u8; 64], from, &[0u8; 4], 1280).is_err());
        assert!(emit_packet_too_big(&mut [0u8; 64], from, &original(100), 1280).is_err());
        assert!(is_error_type(1) && is_error_type(2) && !is_error_type(128));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// Any bytes: the view, the extension-header walk and the builder never
        /// panic; whatever is built is at most 1280 bytes with a valid checksum.
        #[test]
        fn random_bytes_never_panic(mut data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1600), v6 in proptest::prelude::any::<bool>()) {
            if v6 && !data.is_empty() {
                data[0] = 0x60 | (data[0] & 0x0f);
            }
            if let Ok(p) = Ipv6Packet::new_checked(&data[..]) {
                let _ = (p.traffic_class(), p.flow_label(), p.payload().len(), ipv6::upper_layer(&p));
                let _ = Ipv6Repr::parse(&p);
            }
            let mut out = [0u8; MIN_MTU];
            if let Ok(n) = emit_packet_too_big(&mut out, Ipv6Addr::LOCALHOST, &data, 1280) {
                proptest::prop_assert!(n <= MIN_MTU);
                let ip = Ipv6Packet::new_checked(&out[..n]).unwrap();
                proptest::prop_assert!(ipv6::verify_upper_layer(ip.src_addr(), ip.dst_addr(), NEXT_ICMPV6, ip.payload()));
            }
        }
    }
}
