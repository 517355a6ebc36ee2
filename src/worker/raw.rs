//! Raw GRE (IP protocol 47) as an [`Underlay`]: whole outer IPv4 packets in
//! both directions. Each encapsulated segment is one message (raw sockets
//! have no GSO); received buffers start at the outer IPv4 header, one
//! datagram each, checked by `Datapath::decapsulate`.

use super::egress::{Segment, MAX_SEGMENTS};
use super::underlay::{deliver, Message, RxBatch, Underlay};
use crate::counters::Counters;
use crate::datapath::{Datapath, DropReason};
use crate::gro::Coalescer;
use crate::sys::batch::{Batch, Transmit};
use crate::sys::raw::RawGreSocket;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;

/// Messages per `sendmmsg`.
pub const TX_MESSAGES: usize = 256;
/// Datagrams per `recvmmsg`.
pub const RX_BATCH: usize = 64;
/// Receive buffer: the largest IPv4 datagram. Inner packets are written to the
/// TUN from where they were received, so no room around them is needed.
pub const RX_CAP: usize = 65536;

pub struct RawGre {
    sock: RawGreSocket,
    tx: RawTx,
    rx: RxBatch,
}

impl RawGre {
    pub fn new(sock: RawGreSocket) -> RawGre {
        RawGre {
            sock,
            tx: RawTx::new(),
            rx: RxBatch::new(RX_BATCH, RX_CAP),
        }
    }
}

/// The send side of a raw IPv4 socket with `IP_HDRINCL` (both raw-GRE
/// underlays): one message per encapsulated segment, one `sendmmsg` per batch.
pub(super) struct RawTx {
    items: Vec<Transmit>,
    batch: Batch,
}

impl RawTx {
    pub(super) fn new() -> RawTx {
        RawTx {
            items: Vec::with_capacity(TX_MESSAGES),
            batch: Batch::new(TX_MESSAGES),
        }
    }

    pub(super) fn has_room(&self) -> bool {
        self.items.len() + MAX_SEGMENTS <= TX_MESSAGES
    }

    pub(super) fn push(&mut self, s: Segment) {
        self.items.push(transmit(s.start, s.len, s.peer));
    }

    pub(super) fn queued(&self) -> &[Transmit] {
        &self.items
    }

    pub(super) fn clear(&mut self) {
        self.items.clear();
    }

    pub(super) fn send(&mut self, fd: RawFd, arena: &[u8], from: usize) -> io::Result<usize> {
        self.batch.send(fd, arena, &self.items[from..])
    }

    pub(super) fn send_one(
        &mut self,
        fd: RawFd,
        buf: &[u8],
        start: usize,
        len: usize,
        peer: Ipv4Addr,
    ) -> io::Result<()> {
        self.batch.send_one(fd, buf, transmit(start, len, peer))
    }
}

fn transmit(start: usize, len: usize, peer: Ipv4Addr) -> Transmit {
    Transmit {
        start: start as u32,
        len: len as u32,
        dst: SocketAddrV4::new(peer, 0),
        segment: 0,
        tos: None,
    }
}

impl Underlay for RawGre {
    fn fd(&self) -> RawFd {
        self.sock.fd()
    }

    fn has_room(&self) -> bool {
        self.tx.has_room()
    }

    fn push(&mut self, _arena: &[u8], s: Segment) {
        self.tx.push(s);
    }

    fn queued(&self) -> &[Transmit] {
        self.tx.queued()
    }

    fn clear(&mut self) {
        self.tx.clear();
    }

    fn send(&mut self, arena: &[u8], from: usize) -> io::Result<usize> {
        self.tx.send(self.sock.fd(), arena, from)
    }

    fn send_one(&mut self, buf: &[u8], start: usize, len: usize, peer: Ipv4Addr) -> io::Result<()> {
        self.tx.send_one(self.sock.fd(), buf, start, len, peer)
    }

    fn rx(&mut self) -> &mut RxBatch {
        &mut self.rx
    }

    /// One datagram per message, outer IPv4 header first.
    fn decapsulate(dp: &Datapath, m: Message<'_>, c: &mut Counters, g: &mut Coalescer) {
        c.rx_packets += 1;
        if m.meta.truncated {
            c.drop(DropReason::Truncated);
            return;
        }
        c.rx_bytes += m.meta.len as u64;
        let r = dp.decapsulate(m.buf, m.meta.len);
        deliver(g, c, m.buf, m.index, 0, r);
    }
}
