//! Batched datagram I/O: `recvmmsg`/`sendmmsg` over a caller-owned packet arena.
//!
//! Every underlay GRE packet the forwarder receives or sends passes through
//! here as a range of one fixed-size slot of the caller's arena
//! (slot `i` = `arena[i * slot_size..(i + 1) * slot_size]`). The syscall
//! descriptors (`mmsghdr`, `iovec`, `sockaddr_in`, control buffers) are
//! allocated once in [`Mmsg::new`]; [`Mmsg::recv`] and [`Mmsg::send`] only
//! rewrite them, so the per-packet path neither allocates nor logs.

use std::io;
use std::mem;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;
use std::ptr;

/// Control-message space per received datagram: room for one `SO_RXQ_OVFL`
/// cmsg (`CMSG_SPACE(4)` = 24 bytes on 64-bit) with slack. `u64` keeps it
/// aligned for `cmsghdr`.
const CTRL_WORDS: usize = 4;
const CTRL_BYTES: usize = CTRL_WORDS * mem::size_of::<u64>();

/// One datagram to send: `arena[slot * slot_size + start..][..len]` to `dst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendItem {
    pub slot: u32,
    pub start: u32,
    pub len: u32,
    pub dst: Ipv4Addr,
}

/// Preallocated `recvmmsg`/`sendmmsg` state for batches of up to `capacity()`.
///
/// One `Mmsg` per worker thread; it may be moved between threads but is not
/// shared.
pub struct Mmsg {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_in>,
    ctrl: Vec<[u64; CTRL_WORDS]>,
    rxq_drops: u32,
}

// SAFETY: the raw pointers inside `hdrs`/`iovs` are scratch values that are
// rewritten before every syscall and never dereferenced by Rust code outside
// a `recv`/`send` call, which holds `&mut self`. Moving the struct to another
// thread therefore cannot create shared access to anything.
unsafe impl Send for Mmsg {}

impl Mmsg {
    /// Preallocates descriptors for batches of up to `batch` datagrams.
    pub fn new(batch: usize) -> Self {
        // SAFETY: mmsghdr, iovec and sockaddr_in are plain C structs of
        // integers and raw pointers, for which all-zero bytes are valid.
        let (hdr, iov, addr) = unsafe {
            (
                mem::zeroed::<libc::mmsghdr>(),
                mem::zeroed::<libc::iovec>(),
                mem::zeroed::<libc::sockaddr_in>(),
            )
        };
        Self {
            hdrs: vec![hdr; batch],
            iovs: vec![iov; batch],
            addrs: vec![addr; batch],
            ctrl: vec![[0; CTRL_WORDS]; batch],
            rxq_drops: 0,
        }
    }

    /// Maximum number of datagrams per `recv`/`send` call.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Cumulative receive-queue overflow count of the socket, as last
    /// reported by the kernel through `SO_RXQ_OVFL` on a received datagram
    /// (0 until the kernel reports one). Meaningful when this `Mmsg` receives
    /// from a single socket with `SO_RXQ_OVFL` enabled (see `RawGreSocket`);
    /// the value is the drop count at the time the newest datagram was queued.
    pub fn rx_queue_drops(&self) -> u32 {
        self.rxq_drops
    }

    /// `recvmmsg(fd, MSG_DONTWAIT)` of up to
    /// `min(capacity, lens.len(), arena.len() / slot_size)` datagrams.
    ///
    /// Datagram `i` is written to `arena[i * slot_size + offset..(i + 1) * slot_size]`
    /// and its length stored in `lens[i]`; a datagram truncated by the slot
    /// (`MSG_TRUNC`) is reported as `usize::MAX`. Returns `Ok(n)` with `n > 0`,
    /// `Err(WouldBlock)` when nothing is queued, `Err(InvalidInput)` on bad
    /// geometry (`slot_size == 0`, `offset >= slot_size`, no room for one
    /// datagram). `EINTR` is retried.
    pub fn recv(
        &mut self,
        fd: RawFd,
        arena: &mut [u8],
        slot_size: usize,
        offset: usize,
        lens: &mut [usize],
    ) -> io::Result<usize> {
        if slot_size == 0 || offset >= slot_size {
            return Err(invalid("mmsg recv: need 0 <= offset < slot_size"));
        }
        let n = self
            .hdrs
            .len()
            .min(lens.len())
            .min(arena.len() / slot_size)
            .min(libc::c_uint::MAX as usize);
        if n == 0 {
            return Err(invalid("mmsg recv: no room for a datagram"));
        }
        let base = arena.as_mut_ptr();
        for (i, iov) in self.iovs[..n].iter_mut().enumerate() {
            // In bounds: i < n <= arena.len() / slot_size, so
            // i * slot_size + offset < (i + 1) * slot_size <= arena.len().
            iov.iov_base = base.wrapping_add(i * slot_size + offset).cast();
            iov.iov_len = slot_size - offset;
        }
        // SAFETY: the iovecs point into `arena`, borrowed mutably for this call.
        unsafe { self.recv_prepared(fd, n, lens) }
    }

