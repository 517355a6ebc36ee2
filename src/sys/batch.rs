//! The one socket-batch core: `sendmmsg`/`recvmmsg` of underlay datagrams
//! between caller-owned buffers and a socket, raw GRE or GRE-in-UDP alike.
//!
//! Outgoing datagrams are [`Transmit`]s (a range of the caller's arena, a
//! destination, and optionally a UDP GSO segment size and an outer TOS);
//! incoming ones are described by [`RecvMeta`] (length, truncation, GRO
//! segment size, sender, outer TOS). The descriptors (`mmsghdr`, `iovec`,
//! `sockaddr_in`, control buffers) are allocated once in [`Batch::new`] and
//! only rewritten per call, so the per-packet path neither allocates nor logs.
//! Control messages go through one encoder ([`CmsgWriter`]) and one reader
//! ([`cmsgs`]); `EINTR` is retried in one place ([`retry_eintr`]).

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;
use std::ptr;

/// Control space per message: on send `UDP_SEGMENT` (u16) + `IP_TOS` (int);
/// on receive `SO_RXQ_OVFL` (u32) + `UDP_GRO` (int) + `IP_TOS` (u8): each
/// takes `CMSG_SPACE(≤ 4)` = 24 bytes on 64-bit (16-byte header, data
/// padded to 8), 72 on receive. 128 bytes leave room; with 64 the kernel
/// truncated the last one (`MSG_CTRUNC`) and the outer TOS of every GRO
/// message read as 0 once the socket had dropped anything. `u64` words keep
/// `cmsghdr` aligned.
const CTRL_WORDS: usize = 16;
const CTRL_BYTES: usize = CTRL_WORDS * mem::size_of::<u64>();

/// One message to send: `arena[start..start + len]` to `dst`. With
/// `segment > 0` and `len > segment` the kernel splits it into datagrams of
/// `segment` bytes (UDP GSO; the last may be shorter). `tos` sets the outer
/// IPv4 TOS of a UDP datagram (`IP_TOS` cmsg); raw sockets write their own
/// outer header and send `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub start: u32,
    pub len: u32,
    pub dst: SocketAddrV4,
    pub segment: u16,
    pub tos: Option<u8>,
}

impl Transmit {
    /// Datagrams this message becomes on the wire.
    pub fn datagrams(&self) -> usize {
        if self.segment > 0 {
            (self.len as usize).div_ceil(usize::from(self.segment))
        } else {
            1
        }
    }
}

/// What one received message holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes received into the buffer.
    pub len: usize,
    /// The datagram did not fit the buffer (`MSG_TRUNC`); `len` is meaningless.
    pub truncated: bool,
    /// Size of each coalesced datagram (UDP GRO); `len` when not coalesced.
    pub segment: usize,
    /// The sender (`None` if the kernel reported no IPv4 address).
    pub src: Option<Ipv4Addr>,
    /// Outer IPv4 TOS byte (`IP_RECVTOS`; 0 when not reported).
    pub tos: u8,
    /// The kernel's virtio-net header of the packet (a packet socket with
    /// `PACKET_VNET_HDR`; all zeros elsewhere): `crate::gso::RxOffload`.
    pub vnet: [u8; 10],
    /// Bytes of link-layer header the kernel's offsets in `vnet` count
    /// before the received data (which starts at the IPv4 header).
    pub link_len: u16,
}

/// Preallocated `sendmmsg`/`recvmmsg` state for batches of up to `capacity()`.
/// One per worker and direction; it may move between threads, never shared.
pub struct Batch {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_in>,
    ctrl: Vec<[u64; CTRL_WORDS]>,
    rxq_drops: u32,
}

// SAFETY: the raw pointers inside `hdrs`/`iovs` are scratch values rewritten
// before every syscall and only used during a call that holds `&mut self`;
// moving the struct to another thread cannot create shared access.
unsafe impl Send for Batch {}

