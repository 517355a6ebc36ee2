//! Thin OS I/O shell: everything that crosses the user/kernel boundary.
//!
//! Underlay GRE packets arrive through a [`packet`] fanout group (one socket
//! per worker) or [`raw`] sockets (sharded per worker by the [`bpf`] filter),
//! leave through [`raw`] sockets, in batches via [`batch`], or as GRE-in-UDP through [`udp`]
//! sockets (UDP GSO/GRO, SO_REUSEPORT); overlay IP packets flow through the
//! multi-queue TUN device from [`tun`]; [`netdev`] answers setup-time questions
//! about interfaces; [`fs`] locks files; [`ebpf`] loads the kernel
//! datapath's programs and [`gredev`] creates its GRE device and attaches them. Nothing here knows about GRE beyond
//! the shard hash.

pub mod batch;
pub mod bpf;
pub mod ebpf;
pub mod errqueue;
pub mod fs;
pub mod gredev;
pub mod instance;
pub mod mem;
pub mod netdev;
pub mod netlink;
pub mod packet;
pub mod pmtu;
pub mod privs;
pub mod raw;
pub mod tun;
pub mod udp;

pub use batch::{Batch, RecvMeta, Transmit};
pub use bpf::{shard_filter, shard_of};
pub use netdev::{
    interface_exists, interface_index, interface_mtu, ipv4_addrs, set_ipv4_addr, IfAddr,
};
pub use packet::PacketSocket;
pub use raw::{RawGreSocket, RawSender};
pub use tun::{open_tun, tun_mtu, TunConfig};
