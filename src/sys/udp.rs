//! The GRE-in-UDP (RFC 8086) underlay socket and its batched I/O.
//!
//! What flows through here is the UDP payload: a GRE header followed by the
//! inner IPv4 packet; the kernel writes and strips the outer IPv4 + UDP headers.
//! - Send: `sendmmsg` of messages, each one datagram or, with UDP GSO
//!   (`UDP_SEGMENT` cmsg), a run of equal-size datagrams to one peer that the
//!   kernel splits after one trip through the stack. An `IP_TOS` cmsg per
//!   message carries the inner TOS/ECN to the outer header (RFC 6040).
//! - Receive: `recvmmsg`; with UDP GRO (`UDP_GRO`) one message may hold many
//!   coalesced datagrams of one sender, `gso_size` bytes each (the last may be
//!   shorter). Each message reports its sender and outer TOS (`IP_RECVTOS`).
//!
//! Every worker owns one socket bound to `local:port` in one `SO_REUSEPORT`
//! group: the kernel spreads senders over the workers by 4-tuple hash, so a
//! flow always lands on the same worker. Outer DF is set (`IP_PMTUDISC_DO`),
//! as for raw GRE; ICMP errors go to the error queue (`IP_RECVERR`, enabled by
//! the worker). GSO/GRO are probed once here; where the kernel refuses, the
//! socket works datagram by datagram and says so in [`UdpGreSocket::gso`].

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;

use socket2::{Domain, Protocol, Socket, Type};

/// Most datagrams one GSO send may carry (the kernel's `UDP_MAX_SEGMENTS`
/// was 64 before Linux 6.4 and 128 since; 64 works everywhere).
pub const MAX_GSO_SEGMENTS: usize = 64;

/// Control space per message: `UDP_SEGMENT` (u16) + `IP_TOS` (int) on send;
/// `UDP_GRO` (int) + `IP_TOS` (u8) + `SO_RXQ_OVFL` (u32) on receive; each
/// `CMSG_SPACE(4)` = 16 bytes on 64-bit. `u64` words keep `cmsghdr` aligned.
const CTRL_WORDS: usize = 8;
const CTRL_BYTES: usize = CTRL_WORDS * mem::size_of::<u64>();

/// A nonblocking UDP socket bound to `local:port` in a `SO_REUSEPORT` group.
#[derive(Debug)]
pub struct UdpGreSocket {
    sock: Socket,
    gso: bool,
    gro: bool,
}

impl UdpGreSocket {
    /// Opens, configures and binds one member of the reuse-port group, with
    /// UDP GSO/GRO where the kernel has them.
    /// `rcvbuf`/`sndbuf` as for the raw socket (0 = kernel default).
    pub fn open(local: Ipv4Addr, port: u16, rcvbuf: usize, sndbuf: usize) -> io::Result<Self> {
        Self::open_with(local, port, rcvbuf, sndbuf, true)
    }

