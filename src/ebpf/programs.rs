//! The two tc programs of the kernel datapath, generated from the layout.
//!
//! Both run on one collect-metadata ("external") L3 GRE device, so the
//! packet they see starts at the inner IPv4 header:
//!
//! * [`egress`]: inner IPv4 packet → the same decision as
//!   [`Datapath::egress`](crate::datapath::Datapath::egress) → either
//!   `bpf_skb_set_tunnel_key` (peer VM, key, checksum/sequence flags) and
//!   `TC_ACT_OK`, or a counted drop (`TC_ACT_SHOT`);
//! * [`ingress`]: tunnel metadata (`bpf_skb_get_tunnel_key`: outer source,
//!   key, received flags) plus the inner IPv4 header → the checks of
//!   `Datapath::decapsulate` that the kernel has not already made → pass or
//!   counted drop.
//!
//! Drops are counted in a per-CPU array indexed by [`DropReason::index`]
//! (one extra slot, [`HELPER_FAILED_SLOT`], counts tunnel-key helper
//! failures). The map's fd is patched in at load time
//! ([`asm::patch_map_fd`]). No per-peer state anywhere: the peer is
//! arithmetic on the destination address, as in [`Layout::vm_of_raw`].
//!
//! Packet bytes are read with `bpf_skb_load_bytes` (20 bytes to the stack),
//! not direct packet access: after decapsulation the inner header need not
//! be in the skb's linear part (direct access would see `data_end` short and
//! need `bpf_skb_pull_data`, which may reallocate the head), the verifier
//! has no packet ranges to track, and the cost is one 20-byte copy per
//! packet.
//!
//! What the kernel checks before the ingress program runs (and counts in
//! the device's own statistics, not here): outer IPv4, GRE version/flags,
//! the GRE checksum, and checksum presence against the device's `icsum`
//! flag (`rx_crc_errors`), ECN (`IP_ECN_decapsulate`, `rx_frame_errors`).

use super::asm::{Alu, Asm, AsmError, Cond, Insn, Label, Reg, Size, Width};
use crate::datapath::{DropReason, OUTER_TTL};
use crate::layout::Layout;
use std::fmt;
use std::net::Ipv4Addr;

/// tc verdicts (uapi `linux/pkt_cls.h`).
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;

/// Counter map slots: one per drop reason, plus one for helper failures.
pub const COUNTER_SLOTS: u32 = DropReason::COUNT as u32 + 1;
/// Slot counting `bpf_skb_set_tunnel_key`/`bpf_skb_get_tunnel_key` failures
/// (flags the kernel does not know, a packet without tunnel metadata).
pub const HELPER_FAILED_SLOT: u32 = DropReason::COUNT as u32;

/// Helper function numbers (uapi `enum bpf_func_id`).
pub mod helper {
    pub const MAP_LOOKUP_ELEM: i32 = 1;
    pub const SKB_GET_TUNNEL_KEY: i32 = 20;
    pub const SKB_SET_TUNNEL_KEY: i32 = 21;
    pub const SKB_LOAD_BYTES: i32 = 26;
}

/// `struct __sk_buff` offsets the programs read.
pub mod skb {
    /// `len`: bytes from the current data pointer to the end of the packet.
    pub const LEN: i16 = 0;
    /// `protocol`: the ethertype in network byte order.
    pub const PROTOCOL: i16 = 16;
}

/// `struct bpf_tunnel_key` layout and the tunnel-key helper flags.
pub mod tunnel_key {
    pub const TUNNEL_ID: usize = 0;
    /// Host byte order.
    pub const REMOTE_IPV4: usize = 4;
    pub const TOS: usize = 20;
    pub const TTL: usize = 21;
    /// `tunnel_flags` (`__be16`, filled by get with `BPF_F_TUNINFO_FLAGS`);
    /// `tunnel_ext` for set, which must be 0.
    pub const FLAGS: usize = 22;
    pub const LABEL: usize = 24;
    /// Host byte order (5.19+).
    pub const LOCAL_IPV4: usize = 28;
    /// The whole struct (5.19+, with `local_ipv4`/`local_ipv6`).
    pub const SIZE: usize = 44;
    /// The size before 5.19 (= offset of `local_ipv4`), still accepted.
    pub const SIZE_NO_LOCAL: usize = 28;

