//! CPU-local steering (`--steer cpu`): which worker the kernel hands a packet.
//!
//! Without it the kernel picks the TUN queue of an outgoing packet, and the
//! socket of an incoming one, by a flow hash, so a packet produced on one CPU
//! is often handed to a worker pinned to the other. That wake-up crosses
//! CPUs: an inter-processor interrupt, on a VM a VM exit (measured here: a
//! pipe ping-pong between two processes costs 6 µs per round trip on one CPU
//! and 55–59 µs across two). A ping through meshfwd needs four such hand-offs.
//!
//! - **Egress** (this file): an eBPF program on the TUN (`TUNSETSTEERINGEBPF`)
//!   returns the queue of the worker pinned to the CPU the packet is being
//!   sent from, unless the packet's address pair sent something in the last
//!   [`STICKY_NS`]; then it keeps that pair's queue. An active flow therefore
//!   stays on one worker and is never reordered (the idea of XPS's
//!   `ooo_okay`); an idle one follows its sender's CPU. The per-pair state is
//!   a fixed array map of [`SLOTS`] entries `{queue: u32, _: u32, last_ns: u64}`
//!   indexed by a fold of source ^ destination address: no growth, and a
//!   collision only means two pairs share one decision.
//! - **Ingress** ([`super::bpf`]): a CPU test in front of the raw sockets'
//!   shard filters, and a reuse-port program for the GRE-in-UDP group, pick the
//!   worker pinned to the CPU the kernel received the packet on. A flow
//!   arrives on one CPU (NIC RSS, RPS, or on a veth the sending CPU), so it
//!   still lands on one worker.
//!
//! CPUs without a pinned worker fall back to hashing in both directions.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An active address pair keeps its queue while it sends at least this often.
pub const STICKY_NS: i32 = 10_000_000;
/// Entries of the per-pair map (a power of two).
pub const SLOTS: u32 = 1024;
/// Most workers the CPU → queue table is built for.
pub const MAX_TABLE: usize = 128;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// `src << 4 | dst`.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcodes used (class | op | source).
const MOV_X: u8 = 0xbf; // 64-bit dst = src
const MOV_K: u8 = 0xb7; // 64-bit dst = imm
const XOR_X: u8 = 0xaf;
const AND_K: u8 = 0x57;
const ADD_K: u8 = 0x07;
const SUB_X: u8 = 0x1f;
const RSH_K: u8 = 0x77;
const MOD_K: u8 = 0x97;
const LD_ABS_W: u8 = 0x20; // r0 = ntohl(packet[imm..imm+4]); out of bounds: return 0
const LDX_W: u8 = 0x61;
const LDX_DW: u8 = 0x79;
const STX_W: u8 = 0x63;
const STX_DW: u8 = 0x7b;
const JA: u8 = 0x05;
const JNE_K: u8 = 0x55;
const JGT_K: u8 = 0x25;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const LD_IMM64: u8 = 0x18;
/// `src` of an `LD_IMM64` whose immediate is a map file descriptor.
const PSEUDO_MAP_FD: u8 = 1;

// Helpers.
const FN_MAP_LOOKUP_ELEM: i32 = 1;
const FN_KTIME_GET_NS: i32 = 5;
const FN_GET_SMP_PROCESSOR_ID: i32 = 8;

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R6: u8 = 6;
const R7: u8 = 7;
const R8: u8 = 8;
const R9: u8 = 9;
const R10: u8 = 10;

