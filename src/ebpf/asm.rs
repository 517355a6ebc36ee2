//! An eBPF instruction builder: Rust calls in, `struct bpf_insn` words out.
//!
//! Only the subset meshfwd's tc programs need (ALU64/ALU32, byte swaps,
//! JMP/JMP32 with forward labels, LDX/STX/ST, LD_IMM64 including the
//! map-fd pseudo form, helper calls, EXIT). Jumps name a [`Label`]; offsets
//! are resolved by [`Asm::finish`], which refuses unbound labels and offsets
//! that do not fit the 16-bit field instead of emitting a wrong program.
//! Pure: no syscalls, no unsafe.

use std::fmt;

/// One eBPF instruction, laid out like the kernel's `struct bpf_insn`
/// (8 bytes: opcode, dst/src register nibbles, 16-bit offset, 32-bit imm).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    pub code: u8,
    /// `dst_reg` in the low nibble, `src_reg` in the high nibble (the
    /// bit-field order of `struct bpf_insn` on little-endian hosts).
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    pub const fn new(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: regs(dst as u8, src as u8),
            off,
            imm,
        }
    }

    pub const fn dst(&self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs & 0x0f
        } else {
            self.regs >> 4
        }
    }

    pub const fn src(&self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs >> 4
        } else {
            self.regs & 0x0f
        }
    }

    /// The instruction as the kernel reads it from memory.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = self.regs;
        b[2..4].copy_from_slice(&self.off.to_ne_bytes());
        b[4..8].copy_from_slice(&self.imm.to_ne_bytes());
        b
    }
}

/// The register nibbles in the order the host's bit-fields use.
const fn regs(dst: u8, src: u8) -> u8 {
    if cfg!(target_endian = "little") {
        (dst & 0x0f) | (src << 4)
    } else {
        (dst << 4) | (src & 0x0f)
    }
}

/// eBPF registers. R0: return value; R1-R5: helper arguments (clobbered by
/// calls); R6-R9: callee-saved; R10: read-only frame pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reg {
    R0 = 0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    R10,
}

/// Opcode fields (uapi `linux/bpf_common.h` and `linux/bpf.h`).
pub mod op {
    // Classes.
    pub const LD: u8 = 0x00;
    pub const LDX: u8 = 0x01;
    pub const ST: u8 = 0x02;
    pub const STX: u8 = 0x03;
    pub const ALU: u8 = 0x04;
    pub const JMP: u8 = 0x05;
    pub const JMP32: u8 = 0x06;
    pub const ALU64: u8 = 0x07;
    // Sizes.
    pub const W: u8 = 0x00;
    pub const H: u8 = 0x08;
    pub const B: u8 = 0x10;
    pub const DW: u8 = 0x18;
    // Modes.
    pub const IMM: u8 = 0x00;
    pub const MEM: u8 = 0x60;
    // Sources.
    pub const K: u8 = 0x00;
    pub const X: u8 = 0x08;
    // ALU operations.
    pub const ADD: u8 = 0x00;
    pub const SUB: u8 = 0x10;
    pub const OR: u8 = 0x40;
    pub const AND: u8 = 0x50;
    pub const LSH: u8 = 0x60;
    pub const RSH: u8 = 0x70;
    pub const XOR: u8 = 0xa0;
    pub const MOV: u8 = 0xb0;
    pub const END: u8 = 0xd0;
    /// With END: convert to big-endian (a swap on little-endian hosts).
    pub const TO_BE: u8 = 0x08;
    // Jump operations.
    pub const JA: u8 = 0x00;
    pub const JEQ: u8 = 0x10;
    pub const JGT: u8 = 0x20;
    pub const JGE: u8 = 0x30;
    pub const JSET: u8 = 0x40;
    pub const JNE: u8 = 0x50;
    pub const JSGT: u8 = 0x60;
    pub const JSGE: u8 = 0x70;
    pub const CALL: u8 = 0x80;
    pub const EXIT: u8 = 0x90;
    pub const JLT: u8 = 0xa0;
    pub const JLE: u8 = 0xb0;
    pub const JSLT: u8 = 0xc0;
    pub const JSLE: u8 = 0xd0;
    /// `src_reg` of an LD_IMM64 whose imm is a map file descriptor.
    pub const PSEUDO_MAP_FD: u8 = 1;
}

/// Memory access width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    B,
    H,
    W,
    DW,
}

impl Size {
    const fn bits(self) -> u8 {
        match self {
            Size::B => op::B,
            Size::H => op::H,
            Size::W => op::W,
            Size::DW => op::DW,
        }
    }
}