    // bpf_skb_set_tunnel_key flags.
    pub const F_ZERO_CSUM_TX: u64 = 1 << 1;
    pub const F_DONT_FRAGMENT: u64 = 1 << 2;
    /// 4.17.
    pub const F_SEQ_NUMBER: u64 = 1 << 3;
    /// 6.3: no GRE key (below 6.3 the K bit is always sent).
    pub const F_NO_TUNNEL_KEY: u64 = 1 << 4;
    // bpf_skb_get_tunnel_key flags.
    /// 6.1: return the received tunnel flags in `tunnel_flags`.
    pub const F_TUNINFO_FLAGS: u64 = 1 << 4;

    /// Bits of the low byte of the big-endian `tunnel_flags`
    /// (`TUNNEL_CSUM`, `TUNNEL_KEY`, `TUNNEL_SEQ`).
    pub const TUNNEL_CSUM: u8 = 0x01;
    pub const TUNNEL_KEY: u8 = 0x04;
    pub const TUNNEL_SEQ: u8 = 0x08;

    /// `tunnel_tos` value asking the kernel to copy the inner TOS
    /// (`ip_md_tunnel_xmit`), with its RFC 6040 ECN encapsulation.
    pub const TOS_INHERIT: u8 = 1;
}

/// Stack layout (offsets from R10). The tunnel key is 8-byte aligned.
const KEY_AT: i16 = -48;
const HDR_AT: i16 = -72;
const SLOT_AT: i16 = -4;
/// Bytes of the inner IPv4 header the programs load (addresses included).
const HDR_LEN: i32 = 20;

/// What the programs are generated from: this VM's view of the grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub layout: Layout,
    /// This VM's underlay address (a unicast address of the underlay).
    pub local: Ipv4Addr,
    pub key: Option<u32>,
    /// Send GRE checksums (and require them on receive).
    pub csum: bool,
    /// Send RFC 2890 sequence numbers.
    pub seq: bool,
}

/// Which tunnel-key helper features the running kernel has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOpts {
    /// `BPF_F_NO_TUNNEL_KEY` (6.3): an unkeyed grid is possible at all.
    pub no_tunnel_key: bool,
    /// `BPF_F_TUNINFO_FLAGS` (6.1): ingress sees whether the key and the
    /// checksum were present, not only the key's value (without it, key 0
    /// and no key look alike).
    pub tuninfo_flags: bool,
    /// `local_ipv4` in `struct bpf_tunnel_key` (5.19): the outer source is
    /// this VM's underlay address even where routing would pick another
    /// (peers check it: anti-spoofing).
    pub tunnel_key_local: bool,
}

impl KernelOpts {
    /// Everything this module can use (6.3 and later).
    pub const CURRENT: KernelOpts = KernelOpts {
        no_tunnel_key: true,
        tuninfo_flags: true,
        tunnel_key_local: true,
    };

    /// The features of the kernel whose release string (`uname -r`, e.g.
    /// `6.1.0-57-amd64`) is `release`; `None` if it does not start with
    /// `MAJOR.MINOR` or is below 5.1.
    pub fn for_release(release: &str) -> Option<KernelOpts> {
        let (major, minor) = parse_release(release)?;
        Self::for_version(major, minor)
    }

    /// The features of Linux `major.minor`; `None` below 5.1, which lacks
    /// the 32-bit jumps (JMP32) the programs use.
    pub fn for_version(major: u32, minor: u32) -> Option<KernelOpts> {
        let at_least = |ma: u32, mi: u32| (major, minor) >= (ma, mi);
        at_least(5, 1).then(|| KernelOpts {
            no_tunnel_key: at_least(6, 3),
            tuninfo_flags: at_least(6, 1),
            tunnel_key_local: at_least(5, 19),
        })
    }
}

