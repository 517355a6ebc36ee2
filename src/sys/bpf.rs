//! Classic-BPF receive sharding for raw `IPPROTO_GRE` sockets.
//!
//! Every raw GRE socket gets its own copy of every GRE packet (SO_REUSEPORT
//! does not balance raw sockets), so each of N workers attaches a filter that
//! accepts only its shard of the received GRE packets. The filter sees each
//! packet from the OUTER IPv4 header on; the shard is a hash of the inner IPv4
//! source and destination. [`shard_of`] is the same hash in Rust and must stay
//! in lock-step with [`shard_filter`] (a test checks them against each other).
//!
//! Packets too short to hold the GRE header or the inner addresses go to
//! shard 0, so userspace sees and counts them instead of the kernel dropping
//! them silently on an out-of-bounds load.

use libc::sock_filter;

/// GRE flag bits in the first GRE header byte.
const GRE_C: u8 = 0x80;
const GRE_K: u8 = 0x20;
const GRE_S: u8 = 0x10;

/// Filter return value that accepts the whole packet.
const ACCEPT: u32 = u32::MAX;

/// Scratch memory slots M[] used by the filter.
const M_IHL: u32 = 0;
const M_FLAGS: u32 = 1;
const M_OFF: u32 = 2;
const M_HASH: u32 = 3;

/// Shard (`0..count`) of a packet starting at its outer IPv4 header:
///
/// ```text
/// ihl = 4 * (pkt[0] & 0xf); if len < ihl + 4 -> 0
/// off = ihl + 4 + 4*C + 4*K + 4*S          (flags = pkt[ihl])
/// if len < off + 20 -> 0
/// h = be32(pkt[off+12..]) ^ be32(pkt[off+16..]); h ^= h >> 16; h ^= h >> 8
/// shard = h % count
/// ```
///
/// `count <= 1` (and empty packets) give shard 0.
#[inline]
pub fn shard_of(packet: &[u8], count: u32) -> u32 {
    if count <= 1 {
        return 0;
    }
    let Some(&b0) = packet.first() else {
        return 0;
    };
    let ihl = 4 * usize::from(b0 & 0x0f);
    if packet.len() < ihl + 4 {
        return 0;
    }
    let flags = packet[ihl];
    let opt = |bit: u8| if flags & bit != 0 { 4 } else { 0 };
    let off = ihl + 4 + opt(GRE_C) + opt(GRE_K) + opt(GRE_S);
    if packet.len() < off + 20 {
        return 0;
    }
    let be32 = |at: usize| {
        u32::from_be_bytes([packet[at], packet[at + 1], packet[at + 2], packet[at + 3]])
    };
    let mut h = be32(off + 12) ^ be32(off + 16);
    h ^= h >> 16;
    h ^= h >> 8;
    h % count
}

/// Jump target while assembling; resolved to relative offsets at the end.
#[derive(Clone, Copy)]
enum To {
    Next,
    Accept,
    Reject,
}

#[derive(Default)]
struct Asm {
    ops: Vec<(u32, u32, To, To)>,
}

impl Asm {
    fn op(&mut self, code: u32, k: u32) -> &mut Self {
        self.jmp(code, k, To::Next, To::Next)
    }

    fn jmp(&mut self, code: u32, k: u32, jt: To, jf: To) -> &mut Self {
        self.ops.push((code, k, jt, jf));
        self
    }

    /// Appends `ret #ACCEPT; ret #0` and resolves the jumps.
    fn finish(&self) -> Vec<sock_filter> {
        let accept = self.ops.len();
        let reject = accept + 1;
        let rel = |pc: usize, to: To| -> u8 {
            let target = match to {
                To::Next => pc + 1,
                To::Accept => accept,
                To::Reject => reject,
            };
            u8::try_from(target - pc - 1).expect("cBPF jump offset fits in u8")
        };
        let mut prog: Vec<sock_filter> = self
            .ops
            .iter()
            .enumerate()
            .map(|(pc, &(code, k, jt, jf))| insn(code, rel(pc, jt), rel(pc, jf), k))
            .collect();
        prog.push(insn(libc::BPF_RET | libc::BPF_K, 0, 0, ACCEPT));
        prog.push(insn(libc::BPF_RET | libc::BPF_K, 0, 0, 0));
        prog
    }
}

