//! Setup-time interface facts (and the one IPv4 address write tun-rs cannot do
//! without its netlink feature).
//!
//! Interface names, IPv4 addresses/prefixes and MTUs flow through here, via
//! `getifaddrs`, `SIOC*IF*` ioctls on a throwaway datagram socket and
//! `if_nametoindex`. All of these act on the calling thread's network
//! namespace. Not for the per-packet path.

use std::ffi::{CStr, CString};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::ptr;

use socket2::{Domain, Socket, Type};

/// One IPv4 address assigned to an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfAddr {
    pub ifname: String,
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// All IPv4 addresses of all interfaces (`getifaddrs`).
pub fn ipv4_addrs() -> io::Result<Vec<IfAddr>> {
    let mut head: *mut libc::ifaddrs = ptr::null_mut();
    // SAFETY: getifaddrs stores a list head in `head` on success.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("list interface addresses: {e}"),
        ));
    }
    let list = IfAddrs(head);
    let mut out = Vec::new();
    let mut cur = list.0;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until
        // `list` is dropped. ifa_name is a NUL-terminated string. A non-null
        // ifa_addr/ifa_netmask whose family is AF_INET points to a
        // sockaddr_in; read_unaligned does not assume alignment.
        let entry = unsafe {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || i32::from((*ifa.ifa_addr).sa_family) != libc::AF_INET {
                None
            } else {
                let sin = ptr::read_unaligned(ifa.ifa_addr.cast::<libc::sockaddr_in>());
                let mask = if ifa.ifa_netmask.is_null() {
                    u32::MAX
                } else {
                    let m = ptr::read_unaligned(ifa.ifa_netmask.cast::<libc::sockaddr_in>());
                    u32::from_be(m.sin_addr.s_addr)
                };
                let name = CStr::from_ptr(ifa.ifa_name).to_string_lossy().into_owned();
                Some((name, sin.sin_addr.s_addr, mask))
            }
        };
        if let Some((ifname, s_addr, mask)) = entry {
            out.push(IfAddr {
                ifname,
                addr: Ipv4Addr::from(s_addr.to_ne_bytes()),
                prefix: mask.leading_ones() as u8,
            });
        }
    }
    Ok(out)
}

/// Frees a `getifaddrs` list on drop.
struct IfAddrs(*mut libc::ifaddrs);

impl Drop for IfAddrs {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from a successful getifaddrs and is
            // freed exactly once.
            unsafe { libc::freeifaddrs(self.0) };
        }
    }
}

/// MTU of `ifname` (`SIOCGIFMTU`).
pub fn interface_mtu(ifname: &str) -> io::Result<u32> {
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("get MTU of {ifname}: {e}"));
    let mut req = ifreq(ifname).map_err(ctx)?;
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, None).map_err(ctx)?;
    ioctl(&sock, libc::SIOCGIFMTU, &mut req).map_err(ctx)?;
    // SAFETY: SIOCGIFMTU succeeded, so the kernel stored the MTU in ifru_mtu
    // (a plain c_int member of the union).
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    u32::try_from(mtu).map_err(|_| {
        ctx(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("negative MTU {mtu}"),
        ))
    })
}

/// Whether `ifname` is a loopback interface (`SIOCGIFFLAGS`, `IFF_LOOPBACK`).
pub fn interface_is_loopback(ifname: &str) -> io::Result<bool> {
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("get flags of {ifname}: {e}"));
    let mut req = ifreq(ifname).map_err(ctx)?;
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, None).map_err(ctx)?;
    ioctl(&sock, libc::SIOCGIFFLAGS, &mut req).map_err(ctx)?;
    // SAFETY: SIOCGIFFLAGS succeeded, so the kernel stored the flags in
    // ifru_flags (a plain c_short member of the union).
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    Ok(flags as libc::c_int & libc::IFF_LOOPBACK != 0)
}

