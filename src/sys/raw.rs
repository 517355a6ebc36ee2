//! The raw IPv4 `IPPROTO_GRE` underlay socket.
//!
//! Whole outer IPv4 packets flow through it in both directions: received
//! buffers start at the outer IPv4 header, and with `IP_HDRINCL` we write the
//! outer header ourselves (the kernel fills in `tot_len`, the checksum and a
//! zero `id`/`saddr`). Each worker owns one socket whose classic-BPF filter
//! ([`super::bpf::shard_filter`]) accepts only that worker's shard.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use socket2::{Domain, Protocol, SockFilter, Socket, Type};

use super::bpf::{shard_filter, stray_filter};

/// Upper bound on datagrams discarded by the startup drain, so a flood
/// arriving during `open` cannot keep it spinning.
const DRAIN_LIMIT: u64 = 1 << 20;

/// Raw GRE socket bound to one local underlay address, nonblocking, with a
/// shard filter attached.
#[derive(Debug)]
pub struct RawGreSocket {
    sock: Socket,
}

impl RawGreSocket {
    /// Opens `socket(AF_INET, SOCK_RAW, IPPROTO_GRE)` for shard
    /// `shard_index` of `shard_count`.
    ///
    /// In order: attach `shard_filter(shard_index, shard_count)`; `IP_HDRINCL`
    /// on; bind to `(local, 0)` so only GRE addressed to `local` arrives;
    /// `SO_RCVBUF`/`SO_SNDBUF` to `rcvbuf`/`sndbuf` (the `*FORCE` variants
    /// first, which bypass `rmem_max`/`wmem_max` with `CAP_NET_ADMIN`; 0 keeps
    /// the kernel default); `SO_RXQ_OVFL` on if available; nonblocking; then
    /// discard whatever was queued before the filter took effect. Returns the
    /// socket and the number of datagrams discarded.
    pub fn open(
        local: Ipv4Addr,
        shard_index: u32,
        shard_count: u32,
        rcvbuf: usize,
        sndbuf: usize,
    ) -> io::Result<(Self, u64)> {
        if shard_count == 0 || shard_index >= shard_count {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "open raw GRE socket: shard {shard_index} of {shard_count} is out of range"
                ),
            ));
        }
        let filter = shard_filter(shard_index, shard_count);
        let what = format!("shard filter {shard_index}/{shard_count}");
        Self::open_filtered(local, &filter, &what, rcvbuf, sndbuf, true)
    }

    /// Opens the one raw GRE socket that sits beside a packet fanout group on
    /// interface `ifindex` ([`super::packet`]): it takes GRE for `local` that
    /// arrived on any other interface ([`stray_filter`]), its presence stops
    /// the kernel's ICMP protocol-unreachable replies, and its error queue
    /// gets the ICMP errors about GRE we sent. Its `SO_RXQ_OVFL` count is the
    /// only one its worker's receive batch sees (the packet socket's ring
    /// reports drops its own way).
    pub fn open_stray(local: Ipv4Addr, ifindex: u32, rcvbuf: usize) -> io::Result<(Self, u64)> {
        let filter = stray_filter(ifindex);
        let what = format!("filter for interfaces other than index {ifindex}");
        Self::open_filtered(local, &filter, &what, rcvbuf, 0, true)
    }

    fn open_filtered(
        local: Ipv4Addr,
        filter: &[libc::sock_filter],
        what: &str,
        rcvbuf: usize,
        sndbuf: usize,
        rxq_ovfl: bool,
    ) -> io::Result<(Self, u64)> {
        let sock = raw_socket(libc::IPPROTO_GRE, "raw GRE")?;
        let ctx =
            |what: String| move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));

        let filter: Vec<SockFilter> = filter
            .iter()
            .map(|i| SockFilter::new(i.code, i.jt, i.jf, i.k))
            .collect();
        sock.attach_filter(&filter)
            .map_err(ctx(format!("attach {what} to raw GRE socket")))?;
        sock.set_header_included_v4(true)
            .map_err(ctx("set IP_HDRINCL on raw GRE socket".into()))?;
        sock.bind(&SocketAddrV4::new(local, 0).into())
            .map_err(ctx(format!("bind raw GRE socket to {local}")))?;
        if rcvbuf > 0 {
            set_buffer(&sock, libc::SO_RCVBUFFORCE, rcvbuf)
                .or_else(|_| sock.set_recv_buffer_size(rcvbuf))
                .map_err(ctx(format!("set SO_RCVBUF {rcvbuf} on raw GRE socket")))?;
            warn_if_capped("SO_RCVBUF", rcvbuf, sock.recv_buffer_size());
        }
        if sndbuf > 0 {
            set_buffer(&sock, libc::SO_SNDBUFFORCE, sndbuf)
                .or_else(|_| sock.set_send_buffer_size(sndbuf))
                .map_err(ctx(format!("set SO_SNDBUF {sndbuf} on raw GRE socket")))?;
            warn_if_capped("SO_SNDBUF", sndbuf, sock.send_buffer_size());
        }
        if rxq_ovfl {
            if let Err(e) = set_int(&sock, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1) {
                log::debug!("raw GRE socket: SO_RXQ_OVFL unavailable: {e}");
            }
        }
        sock.set_nonblocking(true)
            .map_err(ctx("set raw GRE socket nonblocking".into()))?;
        let drained = drain(&sock).map_err(ctx("drain raw GRE socket".into()))?;
        Ok((Self { sock }, drained))
    }

    /// The socket's file descriptor (for `Mmsg`, poll registration).
    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl AsRawFd for RawGreSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl AsFd for RawGreSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// A send-only raw socket (`IPPROTO_RAW`, header included) for outer IPv4
