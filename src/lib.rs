//! meshfwd: a userspace GRE mesh forwarder for container grids.
//!
//! Overlay addresses embed their VM's underlay address ([`layout`]), so every
//! node routes every packet with no table. The pure core ([`layout`], [`wire`],
//! [`datapath`]) makes every decision; the I/O shell ([`sys`], [`worker`],
//! [`runtime`]) moves bytes and is the only place with syscalls.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod addr;
pub mod attach;
pub mod check;
pub mod cli;
pub mod cni;
pub mod config;
pub mod counters;
pub mod datapath;
pub mod ebpf;
pub mod gro;
pub mod gso;
pub mod kernel_mode;
pub mod layout;
pub mod layout6;
pub mod logging;
pub mod metrics;
pub mod netns;
pub mod procfs;
pub mod runtime;
pub mod sys;
pub mod wire;
pub mod worker;
