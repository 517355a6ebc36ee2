//! Raw GRE received through a packet fanout group, as an [`Underlay`].
//!
//! Each worker reads its own `AF_PACKET` socket of one fanout group on the
//! underlay device (the kernel hands each packet to exactly one member, by
//! flow, and copies it into the socket's memory-mapped ring), and sends through its own send-only raw socket (`IPPROTO_RAW`), so
//! no worker's socket costs the kernel a clone of packets another worker
//! handles. Worker 0 also owns the one raw GRE socket (its stray socket: GRE
//! for us that arrived on another interface; ICMP errors about what we sent).
//! Buffers start at the outer IPv4 header, as with [`super::raw::RawGre`];
//! what the packet socket hands up has not been through the IPv4 layer, so
//! its outer header checksum is checked here (`Datapath::decapsulate_link`).

use super::egress::Segment;
use super::raw::{RawTx, RX_BATCH, RX_CAP};
use super::underlay::{deliver, Message, RxBatch, Underlay};
use crate::counters::Counters;
use crate::datapath::{Datapath, DropReason};
use crate::gro::{Coalescer, Piece};
use crate::gso::RxOffload;
use crate::sys::batch::Transmit;
use crate::sys::packet::PacketSocket;
use crate::sys::raw::{RawGreSocket, RawSender};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;

pub struct FanoutGre {
    rx_sock: PacketSocket,
    sender: RawSender,
    /// Worker 0: the raw GRE socket beside the group.
    stray: Option<RawGreSocket>,
    /// `[sender fd]`, and the stray socket's errors are drained via `stray_fd`.
    error_fds: [RawFd; 1],
    tx: RawTx,
    rx: RxBatch,
}

impl FanoutGre {
    pub fn new(rx_sock: PacketSocket, sender: RawSender, stray: Option<RawGreSocket>) -> FanoutGre {
        let error_fds = [sender.fd()];
        FanoutGre {
            rx_sock,
            sender,
            stray,
            error_fds,
            tx: RawTx::new(),
            rx: RxBatch::new(RX_BATCH, RX_CAP),
        }
    }
}

impl Underlay for FanoutGre {
    const RX_IS_IP: bool = false;

    fn fd(&self) -> RawFd {
        self.rx_sock.fd()
    }

    fn error_fds(&self) -> &[RawFd] {
        &self.error_fds
    }

    fn stray_fd(&self) -> Option<RawFd> {
        self.stray.as_ref().map(|s| s.fd())
    }

    fn clear_rx_error(&mut self) {
        self.rx_sock.clear_error();
    }

    fn recv_stray(&mut self) -> io::Result<usize> {
        match &self.stray {
            Some(s) => self.rx.recv(s.fd()),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
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
        self.tx.send(self.sender.fd(), arena, from)
    }

    fn send_one(&mut self, buf: &[u8], start: usize, len: usize, peer: Ipv4Addr) -> io::Result<()> {
        self.tx.send_one(self.sender.fd(), buf, start, len, peer)
    }

    fn rx(&mut self) -> &mut RxBatch {
        &mut self.rx
    }

    /// From the packet socket's ring (no system call while packets wait).
    fn recv(&mut self) -> io::Result<usize> {
        self.rx.allocate();
        let mut losing = false;
        let r = self
            .rx_sock
            .recv(&mut self.rx.bufs, &mut self.rx.meta, &mut losing);
        if losing {
            if let Ok(d) = self.rx_sock.drops() {
                self.rx.ring_drops += d;
            }
        }
        r
    }

    /// One datagram per message, outer IPv4 header first, not yet checked
    /// by the IPv4 layer (stray packets were; checking them again is cheap).
    fn decapsulate(dp: &Datapath, m: Message<'_>, c: &mut Counters, g: &mut Coalescer) {
        c.rx_packets += 1;
        if m.meta.truncated {
            c.drop(DropReason::Truncated);
            return;
        }
        // The link layer's length may include Ethernet padding; count the
        // outer IPv4 total length where there is one.
        let total = m.buf.get(2..4).map_or(usize::MAX, |b| {
            usize::from(u16::from_be_bytes([b[0], b[1]]))
        });
        c.rx_bytes += m.meta.len.min(total) as u64;
        let offload = RxOffload::parse(&m.meta.vnet);
        if offload.is_plain() {
            let r = dp.decapsulate_link(m.buf, m.meta.len);
            deliver(g, c, m.buf, m.index, 0, r);
            return;
        }
        // Merged by GRE GRO, or a partial checksum: the kernel's metadata
        // says so; the same checks, then one TUN write with the inner
        // packet's virtio-net header (crate::gso).
        let d = if offload.is_gso() {
            dp.decapsulate_link_merged(m.buf, m.meta.len)
        } else {
            dp.decapsulate_link(m.buf, m.meta.len)
        };
        let d = match d {
            Ok(d) => d,
            Err(r) => return c.drop(r),
        };
        let stripped = usize::from(m.meta.link_len) + d.start;
        let piece = Piece {
            buf: m.index as u32,
            start: d.start as u32,
            len: d.len as u32,
        };
        match offload.inner_header(stripped, &m.buf[d.start..d.start + d.len]) {
            Some(o) if g.push_offloaded(piece, &o) => {}
            _ => c.drop(DropReason::OffloadMalformed),
        }
    }
}