/// packets we build ourselves: unlike a raw `IPPROTO_GRE` socket it receives
/// nothing, so workers that receive through a packet fanout group send
/// without each costing the kernel a clone of every incoming GRE packet.
/// ICMP errors about what it sent go to the raw GRE socket
/// ([`RawGreSocket::open_stray`]), matched by the quoted protocol.
#[derive(Debug)]
pub struct RawSender {
    sock: Socket,
}

impl RawSender {
    /// Opens the socket bound to `(local, 0)` (the kernel fills in a zero
    /// outer source with it), `SO_SNDBUF` `sndbuf` (0: default), nonblocking.
    pub fn open(local: Ipv4Addr, sndbuf: usize) -> io::Result<RawSender> {
        let sock = raw_socket(libc::IPPROTO_RAW, "raw send")?;
        let ctx =
            |what: String| move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
        sock.bind(&SocketAddrV4::new(local, 0).into())
            .map_err(ctx(format!("bind raw send socket to {local}")))?;
        if sndbuf > 0 {
            set_buffer(&sock, libc::SO_SNDBUFFORCE, sndbuf)
                .or_else(|_| sock.set_send_buffer_size(sndbuf))
                .map_err(ctx(format!("set SO_SNDBUF {sndbuf} on raw send socket")))?;
            warn_if_capped("SO_SNDBUF", sndbuf, sock.send_buffer_size());
        }
        sock.set_nonblocking(true)
            .map_err(ctx("set raw send socket nonblocking".into()))?;
        Ok(RawSender { sock })
    }

    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl AsRawFd for RawSender {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

fn raw_socket(protocol: libc::c_int, what: &str) -> io::Result<Socket> {
    Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(protocol))).map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::PermissionDenied {
            " (need CAP_NET_RAW)"
        } else {
            ""
        };
        io::Error::new(e.kind(), format!("open {what} socket: {e}{hint}"))
    })
}

fn set_int(
    sock: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    super::batch::set_int(sock.as_raw_fd(), level, name, val)
}

fn set_buffer(sock: &Socket, name: libc::c_int, size: usize) -> io::Result<()> {
    // The kernel doubles the value and caps the forced variants at INT_MAX / 2.
    let val = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    set_int(sock, libc::SOL_SOCKET, name, val)
}

fn warn_if_capped(what: &str, requested: usize, actual: io::Result<usize>) {
    // Linux reports twice the effective value it was given.
    if let Ok(actual) = actual {
        if actual / 2 < requested {
            log::warn!(
                "raw GRE socket: {what} is {} bytes, less than the requested {requested} \
                 (raise net.core.rmem_max/wmem_max or run with CAP_NET_ADMIN)",
                actual / 2
            );
        }
    }
}

/// Discards queued datagrams until the queue is empty (or `DRAIN_LIMIT`).
fn drain(sock: &Socket) -> io::Result<u64> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 1];
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_shard_before_opening() {
        for (i, c) in [(0, 0), (2, 2), (5, 3)] {
            let e = RawGreSocket::open(Ipv4Addr::LOCALHOST, i, c, 0, 0).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert!(
                e.to_string().starts_with("open raw GRE socket: shard"),
                "{e}"
            );
        }
    }
}