/// Clears `IFF_MULTICAST` on `ifname` (`SIOCGIFFLAGS` + `SIOCSIFFLAGS`): an
/// IPv6 interface without it joins no all-routers group, so the kernel sends
/// no MLD report through it.
pub fn clear_multicast(ifname: &str) -> io::Result<()> {
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("multicast off on {ifname}: {e}"));
    let mut req = ifreq(ifname).map_err(ctx)?;
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, None).map_err(ctx)?;
    ioctl(&sock, libc::SIOCGIFFLAGS, &mut req).map_err(ctx)?;
    // SAFETY: SIOCGIFFLAGS succeeded, so ifru_flags holds the flags (a plain
    // c_short member of the union); writing it back changes only that member.
    unsafe { req.ifr_ifru.ifru_flags &= !(libc::IFF_MULTICAST as libc::c_short) };
    ioctl(&sock, libc::SIOCSIFFLAGS, &mut req).map_err(ctx)
}

/// Whether an interface named `ifname` exists (`if_nametoindex`).
pub fn interface_exists(ifname: &str) -> bool {
    let Ok(name) = CString::new(ifname) else {
        return false;
    };
    // SAFETY: `name` is a valid NUL-terminated string for the call's duration.
    unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
}

/// The index of interface `ifname` (`if_nametoindex`).
pub fn interface_index(ifname: &str) -> io::Result<u32> {
    let name = CString::new(ifname).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {ifname:?} contains NUL"),
        )
    })?;
    // SAFETY: `name` is a valid NUL-terminated string for the call's duration.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => {
            let e = io::Error::last_os_error();
            Err(io::Error::new(e.kind(), format!("interface {ifname}: {e}")))
        }
        i => Ok(i),
    }
}

/// Sets the primary IPv4 address and prefix of `ifname`
/// (`SIOCSIFADDR` + `SIOCSIFNETMASK`, as tun-rs does without its
/// `address-management` feature). Replaces the interface's primary IPv4
/// address if it has one; other addresses are left alone.
pub fn set_ipv4_addr(ifname: &str, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let ctx = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("set address {addr}/{prefix} on {ifname}: {e}"),
        )
    };
    if prefix > 32 {
        return Err(ctx(io::Error::new(
            io::ErrorKind::InvalidInput,
            "prefix exceeds 32",
        )));
    }
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, None).map_err(ctx)?;
    for (request, ip) in [
        (libc::SIOCSIFADDR, addr),
        (libc::SIOCSIFNETMASK, Ipv4Addr::from(mask)),
    ] {
        let mut req = ifreq(ifname).map_err(ctx)?;
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(ip.octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: ifr_ifru is a union at least as large as sockaddr
        // (16 bytes) = sizeof(sockaddr_in); the write is unaligned-safe.
        unsafe {
            ptr::write_unaligned(
                ptr::addr_of_mut!(req.ifr_ifru).cast::<libc::sockaddr_in>(),
                sin,
            )
        };
        ioctl(&sock, request, &mut req).map_err(ctx)?;
    }
    Ok(())
}

/// A zeroed `ifreq` carrying `ifname`.
fn ifreq(ifname: &str) -> io::Result<libc::ifreq> {
    let bytes = ifname.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {ifname:?}"),
        ));
    }
    // SAFETY: ifreq is a C struct of a char array and a union of plain
    // integers, sockaddrs and pointers; all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn ioctl(sock: &Socket, request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: every SIOC[GS]IF* request used here takes a pointer to a struct
    // ifreq, which `req` is (exclusively borrowed, NUL-terminated name).
    // (`Ioctl` is c_ulong on glibc, c_int on musl; the SIOC* values fit both.)
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), request as libc::Ioctl, req) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_facts() {
        assert!(interface_exists("lo"));
        assert!(!interface_exists("nosuchif0"));
        assert!(!interface_exists("bad\0name"));
        assert_eq!(interface_mtu("lo").unwrap(), 65536);
        let addrs = ipv4_addrs().unwrap();
        assert!(
            addrs.contains(&IfAddr {
                ifname: "lo".into(),
                addr: Ipv4Addr::LOCALHOST,
                prefix: 8
            }),
            "{addrs:?}"
        );
    }

    #[test]
    fn errors_carry_context() {
        let e = interface_mtu("nosuchif0").unwrap_err();
        assert!(e.to_string().starts_with("get MTU of nosuchif0: "), "{e}");
        let e = interface_mtu("this-name-is-too-long").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = set_ipv4_addr("lo", Ipv4Addr::LOCALHOST, 33).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(
            e.to_string()
                .starts_with("set address 127.0.0.1/33 on lo: "),
            "{e}"
        );
    }
}
