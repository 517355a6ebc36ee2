//! The tc programs against their Rust twins, in the interpreter: for every
//! generated packet the verdict, the tunnel key set (peer, key, flags) and
//! the counters must be what `Datapath` decides.

use super::asm::{op, Insn};
use super::interp::{run, Run, RxTunnel, Skb, TxTunnel};
use super::programs::*;
use crate::datapath::{Datapath, DropReason, Encap, OUTER_TTL};
use crate::layout::{Cidr, Layout};
use crate::wire::gre::{GreRepr, PROTO_IPV4};
use crate::wire::ipv4::Ipv4Repr;
use proptest::prelude::*;
use std::net::Ipv4Addr;

const ETH_P_IPV6: u16 = 0x86dd;

fn params(layout: Layout, local: Ipv4Addr, key: Option<u32>, csum: bool, seq: bool) -> Params {
    Params {
        layout,
        local,
        key,
        csum,
        seq,
    }
}

fn twin(p: &Params) -> Datapath {
    Datapath::new(p.layout, p.local, p.key).with_options(Encap::Gre, p.csum, p.seq)
}

/// An IPv4 header (and `extra` payload bytes) with the given fields.
fn ipv4(src: u32, dst: u32, extra: usize) -> Vec<u8> {
    let total = 20 + extra;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.to_be_bytes());
    p[16..20].copy_from_slice(&dst.to_be_bytes());
    p
}

fn counted(slot: usize) -> Vec<u64> {
    let mut c = vec![0; COUNTER_SLOTS as usize];
    c[slot] = 1;
    c
}

fn no_counts() -> Vec<u64> {
    vec![0; COUNTER_SLOTS as usize]
}

/// Runs the egress program and checks it against `Datapath::egress`.
fn check_egress(p: &Params, prog: &[Insn], pkt: &[u8]) -> Result<Run, TestCaseError> {
    let skb = Skb {
        data: pkt.to_vec(),
        protocol: 0x0800,
        rx_tunnel: None,
    };
    let r = run(prog, &skb).map_err(|e| TestCaseError::fail(format!("interpreter: {e}")))?;
    match twin(p).egress(pkt) {
        Ok(peer) => {
            prop_assert_eq!(r.ret, u64::from(TC_ACT_OK), "pkt {:02x?}", pkt);
            prop_assert_eq!(
                r.tx_tunnel,
                Some(TxTunnel {
                    tunnel_id: p.key.unwrap_or(0),
                    remote: u32::from(peer),
                    tos: tunnel_key::TOS_INHERIT,
                    ttl: OUTER_TTL,
                    local: u32::from(p.local),
                    size: tunnel_key::SIZE as u32,
                    flags: set_tunnel_key_flags(p),
                })
            );
            prop_assert_eq!(&r.counters, &no_counts());
        }
        Err(reason) => {
            prop_assert_eq!(
                r.ret,
                u64::from(TC_ACT_SHOT),
                "{:?} pkt {:02x?}",
                reason,
                pkt
            );
            prop_assert_eq!(r.tx_tunnel, None);
            prop_assert_eq!(&r.counters, &counted(reason.index()), "{:?}", reason);
        }
    }
    Ok(r)
}

/// What the kernel delivers to the device for a GRE packet from `sender`:
/// the twin sees the whole outer packet, the program the inner packet plus
/// metadata.
#[derive(Clone, Debug)]
pub(crate) struct Rx {
    pub sender: u32,
    pub key: Option<u32>,
    pub csum: bool,
    pub protocol: u16,
    pub inner: Vec<u8>,
}

impl Rx {
    fn outer(&self, local: Ipv4Addr) -> Vec<u8> {
        let gre = GreRepr {
            protocol: self.protocol,
            checksum: self.csum,
            key: self.key,
            seq: None,
        };
        let hl = gre.header_len();
        let mut g = vec![0u8; hl + self.inner.len()];
        g[hl..].copy_from_slice(&self.inner);
        gre.emit(&mut g).expect("fits");
        let mut p = vec![0u8; 20];
        Ipv4Repr {
            src: Ipv4Addr::from(self.sender),
            dst: local,
            protocol: 47,
            tos: 0,
            ttl: 64,
            dont_frag: true,
            ident: 0,
            payload_len: g.len(),
        }
        .emit(&mut p)
        .expect("fits");
        p.extend_from_slice(&g);
        p
    }

