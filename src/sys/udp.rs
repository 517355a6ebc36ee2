//! The GRE-in-UDP (RFC 8086) underlay socket and its batched I/O.
//!
//! What flows through here (in batches, through [`super::batch`]) is the UDP payload: a GRE header followed by the
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
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

/// Most datagrams one GSO send may carry (the kernel's `UDP_MAX_SEGMENTS`
/// was 64 before Linux 6.4 and 128 since; 64 works everywhere).
pub const MAX_GSO_SEGMENTS: usize = 64;

fn set_int(sock: &Socket, level: i32, name: i32, value: i32) -> io::Result<()> {
    super::batch::set_int(sock.as_raw_fd(), level, name, value)
}

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

impl AsRawFd for UdpGreSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}