    /// Like [`Mmsg::recv`], but datagram `i` goes to `bufs[i][offset..]`
    /// (separate buffers, e.g. ones that GRO later grows in place).
    pub fn recv_bufs<B: AsMut<[u8]>>(
        &mut self,
        fd: RawFd,
        bufs: &mut [B],
        offset: usize,
        lens: &mut [usize],
    ) -> io::Result<usize> {
        let n = self
            .hdrs
            .len()
            .min(lens.len())
            .min(bufs.len())
            .min(libc::c_uint::MAX as usize);
        if n == 0 {
            return Err(invalid("mmsg recv: no room for a datagram"));
        }
        for (iov, b) in self.iovs[..n].iter_mut().zip(bufs.iter_mut()) {
            let b = b.as_mut();
            if offset >= b.len() {
                return Err(invalid("mmsg recv: offset past a buffer"));
            }
            let tail = &mut b[offset..];
            iov.iov_base = tail.as_mut_ptr().cast();
            iov.iov_len = tail.len();
        }
        // SAFETY: each iovec covers the tail of one of `bufs`, borrowed mutably
        // for this call; the buffers are distinct objects, so ranges are disjoint.
        unsafe { self.recv_prepared(fd, n, lens) }
    }

    /// Runs recvmmsg over `iovs[..n]`, which the caller pointed at writable
    /// memory that stays borrowed for the duration of the call.
    unsafe fn recv_prepared(
        &mut self,
        fd: RawFd,
        n: usize,
        lens: &mut [usize],
    ) -> io::Result<usize> {
        let iovp = self.iovs.as_mut_ptr();
        let ctrlp = self.ctrl.as_mut_ptr();
        for (i, h) in self.hdrs[..n].iter_mut().enumerate() {
            h.msg_len = 0;
            h.msg_hdr.msg_name = ptr::null_mut();
            h.msg_hdr.msg_namelen = 0;
            h.msg_hdr.msg_iov = iovp.wrapping_add(i);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = ctrlp.wrapping_add(i).cast();
            h.msg_hdr.msg_controllen = CTRL_BYTES as _;
            h.msg_hdr.msg_flags = 0;
        }
        let got = loop {
            // SAFETY: hdrs[..n] are initialised above; each points to one
            // iovec covering a disjoint, in-bounds range of `arena` (borrowed
            // mutably for this call) and to a CTRL_BYTES control buffer owned
            // by `self`. n <= hdrs.len() and fits c_uint.
            let r = unsafe {
                libc::recvmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    ptr::null_mut(),
                )
            };
            if r >= 0 {
                break r as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        if got == 0 {
            // Not expected for datagram sockets; keep the Ok(n > 0) contract.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        for (len, h) in lens.iter_mut().zip(&self.hdrs[..got]) {
            *len = if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                usize::MAX
            } else {
                h.msg_len as usize
            };
        }
        // The kernel stamps each datagram with the socket's drop counter at
        // enqueue time (only when non-zero); the newest one is the latest.
        if let Some(drops) = rxq_ovfl(&self.hdrs[got - 1].msg_hdr) {
            self.rxq_drops = drops;
        }
        Ok(got)
    }

