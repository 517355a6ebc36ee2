//! Test-only interpreter: a tc program plus a fake skb in, the verdict,
//! the tunnel key it set and the drop counters out.
//!
//! It executes exactly the instruction subset [`super::asm`] emits, on a
//! little-endian machine model, with the kernel's semantics for the four
//! helpers the programs call (`bpf_map_lookup_elem` on a per-CPU array seen
//! from one CPU, `bpf_skb_load_bytes`, `bpf_skb_get_tunnel_key`,
//! `bpf_skb_set_tunnel_key` as in net/core/filter.c of 6.x). It also
//! refuses what the verifier would: reading a register never written or
//! clobbered by a call, reading stack bytes never written, touching memory
//! outside the stack, the context fields used, or a map value.

use super::asm::{op, Insn};
use super::programs::{helper, tunnel_key, COUNTER_SLOTS};

const STACK_BASE: u64 = 0x1_0000_0000;
const STACK_SIZE: usize = 512;
const CTX_BASE: u64 = 0x2_0000_0000;
const CTX_SIZE: usize = 192;
const MAP_VALUE_BASE: u64 = 0x3_0000_0000;
const MAP_TOKEN: u64 = 0x4_0000_0000;
const STEP_LIMIT: usize = 100_000;

/// Tunnel metadata a collect-metadata GRE device attaches on receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxTunnel {
    /// Outer source address.
    pub remote: u32,
    pub key: Option<u32>,
    /// A GRE checksum was present.
    pub csum: bool,
}

/// The packet as a tc program sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skb {
    pub data: Vec<u8>,
    /// Ethertype (host order), `skb->protocol`.
    pub protocol: u16,
    pub rx_tunnel: Option<RxTunnel>,
}

/// What a successful `bpf_skb_set_tunnel_key` recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxTunnel {
    pub tunnel_id: u32,
    pub remote: u32,
    pub tos: u8,
    pub ttl: u8,
    pub local: u32,
    pub size: u32,
    pub flags: u64,
}

/// The outcome of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub ret: u64,
    pub tx_tunnel: Option<TxTunnel>,
    /// This CPU's counter values, one per slot.
    pub counters: Vec<u64>,
    /// Instructions executed (the longest path, for the report).
    pub steps: usize,
}

struct Machine<'a> {
    prog: &'a [Insn],
    skb: &'a Skb,
    regs: [u64; 11],
    valid: [bool; 11],
    stack: [u8; STACK_SIZE],
    stack_init: [bool; STACK_SIZE],
    ctx: [u8; CTX_SIZE],
    counters: Vec<u64>,
    tx_tunnel: Option<TxTunnel>,
}

fn width(size: u8) -> usize {
    match size {
        op::B => 1,
        op::H => 2,
        op::W => 4,
        _ => 8,
    }
}

