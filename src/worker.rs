//! One forwarding worker: a pinned thread with its own mio poll loop, its own
//! TUN queue, its own raw GRE socket (receiving only its shard) and its own
//! buffers. The datapath decisions come from [`Datapath`]; this file only moves
//! bytes and counts.
//!
//! Egress: TUN queue → `recv` into slot `i` at `HEADROOM` → `encapsulate` writes
//! outer IPv4 + GRE in front → batch of up to `BATCH` → `sendmmsg` to peer VMs.
//! Ingress: raw socket → `recvmmsg` of up to `BATCH` (outer header included) →
//! `decapsulate` → inner packet written to the TUN queue.
//! Registrations are edge-triggered, so each side is drained until `WouldBlock`.

use crate::counters::{Counters, IoError, SharedCounters};
use crate::datapath::{Datapath, DropReason, HEADROOM};
use crate::sys::mmsg::{Mmsg, SendItem};
use crate::sys::raw::RawGreSocket;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Packets per batch in each direction.
pub const BATCH: usize = 64;
/// One slot holds the largest IPv4 packet plus headroom.
pub const SLOT: usize = HEADROOM + 65536;

const TUN: Token = Token(0);
const SOCK: Token = Token(1);
pub const WAKE: Token = Token(2);

/// Everything a worker owns.
pub struct Worker {
    pub id: usize,
    pub tun_name: String,
    pub tun: tun_rs::SyncDevice,
    pub sock: RawGreSocket,
    pub dp: Datapath,
    pub poll: Poll,
    pub shared: Arc<Vec<SharedCounters>>,
    pub stop: Arc<AtomicBool>,
    pub cpu: Option<core_affinity::CoreId>,
    /// Packets discarded when the socket was opened (queued before the shard filter).
    pub flushed: u64,
}

/// Per-worker buffers, allocated once. Pages are only touched when used, so
/// the resident size stays proportional to the traffic, not to `SLOT`.
struct Buffers {
    tx_arena: Vec<u8>,
    tx_items: Vec<SendItem>,
    tx_mmsg: Mmsg,
    rx_arena: Vec<u8>,
    rx_lens: Vec<usize>,
    rx_mmsg: Mmsg,
}

impl Buffers {
    fn new() -> Buffers {
        Buffers {
            tx_arena: vec![0; BATCH * SLOT],
            tx_items: Vec::with_capacity(BATCH),
            tx_mmsg: Mmsg::new(BATCH),
            rx_arena: vec![0; BATCH * SLOT],
            rx_lens: vec![0; BATCH],
            rx_mmsg: Mmsg::new(BATCH),
        }
    }
}

impl Worker {
    /// Runs until `stop` is set (Ok) or the TUN fails (Err with a log-ready message).
    pub fn run(mut self) -> Result<(), String> {
        if let Some(cpu) = self.cpu {
            if !core_affinity::set_for_current(cpu) {
                log::warn!("worker {}: could not pin to CPU {}", self.id, cpu.id);
            }
        }
        let tun_fd = self.tun.as_raw_fd();
        let sock_fd = self.sock.fd();
        let reg = self.poll.registry();
        reg.register(&mut SourceFd(&tun_fd), TUN, Interest::READABLE)
            .map_err(|e| format!("worker {}: register TUN: {e}", self.id))?;
        reg.register(&mut SourceFd(&sock_fd), SOCK, Interest::READABLE)
            .map_err(|e| format!("worker {}: register socket: {e}", self.id))?;

        let mut b = Buffers::new();
        let mut c = Counters::default();
        c.errors[IoError::StartupFlush as usize] = self.flushed;
        let mut events = Events::with_capacity(16);
        // Drain anything that arrived before registration.
        let mut tun_pending = true;
        let mut sock_pending = true;
        loop {
            while tun_pending || sock_pending {
                if tun_pending {
                    tun_pending = !self.egress_batch(&mut b, &mut c)?;
                }
                if sock_pending {
                    sock_pending = !self.ingress_batch(&mut b, &mut c);
                }
            }
            self.shared[self.id].publish(&c);
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            match self.poll.poll(&mut events, Some(Duration::from_secs(1))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("worker {}: poll: {e}", self.id)),
            }
            for ev in events.iter() {
                match ev.token() {
                    TUN => tun_pending = true,
                    SOCK => sock_pending = true,
                    _ => {}
                }
            }
        }
    }

    /// Reads up to BATCH packets from the TUN, encapsulates and sends them.
    /// Returns Ok(true) once the TUN queue is drained.
    fn egress_batch(&mut self, b: &mut Buffers, c: &mut Counters) -> Result<bool, String> {
        b.tx_items.clear();
        let mut drained = false;
        let mut slot = 0;
        while slot < BATCH {
            let buf = &mut b.tx_arena[slot * SLOT..(slot + 1) * SLOT];
            match self.tun.recv(&mut buf[HEADROOM..]) {
                Ok(len) => {
                    c.tun_rx_packets += 1;
                    c.tun_rx_bytes += len as u64;
                    match self.dp.encapsulate(buf, HEADROOM, len) {
                        Ok(e) => {
                            b.tx_items.push(SendItem {
                                slot: slot as u32,
                                start: e.start as u32,
                                len: e.len as u32,
                                dst: e.peer,
                            });
                            slot += 1;
                        }
                        Err(r) => c.drop(r),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(format!(
                        "TUN {} queue {}: read failed: {e} (was the device deleted?)",
                        self.tun_name, self.id
                    ))
                }
            }
        }
        self.flush(b, c);
        Ok(drained)
    }

    fn flush(&mut self, b: &mut Buffers, c: &mut Counters) {
        let fd = self.sock.fd();
        let mut off = 0;
        while off < b.tx_items.len() {
            match b.tx_mmsg.send(fd, &b.tx_arena, SLOT, &b.tx_items[off..]) {
                Ok(n) if n > 0 => {
                    for it in &b.tx_items[off..off + n] {
                        c.tx_packets += 1;
                        c.tx_bytes += u64::from(it.len);
                    }
                    off += n;
                }
                Ok(_) => {
                    c.error(IoError::SendOther);
                    off += 1;
                }
                Err(e) => {
                    c.error(IoError::from_send_errno(e.raw_os_error().unwrap_or(0)));
                    off += 1;
                }
            }
        }
    }

    /// Receives up to BATCH GRE packets and delivers them. Returns true once drained.
    fn ingress_batch(&mut self, b: &mut Buffers, c: &mut Counters) -> bool {
        let n = match b
            .rx_mmsg
            .recv(self.sock.fd(), &mut b.rx_arena, SLOT, 0, &mut b.rx_lens)
        {
            Ok(n) => {
                c.errors[IoError::RxOverflow as usize] = u64::from(b.rx_mmsg.rx_queue_drops());
                n
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(_) => {
                c.error(IoError::Recv);
                return true;
            }
        };
        for i in 0..n {
            c.rx_packets += 1;
            let len = b.rx_lens[i];
            if len == usize::MAX {
                c.drop(DropReason::Truncated);
                continue;
            }
            c.rx_bytes += len as u64;
            let buf = &mut b.rx_arena[i * SLOT..(i + 1) * SLOT];
            match self.dp.decapsulate(buf, len) {
                Ok(d) => match self.tun.send(&buf[d.start..d.start + d.len]) {
                    Ok(_) => {
                        c.tun_tx_packets += 1;
                        c.tun_tx_bytes += d.len as u64;
                    }
                    Err(_) => c.error(IoError::TunWrite),
                },
                Err(r) => c.drop(r),
            }
        }
        n < BATCH && n < b.rx_mmsg.capacity()
    }
}
