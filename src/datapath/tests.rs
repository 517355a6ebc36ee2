//! Byte-vector tests of the datapath decisions: every verdict and drop reason.

use super::*;
use crate::wire::checksum;
use proptest::prelude::*;

const VM_A: Ipv4Addr = Ipv4Addr::new(192, 168, 16, 32);
const VM_B: Ipv4Addr = Ipv4Addr::new(192, 168, 16, 33);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A hand-built IPv4/ICMP echo of `total` bytes with a valid header checksum.
fn inner(src: Ipv4Addr, dst: Ipv4Addr, tos: u8, total: usize) -> Vec<u8> {
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[1] = tos;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 63;
    p[9] = 1;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    for (i, b) in p[20..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

/// Outer IPv4 (protocol 47) + raw GRE header bytes + payload, as a raw socket delivers it.
fn outer(src: Ipv4Addr, dst: Ipv4Addr, tos: u8, gre_hdr: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut g = gre_hdr.to_vec();
    g.extend_from_slice(payload);
    let mut p = vec![0u8; 20];
    Ipv4Repr {
        src,
        dst,
        protocol: 47,
        tos,
        ttl: 64,
        dont_frag: true,
        ident: 0,
        payload_len: g.len(),
    }
    .emit(&mut p)
    .unwrap();
    p.extend_from_slice(&g);
    p
}

const GRE_PLAIN: [u8; 4] = [0x00, 0x00, 0x08, 0x00];

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
fn classic_egress_writes_the_exact_outer_header() {
    let dp = Datapath::new(Layout::classic(), VM_A, None);
    let pkt = inner(ip("10.16.32.2"), ip("10.16.33.2"), 0xb9, 84);
    let (buf, e) = encap(&dp, &pkt).unwrap();
    assert_eq!(e.peer, VM_B);
    assert_eq!(e.start, HEADROOM - 24);
    assert_eq!(e.len, 84 + 24);
    let out = &buf[e.start..e.start + e.len];
    let mut want = vec![
        0x45, 0xb9, 0x00, 108, 0x00, 0x00, 0x40, 0x00, 64, 47, 0, 0, 192, 168, 16, 32, 192, 168,
        16, 33, 0x00, 0x00, 0x08, 0x00,
    ];
    let c = checksum::checksum(&want[..20]);
    want[10..12].copy_from_slice(&c.to_be_bytes());
    want.extend_from_slice(&pkt);
    assert_eq!(out, &want[..]);
    // An independent parser agrees.
    let (eh, _) = etherparse::Ipv4Header::from_slice(out).unwrap();
    assert_eq!(eh.calc_header_checksum(), eh.header_checksum);
    assert!(eh.dont_fragment);
    assert_eq!(eh.time_to_live, 64);
}

#[test]
fn keyed_egress_then_ingress_roundtrip() {
    for layout in [Layout::wide(), Layout::classic()] {
        let a = Datapath::new(layout, VM_A, Some(42));
        let b = Datapath::new(layout, VM_B, Some(42));
        let src = layout.container_addr(VM_A, 1).unwrap();
        let dst = layout.container_addr(VM_B, 7).unwrap();
        let pkt = inner(src, dst, 0, 1400);
        let (buf, e) = encap(&a, &pkt).unwrap();
        assert_eq!(a.overhead(), 28);
        let wire = &buf[e.start..e.start + e.len];
        assert_eq!(&wire[20..28], &[0x20, 0, 0x08, 0x00, 0, 0, 0, 42]);
        assert_eq!(decap(&b, wire).unwrap(), pkt);
        // A third VM is not the destination.
        let c = Datapath::new(layout, ip("192.168.200.7"), Some(42));
        assert_eq!(decap(&c, wire).unwrap_err(), DropReason::InnerDstNotLocal);
        // Different key, or none: refused.
        let b43 = Datapath::new(layout, VM_B, Some(43));
        assert_eq!(decap(&b43, wire).unwrap_err(), DropReason::KeyMismatch);
        let bnone = Datapath::new(layout, VM_B, None);
        assert_eq!(decap(&bnone, wire).unwrap_err(), DropReason::KeyMismatch);
    }
}

#[test]
fn vm_to_remote_container_uses_host_part_1_source() {
    let l = Layout::wide();
    let dp = Datapath::new(l, VM_A, None);
    let pkt = inner(ip("241.2.0.1"), ip("241.2.16.2"), 0, 60);
    assert_eq!(dp.egress(&pkt), Ok(VM_B));
}

#[test]
fn egress_drop_reasons() {
    let l = Layout::classic();
    let dp = Datapath::new(l, VM_A, None);
    let me = ip("10.16.32.2");
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (vec![0x45; 10], DropReason::TooShort),
        (
            {
                let mut p = inner(me, ip("10.16.33.2"), 0, 40);
                p[0] = 0x60;
                p
            },
            DropReason::NotIpv4,
        ),
        (
            {
                let mut p = inner(me, ip("10.16.33.2"), 0, 40);
                p[0] = 0x43;
                p
            },
            DropReason::BadIpHeader,
        ),
        (inner(me, ip("8.8.8.8"), 0, 40), DropReason::DstNotInOverlay),
        (inner(me, ip("10.16.32.9"), 0, 40), DropReason::DstLocalVm),
        (inner(me, ip("10.16.33.0"), 0, 40), DropReason::DstReserved),
        (
            inner(me, ip("10.255.255.5"), 0, 40),
            DropReason::PeerNotUnicast,
        ),
        (inner(me, ip("10.0.0.5"), 0, 40), DropReason::PeerNotUnicast),
        (
            inner(ip("10.16.40.2"), ip("10.16.33.2"), 0, 40),
            DropReason::SrcNotLocal,
        ),
        (
            inner(ip("1.2.3.4"), ip("10.16.33.2"), 0, 40),
            DropReason::SrcNotLocal,
        ),
    ];
    for (pkt, want) in cases {
        assert_eq!(encap(&dp, &pkt).unwrap_err(), want, "{pkt:02x?}");
    }
    // Headroom too small is refused, not a panic.
    let pkt = inner(me, ip("10.16.33.2"), 0, 40);
    let mut buf = pkt.clone();
    assert!(dp.encapsulate(&mut buf, 0, 40).is_err());
    assert!(dp.encapsulate(&mut buf, 30, 40).is_err());
}

#[test]
fn ingress_drop_reasons() {
    let l = Layout::classic();
    let dp = Datapath::new(l, VM_B, None);
    let good_inner = inner(ip("10.16.32.2"), ip("10.16.33.2"), 0, 40);
    let good = outer(VM_A, VM_B, 0, &GRE_PLAIN, &good_inner);
    assert_eq!(decap(&dp, &good).unwrap(), good_inner);

    let mut not_gre = good.clone();
    not_gre[9] = 17;
    let mut csum_bad = vec![0x80, 0, 0x08, 0x00, 0, 0, 0, 0];
    {
        let mut g = csum_bad.clone();
        g.extend_from_slice(&good_inner);
        let c = checksum::checksum(&g);
        csum_bad[4..6].copy_from_slice(&(c ^ 0x0100).to_be_bytes());
    }
    let mut csum_good = vec![0x80, 0, 0x08, 0x00, 0, 0, 0, 0];
    {
        let mut g = csum_good.clone();
        g.extend_from_slice(&good_inner);
        let c = checksum::checksum(&g);
        csum_good[4..6].copy_from_slice(&c.to_be_bytes());
    }
    assert_eq!(
        decap(&dp, &outer(VM_A, VM_B, 0, &csum_good, &good_inner)).unwrap(),
        good_inner
    );
    // A sequence number is accepted and ignored (Linux does the same without `iseq`).
    assert!(decap(
        &dp,
        &outer(VM_A, VM_B, 0, &[0x10, 0, 8, 0, 0, 0, 0, 9], &good_inner)
    )
    .is_ok());

    let truncated_inner = {
        let mut p = good_inner.clone();
        p.truncate(30);
        p
    };
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (good[..19].to_vec(), DropReason::TooShort),
        (good[..22].to_vec(), DropReason::TooShort),
        (
            {
                let mut p = good.clone();
                p[0] = 0x65;
                p
            },
            DropReason::NotIpv4,
        ),
        (
            {
                let mut p = good.clone();
                p[0] = 0x44;
                p
            },
            DropReason::BadIpHeader,
        ),
        (not_gre, DropReason::NotGre),
        (
            outer(ip("172.16.0.1"), VM_B, 0, &GRE_PLAIN, &good_inner),
            DropReason::OuterSrcNotUnderlay,
        ),
        (
            outer(VM_A, VM_B, 0, &[0x00, 0x01, 0x08, 0x00], &good_inner),
            DropReason::GreVersion,
        ),
        (
            outer(
                VM_A,
                VM_B,
                0,
                &[0x40, 0x00, 0x08, 0x00, 0, 0, 0, 0],
                &good_inner,
            ),
            DropReason::GreFlags,
        ),
        (
            outer(VM_A, VM_B, 0, &[0x00, 0x80, 0x08, 0x00], &good_inner),
            DropReason::GreFlags,
        ),
        (
            outer(VM_A, VM_B, 0, &[0x00, 0x00, 0x86, 0xdd], &good_inner),
            DropReason::GreNotIpv4,
        ),
        (
            outer(VM_A, VM_B, 0, &[0x00, 0x00, 0x65, 0x58], &good_inner),
            DropReason::GreNotIpv4,
        ),
        (
            outer(VM_A, VM_B, 0, &csum_bad, &good_inner),
            DropReason::GreChecksum,
        ),
        (
            outer(
                VM_A,
                VM_B,
                0,
                &[0x20, 0, 0x08, 0x00, 0, 0, 0, 1],
                &good_inner,
            ),
            DropReason::KeyMismatch,
        ),
        (
            outer(VM_A, VM_B, 0, &GRE_PLAIN, &truncated_inner),
            DropReason::InnerMalformed,
        ),
        (
            outer(VM_A, VM_B, 0, &GRE_PLAIN, &[0u8; 24]),
            DropReason::InnerMalformed,
        ),
        (
            outer(
                VM_A,
                VM_B,
                0,
                &GRE_PLAIN,
                &inner(ip("8.8.8.8"), ip("10.16.33.2"), 0, 40),
            ),
            DropReason::InnerSrcNotOverlay,
        ),
        (
            outer(
                VM_A,
                VM_B,
                0,
                &GRE_PLAIN,
                &inner(ip("10.16.40.2"), ip("10.16.33.2"), 0, 40),
            ),
            DropReason::SpoofedSource,
        ),
        (
            outer(
                VM_A,
                VM_B,
                0,
                &GRE_PLAIN,
                &inner(ip("10.16.32.2"), ip("10.16.34.2"), 0, 40),
            ),
            DropReason::InnerDstNotLocal,
        ),
        (
            // Host part 0 of our own block: the kernel would send it back out
            // of the TUN (issue #19: it came back as dst_local_vm).
            outer(
                VM_A,
                VM_B,
                0,
                &GRE_PLAIN,
                &inner(ip("10.16.32.2"), ip("10.16.33.0"), 0, 40),
            ),
            DropReason::DstReserved,
        ),
        (
            outer(VM_A, VM_B, 0b11, &GRE_PLAIN, &good_inner),
            DropReason::EcnCeNotEct,
        ),
    ];
    for (pkt, want) in cases {
        assert_eq!(decap(&dp, &pkt).unwrap_err(), want, "{pkt:02x?}");
    }
    // Received length larger than the buffer is a truncated datagram.
    let mut small = good.clone();
    assert_eq!(
        dp.decapsulate(&mut small, good.len() + 1).unwrap_err(),
        DropReason::Truncated
    );
}