impl Machine<'_> {
    fn reg(&self, r: u8) -> Result<u64, String> {
        let r = usize::from(r);
        match self.valid.get(r) {
            Some(true) => Ok(self.regs[r]),
            _ => Err(format!("R{r} !read_ok")),
        }
    }

    fn set(&mut self, r: u8, v: u64) -> Result<(), String> {
        let r = usize::from(r);
        if r >= 10 {
            return Err(format!("write to R{r}"));
        }
        self.regs[r] = v;
        self.valid[r] = true;
        Ok(())
    }

    fn load(&self, addr: u64, n: usize) -> Result<u64, String> {
        let mut bytes = [0u8; 8];
        if let Some(off) = in_region(addr, n, STACK_BASE, STACK_SIZE) {
            if !self.stack_init[off..off + n].iter().all(|&b| b) {
                return Err(format!(
                    "read of uninitialised stack at {}",
                    off as i64 - 512
                ));
            }
            bytes[..n].copy_from_slice(&self.stack[off..off + n]);
        } else if let Some(off) = in_region(addr, n, CTX_BASE, CTX_SIZE) {
            // The context fields the programs use, read whole.
            if !matches!((off, n), (0, 4) | (16, 4)) {
                return Err(format!("invalid bpf_context access off={off} size={n}"));
            }
            bytes[..n].copy_from_slice(&self.ctx[off..off + n]);
        } else if let Some(off) = in_region(addr, n, MAP_VALUE_BASE, self.counters.len() * 8) {
            if off % 8 != 0 || n != 8 {
                return Err("unaligned map value access".into());
            }
            bytes = self.counters[off / 8].to_le_bytes();
        } else {
            return Err(format!("invalid mem access at {addr:#x}"));
        }
        Ok(u64::from_le_bytes(bytes))
    }

    fn store(&mut self, addr: u64, n: usize, v: u64) -> Result<(), String> {
        let bytes = v.to_le_bytes();
        if let Some(off) = in_region(addr, n, STACK_BASE, STACK_SIZE) {
            self.stack[off..off + n].copy_from_slice(&bytes[..n]);
            self.stack_init[off..off + n].fill(true);
        } else if let Some(off) = in_region(addr, n, MAP_VALUE_BASE, self.counters.len() * 8) {
            if off % 8 != 0 || n != 8 {
                return Err("unaligned map value access".into());
            }
            self.counters[off / 8] = v;
        } else {
            return Err(format!("invalid mem write at {addr:#x}"));
        }
        Ok(())
    }

    /// A stack buffer a helper reads (must be initialised) or writes.
    fn stack_range(&self, addr: u64, n: usize, read: bool) -> Result<usize, String> {
        let off = in_region(addr, n, STACK_BASE, STACK_SIZE)
            .ok_or_else(|| format!("helper buffer {addr:#x}+{n} not on the stack"))?;
        if read && !self.stack_init[off..off + n].iter().all(|&b| b) {
            return Err("helper reads uninitialised stack".into());
        }
        Ok(off)
    }

    fn write_stack(&mut self, off: usize, bytes: &[u8]) {
        self.stack[off..off + bytes.len()].copy_from_slice(bytes);
        self.stack_init[off..off + bytes.len()].fill(true);
    }

    fn call(&mut self, id: i32) -> Result<u64, String> {
        let r1 = self.reg(1)?;
        let r2 = self.reg(2)?;
        let ret: i64 = match id {
            helper::MAP_LOOKUP_ELEM => {
                if r1 != MAP_TOKEN {
                    return Err("map_lookup_elem without a map".into());
                }
                let key = self.load(r2, 4)? as u32;
                if (key as usize) < self.counters.len() {
                    (MAP_VALUE_BASE + u64::from(key) * 8) as i64
                } else {
                    0
                }
            }
            helper::SKB_LOAD_BYTES => {
                self.ctx_arg(r1)?;
                let (off, to, len) = (self.reg(2)?, self.reg(3)?, self.reg(4)? as usize);
                let dst = self.stack_range(to, len, false)?;
                let src = usize::try_from(off)
                    .ok()
                    .and_then(|o| self.skb.data.get(o..o.checked_add(len)?));
                match src {
                    Some(s) => {
                        let s = s.to_vec();
                        self.write_stack(dst, &s);
                        0
                    }
                    None => {
                        self.write_stack(dst, &vec![0; len]);
                        -14 // -EFAULT
                    }
                }
            }
            helper::SKB_GET_TUNNEL_KEY => {
                self.ctx_arg(r1)?;
                let (to, size, flags) = (r2, self.reg(3)? as usize, self.reg(4)?);
                let dst = self.stack_range(to, size, false)?;
                self.get_tunnel_key(dst, size, flags)
            }
            helper::SKB_SET_TUNNEL_KEY => {
                self.ctx_arg(r1)?;
                let (from, size, flags) = (r2, self.reg(3)? as usize, self.reg(4)?);
                let src = self.stack_range(from, size, true)?;
                self.set_tunnel_key(src, size, flags)
            }
            other => return Err(format!("unknown helper {other}")),
        };
        for r in 1..=5 {
            self.valid[r] = false;
        }
        Ok(ret as u64)
    }

    fn ctx_arg(&self, r1: u64) -> Result<(), String> {
        if r1 == CTX_BASE {
            Ok(())
        } else {
            Err("helper argument 1 is not the context".into())
        }
    }

    fn get_tunnel_key(&mut self, dst: usize, size: usize, flags: u64) -> i64 {
        let known = 1 | tunnel_key::F_TUNINFO_FLAGS;
        let sizes = [tunnel_key::SIZE, tunnel_key::LOCAL_IPV4, tunnel_key::LABEL];
        let info = self.skb.rx_tunnel;
        match info {
            Some(t) if flags & !known == 0 && flags & 1 == 0 && sizes.contains(&size) => {
                let mut k = [0u8; tunnel_key::SIZE];
                k[0..4].copy_from_slice(&t.key.unwrap_or(0).to_ne_bytes());
                k[4..8].copy_from_slice(&t.remote.to_ne_bytes());
                if flags & tunnel_key::F_TUNINFO_FLAGS != 0 {
                    let mut f = 0u8;
                    if t.key.is_some() {
                        f |= tunnel_key::TUNNEL_KEY;
                    }
                    if t.csum {
                        f |= tunnel_key::TUNNEL_CSUM;
                    }
                    k[tunnel_key::FLAGS..tunnel_key::FLAGS + 2].copy_from_slice(&[0, f]);
                }
                self.write_stack(dst, &k[..size]);
                0
            }
            _ => {
                self.write_stack(dst, &vec![0; size]);
                -22 // -EINVAL
            }
        }
    }

    fn set_tunnel_key(&mut self, src: usize, size: usize, flags: u64) -> i64 {
        let known = 1
            | tunnel_key::F_ZERO_CSUM_TX
            | tunnel_key::F_DONT_FRAGMENT
            | tunnel_key::F_SEQ_NUMBER
            | tunnel_key::F_NO_TUNNEL_KEY;
        let sizes = [
            tunnel_key::SIZE,
            tunnel_key::LOCAL_IPV4,
            tunnel_key::LABEL,
            tunnel_key::FLAGS,
            8,
        ];
        if flags & !known != 0 || !sizes.contains(&size) {
            return -22;
        }
        let mut k = [0u8; tunnel_key::SIZE];
        k[..size].copy_from_slice(&self.stack[src..src + size]);
        let u32_at = |o: usize| u32::from_ne_bytes([k[o], k[o + 1], k[o + 2], k[o + 3]]);
        let ext = u16::from_ne_bytes([k[tunnel_key::FLAGS], k[tunnel_key::FLAGS + 1]]);
        if (flags & 1 == 0 && u32_at(tunnel_key::LABEL) != 0) || ext != 0 {
            return -22;
        }
        self.tx_tunnel = Some(TxTunnel {
            tunnel_id: u32_at(tunnel_key::TUNNEL_ID),
            remote: u32_at(tunnel_key::REMOTE_IPV4),
            tos: k[tunnel_key::TOS],
            ttl: k[tunnel_key::TTL],
            local: u32_at(tunnel_key::LOCAL_IPV4),
            size: size as u32,
            flags,
        });
        0
    }
}