    pub fn skb(&self) -> Skb {
        Skb {
            data: self.inner.clone(),
            protocol: self.protocol,
            rx_tunnel: Some(RxTunnel {
                remote: self.sender,
                key: self.key,
                csum: self.csum,
            }),
        }
    }
}

/// Runs the ingress program and checks it against `Datapath::decapsulate`.
fn check_ingress(p: &Params, prog: &[Insn], rx: &Rx) -> Result<Run, TestCaseError> {
    let r = run(prog, &rx.skb()).map_err(|e| TestCaseError::fail(format!("interpreter: {e}")))?;
    let mut outer = rx.outer(p.local);
    let len = outer.len();
    match twin(p).decapsulate(&mut outer, len) {
        Ok(_) => {
            prop_assert_eq!(r.ret, u64::from(TC_ACT_OK), "inner {:02x?}", rx.inner);
            prop_assert_eq!(&r.counters, &no_counts());
        }
        Err(reason) => {
            prop_assert_eq!(
                r.ret,
                u64::from(TC_ACT_SHOT),
                "{:?} inner {:02x?}",
                reason,
                rx.inner
            );
            prop_assert_eq!(&r.counters, &counted(reason.index()), "{:?}", reason);
        }
    }
    prop_assert_eq!(r.tx_tunnel, None);
    Ok(r)
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn wide_params(key: Option<u32>, csum: bool) -> Params {
    params(Layout::wide(), ip("192.168.16.32"), key, csum, false)
}

#[test]
fn egress_known_packets() {
    let p = wide_params(Some(42), false);
    let prog = egress(&p, &KernelOpts::CURRENT).unwrap();
    let me = u32::from(ip("241.2.0.2")); // container 1 on 192.168.16.32
    let cases: &[(u32, Option<DropReason>)] = &[
        (u32::from(ip("241.2.16.5")), None), // 192.168.16.33
        (u32::from(ip("10.0.0.1")), Some(DropReason::DstNotInOverlay)),
        (u32::from(ip("241.2.0.9")), Some(DropReason::DstLocalVm)),
        (u32::from(ip("241.2.16.0")), Some(DropReason::DstReserved)),
        (u32::from(ip("240.0.0.5")), Some(DropReason::PeerNotUnicast)), // 192.168.0.0
        (
            u32::from(ip("255.255.240.5")),
            Some(DropReason::PeerNotUnicast),
        ), // .255.255
    ];
    for &(dst, want) in cases {
        let r = check_egress(&p, &prog, &ipv4(me, dst, 8)).unwrap();
        match want {
            None => {
                let t = r.tx_tunnel.unwrap();
                assert_eq!(Ipv4Addr::from(t.remote), ip("192.168.16.33"));
                assert_eq!(t.tunnel_id, 42);
                assert_eq!(
                    t.flags,
                    tunnel_key::F_DONT_FRAGMENT | tunnel_key::F_ZERO_CSUM_TX
                );
            }
            Some(reason) => assert_eq!(r.counters[reason.index()], 1),
        }
    }
    // Header faults.
    let good = ipv4(me, u32::from(ip("241.2.16.5")), 8);
    check_egress(&p, &prog, &good[..19]).unwrap();
    let mut v6 = good.clone();
    v6[0] = 0x60;
    check_egress(&p, &prog, &v6).unwrap();
    let mut ihl = good.clone();
    ihl[0] = 0x44;
    check_egress(&p, &prog, &ihl).unwrap();
    let mut long = good.clone();
    long[3] += 1;
    let r = check_egress(&p, &prog, &long).unwrap();
    assert_eq!(r.counters[DropReason::TooShort.index()], 1);
    let foreign = ipv4(u32::from(ip("241.2.16.9")), u32::from(ip("241.2.32.5")), 0);
    let r = check_egress(&p, &prog, &foreign).unwrap();
    assert_eq!(r.counters[DropReason::SrcNotLocal.index()], 1);
}

#[test]
fn egress_flags_follow_the_options() {
    let local = ip("192.168.1.1");
    for (key, csum, seq, want) in [
        (Some(1), true, false, tunnel_key::F_DONT_FRAGMENT),
        (
            None,
            false,
            true,
            tunnel_key::F_DONT_FRAGMENT
                | tunnel_key::F_ZERO_CSUM_TX
                | tunnel_key::F_SEQ_NUMBER
                | tunnel_key::F_NO_TUNNEL_KEY,
        ),
    ] {
        let p = params(Layout::classic(), local, key, csum, seq);
        assert_eq!(set_tunnel_key_flags(&p), want);
        let prog = egress(&p, &KernelOpts::CURRENT).unwrap();
        let pkt = ipv4(u32::from(ip("10.1.1.7")), u32::from(ip("10.1.2.7")), 0);
        let r = check_egress(&p, &prog, &pkt).unwrap();
        assert_eq!(r.tx_tunnel.unwrap().flags, want);
    }
}

#[test]
fn kernel_version_limits() {
    assert_eq!(KernelOpts::for_version(5, 0), None);
    let k = KernelOpts::for_version(6, 2).unwrap();
    assert!(k.tuninfo_flags && k.tunnel_key_local && !k.no_tunnel_key);
    assert_eq!(KernelOpts::for_version(6, 3), Some(KernelOpts::CURRENT));
    assert_eq!(KernelOpts::for_version(7, 0), Some(KernelOpts::CURRENT));
    let old = KernelOpts::for_version(5, 10).unwrap();
    assert!(!old.tuninfo_flags && !old.tunnel_key_local);
    assert_eq!(
        KernelOpts::for_release("6.1.0-57-amd64\n"),
        KernelOpts::for_version(6, 1)
    );
    assert_eq!(KernelOpts::for_release("6.18.3"), Some(KernelOpts::CURRENT));
    assert_eq!(KernelOpts::for_release("4.19.0"), None);
    assert_eq!(KernelOpts::for_release("garbage"), None);
    assert_eq!(crate::ebpf::programs::parse_release("5"), None);

    // Unkeyed grids need 6.3; keyed ones build everywhere from 5.1.
    let unkeyed = wide_params(None, false);
    assert_eq!(egress(&unkeyed, &k), Err(ProgramError::KeyAlwaysSent));
    assert!(ingress(&unkeyed, &k).is_ok());
    let keyed = wide_params(Some(7), false);
    let prog = egress(&keyed, &old).unwrap();
    let pkt = ipv4(u32::from(ip("241.2.0.2")), u32::from(ip("241.2.16.5")), 0);
    let skb = Skb {
        data: pkt,
        protocol: 0x0800,
        rx_tunnel: None,
    };
    let t = run(&prog, &skb).unwrap().tx_tunnel.unwrap();
    assert_eq!((t.size, t.local), (tunnel_key::SIZE_NO_LOCAL as u32, 0));
}

#[test]
fn ingress_known_packets() {
    let p = wide_params(Some(42), true);
    let prog = ingress(&p, &KernelOpts::CURRENT).unwrap();
    let peer = u32::from(ip("192.168.16.33"));
    let from = u32::from(ip("241.2.16.5")); // a container of the peer
    let to = u32::from(ip("241.2.0.2"));
    let good = Rx {
        sender: peer,
        key: Some(42),
        csum: true,
        protocol: PROTO_IPV4,
        inner: ipv4(from, to, 8),
    };
    assert_eq!(check_ingress(&p, &prog, &good).unwrap().ret, 0);
    let variants: Vec<(Rx, DropReason)> = vec![
        (
            Rx {
                sender: u32::from(ip("10.9.9.9")),
                ..good.clone()
            },
            DropReason::OuterSrcNotUnderlay,
        ),
        (
            Rx {
                protocol: ETH_P_IPV6,
                ..good.clone()
            },
            DropReason::GreNotIpv4,
        ),
        (
            Rx {
                csum: false,
                ..good.clone()
            },
            DropReason::GreChecksumMissing,
        ),
        (
            Rx {
                key: Some(43),
                ..good.clone()
            },
            DropReason::KeyMismatch,
        ),
        (
            Rx {
                key: None,
                ..good.clone()
            },
            DropReason::KeyMismatch,
        ),
        (
            Rx {
                inner: good.inner[..19].to_vec(),
                ..good.clone()
            },
            DropReason::InnerMalformed,
        ),
        (
            Rx {
                inner: ipv4(u32::from(ip("10.0.0.1")), to, 0),
                ..good.clone()
            },
            DropReason::InnerSrcNotOverlay,
        ),
        (
            Rx {
                inner: ipv4(u32::from(ip("241.2.32.5")), to, 0),
                ..good.clone()
            },
            DropReason::SpoofedSource,
        ),
        (
            Rx {
                inner: ipv4(from, u32::from(ip("241.2.32.5")), 0),
                ..good.clone()
            },
            DropReason::InnerDstNotLocal,
        ),
        (
            Rx {
                inner: ipv4(from, u32::from(ip("241.2.0.0")), 0),
                ..good.clone()
            },
            DropReason::DstReserved,
        ),
    ];
    for (rx, reason) in variants {
        let r = check_ingress(&p, &prog, &rx).unwrap();
        assert_eq!(r.counters, counted(reason.index()), "{reason:?}");
    }
}

#[test]
fn ingress_without_metadata_counts_a_helper_failure() {
    let p = wide_params(None, false);
    let prog = ingress(&p, &KernelOpts::CURRENT).unwrap();
    let skb = Skb {
        data: ipv4(1, 2, 0),
        protocol: 0x0800,
        rx_tunnel: None,
    };
    let r = run(&prog, &skb).unwrap();
    assert_eq!(r.ret, u64::from(TC_ACT_SHOT));
    assert_eq!(r.counters, counted(HELPER_FAILED_SLOT as usize));
}

/// Before 6.1 (no BPF_F_TUNINFO_FLAGS) the program sees only the key's
/// value: "no key" and "key 0" are the same, and checksum presence is left
/// to the device's `icsum` flag. Documented, and pinned here.
#[test]
fn ingress_without_tuninfo_flags_compares_key_values_only() {
    let k = KernelOpts::for_version(6, 0).unwrap();
    let peer = u32::from(ip("192.168.16.33"));
    let rx = |key| Rx {
        sender: peer,
        key,
        csum: false,
        protocol: PROTO_IPV4,
        inner: ipv4(u32::from(ip("241.2.16.5")), u32::from(ip("241.2.0.2")), 0),
    };
    let unkeyed = ingress(&wide_params(None, true), &k).unwrap();
    assert_eq!(run(&unkeyed, &rx(None).skb()).unwrap().ret, 0);
    assert_eq!(
        run(&unkeyed, &rx(Some(0)).skb()).unwrap().ret,
        0,
        "the weakness"
    );
    assert_eq!(run(&unkeyed, &rx(Some(5)).skb()).unwrap().ret, 2);
    let keyed = ingress(&wide_params(Some(5), false), &k).unwrap();
    assert_eq!(run(&keyed, &rx(Some(5)).skb()).unwrap().ret, 0);
    assert_eq!(run(&keyed, &rx(None).skb()).unwrap().ret, 2);
}

/// Programs stay small and loop-free: every jump goes forward, so the
/// verifier walks each path once.
#[test]
fn programs_are_small_and_loop_free() {
    let p = wide_params(Some(1), true);
    for prog in [
        egress(&p, &KernelOpts::CURRENT).unwrap(),
        ingress(&p, &KernelOpts::CURRENT).unwrap(),
    ] {
        assert!(prog.len() < 150, "{}", prog.len());
        for (pc, i) in prog.iter().enumerate() {
            let class = i.code & 7;
            let jop = i.code & 0xf0;
            if (class == op::JMP || class == op::JMP32) && jop != op::CALL && jop != op::EXIT {
                assert!(i.off >= 0, "backward jump at {pc}");
                assert!(pc + 1 + (i.off as usize) < prog.len());
            }
        }
        assert_eq!(
            prog.iter()
                .filter(|i| super::asm::is_map_fd_load(i))
                .count(),
            1
        );
    }
}

// ---- generated packets ----

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// Presets and random valid layouts.
fn arb_layout() -> impl Strategy<Value = Layout> {
    let custom = (1u8..=24, any::<u32>(), any::<u32>())
        .prop_flat_map(|(op, onet, unet)| (Just(op), op + 2..=31, Just(onet), Just(unet)))
        .prop_filter_map("overlapping prefixes", |(op, up, onet, unet)| {
            let o = Cidr::new(Ipv4Addr::from(onet & mask(op)), op).ok()?;
            let u = Cidr::new(Ipv4Addr::from(unet & mask(up)), up).ok()?;
            Layout::new(o, u).ok()
        });
    prop_oneof![Just(Layout::wide()), Just(Layout::classic()), custom]
}

/// A layout, this VM's unicast underlay address and the options.
fn arb_params() -> impl Strategy<Value = Params> {
    (
        arb_layout(),
        any::<u32>(),
        prop_oneof![Just(None), Just(Some(0)), any::<u32>().prop_map(Some)],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_filter_map("no unicast VM", |(l, low, key, csum, seq)| {
            let u = l.underlay();
            let local = Ipv4Addr::from(u32::from(u.addr()) | (low & !u.mask()));
            l.is_unicast_vm(local)
                .then(|| params(l, local, key, csum, seq))
        })
}

/// An address of a chosen kind relative to `p`: anywhere, in the overlay,
/// in this VM's block, a block's host part 0, a VM with VM bits 0 or all
/// ones, or a container of a random VM.
fn addr_of_kind(p: &Params, kind: u8, r: u32, r2: u32) -> u32 {
    let l = p.layout;
    let o = l.overlay();
    let in_overlay = |x: u32| u32::from(o.addr()) | (x & !o.mask());
    let hb = u32::from(l.host_bits());
    let host_mask = (1u32 << hb) - 1;
    // The VM bits inside an overlay address.
    let vm_field = !l.underlay().mask() << hb;
    let block = u32::from(
        l.block(p.local)
            .map(|b| b.addr())
            .unwrap_or(Ipv4Addr::UNSPECIFIED),
    );
    match kind % 7 {
        0 => r,
        1 => in_overlay(r),
        2 => block | (r & host_mask),
        3 => in_overlay(r) & !host_mask,
        4 => in_overlay(r) & !vm_field,
        5 => in_overlay(r) | vm_field,
        _ => {
            let vm = u32::from(l.underlay().addr()) | (r2 & !l.underlay().mask());
            l.compose(Ipv4Addr::from(vm), (r & host_mask).max(1))
                .map(u32::from)
                .unwrap_or(r)
        }
    }
}

/// A packet from a header of the chosen addresses, then maybe damaged:
/// truncated, another version, IHL or total length.
fn shaped(src: u32, dst: u32, extra: usize, damage: u8, value: u8, cut: usize) -> Vec<u8> {
    let mut pkt = ipv4(src, dst, extra);
    match damage % 8 {
        0 => pkt.truncate(cut % (pkt.len() + 1)),
        1 => pkt[0] = (value & 0xf0) | (pkt[0] & 0x0f),
        2 => pkt[0] = 0x40 | (value & 0x0f),
        3 => pkt[2..4].copy_from_slice(&u16::from(value).to_be_bytes()),
        4 => pkt[3] = pkt[3].wrapping_add(value % 4),
        _ => {}
    }
    pkt
}

/// A configuration and an inner packet to send, shaped to reach every
/// egress verdict.
pub(crate) fn arb_egress() -> impl Strategy<Value = (Params, Vec<u8>)> {
    (
        arb_params(),
        (any::<u8>(), any::<u8>()),
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()),
        0usize..40,
        (any::<u8>(), any::<u8>(), any::<usize>()),
    )
        .prop_map(
            |(p, (sk, dk), (r1, r2, r3, r4), extra, (damage, value, cut))| {
                // The source is mostly this VM's own (kind 2), as on a real host.
                let src = addr_of_kind(&p, if sk % 4 == 0 { sk / 4 } else { 2 }, r1, r2);
                let dst = addr_of_kind(&p, dk, r3, r4);
                let pkt = shaped(src, dst, extra, damage, value, cut);
                (p, pkt)
            },
        )
}

/// A configuration and a received packet, shaped to reach every ingress
/// verdict: mostly well-formed from a container of the sending VM to one of
/// ours, each fault on its own now and then.
pub(crate) fn arb_ingress() -> impl Strategy<Value = (Params, Rx)> {
    (
        arb_params(),
        (any::<u8>(), any::<u8>(), any::<u8>()),
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()),
        any::<u32>(),
        0usize..40,
        (any::<u8>(), any::<u8>(), any::<usize>()),
    )
        .prop_map(
            |(p, (sk, dk, ok), (r1, r2, r3, r4), other_key, extra, (damage, value, cut))| {
                let l = p.layout;
                let src = addr_of_kind(&p, if sk % 4 == 0 { sk / 4 } else { 6 }, r1, r2);
                let some_vm = u32::from(l.underlay().addr()) | (r2 & !l.underlay().mask());
                let owner = if l.in_overlay(Ipv4Addr::from(src)) {
                    l.vm_of_raw(src)
                } else {
                    some_vm
                };
                let sender = match ok % 16 {
                    0 => r2,
                    1..=2 => some_vm,
                    _ => owner,
                };
                let dst = match dk % 8 {
                    0 => addr_of_kind(&p, dk / 8, r3, r4),
                    1 => addr_of_kind(&p, 2, 0, r4), // our block's host part 0
                    _ => addr_of_kind(&p, 2, r3, r4),
                };
                let key = match ok / 16 % 8 {
                    0 => None,
                    1 => Some(other_key),
                    2 => Some(0),
                    _ => p.key,
                };
                let csum = if ok & 0x80 != 0 && ok % 3 == 0 {
                    !p.csum
                } else {
                    p.csum
                };
                let protocol = if ok % 29 == 0 { ETH_P_IPV6 } else { PROTO_IPV4 };
                let inner = shaped(src, dst, extra, damage, value, cut);
                let rx = Rx {
                    sender,
                    key,
                    csum,
                    protocol,
                    inner,
                };
                (p, rx)
            },
        )
}

