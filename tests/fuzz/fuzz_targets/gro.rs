//! Fuzzes the receive coalescer with batches of packets: half of the inputs
//! are raw bytes (length-prefixed), half drive a generator of valid TCP
//! segments (checksums right, so the merge paths run) whose flow, sequence
//! step, flags, length, IPv4 ID/DF, TTL and corruption the input picks, as
//! TCP/IPv4 or (one option bit) TCP/IPv6, whose Traffic Class, flow label and
//! hop limit the input varies instead.
//! Checked: no panic, every packet written exactly once, pieces in bounds, a
//! merged packet is one valid IPv4 or IPv6 packet with sane virtio-net offsets
//! whose partial transport checksum completes to a valid one.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshfwd::gro::{Coalescer, Piece};
use meshfwd::wire::checksum::{fold, sum};

/// IPv4 + TCP segment from the generator's choices, checksums computed.
fn segment(flow: u8, seq: u32, flags: u8, id: u16, df: bool, ttl: u8, payload: usize) -> Vec<u8> {
    let total = 40 + payload;
    let mut p = vec![0u8; total];
    p[..4].copy_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8]);
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6] = if df { 0x40 } else { 0 };
    p[8] = ttl;
    p[9] = 6;
    p[12..20].copy_from_slice(&[240, 1, 2, 10, 240, 3, 4, 20]);
    let ipc = !fold(sum(&p[..20], 0));
    p[10..12].copy_from_slice(&ipc.to_be_bytes());
    p[20..24].copy_from_slice(&[0x9c, flow, 0x14, 0x51]);
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[32] = 0x50;
    p[33] = flags;
    p[34] = 2;
    for (i, b) in p[40..].iter_mut().enumerate() {
        *b = (i as u8) ^ flow;
    }
    let mut ph = [240, 1, 2, 10, 240, 3, 4, 20, 0, 6, 0, 0];
    ph[10..].copy_from_slice(&((total - 20) as u16).to_be_bytes());
    let c = !fold(sum(&p[20..], sum(&ph, 0)));
    p[36..38].copy_from_slice(&c.to_be_bytes());
    p
}

const SRC6: [u8; 16] = [0xfd, 0x6d, 0x65, 0x73, 0x68, 0x66, 0, 0, 192, 168, 1, 2, 0, 0, 0, 10];
const DST6: [u8; 16] = [0xfd, 0x6d, 0x65, 0x73, 0x68, 0x66, 0, 0, 192, 168, 3, 4, 0, 0, 0, 20];

/// IPv6 + TCP segment (no extension headers), checksum computed; `tc` and
/// `label` are the Traffic Class and flow label (GRO merges only equal ones).
fn segment6(flow: u8, seq: u32, flags: u8, tc: u8, label: u32, hop: u8, payload: usize) -> Vec<u8> {
    let plen = 20 + payload;
    let mut p = vec![0u8; 40 + plen];
    let word = 6u32 << 28 | u32::from(tc) << 20 | (label & 0xf_ffff);
    p[..4].copy_from_slice(&word.to_be_bytes());
    p[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
    p[6] = 6;
    p[7] = hop;
    p[8..24].copy_from_slice(&SRC6);
    p[24..40].copy_from_slice(&DST6);
    p[40..44].copy_from_slice(&[0x9c, flow, 0x14, 0x51]);
    p[44..48].copy_from_slice(&seq.to_be_bytes());
    p[52] = 0x50;
    p[53] = flags;
    p[54] = 2;
    for (i, b) in p[60..].iter_mut().enumerate() {
        *b = (i as u8) ^ flow;
    }
    let c = !fold(sum(&p[40..], pseudo6(&p[8..40], plen)));
    p[56..58].copy_from_slice(&c.to_be_bytes());
    p
}

/// The TCP/IPv6 pseudo-header sum of `addrs` (source then destination).
fn pseudo6(addrs: &[u8], plen: usize) -> u64 {
    let mut tail = [0u8; 8];
    tail[..4].copy_from_slice(&(plen as u32).to_be_bytes());
    tail[7] = 6;
    sum(&tail, sum(addrs, 0))
}

fn generated(mut d: &[u8], v6: bool) -> Vec<Vec<u8>> {
    let mut seq = [0u32; 2];
    let mut id = [0u16; 2];
    let mut out = Vec::new();
    while d.len() >= 4 && out.len() < 200 {
        let (a, b, c, e) = (d[0], d[1], d[2], d[3]);
        d = &d[4..];
        let f = usize::from(a & 1);
        let flags = [0x10, 0x10, 0x10, 0x18, 0x11, 0x50, 0x12, 0x10][usize::from(a >> 1 & 7)];
        let len = match b {
            0..=200 => 1000,
            _ => usize::from(c) * 4 % 1400,
        };
        if a & 0x10 != 0 {
            seq[f] = seq[f].wrapping_add(u32::from(c)); // a gap
        }
        let df = a & 0x20 == 0;
        let ttl = if a & 0x40 != 0 { 63 } else { 64 };
        let mut p = if v6 {
            // the input varies what must match for a merge instead of ID/DF
            let tc = if a & 0x20 != 0 { 0xb8 } else { 0 };
            let label = if e & 2 != 0 { u32::from(c) } else { 0x12345 };
            segment6(f as u8, seq[f], flags, tc, label, ttl, len)
        } else {
            segment(f as u8, seq[f], flags, id[f], df, ttl, len)
        };
        if a & 0x80 != 0 {
            let i = usize::from(e) % p.len();
            p[i] ^= c | 1; // corrupted in flight
        }
        seq[f] = seq[f].wrapping_add(len as u32);
        id[f] = id[f].wrapping_add(if e & 1 == 0 { 1 } else { u16::from(c) });
        out.push(p);
    }
    out
}

fn raw(mut rest: &[u8]) -> Vec<Vec<u8>> {
    let mut pkts = Vec::new();
    while rest.len() >= 2 && pkts.len() < 200 {
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]])) % 2048;
        rest = &rest[2..];
        let n = n.min(rest.len());
        pkts.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    pkts
}

