//! Raw GRE (IP protocol 47) as an [`Underlay`]: whole outer IPv4 packets in
//! both directions. Each encapsulated segment is one message (raw sockets
//! have no GSO); received buffers start at the outer IPv4 header, one
//! datagram each, checked by `Datapath::decapsulate`.

use super::egress::{Segment, MAX_SEGMENTS};
use super::underlay::Underlay;
use crate::counters::Counters;
use crate::datapath::{Datapath, DropReason};
use crate::gro::{Coalescer, Piece};
use crate::sys::batch::{Batch, RecvMeta, Transmit};
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
    items: Vec<Transmit>,
    tx: Batch,
    rx: Batch,
    bufs: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
}

impl RawGre {
    pub fn new(sock: RawGreSocket) -> RawGre {
        RawGre {
            sock,
            items: Vec::with_capacity(TX_MESSAGES),
            tx: Batch::new(TX_MESSAGES),
            rx: Batch::new(RX_BATCH),
            bufs: (0..RX_BATCH).map(|_| vec![0u8; RX_CAP]).collect(),
            meta: vec![RecvMeta::default(); RX_BATCH],
        }
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
        self.items.len() + MAX_SEGMENTS <= TX_MESSAGES
    }

    fn push(&mut self, _arena: &[u8], s: Segment) {
        self.items.push(transmit(s.start, s.len, s.peer));
    }

    fn queued(&self) -> &[Transmit] {
        &self.items
    }

    fn clear(&mut self) {
        self.items.clear();
    }

    fn send(&mut self, arena: &[u8], from: usize) -> io::Result<usize> {
        self.tx.send(self.sock.fd(), arena, &self.items[from..])
    }

    fn send_one(&mut self, buf: &[u8], start: usize, len: usize, peer: Ipv4Addr) -> io::Result<()> {
        match self
            .tx
            .send(self.sock.fd(), buf, &[transmit(start, len, peer)])?
        {
            1 => Ok(()),
            _ => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn recv(&mut self) -> io::Result<usize> {
        self.rx
            .recv(self.sock.fd(), &mut self.bufs, 0, &mut self.meta)
    }

    fn rx_capacity(&self) -> usize {
        RX_BATCH
    }

    fn rx_queue_drops(&self) -> u32 {
        self.rx.rx_queue_drops()
    }

    fn decapsulate(&mut self, n: usize, dp: &Datapath, c: &mut Counters, g: &mut Coalescer) {
        for i in 0..n.min(RX_BATCH) {
            decapsulate_datagram(dp, &mut self.bufs[i], i, self.meta[i], c, g);
        }
    }

    fn rx_bufs(&self) -> &[Vec<u8>] {
        &self.bufs
    }
}

/// Checks one received raw GRE datagram (`buf`, receive buffer number `i`)
/// and hands its inner packet to `g`.
pub fn decapsulate_datagram(
    dp: &Datapath,
    buf: &mut [u8],
    i: usize,
    m: RecvMeta,
    c: &mut Counters,
    g: &mut Coalescer,
) {
    c.rx_packets += 1;
    if m.truncated {
        c.drop(DropReason::Truncated);
        return;
    }
    c.rx_bytes += m.len as u64;
    match dp.decapsulate(buf, m.len) {
        Ok(d) => g.push(
            &buf[d.start..d.start + d.len],
            Piece {
                buf: i as u32,
                start: d.start as u32,
                len: d.len as u32,
            },
        ),
        Err(r) => c.drop(r),
    }
}
