//! Coalescing against hand-built segment streams: what merges, what stays
//! alone, and that every merge resegments to exactly what was received.

use super::testutil::*;
use super::*;

fn udp(payload: &[u8]) -> Vec<u8> {
    let total = IP_LEN + 8 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = UDP;
    p[12..16].copy_from_slice(&SRC);
    p[16..20].copy_from_slice(&DST);
    let c = checksum::checksum(&p[..IP_LEN]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&5000u16.to_be_bytes());
    p[22..24].copy_from_slice(&6000u16.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    let ps = pseudo_sum(&SRC, &DST, UDP, (8 + payload.len()) as u16);
    let c = !checksum::fold(checksum::sum(&p[IP_LEN..], ps));
    p[26..28].copy_from_slice(&c.to_be_bytes());
    p
}

/// Feeds `pkts` (buffer i = packet i) and returns the writes as the
/// bytes a TUN would receive.
fn run(g: &mut Coalescer, pkts: &[Vec<u8>]) -> Vec<Vec<u8>> {
    g.clear();
    for (i, p) in pkts.iter().enumerate() {
        g.push(
            p,
            Piece {
                buf: i as u32,
                start: 0,
                len: p.len() as u32,
            },
        );
    }
    g.finish();
    g.writes
        .iter()
        .map(|w| {
            let mut out = w.prefix().to_vec();
            for pc in &g.pieces[w.first as usize..(w.first + w.count) as usize] {
                let b = &pkts[pc.buf as usize];
                out.extend_from_slice(&b[pc.start as usize..(pc.start + pc.len) as usize]);
            }
            out
        })
        .collect()
}

fn vnet(w: &[u8]) -> VirtioNetHdr {
    VirtioNetHdr::decode(w).unwrap()
}

/// Completes a NEEDS_CSUM packet the way the kernel would and checks it.
fn assert_partial_csum_completes(pkt: &[u8], proto: u8) {
    let mut p = pkt.to_vec();
    assert!(checksum::verify(&p[..IP_LEN]), "IPv4 header checksum");
    let off = if proto == TCP { 16 } else { 6 };
    let c = !checksum::fold(checksum::sum(&p[IP_LEN..], 0));
    p[IP_LEN + off..IP_LEN + off + 2].copy_from_slice(&c.to_be_bytes());
    assert!(transport_valid(&p, proto), "completed transport checksum");
}

#[test]
fn consecutive_segments_become_one_super_packet() {
    let mut g = Coalescer::new(true, true);
    let ts = [1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3];
    let pk = vec![
        tcp(1000, TCP_ACK, &[1; 100], &ts),
        tcp(1100, TCP_ACK, &[2; 100], &ts),
        tcp(1200, TCP_ACK | TCP_PSH, &[3; 40], &ts),
    ];
    let w = run(&mut g, &pk);
    assert_eq!(w.len(), 1);
    assert_eq!((g.writes[0].packets, g.writes[0].count), (3, 3));
    assert_eq!(
        g.writes[0].bytes as usize,
        pk.iter().map(Vec::len).sum::<usize>()
    );
    let h = vnet(&w[0]);
    assert_eq!((h.flags, h.gso_type), (F_NEEDS_CSUM, GSO_TCPV4));
    assert_eq!((h.hdr_len, h.gso_size), (52, 100));
    assert_eq!((h.csum_start, h.csum_offset), (20, 16));
    let p = &w[0][VIRTIO_NET_HDR_LEN..];
    assert_eq!(p.len(), 52 + 240);
    assert_eq!(u16::from_be_bytes([p[2], p[3]]) as usize, p.len());
    assert_eq!(p[IP_LEN + 13], TCP_ACK | TCP_PSH);
    assert_eq!(&p[52..152], &[1; 100]);
    assert_eq!(&p[252..], &[3; 40]);
    assert_partial_csum_completes(p, TCP);
}

#[test]
fn a_lone_segment_is_written_unchanged_behind_an_empty_header() {
    let mut g = Coalescer::new(true, true);
    let pk = vec![tcp(1, TCP_ACK, &[9; 10], &[])];
    let w = run(&mut g, &pk);
    assert_eq!(w.len(), 1);
    assert_eq!(&w[0][..VIRTIO_NET_HDR_LEN], &[0; VIRTIO_NET_HDR_LEN]);
    assert_eq!(&w[0][VIRTIO_NET_HDR_LEN..], &pk[0][..]);
}

#[test]
fn anything_that_does_not_fit_starts_a_new_packet() {
    let mut g = Coalescer::new(true, true);
    let a = tcp(0, TCP_ACK, &[0; 100], &[]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("sequence gap", tcp(150, TCP_ACK, &[0; 100], &[])),
        ("longer segment", tcp(100, TCP_ACK, &[0; 101], &[])),
        ("other options", tcp(100, TCP_ACK, &[0; 100], &[1, 1, 1, 1])),
        ("FIN", tcp(100, TCP_ACK | 0x01, &[0; 100], &[])),
        ("no payload", tcp(100, TCP_ACK, &[], &[])),
        ("udp", udp(&[0; 100])),
        (
            "other ack",
            tcp_with(100, TCP_ACK, &[0; 100], &[], 78, 0x02),
        ),
        ("other window", {
            let mut p = tcp(100, TCP_ACK, &[0; 100], &[]);
            p[IP_LEN + 15] += 1;
            resum_tcp(&mut p);
            p
        }),
        ("other TTL", {
            let mut p = tcp(100, TCP_ACK, &[0; 100], &[]);
            p[8] -= 1;
            with_id(p, true, 1)
        }),
        // CE must not be merged into a packet without it
        (
            "other TOS",
            tcp_with(100, TCP_ACK, &[0; 100], &[], 77, 0x03),
        ),
    ];
    for (what, b) in cases {
        let w = run(&mut g, &[a.clone(), b.clone()]);
        assert_eq!(w.len(), 2, "{what}");
        assert_eq!(&w[0][VIRTIO_NET_HDR_LEN..], &a[..], "{what}");
        assert_eq!(&w[1][VIRTIO_NET_HDR_LEN..], &b[..], "{what}");
    }
}

#[test]
fn psh_or_a_short_segment_ends_a_super_packet() {
    let mut g = Coalescer::new(true, true);
    let w = run(
        &mut g,
        &[
            tcp(0, TCP_ACK, &[0; 100], &[]),
            tcp(100, TCP_ACK, &[0; 50], &[]),
            tcp(150, TCP_ACK, &[0; 50], &[]),
        ],
    );
    assert_eq!(w.len(), 2);
    assert_eq!(g.writes[0].packets, 2);
    let w = run(
        &mut g,
        &[
            tcp(0, TCP_ACK | TCP_PSH, &[0; 100], &[]),
            tcp(100, TCP_ACK, &[0; 100], &[]),
        ],
    );
    assert_eq!(w.len(), 2);
}

#[test]
fn a_bad_checksum_is_written_alone_and_unmarked() {
    let mut g = Coalescer::new(true, true);
    let mut bad = tcp(100, TCP_ACK, &[5; 100], &[]);
    bad[IP_LEN + 30] ^= 0xff;
    let pk = vec![
        tcp(0, TCP_ACK, &[5; 100], &[]),
        bad.clone(),
        tcp(200, TCP_ACK, &[5; 100], &[]),
    ];
    let w = run(&mut g, &pk);
    assert_eq!(w.len(), 3);
    assert_eq!(vnet(&w[1]).flags, 0, "the kernel must check it itself");
    assert_eq!(&w[1][VIRTIO_NET_HDR_LEN..], &bad[..]);
}

/// Recomputes the TCP checksum of `p` after an edit.
fn resum_tcp(p: &mut [u8]) {
    let ps = pseudo_sum(&SRC, &DST, TCP, (p.len() - IP_LEN) as u16);
    p[IP_LEN + 16..IP_LEN + 18].fill(0);
    let c = !checksum::fold(checksum::sum(&p[IP_LEN..], ps));
    p[IP_LEN + 16..IP_LEN + 18].copy_from_slice(&c.to_be_bytes());
}

/// Rewrites the IPv4 ID and DF bit of `p`, keeping its header checksum valid.
fn with_id(mut p: Vec<u8>, df: bool, id: u16) -> Vec<u8> {
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6] = if df { 0x40 } else { 0 };
    p[10..12].fill(0);
    let c = checksum::checksum(&p[..IP_LEN]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

#[test]
fn a_bad_ipv4_header_checksum_is_never_laundered() {
    let mut g = Coalescer::new(true, true);
    let mut bad = tcp(0, TCP_ACK, &[5; 100], &[]);
    bad[4] ^= 0xff; // ID corrupted in flight (ignored with DF), header checksum now wrong
    let pk = vec![bad.clone(), tcp(100, TCP_ACK, &[5; 100], &[])];
    let w = run(&mut g, &pk);
    assert_eq!(w.len(), 2);
    assert_eq!(&w[0][VIRTIO_NET_HDR_LEN..], &bad[..]);
}

#[test]
fn without_df_the_ipv4_ids_must_go_up_by_one() {
    let mut g = Coalescer::new(true, true);
    let seg = |i: u32, id: u16| with_id(tcp(i * 100, TCP_ACK, &[1; 100], &[]), false, id);
    let w = run(&mut g, &[seg(0, 7), seg(1, 8), seg(2, 9)]);
    assert_eq!(w.len(), 1);
    let w = run(&mut g, &[seg(0, 7), seg(1, 7)]);
    assert_eq!(w.len(), 2, "a repeated ID without DF");
    let w = run(&mut g, &[seg(0, 0xffff), seg(1, 0)]);
    assert_eq!(w.len(), 1, "the ID wraps");
    // With DF the ID means nothing (RFC 6864): fixed or random IDs merge.
    let df = |i: u32, id: u16| with_id(tcp(i * 100, TCP_ACK, &[1; 100], &[]), true, id);
    assert_eq!(run(&mut g, &[df(0, 5), df(1, 5), df(2, 900)]).len(), 1);
}

/// Splits a write back into segments the way the kernel's TCP GSO would.
fn resegment(w: &[u8]) -> Vec<Vec<u8>> {
    let h = vnet(w);
    let p = &w[VIRTIO_NET_HDR_LEN..];
    if h.gso_type == 0 {
        return vec![p.to_vec()];
    }
    let hl = usize::from(h.hdr_len);
    let mss = usize::from(h.gso_size);
    let seq0 = u32::from_be_bytes([p[24], p[25], p[26], p[27]]);
    let chunks: Vec<&[u8]> = p[hl..].chunks(mss).collect();
    let n = chunks.len();
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut s = p[..hl].to_vec();
            s.extend_from_slice(c);
            let total = s.len() as u16;
            s[2..4].copy_from_slice(&total.to_be_bytes());
            let seq = seq0.wrapping_add((i * mss) as u32);
            s[24..28].copy_from_slice(&seq.to_be_bytes());
            if i + 1 < n {
                s[IP_LEN + 13] &= !TCP_PSH;
            }
            s
        })
        .collect()
}

