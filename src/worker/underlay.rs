//! The seam between the worker loop and an encapsulation's sockets.
//!
//! The worker loop (TUN reads, encapsulation into the egress arena, the
//! retry-once send policy, the PMTU slow path, GRO writes to the TUN, error
//! queues, counters) is written once in [`super`]. An [`Underlay`] only moves
//! datagrams: it turns [`Segment`]s into messages and sends them, receives a
//! batch and checks each datagram with the right `Datapath` call. Raw GRE
//! ([`super::raw::RawGre`]) and GRE-in-UDP ([`super::udp::UdpGre`]) are the
//! two; tests plug in an in-memory one.
//!
//! Dispatch is static (`Worker<U: Underlay>`): the encapsulation is fixed for
//! a process's life, the per-batch calls are inlined into each
//! monomorphised loop, and a new underlay touches only its own module and
//! its construction in `runtime`.

use super::egress::Segment;
use crate::counters::Counters;
use crate::datapath::Datapath;
use crate::gro::Coalescer;
use crate::sys::batch::Transmit;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;

pub trait Underlay: Send {
    /// The receiving socket (registered for readability and errors).
    fn fd(&self) -> RawFd;
    /// Further sockets whose error queues carry ICMP errors about our packets.
    fn error_fds(&self) -> &[RawFd] {
        &[]
    }

    /// Whether the message batch has room for another TUN read's segments.
    fn has_room(&self) -> bool;
    /// Queues `arena[s.start..][..s.len]`.
    fn push(&mut self, arena: &[u8], s: Segment);
    /// Queued messages.
    fn queued(&self) -> &[Transmit];
    /// Forgets the queued messages (after a flush).
    fn clear(&mut self);
    /// Sends queued messages from index `from` on (one `sendmmsg`); the
    /// number sent, or the error of message `from`.
    fn send(&mut self, arena: &[u8], from: usize) -> io::Result<usize>;
    /// Sends `buf[start..start + len]`, as built by `encapsulate` for `peer`,
    /// as one datagram (slow paths: fragments, a refused GSO message).
    fn send_one(&mut self, buf: &[u8], start: usize, len: usize, peer: Ipv4Addr) -> io::Result<()>;

    /// Receives a batch of messages; `Ok(n > 0)` or `Err(WouldBlock)`.
    fn recv(&mut self) -> io::Result<usize>;
    /// Most messages one `recv` returns (fewer means the socket is drained).
    fn rx_capacity(&self) -> usize;
    /// The socket's receive-queue overflow count, as last reported.
    fn rx_queue_drops(&self) -> u32;
    /// Checks the `n` messages just received, counts them and hands each
    /// accepted inner packet to `g` (pieces index [`Underlay::rx_bufs`]).
    fn decapsulate(&mut self, n: usize, dp: &Datapath, c: &mut Counters, g: &mut Coalescer);
    /// The receive buffers the coalescer's pieces point into.
    fn rx_bufs(&self) -> &[Vec<u8>];
}