#[test]
fn rfc6040_ecn_decapsulation() {
    let l = Layout::classic();
    let dp = Datapath::new(l, VM_B, None);
    // (outer ECN, inner ECN) → inner ECN after decapsulation, or drop.
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
        let pkt = inner(ip("10.16.32.2"), ip("10.16.33.2"), 0xb8 | i, 40);
        let got = decap(&dp, &outer(VM_A, VM_B, o, &GRE_PLAIN, &pkt));
        match want {
            None => assert_eq!(got.unwrap_err(), DropReason::EcnCeNotEct),
            Some(e) => {
                let p = got.unwrap();
                let v = Ipv4Packet::new_checked(&p[..]).unwrap();
                assert_eq!(v.ecn(), e, "outer {o:02b} inner {i:02b}");
                assert_eq!(v.dscp(), 0xb8 >> 2);
                assert!(v.verify_checksum());
            }
        }
    }
}

#[test]
fn egress_copies_dscp_and_ecn_outward() {
    let dp = Datapath::new(Layout::classic(), VM_A, None);
    for tos in [0x00, 0x01, 0x02, 0x03, 0xb8, 0xbb] {
        let pkt = inner(ip("10.16.32.2"), ip("10.16.33.2"), tos, 40);
        let (buf, e) = encap(&dp, &pkt).unwrap();
        assert_eq!(buf[e.start + 1], tos);
    }
}