    /// As [`UdpGreSocket::open`]; `offload = false` leaves GSO/GRO off (the
    /// datagram-per-packet path that kernels without them take).
    pub fn open_with(
        local: Ipv4Addr,
        port: u16,
        rcvbuf: usize,
        sndbuf: usize,
        offload: bool,
    ) -> io::Result<Self> {
        let ctx =
            |what: String| move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
        let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .map_err(ctx("open GRE-in-UDP socket".into()))?;
        sock.set_reuse_port(true)
            .map_err(ctx("set SO_REUSEPORT on GRE-in-UDP socket".into()))?;
        set_int(
            &sock,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
        .map_err(ctx("set IP_MTU_DISCOVER on GRE-in-UDP socket".into()))?;
        set_int(&sock, libc::IPPROTO_IP, libc::IP_RECVTOS, 1)
            .map_err(ctx("set IP_RECVTOS on GRE-in-UDP socket".into()))?;
        if rcvbuf > 0 {
            set_int(&sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, rcvbuf as i32)
                .or_else(|_| sock.set_recv_buffer_size(rcvbuf))
                .map_err(ctx(format!("set SO_RCVBUF {rcvbuf} on GRE-in-UDP socket")))?;
        }
        if sndbuf > 0 {
            set_int(&sock, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, sndbuf as i32)
                .or_else(|_| sock.set_send_buffer_size(sndbuf))
                .map_err(ctx(format!("set SO_SNDBUF {sndbuf} on GRE-in-UDP socket")))?;
        }
        if let Err(e) = set_int(&sock, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1) {
            log::debug!("GRE-in-UDP socket: SO_RXQ_OVFL unavailable: {e}");
        }
        // Probing: setting the socket-wide default segment size to 0 (= off)
        // succeeds exactly where per-message UDP_SEGMENT is supported.
        let gso = offload && set_int(&sock, libc::SOL_UDP, libc::UDP_SEGMENT, 0).is_ok();
        let gro = offload && set_int(&sock, libc::SOL_UDP, libc::UDP_GRO, 1).is_ok();
        sock.bind(&SocketAddrV4::new(local, port).into())
            .map_err(ctx(format!("bind GRE-in-UDP socket to {local}:{port}")))?;
        sock.set_nonblocking(true)
            .map_err(ctx("set GRE-in-UDP socket nonblocking".into()))?;
        Ok(UdpGreSocket { sock, gso, gro })
    }

    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Whether the kernel accepted UDP segmentation offload on send.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Whether the kernel accepted UDP receive coalescing.
    pub fn gro(&self) -> bool {
        self.gro
    }
}

/// One message to send: `arena[start..start + len]` to `dst:port`; with
/// `segment > 0` and `len > segment` the kernel splits it into datagrams of
/// `segment` bytes (the last may be shorter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpItem {
    pub start: u32,
    pub len: u32,
    pub segment: u16,
    pub tos: u8,
    pub dst: Ipv4Addr,
}

/// What one received message holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpRecvd {
    /// Bytes received; `usize::MAX` if the buffer truncated the message.
    pub len: usize,
    /// Size of each coalesced datagram (= `len` when not coalesced).
    pub segment: usize,
    pub src: Option<Ipv4Addr>,
    /// Outer IPv4 TOS byte (0 when the kernel did not report it).
    pub tos: u8,
}

/// Preallocated `sendmmsg`/`recvmmsg` descriptors for one worker.
pub struct UdpMmsg {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_in>,
    ctrl: Vec<[u64; CTRL_WORDS]>,
    rxq_drops: u32,
}

// SAFETY: as for `Mmsg`: the raw pointers are scratch values rewritten before
// every syscall and only used during a call that holds `&mut self`.
unsafe impl Send for UdpMmsg {}

