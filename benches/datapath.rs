//! Micro-benchmarks of the pure datapath: egress decision + in-place header
//! write, and ingress checks + decapsulation, on 64 B and 1400 B packets;
//! a 64 KiB TCP super-packet through the worker's own egress code (TSO split +
//! headers into the arena: `worker::Egress`) and back through its ingress
//! code (checks + decapsulation of each datagram + zero-copy GRO into one TUN
//! write: the underlays' `decapsulate`), for GRE-in-UDP and raw GRE, in bytes
//! of inner payload per second; plus egress spread over 4,096
//! destination VMs versus a single one (stateless mapping must make these
//! equal within noise).
//!
//! Run: `cargo bench --bench datapath` (criterion prints ns per packet).

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use meshfwd::counters::Counters;
use meshfwd::datapath::{Datapath, Encap, HEADROOM};
use meshfwd::gro::Coalescer;
use meshfwd::layout::Layout;
use meshfwd::sys::batch::RecvMeta;
use meshfwd::wire::checksum;
use meshfwd::worker::{Egress, Message, RawGre, Segment, UdpGre, Underlay};
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
/// GRE-in-UDP MTU of 1468) through the worker's egress (`worker::Egress`:
/// split + GRE headers into the arena) and back through its ingress
/// (`Underlay::decapsulate` of `UdpGre`/`RawGre`: checks of each datagram of one GRO
/// message + zero-copy GRO into one TUN write), for both encapsulations.
fn superpacket(c: &mut Criterion, l: Layout, src: Ipv4Addr, dst: Ipv4Addr) {
    const MSS: usize = 1428;
    const SEGS: usize = 45;
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
    // The virtio-net header the kernel puts in front of a TSO read.
    let mut read = vec![1u8, 1];
    read.extend_from_slice(&40u16.to_le_bytes());
    read.extend_from_slice(&(MSS as u16).to_le_bytes());
    read.extend_from_slice(&20u16.to_le_bytes());
    read.extend_from_slice(&16u16.to_le_bytes());
    read.extend_from_slice(&tso);

    let mut g = c.benchmark_group("superpacket_64KiB");
    g.throughput(Throughput::Bytes(payload as u64));
    for encap in [Encap::Udp, Encap::Gre] {
        let name = match encap {
            Encap::Udp => "udp",
            Encap::Gre => "gre",
        };
        let a = Datapath::new(l, VM_A, None).with_options(encap, false, false);
        let b = Datapath::new(l, VM_B, None).with_options(encap, false, false);
        let mut eg = Egress::new();
        let mut counters = Counters::default();
        let mut segs: Vec<Segment> = Vec::with_capacity(SEGS);
        // Egress as the worker runs it, the segments collected instead of sent.
        eg.read[..read.len()].copy_from_slice(&read);
        let egress = |eg: &mut Egress, segs: &mut Vec<Segment>, c: &mut Counters| {
            eg.clear();
            segs.clear();
            // gso_split rewrites the headers it reads; the payload stays as read.
            eg.read[..50].copy_from_slice(&read[..50]);
            eg.take(read.len(), true, &a, c, &mut |_, s| segs.push(s));
            segs.len()
        };
        assert_eq!(egress(&mut eg, &mut segs, &mut counters), SEGS);
        g.bench_function(format!("egress_split_encapsulate_{name}"), |bch| {
            bch.iter(|| black_box(egress(&mut eg, &mut segs, &mut counters)))
        });
        // Ingress: what arrives (one GRO message in UDP mode, one buffer per
        // datagram in GRE mode); checks leave the buffers as they are.
        let mut gro = Coalescer::new(true, true);
        let mut bufs: Vec<Vec<u8>> = match encap {
            Encap::Udp => vec![segs
                .iter()
                .flat_map(|s| eg.arena[s.start..s.start + s.len].to_vec())
                .collect()],
            Encap::Gre => segs
                .iter()
                .map(|s| eg.arena[s.start..s.start + s.len].to_vec())
                .collect(),
        };
        let stride = segs[0].len;
        let ingress = |bufs: &mut Vec<Vec<u8>>, gro: &mut Coalescer, c: &mut Counters| {
            gro.clear();
            for (i, buf) in bufs.iter_mut().enumerate() {
                let meta = RecvMeta {
                    len: buf.len(),
                    segment: stride,
                    src: Some(VM_A),
                    ..Default::default()
                };
                let m = Message {
                    buf,
                    index: i,
                    meta,
                };
                match encap {
                    Encap::Udp => UdpGre::decapsulate(&b, m, c, gro),
                    Encap::Gre => RawGre::decapsulate(&b, m, c, gro),
                }
            }
            gro.finish();
            gro.writes.len()
        };
        assert_eq!(
            ingress(&mut bufs, &mut gro, &mut counters),
            1,
            "45 segments coalesce into one write"
        );
        assert_eq!(gro.writes[0].packets as usize, SEGS);
        g.bench_function(format!("ingress_decapsulate_gro_{name}"), |bch| {
            bch.iter(|| black_box(ingress(&mut bufs, &mut gro, &mut counters)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