#[test]
fn drop_reason_names_are_unique_snake_case() {
    let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
    for (i, r) in DropReason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
    }
    assert!(names.iter().all(|n| n
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')));
    names.sort();
    names.dedup();
    assert_eq!(names.len(), DropReason::COUNT);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    /// Random bytes never panic any parser or decision.
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200), key in proptest::option::of(any::<u32>())) {
        let dp = Datapath::new(Layout::classic(), VM_B, key);
        let mut b = data.clone();
        let _ = dp.decapsulate(&mut b, data.len());
        let mut b = data.clone();
        let _ = dp.decapsulate(&mut b, data.len() + 3);
        let mut b = data.clone();
        let h = data.len().min(HEADROOM);
        let _ = dp.encapsulate(&mut b, h, data.len() - h);
        let _ = dp.egress(&data);
        let _ = crate::wire::GrePacket::new_checked(&data[..]).map(|g| (g.key(), g.seq(), g.checksum(), g.payload().len(), g.verify_checksum()));
        let _ = crate::wire::Ipv4Packet::new_checked(&data[..]).map(|p| (p.payload().len(), p.verify_checksum(), p.frag_offset()));
    }

    /// Structured but mutated packets: a valid GRE packet with random byte flips
    /// must either decapsulate to a well-formed in-bounds range or be refused.
    #[test]
    fn mutated_packets_are_refused_or_sane(pos in proptest::collection::vec((0usize..80, any::<u8>()), 1..4), len_cut in 0usize..10) {
        let dp = Datapath::new(Layout::classic(), VM_B, None);
        let pkt = outer(VM_A, VM_B, 0, &GRE_PLAIN, &inner(ip("10.16.32.2"), ip("10.16.33.2"), 0, 52));
        let mut b = pkt.clone();
        for (p, v) in pos {
            let i = p % b.len();
            b[i] = v;
        }
        let n = b.len() - len_cut;
        if let Ok(d) = dp.decapsulate(&mut b, n) {
            prop_assert!(d.start + d.len <= n);
            let inner = Ipv4Packet::new_checked(&b[d.start..d.start + d.len]).unwrap();
            prop_assert!(Layout::classic().block(VM_B).unwrap().contains(inner.dst_addr()));
            prop_assert_eq!(Layout::classic().decompose(inner.src_addr()).unwrap().vm, d.peer);
        }
    }

    /// Egress then ingress is the identity on the inner packet for any valid pair.
    #[test]
    fn encap_decap_identity(src_host in 1u32..4095, dst_host in 1u32..4095, b_low in 1u32..65534, len in 20usize..1500, key in proptest::option::of(any::<u32>())) {
        let l = Layout::wide();
        let b_vm = Ipv4Addr::from(u32::from(ip("192.168.0.0")) | b_low);
        prop_assume!(b_vm != VM_A);
        let a = Datapath::new(l, VM_A, key);
        let b = Datapath::new(l, b_vm, key);
        let pkt = inner(l.compose(VM_A, src_host).unwrap(), l.compose(b_vm, dst_host).unwrap(), 0, len);
        let (buf, e) = encap(&a, &pkt).unwrap();
        prop_assert_eq!(e.peer, b_vm);
        prop_assert_eq!(decap(&b, &buf[e.start..e.start + e.len]).unwrap(), pkt);
    }
}