impl UdpMmsg {
    pub fn new(batch: usize) -> Self {
        // SAFETY: plain C structs of integers and raw pointers: all-zero is valid.
        let (hdr, iov, addr) = unsafe {
            (
                mem::zeroed::<libc::mmsghdr>(),
                mem::zeroed::<libc::iovec>(),
                mem::zeroed::<libc::sockaddr_in>(),
            )
        };
        UdpMmsg {
            hdrs: vec![hdr; batch],
            iovs: vec![iov; batch],
            addrs: vec![addr; batch],
            ctrl: vec![[0; CTRL_WORDS]; batch],
            rxq_drops: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// The socket's cumulative receive-queue drop count (`SO_RXQ_OVFL`), as
    /// last reported on a received message.
    pub fn rx_queue_drops(&self) -> u32 {
        self.rxq_drops
    }

    /// `sendmmsg(MSG_DONTWAIT)` of the leading items (at most `capacity()`)
    /// to `port`. Returns the number sent; if the very first item fails, its
    /// error (`InvalidInput` if its range is outside `arena`). EINTR is retried.
    pub fn send(
        &mut self,
        fd: RawFd,
        arena: &[u8],
        port: u16,
        items: &[UdpItem],
    ) -> io::Result<usize> {
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
            self.iovs[i].iov_base = base.wrapping_add(start).cast_mut().cast();
            self.iovs[i].iov_len = len;
            self.addrs[i] = sockaddr_v4(item.dst, port);
            n += 1;
        }
        if n == 0 {
            if items.is_empty() {
                return Ok(0);
            }
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "udp send: first item lies outside the arena",
            ));
        }
        let iovp = self.iovs.as_mut_ptr();
        let addrp = self.addrs.as_mut_ptr();
        let ctrlp = self.ctrl.as_mut_ptr();
        for (i, h) in self.hdrs[..n].iter_mut().enumerate() {
            let item = &items[i];
            h.msg_len = 0;
            h.msg_hdr.msg_name = addrp.wrapping_add(i).cast();
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iovp.wrapping_add(i);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = ctrlp.wrapping_add(i).cast();
            h.msg_hdr.msg_controllen = CTRL_BYTES as _;
            h.msg_hdr.msg_flags = 0;
            let gso =
                (item.segment > 0 && item.len > u32::from(item.segment)).then_some(item.segment);
            // SAFETY: msg_control points to this message's CTRL_BYTES buffer,
            // which holds both cmsgs (2 × CMSG_SPACE(4) = 32 ≤ 64 bytes);
            // CMSG_FIRSTHDR/NXTHDR stay within msg_controllen.
            unsafe {
                let mut used = 0usize;
                let mut c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                if let Some(seg) = gso {
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = libc::UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(2) as _;
                    ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg);
                    used += libc::CMSG_SPACE(2) as usize;
                    c = libc::CMSG_NXTHDR(&h.msg_hdr, c);
                }
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_TOS;
                (*c).cmsg_len = libc::CMSG_LEN(4) as _;
                ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>(), item.tos.into());
                used += libc::CMSG_SPACE(4) as usize;
                h.msg_hdr.msg_controllen = used as _;
            }
        }
        loop {
            // SAFETY: hdrs[..n] initialised above, pointing at live addrs,
            // iovecs within `arena` (only read by the kernel) and control buffers.
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

    /// `recvmmsg(MSG_DONTWAIT)`: message `i` goes to `bufs[i]` (whole buffer),
    /// its facts to `out[i]`. Returns `Ok(n > 0)` or `Err(WouldBlock)`.
    pub fn recv<B: AsMut<[u8]>>(
        &mut self,
        fd: RawFd,
        bufs: &mut [B],
        out: &mut [UdpRecvd],
    ) -> io::Result<usize> {
        let n = self
            .hdrs
            .len()
            .min(bufs.len())
            .min(out.len())
            .min(libc::c_uint::MAX as usize);
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "udp recv: no buffers",
            ));
        }
        for (iov, b) in self.iovs[..n].iter_mut().zip(bufs.iter_mut()) {
            let b = b.as_mut();
            iov.iov_base = b.as_mut_ptr().cast();
            iov.iov_len = b.len();
        }
        let iovp = self.iovs.as_mut_ptr();
        let addrp = self.addrs.as_mut_ptr();
        let ctrlp = self.ctrl.as_mut_ptr();
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
        let got = loop {
            // SAFETY: hdrs[..n] point at iovecs covering distinct buffers of
            // `bufs` (borrowed mutably for this call), at sockaddr_in and
            // control buffers owned by `self`.
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
            return Err(io::ErrorKind::WouldBlock.into());
        }
        for (i, o) in out[..got].iter_mut().enumerate() {
            let h = &self.hdrs[i];
            let len = h.msg_len as usize;
            *o = UdpRecvd {
                len: if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    usize::MAX
                } else {
                    len
                },
                segment: len,
                src: (h.msg_hdr.msg_namelen as usize >= mem::size_of::<libc::sockaddr_in>())
                    .then(|| Ipv4Addr::from(u32::from_be(self.addrs[i].sin_addr.s_addr))),
                tos: 0,
            };
            // SAFETY: msg_control/msg_controllen were just filled by the kernel
            // within our CTRL_BYTES buffer; each cmsg's data is read only after
            // checking its length; read_unaligned needs no alignment.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                while !c.is_null() {
                    let (lvl, ty, clen) = ((*c).cmsg_level, (*c).cmsg_type, (*c).cmsg_len as usize);
                    let data = libc::CMSG_DATA(c);
                    if lvl == libc::SOL_UDP
                        && ty == libc::UDP_GRO
                        && clen >= libc::CMSG_LEN(4) as usize
                    {
                        let seg = ptr::read_unaligned(data.cast::<libc::c_int>());
                        if seg > 0 {
                            o.segment = seg as usize;
                        }
                    } else if lvl == libc::IPPROTO_IP
                        && ty == libc::IP_TOS
                        && clen >= libc::CMSG_LEN(1) as usize
                    {
                        o.tos = ptr::read_unaligned(data);
                    } else if lvl == libc::SOL_SOCKET
                        && ty == libc::SO_RXQ_OVFL
                        && clen >= libc::CMSG_LEN(4) as usize
                    {
                        self.rxq_drops = ptr::read_unaligned(data.cast::<u32>());
                    }
                    c = libc::CMSG_NXTHDR(&h.msg_hdr, c);
                }
            }
        }
        Ok(got)
    }
}

