//! Fuzzes the receive coalescer with a batch of arbitrary packets (each
//! length-prefixed in the input): no panic, every packet is written exactly
//! once, pieces lie inside their buffers, and a merged packet is one valid
//! IPv4 packet whose transport checksum completes to a valid one.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshfwd::gro::{Coalescer, Piece};
use meshfwd::wire::checksum;

fuzz_target!(|data: &[u8]| {
    let (opts, mut rest) = match data.split_first() {
        Some((o, r)) => (*o, r),
        None => return,
    };
    let mut pkts: Vec<Vec<u8>> = Vec::new();
    while rest.len() >= 2 && pkts.len() < 200 {
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]])) % 2048;
        rest = &rest[2..];
        let n = n.min(rest.len());
        pkts.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    let mut g = Coalescer::new(opts & 1 == 0, opts & 2 == 0);
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
    let total: u32 = g.writes.iter().map(|w| w.packets).sum();
    assert_eq!(total as usize, pkts.len());
    for w in &g.writes {
        let mut out = w.prefix().to_vec();
        for pc in &g.pieces[w.first as usize..(w.first + w.count) as usize] {
            let b = &pkts[pc.buf as usize];
            out.extend_from_slice(&b[pc.start as usize..(pc.start + pc.len) as usize]);
        }
        if w.packets > 1 {
            let p = &mut out[10..];
            assert!(p.len() <= 65535);
            assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
            assert!(checksum::verify(&p[..20]));
            let off = if p[9] == 6 { 16 } else { 6 };
            let c = !checksum::fold(checksum::sum(&p[20..], 0));
            p[20 + off..22 + off].copy_from_slice(&c.to_be_bytes());
            let l4 = (p.len() - 20) as u16;
            let mut ph = [0u8; 12];
            ph[..8].copy_from_slice(&p[12..20]);
            ph[9] = p[9];
            ph[10..].copy_from_slice(&l4.to_be_bytes());
            assert_eq!(checksum::fold(checksum::sum(&p[20..], checksum::sum(&ph, 0))), 0xffff);
        }
    }
});
