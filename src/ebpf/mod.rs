//! eBPF for the kernel datapath (issue #15): instruction words built in
//! Rust, no C toolchain.
//!
//! [`asm`] turns builder calls into `struct bpf_insn` words; [`programs`]
//! turns a layout and this VM's options into the two tc programs of the
//! collect-metadata GRE device. Both are pure: loading and running
//! programs (`bpf(2)`) lives in [`crate::sys::ebpf`]. The tests run the
//! programs in an interpreter of exactly the instructions and helpers they
//! use, against their Rust twins ([`crate::layout`], [`crate::datapath`]).

pub mod asm;
pub mod programs;

#[cfg(test)]
pub(crate) mod interp;
#[cfg(test)]
pub(crate) mod tests;

pub use asm::Insn;
pub use programs::{egress, ingress, KernelOpts, Params, ProgramError};
