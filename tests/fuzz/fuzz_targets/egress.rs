//! Fuzzes the egress half of the worker (`worker::Egress::take`): one TUN
//! read with a virtio-net header, as the kernel hands it over with offload
//! on. Half of the inputs are raw bytes (header and packet as the input
//! says); half are a valid TCP super-packet, IPv4 or IPv6 (TSO6, #17), whose
//! virtio-net fields, MSS, payload length and one corrupted byte the input
//! picks, so `gso_split` really splits. With and without the IPv6 overlay,
//! both encapsulations, with and (raw inputs) without the virtio-net header.
//! Checked: no panic; every segment lies inside the arena, carries a valid
//! outer header (GRE mode) and an inner packet that parses; every TUN read is
//! accounted for (segments + drops = packets read, or one drop); an
//! uncorrupted super-packet comes out whole (`verify_split`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshfwd::counters::Counters;
use meshfwd::datapath::{Datapath, Encap};
use meshfwd::layout::Layout;
use meshfwd::layout6::Layout6;
use meshfwd::wire::checksum::{fold, sum};
use meshfwd::worker::Egress;
use std::net::Ipv4Addr;

const VNET: usize = 10;

/// A TCP super-packet from 192.168.16.33's container #1 to container #1 of
/// 192.168.16.32 (IPv4 wide layout or the default IPv6 overlay), `payload`
/// bytes, and the virtio-net header a TSO read has.
fn super_packet(v6: bool, mss: u16, payload: usize, seed: u8) -> Vec<u8> {
    let ip_len = if v6 { 40 } else { 20 };
    let hdr = ip_len + 20;
    let mut p = vec![0u8; VNET + hdr + payload];
    let gso_type: u8 = if v6 { 4 } else { 1 }; // VIRTIO_NET_HDR_GSO_TCPV6 / TCPV4
    p[0] = 1; // NEEDS_CSUM
    p[1] = gso_type;
    p[2..4].copy_from_slice(&(hdr as u16).to_le_bytes());
    p[4..6].copy_from_slice(&mss.to_le_bytes());
    p[6..8].copy_from_slice(&(ip_len as u16).to_le_bytes());
    p[8..10].copy_from_slice(&16u16.to_le_bytes());
    let ip = &mut p[VNET..];
    let (src, dst): (Vec<u8>, Vec<u8>) = if v6 {
        let l6 = Layout6::default();
        (
            l6.compose(Ipv4Addr::new(192, 168, 16, 33), 2).octets().to_vec(),
            l6.compose(Ipv4Addr::new(192, 168, 16, 32), 2).octets().to_vec(),
        )
    } else {
        (vec![241, 2, 16, 2], vec![241, 2, 0, 2])
    };
    let tlen = 20 + payload;
    if v6 {
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&(tlen as u16).to_be_bytes());
        ip[6] = 6;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&src);
        ip[24..40].copy_from_slice(&dst);
    } else {
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + tlen) as u16).to_be_bytes());
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        let c = !fold(sum(&ip[..20], 0));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let t = &mut ip[ip_len..];
    t[0..4].copy_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
    t[4..8].copy_from_slice(&u32::from(seed).to_be_bytes());
    t[12] = 0x50;
    t[13] = 0x18;
    t[14] = 2;
    for (i, b) in t[20..].iter_mut().enumerate() {
        *b = (i as u8) ^ seed;
    }
    // NEEDS_CSUM: the checksum field holds the pseudo-header sum
    let mut ph = Vec::with_capacity(40);
    ph.extend_from_slice(&src);
    ph.extend_from_slice(&dst);
    if v6 {
        ph.extend_from_slice(&(tlen as u32).to_be_bytes());
        ph.extend_from_slice(&[0, 0, 0, 6]);
    } else {
        ph.extend_from_slice(&[0, 6]);
        ph.extend_from_slice(&(tlen as u16).to_be_bytes());
    }
    let c = fold(sum(&ph, 0));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    p
}