const fn ins(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// The TUN steering program for workers pinned to `cpus` (queue `j` is
/// worker `j`'s, pinned to `cpus[j]`), using the array map `map_fd`:
///
/// ```text
/// key   = fold(saddr ^ daddr) & (SLOTS - 1)        fold: h ^= h>>16; h ^= h>>8
/// now   = ktime_get_ns()
/// queue = j where cpus[j] == this CPU, else key % workers
/// e     = map[key]
/// if now - e.last_ns <= STICKY_NS: e.last_ns = now; return e.queue
/// e = {queue, now}; return queue
/// ```
///
/// A packet too short for the addresses ends the program with 0 (queue 0),
/// as any out-of-bounds `LD_ABS` does.
pub fn tun_program(cpus: &[u32], map_fd: i32) -> Vec<Insn> {
    let cpus = &cpus[..cpus.len().min(MAX_TABLE)];
    let workers = cpus.len().max(1) as i32;
    let mut p = vec![
        ins(MOV_X, R6, R1, 0, 0), // r6 = skb (LD_ABS needs it there)
        ins(LD_ABS_W, 0, 0, 0, 12),
        ins(MOV_X, R9, R0, 0, 0),
        ins(LD_ABS_W, 0, 0, 0, 16),
        ins(XOR_X, R9, R0, 0, 0), // r9 = saddr ^ daddr
        ins(MOV_X, R0, R9, 0, 0),
        ins(RSH_K, R0, 0, 0, 16),
        ins(XOR_X, R9, R0, 0, 0),
        ins(MOV_X, R0, R9, 0, 0),
        ins(RSH_K, R0, 0, 0, 8),
        ins(XOR_X, R9, R0, 0, 0),
        ins(AND_K, R9, 0, 0, (SLOTS - 1) as i32), // r9 = key
        ins(CALL, 0, 0, 0, FN_KTIME_GET_NS),
        ins(MOV_X, R8, R0, 0, 0), // r8 = now
        ins(CALL, 0, 0, 0, FN_GET_SMP_PROCESSOR_ID),
    ];
    // r7 = queue of this CPU's worker: 3 instructions per table entry, then
    // the fallback (2), so entry j jumps over 3 * (n - j - 1) + 2.
    let n = cpus.len();
    for (j, &cpu) in cpus.iter().enumerate() {
        p.push(ins(JNE_K, R0, 0, 2, cpu as i32));
        p.push(ins(MOV_K, R7, 0, 0, j as i32));
        p.push(ins(JA, 0, 0, (3 * (n - j - 1) + 2) as i16, 0));
    }
    p.extend([
        ins(MOV_X, R7, R9, 0, 0), // another CPU: by key
        ins(MOD_K, R7, 0, 0, workers),
        // e = map[key]
        ins(STX_W, R10, R9, -4, 0),
        ins(LD_IMM64, R1, PSEUDO_MAP_FD, 0, map_fd),
        ins(0, 0, 0, 0, 0),
        ins(MOV_X, R2, R10, 0, 0),
        ins(ADD_K, R2, 0, 0, -4),
        ins(CALL, 0, 0, 0, FN_MAP_LOOKUP_ELEM),
        ins(JNE_K, R0, 0, 2, 0),
        ins(MOV_X, R0, R7, 0, 0), // no entry (cannot happen for an array)
        ins(EXIT, 0, 0, 0, 0),
        ins(LDX_DW, R1, R0, 8, 0),
        ins(MOV_X, R2, R8, 0, 0),
        ins(SUB_X, R2, R1, 0, 0), // r2 = now - last (huge if never or clock skew)
        ins(JGT_K, R2, 0, 3, STICKY_NS),
        ins(STX_DW, R0, R8, 8, 0), // still active: keep its queue
        ins(LDX_W, R0, R0, 0, 0),
        ins(EXIT, 0, 0, 0, 0),
        ins(STX_W, R0, R7, 0, 0), // idle: follow this CPU
        ins(STX_DW, R0, R8, 8, 0),
        ins(MOV_X, R0, R7, 0, 0),
        ins(EXIT, 0, 0, 0, 0),
    ]);
    p
}

/// `bpf(2)`; returns the new file descriptor.
fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a zero-padded `union bpf_attr` of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_MAP_TYPE_ARRAY: u64 = 2;
const BPF_PROG_TYPE_SOCKET_FILTER: u64 = 1;
/// `_IOR('T', 224, int)`.
const TUNSETSTEERINGEBPF: libc::c_ulong = 0x8004_54e0;

/// Loads [`tun_program`] for `cpus` and attaches it to the TUN device of
/// queue `tun_fd` (the program is device-wide). The kernel keeps the program
/// and its map; our descriptors close on return.
pub fn attach_tun(tun_fd: RawFd, cpus: &[u32]) -> io::Result<()> {
    let ctx =
        |what: &'static str| move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    // union bpf_attr, map_create: map_type, key_size, value_size, max_entries.
    let mut attr = [0u64; 16];
    attr[0] = BPF_MAP_TYPE_ARRAY | (4 << 32);
    attr[1] = 16 | (u64::from(SLOTS) << 32);
    let map = bpf(BPF_MAP_CREATE, &mut attr).map_err(ctx("create eBPF array map"))?;
    let prog = tun_program(cpus, map.as_raw_fd());
    let license = b"MIT\0";
    let mut log = vec![0u8; 8192];
    // prog_load: prog_type, insn_cnt, insns, license, log_level, log_size, log_buf.
    let mut attr = [0u64; 16];
    attr[0] = BPF_PROG_TYPE_SOCKET_FILTER | ((prog.len() as u64) << 32);
    attr[1] = prog.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    attr[3] = 1 | ((log.len() as u64) << 32);
    attr[4] = log.as_mut_ptr() as u64;
    let loaded = bpf(BPF_PROG_LOAD, &mut attr).map_err(|e| {
        let text = String::from_utf8_lossy(&log);
        let text = text.trim_end_matches('\0').trim();
        let last = text.lines().last().unwrap_or("");
        io::Error::new(
            e.kind(),
            format!("load eBPF TUN steering program: {e} {last}"),
        )
    })?;
    set_tun_program(tun_fd, loaded.as_raw_fd())
}

/// Removes any steering program from the TUN (back to the kernel's flow
/// hash); a program left by an earlier run on a persistent device goes too.
pub fn detach_tun(tun_fd: RawFd) -> io::Result<()> {
    set_tun_program(tun_fd, -1)
}

fn set_tun_program(tun_fd: RawFd, prog_fd: RawFd) -> io::Result<()> {
    // SAFETY: the ioctl reads one int through the pointer.
    let r = unsafe { libc::ioctl(tun_fd, TUNSETSTEERINGEBPF as _, &prog_fd as *const RawFd) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("TUNSETSTEERINGEBPF: {e}")));
    }
    Ok(())
}

