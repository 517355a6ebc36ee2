//! Micro-benchmarks of the pure datapath: egress decision + in-place header
//! write, and ingress checks + decapsulation, on 64 B and 1400 B packets;
//! a 64 KiB TCP super-packet through GRE-in-UDP egress (TSO split + GRE
//! headers into the GSO arena, as `worker::udp` does) and back through ingress
//! (checks + decapsulation of each datagram + zero-copy GRO into one TUN
//! write), in bytes of inner payload per second; plus egress spread over 4,096
//! destination VMs versus a single one (stateless mapping must make these
//! equal within noise).
//!
//! Run: `cargo bench --bench datapath` (criterion prints ns per packet).

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use meshfwd::datapath::{Datapath, Encap, HEADROOM};
use meshfwd::gro::{Coalescer, Piece};
use meshfwd::layout::Layout;
use meshfwd::wire::checksum;
use std::net::Ipv4Addr;

const VM_A: Ipv4Addr = Ipv4Addr::new(192, 168, 16, 32);
const VM_B: Ipv4Addr = Ipv4Addr::new(192, 168, 16, 33);

fn inner(src: Ipv4Addr, dst: Ipv4Addr, total: usize) -> Vec<u8> {
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

fn bench(c: &mut Criterion) {
    let l = Layout::wide();
    let a = Datapath::new(l, VM_A, None);
    let b = Datapath::new(l, VM_B, None);
    let src = l.container_addr(VM_A, 1).unwrap();
    let dst = l.container_addr(VM_B, 1).unwrap();

    for size in [64usize, 1400] {
        let pkt = inner(src, dst, size);
        let mut buf = vec![0u8; HEADROOM + size];
        buf[HEADROOM..].copy_from_slice(&pkt);
        let mut g = c.benchmark_group(format!("{size}B"));
        g.throughput(Throughput::Elements(1));
        g.bench_function("egress_decision", |bch| {
            bch.iter(|| black_box(a.egress(black_box(&pkt))))
        });
        g.bench_function("egress_encapsulate", |bch| {
            bch.iter(|| black_box(a.encapsulate(black_box(&mut buf), HEADROOM, size)))
        });
        let e = a.encapsulate(&mut buf, HEADROOM, size).unwrap();
        let wire = buf[e.start..e.start + e.len].to_vec();
        let mut rx = wire.clone();
        g.bench_function("ingress_decapsulate", |bch| {
            bch.iter(|| black_box(b.decapsulate(black_box(&mut rx), wire.len())))
        });
        g.finish();

        // As the worker runs it: a batch of 64 distinct buffers per call.
        let mut g = c.benchmark_group(format!("{size}B_batch64"));
        g.throughput(Throughput::Elements(64));
        let mut txs: Vec<Vec<u8>> = (0..64).map(|_| buf.clone()).collect();
        g.bench_function("egress_encapsulate", |bch| {
            bch.iter(|| {
                for t in txs.iter_mut() {
                    black_box(a.encapsulate(black_box(t), HEADROOM, size).ok());
                }
            })
        });
        let mut rxs: Vec<Vec<u8>> = (0..64).map(|_| wire.clone()).collect();
        g.bench_function("ingress_decapsulate", |bch| {
            bch.iter(|| {
                for r in rxs.iter_mut() {
                    black_box(b.decapsulate(black_box(r), wire.len()).ok());
                }
            })
        });
        g.finish();
    }

    superpacket(c, l, src, dst);

    // Egress over 4,096 distinct destination VMs vs 1: no per-peer state, so equal.
    let size = 64;
    let many: Vec<Vec<u8>> = (0..4096u32)
        .map(|i| {
            let vm =
                Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 0, 0)) | (i * 13 % 65000 + 2));
            let vm = if vm == VM_A { VM_B } else { vm };
            let mut b = vec![0u8; HEADROOM + size];
            b[HEADROOM..].copy_from_slice(&inner(src, l.container_addr(vm, 1).unwrap(), size));
            b
        })
        .collect();
    let one: Vec<Vec<u8>> = (0..4096)
        .map(|_| {
            let mut b = vec![0u8; HEADROOM + size];
            b[HEADROOM..].copy_from_slice(&inner(src, dst, size));
            b
        })
        .collect();
    let mut g = c.benchmark_group("peers");
    g.throughput(Throughput::Elements(4096));
    for (name, set) in [("1_peer_x4096", &one), ("4096_peers", &many)] {
        g.bench_function(name, |bch| {
            bch.iter_batched_ref(
                || set.clone(),
                |bufs| {
                    for buf in bufs.iter_mut() {
                        black_box(a.encapsulate(buf, HEADROOM, size).unwrap());
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

/// A 64 KiB TCP super-packet (45 segments of 1,428 B, the MSS at the
/// GRE-in-UDP MTU of 1468) through egress and back through ingress.
fn superpacket(c: &mut Criterion, l: Layout, src: Ipv4Addr, dst: Ipv4Addr) {
    use tun_rs::VirtioNetHdr;
    const MSS: usize = 1428;
    const SEGS: usize = 45;
    let a = Datapath::new(l, VM_A, None).with_options(Encap::Udp, false, false);
    let b = Datapath::new(l, VM_B, None).with_options(Encap::Udp, false, false);
    let payload = MSS * SEGS;
    let mut tso = inner(src, dst, 40 + payload);
    tso[9] = 6;
    tso[10..12].fill(0);
    let ipc = checksum::checksum(&tso[..20]);
    tso[10..12].copy_from_slice(&ipc.to_be_bytes());
    tso[20..22].copy_from_slice(&40000u16.to_be_bytes());
    tso[22..24].copy_from_slice(&5201u16.to_be_bytes());
    tso[32] = 5 << 4;
    tso[33] = 0x10;
    tso[34..36].copy_from_slice(&502u16.to_be_bytes());
    for (i, x) in tso[40..].iter_mut().enumerate() {
        *x = i as u8;
    }
    let hdr = VirtioNetHdr {
        flags: 1,
        gso_type: tun_rs::VIRTIO_NET_HDR_GSO_TCPV4,
        hdr_len: 40,
        gso_size: MSS as u16,
        csum_start: 20,
        csum_offset: 16,
    };
    let gl = a.header_len();
    let stride = gl + 40 + MSS;
    let mut arena = vec![0u8; stride * SEGS];
    let mut sizes = [0usize; SEGS];
    // Egress: split into the arena at `stride`, then a GRE header in front of each.
    // gso_split rewrites the super-packet's headers; the payload stays as read.
    let mut input = tso.clone();
    let mut egress = |arena: &mut Vec<u8>, sizes: &mut [usize; SEGS]| {
        input[..40].copy_from_slice(&tso[..40]);
        let mut slots: [&mut [u8]; SEGS] = {
            let mut it = arena.chunks_exact_mut(stride);
            std::array::from_fn(|_| it.next().unwrap())
        };
        let k = tun_rs::gso_split(&mut input, hdr, &mut slots, sizes, gl, false).unwrap();
        for (i, &len) in sizes.iter().enumerate().take(k) {
            let at = i * stride;
            black_box(
                a.encapsulate(&mut arena[at..at + gl + len], gl, len)
                    .unwrap(),
            );
        }
        k
    };
    assert_eq!(egress(&mut arena, &mut sizes), SEGS);
    let mut g = c.benchmark_group("superpacket_64KiB");
    g.throughput(Throughput::Bytes(payload as u64));
    g.bench_function("egress_split_encapsulate_udp", |bch| {
        bch.iter_batched_ref(
            || (),
            |_| black_box(egress(&mut arena, &mut sizes)),
            BatchSize::SmallInput,
        )
    });
    // Ingress: the arena is what one UDP GRO message holds.
    let wire = arena.clone();
    let mut rx = wire.clone();
    let mut gro = Coalescer::new(true, true);
    let ingress = |rx: &mut Vec<u8>, gro: &mut Coalescer| {
        gro.clear();
        let mut at = 0;
        while at < rx.len() {
            let len = stride.min(rx.len() - at);
            let d = &mut rx[at..at + len];
            if let Ok(x) = b.decapsulate_udp(d, len, VM_A, 0) {
                let piece = Piece {
                    buf: 0,
                    start: (at + x.start) as u32,
                    len: x.len as u32,
                };
                gro.push(&d[x.start..x.start + x.len], piece);
            }
            at += len;
        }
        gro.finish();
        gro.writes.len()
    };
    assert_eq!(
        ingress(&mut rx, &mut gro),
        1,
        "45 segments coalesce into one write"
    );
    assert_eq!(gro.writes[0].packets as usize, SEGS);
    g.bench_function("ingress_decapsulate_gro_udp", |bch| {
        bch.iter(|| black_box(ingress(&mut rx, &mut gro)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
