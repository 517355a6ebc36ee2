//! The seam between the worker loop and an encapsulation's sockets.
//!
//! The worker loop (TUN reads, encapsulation into the egress arena, the
//! retry-once send policy, the PMTU slow path, GRO writes to the TUN, error
//! queues, counters) is written once in [`super`]. An [`Underlay`] only moves
//! datagrams: it turns [`Segment`]s into messages and sends them, receives a
//! batch and checks each datagram with the right `Datapath` call. Raw GRE
//! received through a packet fanout group ([`super::fanout::FanoutGre`]) or
//! sharded raw sockets ([`super::raw::RawGre`]), and GRE-in-UDP
//! ([`super::udp::UdpGre`]) are the three; tests plug in an in-memory one.
//!
//! Dispatch is static (`Worker<U: Underlay>`): the encapsulation is fixed for
//! a process's life, the per-batch calls are inlined into each
//! monomorphised loop, and a new underlay touches only its own module and
//! its construction in `runtime`.

use super::egress::Segment;
use crate::counters::Counters;
use crate::datapath::{Datapath, Decapsulated, DropReason};
use crate::gro::{Coalescer, Piece};
use crate::sys::batch::{Batch, RecvMeta, Transmit};
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
    /// Whether [`Underlay::fd`] is an IPv4 socket whose error queue carries
    /// ICMP errors (`IP_RECVERR`); a packet socket is not.
    const RX_IS_IP: bool = true;
    /// A second receiving socket, read when it is readable, through the same
    /// buffers and checks as the first (a fanout group's raw GRE socket for
    /// packets that arrived on other interfaces). Its error queue is drained
    /// too.
    fn stray_fd(&self) -> Option<RawFd> {
        None
    }
    /// Receives a batch from [`Underlay::stray_fd`] into [`Underlay::rx`].
    fn recv_stray(&mut self) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
    /// Poll reported an error on [`Underlay::fd`] (which is not an IP
    /// socket with an error queue): clear it.
    fn clear_rx_error(&mut self) {}

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

    /// The receive buffers and their batch.
    fn rx(&mut self) -> &mut RxBatch;
    /// Receives a batch of messages into [`Underlay::rx`]; `Ok(n > 0)` or
    /// `Err(WouldBlock)`.
    fn recv(&mut self) -> io::Result<usize> {
        let fd = self.fd();
        self.rx().recv(fd)
    }
    /// Checks one received message, counts it and hands each accepted inner
    /// packet to `g` (pieces index the rx buffers).
    fn decapsulate(dp: &Datapath, m: Message<'_>, c: &mut Counters, g: &mut Coalescer);
}

/// One received message: receive buffer number `index`, what the kernel
/// said about it.
pub struct Message<'a> {
    pub buf: &'a mut [u8],
    pub index: usize,
    pub meta: RecvMeta,
}

/// Receive buffers (one message each) with their `recvmmsg` batch.
///
/// The buffers are allocated on the first receive, i.e. in the worker's own
/// thread: there glibc serves them from the thread's arena, whose fresh pages
/// stay unmapped until a packet lands in them. Allocated by the main thread
/// (where the underlays are built) the 64 KiB buffers come from the main
/// heap and were partly zeroed by hand: 4.5 MiB more resident at start-up.
pub struct RxBatch {
    batch: Batch,
    size: usize,
    pub bufs: Vec<Vec<u8>>,
    pub meta: Vec<RecvMeta>,
    /// Drops reported apart from the batch's `SO_RXQ_OVFL` count (a packet
    /// ring's), cumulative.
    pub ring_drops: u64,
}

impl RxBatch {
    pub fn new(messages: usize, size: usize) -> RxBatch {
        RxBatch {
            batch: Batch::new(messages),
            size,
            bufs: Vec::new(),
            meta: vec![RecvMeta::default(); messages],
            ring_drops: 0,
        }
    }

    /// Allocates the buffers if that has not happened yet.
    pub fn allocate(&mut self) {
        if self.bufs.is_empty() {
            self.bufs = (0..self.meta.len()).map(|_| vec![0u8; self.size]).collect();
        }
    }

    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.allocate();
        self.batch.recv(fd, &mut self.bufs, 0, &mut self.meta)
    }

    /// Most messages one receive returns (fewer: the socket is drained).
    pub fn capacity(&self) -> usize {
        self.meta.len()
    }

    /// The receive-queue (or ring) overflow count, as last reported.
    pub fn queue_drops(&self) -> u64 {
        u64::from(self.batch.rx_queue_drops()) + self.ring_drops
    }
}

/// Hands one decapsulation result to the coalescer, or counts its drop: the
/// inner packet lies at `buf[d.start..]`, and `buf` starts `base` bytes into
/// the buffer of message `index` (what [`Piece`] records).
#[inline]
pub(crate) fn deliver(
    g: &mut Coalescer,
    c: &mut Counters,
    buf: &[u8],
    index: usize,
    base: usize,
    r: Result<Decapsulated, DropReason>,
) {
    match r {
        Ok(d) => g.push(
            &buf[d.start..d.start + d.len],
            Piece {
                buf: index as u32,
                start: (base + d.start) as u32,
                len: d.len as u32,
            },
        ),
        Err(r) => c.drop(r),
    }
}
