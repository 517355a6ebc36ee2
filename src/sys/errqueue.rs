//! ICMP errors about our own GRE packets, from a raw socket's error queue.
//!
//! With `IP_RECVERR` on, the kernel queues one entry per ICMP error that quotes a
//! packet we sent (host/net unreachable after ARP gives up, port unreachable
//! from a kernel GRE peer with another key, protocol unreachable from a host
//! without any GRE receiver, fragmentation needed). Entries count against the
//! socket's receive buffer, so the worker drains them whenever epoll reports
//! an error condition. Slow path: one `recvmsg(MSG_ERRQUEUE)` per entry.

use std::io;
use std::os::fd::RawFd;

/// What an error-queue entry says happened to one of our packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerError {
    /// Host or network unreachable (ICMP from a router, or local ARP failure).
    Unreachable,
    /// ICMP port unreachable: a kernel GRE peer refused the packet (key mismatch).
    PortUnreachable,
    /// ICMP protocol unreachable: nothing on the peer receives GRE.
    ProtoUnreachable,
    /// ICMP fragmentation needed / EMSGSIZE on the path.
    FragNeeded,
    /// Anything else.
    Other,
}

impl PeerError {
    fn from_errno(e: u32) -> PeerError {
        match e as i32 {
            libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN => PeerError::Unreachable,
            libc::ECONNREFUSED => PeerError::PortUnreachable,
            libc::ENOPROTOOPT => PeerError::ProtoUnreachable,
            libc::EMSGSIZE => PeerError::FragNeeded,
            _ => PeerError::Other,
        }
    }
}

/// Turns IP_RECVERR on for `fd`.
pub fn enable(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: valid fd and a c_int option value.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_RECVERR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads up to `max` error-queue entries, calling `f` for each; returns how many.
pub fn drain(fd: RawFd, max: usize, mut f: impl FnMut(PeerError)) -> usize {
    let mut data = [0u8; 128];
    let mut ctrl = [0u64; 64];
    let mut n = 0;
    while n < max {
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: zeroed msghdr is valid; fields set to live local buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctrl.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&ctrl) as _;
        // SAFETY: msg points to buffers valid for the call.
        let r = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        n += 1;
        let mut kind = PeerError::Other;
        // SAFETY: CMSG_* walk the control buffer the kernel filled in, bounded
        // by msg_controllen.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_RECVERR {
                    let ee = libc::CMSG_DATA(c) as *const libc::sock_extended_err;
                    kind = PeerError::from_errno(std::ptr::read_unaligned(ee).ee_errno);
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        f(kind);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping() {
        assert_eq!(
            PeerError::from_errno(libc::EHOSTUNREACH as u32),
            PeerError::Unreachable
        );
        assert_eq!(
            PeerError::from_errno(libc::ECONNREFUSED as u32),
            PeerError::PortUnreachable
        );
        assert_eq!(
            PeerError::from_errno(libc::ENOPROTOOPT as u32),
            PeerError::ProtoUnreachable
        );
        assert_eq!(
            PeerError::from_errno(libc::EMSGSIZE as u32),
            PeerError::FragNeeded
        );
        assert_eq!(PeerError::from_errno(0), PeerError::Other);
    }

    #[test]
    fn draining_an_empty_queue_reads_nothing() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        use std::os::fd::AsRawFd;
        enable(s.as_raw_fd()).unwrap();
        assert_eq!(drain(s.as_raw_fd(), 8, |_| panic!("no entry expected")), 0);
    }
}