fn insn(code: u32, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// cBPF program for a raw GRE socket that accepts (returns `0xFFFF_FFFF`)
/// exactly the packets with `shard_of(packet, count) == index` and drops the
/// rest (returns 0). `count <= 1` accepts everything for index 0; an
/// `index >= count` accepts nothing.
pub fn shard_filter(index: u32, count: u32) -> Vec<sock_filter> {
    use libc::{
        BPF_ADD, BPF_AND, BPF_B, BPF_IND, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_K, BPF_LD, BPF_LDX,
        BPF_LEN, BPF_MEM, BPF_MISC, BPF_MOD, BPF_MSH, BPF_RET, BPF_RSH, BPF_ST, BPF_STX, BPF_TAX,
        BPF_TXA, BPF_W, BPF_X, BPF_XOR,
    };
    const ALU: u32 = libc::BPF_ALU;

    if count <= 1 || index >= count {
        let k = if index == 0 && count <= 1 { ACCEPT } else { 0 };
        return vec![insn(BPF_RET | BPF_K, 0, 0, k)];
    }
    // Where too-short packets go: shard 0.
    let short = if index == 0 { To::Accept } else { To::Reject };
    let mut a = Asm::default();
    a.op(BPF_LD | BPF_W | BPF_LEN, 0) //           A = len
        .jmp(BPF_JMP | BPF_JEQ | BPF_K, 0, short, To::Next) // empty: shard 0
        .op(BPF_LDX | BPF_B | BPF_MSH, 0) //       X = ihl = 4*([0]&0xf)
        .op(BPF_STX, M_IHL)
        .op(BPF_MISC | BPF_TXA, 0)
        .op(ALU | BPF_ADD | BPF_K, 4)
        .op(BPF_MISC | BPF_TAX, 0) //              X = ihl + 4
        .op(BPF_LD | BPF_W | BPF_LEN, 0)
        .jmp(BPF_JMP | BPF_JGE | BPF_X, 0, To::Next, short) // len >= ihl + 4
        .op(BPF_LDX | BPF_MEM, M_IHL)
        .op(BPF_LD | BPF_B | BPF_IND, 0) //        A = GRE flags = [ihl]
        .op(BPF_ST, M_FLAGS)
        .op(ALU | BPF_RSH | BPF_K, 2) //           S (0x10) -> 4
        .op(ALU | BPF_AND | BPF_K, 4)
        .op(BPF_MISC | BPF_TAX, 0) //              X = 4S
        .op(BPF_LD | BPF_MEM, M_FLAGS)
        .op(ALU | BPF_RSH | BPF_K, 3) //           K (0x20) -> 4
        .op(ALU | BPF_AND | BPF_K, 4)
        .op(ALU | BPF_ADD | BPF_X, 0)
        .op(BPF_MISC | BPF_TAX, 0) //              X = 4S + 4K
        .op(BPF_LD | BPF_MEM, M_FLAGS)
        .op(ALU | BPF_RSH | BPF_K, 5) //           C (0x80) -> 4
        .op(ALU | BPF_AND | BPF_K, 4)
        .op(ALU | BPF_ADD | BPF_X, 0)
        .op(ALU | BPF_ADD | BPF_K, 4)
        .op(BPF_MISC | BPF_TAX, 0) //              X = grelen
        .op(BPF_LD | BPF_MEM, M_IHL)
        .op(ALU | BPF_ADD | BPF_X, 0)
        .op(BPF_ST, M_OFF) //                      M[off] = ihl + grelen
        .op(ALU | BPF_ADD | BPF_K, 20)
        .op(BPF_MISC | BPF_TAX, 0)
        .op(BPF_LD | BPF_W | BPF_LEN, 0)
        .jmp(BPF_JMP | BPF_JGE | BPF_X, 0, To::Next, short) // len >= off + 20
        .op(BPF_LDX | BPF_MEM, M_OFF)
        .op(BPF_LD | BPF_W | BPF_IND, 12) //       A = inner src
        .op(BPF_ST, M_HASH)
        .op(BPF_LD | BPF_W | BPF_IND, 16) //       A = inner dst
        .op(BPF_LDX | BPF_MEM, M_HASH)
        .op(ALU | BPF_XOR | BPF_X, 0) //           h = src ^ dst
        .op(BPF_ST, M_HASH)
        .op(ALU | BPF_RSH | BPF_K, 16)
        .op(BPF_MISC | BPF_TAX, 0)
        .op(BPF_LD | BPF_MEM, M_HASH)
        .op(ALU | BPF_XOR | BPF_X, 0) //           h ^= h >> 16
        .op(BPF_ST, M_HASH)
        .op(ALU | BPF_RSH | BPF_K, 8)
        .op(BPF_MISC | BPF_TAX, 0)
        .op(BPF_LD | BPF_MEM, M_HASH)
        .op(ALU | BPF_XOR | BPF_X, 0) //           h ^= h >> 8
        .op(ALU | BPF_MOD | BPF_K, count)
        .jmp(BPF_JMP | BPF_JEQ | BPF_K, index, To::Accept, To::Reject);
    a.finish()
}

/// cBPF program for the fanout packet sockets (`AF_PACKET`, `SOCK_RAW`:
/// offset 0 is the link-layer header, whatever its length, so every load is
/// relative to the network header, `SKF_NET_OFF`): accepts IPv4 GRE addressed to
/// `local` that the device received for this host (`PACKET_HOST`: not our
/// own outgoing packets, not broadcast, multicast or another host's), drops
/// everything else. Fragments have been reassembled before the filter runs
/// (`PACKET_FANOUT_FLAG_DEFRAG`).
pub fn packet_filter(local: std::net::Ipv4Addr) -> Vec<sock_filter> {
    use libc::{BPF_ABS, BPF_B, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_W};
    let ancillary = |what: i32| (libc::SKF_AD_OFF + what) as u32;
    let net = |at: i32| (libc::SKF_NET_OFF + at) as u32;
    let mut a = Asm::default();
    a.op(BPF_LD | BPF_B | BPF_ABS, ancillary(libc::SKF_AD_PKTTYPE))
        .jmp(
            BPF_JMP | BPF_JEQ | BPF_K,
            u32::from(libc::PACKET_HOST),
            To::Next,
            To::Reject,
        )
        .op(BPF_LD | BPF_B | BPF_ABS, net(9)) //             IPv4 protocol
        .jmp(
            BPF_JMP | BPF_JEQ | BPF_K,
            libc::IPPROTO_GRE as u32,
            To::Next,
            To::Reject,
        )
        .op(BPF_LD | BPF_W | BPF_ABS, net(16)) //            IPv4 destination
        .jmp(
            BPF_JMP | BPF_JEQ | BPF_K,
            u32::from(local),
            To::Accept,
            To::Reject,
        );
    a.finish()
}

/// cBPF program for the one raw GRE socket beside a fanout group: drops what
/// arrived on interface `ifindex` (the fanout group has it) and accepts GRE
/// that came in on any other interface, so a packet for our address that
/// the host received elsewhere (another NIC, loopback) is still handled,
/// exactly once.
pub fn stray_filter(ifindex: u32) -> Vec<sock_filter> {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_W};
    let mut a = Asm::default();
    a.op(
        BPF_LD | BPF_W | BPF_ABS,
        (libc::SKF_AD_OFF + libc::SKF_AD_IFINDEX) as u32,
    )
    .jmp(BPF_JMP | BPF_JEQ | BPF_K, ifindex, To::Reject, To::Accept);
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use libc::{
        BPF_A, BPF_ABS, BPF_ADD, BPF_ALU, BPF_AND, BPF_B, BPF_DIV, BPF_H, BPF_IMM, BPF_IND, BPF_JA,
        BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JMP, BPF_JSET, BPF_LD, BPF_LDX, BPF_LEN, BPF_LSH, BPF_MEM,
        BPF_MISC, BPF_MOD, BPF_MSH, BPF_MUL, BPF_NEG, BPF_OR, BPF_RET, BPF_RSH, BPF_ST, BPF_STX,
        BPF_SUB, BPF_W, BPF_X, BPF_XOR,
    };

    /// Minimal classic-BPF interpreter with the kernel's semantics for the
    /// opcodes the shard filter uses: an out-of-bounds packet load or a
    /// division by zero ends the program with 0 (drop).
    fn run(prog: &[sock_filter], pkt: &[u8]) -> u32 {
        run_with(prog, pkt, Ancillary::default())
    }

    /// What the kernel's ancillary loads (`SKF_AD_OFF + …`) return.
    #[derive(Clone, Copy, Default)]
    struct Ancillary {
        pkttype: u8,
        ifindex: u32,
    }

    fn run_with(prog: &[sock_filter], pkt: &[u8], anc: Ancillary) -> u32 {
        let (mut a, mut x) = (0u32, 0u32);
        let mut mem = [0u32; 16];
        let mut pc = 0usize;
        let load = |off: u32, size: u32| -> Option<u32> {
            let off = off as usize;
            let n = match size {
                BPF_W => 4,
                BPF_H => 2,
                BPF_B => 1,
                _ => panic!("bad size"),
            };
            let bytes = pkt.get(off..off.checked_add(n)?)?;
            Some(bytes.iter().fold(0u32, |v, &b| (v << 8) | u32::from(b)))
        };
        loop {
            let i = prog[pc];
            pc += 1;
            let code = u32::from(i.code);
            let k = i.k;
            match code & 0x07 {
                BPF_LD => {
                    a = match code & 0xe0 {
                        BPF_LEN => pkt.len() as u32,
                        BPF_IMM => k,
                        BPF_MEM => mem[k as usize],
                        BPF_ABS if k >= libc::SKF_AD_OFF as u32 => {
                            match k.wrapping_sub(libc::SKF_AD_OFF as u32) as i32 {
                                libc::SKF_AD_PKTTYPE => u32::from(anc.pkttype),
                                libc::SKF_AD_IFINDEX => anc.ifindex,
                                other => panic!("ancillary load {other}"),
                            }
                        }
                        // SKF_NET_OFF + n: byte n of the network header;
                        // `pkt` starts there in every test
                        BPF_ABS if k >= libc::SKF_NET_OFF as u32 => {
                            match load(k.wrapping_sub(libc::SKF_NET_OFF as u32), code & 0x18) {
                                Some(v) => v,
                                None => return 0,
                            }
                        }
                        BPF_ABS => match load(k, code & 0x18) {
                            Some(v) => v,
                            None => return 0,
                        },
                        BPF_IND => match load(x.wrapping_add(k), code & 0x18) {
                            Some(v) => v,
                            None => return 0,
                        },
                        m => panic!("ld mode {m:#x}"),
                    }
                }
                BPF_LDX => {
                    x = match code & 0xe0 {
                        BPF_LEN => pkt.len() as u32,
                        BPF_IMM => k,
                        BPF_MEM => mem[k as usize],
                        BPF_MSH => match load(k, BPF_B) {
                            Some(v) => 4 * (v & 0xf),
                            None => return 0,
                        },
                        m => panic!("ldx mode {m:#x}"),
                    }
                }
                BPF_ST => mem[k as usize] = a,
                BPF_STX => mem[k as usize] = x,
                BPF_ALU => {
                    let s = if code & BPF_X != 0 { x } else { k };
                    a = match code & 0xf0 {
                        BPF_ADD => a.wrapping_add(s),
                        BPF_SUB => a.wrapping_sub(s),
                        BPF_MUL => a.wrapping_mul(s),
                        BPF_DIV | BPF_MOD if s == 0 => return 0,
                        BPF_DIV => a / s,
                        BPF_MOD => a % s,
                        BPF_AND => a & s,
                        BPF_OR => a | s,
                        BPF_XOR => a ^ s,
                        BPF_LSH => a.wrapping_shl(s),
                        BPF_RSH => a.wrapping_shr(s),
                        BPF_NEG => a.wrapping_neg(),
                        op => panic!("alu op {op:#x}"),
                    }
                }
                BPF_JMP => {
                    let s = if code & BPF_X != 0 { x } else { k };
                    let taken = match code & 0xf0 {
                        BPF_JA => {
                            pc += k as usize;
                            continue;
                        }
                        BPF_JEQ => a == s,
                        BPF_JGT => a > s,
                        BPF_JGE => a >= s,
                        BPF_JSET => a & s != 0,
                        op => panic!("jmp op {op:#x}"),
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                BPF_RET => {
                    return if code & 0x18 == BPF_A { a } else { k };
                }
                BPF_MISC => {
                    if code & 0xf8 == 0 {
                        x = a; // TAX
                    } else {
                        a = x; // TXA
                    }
                }
                c => panic!("class {c:#x}"),
            }
        }
    }

    /// Static checks the kernel's classic-BPF verifier also makes: jumps stay
    /// inside the program, the last insn is a return, and scratch memory is
    /// written before it is read (our jumps only go forward to the returns,
    /// so linear order is execution order).
    fn verify(prog: &[sock_filter]) {
        assert!(!prog.is_empty() && prog.len() <= libc::BPF_MAXINSNS as usize);
        assert_eq!(u32::from(prog[prog.len() - 1].code) & 0x07, BPF_RET);
        let mut written = [false; 16];
        for (pc, i) in prog.iter().enumerate() {
            let code = u32::from(i.code);
            match code & 0x07 {
                BPF_JMP => {
                    assert!(
                        pc + 1 + usize::from(i.jt.max(i.jf)) < prog.len(),
                        "jump @{pc}"
                    );
                }
                BPF_ST | BPF_STX => written[i.k as usize] = true,
                BPF_LD | BPF_LDX if code & 0xe0 == BPF_MEM => {
                    assert!(written[i.k as usize], "M[{}] read before write @{pc}", i.k);
                }
                BPF_ALU if code & 0xf0 == BPF_MOD || code & 0xf0 == BPF_DIV => {
                    assert!(code & BPF_X != 0 || i.k != 0, "div by constant 0 @{pc}");
                }
                _ => {}
            }
        }
    }

    /// xorshift64*: deterministic test randomness without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                *b = self.next() as u8;
            }
        }
    }

    /// A GRE-in-IPv4 packet: IHL `ihl_words`, GRE `flags`, random inner header.
    fn structured(rng: &mut Rng, ihl_words: u8, flags: u8) -> Vec<u8> {
        let ihl = 4 * usize::from(ihl_words);
        let gre = 4 + 4 * [GRE_C, GRE_K, GRE_S]
            .iter()
            .filter(|&&b| flags & b != 0)
            .count();
        let mut p = vec![0u8; ihl + gre + 20 + rng.below(40)];
        rng.fill(&mut p);
        p[0] = 0x40 | ihl_words;
        if p.len() > ihl {
            p[ihl] = flags;
        }
        p
    }

    fn check_all(filters: &[Vec<sock_filter>], count: u32, pkt: &[u8]) {
        let want = shard_of(pkt, count);
        assert!(want < count.max(1));
        for (index, f) in filters.iter().enumerate() {
            let verdict = run(f, pkt);
            let expect = if index as u32 == want { ACCEPT } else { 0 };
            assert_eq!(
                verdict, expect,
                "index {index}/{count} shard {want} pkt {pkt:02x?}"
            );
        }
    }

    const COUNTS: [u32; 8] = [1, 2, 3, 4, 5, 8, 16, 255];

    #[test]
    fn filter_matches_shard_of() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut checked = 0usize;
        for count in COUNTS {
            let filters: Vec<_> = (0..count).map(|i| shard_filter(i, count)).collect();
            filters.iter().for_each(|f| verify(f));
            // Structured: every IHL (incl. invalid 0..4), all 8 C/K/S combos
            // plus random R/recursion/version bits, every truncation length.
            for ihl_words in 0..=15u8 {
                for combo in 0..8u8 {
                    let mut flags = (combo & 4) << 5 | (combo & 2) << 4 | (combo & 1) << 4;
                    flags |= (rng.next() as u8) & 0x4f;
                    let p = structured(&mut rng, ihl_words, flags);
                    for len in 0..=p.len() {
                        check_all(&filters, count, &p[..len]);
                        checked += 1;
                    }
                }
            }
            // Random garbage of random lengths.
            for _ in 0..3000 {
                let mut p = vec![0u8; rng.below(120)];
                rng.fill(&mut p);
                check_all(&filters, count, &p);
                checked += 1;
            }
        }
        assert!(checked > 50_000, "{checked}");
    }

    #[test]
    fn known_values() {
        // IHL 5, GRE with K only, inner 10.0.0.1 -> 10.0.0.2.
        let mut p = vec![0u8; 20 + 8 + 20];
        p[0] = 0x45;
        p[20] = GRE_K;
        p[28] = 0x45;
        p[40..44].copy_from_slice(&[10, 0, 0, 1]);
        p[44..48].copy_from_slice(&[10, 0, 0, 2]);
        // h = 3; h ^= 0; h ^= 0 -> 3
        assert_eq!(shard_of(&p, 2), 1);
        assert_eq!(shard_of(&p, 4), 3);
        assert_eq!(shard_of(&p, 1), 0);
        assert_eq!(shard_of(&p, 0), 0);
        assert_eq!(shard_of(&p[..47], 4), 0, "truncated inner -> shard 0");
        assert_eq!(shard_of(&[], 4), 0);
    }

    #[test]
    fn degenerate_counts() {
        let p = [0x45u8; 64];
        assert_eq!(run(&shard_filter(0, 1), &p), ACCEPT);
        assert_eq!(run(&shard_filter(0, 0), &p), ACCEPT);
        assert_eq!(run(&shard_filter(1, 1), &p), 0);
        assert_eq!(run(&shard_filter(2, 2), &p), 0);
    }

    #[test]
    fn hash_spreads() {
        let mut rng = Rng(42);
        let mut hist = [0u32; 4];
        for _ in 0..4000 {
            let mut p = structured(&mut rng, 5, 0);
            p.truncate(20 + 4 + 20);
            hist[shard_of(&p, 4) as usize] += 1;
        }
        assert!(hist.iter().all(|&h| h > 800), "{hist:?}");
    }

    fn gre_to(dst: [u8; 4], proto: u8, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        if len >= 20 {
            p[0] = 0x45;
            p[9] = proto;
            p[16..20].copy_from_slice(&dst);
        }
        p
    }

    #[test]
    fn packet_filter_accepts_only_gre_for_us_received_for_this_host() {
        let local = std::net::Ipv4Addr::new(192, 168, 16, 32);
        let prog = packet_filter(local);
        verify(&prog);
        // The sockets are SOCK_RAW: a plain absolute load would read the
        // link-layer header. Only ancillary and network-relative loads.
        for i in &prog {
            if u32::from(i.code) & 0xe7 == BPF_LD | BPF_ABS {
                assert!(i.k >= libc::SKF_NET_OFF as u32, "load at {}", i.k);
            }
        }
        let host = Ancillary::default();
        let run = |p: &[u8], anc| run_with(&prog, p, anc);
        assert_eq!(run(&gre_to([192, 168, 16, 32], 47, 64), host), ACCEPT);
        assert_eq!(run(&gre_to([192, 168, 16, 32], 47, 20), host), ACCEPT);
        // other protocol, other destination, too short for the destination
        assert_eq!(run(&gre_to([192, 168, 16, 32], 17, 64), host), 0);
        assert_eq!(run(&gre_to([192, 168, 16, 33], 47, 64), host), 0);
        assert_eq!(run(&gre_to([192, 168, 16, 32], 47, 19), host), 0);
        assert_eq!(run(&[], host), 0);
        // PACKET_BROADCAST 1, MULTICAST 2, OTHERHOST 3, OUTGOING 4
        for pkttype in 1..=4 {
            let anc = Ancillary {
                pkttype,
                ifindex: 0,
            };
            assert_eq!(
                run(&gre_to([192, 168, 16, 32], 47, 64), anc),
                0,
                "{pkttype}"
            );
        }
    }

    #[test]
    fn stray_filter_drops_only_the_fanout_device() {
        let prog = stray_filter(7);
        verify(&prog);
        let p = gre_to([192, 168, 16, 32], 47, 64);
        let on = |ifindex| {
            run_with(
                &prog,
                &p,
                Ancillary {
                    pkttype: 0,
                    ifindex,
                },
            )
        };
        assert_eq!(on(7), 0);
        for other in [0, 1, 6, 8, u32::MAX] {
            assert_eq!(on(other), ACCEPT, "{other}");
        }
    }

    /// The kernel's own verifier accepts every program (no privilege needed
    /// to attach a filter to a UDP socket; no traffic is sent).
    #[test]
    fn kernel_accepts_filters() {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        for count in COUNTS.into_iter().chain([0, 1000]) {
            for index in [0, 1, count / 2, count.saturating_sub(1), count] {
                let prog: Vec<_> = shard_filter(index, count)
                    .iter()
                    .map(|i| socket2::SockFilter::new(i.code, i.jt, i.jf, i.k))
                    .collect();
                sock.attach_filter(&prog)
                    .unwrap_or_else(|e| panic!("{index}/{count}: {e}"));
            }
        }
        let local = std::net::Ipv4Addr::new(192, 168, 16, 32);
        for prog in [packet_filter(local), stray_filter(3)] {
            let prog: Vec<_> = prog
                .iter()
                .map(|i| socket2::SockFilter::new(i.code, i.jt, i.jf, i.k))
                .collect();
            sock.attach_filter(&prog).unwrap();
        }
    }
}
