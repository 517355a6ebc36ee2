//! Byte-vector tests of the IPv6 overlay's verdicts (issue #17): 6-in-GRE and
//! 6-in-GRE-in-UDP, every refusal each way, the RFC 6040 table on the Traffic
//! Class, Packet Too Big, and never-panic properties.

use super::*;
use crate::layout6::Layout6;
use crate::wire::ipv6::{self, Ipv6Packet, Ipv6Repr};
use proptest::prelude::*;
use std::net::Ipv6Addr;

const VM_A: Ipv4Addr = Ipv4Addr::new(192, 168, 16, 32);
const VM_B: Ipv4Addr = Ipv4Addr::new(192, 168, 16, 33);

fn ip6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn l6() -> Layout6 {
    Layout6::default()
}

/// Container #n of `vm` (index n + 1).
fn c6(vm: Ipv4Addr, n: u32) -> Ipv6Addr {
    l6().container_addr(vm, n).unwrap()
}

fn dp6(local: Ipv4Addr) -> Datapath {
    Datapath::new(Layout::wide(), local, None).with_overlay6(l6())
}

/// An IPv6 packet: `next_header` with `upper` as its payload.
fn pkt6(src: Ipv6Addr, dst: Ipv6Addr, tc: u8, next_header: u8, upper: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    Ipv6Repr {
        src,
        dst,
        next_header,
        hop_limit: 64,
        traffic_class: tc,
        flow_label: 0xbeef,
        payload_len: upper.len(),
    }
    .emit(&mut p)
    .unwrap();
    p.extend_from_slice(upper);
    p
}