/// Bytes that must survive coalescing + resegmentation: all but the IPv4
/// ID and both checksums.
fn essence(p: &[u8]) -> Vec<u8> {
    let mut e = p.to_vec();
    e[4..6].fill(0);
    e[10..12].fill(0);
    if e.len() >= IP_LEN + 18 && e[9] == TCP {
        e[IP_LEN + 16..IP_LEN + 18].fill(0);
    }
    e
}

#[test]
fn random_valid_streams_survive_coalescing_and_resegmentation() {
    let mut x = 0x9e37_79b9u32;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let mut g = Coalescer::new(true, false);
    let mut merged = 0;
    for _ in 0..500 {
        // Two flows' worth of segments, mostly in order, with the odd
        // gap, PSH, short segment, option change, other flag or bad sum.
        let mut seq = [0u32, 50_000];
        let mut pk = Vec::new();
        let mss = 100 + (next() % 1300) as usize;
        for _ in 0..(next() % 80) {
            let f = (next() % 8 == 0) as usize;
            let r = next() % 64;
            let len = if r == 0 {
                1 + (next() as usize % mss)
            } else {
                mss
            };
            let flags = match r {
                1 => TCP_ACK | TCP_PSH,
                2 => TCP_ACK | 0x01,
                3 => TCP_ACK | 0x40,
                _ => TCP_ACK,
            };
            if r == 4 {
                seq[f] = seq[f].wrapping_add(7);
            }
            let opts: &[u8] = if r == 5 { &[1, 1, 1, 1] } else { &[] };
            let mut p = tcp(seq[f], flags, &vec![(next() & 0xff) as u8; len], opts);
            p[IP_LEN + 1] = f as u8; // the flow: source port
            resum_tcp(&mut p);
            if r == 6 {
                p[IP_LEN + 20] ^= 1; // corrupted in flight
            }
            seq[f] = seq[f].wrapping_add(len as u32);
            pk.push(p);
        }
        let w = run(&mut g, &pk);
        let out: Vec<Vec<u8>> = w.iter().flat_map(|x| resegment(x)).collect();
        assert_eq!(out.len(), pk.len());
        for (o, i) in out.iter().zip(&pk) {
            assert_eq!(essence(o), essence(i));
        }
        for (x, wr) in w.iter().zip(&g.writes) {
            if wr.packets > 1 {
                merged += 1;
                let h = vnet(x);
                let p = &x[VIRTIO_NET_HDR_LEN..];
                // what virtio_net_hdr_to_skb and TCP GSO rely on
                assert!(h.gso_size > 0 && usize::from(h.hdr_len) < p.len());
                assert!(usize::from(h.csum_start + h.csum_offset) + 2 <= usize::from(h.hdr_len));
                assert_partial_csum_completes(p, TCP);
            }
        }
    }
    assert!(merged > 500, "the merge paths ran ({merged} merged writes)");
}