#[test]
fn too_big_actions_and_frag_needed() {
    let l = Layout::classic();
    let dp = Datapath::new(l, VM_A, None);
    let df = inner(ip("10.16.32.2"), ip("10.16.33.2"), 0, 1400);
    let (buf, e) = encap(&dp, &df).unwrap();
    let outer = &buf[e.start..e.start + e.len];
    assert_eq!(dp.too_big_action(outer), TooBigAction::FragNeeded);
    let mut out = [0u8; 128];
    let n = dp.frag_needed(outer, e.peer, 1400, &mut out).unwrap();
    let icmp = Ipv4Packet::new_checked(&out[..n]).unwrap();
    assert_eq!(icmp.src_addr(), ip("10.16.33.1"));
    assert_eq!(icmp.dst_addr(), ip("10.16.32.2"));
    assert_eq!(icmp.protocol(), 1);
    let p = icmp.payload();
    assert_eq!((p[0], p[1]), (3, 4));
    assert_eq!(u16::from_be_bytes([p[6], p[7]]), 1400 - 24);
    assert!(checksum::verify(p));
    // Written to the TUN, it is for a local container (never sent back out).
    assert_eq!(dp.egress(&out[..n]).unwrap_err(), DropReason::DstLocalVm);

    let mut nodf = df.clone();
    nodf[6] = 0;
    let c = checksum::checksum(&{
        let mut h = nodf[..20].to_vec();
        h[10] = 0;
        h[11] = 0;
        h
    });
    nodf[10..12].copy_from_slice(&c.to_be_bytes());
    let (buf, e) = encap(&dp, &nodf).unwrap();
    let outer = &buf[e.start..e.start + e.len];
    assert_eq!(dp.too_big_action(outer), TooBigAction::Fragment);

    // ICMP errors and non-first fragments never trigger ICMP.
    let mut icmp_err = inner(ip("10.16.32.2"), ip("10.16.33.2"), 0, 600);
    icmp_err[20] = 3;
    let (buf, e) = encap(&dp, &icmp_err).unwrap();
    assert_eq!(
        dp.too_big_action(&buf[e.start..e.start + e.len]),
        TooBigAction::DropSilently
    );
}