/// `MAJOR.MINOR` at the start of a kernel release string.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Why a program cannot be generated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgramError {
    /// The local address has no block in the layout, or the layout cannot
    /// be expressed with 32-bit shifts.
    Layout(String),
    /// No key is configured but the kernel always sends one (below 6.3).
    KeyAlwaysSent,
    Asm(AsmError),
}

impl fmt::Display for ProgramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProgramError::Layout(m) => f.write_str(m),
            ProgramError::KeyAlwaysSent => f.write_str(
                "this kernel's bpf_skb_set_tunnel_key always sends a GRE key \
                 (BPF_F_NO_TUNNEL_KEY needs Linux 6.3); use --key or the userspace datapath",
            ),
            ProgramError::Asm(e) => write!(f, "assembling the program: {e}"),
        }
    }
}

impl std::error::Error for ProgramError {}

impl From<AsmError> for ProgramError {
    fn from(e: AsmError) -> Self {
        ProgramError::Asm(e)
    }
}

/// Everything the generated code compares against, as 32-bit patterns.
struct Consts {
    overlay_net: u32,
    overlay_mask: u32,
    underlay_net: u32,
    underlay_mask: u32,
    block_net: u32,
    block_mask: u32,
    host_bits: u32,
    vm_mask: u32,
}

impl Consts {
    fn new(p: &Params) -> Result<Consts, ProgramError> {
        let l = p.layout;
        let block = l.block(p.local).ok_or_else(|| {
            ProgramError::Layout(format!(
                "local address {} is outside the underlay {}",
                p.local,
                l.underlay()
            ))
        })?;
        let host_bits = u32::from(l.host_bits());
        if !(1..32).contains(&host_bits) {
            return Err(ProgramError::Layout(format!(
                "{host_bits} host bits cannot be shifted out in 32 bits"
            )));
        }
        Ok(Consts {
            overlay_net: l.overlay().addr().into(),
            overlay_mask: l.overlay().mask(),
            underlay_net: l.underlay().addr().into(),
            underlay_mask: l.underlay().mask(),
            block_net: block.addr().into(),
            block_mask: block.mask(),
            host_bits,
            vm_mask: !l.underlay().mask(),
        })
    }
}

/// Drop exits: each reason used gets a stub that stores its slot and joins
/// one counting tail.
struct Drops {
    stubs: Vec<(u32, Label)>,
}

impl Drops {
    fn new() -> Drops {
        Drops { stubs: Vec::new() }
    }

    /// The label that counts a drop in `slot` and returns `TC_ACT_SHOT`.
    fn to(&mut self, a: &mut Asm, slot: u32) -> Label {
        if let Some(&(_, l)) = self.stubs.iter().find(|(s, _)| *s == slot) {
            return l;
        }
        let l = a.label();
        self.stubs.push((slot, l));
        l
    }

    fn reason(&mut self, a: &mut Asm, r: DropReason) -> Label {
        self.to(a, r.index() as u32)
    }

    /// Emits the stubs and the tail: look the slot up in the counter map,
    /// add one (a per-CPU value: no atomics needed), return `TC_ACT_SHOT`.
    fn emit(self, a: &mut Asm) {
        let count = a.label();
        let shot = a.label();
        for (slot, l) in self.stubs {
            a.bind(l)
                .st(Size::W, Reg::R10, SLOT_AT, slot as i32)
                .ja(count);
        }
        a.bind(count)
            .ld_map_fd(Reg::R1, 0)
            .mov64(Reg::R2, Reg::R10)
            .alu_imm(Width::W64, Alu::Add, Reg::R2, i32::from(SLOT_AT))
            .call(helper::MAP_LOOKUP_ELEM)
            .jmp_imm(Width::W64, Cond::Eq, Reg::R0, 0, shot)
            .ldx(Size::DW, Reg::R1, Reg::R0, 0)
            .alu_imm(Width::W64, Alu::Add, Reg::R1, 1)
            .stx(Size::DW, Reg::R0, 0, Reg::R1)
            .bind(shot)
            .mov64_imm(Reg::R0, TC_ACT_SHOT as i32)
            .exit();
    }
}

/// The drop reasons for each way an IPv4 header can be wrong.
struct HeaderReasons {
    short: DropReason,
    version: DropReason,
    malformed: DropReason,
}