#[test]
fn size_and_segment_limits_hold() {
    let mut g = Coalescer::new(true, true);
    let pk: Vec<Vec<u8>> = (0..100u32)
        .map(|i| tcp(i * 1000, TCP_ACK, &[7; 1000], &[]))
        .collect();
    let w = run(&mut g, &pk);
    let total: u32 = g.writes.iter().map(|w| w.packets).sum();
    assert_eq!(total, 100);
    for x in &w {
        assert!(x.len() - VIRTIO_NET_HDR_LEN <= MAX_TOTAL);
        assert_partial_csum_completes(&x[VIRTIO_NET_HDR_LEN..], TCP);
    }
    assert!(g.writes.iter().all(|w| w.count as usize <= MAX_SEGMENTS));
    assert_eq!(g.writes[0].packets as usize, MAX_SEGMENTS);
    // 40 + 59 * 1100 = 64,940 bytes fit in one IPv4 packet, 60 segments do not.
    let pk: Vec<Vec<u8>> = (0..100u32)
        .map(|i| tcp(i * 1100, TCP_ACK, &[7; 1100], &[]))
        .collect();
    run(&mut g, &pk);
    assert_eq!(g.writes[0].packets, 59);
    let pk: Vec<Vec<u8>> = (0..100u32)
        .map(|i| tcp(i * 10, TCP_ACK, &[7; 10], &[]))
        .collect();
    run(&mut g, &pk);
    assert_eq!(g.writes[0].packets as usize, MAX_SEGMENTS, "small segments");
}