#[test]
fn csum_option_sends_and_requires_checksums() {
    let l = Layout::classic();
    let a = Datapath::new(l, VM_A, Some(7)).with_options(Encap::Gre, true, false);
    let b = Datapath::new(l, VM_B, Some(7)).with_options(Encap::Gre, true, false);
    assert_eq!(a.overhead(), 20 + 12);
    let pkt = inner(ip("10.16.32.2"), ip("10.16.33.2"), 0, 300);
    let (buf, e) = encap(&a, &pkt).unwrap();
    let outer_pkt = buf[e.start..e.start + e.len].to_vec();
    // C and K set, checksum valid over GRE header + payload, key after it.
    assert_eq!(&outer_pkt[20..22], &[0xa0, 0x00]);
    assert!(checksum::verify(&outer_pkt[20..]));
    assert_eq!(&outer_pkt[28..32], &7u32.to_be_bytes());
    assert_eq!(decap(&b, &outer_pkt).unwrap(), pkt);
    // A keyed packet without C: refused by --csum, accepted without it.
    let plain_k = [0x20, 0x00, 0x08, 0x00, 0, 0, 0, 7];
    let no_c = outer(VM_A, VM_B, 0, &plain_k, &pkt);
    assert_eq!(
        decap(&b, &no_c).unwrap_err(),
        DropReason::GreChecksumMissing
    );
    let lenient = Datapath::new(l, VM_B, Some(7));
    assert_eq!(decap(&lenient, &no_c).unwrap(), pkt);
    // Without --csum a valid checksum is accepted, a wrong one is not.
    assert_eq!(decap(&lenient, &outer_pkt).unwrap(), pkt);
    let mut bad = outer_pkt.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    assert_eq!(decap(&lenient, &bad).unwrap_err(), DropReason::GreChecksum);
    assert_eq!(decap(&b, &bad).unwrap_err(), DropReason::GreChecksum);
}

