//! The multi-queue overlay TUN device (tun-rs, sync, no default features).
//!
//! Plain IP packets (no packet-information header, no virtio-net header) flow
//! between the kernel's overlay routes and the workers through it: each worker
//! owns one queue (`IFF_MULTI_QUEUE`), and the kernel spreads flows over the
//! queues. All queues are nonblocking.
//!
//! tun-rs notes (2.8.16, without `address-management`): `DeviceBuilder::new()`
//! brings the link up by default, so an unconfigured open must call
//! `inherit_enable_state()`; the builder's IPv4 address goes through
//! `SIOCSIFADDR`/`SIOCSIFNETMASK`; every open resets the device-wide
//! `TUNSETOFFLOAD` mask to 0. Name-based ioctls act in the calling thread's
//! network namespace.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

use tun_rs::{DeviceBuilder, SyncDevice};

use super::netdev::set_ipv4_addr;

/// Link configuration applied by [`open_tun`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunConfig {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub mtu: u16,
    /// The VM's IPv6 overlay address (dual-stack), assigned with
    /// [`ADDR6_PREFIX`] and `nodad`; `None`: IPv6 off on the TUN.
    pub addr6: Option<Ipv6Addr>,
}

/// The IPv6 address goes on with the mesh prefix length, so the kernel's
/// prefix route sends the whole mesh /64 into the TUN.
pub const ADDR6_PREFIX: u8 = 64;

/// Opens (creating if absent) TUN `name` with `IFF_MULTI_QUEUE` and `queues`
/// queues, all nonblocking. An existing multi-queue TUN of that name is
/// attached to. With `config`, sets the MTU, the IPv4 address/prefix and
/// brings the link up; without, leaves address, MTU and link state alone.
///
/// A device this call creates is not persistent: it disappears when the
/// last queue is closed.
pub fn open_tun(
    name: &str,
    queues: usize,
    config: Option<&TunConfig>,
    offload: bool,
) -> io::Result<Vec<SyncDevice>> {
    if queues == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("open TUN queue {name}: need at least one queue"),
        ));
    }
    let open_err = |q: usize, e: io::Error| {
        let hint = match e.raw_os_error() {
            Some(libc::EINVAL) => " (an existing interface of that name must be a multi-queue TUN)",
            Some(libc::EPERM) => " (need CAP_NET_ADMIN)",
            _ => "",
        };
        io::Error::new(
            e.kind(),
            format!("open TUN queue {name} ({}/{queues}): {e}{hint}", q + 1),
        )
    };
    let build = |offload: bool| {
        DeviceBuilder::new()
            .name(name)
            .inherit_enable_state()
            .with(|b| {
                b.multi_queue(true);
                b.offload(offload);
            })
            .build_sync()
    };
    // IFF_VNET_HDR + TUNSETOFFLOAD(CSUM|TSO4|TSO6[|USO]) lets the kernel hand us
    // TCP super-packets and accept coalesced ones. Fall back (logged once) where
    // the kernel refuses.
    let first = match build(offload) {
        Ok(d) => d,
        Err(e) if offload => {
            log::warn!("TUN {name}: segmentation offload refused ({e}); continuing without it");
            build(false).map_err(|e| open_err(0, e))?
        }
        Err(e) => return Err(open_err(0, e)),
    };
    let mut devs = Vec::with_capacity(queues);
    devs.push(first);
    for q in 1..queues {
        let dev = devs[0].try_clone().map_err(|e| open_err(q, e))?;
        devs.push(dev);
    }
    for (q, dev) in devs.iter().enumerate() {
        dev.set_nonblocking(true).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("set TUN queue {name} ({}/{queues}) nonblocking: {e}", q + 1),
            )
        })?;
    }
    if let Some(c) = config {
        // The kernel may have expanded a pattern like "tun%d".
        let ifname = devs[0].name().unwrap_or_else(|_| name.to_owned());
        devs[0]
            .set_mtu(c.mtu)
            .map_err(|e| io::Error::new(e.kind(), format!("set MTU {} on {ifname}: {e}", c.mtu)))?;
        set_ipv4_addr(&ifname, c.addr, c.prefix)?;
        match c.addr6 {
            Some(a6) => configure_ipv6(&ifname, a6)?,
            None => {
                // IPv4 only. Disable IPv6 before the link goes up, or the
                // kernel sends router solicitations and MLD reports into the TUN.
                if let Err(e) = write_conf6(&ifname, "disable_ipv6", "1") {
                    log::debug!("disable IPv6 on {ifname}: {e}");
                }
            }
        }
        devs[0]
            .enabled(true)
            .map_err(|e| io::Error::new(e.kind(), format!("bring up {ifname}: {e}")))?;
    }
    Ok(devs)
}