/// ALU operations the builder offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alu {
    Add,
    Sub,
    Or,
    And,
    Lsh,
    Rsh,
    Xor,
    Mov,
}

impl Alu {
    const fn bits(self) -> u8 {
        match self {
            Alu::Add => op::ADD,
            Alu::Sub => op::SUB,
            Alu::Or => op::OR,
            Alu::And => op::AND,
            Alu::Lsh => op::LSH,
            Alu::Rsh => op::RSH,
            Alu::Xor => op::XOR,
            Alu::Mov => op::MOV,
        }
    }
}

/// Conditional jumps (unsigned comparisons, plus signed ones for helper
/// return values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Set,
    Sgt,
    Sge,
    Slt,
    Sle,
}

impl Cond {
    const fn bits(self) -> u8 {
        match self {
            Cond::Eq => op::JEQ,
            Cond::Ne => op::JNE,
            Cond::Gt => op::JGT,
            Cond::Ge => op::JGE,
            Cond::Lt => op::JLT,
            Cond::Le => op::JLE,
            Cond::Set => op::JSET,
            Cond::Sgt => op::JSGT,
            Cond::Sge => op::JSGE,
            Cond::Slt => op::JSLT,
            Cond::Sle => op::JSLE,
        }
    }
}

/// Operand width of ALU and jump instructions: 64-bit, or the low 32 bits
/// (ALU32 results are zero-extended; JMP32 compares the low halves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    W64,
    W32,
}

/// A jump target, bound to a position with [`Asm::bind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(usize);

/// Why a program could not be assembled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AsmError {
    /// A jump names a label that was never bound.
    Unbound { at: usize },
    /// A label was bound twice.
    Rebound { label: usize },
    /// A jump offset does not fit in 16 bits.
    TooFar { at: usize },
}

impl fmt::Display for AsmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AsmError::Unbound { at } => write!(f, "jump at insn {at} to an unbound label"),
            AsmError::Rebound { label } => write!(f, "label {label} bound twice"),
            AsmError::TooFar { at } => write!(f, "jump at insn {at} does not fit 16 bits"),
        }
    }
}

impl std::error::Error for AsmError {}

/// Builds a program instruction by instruction.
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<Insn>,
    /// Bound position of each label.
    labels: Vec<Option<usize>>,
    /// (instruction index, label) of every jump still to resolve.
    jumps: Vec<(usize, Label)>,
    /// First label bound twice, reported by `finish`.
    rebound: Option<usize>,
}

impl Asm {
    pub fn new() -> Asm {
        Asm::default()
    }

    /// Instructions emitted so far.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Binds `l` to the next instruction.
    pub fn bind(&mut self, l: Label) -> &mut Self {
        match self.labels.get_mut(l.0) {
            Some(slot @ None) => *slot = Some(self.insns.len()),
            _ => {
                self.rebound.get_or_insert(l.0);
            }
        }
        self
    }

    pub fn raw(&mut self, i: Insn) -> &mut Self {
        self.insns.push(i);
        self
    }

    fn alu_class(w: Width) -> u8 {
        match w {
            Width::W64 => op::ALU64,
            Width::W32 => op::ALU,
        }
    }

    /// `dst = dst OP imm` (imm sign-extended to 64 bits in W64).
    pub fn alu_imm(&mut self, w: Width, o: Alu, dst: Reg, imm: i32) -> &mut Self {
        self.raw(Insn::new(
            Self::alu_class(w) | o.bits() | op::K,
            dst,
            Reg::R0,
            0,
            imm,
        ))
    }

    /// `dst = dst OP src`.
    pub fn alu_reg(&mut self, w: Width, o: Alu, dst: Reg, src: Reg) -> &mut Self {
        self.raw(Insn::new(
            Self::alu_class(w) | o.bits() | op::X,
            dst,
            src,
            0,
            0,
        ))
    }

    /// 32-bit ALU with an unsigned immediate (the bit pattern is what counts).
    pub fn alu32(&mut self, o: Alu, dst: Reg, imm: u32) -> &mut Self {
        self.alu_imm(Width::W32, o, dst, imm as i32)
    }

    pub fn mov64(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.alu_reg(Width::W64, Alu::Mov, dst, src)
    }