#[test]
fn seq_option_counts_per_destination_vm_and_is_shared_by_clones() {
    let l = Layout::classic();
    let a = Datapath::new(l, VM_A, None).with_options(Encap::Gre, false, true);
    let a2 = a.clone();
    let seq_of = |dp: &Datapath, dst: &str| {
        let pkt = inner(ip("10.16.32.2"), ip(dst), 0, 100);
        let (buf, e) = encap(dp, &pkt).unwrap();
        let o = &buf[e.start..e.start + e.len];
        assert_eq!(&o[20..22], &[0x10, 0x00]);
        u32::from_be_bytes([o[24], o[25], o[26], o[27]])
    };
    assert_eq!(seq_of(&a, "10.16.33.2"), 0);
    assert_eq!(seq_of(&a, "10.16.33.9"), 1);
    assert_eq!(seq_of(&a, "10.16.34.2"), 0);
    assert_eq!(seq_of(&a2, "10.16.33.2"), 2);
    assert_eq!(seq_of(&a, "10.16.34.2"), 1);
    // Received sequence numbers are accepted without a check (documented).
    let b = Datapath::new(l, VM_B, None);
    let pkt = inner(ip("10.16.32.2"), ip("10.16.33.2"), 0, 100);
    for s in [5u32, 3, 0xffff_ffff] {
        let mut h = vec![0x10, 0x00, 0x08, 0x00];
        h.extend_from_slice(&s.to_be_bytes());
        assert_eq!(decap(&b, &outer(VM_A, VM_B, 0, &h, &pkt)).unwrap(), pkt);
    }
}

#[test]
fn seq_with_csum_and_key_orders_fields_like_rfc2890() {
    let l = Layout::classic();
    let a = Datapath::new(l, VM_A, Some(0x01020304)).with_options(Encap::Gre, true, true);
    let b = Datapath::new(l, VM_B, Some(0x01020304)).with_options(Encap::Gre, true, true);
    let pkt = inner(ip("10.16.32.2"), ip("10.16.33.2"), 0, 64);
    for want in 0..3u32 {
        let (buf, e) = encap(&a, &pkt).unwrap();
        let o = &buf[e.start..e.start + e.len];
        assert_eq!(&o[20..24], &[0xb0, 0x00, 0x08, 0x00]);
        assert_eq!(&o[28..32], &[1, 2, 3, 4]);
        assert_eq!(&o[32..36], &want.to_be_bytes());
        let p = GrePacket::new_checked(&o[20..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.seq(), Some(want));
        assert_eq!(decap(&b, o).unwrap(), pkt);
    }
}

#[test]
fn udp_mode_writes_gre_only_and_checks_the_sender() {
    let l = Layout::classic();
    let a = Datapath::new(l, VM_A, Some(9)).with_options(Encap::Udp, false, false);
    let b = Datapath::new(l, VM_B, Some(9)).with_options(Encap::Udp, false, false);
    assert_eq!(a.overhead(), 20 + 8 + 8);
    assert_eq!(a.header_len(), 8);
    let pkt = inner(ip("10.16.32.2"), ip("10.16.33.2"), 0b10, 500);
    let (mut buf, e) = encap(&a, &pkt).unwrap();
    assert_eq!(e.peer, VM_B);
    assert_eq!(e.start, HEADROOM - 8);
    assert_eq!(e.len, 8 + 500);
    assert_eq!(&buf[e.start..e.start + 8], &[0x20, 0, 0x08, 0, 0, 0, 0, 9]);
    let g = &mut buf[e.start..e.start + e.len];
    let len = g.len();
    let d = b.decapsulate_udp(g, len, VM_A, 0).unwrap();
    assert_eq!(&g[d.start..d.start + d.len], &pkt[..]);
    assert_eq!(d.peer, VM_A);
    // The outer sender is what anti-spoofing checks.
    let c = ip("192.168.16.40");
    assert_eq!(
        b.decapsulate_udp(g, len, c, 0).unwrap_err(),
        DropReason::SpoofedSource
    );
    assert_eq!(
        b.decapsulate_udp(g, len, ip("10.0.0.1"), 0).unwrap_err(),
        DropReason::OuterSrcNotUnderlay
    );
    // Outer CE (from IP_RECVTOS) marks an ECT inner packet.
    let d = b.decapsulate_udp(g, len, VM_A, 0b11).unwrap();
    assert_eq!(g[d.start + 1] & 3, 3);
    // Raw GRE reaching a UDP-mode node, and UDP reaching a GRE-mode node.
    let raw = outer(VM_A, VM_B, 0, &GRE_PLAIN, &pkt);
    assert_eq!(decap(&b, &raw).unwrap_err(), DropReason::WrongEncap);
    let gre_node = Datapath::new(l, VM_B, Some(9));
    let mut g2 = buf[e.start..e.start + e.len].to_vec();
    assert_eq!(
        gre_node.decapsulate_udp(&mut g2, len, VM_A, 0).unwrap_err(),
        DropReason::WrongEncap
    );
    // Short buffers never panic.
    for n in 0..12 {
        let _ = b.decapsulate_udp(&mut g2[..n], n, VM_A, 0);
    }
}

#[test]
fn udp_mode_frag_needed_uses_the_udp_overhead() {
    let l = Layout::classic();
    let dp = Datapath::new(l, VM_A, None).with_options(Encap::Udp, false, false);
    let df = inner(ip("10.16.32.2"), ip("10.16.33.2"), 0, 1400);
    let (buf, e) = encap(&dp, &df).unwrap();
    let outer = &buf[e.start..e.start + e.len];
    assert_eq!(dp.too_big_action(outer), TooBigAction::FragNeeded);
    let mut out = [0u8; 128];
    let n = dp.frag_needed(outer, e.peer, 1400, &mut out).unwrap();
    let p = Ipv4Packet::new_checked(&out[..n]).unwrap();
    let icmp = p.payload();
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1400 - 32);
}