/// Writes `/proc/sys/net/ipv6/conf/IFNAME/KNOB`.
fn write_conf6(ifname: &str, knob: &str, value: &str) -> io::Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/{knob}");
    std::fs::write(&path, value).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))
}

/// IPv6 on the (still down) TUN: no link-local address (`addr_gen_mode` 1),
/// hence no router solicitation into the mesh; no multicast flag, hence no
/// all-routers group and no MLD report (a TUN is NOARP, so the kernel joins
/// no solicited-node group either); no router advertisements or
/// autoconfiguration taken from it; then the VM's overlay address with /64,
/// `nodad` (it is unique by construction). The mesh carries unicast only.
fn configure_ipv6(ifname: &str, addr: Ipv6Addr) -> io::Result<()> {
    // A router (forwarding = 1) joined the all-routers groups when the device
    // appeared: leave them (forwarding 0), clear the flag, and restore
    // forwarding, which joins nothing now. In MLDv1 mode, leaving a group
    // never reported (the link was never up) sends nothing; MLDv2 would
    // queue a state-change report and send it once the link is up.
    let forwarding =
        std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{ifname}/forwarding"))
            .unwrap_or_default();
    let router = forwarding.trim() == "1";
    write_conf6(ifname, "force_mld_version", "1")?;
    if router {
        write_conf6(ifname, "forwarding", "0")?;
    }
    super::netdev::clear_multicast(ifname)?;
    if router {
        write_conf6(ifname, "forwarding", "1")?;
    }
    for (knob, value) in [
        ("disable_ipv6", "0"),
        ("addr_gen_mode", "1"),
        ("accept_ra", "0"),
        ("autoconf", "0"),
        ("accept_dad", "0"),
    ] {
        write_conf6(ifname, knob, value)
            .map_err(|e| io::Error::new(e.kind(), format!("IPv6 on {ifname}: {e}")))?;
    }
    let index = super::netdev::interface_index(ifname)?;
    super::netlink::Netlink::open()
        .and_then(|mut nl| nl.add_addr6_nodad(index, addr, ADDR6_PREFIX))
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("set address {addr}/{ADDR6_PREFIX} on {ifname}: {e}"),
            )
        })
}

/// Current MTU of the TUN device behind `dev`.
pub fn tun_mtu(dev: &SyncDevice) -> io::Result<u16> {
    dev.mtu().map_err(|e| {
        let name = dev.name().unwrap_or_else(|_| "?".into());
        io::Error::new(e.kind(), format!("get MTU of TUN {name}: {e}"))
    })
}

/// Writes one packet gathered from `parts` to a TUN queue (`writev`; a TUN
/// write is one packet, whatever the iovecs). EINTR is retried here.
pub fn write_gathered(fd: std::os::fd::RawFd, parts: &[io::IoSlice<'_>]) -> io::Result<usize> {
    loop {
        // SAFETY: IoSlice is ABI-compatible with iovec on Unix; the slices
        // outlive the call and the count is the slice's length.
        let n = unsafe {
            libc::writev(
                fd,
                parts.as_ptr().cast::<libc::iovec>(),
                parts.len() as libc::c_int,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_queues_is_invalid() {
        let Err(e) = open_tun("sysdevnone0", 0, None, false) else {
            panic!("opened a TUN with zero queues");
        };
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(
            e.to_string().starts_with("open TUN queue sysdevnone0: "),
            "{e}"
        );
    }
}