    /// `sendmmsg(fd, MSG_DONTWAIT)` of `items`, each from
    /// `arena[slot * slot_size + start..][..len]` to `sockaddr_in { dst, port 0 }`.
    ///
    /// Sends at most `capacity()` items, and only the leading run of items
    /// whose range lies inside their slot and the arena. Returns `Ok(n)` = the
    /// number of leading items sent (`n` may be less than `items.len()`);
    /// `Ok(0)` only for empty `items`. If the very first item cannot be sent,
    /// returns its error (`InvalidInput` for a bad range, else the kernel's
    /// error); the caller counts it, skips it and calls again with the rest.
    /// `EINTR` is retried.
    pub fn send(
        &mut self,
        fd: RawFd,
        arena: &[u8],
        slot_size: usize,
        items: &[SendItem],
    ) -> io::Result<usize> {
        if items.is_empty() {
            return Ok(0);
        }
        if slot_size == 0 {
            return Err(invalid("mmsg send: slot_size is 0"));
        }
        let max = self
            .hdrs
            .len()
            .min(items.len())
            .min(libc::c_uint::MAX as usize);
        let base = arena.as_ptr();
        let mut n = 0;
        for (item, (iov, addr)) in items[..max]
            .iter()
            .zip(self.iovs.iter_mut().zip(self.addrs.iter_mut()))
        {
            let Some(at) = item_offset(item, slot_size, arena.len()) else {
                break;
            };
            // The kernel only reads through iov_base for a send.
            iov.iov_base = base.wrapping_add(at).cast_mut().cast();
            iov.iov_len = item.len as usize;
            *addr = sockaddr_v4(item.dst);
            n += 1;
        }
        if n == 0 {
            return Err(invalid(
                "mmsg send: first item lies outside its slot or the arena (or capacity is 0)",
            ));
        }
        let iovp = self.iovs.as_mut_ptr();
        let addrp = self.addrs.as_mut_ptr();
        for (i, h) in self.hdrs[..n].iter_mut().enumerate() {
            h.msg_len = 0;
            h.msg_hdr.msg_name = addrp.wrapping_add(i).cast();
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iovp.wrapping_add(i);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
        }
        loop {
            // SAFETY: hdrs[..n] are initialised above; each points to a valid
            // sockaddr_in in `self.addrs` and one iovec whose range was checked
            // to lie inside `arena` (borrowed for this call; the kernel only
            // reads it). n <= hdrs.len() and fits c_uint.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Arena offset of `item`, if `start + len` fits its slot and the slot fits
/// the arena.
#[inline]
fn item_offset(item: &SendItem, slot_size: usize, arena_len: usize) -> Option<usize> {
    let (slot, start, len) = (item.slot as usize, item.start as usize, item.len as usize);
    if start.checked_add(len)? > slot_size {
        return None;
    }
    let slot_base = slot.checked_mul(slot_size)?;
    if slot_base.checked_add(slot_size)? > arena_len {
        return None;
    }
    Some(slot_base + start)
}

#[inline]
fn sockaddr_v4(ip: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    }
}

/// The `SO_RXQ_OVFL` counter carried by a received message, if any.
fn rxq_ovfl(hdr: &libc::msghdr) -> Option<u32> {
    // SAFETY: `hdr` was just filled by recvmmsg: msg_control points to a live
    // CTRL_BYTES buffer in `Mmsg::ctrl` and msg_controllen is the number of
    // bytes the kernel wrote there. CMSG_FIRSTHDR/CMSG_NXTHDR only return
    // headers lying within msg_controllen (or null), and the data is read only
    // after checking cmsg_len covers a u32; read_unaligned needs no alignment.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET
                && (*c).cmsg_type == libc::SO_RXQ_OVFL
                && (*c).cmsg_len as usize >= libc::CMSG_LEN(4) as usize
            {
                return Some(ptr::read_unaligned(libc::CMSG_DATA(c).cast::<u32>()));
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    None
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    fn item(slot: u32, start: u32, len: u32) -> SendItem {
        SendItem {
            slot,
            start,
            len,
            dst: Ipv4Addr::LOCALHOST,
        }
    }

    #[test]
    fn capacity_is_batch() {
        assert_eq!(Mmsg::new(32).capacity(), 32);
        assert_eq!(Mmsg::new(0).capacity(), 0);
    }

    #[test]
    fn recv_rejects_bad_geometry() {
        let (a, _b) = UnixDatagram::pair().unwrap();
        let fd = a.as_raw_fd();
        let mut m = Mmsg::new(4);
        let mut arena = vec![0u8; 4 * 256];
        let mut lens = [0usize; 4];
        let kind = |r: io::Result<usize>| r.unwrap_err().kind();
        let inv = io::ErrorKind::InvalidInput;
        assert_eq!(kind(m.recv(fd, &mut arena, 0, 0, &mut lens)), inv);
        assert_eq!(kind(m.recv(fd, &mut arena, 256, 256, &mut lens)), inv);
        assert_eq!(kind(m.recv(fd, &mut arena, 256, 0, &mut [])), inv);
        assert_eq!(kind(m.recv(fd, &mut arena[..255], 256, 0, &mut lens)), inv);
        assert_eq!(
            kind(Mmsg::new(0).recv(fd, &mut arena, 256, 0, &mut lens)),
            inv
        );
        // Valid geometry, nothing queued.
        let e = m.recv(fd, &mut arena, 256, 0, &mut lens).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn recv_places_lengths_and_truncation() {
        let (a, b) = UnixDatagram::pair().unwrap();
        for (i, size) in [10usize, 240, 241, 300, 7].into_iter().enumerate() {
            b.send(&vec![i as u8 + 1; size]).unwrap();
        }
        let mut m = Mmsg::new(8);
        // 3 slots of 256 with offset 16 (240 bytes of room each).
        let mut arena = vec![0u8; 3 * 256 + 100];
        let mut lens = [0usize; 8];
        let n = m
            .recv(a.as_raw_fd(), &mut arena, 256, 16, &mut lens)
            .unwrap();
        assert_eq!(n, 3, "bounded by arena slots");
        assert_eq!(&lens[..3], &[10, 240, usize::MAX]);
        assert!(arena[..16].iter().all(|&x| x == 0), "offset respected");
        assert!(arena[16..26].iter().all(|&x| x == 1));
        assert_eq!(arena[26], 0);
        assert!(arena[256 + 16..512].iter().all(|&x| x == 2));
        assert!(arena[512 + 16..768].iter().all(|&x| x == 3));
        assert!(arena[768..].iter().all(|&x| x == 0), "no write past slots");
        // lens bounds the batch too.
        let n = m
            .recv(a.as_raw_fd(), &mut arena, 256, 0, &mut lens[..1])
            .unwrap();
        assert_eq!((n, lens[0]), (1, usize::MAX), "300 > 256 is truncated");
        let n = m
            .recv(a.as_raw_fd(), &mut arena, 256, 0, &mut lens)
            .unwrap();
        assert_eq!((n, lens[0]), (1, 7));
        let e = m
            .recv(a.as_raw_fd(), &mut arena, 256, 0, &mut lens)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(m.rx_queue_drops(), 0);
    }

    #[test]
    fn send_validates_ranges() {
        let arena = vec![0u8; 4 * 128];
        let mut m = Mmsg::new(4);
        assert_eq!(m.send(-1, &arena, 128, &[]).unwrap(), 0);
        for bad in [
            item(4, 0, 1),        // slot past arena
            item(3, 100, 29),     // crosses slot end
            item(0, 129, 0),      // start past slot
            item(u32::MAX, 0, 1), // huge slot
            item(0, u32::MAX, u32::MAX),
        ] {
            let e = m.send(-1, &arena, 128, &[bad, item(0, 0, 1)]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        let e = m
            .send(-1, &arena[..100], 128, &[item(0, 0, 1)])
            .unwrap_err();
        assert_eq!(
            e.kind(),
            io::ErrorKind::InvalidInput,
            "slot 0 exceeds arena"
        );
        let e = m.send(-1, &arena, 0, &[item(0, 0, 0)]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "slot_size 0");
        let e = Mmsg::new(0)
            .send(-1, &arena, 128, &[item(0, 0, 1)])
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "capacity 0");
        // A valid leading item reaches the kernel (EBADF on fd -1).
        let e = m
            .send(-1, &arena, 128, &[item(3, 0, 128), item(9, 0, 1)])
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn item_offsets() {
        assert_eq!(item_offset(&item(0, 0, 128), 128, 512), Some(0));
        assert_eq!(item_offset(&item(3, 28, 100), 128, 512), Some(412));
        assert_eq!(item_offset(&item(3, 28, 101), 128, 512), None);
        assert_eq!(item_offset(&item(4, 0, 0), 128, 512), None);
    }
}