fn sockaddr_v4(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    }
}

fn set_int(sock: &Socket, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: valid fd, pointer to a live c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel behaviour behind the worker's one retry of a failed send or
    /// receive (worker module doc, "Asynchronous errors"): with IP_RECVERR an
    /// ICMP error about one datagram also becomes the socket's pending error,
    /// which the next send reports (whatever it sends, wherever to) and clears.
    #[test]
    fn an_icmp_error_fails_the_next_send_once_and_the_retry_goes_out() {
        let lo = Ipv4Addr::LOCALHOST;
        let port_of = |s: &Socket| s.local_addr().unwrap().as_socket().unwrap().port();
        let rx = UdpGreSocket::open(lo, 0, 0, 0).unwrap();
        let closed = {
            let s = UdpGreSocket::open(lo, 0, 0, 0).unwrap();
            port_of(&s.sock)
        };
        let tx = UdpGreSocket::open(lo, 0, 0, 0).unwrap();
        super::super::errqueue::enable(tx.fd()).unwrap();
        let arena = [7u8; 8];
        let one = [UdpItem {
            start: 0,
            len: 8,
            segment: 0,
            tos: 0,
            dst: lo,
        }];
        let mut m = UdpMmsg::new(1);
        // To a closed port: ICMP port unreachable comes back (loopback: at once).
        assert_eq!(m.send(tx.fd(), &arena, closed, &one).unwrap(), 1);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let e = m
            .send(tx.fd(), &arena, port_of(&rx.sock), &one)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED), "{e}");
        // That report cleared it: the same datagram goes out on the retry.
        assert_eq!(m.send(tx.fd(), &arena, port_of(&rx.sock), &one).unwrap(), 1);
    }

    /// Loopback round trip through two real UDP sockets (no root needed):
    /// one GSO message of 3 segments arrives as 3 datagrams (or one GRO
    /// message of segment size 100) with the sender and TOS reported.
    #[test]
    fn gso_send_and_receive_on_loopback() {
        let lo = Ipv4Addr::LOCALHOST;
        let rx = UdpGreSocket::open(lo, 0, 0, 0).unwrap();
        let port = match rx.sock.local_addr().unwrap().as_socket() {
            Some(a) => a.port(),
            None => panic!("no port"),
        };
        let tx = UdpGreSocket::open(lo, 0, 0, 0).unwrap();
        let mut arena = vec![0u8; 400];
        for (i, b) in arena.iter_mut().enumerate() {
            *b = (i / 100) as u8;
        }
        let mut m = UdpMmsg::new(4);
        let items = [
            UdpItem {
                start: 0,
                len: 300,
                segment: if tx.gso() { 100 } else { 300 },
                tos: 0x22,
                dst: lo,
            },
            UdpItem {
                start: 300,
                len: 50,
                segment: 0,
                tos: 0,
                dst: lo,
            },
        ];
        assert_eq!(m.send(tx.fd(), &arena, port, &items).unwrap(), 2);
        let mut bufs = vec![vec![0u8; 1000]; 8];
        let mut out = vec![UdpRecvd::default(); 8];
        let mut datagrams = Vec::new();
        for _ in 0..100 {
            match m.recv(rx.fd(), &mut bufs, &mut out) {
                Ok(n) => {
                    for i in 0..n {
                        let o = out[i];
                        assert_eq!(o.src, Some(lo));
                        for d in bufs[i][..o.len].chunks(o.segment) {
                            datagrams.push((d.to_vec(), o.tos));
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if datagrams.len() >= 4 {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
        let lens: Vec<usize> = datagrams.iter().map(|d| d.0.len()).collect();
        if tx.gso() {
            assert_eq!(lens, [100, 100, 100, 50]);
            assert!(datagrams[..3].iter().all(|d| d.1 == 0x22));
            assert_eq!(datagrams[1].0[0], 1);
        } else {
            assert_eq!(lens, [300, 50]);
        }
        assert_eq!(datagrams.last().unwrap().1, 0);
        assert!(m
            .send(
                tx.fd(),
                &arena,
                port,
                &[UdpItem {
                    start: 390,
                    len: 20,
                    segment: 0,
                    tos: 0,
                    dst: lo
                }]
            )
            .is_err());
    }
}