/// Loads the first 20 bytes at `l3` to the stack and checks them like
/// `Ipv4Packet::new_checked`: 20 bytes present, version 4, IHL ≥ 5, total
/// length ≥ header length and ≤ the packet. Leaves the inner source in R8
/// and the destination in R9, host byte order. Expects the context in R6.
fn load_ipv4_header(a: &mut Asm, drops: &mut Drops, l3: i32, why: &HeaderReasons) {
    let short = drops.reason(a, why.short);
    let version = drops.reason(a, why.version);
    let malformed = drops.reason(a, why.malformed);
    a.mov64(Reg::R1, Reg::R6)
        .mov64_imm(Reg::R2, l3)
        .mov64(Reg::R3, Reg::R10)
        .alu_imm(Width::W64, Alu::Add, Reg::R3, i32::from(HDR_AT))
        .mov64_imm(Reg::R4, HDR_LEN)
        .call(helper::SKB_LOAD_BYTES)
        // Fails only when the packet is shorter than l3 + 20.
        .jmp_imm(Width::W64, Cond::Ne, Reg::R0, 0, short)
        .ldx(Size::B, Reg::R1, Reg::R10, HDR_AT)
        .mov64(Reg::R2, Reg::R1)
        .alu32(Alu::Rsh, Reg::R2, 4)
        .jmp32(Cond::Ne, Reg::R2, 4, version)
        .alu32(Alu::And, Reg::R1, 0x0f)
        .alu32(Alu::Lsh, Reg::R1, 2)
        .jmp32(Cond::Lt, Reg::R1, 20, malformed)
        .ldx(Size::H, Reg::R2, Reg::R10, HDR_AT + 2)
        .be_to_host(Reg::R2, 16)
        .jmp_reg(Width::W32, Cond::Lt, Reg::R2, Reg::R1, malformed)
        .ldx(Size::W, Reg::R3, Reg::R6, skb::LEN)
        .alu32(Alu::Add, Reg::R2, l3 as u32)
        .jmp_reg(Width::W32, Cond::Gt, Reg::R2, Reg::R3, short)
        .ldx(Size::W, Reg::R8, Reg::R10, HDR_AT + 12)
        .be_to_host(Reg::R8, 32)
        .ldx(Size::W, Reg::R9, Reg::R10, HDR_AT + 16)
        .be_to_host(Reg::R9, 32);
}

/// `dst = underlay_net | ((addr >> host_bits) & vm_mask)` in 32 bits.
fn vm_of(a: &mut Asm, c: &Consts, dst: Reg, addr: Reg) {
    a.alu_reg(Width::W32, Alu::Mov, dst, addr)
        .alu32(Alu::Rsh, dst, c.host_bits)
        .alu32(Alu::And, dst, c.vm_mask)
        .alu32(Alu::Or, dst, c.underlay_net);
}

/// `bpf_skb_set_tunnel_key` flags for `p`.
pub fn set_tunnel_key_flags(p: &Params) -> u64 {
    let mut f = tunnel_key::F_DONT_FRAGMENT;
    if !p.csum {
        f |= tunnel_key::F_ZERO_CSUM_TX;
    }
    if p.seq {
        f |= tunnel_key::F_SEQ_NUMBER;
    }
    if p.key.is_none() {
        f |= tunnel_key::F_NO_TUNNEL_KEY;
    }
    f
}

/// The egress program for the device (packet data starts at the inner
/// IPv4 header).
pub fn egress(p: &Params, k: &KernelOpts) -> Result<Vec<Insn>, ProgramError> {
    egress_at(p, k, 0)
}

/// The ingress program for the device.
pub fn ingress(p: &Params, k: &KernelOpts) -> Result<Vec<Insn>, ProgramError> {
    ingress_at(p, k, 0)
}