/// Attaches [`super::bpf::reuseport_by_cpu`] to the reuse-port group of
/// `fd` (any member; the group's member order is its bind order).
pub fn attach_reuseport(fd: RawFd, cpus: &[u32]) -> io::Result<()> {
    let prog = super::bpf::reuseport_by_cpu(cpus);
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `prog`, alive for the call.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("SO_ATTACH_REUSEPORT_CBPF: {e}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Map entries as the program sees them.
    #[derive(Clone, Copy, Default, Debug)]
    struct Entry {
        queue: u32,
        last_ns: u64,
    }

    /// An interpreter for exactly the instructions [`tun_program`] emits, with
    /// the kernel's semantics (64-bit registers, `LD_ABS` big-endian and
    /// ending the program with 0 when out of bounds, unsigned compares with
    /// the immediate sign-extended). Pointers are tagged: stack `1 << 40 |
    /// offset`, map value `2 << 40 | key << 8 | offset`.
    fn run(prog: &[Insn], pkt: &[u8], cpu: u32, now: u64, map: &mut [Entry]) -> u64 {
        const STACK: u64 = 1 << 40;
        const VALUE: u64 = 2 << 40;
        let mut r = [0u64; 11];
        r[10] = STACK | 512;
        let mut stack_key = None;
        let mut pc = 0usize;
        for _ in 0..10_000 {
            let i = prog[pc];
            pc += 1;
            let (dst, src) = (usize::from(i.regs & 0xf), usize::from(i.regs >> 4));
            let imm = i64::from(i.imm) as u64;
            match i.code {
                MOV_X => r[dst] = r[src],
                MOV_K => r[dst] = imm,
                XOR_X => r[dst] ^= r[src],
                AND_K => r[dst] &= imm,
                ADD_K => r[dst] = r[dst].wrapping_add(imm),
                SUB_X => r[dst] = r[dst].wrapping_sub(r[src]),
                RSH_K => r[dst] >>= imm,
                MOD_K => r[dst] %= imm,
                LD_ABS_W => {
                    assert_eq!(r[6], 0xc7c, "LD_ABS needs the context in r6");
                    let at = i.imm as usize;
                    let Some(b) = pkt.get(at..at + 4) else {
                        return 0;
                    };
                    r[0] = u64::from(u32::from_be_bytes(b.try_into().unwrap()));
                    r[1..6].fill(0xdead);
                }
                STX_W | STX_DW | LDX_W | LDX_DW => {
                    let (ptr, reg) = if matches!(i.code, STX_W | STX_DW) {
                        (r[dst], src)
                    } else {
                        (r[src], dst)
                    };
                    let addr = ptr.wrapping_add(i64::from(i.off) as u64);
                    if addr & (0xff << 40) == STACK {
                        assert_eq!((addr & 0xfff, i.code), (508, STX_W), "stack use");
                        stack_key = Some(r[reg] as u32);
                    } else {
                        assert_eq!(addr & (0xff << 40), VALUE, "bad pointer");
                        let e = &mut map[((addr >> 8) & 0xffff) as usize];
                        match (i.code, addr & 0xff) {
                            (STX_W, 0) => e.queue = r[reg] as u32,
                            (STX_DW, 8) => e.last_ns = r[reg],
                            (LDX_W, 0) => r[reg] = u64::from(e.queue),
                            (LDX_DW, 8) => r[reg] = e.last_ns,
                            x => panic!("bad access {x:?}"),
                        }
                    }
                }
                JA => pc = pc.wrapping_add_signed(isize::from(i.off)),
                JNE_K | JGT_K => {
                    let taken = match i.code {
                        JNE_K => r[dst] != imm,
                        _ => r[dst] > imm,
                    };
                    if taken {
                        pc = pc.wrapping_add_signed(isize::from(i.off));
                    }
                }
                LD_IMM64 => {
                    assert_eq!(i.regs >> 4, PSEUDO_MAP_FD);
                    assert_eq!(prog[pc], ins(0, 0, 0, 0, 0));
                    r[dst] = 0x3a9; // "the map"
                    pc += 1;
                }
                CALL => {
                    r[0] = match i.imm {
                        FN_KTIME_GET_NS => now,
                        FN_GET_SMP_PROCESSOR_ID => u64::from(cpu),
                        FN_MAP_LOOKUP_ELEM => {
                            assert_eq!(r[1], 0x3a9);
                            assert_eq!(r[2], STACK | 508);
                            let key = stack_key.expect("key written") as usize;
                            if key < map.len() {
                                VALUE | (key as u64) << 8
                            } else {
                                0
                            }
                        }
                        f => panic!("helper {f}"),
                    };
                    r[1..6].fill(0xdead);
                }
                EXIT => return r[0],
                c => panic!("opcode {c:#x}"),
            }
        }
        panic!("no exit");
    }

    fn ctx_run(prog: &[Insn], pkt: &[u8], cpu: u32, now: u64, map: &mut [Entry]) -> u64 {
        let mut p = prog.to_vec();
        // The context pointer the program copies from r1 at its start.
        p.insert(0, ins(MOV_K, R1, 0, 0, 0xc7c));
        // Keep jump targets: the prefix shifts everything by one.
        run(&p, pkt, cpu, now, map)
    }

    fn packet(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p
    }

    fn key(src: [u8; 4], dst: [u8; 4]) -> usize {
        let mut h = u32::from_be_bytes(src) ^ u32::from_be_bytes(dst);
        h ^= h >> 16;
        h ^= h >> 8;
        (h & (SLOTS - 1)) as usize
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn idle_pairs_follow_the_cpu_active_ones_stay() {
        let cpus = [2, 0, 5];
        let prog = tun_program(&cpus, 7);
        let mut map = vec![Entry::default(); SLOTS as usize];
        let a = packet([240, 1, 0, 2], [240, 1, 16, 5]);
        let t0 = 1_000 * MS;
        let sticky = STICKY_NS as u64;
        // First packet: the worker pinned to the sending CPU.
        assert_eq!(ctx_run(&prog, &a, 5, t0, &mut map), 2);
        // Still active (at most STICKY_NS since the last packet): same queue, whatever
        // CPU it now comes from; each packet extends the activity.
        assert_eq!(ctx_run(&prog, &a, 0, t0 + sticky / 2, &mut map), 2);
        assert_eq!(ctx_run(&prog, &a, 2, t0 + sticky, &mut map), 2);
        assert_eq!(ctx_run(&prog, &a, 2, t0 + 2 * sticky, &mut map), 2);
        assert_eq!(
            ctx_run(&prog, &a, 2, t0 + 3 * sticky, &mut map),
            2,
            "exactly STICKY_NS"
        );
        // Idle for longer: follows the sender's CPU again.
        assert_eq!(ctx_run(&prog, &a, 2, t0 + 4 * sticky + 1, &mut map), 0);
        assert_eq!(map[key([240, 1, 0, 2], [240, 1, 16, 5])].queue, 0);
        // Another pair is independent of the first.
        let b = packet([240, 1, 0, 3], [240, 2, 0, 9]);
        assert_ne!(
            key([240, 1, 0, 3], [240, 2, 0, 9]),
            key([240, 1, 0, 2], [240, 1, 16, 5])
        );
        let t1 = t0 + 4 * sticky + 2;
        assert_eq!(ctx_run(&prog, &b, 0, t1, &mut map), 1);
        assert_eq!(ctx_run(&prog, &a, 0, t1, &mut map), 0);
        // A reply (addresses swapped) is the same pair.
        let a_back = packet([240, 1, 16, 5], [240, 1, 0, 2]);
        assert_eq!(ctx_run(&prog, &a_back, 5, t1, &mut map), 0);
    }

    #[test]
    fn unknown_cpus_hash_and_short_packets_take_queue_zero() {
        let cpus = [0, 1];
        let prog = tun_program(&cpus, 7);
        let mut map = vec![Entry::default(); SLOTS as usize];
        for (src, dst) in [
            ([240, 1, 0, 2], [240, 3, 0, 7]),
            ([10, 0, 0, 1], [10, 9, 9, 9]),
        ] {
            let k = key(src, dst) as u64;
            assert_eq!(
                ctx_run(&prog, &packet(src, dst), 7, 1_000 * MS, &mut map),
                k % 2
            );
        }
        assert_eq!(ctx_run(&prog, &[0x45; 19], 1, 1_000 * MS, &mut map), 0);
        // Without a table (no pinned workers) everything goes by key.
        let prog = tun_program(&[], 7);
        let mut map = vec![Entry::default(); SLOTS as usize];
        let p = packet([240, 1, 0, 2], [240, 3, 0, 7]);
        assert_eq!(ctx_run(&prog, &p, 0, 1_000 * MS, &mut map), 0, "one queue");
    }

    #[test]
    fn table_jumps_land_on_the_lookup() {
        // Every table entry, in a long table, reaches the shared tail.
        let cpus: Vec<u32> = (0..40).rev().collect();
        let prog = tun_program(&cpus, 7);
        let mut map = vec![Entry::default(); SLOTS as usize];
        for (j, &cpu) in cpus.iter().enumerate() {
            let p = packet([240, 1, 0, j as u8], [240, 9, 0, 1]);
            assert_eq!(
                ctx_run(&prog, &p, cpu, 100 * MS * (j as u64 + 1), &mut map),
                j as u64
            );
        }
    }
}