#[test]
fn flow_hash_is_per_flow() {
    fn tcp(src: &str, dst: &str, sport: u16, dport: u16, frag: bool) -> Vec<u8> {
        let mut p = inner(ip(src), ip(dst), 0, 60);
        p[9] = 6;
        if frag {
            p[6] = 0x20; // MF
        }
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }
    let a = tcp("10.16.32.2", "10.16.33.2", 40000, 5201, false);
    let mut a2 = a.clone();
    a2.extend_from_slice(&[0; 100]); // payload does not matter
    a2[2..4].copy_from_slice(&160u16.to_be_bytes());
    assert_eq!(flow_hash(&a), flow_hash(&a[..60]));
    // Different source ports of the same address pair spread out.
    let ports: std::collections::HashSet<u32> = (0..64)
        .map(|i| flow_hash(&tcp("10.16.32.2", "10.16.33.2", 40000 + i, 5201, false)) % 8)
        .collect();
    assert!(
        ports.len() >= 6,
        "64 flows hit only {} of 8 buckets",
        ports.len()
    );
    // A fragment hashes on addresses only (the ports are not in every fragment).
    assert_eq!(
        flow_hash(&tcp("10.16.32.2", "10.16.33.2", 1, 2, true)),
        flow_hash(&tcp("10.16.32.2", "10.16.33.2", 3, 4, true))
    );
    assert_eq!(flow_hash(&[0x45, 0, 0]), 0);
}

#[test]
fn link_layer_ingress_checks_the_outer_header_checksum() {
    let layout = Layout::wide();
    let b = Datapath::new(layout, VM_B, None);
    let src = layout.container_addr(VM_A, 1).unwrap();
    let dst = layout.container_addr(VM_B, 7).unwrap();
    let pkt = inner(src, dst, 0, 100);
    let wire = outer(VM_A, VM_B, 0, &GRE_PLAIN, &pkt);
    let run = |w: &[u8]| {
        let mut buf = w.to_vec();
        b.decapsulate_link(&mut buf, w.len())
            .map(|d| buf[d.start..d.start + d.len].to_vec())
    };
    assert_eq!(run(&wire).unwrap(), pkt);
    // Ethernet padding after the IPv4 total length is ignored.
    let mut padded = wire.clone();
    padded.extend_from_slice(&[0; 6]);
    assert_eq!(run(&padded).unwrap(), pkt);
    for byte in [1, 8, 10, 11, 19] {
        let mut bad = wire.clone();
        bad[byte] ^= 0x01;
        assert_eq!(
            run(&bad).unwrap_err(),
            DropReason::BadIpChecksum,
            "byte {byte}"
        );
    }
    assert_eq!(run(&wire[..19]).unwrap_err(), DropReason::TooShort);
    // The IPv4-layer path (raw sockets) does not recheck: the kernel did.
    let mut bad = wire.clone();
    bad[10] ^= 0x01;
    let mut buf = bad.clone();
    assert!(b.decapsulate(&mut buf, bad.len()).is_ok());
}
