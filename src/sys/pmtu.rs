//! Path MTU towards an underlay peer, as the kernel's route cache knows it.
//!
//! Slow path only (after an EMSGSIZE): a connected UDP socket and `IP_MTU`.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

/// The kernel's current path MTU to `dst` (interface MTU or a learned PMTU).
pub fn path_mtu(dst: Ipv4Addr) -> io::Result<u32> {
    let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
    // Connecting a UDP socket sends nothing; it only resolves the route.
    s.connect(SocketAddrV4::new(dst, 9))?;
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid fd, and `mtu`/`len` describe a c_int-sized output buffer.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU,
            (&mut mtu as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(mtu.max(0) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_a_path_mtu() {
        let m = path_mtu(Ipv4Addr::LOCALHOST).unwrap();
        assert!(m >= 1280, "{m}");
    }
}
