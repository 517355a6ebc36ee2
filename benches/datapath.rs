//! Micro-benchmarks of the pure datapath: egress decision + in-place header
//! write, and ingress checks + decapsulation, on 64 B and 1400 B packets, plus
//! egress spread over 4,096 destination VMs versus a single one (stateless
//! mapping must make these equal within noise).
//!
//! Run: `cargo bench --bench datapath` (criterion prints ns per packet).

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use meshfwd::datapath::{Datapath, HEADROOM};
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

criterion_group!(benches, bench);
criterion_main!(benches);