/// [`egress`] for packets whose IPv4 header starts `l3` bytes in:
/// `BPF_PROG_TEST_RUN` hands a tc program an Ethernet frame (`l3` = 14),
/// the GRE device hands it the bare IPv4 packet (`l3` = 0).
pub fn egress_at(p: &Params, k: &KernelOpts, l3: i32) -> Result<Vec<Insn>, ProgramError> {
    if p.key.is_none() && !k.no_tunnel_key {
        return Err(ProgramError::KeyAlwaysSent);
    }
    let c = Consts::new(p)?;
    let mut a = Asm::new();
    let mut drops = Drops::new();
    a.mov64(Reg::R6, Reg::R1);
    load_ipv4_header(
        &mut a,
        &mut drops,
        l3,
        &HeaderReasons {
            short: DropReason::TooShort,
            version: DropReason::NotIpv4,
            malformed: DropReason::BadIpHeader,
        },
    );
    // The order of Datapath::route, so the first failing check names the
    // same reason.
    let not_overlay = drops.reason(&mut a, DropReason::DstNotInOverlay);
    let local_vm = drops.reason(&mut a, DropReason::DstLocalVm);
    let reserved = drops.reason(&mut a, DropReason::DstReserved);
    let not_unicast = drops.reason(&mut a, DropReason::PeerNotUnicast);
    let src_not_local = drops.reason(&mut a, DropReason::SrcNotLocal);
    let helper_failed = drops.to(&mut a, HELPER_FAILED_SLOT);
    a.mov64(Reg::R1, Reg::R9)
        .alu32(Alu::And, Reg::R1, c.overlay_mask)
        .jmp32(Cond::Ne, Reg::R1, c.overlay_net, not_overlay)
        .mov64(Reg::R1, Reg::R9)
        .alu32(Alu::And, Reg::R1, c.block_mask)
        .jmp32(Cond::Eq, Reg::R1, c.block_net, local_vm)
        .mov64(Reg::R1, Reg::R9)
        .alu32(Alu::And, Reg::R1, !c.block_mask)
        .jmp32(Cond::Eq, Reg::R1, 0, reserved);
    // R7 = the peer VM's VM bits, then its underlay address.
    a.alu_reg(Width::W32, Alu::Mov, Reg::R7, Reg::R9)
        .alu32(Alu::Rsh, Reg::R7, c.host_bits)
        .alu32(Alu::And, Reg::R7, c.vm_mask)
        .jmp32(Cond::Eq, Reg::R7, 0, not_unicast)
        .jmp32(Cond::Eq, Reg::R7, c.vm_mask, not_unicast)
        .alu32(Alu::Or, Reg::R7, c.underlay_net)
        .mov64(Reg::R1, Reg::R8)
        .alu32(Alu::And, Reg::R1, c.block_mask)
        .jmp32(Cond::Ne, Reg::R1, c.block_net, src_not_local);
    // struct bpf_tunnel_key on the stack: zeroed (the helper reads all of
    // it, and tunnel_ext/tunnel_label must be 0), then the fields we set.
    for off in (0..40).step_by(8) {
        a.st(Size::DW, Reg::R10, KEY_AT + off, 0);
    }
    a.st(Size::W, Reg::R10, KEY_AT + 40, 0)
        .st(
            Size::W,
            Reg::R10,
            KEY_AT + tunnel_key::TUNNEL_ID as i16,
            p.key.unwrap_or(0) as i32,
        )
        .stx(
            Size::W,
            Reg::R10,
            KEY_AT + tunnel_key::REMOTE_IPV4 as i16,
            Reg::R7,
        )
        .st(
            Size::B,
            Reg::R10,
            KEY_AT + tunnel_key::TOS as i16,
            i32::from(tunnel_key::TOS_INHERIT),
        )
        .st(
            Size::B,
            Reg::R10,
            KEY_AT + tunnel_key::TTL as i16,
            i32::from(OUTER_TTL),
        );
    let size = if k.tunnel_key_local {
        a.st(
            Size::W,
            Reg::R10,
            KEY_AT + tunnel_key::LOCAL_IPV4 as i16,
            u32::from(p.local) as i32,
        );
        tunnel_key::SIZE
    } else {
        tunnel_key::SIZE_NO_LOCAL
    };
    a.mov64(Reg::R1, Reg::R6)
        .mov64(Reg::R2, Reg::R10)
        .alu_imm(Width::W64, Alu::Add, Reg::R2, i32::from(KEY_AT))
        .mov64_imm(Reg::R3, size as i32)
        .mov64_imm(Reg::R4, set_tunnel_key_flags(p) as i32)
        .call(helper::SKB_SET_TUNNEL_KEY)
        .jmp_imm(Width::W64, Cond::Ne, Reg::R0, 0, helper_failed)
        .mov64_imm(Reg::R0, TC_ACT_OK as i32)
        .exit();
    drops.emit(&mut a);
    Ok(a.finish()?)
}