/// ICMPv6 of `icmp_type` with 8 + `extra` bytes and a valid checksum.
fn icmp6(src: Ipv6Addr, dst: Ipv6Addr, tc: u8, icmp_type: u8, extra: usize) -> Vec<u8> {
    let mut m = vec![0u8; 8 + extra];
    m[0] = icmp_type;
    for (i, b) in m[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let c = ipv6::upper_layer_checksum(src, dst, ipv6::NEXT_ICMPV6, &m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    pkt6(src, dst, tc, ipv6::NEXT_ICMPV6, &m)
}

fn echo6(src: Ipv6Addr, dst: Ipv6Addr, tc: u8) -> Vec<u8> {
    icmp6(src, dst, tc, 128, 8)
}

/// Outer IPv4 (protocol 47) + GRE header bytes + payload.
fn outer(src: Ipv4Addr, dst: Ipv4Addr, tos: u8, gre_hdr: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    Ipv4Repr {
        src,
        dst,
        protocol: 47,
        tos,
        ttl: 64,
        dont_frag: true,
        ident: 0,
        payload_len: gre_hdr.len() + payload.len(),
    }
    .emit(&mut p)
    .unwrap();
    p.extend_from_slice(gre_hdr);
    p.extend_from_slice(payload);
    p
}

const GRE6: [u8; 4] = [0x00, 0x00, 0x86, 0xdd];

fn encap(dp: &Datapath, pkt: &[u8]) -> Result<(Vec<u8>, Encapsulated), DropReason> {
    let mut buf = vec![0u8; HEADROOM + pkt.len()];
    buf[HEADROOM..].copy_from_slice(pkt);
    let e = dp.encapsulate(&mut buf, HEADROOM, pkt.len())?;
    Ok((buf, e))
}

fn decap(dp: &Datapath, pkt: &[u8]) -> Result<Vec<u8>, DropReason> {
    let mut buf = pkt.to_vec();
    let d = dp.decapsulate(&mut buf, pkt.len())?;
    Ok(buf[d.start..d.start + d.len].to_vec())
}

#[test]
fn six_in_gre_writes_the_exact_outer_header() {
    let a = dp6(VM_A);
    let pkt = echo6(c6(VM_A, 1), c6(VM_B, 7), 0xb9);
    assert_eq!(pkt.len(), 56);
    let (buf, e) = encap(&a, &pkt).unwrap();
    assert_eq!(e.peer, VM_B);
    assert_eq!((e.start, e.len), (HEADROOM - 24, 24 + 56));
    let wire = &buf[e.start..e.start + e.len];
    let mut want = vec![
        0x45, 0xb9, 0x00, 80, 0x00, 0x00, 0x40, 0x00, 64, 47, 0, 0, 192, 168, 16, 32, 192, 168, 16,
        33, 0x00, 0x00, 0x86, 0xdd,
    ];
    let c = crate::wire::checksum::checksum(&want[..20]);
    want[10..12].copy_from_slice(&c.to_be_bytes());
    want.extend_from_slice(&pkt);
    assert_eq!(wire, &want[..]);
    // The inner header itself, byte for byte: version 6, traffic class 0xb9,
    // flow label 0xbeef, payload 16, ICMPv6, hop limit 64, the two addresses.
    assert_eq!(
        &wire[24..64],
        &[
            0x6b, 0x90, 0xbe, 0xef, 0, 16, 58, 64, //
            0xfd, 0x6d, 0x65, 0x73, 0x68, 0x66, 0, 0, 192, 168, 16, 32, 0, 0, 0, 2, //
            0xfd, 0x6d, 0x65, 0x73, 0x68, 0x66, 0, 0, 192, 168, 16, 33, 0, 0, 0, 8,
        ][..]
    );
    // An independent parser reads IPv4 / GRE 0x86DD / IPv6 / ICMPv6 echo.
    let (eh, rest) = etherparse::Ipv4Header::from_slice(wire).unwrap();
    assert_eq!(eh.calc_header_checksum(), eh.header_checksum);
    assert_eq!(&rest[..4], &GRE6);
    let inner = etherparse::SlicedPacket::from_ip(&rest[4..]).unwrap();
    assert!(matches!(
        inner.transport,
        Some(etherparse::TransportSlice::Icmpv6(_))
    ));
    // The peer delivers it unchanged.
    assert_eq!(decap(&dp6(VM_B), wire).unwrap(), pkt);
}

#[test]
fn six_in_gre_in_udp_writes_gre_only_and_roundtrips() {
    let opts = |dp: Datapath| dp.with_options(Encap::Udp, true, false);
    let a = opts(Datapath::new(Layout::wide(), VM_A, Some(42)).with_overlay6(l6()));
    let b = opts(Datapath::new(Layout::wide(), VM_B, Some(42)).with_overlay6(l6()));
    let pkt = echo6(c6(VM_A, 1), c6(VM_B, 7), 0);
    let (mut buf, e) = encap(&a, &pkt).unwrap();
    assert_eq!(e.start, HEADROOM - 12);
    let g = &buf[e.start..e.start + e.len];
    // C and K, protocol 0x86DD, checksum over GRE + inner, key 42.
    assert_eq!(&g[..4], &[0xa0, 0x00, 0x86, 0xdd]);
    assert!(crate::wire::checksum::verify(g));
    assert_eq!(&g[8..12], &42u32.to_be_bytes());
    assert_eq!(&g[12..], &pkt[..]);
    let len = e.len;
    let d = b
        .decapsulate_udp(&mut buf[e.start..], len, VM_A, 0)
        .unwrap();
    assert_eq!(&buf[e.start + d.start..e.start + d.start + d.len], &pkt[..]);
    assert_eq!(d.peer, VM_A);
    // A spoofing sender address on the UDP socket is refused.
    let (mut buf, e) = encap(&a, &pkt).unwrap();
    assert_eq!(
        b.decapsulate_udp(&mut buf[e.start..], e.len, ip4("192.168.16.40"), 0)
            .unwrap_err(),
        DropReason::SpoofedSource
    );
    // The UDP overhead is the same as for IPv4 (the outer header is IPv4).
    assert_eq!(a.overhead(), 20 + 8 + 12);
}

fn ip4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn ipv6_only_containers_above_the_ipv4_range_are_carried() {
    let pkt = echo6(c6(VM_A, 4094), c6(VM_B, 4_000_000_000), 0);
    let (buf, e) = encap(&dp6(VM_A), &pkt).unwrap();
    assert_eq!(
        decap(&dp6(VM_B), &buf[e.start..e.start + e.len]).unwrap(),
        pkt
    );
    let top = echo6(c6(VM_A, 1), c6(VM_B, crate::layout6::MAX_CONTAINER), 0);
    assert!(encap(&dp6(VM_A), &top).is_ok());
}

#[test]
fn without_the_ipv6_overlay_ipv6_is_refused_as_before() {
    let plain = Datapath::new(Layout::wide(), VM_B, None);
    let pkt = echo6(c6(VM_A, 1), c6(VM_B, 7), 0);
    assert_eq!(encap(&plain, &pkt).unwrap_err(), DropReason::NotIpv4);
    assert_eq!(plain.egress(&pkt).unwrap_err(), DropReason::NotIpv4);
    let wire = outer(VM_A, VM_B, 0, &GRE6, &pkt);
    assert_eq!(decap(&plain, &wire).unwrap_err(), DropReason::GreNotIpv4);
    assert_eq!(plain.overlay6(), None);
    assert_eq!(dp6(VM_B).overlay6(), Some(l6()));
}

#[test]
fn ipv4_still_works_with_the_ipv6_overlay() {
    let l = Layout::wide();
    let pkt4 = {
        let mut p = vec![0u8; 40];
        Ipv4Repr {
            src: l.container_addr(VM_A, 1).unwrap(),
            dst: l.container_addr(VM_B, 1).unwrap(),
            protocol: 17,
            tos: 0,
            ttl: 64,
            dont_frag: true,
            ident: 0,
            payload_len: 20,
        }
        .emit(&mut p)
        .unwrap();
        p
    };
    let (buf, e) = encap(&dp6(VM_A), &pkt4).unwrap();
    assert_eq!(&buf[e.start + 20..e.start + 24], &[0, 0, 0x08, 0x00]);
    assert_eq!(
        decap(&dp6(VM_B), &buf[e.start..e.start + e.len]).unwrap(),
        pkt4
    );
    // IPv4 inside 0x86DD (or IPv6 inside 0x0800) is malformed.
    assert_eq!(
        decap(&dp6(VM_B), &outer(VM_A, VM_B, 0, &GRE6, &pkt4)).unwrap_err(),
        DropReason::InnerMalformed
    );
    let pkt6 = echo6(c6(VM_A, 1), c6(VM_B, 7), 0);
    assert_eq!(
        decap(&dp6(VM_B), &outer(VM_A, VM_B, 0, &[0, 0, 8, 0], &pkt6)).unwrap_err(),
        DropReason::InnerMalformed
    );
}

#[test]
fn egress_reject_matrix() {
    let a = dp6(VM_A);
    let me = c6(VM_A, 1);
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (vec![0x60; 30], DropReason::TooShort),
        (
            {
                let mut p = echo6(me, c6(VM_B, 1), 0);
                p[5] += 1; // payload length past the buffer
                p
            },
            DropReason::TooShort,
        ),
        (
            echo6(me, ip6("2001:db8::1"), 0),
            DropReason::DstNotInOverlay,
        ),
        (echo6(me, ip6("ff02::1"), 0), DropReason::DstNotInOverlay),
        (echo6(me, ip6("fd00::1"), 0), DropReason::DstNotInOverlay),
        (echo6(me, c6(VM_A, 9), 0), DropReason::DstLocalVm),
        (
            echo6(me, ip6("fd6d:6573:6866:0:c0a8:1021::"), 0),
            DropReason::DstReserved,
        ),
        (
            echo6(me, ip6("fd6d:6573:6866:0:a00:1:0:2"), 0),
            DropReason::PeerNotUnderlay,
        ),
        (
            echo6(me, ip6("fd6d:6573:6866:0:c0a8:0:0:2"), 0),
            DropReason::PeerNotUnicast,
        ),
        (
            echo6(me, ip6("fd6d:6573:6866:0:c0a8:ffff:0:2"), 0),
            DropReason::PeerNotUnicast,
        ),
        (echo6(c6(VM_B, 1), c6(VM_B, 2), 0), DropReason::SrcNotLocal),
        (
            echo6(ip6("fe80::1"), c6(VM_B, 2), 0),
            DropReason::SrcNotLocal,
        ),
    ];
    for (pkt, want) in cases {
        assert_eq!(a.egress(&pkt).unwrap_err(), want, "{pkt:02x?}");
        assert_eq!(encap(&a, &pkt).unwrap_err(), want, "{pkt:02x?}");
    }
}

/// A mesh packet from VM_A's container #1 to VM_B's container #1 with
/// `upper` as its payload behind `next_header`.
fn from_a(next_header: u8, upper: &[u8]) -> Vec<u8> {
    pkt6(c6(VM_A, 1), c6(VM_B, 1), 0, next_header, upper)
}

#[test]
fn ingress_reject_matrix() {
    let b = dp6(VM_B);
    let good = echo6(c6(VM_A, 1), c6(VM_B, 1), 0);
    assert_eq!(
        decap(&b, &outer(VM_A, VM_B, 0, &GRE6, &good)).unwrap(),
        good
    );
    let with = |inner: &[u8]| outer(VM_A, VM_B, 0, &GRE6, inner);
    let src = |s: &str| echo6(ip6(s), c6(VM_B, 1), 0);
    let mut cases: Vec<(Vec<u8>, DropReason)> = vec![
        // The outer and GRE checks are shared with IPv4.
        (
            outer(ip4("172.16.0.1"), VM_B, 0, &GRE6, &good),
            DropReason::OuterSrcNotUnderlay,
        ),
        (
            outer(VM_A, VM_B, 0, &[0x20, 0, 0x86, 0xdd, 0, 0, 0, 1], &good),
            DropReason::KeyMismatch,
        ),
        (
            outer(VM_A, VM_B, 0, &[0x40, 0, 0x86, 0xdd, 0, 0, 0, 0], &good),
            DropReason::GreFlags,
        ),
        (with(&good[..39]), DropReason::InnerMalformed),
        (with(&good[..50]), DropReason::InnerMalformed),
        (with(&src("::")), DropReason::InnerSrcSpecial),
        (with(&src("fe80::1")), DropReason::InnerSrcSpecial),
        (with(&src("febf::1")), DropReason::InnerSrcSpecial),
        (with(&src("ff02::1")), DropReason::InnerSrcSpecial),
        (
            with(&src("::ffff:192.168.16.32")),
            DropReason::InnerSrcSpecial,
        ),
        (with(&src("2001:db8::1")), DropReason::InnerSrcNotOverlay),
        (with(&src("fd00::1")), DropReason::InnerSrcNotOverlay),
        (with(&src("::1")), DropReason::InnerSrcNotOverlay),
        (with(&src("fec0::1")), DropReason::InnerSrcNotOverlay),
        (
            with(&echo6(c6(ip4("192.168.16.40"), 1), c6(VM_B, 1), 0)),
            DropReason::SpoofedSource,
        ),
        (
            with(&echo6(c6(VM_A, 1), c6(ip4("192.168.16.40"), 1), 0)),
            DropReason::InnerDstNotLocal,
        ),
        (
            with(&echo6(c6(VM_A, 1), ip6("ff02::1"), 0)),
            DropReason::InnerDstNotLocal,
        ),
        (
            with(&echo6(c6(VM_A, 1), ip6("fd6d:6573:6866:0:c0a8:1021::"), 0)),
            DropReason::DstReserved,
        ),
        (
            with(&from_a(ipv6::NEXT_IPV4, &[0x45; 20])),
            DropReason::InnerTunnel,
        ),
        (
            with(&from_a(ipv6::NEXT_IPV6, &good)),
            DropReason::InnerTunnel,
        ),
        (
            with(&from_a(ipv6::NEXT_GRE, &[0, 0, 8, 0])),
            DropReason::InnerTunnel,
        ),
        (
            // An extension-header chain running past the packet.
            with(&from_a(ipv6::NEXT_DEST_OPTS, &[ipv6::NEXT_ICMPV6, 5, 0, 0])),
            DropReason::InnerMalformed,
        ),
        (
            outer(VM_A, VM_B, 0b11, &GRE6, &good),
            DropReason::EcnCeNotEct,
        ),
    ];
    for t in 133..=137 {
        cases.push((
            with(&icmp6(c6(VM_A, 1), c6(VM_B, 1), 0, t, 16)),
            DropReason::InnerNd,
        ));
        // Hidden behind a destination-options header and an atomic fragment.
        let nd = icmp6(c6(VM_A, 1), c6(VM_B, 1), 0, t, 16);
        let mut upper = vec![ipv6::NEXT_FRAGMENT, 0, 1, 4, 0, 0, 0, 0];
        upper.extend_from_slice(&[ipv6::NEXT_ICMPV6, 0, 0, 0, 0, 0, 0, 1]);
        upper.extend_from_slice(&nd[40..]);
        cases.push((
            with(&from_a(ipv6::NEXT_DEST_OPTS, &upper)),
            DropReason::InnerNd,
        ));
    }
    for (pkt, want) in cases {
        assert_eq!(decap(&b, &pkt).unwrap_err(), want, "{pkt:02x?}");
    }
    // Other ICMPv6 (echo, MLD, Packet Too Big, …), TCP, UDP and non-first
    // fragments pass.
    for t in [1, 2, 128, 129, 130, 138, 143] {
        let p = icmp6(c6(VM_A, 1), c6(VM_B, 1), 0, t, 16);
        assert!(decap(&b, &with(&p)).is_ok(), "ICMPv6 type {t}");
    }
    for nh in [ipv6::NEXT_TCP, ipv6::NEXT_UDP, ipv6::NEXT_NONE] {
        assert!(decap(&b, &with(&from_a(nh, &[0; 24]))).is_ok(), "{nh}");
    }
    let later_fragment = from_a(
        ipv6::NEXT_FRAGMENT,
        &[ipv6::NEXT_ICMPV6, 0, 0x05, 0x00, 0, 0, 0, 1, 134, 0, 0, 0],
    );
    assert!(decap(&b, &with(&later_fragment)).is_ok());
}

#[test]
fn rfc6040_ecn_decapsulation_on_the_traffic_class() {
    let b = dp6(VM_B);
    // (outer ECN, inner ECN) → inner ECN after decapsulation, or drop: the
    // same table as the IPv4 path (datapath/tests.rs).
    let table: [(u8, u8, Option<u8>); 16] = [
        (0b00, 0b00, Some(0b00)),
        (0b00, 0b01, Some(0b01)),
        (0b00, 0b10, Some(0b10)),
        (0b00, 0b11, Some(0b11)),
        (0b01, 0b00, Some(0b00)),
        (0b01, 0b01, Some(0b01)),
        (0b01, 0b10, Some(0b10)),
        (0b01, 0b11, Some(0b11)),
        (0b10, 0b00, Some(0b00)),
        (0b10, 0b01, Some(0b01)),
        (0b10, 0b10, Some(0b10)),
        (0b10, 0b11, Some(0b11)),
        (0b11, 0b00, None),
        (0b11, 0b01, Some(0b11)),
        (0b11, 0b10, Some(0b11)),
        (0b11, 0b11, Some(0b11)),
    ];
    for (o, i, want) in table {
        assert_eq!(ecn_after_decap(o, i), want);
        let pkt = echo6(c6(VM_A, 1), c6(VM_B, 1), 0xb8 | i);
        let got = decap(&b, &outer(VM_A, VM_B, 0xb8 | o, &GRE6, &pkt));
        match want {
            None => assert_eq!(got.unwrap_err(), DropReason::EcnCeNotEct),
            Some(e) => {
                let p = got.unwrap();
                let v = Ipv6Packet::new_checked(&p[..]).unwrap();
                assert_eq!(v.ecn(), e, "outer {o:02b} inner {i:02b}");
                assert_eq!(v.dscp(), 0xb8 >> 2);
                assert_eq!(v.flow_label(), 0xbeef);
                assert_eq!(&p[2..], &pkt[2..], "only the ECN bits change");
            }
        }
    }
    // Egress copies the whole Traffic Class outward (DSCP and ECN).
    for tc in [0x00, 0x01, 0x02, 0x03, 0xb8, 0xbb] {
        let (buf, e) = encap(&dp6(VM_A), &echo6(c6(VM_A, 1), c6(VM_B, 1), tc)).unwrap();
        assert_eq!(buf[e.start + 1], tc);
    }
}

#[test]
fn packet_too_big_goes_to_the_source_from_this_vm() {
    let a = dp6(VM_A);
    let big = pkt6(c6(VM_A, 1), c6(VM_B, 7), 0xb9, ipv6::NEXT_TCP, &[7u8; 1400]);
    let (buf, e) = encap(&a, &big).unwrap();
    let wire = &buf[e.start..e.start + e.len];
    assert_eq!(a.too_big_action(wire), TooBigAction::FragNeeded);
    let mut out = [0u8; 1500];
    let n = a.frag_needed(wire, e.peer, 1400, &mut out).unwrap();
    assert_eq!(n, 1280);
    let p = Ipv6Packet::new_checked(&out[..n]).unwrap();
    assert_eq!(p.src_addr(), l6().vm_addr(VM_A));
    assert_eq!(p.dst_addr(), c6(VM_A, 1));
    assert_eq!(p.traffic_class(), 0xb8);
    let m = p.payload();
    assert_eq!((m[0], m[1]), (2, 0));
    assert_eq!(u32::from_be_bytes([m[4], m[5], m[6], m[7]]), 1400 - 24);
    assert!(ipv6::verify_upper_layer(
        p.src_addr(),
        p.dst_addr(),
        ipv6::NEXT_ICMPV6,
        m
    ));
    assert_eq!(&m[8..], &big[..1232]);
    // Written to the TUN, it is for a local container (never sent back out).
    assert_eq!(a.egress(&out[..n]).unwrap_err(), DropReason::DstLocalVm);
    // The MTU never goes below the IPv6 minimum.
    let n = a.frag_needed(wire, e.peer, 1000, &mut out).unwrap();
    assert_eq!(&out[44..48], &1280u32.to_be_bytes());
    assert!(n <= 1280);
    // Never about an ICMPv6 error; about an echo, yes.
    let err = icmp6(c6(VM_A, 1), c6(VM_B, 7), 0, 1, 1400);
    let (buf, e) = encap(&a, &err).unwrap();
    assert_eq!(
        a.too_big_action(&buf[e.start..e.start + e.len]),
        TooBigAction::DropSilently
    );
    let echo = icmp6(c6(VM_A, 1), c6(VM_B, 7), 0, 128, 1400);
    let (buf, e) = encap(&a, &echo).unwrap();
    assert_eq!(
        a.too_big_action(&buf[e.start..e.start + e.len]),
        TooBigAction::FragNeeded
    );
    // Never Fragment: IPv6 is not fragmented on the way.
    assert_ne!(a.too_big_action(wire), TooBigAction::Fragment);
}

#[test]
fn flow_hash6_is_per_flow() {
    let tcp = |sport: u16, label: u32| {
        let mut upper = [0u8; 20];
        upper[..2].copy_from_slice(&sport.to_be_bytes());
        upper[2..4].copy_from_slice(&80u16.to_be_bytes());
        let mut p = pkt6(c6(VM_A, 1), c6(VM_B, 1), 0, ipv6::NEXT_TCP, &upper);
        p[1] = (p[1] & 0xf0) | (label >> 16) as u8;
        p[2..4].copy_from_slice(&(label as u16).to_be_bytes());
        p
    };
    assert_eq!(flow_hash(&tcp(1000, 5)), flow_hash(&tcp(1000, 5)));
    assert_ne!(flow_hash(&tcp(1000, 5)), flow_hash(&tcp(1001, 5)));
    assert_ne!(flow_hash(&tcp(1000, 5)), flow_hash(&tcp(1000, 6)));
    assert_eq!(flow_hash(&tcp(1000, 5)), flow_hash6(&tcp(1000, 5)));
    assert_eq!(flow_hash6(&[0x45; 40]), 0);
}

#[test]
fn special_sources() {
    for s in [
        "::",
        "fe80::1",
        "febf:ffff::1",
        "ff02::1",
        "ff0e::1",
        "::ffff:1.2.3.4",
    ] {
        assert!(is_special_source(u128::from(ip6(s))), "{s}");
    }
    for s in [
        "::1",
        "fec0::1",
        "fd6d:6573:6866::1",
        "2001:db8::1",
        "::1.2.3.4",
        "64:ff9b::1",
    ] {
        assert!(!is_special_source(u128::from(ip6(s))), "{s}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    /// Random bytes (made to look like IPv6 half of the time) never panic any
    /// decision with the IPv6 overlay enabled, in either encapsulation.
    #[test]
    fn random_bytes_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..200), at in 0usize..64, udp in any::<bool>(), key in proptest::option::of(any::<u32>())) {
        if let Some(b) = data.get_mut(at) {
            *b = 0x60 | (*b & 0x0f);
        }
        let encap_mode = if udp { Encap::Udp } else { Encap::Gre };
        let dp = Datapath::new(Layout::wide(), VM_B, key).with_overlay6(l6()).with_options(encap_mode, false, false);
        let mut b = data.clone();
        let _ = dp.decapsulate(&mut b, data.len());
        let mut b = data.clone();
        let _ = dp.decapsulate_udp(&mut b, data.len(), VM_A, 3);
        let inner = data.get(at..).unwrap_or(&[]);
        let _ = dp.egress(inner);
        let _ = flow_hash(inner);
        let mut b = vec![0u8; HEADROOM + inner.len()];
        b[HEADROOM..].copy_from_slice(inner);
        let _ = dp.encapsulate(&mut b, HEADROOM, inner.len());
        let _ = dp.too_big_action(&data);
        let mut out = [0u8; 1400];
        let _ = dp.frag_needed(&data, VM_A, 1400, &mut out);
        let _ = dp.frag_needed(&data, VM_A, 1400, &mut out[..50]);
    }

    /// A valid 6-in-GRE packet with random byte flips either decapsulates to
    /// an in-bounds IPv6 packet that passes every rule, or is refused.
    #[test]
    fn mutated_packets_are_refused_or_sane(pos in proptest::collection::vec((0usize..100, any::<u8>()), 1..4), len_cut in 0usize..10) {
        let dp = dp6(VM_B);
        let pkt = outer(VM_A, VM_B, 0, &GRE6, &echo6(c6(VM_A, 1), c6(VM_B, 1), 0));
        let mut b = pkt.clone();
        for (p, v) in pos {
            let i = p % b.len();
            b[i] = v;
        }
        let n = b.len() - len_cut;
        if let Ok(d) = dp.decapsulate(&mut b, n) {
            prop_assert!(d.start + d.len <= n);
            let inner = Ipv6Packet::new_checked(&b[d.start..d.start + d.len]).unwrap();
            prop_assert!(l6().block(VM_B).contains(inner.dst_addr()));
            prop_assert_eq!(l6().decompose(inner.src_addr()).unwrap().vm, d.peer);
            prop_assert!(!is_special_source(inner.src_raw()));
        }
    }

    /// Egress then ingress is the identity for any pair of VMs and indices,
    /// dual-stack or IPv6-only, in both encapsulations.
    #[test]
    fn encap_decap_identity(src_i in 1u32..=u32::MAX, dst_i in 1u32..=u32::MAX, b_low in 1u32..65534, len in 0usize..1400, tc in any::<u8>(), udp in any::<bool>()) {
        let b_vm = Ipv4Addr::from(u32::from(VM_A) & 0xffff_0000 | b_low);
        prop_assume!(b_vm != VM_A);
        let mode = if udp { Encap::Udp } else { Encap::Gre };
        let a = dp6(VM_A).with_options(mode, false, false);
        let b = dp6(b_vm).with_options(mode, false, false);
        let pkt = pkt6(l6().compose(VM_A, src_i), l6().compose(b_vm, dst_i), tc, ipv6::NEXT_UDP, &vec![0x5a; len]);
        let (mut buf, e) = encap(&a, &pkt).unwrap();
        prop_assert_eq!(e.peer, b_vm);
        let got = match mode {
            Encap::Gre => decap(&b, &buf[e.start..e.start + e.len]).unwrap(),
            Encap::Udp => {
                let d = b.decapsulate_udp(&mut buf[e.start..], e.len, VM_A, tc & 3).unwrap();
                buf[e.start + d.start..e.start + d.start + d.len].to_vec()
            }
        };
        prop_assert_eq!(got, pkt);
    }
}