fn in_region(addr: u64, n: usize, base: u64, size: usize) -> Option<usize> {
    let off = usize::try_from(addr.checked_sub(base)?).ok()?;
    (off.checked_add(n)? <= size).then_some(off)
}

fn swap(v: u64, bits: i32) -> Result<u64, String> {
    Ok(match bits {
        16 => u64::from((v as u16).swap_bytes()),
        32 => u64::from((v as u32).swap_bytes()),
        64 => v.swap_bytes(),
        b => return Err(format!("bad END width {b}")),
    })
}

/// Runs `prog` on `skb` with all counters starting at zero.
pub fn run(prog: &[Insn], skb: &Skb) -> Result<Run, String> {
    let mut ctx = [0u8; CTX_SIZE];
    ctx[0..4].copy_from_slice(&(skb.data.len() as u32).to_le_bytes());
    // skb->protocol is big-endian, zero-extended to the 32-bit field.
    ctx[16..18].copy_from_slice(&skb.protocol.to_be_bytes());
    let mut m = Machine {
        prog,
        skb,
        regs: [0; 11],
        valid: [false; 11],
        stack: [0; STACK_SIZE],
        stack_init: [false; STACK_SIZE],
        ctx,
        counters: vec![0; COUNTER_SLOTS as usize],
        tx_tunnel: None,
    };
    m.regs[1] = CTX_BASE;
    m.valid[1] = true;
    m.regs[10] = STACK_BASE + STACK_SIZE as u64;
    m.valid[10] = true;
    let mut pc = 0usize;
    for steps in 1..=STEP_LIMIT {
        let i = *m
            .prog
            .get(pc)
            .ok_or(format!("pc {pc} out of the program"))?;
        let (dst, src) = (i.dst(), i.src());
        let class = i.code & 0x07;
        pc += 1;
        match class {
            op::ALU | op::ALU64 => {
                let alu = i.code & 0xf0;
                if alu == op::END {
                    // TO_BE on a little-endian machine swaps; TO_LE truncates.
                    let v = m.reg(dst)?;
                    let r = if i.code & op::TO_BE != 0 {
                        swap(v, i.imm)?
                    } else {
                        v & (u64::MAX >> (64 - i.imm.clamp(1, 64)))
                    };
                    m.set(dst, r)?;
                    continue;
                }
                let s = if i.code & op::X != 0 {
                    m.reg(src)?
                } else {
                    i.imm as i64 as u64
                };
                let d = if alu == op::MOV { 0 } else { m.reg(dst)? };
                let r = if class == op::ALU64 {
                    alu64(alu, d, s)?
                } else {
                    u64::from(alu32(alu, d as u32, s as u32)?)
                };
                m.set(dst, r)?;
            }
            op::LDX => {
                let addr = m.reg(src)?.wrapping_add(i.off as i64 as u64);
                let v = m.load(addr, width(i.code & 0x18))?;
                m.set(dst, v)?;
            }
            op::STX | op::ST => {
                let addr = m.reg(dst)?.wrapping_add(i.off as i64 as u64);
                let v = if class == op::STX {
                    m.reg(src)?
                } else {
                    i.imm as i64 as u64
                };
                m.store(addr, width(i.code & 0x18), v)?;
            }
            op::LD => {
                if i.code != op::LD | op::IMM | op::DW {
                    return Err(format!("unsupported LD {:#x}", i.code));
                }
                let hi = m.prog.get(pc).ok_or("LD_IMM64 without its second slot")?;
                pc += 1;
                let v = if src == op::PSEUDO_MAP_FD {
                    MAP_TOKEN
                } else {
                    u64::from(i.imm as u32) | u64::from(hi.imm as u32) << 32
                };
                m.set(dst, v)?;
            }
            op::JMP | op::JMP32 => {
                let jop = i.code & 0xf0;
                match jop {
                    op::EXIT => {
                        return Ok(Run {
                            ret: m.reg(0)?,
                            tx_tunnel: m.tx_tunnel,
                            counters: m.counters,
                            steps,
                        })
                    }
                    op::CALL => {
                        let r = m.call(i.imm)?;
                        m.set(0, r)?;
                        continue;
                    }
                    op::JA => {
                        pc = jump(pc, i.off)?;
                        continue;
                    }
                    _ => {}
                }
                let d = m.reg(dst)?;
                let s = if i.code & op::X != 0 {
                    m.reg(src)?
                } else {
                    i.imm as i64 as u64
                };
                let taken = if class == op::JMP32 {
                    cond(jop, u64::from(d as u32), u64::from(s as u32), true)?
                } else {
                    cond(jop, d, s, false)?
                };
                if taken {
                    pc = jump(pc, i.off)?;
                }
            }
            c => return Err(format!("unsupported class {c:#x}")),
        }
    }
    Err("step limit".into())
}

