//! ICMPv4 "destination unreachable" messages (RFC 792, RFC 1191) built in place.
//!
//! The datapath uses these to tell an inner sender that its packet cannot be
//! carried: code 4 "fragmentation needed" with the next-hop MTU (PMTU discovery),
//! code 1 "host unreachable".

use super::checksum;
use super::ipv4::{Ipv4Packet, Ipv4Repr, HEADER_LEN, PROTO_ICMP};
use super::WireError;
use std::net::Ipv4Addr;

pub const TYPE_DEST_UNREACHABLE: u8 = 3;
pub const CODE_HOST_UNREACHABLE: u8 = 1;
pub const CODE_FRAG_NEEDED: u8 = 4;
pub const HEADER_LEN_ICMP: usize = 8;
/// We quote the offending header plus 8 bytes, as RFC 792 requires.
pub const QUOTE_PAYLOAD: usize = 8;

/// Writes `IPv4(src → original source) ‖ ICMP dest-unreachable(code, mtu) ‖ quote`
/// into `out` and returns the length written. `original` must be a valid IPv4 packet.
pub fn emit_dest_unreachable(
    out: &mut [u8],
    src: Ipv4Addr,
    original: &[u8],
    code: u8,
    next_hop_mtu: u16,
) -> Result<usize, WireError> {
    let orig = Ipv4Packet::new_checked(original)?;
    let quote_len = (orig.header_len() + QUOTE_PAYLOAD).min(usize::from(orig.total_len()));
    let icmp_len = HEADER_LEN_ICMP + quote_len;
    let total = HEADER_LEN + icmp_len;
    if out.len() < total {
        return Err(WireError::Truncated);
    }
    Ipv4Repr {
        src,
        dst: orig.src_addr(),
        protocol: PROTO_ICMP,
        tos: orig.tos() & !super::ipv4::ECN_MASK,
        ttl: 64,
        dont_frag: false,
        ident: 0,
        payload_len: icmp_len,
    }
    .emit(out)?;
    let icmp = &mut out[HEADER_LEN..total];
    icmp[0] = TYPE_DEST_UNREACHABLE;
    icmp[1] = code;
    icmp[2..4].copy_from_slice(&[0, 0]);
    icmp[4..6].copy_from_slice(&[0, 0]);
    let mtu = if code == CODE_FRAG_NEEDED {
        next_hop_mtu
    } else {
        0
    };
    icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
    icmp[HEADER_LEN_ICMP..].copy_from_slice(&original[..quote_len]);
    let c = checksum::checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Icmpv4Type, SlicedPacket};

    #[test]
    fn frag_needed_decodes_with_an_independent_parser() {
        let mut orig = vec![0u8; 1400];
        orig[..20].copy_from_slice(&[
            0x45, 0x00, 0x05, 0x78, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 16, 32, 2, 10, 16, 33, 2,
        ]);
        Ipv4Packet::new_unchecked(&mut orig[..]).fill_checksum();
        let mut out = [0u8; 128];
        let n = emit_dest_unreachable(
            &mut out,
            Ipv4Addr::new(10, 16, 32, 1),
            &orig,
            CODE_FRAG_NEEDED,
            1476,
        )
        .unwrap();
        assert_eq!(n, 20 + 8 + 28);
        let sliced = SlicedPacket::from_ip(&out[..n]).unwrap();
        match sliced.transport {
            Some(etherparse::TransportSlice::Icmpv4(icmp)) => {
                assert_eq!(
                    icmp.icmp_type(),
                    Icmpv4Type::DestinationUnreachable(
                        etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                            next_hop_mtu: 1476
                        }
                    )
                );
                assert_eq!(
                    icmp.checksum(),
                    icmp.header().icmp_type.calc_checksum(icmp.payload())
                );
                assert_eq!(icmp.payload(), &orig[..28]);
            }
            other => panic!("not ICMP: {other:?}"),
        }
        let ip = Ipv4Packet::new_checked(&out[..n]).unwrap();
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(10, 16, 32, 2));
        assert!(ip.verify_checksum());
    }

    #[test]
    fn refuses_short_output_and_bad_original() {
        let mut out = [0u8; 16];
        assert!(emit_dest_unreachable(&mut out, Ipv4Addr::LOCALHOST, &[0u8; 4], 1, 0).is_err());
    }
}