/// [`ingress`] for packets whose inner IPv4 header starts `l3` bytes in.
pub fn ingress_at(p: &Params, k: &KernelOpts, l3: i32) -> Result<Vec<Insn>, ProgramError> {
    let c = Consts::new(p)?;
    let mut a = Asm::new();
    let mut drops = Drops::new();
    let helper_failed = drops.to(&mut a, HELPER_FAILED_SLOT);
    let outer_not_underlay = drops.reason(&mut a, DropReason::OuterSrcNotUnderlay);
    let not_ipv4 = drops.reason(&mut a, DropReason::GreNotIpv4);
    let key_mismatch = drops.reason(&mut a, DropReason::KeyMismatch);
    let get_flags = if k.tuninfo_flags {
        tunnel_key::F_TUNINFO_FLAGS
    } else {
        0
    };
    a.mov64(Reg::R6, Reg::R1)
        .mov64(Reg::R1, Reg::R6)
        .mov64(Reg::R2, Reg::R10)
        .alu_imm(Width::W64, Alu::Add, Reg::R2, i32::from(KEY_AT))
        .mov64_imm(Reg::R3, tunnel_key::SIZE as i32)
        .mov64_imm(Reg::R4, get_flags as i32)
        .call(helper::SKB_GET_TUNNEL_KEY)
        .jmp_imm(Width::W64, Cond::Ne, Reg::R0, 0, helper_failed)
        // R7 = the outer source, the sending VM.
        .ldx(
            Size::W,
            Reg::R7,
            Reg::R10,
            KEY_AT + tunnel_key::REMOTE_IPV4 as i16,
        )
        .mov64(Reg::R1, Reg::R7)
        .alu32(Alu::And, Reg::R1, c.underlay_mask)
        .jmp32(Cond::Ne, Reg::R1, c.underlay_net, outer_not_underlay)
        // The GRE protocol type became skb->protocol.
        .ldx(Size::W, Reg::R1, Reg::R6, skb::PROTOCOL)
        .be_to_host(Reg::R1, 16)
        .jmp32(Cond::Ne, Reg::R1, 0x0800, not_ipv4);
    if k.tuninfo_flags {
        a.ldx(
            Size::B,
            Reg::R2,
            Reg::R10,
            KEY_AT + tunnel_key::FLAGS as i16 + 1,
        );
        if p.csum {
            let missing = drops.reason(&mut a, DropReason::GreChecksumMissing);
            a.mov64(Reg::R1, Reg::R2)
                .alu32(Alu::And, Reg::R1, u32::from(tunnel_key::TUNNEL_CSUM))
                .jmp32(Cond::Eq, Reg::R1, 0, missing);
        }
        // The key must be present exactly when one is configured.
        a.alu32(Alu::And, Reg::R2, u32::from(tunnel_key::TUNNEL_KEY));
        let absent_ok = if p.key.is_some() { Cond::Eq } else { Cond::Ne };
        a.jmp32(absent_ok, Reg::R2, 0, key_mismatch);
    }
    // Without the flags, a missing key reads as 0.
    a.ldx(
        Size::W,
        Reg::R1,
        Reg::R10,
        KEY_AT + tunnel_key::TUNNEL_ID as i16,
    )
    .jmp32(Cond::Ne, Reg::R1, p.key.unwrap_or(0), key_mismatch);
    let inner = HeaderReasons {
        short: DropReason::InnerMalformed,
        version: DropReason::InnerMalformed,
        malformed: DropReason::InnerMalformed,
    };
    load_ipv4_header(&mut a, &mut drops, l3, &inner);
    let src_not_overlay = drops.reason(&mut a, DropReason::InnerSrcNotOverlay);
    let spoofed = drops.reason(&mut a, DropReason::SpoofedSource);
    let dst_not_local = drops.reason(&mut a, DropReason::InnerDstNotLocal);
    let reserved = drops.reason(&mut a, DropReason::DstReserved);
    a.mov64(Reg::R1, Reg::R8)
        .alu32(Alu::And, Reg::R1, c.overlay_mask)
        .jmp32(Cond::Ne, Reg::R1, c.overlay_net, src_not_overlay);
    vm_of(&mut a, &c, Reg::R1, Reg::R8);
    a.jmp_reg(Width::W32, Cond::Ne, Reg::R1, Reg::R7, spoofed)
        .mov64(Reg::R1, Reg::R9)
        .alu32(Alu::And, Reg::R1, c.block_mask)
        .jmp32(Cond::Ne, Reg::R1, c.block_net, dst_not_local)
        .mov64(Reg::R1, Reg::R9)
        .alu32(Alu::And, Reg::R1, !c.block_mask)
        .jmp32(Cond::Eq, Reg::R1, 0, reserved)
        .mov64_imm(Reg::R0, TC_ACT_OK as i32)
        .exit();
    drops.emit(&mut a);
    Ok(a.finish()?)
}