    pub fn mov64_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.alu_imm(Width::W64, Alu::Mov, dst, imm)
    }

    /// Network to host order of the low `bits` (16, 32 or 64) of `dst`,
    /// zero-extended (a byte swap on little-endian hosts).
    pub fn be_to_host(&mut self, dst: Reg, bits: i32) -> &mut Self {
        self.raw(Insn::new(
            op::ALU | op::END | op::TO_BE,
            dst,
            Reg::R0,
            0,
            bits,
        ))
    }

    /// `dst = *(size *)(src + off)`.
    pub fn ldx(&mut self, size: Size, dst: Reg, src: Reg, off: i16) -> &mut Self {
        self.raw(Insn::new(op::LDX | op::MEM | size.bits(), dst, src, off, 0))
    }

    /// `*(size *)(dst + off) = src`.
    pub fn stx(&mut self, size: Size, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.raw(Insn::new(op::STX | op::MEM | size.bits(), dst, src, off, 0))
    }

    /// `*(size *)(dst + off) = imm` (sign-extended for DW).
    pub fn st(&mut self, size: Size, dst: Reg, off: i16, imm: i32) -> &mut Self {
        self.raw(Insn::new(
            op::ST | op::MEM | size.bits(),
            dst,
            Reg::R0,
            off,
            imm,
        ))
    }

    /// `dst = imm64` (two instruction slots).
    pub fn ld_imm64(&mut self, dst: Reg, imm: u64) -> &mut Self {
        self.raw(Insn::new(
            op::LD | op::IMM | op::DW,
            dst,
            Reg::R0,
            0,
            imm as u32 as i32,
        ));
        self.raw(Insn::new(0, Reg::R0, Reg::R0, 0, (imm >> 32) as u32 as i32))
    }

    /// `dst = map` for the map whose file descriptor replaces `fd` at load
    /// time (see [`patch_map_fd`]); the verifier turns it into the map's
    /// address.
    pub fn ld_map_fd(&mut self, dst: Reg, fd: i32) -> &mut Self {
        let first = Insn {
            code: op::LD | op::IMM | op::DW,
            regs: regs(dst as u8, op::PSEUDO_MAP_FD),
            off: 0,
            imm: fd,
        };
        self.raw(first);
        self.raw(Insn::new(0, Reg::R0, Reg::R0, 0, 0))
    }

    fn jump(&mut self, code: u8, dst: Reg, src: Reg, imm: i32, to: Label) -> &mut Self {
        self.jumps.push((self.insns.len(), to));
        self.raw(Insn::new(code, dst, src, 0, imm))
    }

    fn jmp_class(w: Width) -> u8 {
        match w {
            Width::W64 => op::JMP,
            Width::W32 => op::JMP32,
        }
    }

    /// `if dst COND imm goto to` (W64: imm sign-extended; W32: low halves).
    pub fn jmp_imm(&mut self, w: Width, c: Cond, dst: Reg, imm: i32, to: Label) -> &mut Self {
        self.jump(Self::jmp_class(w) | c.bits() | op::K, dst, Reg::R0, imm, to)
    }

    /// JMP32 with an unsigned immediate: compares the low 32 bits of `dst`
    /// with the bit pattern `imm`.
    pub fn jmp32(&mut self, c: Cond, dst: Reg, imm: u32, to: Label) -> &mut Self {
        self.jmp_imm(Width::W32, c, dst, imm as i32, to)
    }

    /// `if dst COND src goto to`.
    pub fn jmp_reg(&mut self, w: Width, c: Cond, dst: Reg, src: Reg, to: Label) -> &mut Self {
        self.jump(Self::jmp_class(w) | c.bits() | op::X, dst, src, 0, to)
    }

    /// `goto to`.
    pub fn ja(&mut self, to: Label) -> &mut Self {
        self.jump(op::JMP | op::JA, Reg::R0, Reg::R0, 0, to)
    }

    /// Calls helper number `helper` (arguments in R1-R5, result in R0).
    pub fn call(&mut self, helper: i32) -> &mut Self {
        self.raw(Insn::new(op::JMP | op::CALL, Reg::R0, Reg::R0, 0, helper))
    }

    pub fn exit(&mut self) -> &mut Self {
        self.raw(Insn::new(op::JMP | op::EXIT, Reg::R0, Reg::R0, 0, 0))
    }

    /// Resolves every jump to its label's position.
    pub fn finish(mut self) -> Result<Vec<Insn>, AsmError> {
        if let Some(label) = self.rebound {
            return Err(AsmError::Rebound { label });
        }
        for &(at, Label(l)) in &self.jumps {
            let target = self
                .labels
                .get(l)
                .copied()
                .flatten()
                .ok_or(AsmError::Unbound { at })?;
            // Offsets count from the instruction after the jump.
            let rel = target as i64 - at as i64 - 1;
            let off = i16::try_from(rel).map_err(|_| AsmError::TooFar { at })?;
            self.insns[at].off = off;
        }
        Ok(self.insns)
    }
}