/// Checks the segments of an uncorrupted generated super-packet: each a
/// valid IPv4/IPv6 + TCP packet (lengths, header and TCP checksums over the
/// right pseudo-header), full-size but for the last, sequence numbers that
/// advance by the bytes before them, payloads that concatenate to the original.
fn verify_split(inners: &[Vec<u8>], v6: bool, mss: usize, payload: usize, seed: u8) {
    let ip_len = if v6 { 40 } else { 20 };
    let mut joined = Vec::with_capacity(payload);
    for (k, p) in inners.iter().enumerate() {
        assert!(p.len() > ip_len + 20, "segment {k} too short");
        let tlen = p.len() - ip_len;
        let ph: u64 = if v6 {
            assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])), tlen, "IPv6 payload length");
            let mut t = [0u8; 8];
            t[..4].copy_from_slice(&(tlen as u32).to_be_bytes());
            t[7] = 6;
            sum(&t, sum(&p[8..40], 0))
        } else {
            assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len(), "IPv4 total length");
            assert_eq!(fold(sum(&p[..20], 0)), 0xffff, "IPv4 header checksum");
            let mut t = [0u8; 4];
            t[1] = 6;
            t[2..].copy_from_slice(&(tlen as u16).to_be_bytes());
            sum(&t, sum(&p[12..20], 0))
        };
        assert_eq!(fold(sum(&p[ip_len..], ph)), 0xffff, "TCP checksum of segment {k}");
        let seq = u32::from_be_bytes(p[ip_len + 4..ip_len + 8].try_into().unwrap());
        assert_eq!(seq, u32::from(seed) + joined.len() as u32, "sequence number of segment {k}");
        let data = &p[ip_len + 20..];
        if k + 1 < inners.len() {
            assert_eq!(data.len(), mss, "segment {k} is not full-size");
        }
        joined.extend_from_slice(data);
    }
    assert_eq!(joined.len(), payload, "payload bytes lost or added");
    assert!(
        joined.iter().enumerate().all(|(i, &b)| b == (i as u8) ^ seed),
        "payload bytes changed"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&opts, rest)) = data.split_first() else {
        return;
    };
    let encap = if opts & 1 != 0 { Encap::Udp } else { Encap::Gre };
    let mut dp = Datapath::new(Layout::wide(), Ipv4Addr::new(192, 168, 16, 33), None)
        .with_options(encap, opts & 2 != 0, opts & 4 != 0);
    if opts & 8 != 0 {
        dp = dp.with_overlay6(Layout6::default());
    }
    // (generated: v6, MSS, payload length, seed; `pristine`: not corrupted)
    let mut generated = None;
    let vnet = opts & 128 == 0 || opts & 16 != 0;
    let read = if opts & 16 != 0 && rest.len() >= 8 {
        let v6 = opts & 32 != 0;
        let mss = u16::from_le_bytes([rest[0], rest[1]]) % 1600 + 1;
        let payload = usize::from(u16::from_le_bytes([rest[2], rest[3]])) % 65000;
        let mut p = super_packet(v6, mss, payload, rest[4]);
        let pristine = opts & 64 == 0;
        if !pristine {
            // one byte changed anywhere, virtio-net and packet headers included
            let i = usize::from(u16::from_le_bytes([rest[5], rest[6]])) % p.len();
            p[i] ^= rest[7] | 1;
        }
        generated = Some((v6, usize::from(mss), payload, rest[4], pristine));
        p
    } else {
        rest.to_vec()
    };
    let mut eg = Egress::new();
    let n = read.len().min(eg.read.len());
    eg.read[..n].copy_from_slice(&read[..n]);
    let mut c = Counters::default();
    let mut inners: Vec<Vec<u8>> = Vec::new();
    let arena_len = eg.arena.len();
    let hl = dp.header_len();
    eg.take(n, vnet, &dp, &mut c, &mut |arena: &[u8], s| {
        assert_eq!(arena.len(), arena_len);
        assert!(s.start + s.len <= arena.len(), "segment outside the arena");
        let pkt = &arena[s.start..s.start + s.len];
        if encap == Encap::Gre {
            let outer = meshfwd::wire::Ipv4Packet::new_checked(pkt).expect("outer IPv4");
            assert!(outer.verify_checksum());
            assert_eq!(outer.dst_addr(), s.peer);
        }
        let inner = &pkt[hl.min(pkt.len())..];
        let ok4 = meshfwd::wire::Ipv4Packet::new_checked(inner).is_ok();
        let ok6 = meshfwd::wire::Ipv6Packet::new_checked(inner).is_ok();
        assert!(ok4 || ok6, "inner packet does not parse");
        if ok6 {
            assert!(dp.overlay6().is_some(), "IPv6 sent without the overlay");
        }
        inners.push(inner.to_vec());
    });
    let segs = inners.len() as u64;
    let drops: u64 = c.drops.iter().sum();
    if c.tun_rx_packets > 0 {
        assert_eq!(segs + drops, c.tun_rx_packets, "a packet read was neither sent nor counted");
    } else {
        // a read refused before it was counted as one (a bad virtio-net header)
        assert_eq!((segs, drops), (0, 1), "a read neither sent nor counted as one drop");
    }
    if let Some((v6, mss, payload, seed, true)) = generated {
        let fits = payload > 0 && payload.div_ceil(mss) <= meshfwd::worker::egress::MAX_SEGMENTS;
        if fits && (!v6 || dp.overlay6().is_some()) {
            assert_eq!(drops, 0, "a valid super-packet was dropped: {:?}", c.drops);
            verify_split(&inners, v6, mss, payload, seed);
        }
    }
});