fuzz_target!(|data: &[u8]| {
    let Some((&opts, rest)) = data.split_first() else {
        return;
    };
    let pkts = if opts & 4 != 0 {
        generated(rest, opts & 8 != 0)
    } else {
        raw(rest)
    };
    let mut g = Coalescer::new(opts & 1 == 0, opts & 2 == 0);
    for (i, p) in pkts.iter().enumerate() {
        let at = Piece {
            buf: i as u32,
            start: 0,
            len: p.len() as u32,
        };
        g.push(p, at);
    }
    g.finish();
    let total: u32 = g.writes.iter().map(|w| w.packets).sum();
    assert_eq!(total as usize, pkts.len());
    for w in &g.writes {
        let mut out = w.prefix().to_vec();
        for pc in &g.pieces[w.first as usize..(w.first + w.count) as usize] {
            let b = &pkts[pc.buf as usize];
            out.extend_from_slice(&b[pc.start as usize..(pc.start + pc.len) as usize]);
        }
        if w.packets > 1 {
            let v = |i: usize| usize::from(u16::from_ne_bytes([out[i], out[i + 1]]));
            let (hdr_len, gso_size, csum_start, csum_off) = (v(2), v(4), v(6), v(8));
            let p = &mut out[10..];
            assert!(gso_size > 0 && hdr_len < p.len() && csum_start + csum_off + 2 <= hdr_len);
            if p[0] >> 4 == 6 {
                // IPv6: a payload length that covers the rest, no header checksum
                assert_eq!(p[6], 6, "only TCP merges over IPv6");
                assert!(p.len() - 40 <= 65535);
                assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])), p.len() - 40);
                assert_eq!((csum_start, csum_off), (40, 16));
                let c = !fold(sum(&p[40..], 0));
                p[56..58].copy_from_slice(&c.to_be_bytes());
                let ph = pseudo6(&p[8..40], p.len() - 40);
                assert_eq!(fold(sum(&p[40..], ph)), 0xffff);
                continue;
            }
            assert!(p.len() <= 65535);
            assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
            assert_eq!(fold(sum(&p[..20], 0)), 0xffff);
            let off = if p[9] == 6 { 16 } else { 6 };
            let c = !fold(sum(&p[20..], 0));
            p[20 + off..22 + off].copy_from_slice(&c.to_be_bytes());
            let mut ph = [0u8; 12];
            ph[..8].copy_from_slice(&p[12..20]);
            ph[9] = p[9];
            ph[10..].copy_from_slice(&((p.len() - 20) as u16).to_be_bytes());
            assert_eq!(fold(sum(&p[20..], sum(&ph, 0))), 0xffff);
        }
    }
});