fn jump(pc: usize, off: i16) -> Result<usize, String> {
    let t = pc as i64 + i64::from(off);
    usize::try_from(t).map_err(|_| format!("jump to {t}"))
}

fn alu64(alu: u8, d: u64, s: u64) -> Result<u64, String> {
    Ok(match alu {
        op::ADD => d.wrapping_add(s),
        op::SUB => d.wrapping_sub(s),
        op::OR => d | s,
        op::AND => d & s,
        op::XOR => d ^ s,
        op::MOV => s,
        op::LSH if s < 64 => d << s,
        op::RSH if s < 64 => d >> s,
        _ => return Err(format!("unsupported ALU64 op {alu:#x} (shift {s})")),
    })
}

fn alu32(alu: u8, d: u32, s: u32) -> Result<u32, String> {
    Ok(match alu {
        op::ADD => d.wrapping_add(s),
        op::SUB => d.wrapping_sub(s),
        op::OR => d | s,
        op::AND => d & s,
        op::XOR => d ^ s,
        op::MOV => s,
        op::LSH if s < 32 => d << s,
        op::RSH if s < 32 => d >> s,
        _ => return Err(format!("unsupported ALU32 op {alu:#x} (shift {s})")),
    })
}

/// Jump condition; JMP32 operands arrive zero-extended, and signed
/// comparisons then look at the 32-bit sign.
fn cond(jop: u8, d: u64, s: u64, narrow: bool) -> Result<bool, String> {
    let signed = |v: u64| {
        if narrow {
            v as u32 as i32 as i64
        } else {
            v as i64
        }
    };
    Ok(match jop {
        op::JEQ => d == s,
        op::JNE => d != s,
        op::JGT => d > s,
        op::JGE => d >= s,
        op::JLT => d < s,
        op::JLE => d <= s,
        op::JSET => d & s != 0,
        op::JSGT => signed(d) > signed(s),
        op::JSGE => signed(d) >= signed(s),
        op::JSLT => signed(d) < signed(s),
        op::JSLE => signed(d) <= signed(s),
        _ => return Err(format!("unsupported jump {jop:#x}")),
    })
}