#[test]
fn udp_datagrams_merge_only_when_the_tun_takes_uso() {
    let pk = vec![udp(&[1; 300]), udp(&[2; 300]), udp(&[3; 10])];
    let mut g = Coalescer::new(true, true);
    let w = run(&mut g, &pk);
    assert_eq!(w.len(), 1);
    let h = vnet(&w[0]);
    assert_eq!((h.gso_type, h.gso_size, h.hdr_len), (GSO_UDP_L4, 300, 28));
    let p = &w[0][VIRTIO_NET_HDR_LEN..];
    assert_eq!(u16::from_be_bytes([p[24], p[25]]), 8 + 610);
    assert_partial_csum_completes(p, UDP);
    let mut g = Coalescer::new(true, false);
    assert_eq!(run(&mut g, &pk).len(), 3);
    let mut zero = udp(&[1; 300]);
    zero[26..28].fill(0);
    let mut g = Coalescer::new(true, true);
    assert_eq!(run(&mut g, &[zero.clone(), zero]).len(), 2);
}

#[test]
fn without_virtio_headers_every_packet_goes_alone_and_bare() {
    let mut g = Coalescer::new(false, true);
    let pk = vec![
        tcp(0, TCP_ACK, &[0; 100], &[]),
        tcp(100, TCP_ACK, &[0; 100], &[]),
    ];
    let w = run(&mut g, &pk);
    assert_eq!(w, pk);
}