/// A tc program that drops every packet (`TC_ACT_SHOT`) and counts
/// nothing: the ingress and egress of the collect-metadata GRE device that
/// userspace meshfwd creates where ip_gre is loaded, so that ip_gre takes
/// every GRE packet no tunnel of its own matches (the packet sockets have
/// their copy by then) and drops it quietly instead of answering with ICMP
/// port unreachable (`gre_rcv` → `icmp_send`).
pub fn drop_all() -> Vec<Insn> {
    let mut a = Asm::new();
    a.mov64_imm(Reg::R0, TC_ACT_SHOT as i32).exit();
    a.finish().unwrap_or_default()
}

/// Test support: `prog` behind a prologue that gives the skb the tunnel
/// metadata a collect-metadata GRE device would attach on receive, so the
/// ingress program can run under `BPF_PROG_TEST_RUN` (which builds skbs
/// without any). It uses `bpf_skb_set_tunnel_key`: its `local_ipv4` is what
/// `bpf_skb_get_tunnel_key` returns as `remote_ipv4`, the default flags are
/// KEY|CSUM, `BPF_F_NO_TUNNEL_KEY` and `BPF_F_ZERO_CSUM_TX` clear them.
#[cfg(test)]
pub(crate) fn with_rx_metadata(
    sender: Ipv4Addr,
    key: Option<u32>,
    csum: bool,
    prog: &[Insn],
) -> Vec<Insn> {
    let mut a = Asm::new();
    for off in (0..40).step_by(8) {
        a.st(Size::DW, Reg::R10, KEY_AT + off, 0);
    }
    a.st(Size::W, Reg::R10, KEY_AT + 40, 0)
        .st(Size::W, Reg::R10, KEY_AT, key.unwrap_or(0) as i32)
        .st(
            Size::W,
            Reg::R10,
            KEY_AT + tunnel_key::LOCAL_IPV4 as i16,
            u32::from(sender) as i32,
        );
    let mut flags = 0;
    if key.is_none() {
        flags |= tunnel_key::F_NO_TUNNEL_KEY;
    }
    if !csum {
        flags |= tunnel_key::F_ZERO_CSUM_TX;
    }
    a.mov64(Reg::R6, Reg::R1)
        .mov64(Reg::R2, Reg::R10)
        .alu_imm(Width::W64, Alu::Add, Reg::R2, i32::from(KEY_AT))
        .mov64_imm(Reg::R3, tunnel_key::SIZE as i32)
        .mov64_imm(Reg::R4, flags as i32)
        .call(helper::SKB_SET_TUNNEL_KEY)
        .mov64(Reg::R1, Reg::R6);
    let mut out = a.finish().unwrap_or_default();
    out.extend_from_slice(prog);
    out
}