/// The generators reach every verdict the programs can give, so the
/// property tests below compare something on each path.
#[test]
fn generated_packets_reach_every_verdict() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut egress_seen, mut ingress_seen) = (Vec::new(), Vec::new());
    let verdict = |r: &Run| {
        r.counters
            .iter()
            .position(|&c| c > 0)
            .map_or("pass".to_string(), |i| {
                DropReason::ALL
                    .get(i)
                    .map_or("helper_failed", |d| d.name())
                    .to_string()
            })
    };
    for _ in 0..3000 {
        let (p, pkt) = arb_egress().new_tree(&mut runner).unwrap().current();
        let prog = egress(&p, &KernelOpts::CURRENT).unwrap();
        egress_seen.push(verdict(&check_egress(&p, &prog, &pkt).unwrap()));
        let (p, rx) = arb_ingress().new_tree(&mut runner).unwrap().current();
        let prog = ingress(&p, &KernelOpts::CURRENT).unwrap();
        ingress_seen.push(verdict(&check_ingress(&p, &prog, &rx).unwrap()));
    }
    let share = |seen: &[String], v: &str| seen.iter().filter(|s| *s == v).count();
    for (side, seen) in [("egress", &egress_seen), ("ingress", &ingress_seen)] {
        let mut kinds: Vec<&String> = seen.iter().collect();
        kinds.sort();
        kinds.dedup();
        let hist: Vec<String> = kinds
            .iter()
            .map(|k| format!("{k}={}", share(seen, k)))
            .collect();
        println!("{side}: {}", hist.join(" "));
    }
    for v in [
        "pass",
        "too_short",
        "not_ipv4",
        "bad_ip_header",
        "dst_not_in_overlay",
        "dst_local_vm",
        "dst_reserved",
        "peer_not_unicast",
        "src_not_local",
    ] {
        assert!(
            share(&egress_seen, v) >= 15,
            "egress {v}: {}",
            share(&egress_seen, v)
        );
    }
    for v in [
        "pass",
        "outer_src_not_underlay",
        "gre_not_ipv4",
        "gre_checksum_missing",
        "key_mismatch",
        "inner_malformed",
        "inner_src_not_overlay",
        "spoofed_source",
        "inner_dst_not_local",
        "dst_reserved",
    ] {
        assert!(
            share(&ingress_seen, v) >= 15,
            "ingress {v}: {}",
            share(&ingress_seen, v)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn egress_matches_the_datapath((p, pkt) in arb_egress()) {
        let prog = egress(&p, &KernelOpts::CURRENT).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_egress(&p, &prog, &pkt)?;
    }

    #[test]
    fn ingress_matches_the_datapath((p, rx) in arb_ingress()) {
        let prog = ingress(&p, &KernelOpts::CURRENT).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_ingress(&p, &prog, &rx)?;
    }
}

#[test]
fn drop_all_drops_everything() {
    let prog = super::programs::drop_all();
    assert_eq!(prog.len(), 2);
    for (data, rx_tunnel) in [
        (vec![0x45; 60], None),
        (vec![], None),
        (
            vec![0x45; 20],
            Some(super::interp::RxTunnel {
                remote: 0xc0a8_0010,
                key: Some(9),
                csum: true,
            }),
        ),
    ] {
        let skb = super::interp::Skb {
            data,
            protocol: 0x0800,
            rx_tunnel,
        };
        let r = super::interp::run(&prog, &skb).unwrap();
        assert_eq!(r.ret, u64::from(super::programs::TC_ACT_SHOT));
    }
}