#[test]
fn garbage_never_panics_and_every_byte_is_accounted() {
    let mut g = Coalescer::new(true, true);
    let mut x = 0x1234_5678u32;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let base = tcp(0, TCP_ACK, &[1; 64], &[1, 1, 1, 1]);
    for _ in 0..2000 {
        let mut pk = Vec::new();
        for _ in 0..(next() % 8) {
            let mut p = if next() % 2 == 0 {
                base.clone()
            } else {
                vec![0u8; (next() % 120) as usize]
            };
            for _ in 0..(next() % 4) {
                if !p.is_empty() {
                    let i = next() as usize % p.len();
                    p[i] = next() as u8;
                }
            }
            pk.push(p);
        }
        let w = run(&mut g, &pk);
        let n: u32 = g.writes.iter().map(|w| w.packets).sum();
        assert_eq!(n as usize, pk.len());
        for (x, wr) in w.iter().zip(&g.writes) {
            if wr.packets == 1 {
                assert_eq!(x.len(), VIRTIO_NET_HDR_LEN + wr.bytes as usize);
            }
        }
    }
}

// ------------------------------------------------------------------ IPv6 --

const SRC6: [u8; 16] = [
    0xfd, 0x6d, 0x65, 0x73, 0x68, 0x66, 0, 0, 192, 168, 16, 33, 0, 0, 0, 2,
];
const DST6: [u8; 16] = [
    0xfd, 0x6d, 0x65, 0x73, 0x68, 0x66, 0, 0, 192, 168, 16, 32, 0, 0, 0, 3,
];

/// A TCP/IPv6 segment (no extension headers) with a valid checksum;
/// Traffic Class `tc`, flow label `flow`, hop limit `hop`.
fn tcp6(seq: u32, flags: u8, payload: &[u8], opts: &[u8], tc: u8, flow: u32, hop: u8) -> Vec<u8> {
    let thl = 20 + opts.len();
    let plen = thl + payload.len();
    let mut p = vec![0u8; IP6_LEN + plen];
    let word = 6u32 << 28 | u32::from(tc) << 20 | (flow & 0xfffff);
    p[..4].copy_from_slice(&word.to_be_bytes());
    p[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
    p[6] = TCP;
    p[7] = hop;
    p[8..24].copy_from_slice(&SRC6);
    p[24..40].copy_from_slice(&DST6);
    let t = &mut p[IP6_LEN..];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&5201u16.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&77u32.to_be_bytes());
    t[12] = ((thl / 4) as u8) << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&502u16.to_be_bytes());
    t[20..thl].copy_from_slice(opts);
    t[thl..].copy_from_slice(payload);
    let ps = pseudo_sum6(&SRC6, &DST6, TCP, plen as u32);
    let c = !checksum::fold(checksum::sum(&p[IP6_LEN..], ps));
    p[IP6_LEN + 16..IP6_LEN + 18].copy_from_slice(&c.to_be_bytes());
    p
}

fn seg6(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    tcp6(
        seq,
        flags,
        payload,
        &[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3],
        0xb8,
        0x12345,
        63,
    )
}

#[test]
fn ipv6_segments_become_one_tcpv6_super_packet() {
    let mut g = Coalescer::new(true, true);
    let pk = vec![
        seg6(1000, TCP_ACK, &[1; 100]),
        seg6(1100, TCP_ACK, &[2; 100]),
        seg6(1200, TCP_ACK | TCP_PSH, &[3; 40]),
    ];
    let w = run(&mut g, &pk);
    assert_eq!(w.len(), 1);
    assert_eq!((g.writes[0].packets, g.writes[0].count), (3, 3));
    assert_eq!(
        g.writes[0].bytes as usize,
        pk.iter().map(Vec::len).sum::<usize>()
    );
    let h = vnet(&w[0]);
    assert_eq!((h.flags, h.gso_type), (F_NEEDS_CSUM, GSO_TCPV6));
    assert_eq!((h.hdr_len, h.gso_size), (72, 100));
    assert_eq!((h.csum_start, h.csum_offset), (40, 16));
    let p = &w[0][VIRTIO_NET_HDR_LEN..];
    assert_eq!(p.len(), 72 + 240);
    assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])), p.len() - 40);
    assert_eq!(
        &p[..4],
        &pk[0][..4],
        "version, Traffic Class, flow label kept"
    );
    assert_eq!(&p[6..40], &pk[0][6..40]);
    assert_eq!(p[IP6_LEN + 13], TCP_ACK | TCP_PSH);
    assert_eq!(&p[72..172], &[1; 100]);
    assert_eq!(&p[272..], &[3; 40]);
    // NEEDS_CSUM completed as the kernel would: a valid TCP checksum.
    let mut q = p.to_vec();
    let c = !checksum::fold(checksum::sum(&q[IP6_LEN..], 0));
    q[IP6_LEN + 16..IP6_LEN + 18].copy_from_slice(&c.to_be_bytes());
    assert!(transport_valid6(&q), "completed TCPv6 checksum");
}