/// True for the first slot of an LD_IMM64 that loads a map by its fd.
pub fn is_map_fd_load(i: &Insn) -> bool {
    i.code == op::LD | op::IMM | op::DW && i.src() == op::PSEUDO_MAP_FD
}

/// Writes `fd` into every map-fd load of `prog`; returns how many there were.
pub fn patch_map_fd(prog: &mut [Insn], fd: i32) -> usize {
    let mut n = 0;
    for i in prog.iter_mut().filter(|i| is_map_fd_load(i)) {
        i.imm = fd;
        n += 1;
    }
    n
}

/// The program as the bytes `bpf(BPF_PROG_LOAD)` reads.
pub fn to_bytes(prog: &[Insn]) -> Vec<u8> {
    prog.iter().flat_map(|i| i.to_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodings checked against the kernel's own macros
    /// (`BPF_MOV64_REG(BPF_REG_6, BPF_REG_1)` = bf 16 00 00 00 00 00 00, ...).
    #[test]
    fn encodings_match_the_kernel_macros() {
        let mut a = Asm::new();
        a.mov64(Reg::R6, Reg::R1)
            .ldx(Size::W, Reg::R2, Reg::R6, 0)
            .st(Size::W, Reg::R10, -4, 7)
            .alu32(Alu::And, Reg::R1, 0xf000_0000)
            .be_to_host(Reg::R7, 32)
            .ld_map_fd(Reg::R1, 0)
            .call(1)
            .exit();
        let p = a.finish().unwrap();
        let hex: Vec<String> = p.iter().map(|i| hex(&i.to_bytes())).collect();
        assert_eq!(
            hex,
            [
                "bf16000000000000", // r6 = r1
                "6162000000000000", // r2 = *(u32 *)(r6 + 0)
                "620afcff07000000", // *(u32 *)(r10 - 4) = 7
                "54010000000000f0", // w1 &= 0xf0000000
                "dc07000020000000", // r7 = be32 r7
                "1811000000000000", // r1 = map_fd 0 (src_reg 1)
                "0000000000000000",
                "8500000001000000", // call 1
                "9500000000000000", // exit
            ]
        );
        #[cfg(target_endian = "little")]
        assert_eq!(to_bytes(&p).len(), 72);
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn labels_resolve_forward_and_backward() {
        let mut a = Asm::new();
        let end = a.label();
        let top = a.label();
        a.bind(top);
        a.jmp32(Cond::Eq, Reg::R1, 5, end) // 0 -> 3
            .mov64_imm(Reg::R0, 1) // 1
            .ja(top) // 2 -> 0
            .bind(end)
            .exit(); // 3
        let p = a.finish().unwrap();
        assert_eq!(p[0].off, 2);
        assert_eq!(p[0].code, op::JMP32 | op::JEQ | op::K);
        assert_eq!(p[2].off, -3);
    }

    #[test]
    fn bad_labels_are_errors_not_programs() {
        let mut a = Asm::new();
        let l = a.label();
        a.ja(l);
        assert_eq!(a.finish(), Err(AsmError::Unbound { at: 0 }));

        let mut a = Asm::new();
        let l = a.label();
        a.bind(l).bind(l).exit();
        assert_eq!(a.finish(), Err(AsmError::Rebound { label: 0 }));

        let mut a = Asm::new();
        let l = a.label();
        a.ja(l);
        for _ in 0..40_000 {
            a.exit();
        }
        a.bind(l).exit();
        assert_eq!(a.finish(), Err(AsmError::TooFar { at: 0 }));
    }

    #[test]
    fn map_fd_is_patched_only_in_map_loads() {
        let mut a = Asm::new();
        a.ld_imm64(Reg::R2, 0x1_0000_0002)
            .ld_map_fd(Reg::R1, 0)
            .ld_map_fd(Reg::R3, 0)
            .exit();
        let mut p = a.finish().unwrap();
        assert_eq!(patch_map_fd(&mut p, 9), 2);
        assert_eq!((p[0].imm, p[1].imm), (2, 1), "plain imm64 untouched");
        assert_eq!((p[2].imm, p[4].imm), (9, 9));
        assert_eq!((p[2].dst(), p[2].src()), (1, 1));
    }
}
