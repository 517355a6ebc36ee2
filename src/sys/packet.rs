//! `AF_PACKET` receive sockets in one fanout group: the GRE receive path whose
//! per-packet kernel cost does not grow with the number of workers.
//!
//! Each raw `IPPROTO_GRE` socket gets its own clone of every GRE packet
//! (`raw_v4_input`), so N sharded raw sockets cost N clones and N filter runs
//! per packet. A fanout group instead hands each packet to exactly one of its
//! sockets, chosen by the flow hash (`PACKET_FANOUT_HASH`: the flow dissector
//! looks through GRE at the inner flow, so a flow stays on one worker and in
//! order). One socket per worker, all bound to the underlay device, each with
//! [`packet_filter`] (IPv4 GRE to our address, received for this host).
//!
//! Packet sockets see the device's packets before the IPv4 layer: fragments
//! (reassembled here by `PACKET_FANOUT_FLAG_DEFRAG`, before the group picks a
//! socket), and headers the IP layer would still reject (the caller checks
//! the outer header checksum). Whatever arrives for our address on another
//! device is left to one raw GRE socket with [`stray_filter`], which also
//! keeps the kernel from answering GRE with ICMP protocol-unreachable.
//!
//! Received buffers start at the outer IPv4 header, as on a raw socket, so
//! the same `Batch` and the same datagram checks serve both.

use std::io;
use std::mem;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, SockFilter, Socket, Type};

use super::bpf::packet_filter;

/// Fanout mode and flags of the group (the kernel's `PACKET_FANOUT` value
/// holds the group id in bits 0..16 and these from bit 16).
const FANOUT_MODE: u32 = libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_DEFRAG;

/// Upper bound on packets discarded by the start-up drain.
const DRAIN_LIMIT: u64 = 1 << 20;

/// One member of a fanout group of IPv4 packet sockets on one interface.
#[derive(Debug)]
pub struct PacketSocket {
    sock: Socket,
}

impl PacketSocket {
    /// Opens a packet socket on interface `ifindex` that receives IPv4 GRE
    /// addressed to `local` and joins fanout group `group`, or, with `None`,
    /// creates a new group with an id the kernel picks
    /// (`PACKET_FANOUT_FLAG_UNIQUEID`, so no other program's group is joined
    /// by accident). Returns the socket, the group id (to pass to the next
    /// member) and the number of packets discarded by the start-up drain.
    ///
    /// In order: `socket(AF_PACKET, SOCK_DGRAM, 0)` (protocol 0 receives
    /// nothing yet); filter; buffer size; `SO_RXQ_OVFL`; nonblocking; bind to
    /// (`ETH_P_IP`, `ifindex`); join the group; drain what the socket queued
    /// before it was a member (every other member got those packets too).
    pub fn open(
        ifindex: u32,
        local: Ipv4Addr,
        group: Option<u16>,
        rcvbuf: usize,
    ) -> io::Result<(PacketSocket, u16, u64)> {
        let sock = Socket::new(Domain::PACKET, Type::DGRAM, None).map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::PermissionDenied {
                " (need CAP_NET_RAW)"
            } else {
                ""
            };
            io::Error::new(e.kind(), format!("open packet socket: {e}{hint}"))
        })?;
        let ctx =
            |what: String| move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
        let filter: Vec<SockFilter> = packet_filter(local)
            .iter()
            .map(|i| SockFilter::new(i.code, i.jt, i.jf, i.k))
            .collect();
        sock.attach_filter(&filter)
            .map_err(ctx("attach GRE filter to packet socket".into()))?;
        if rcvbuf > 0 {
            let val = libc::c_int::try_from(rcvbuf).unwrap_or(libc::c_int::MAX);
            super::batch::set_int(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                val,
            )
            .or_else(|_| sock.set_recv_buffer_size(rcvbuf))
            .map_err(ctx(format!("set SO_RCVBUF {rcvbuf} on packet socket")))?;
        }
        if let Err(e) = super::batch::set_int(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)
        {
            log::debug!("packet socket: SO_RXQ_OVFL unavailable: {e}");
        }
        sock.set_nonblocking(true)
            .map_err(ctx("set packet socket nonblocking".into()))?;
        bind_ipv4(sock.as_raw_fd(), ifindex)
            .map_err(ctx(format!("bind packet socket to interface index {ifindex}")))?;
        // Bound to a device that is down, the socket does not receive (it
        // is not "running") and cannot join a group (EINVAL); the kernel
        // notes ENETDOWN as the socket's error. Say so instead.
        if let Ok(Some(e)) = sock.take_error() {
            if e.raw_os_error() == Some(libc::ENETDOWN) {
                return Err(io::Error::new(
                    e.kind(),
                    format!("interface index {ifindex} is down ({e})"),
                ));
            }
        }
        let id = join_fanout(sock.as_raw_fd(), group).map_err(ctx(match group {
            Some(g) => format!("join packet fanout group {g}"),
            None => "create packet fanout group".into(),
        }))?;
        let drained = drain(&sock).map_err(ctx("drain packet socket".into()))?;
        Ok((PacketSocket { sock }, id, drained))
    }

    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

fn bind_ipv4(fd: RawFd, ifindex: u32) -> io::Result<()> {
    // SAFETY: sockaddr_ll is a plain C struct for which all-zero bytes are valid.
    let mut sa: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = (libc::ETH_P_IP as u16).to_be();
    sa.sll_ifindex = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index too large"))?;
    // SAFETY: `sa` is a valid sockaddr_ll and the length passed is its size.
    let r = unsafe {
        libc::bind(
            fd,
            (&sa as *const libc::sockaddr_ll).cast(),
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Joins group `group` (or creates one with a kernel-chosen id); returns the id.
fn join_fanout(fd: RawFd, group: Option<u16>) -> io::Result<u16> {
    let val = match group {
        Some(id) => u32::from(id) | (FANOUT_MODE << 16),
        None => (FANOUT_MODE | libc::PACKET_FANOUT_FLAG_UNIQUEID) << 16,
    };
    super::batch::set_int(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, val as libc::c_int)?;
    let mut got: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `got` and `len` are valid for writes of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_FANOUT,
            (&mut got as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // The low 16 bits are the group id.
    let id = (got as u32 & 0xffff) as u16;
    match group {
        Some(g) if g != id => Err(io::Error::other(format!(
            "joined group {id} instead of {g}"
        ))),
        _ => Ok(id),
    }
}

fn drain(sock: &Socket) -> io::Result<u64> {
    let mut buf = [mem::MaybeUninit::<u8>::uninit(); 1];
    let mut n = 0;
    while n < DRAIN_LIMIT {
        match sock.recv(&mut buf) {
            Ok(_) => n += 1,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