#[test]
fn ipv6_differences_end_the_super_packet() {
    let mut g = Coalescer::new(true, true);
    let opts = [1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3];
    let first = seg6(1000, TCP_ACK, &[1; 100]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "traffic class",
            tcp6(1100, TCP_ACK, &[2; 100], &opts, 0xb9, 0x12345, 63),
        ),
        (
            "flow label",
            tcp6(1100, TCP_ACK, &[2; 100], &opts, 0xb8, 0x12346, 63),
        ),
        (
            "hop limit",
            tcp6(1100, TCP_ACK, &[2; 100], &opts, 0xb8, 0x12345, 62),
        ),
        ("sequence gap", seg6(1101, TCP_ACK, &[2; 100])),
        ("longer than the first", seg6(1100, TCP_ACK, &[2; 101])),
        (
            "options differ",
            tcp6(1100, TCP_ACK, &[2; 100], &[1; 12], 0xb8, 0x12345, 63),
        ),
        ("SYN", seg6(1100, TCP_ACK | 0x02, &[2; 100])),
    ];
    for (what, second) in cases {
        let pk = vec![first.clone(), second.clone()];
        let w = run(&mut g, &pk);
        assert_eq!(w.len(), 2, "{what}: must not merge");
        assert_eq!(&w[0][VIRTIO_NET_HDR_LEN..], &first[..], "{what}");
        assert_eq!(&w[1][VIRTIO_NET_HDR_LEN..], &second[..], "{what}");
    }
}

#[test]
fn ipv6_with_extension_headers_or_bad_checksum_is_written_alone() {
    let mut g = Coalescer::new(true, true);
    // A hop-by-hop header (next header 0) in front of TCP: written alone,
    // like everything whose upper layer is not right behind the fixed header.
    let mut ext = seg6(1000, TCP_ACK, &[1; 100]);
    ext[6] = 0;
    let mut bad = seg6(1100, TCP_ACK, &[2; 100]);
    bad[IP6_LEN + 30] ^= 0xff;
    let mut short_len = seg6(1200, TCP_ACK, &[3; 100]);
    short_len[5] -= 1; // payload length disagrees with the datagram
    for p in [ext, bad, short_len] {
        let pk = vec![
            seg6(900, TCP_ACK, &[0; 100]),
            p.clone(),
            seg6(1300, TCP_ACK, &[4; 100]),
        ];
        let w = run(&mut g, &pk);
        assert_eq!(w.len(), 3);
        assert_eq!(&w[1][..VIRTIO_NET_HDR_LEN], &[0; VIRTIO_NET_HDR_LEN]);
        assert_eq!(&w[1][VIRTIO_NET_HDR_LEN..], &p[..]);
    }
}

#[test]
fn ipv4_and_ipv6_never_merge() {
    let mut g = Coalescer::new(true, true);
    let pk = vec![
        tcp(1000, TCP_ACK, &[1; 100], &[]),
        tcp6(1100, TCP_ACK, &[2; 100], &[], 0x02, 0, 64),
        tcp6(1200, TCP_ACK, &[3; 100], &[], 0x02, 0, 64),
        tcp(1300, TCP_ACK, &[4; 100], &[]),
    ];
    let w = run(&mut g, &pk);
    assert_eq!(w.len(), 3);
    assert_eq!(vnet(&w[1]).gso_type, GSO_TCPV6);
    assert_eq!(g.writes[1].packets, 2);
    assert_eq!(&w[0][VIRTIO_NET_HDR_LEN..], &pk[0][..]);
    assert_eq!(&w[2][VIRTIO_NET_HDR_LEN..], &pk[3][..]);
}

#[test]
fn ipv6_garbage_never_panics() {
    let mut g = Coalescer::new(true, true);
    let base = seg6(1000, TCP_ACK, &[1; 64]);
    for cut in 0..base.len() {
        let mut p = base[..cut].to_vec();
        if !p.is_empty() {
            p[0] = 0x60;
        }
        let _ = run(&mut g, &[p.clone(), p]);
    }
}