impl Batch {
    pub fn new(batch: usize) -> Batch {
        // SAFETY: mmsghdr, iovec and sockaddr_in are plain C structs of
        // integers and raw pointers, for which all-zero bytes are valid.
        let (hdr, iov, addr) = unsafe {
            (
                mem::zeroed::<libc::mmsghdr>(),
                mem::zeroed::<libc::iovec>(),
                mem::zeroed::<libc::sockaddr_in>(),
            )
        };
        Batch {
            hdrs: vec![hdr; batch],
            iovs: vec![iov; batch],
            addrs: vec![addr; batch],
            ctrl: vec![[0; CTRL_WORDS]; batch],
            rxq_drops: 0,
        }
    }

    /// Most messages per call.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// The socket's cumulative receive-queue drop count (`SO_RXQ_OVFL`), as
    /// the kernel stamped it on the newest message received (0 until then).
    pub fn rx_queue_drops(&self) -> u32 {
        self.rxq_drops
    }

    /// `sendmmsg(MSG_DONTWAIT)` of the leading items (at most `capacity()`)
    /// whose ranges lie inside `arena`. Returns how many were sent (`Ok(0)`
    /// only for empty `items`); if the very first fails, its error
    /// (`InvalidInput` for a range outside `arena`). The caller counts a
    /// failed item, skips it and calls again with the rest.
    pub fn send(&mut self, fd: RawFd, arena: &[u8], items: &[Transmit]) -> io::Result<usize> {
        if items.is_empty() {
            return Ok(0);
        }
        let max = self
            .hdrs
            .len()
            .min(items.len())
            .min(libc::c_uint::MAX as usize);
        let base = arena.as_ptr();
        let mut n = 0;
        for (i, item) in items[..max].iter().enumerate() {
            let (start, len) = (item.start as usize, item.len as usize);
            if start.checked_add(len).map_or(true, |end| end > arena.len()) {
                break;
            }
            // The kernel only reads through iov_base for a send.
            self.iovs[i].iov_base = base.wrapping_add(start).cast_mut().cast();
            self.iovs[i].iov_len = len;
            self.addrs[i] = sockaddr_v4(item.dst);
            n += 1;
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "batch send: first item lies outside the arena (or capacity is 0)",
            ));
        }
        self.point_headers(n);
        for (h, item) in self.hdrs[..n].iter_mut().zip(items) {
            let mut w = CmsgWriter::new(&mut h.msg_hdr);
            if item.segment > 0 && item.len > u32::from(item.segment) {
                w.push(
                    libc::SOL_UDP,
                    libc::UDP_SEGMENT,
                    &item.segment.to_ne_bytes(),
                );
            }
            if let Some(tos) = item.tos {
                w.push(
                    libc::IPPROTO_IP,
                    libc::IP_TOS,
                    &libc::c_int::from(tos).to_ne_bytes(),
                );
            }
            w.finish();
        }
        retry_eintr(|| {
            // SAFETY: hdrs[..n] are initialised above: each points to a live
            // sockaddr_in in `self.addrs`, one iovec whose range was checked
            // to lie inside `arena` (borrowed for this call, only read by the
            // kernel) and its own control buffer; n <= hdrs.len() fits c_uint.
            unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                ) as isize
            }
        })
    }

    /// Sends one message; `Err(WouldBlock)` if the kernel took none.
    pub fn send_one(&mut self, fd: RawFd, arena: &[u8], t: Transmit) -> io::Result<()> {
        match self.send(fd, arena, &[t])? {
            1 => Ok(()),
            _ => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Points message header `i < n` at iovec `i`, address `i` and control
    /// buffer `i` (full size), with no flags.
    fn point_headers(&mut self, n: usize) {
        let (iovp, addrp, ctrlp) = (
            self.iovs.as_mut_ptr(),
            self.addrs.as_mut_ptr(),
            self.ctrl.as_mut_ptr(),
        );
        for (i, h) in self.hdrs[..n].iter_mut().enumerate() {
            h.msg_len = 0;
            h.msg_hdr.msg_name = addrp.wrapping_add(i).cast();
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iovp.wrapping_add(i);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = ctrlp.wrapping_add(i).cast();
            h.msg_hdr.msg_controllen = CTRL_BYTES as _;
            h.msg_hdr.msg_flags = 0;
        }
    }

    /// `recvmmsg(MSG_DONTWAIT)`: message `i` goes to `bufs[i][offset..]`,
    /// its facts to `meta[i]`. Returns `Ok(n > 0)`, `Err(WouldBlock)` when
    /// nothing is queued, `Err(InvalidInput)` when no buffer has room.
    pub fn recv<B: AsMut<[u8]>>(
        &mut self,
        fd: RawFd,
        bufs: &mut [B],
        offset: usize,
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        let n = self
            .hdrs
            .len()
            .min(bufs.len())
            .min(meta.len())
            .min(libc::c_uint::MAX as usize);
        if n == 0 {
            return Err(invalid("batch recv: no buffers"));
        }
        for (iov, b) in self.iovs[..n].iter_mut().zip(bufs.iter_mut()) {
            let b = b.as_mut();
            if offset >= b.len() {
                return Err(invalid("batch recv: offset past a buffer"));
            }
            let tail = &mut b[offset..];
            iov.iov_base = tail.as_mut_ptr().cast();
            iov.iov_len = tail.len();
        }
        self.point_headers(n);
        let got = retry_eintr(|| {
            // SAFETY: hdrs[..n] point at iovecs covering the tails of distinct
            // buffers of `bufs` (borrowed mutably for this call) and at
            // sockaddr_in and control buffers owned by `self`.
            unsafe {
                libc::recvmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    ptr::null_mut(),
                ) as isize
            }
        })?;
        if got == 0 {
            // Not expected for datagram sockets; keep the Ok(n > 0) contract.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        for (i, m) in meta[..got].iter_mut().enumerate() {
            let h = &self.hdrs[i];
            let len = h.msg_len as usize;
            *m = RecvMeta {
                len,
                truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                segment: len,
                // A packet socket reports a sockaddr_ll: no IPv4 sender.
                src: (h.msg_hdr.msg_namelen as usize >= mem::size_of::<libc::sockaddr_in>()
                    && self.addrs[i].sin_family == libc::AF_INET as libc::sa_family_t)
                    .then(|| Ipv4Addr::from(u32::from_be(self.addrs[i].sin_addr.s_addr))),
                tos: 0,
                ..RecvMeta::default()
            };
            for (level, kind, data) in cmsgs(&h.msg_hdr) {
                match (level, kind) {
                    (libc::SOL_UDP, libc::UDP_GRO) => {
                        if let Some(seg) = read_u32(data).filter(|&s| s > 0 && s < 1 << 16) {
                            m.segment = seg as usize;
                        }
                    }
                    (libc::IPPROTO_IP, libc::IP_TOS) => m.tos = data.first().copied().unwrap_or(0),
                    // The kernel stamps each message with the socket's drop
                    // counter at enqueue time; the newest one is the latest.
                    (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => {
                        if let Some(d) = read_u32(data) {
                            self.rxq_drops = d;
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(got)
    }
}

fn read_u32(data: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(..4)?.try_into().ok()?))
}

/// Appends control messages to a `msghdr` whose `msg_control` points to a
/// `CTRL_BYTES` buffer and whose `msg_controllen` is that size; `finish`
/// sets `msg_controllen` to what was written (0: no control message).
struct CmsgWriter<'a> {
    hdr: &'a mut libc::msghdr,
    cur: *mut libc::cmsghdr,
    used: usize,
}

impl<'a> CmsgWriter<'a> {
    fn new(hdr: &'a mut libc::msghdr) -> CmsgWriter<'a> {
        // SAFETY: CMSG_FIRSTHDR only reads msg_control/msg_controllen and
        // returns null when the buffer cannot hold a header.
        let cur = unsafe { libc::CMSG_FIRSTHDR(hdr) };
        CmsgWriter { hdr, cur, used: 0 }
    }

    /// Writes one cmsg; silently skipped if it would not fit (a programming
    /// error caught by the tests, never a write out of bounds).
    fn push(&mut self, level: libc::c_int, kind: libc::c_int, data: &[u8]) {
        // SAFETY: CMSG_SPACE is arithmetic on the length.
        let space = unsafe { libc::CMSG_SPACE(data.len() as u32) } as usize;
        if self.cur.is_null() || self.used + space > controllen(self.hdr) {
            return;
        }
        // SAFETY: `cur` is a cmsghdr inside the control buffer with `space`
        // bytes of room left (checked above); CMSG_DATA points inside it and
        // `data.len()` bytes fit there (CMSG_LEN(len) <= CMSG_SPACE(len)).
        unsafe {
            (*self.cur).cmsg_level = level;
            (*self.cur).cmsg_type = kind;
            (*self.cur).cmsg_len = libc::CMSG_LEN(data.len() as u32) as _;
            ptr::copy_nonoverlapping(data.as_ptr(), libc::CMSG_DATA(self.cur), data.len());
        }
        self.used += space;
        // SAFETY: CMSG_NXTHDR checks the next header against msg_controllen
        // (the whole buffer) and returns null past its end; it reads the
        // cmsg_len just written.
        self.cur = unsafe { libc::CMSG_NXTHDR(self.hdr, self.cur) };
    }

    fn finish(self) {
        self.hdr.msg_controllen = self.used as _;
        if self.used == 0 {
            self.hdr.msg_control = ptr::null_mut();
        }
    }
}

/// The control messages the kernel wrote into a received `msghdr`:
/// `(level, type, data)`; each data slice lies within its cmsg.
fn cmsgs(hdr: &libc::msghdr) -> impl Iterator<Item = (libc::c_int, libc::c_int, &[u8])> {
    // SAFETY: CMSG_FIRSTHDR only reads msg_control/msg_controllen, which the
    // kernel just set within our control buffer.
    let mut cur = unsafe { libc::CMSG_FIRSTHDR(hdr) };
    let end = (hdr.msg_control as usize).saturating_add(controllen(hdr));
    std::iter::from_fn(move || {
        if cur.is_null() {
            return None;
        }
        // SAFETY: `cur` is non-null, so CMSG_FIRSTHDR/NXTHDR placed a whole
        // cmsghdr inside the control buffer; its data is bounded below by
        // cmsg_len and by the end of what the kernel wrote.
        unsafe {
            let c = &*cur;
            let data = libc::CMSG_DATA(cur);
            let header = data as usize - cur as usize;
            let len = (c.cmsg_len as usize)
                .saturating_sub(header)
                .min(end.saturating_sub(data as usize));
            let item = (
                c.cmsg_level,
                c.cmsg_type,
                std::slice::from_raw_parts(data, len),
            );
            cur = libc::CMSG_NXTHDR(hdr, cur);
            Some(item)
        }
    })
}

/// `msg_controllen` as usize (a `size_t` with glibc, a `socklen_t` with musl).
#[allow(clippy::unnecessary_cast)]
fn controllen(hdr: &libc::msghdr) -> usize {
    hdr.msg_controllen as usize
}

/// Runs a syscall returning `-1`/errno until it is not interrupted.
pub fn retry_eintr(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let r = call();
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

pub fn sockaddr_v4(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

/// `setsockopt(fd, level, name, &value, sizeof(int))`.
pub fn set_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a pointer to a live c_int with its exact size; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One nonblocking `recv` into `buf`, retried on EINTR (for sockets whose
/// packets are only counted, never forwarded).
pub fn recv_one(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    retry_eintr(|| {
        // SAFETY: `buf` is a live, writable buffer of the given length.
        unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) }
    })
}

/// One `read` from a packet device (the TUN), retried on EINTR.
pub fn read_packet(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    retry_eintr(|| {
        // SAFETY: `buf` is a live, writable buffer of the given length.
        unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) }
    })
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

#[cfg(test)]
mod tests;
