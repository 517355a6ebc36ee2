//! Wiring a namespace (attach, CNI ADD): a [`Request`] flows in, is planned
//! and checked against the VM, then becomes rtnetlink changes on the VM side
//! and, through a socket opened in NETNS, the container side; an
//! [`Attached`] flows out, or a [`Failure`] after what was created is removed
//! again.

use super::unwire::remove_lo_address_if_unused;
use super::{
    alias_for, check_free, check_free6, choose_mtu, nl, open_netns, plan_for, refused, warn,
    Failure, Families, Plan, LO_LABEL,
};
use crate::layout::Layout;
use crate::layout6::Layout6;
use crate::sys::netlink::{in_netns, Link, Netlink, Route4, Route6};
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long attach waits for both veth ends to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// The result of a successful attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub plan: Plan,
    pub mtu: u32,
    pub ip_forward: Option<bool>,
    /// attach put V/32 on lo (label lo:meshfwd).
    pub lo_address_added: bool,
    /// `net.ipv6.conf.all.forwarding` on this VM, when IPv6 was wired.
    pub ipv6_forwarding: Option<bool>,
    /// Why a default dual-stack attach wired IPv4 only (IPv6 disabled on the
    /// VM or in the container, or an MTU below 1280).
    pub ipv6_unavailable: Option<String>,
}

/// The IPv6 minimum link MTU (RFC 8200): below it the kernel disables IPv6
/// on the interface.
pub const IPV6_MIN_MTU: u32 = 1280;

/// Why IPv6 cannot be used in the calling thread's network namespace (read
/// from `/proc/sys/net/ipv6`, which shows that thread's namespace), or `None`.
fn ipv6_unavailable_here() -> Option<String> {
    let conf = Path::new("/proc/sys/net/ipv6/conf");
    if !conf.join("all/disable_ipv6").exists() {
        return Some("the kernel has no IPv6 (booted with ipv6.disable=1?)".into());
    }
    ["all", "default"].into_iter().find_map(|k| {
        let v = std::fs::read_to_string(conf.join(k).join("disable_ipv6")).ok()?;
        (v.trim() != "0").then(|| format!("net.ipv6.conf.{k}.disable_ipv6 is {}", v.trim()))
    })
}

/// `sysctl -w net.ipv6.conf.IFNAME.accept_ra=0 net.ipv6.conf.IFNAME.accept_dad=0`
/// in the calling thread's network namespace: no router advertisements are
/// taken from the point-to-point link, and the link-local address is usable
/// at once (the /128 is `nodad` anyway).
fn ipv6_link_conf(ifname: &str) -> io::Result<()> {
    let dir = Path::new("/proc/sys/net/ipv6/conf").join(ifname);
    for key in ["accept_ra", "accept_dad"] {
        std::fs::write(dir.join(key), "0").map_err(|e| {
            io::Error::new(e.kind(), format!("write {}: {e}", dir.join(key).display()))
        })?;
    }
    Ok(())
}

/// One wiring job, resolved by the caller (`meshfwd attach` from its flags,
/// `meshfwd-cni` from the network configuration and its IPAM).
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub layout: &'a Layout,
    /// For messages: "wide", "classic" or "custom".
    pub layout_name: &'a str,
    /// This VM's underlay address.
    pub local: Ipv4Addr,
    /// The interface carrying `local`, for the MTU fallback.
    pub underlay_if: Option<&'a str>,
    /// NETNS as [`netns_key`] accepts it.
    pub netns: &'a str,
    pub container: u32,
    pub ifname: &'a str,
    pub mtu: Option<u32>,
    /// meshfwd's TUN, whose MTU the veth pair gets.
    pub tun: &'a str,
    /// The IPv6 mesh prefix.
    pub layout6: &'a Layout6,
    pub families: Families,
    /// IPv6 was asked for explicitly (`--ipv6-only`, `--overlay6`): when it
    /// is unavailable that is an error, not a fallback to IPv4 with a warning.
    pub ipv6_required: bool,
}

/// Wires the container namespace `req.netns` as container `req.container` of
/// this VM (everything [`crate::netns`] lists), or refuses and
/// leaves nothing behind. The single implementation behind `meshfwd attach`
/// and the CNI plugin's ADD.
pub fn wire_netns(req: &Request<'_>) -> Result<Attached, Failure> {
    let mut p = plan_for(
        req.layout,
        req.layout_name,
        req.layout6,
        req.families,
        req.local,
        req.netns,
        req.container,
        req.ifname,
        req.mtu,
    )?;

    let mut vm = Netlink::open().map_err(nl("open rtnetlink socket"))?;
    let links = vm.links().map_err(nl("list links"))?;
    let addrs = vm.addrs().map_err(nl("list addresses"))?;
    let routes = vm.routes().map_err(nl("list routes"))?;
    check_free(&p, &links, &addrs, &routes)?;
    if p.address6.is_some() {
        // Without IPv6 in the kernel the dumps fail or come back empty;
        // the availability check below says so.
        let addrs6 = vm.addrs6().unwrap_or_default();
        let routes6 = vm.routes6().unwrap_or_default();
        check_free6(&p, &links, &addrs6, &routes6)?;
    }

    let (ns, mut ct) = open_netns(&p.netns)?;
    if ct
        .link_by_name(&p.ifname)
        .map_err(nl(format!("look up {} in {}", p.ifname, p.netns)))?
        .is_some()
    {
        return Err(refused(format!(
            "{} already has an interface named {} (choose another --ifname)",
            p.netns, p.ifname
        )));
    }
    let by_name = |n: &str| links.iter().find(|l| l.name == n);
    let mtu = choose_mtu(
        req.mtu,
        by_name(req.tun).and_then(|l| l.mtu),
        req.underlay_if.and_then(by_name).and_then(|l| l.mtu),
    );
    let mut ipv6_unavailable = None;
    if p.address6.is_some() {
        let why = ipv6_unavailable_here()
            .map(|w| format!("IPv6 is disabled on this VM: {w}"))
            .or_else(|| {
                match in_netns(ns.as_fd(), || Ok(ipv6_unavailable_here())) {
                    Ok(w) => w,
                    Err(e) => Some(format!("cannot read /proc/sys/net/ipv6: {e}")),
                }
                .map(|w| format!("IPv6 is disabled in {}: {w}", p.netns))
            })
            .or_else(|| {
                (mtu < IPV6_MIN_MTU).then(|| {
                    format!("the veth MTU {mtu} is below IPv6's minimum of {IPV6_MIN_MTU}")
                })
            });
        if let Some(why) = why {
            if req.ipv6_required {
                return Err(refused(format!(
                    "{why}; cannot give {} an IPv6 address (attach it --ipv4-only, or enable IPv6)",
                    p.netns
                )));
            }
            warn(&format!(
                "{why}: {} gets IPv4 only (--ipv4-only says so without this warning)",
                p.netns
            ));
            p = p.without_ipv6();
            ipv6_unavailable = Some(why);
        }
    }
    let ipv6_forwarding = if p.address6.is_some() {
        let f = std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding")
            .ok()
            .map(|s| s.trim() != "0");
        if f == Some(false) {
            warn(&format!(
                "net.ipv6.conf.all.forwarding is 0 on this VM: {} reaches only this VM over IPv6 until it is enabled (sysctl -w net.ipv6.conf.all.forwarding=1)",
                p.netns
            ));
        }
        f
    } else {
        None
    };
    let lo = by_name("lo").ok_or_else(|| refused("this VM has no lo interface"))?;
    let lo_has_v = addrs
        .iter()
        .any(|a| a.index == lo.index && a.addr == p.vm_overlay);
    let ip_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .ok()
        .map(|s| s.trim() != "0");
    if ip_forward == Some(false) && p.address.is_some() {
        warn(&format!(
            "net.ipv4.ip_forward is 0 on this VM: {} reaches only this VM until it is enabled (sysctl -w net.ipv4.ip_forward=1)",
            p.netns
        ));
    }

    let mut undo = Undo::default();
    match wire(
        &mut vm, &mut ct, &ns, &p, mtu, lo.index, lo_has_v, &mut undo,
    ) {
        Ok(()) => Ok(Attached {
            plan: p,
            mtu,
            ip_forward,
            lo_address_added: undo.lo_addr.is_some(),
            ipv6_forwarding,
            ipv6_unavailable,
        }),
        Err(f) => {
            undo.run(&mut vm, &mut ct, &p);
            Err(f)
        }
    }
}

/// What a failed attach has to remove again.
#[derive(Default)]
struct Undo {
    veth: Option<u32>,
    lo_addr: Option<(u32, Ipv4Addr)>,
    container_lo: Option<u32>,
}

impl Undo {
    fn run(&self, vm: &mut Netlink, ct: &mut Netlink, p: &Plan) {
        if let Some(idx) = self.veth {
            if let Err(e) = vm.del_link(idx) {
                if e.raw_os_error() != Some(libc::ENODEV) {
                    warn(&format!("roll back: delete {}: {e}", p.veth));
                }
            }
        }
        if let Some((lo, v)) = self.lo_addr {
            if let Err(e) = remove_lo_address_if_unused(vm, lo, v, None) {
                warn(&format!("roll back: {}", e.message()));
            }
        }
        if let Some(idx) = self.container_lo {
            if let Err(e) = ct.set_up(idx, false) {
                warn(&format!("roll back: set lo down in {}: {e}", p.netns));
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn wire(
    vm: &mut Netlink,
    ct: &mut Netlink,
    ns: &File,
    p: &Plan,
    mtu: u32,
    lo: u32,
    lo_has_v: bool,
    undo: &mut Undo,
) -> Result<(), Failure> {
    let veth = &p.veth;
    vm.add_veth(veth, &p.ifname, mtu, ns.as_fd())
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EEXIST) => refused(format!(
                "create veth {veth} / {} in {}: it appeared meanwhile (another attach?)",
                p.ifname, p.netns
            )),
            _ => nl(format!(
                "create veth {veth} mtu {mtu} (peer {} in {})",
                p.ifname, p.netns
            ))(e),
        })?;
    let host = vm
        .link_by_name(veth)
        .map_err(nl(format!("look up {veth}")))?
        .ok_or_else(|| refused(format!("{veth} vanished right after it was created")))?;
    undo.veth = Some(host.index);
    vm.set_alias(host.index, &alias_for(&p.netns))
        .map_err(nl(format!("set alias of {veth}")))?;
    if p.address.is_some() {
        vm.enable_proxy_arp(host.index)
            .map_err(nl(format!("enable proxy_arp on {veth}")))?;
    }
    if let Some(v6) = p.vm_overlay6 {
        // Before the link is up: its link-local address skips DAD too.
        ipv6_link_conf(veth).map_err(|e| refused(format!("configure IPv6 on {veth}: {e}")))?;
        vm.add_addr6(host.index, v6, 128, true)
            .map_err(nl(format!("add {v6}/128 nodad to {veth}")))?;
    }
    if !lo_has_v && p.address.is_some() {
        match vm.add_addr(lo, p.vm_overlay, 32, Some(LO_LABEL)) {
            Ok(()) => undo.lo_addr = Some((lo, p.vm_overlay)),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(nl(format!("add {}/32 to lo", p.vm_overlay))(e)),
        }
    }

    // Container side.
    let in_ct = |what: &str| format!("{what} in {}", p.netns);
    let clo = ct
        .link_by_name("lo")
        .map_err(nl(in_ct("look up lo")))?
        .ok_or_else(|| refused(in_ct("no lo")))?;
    if !clo.up {
        ct.set_up(clo.index, true).map_err(nl(in_ct("set lo up")))?;
        undo.container_lo = Some(clo.index);
    }
    let peer = ct
        .link_by_name(&p.ifname)
        .map_err(nl(in_ct(&format!("look up {}", p.ifname))))?
        .ok_or_else(|| refused(in_ct(&format!("veth peer {} not found", p.ifname))))?;
    if let Some(c6) = p.address6 {
        let ifname = p.ifname.as_str();
        in_netns(ns.as_fd(), || ipv6_link_conf(ifname))
            .map_err(|e| refused(in_ct(&format!("configure IPv6 on {ifname}: {e}"))))?;
        ct.add_addr6(peer.index, c6, 128, false)
            .map_err(nl(in_ct(&format!("add {c6}/128 nodad to {ifname}"))))?;
    }
    if let Some(address) = p.address {
        ct.add_addr(peer.index, address, 32, None)
            .map_err(nl(in_ct(&format!("add {}/32 to {}", address, p.ifname))))?;
    }
    ct.set_up(peer.index, true)
        .map_err(nl(in_ct(&format!("set {} up", p.ifname))))?;
    if p.address.is_some() {
        let mut to_vm = Route4::new(p.vm_overlay, 32, peer.index);
        to_vm.scope_link = true;
        ct.add_route(&to_vm).map_err(nl(in_ct(&format!(
            "add route {}/32 dev {}",
            p.vm_overlay, p.ifname
        ))))?;
        let mut default = Route4::new(Ipv4Addr::UNSPECIFIED, 0, peer.index);
        default.gateway = Some(p.vm_overlay);
        default.onlink = true;
        ct.add_route(&default).map_err(nl(in_ct(&format!(
            "add default route via {} dev {} onlink",
            p.vm_overlay, p.ifname
        ))))?;
    }
    if let Some(v6) = p.vm_overlay6 {
        ct.add_route(&Route6::new(v6, 128, peer.index))
            .map_err(nl(in_ct(&format!("add route {v6}/128 dev {}", p.ifname))))?;
        let mut default = Route6::new(Ipv6Addr::UNSPECIFIED, 0, peer.index);
        default.gateway = Some(v6);
        ct.add_route(&default).map_err(nl(in_ct(&format!(
            "add default route via {v6} dev {}",
            p.ifname
        ))))?;
    }

    // VM side up; wait until both ends can transmit, then route.
    vm.set_up(host.index, true)
        .map_err(nl(format!("set {veth} up")))?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let a = vm
            .link_by_index(host.index)
            .map_err(nl(format!("look up {veth}")))?;
        let b = ct
            .link_by_index(peer.index)
            .map_err(nl(in_ct(&format!("look up {}", p.ifname))))?;
        if a.as_ref().is_some_and(Link::ready) && b.as_ref().is_some_and(Link::ready) {
            break;
        }
        if Instant::now() >= deadline {
            warn(&format!(
                "{veth} / {} not ready after {} s ({a:?} / {b:?}); routing it anyway",
                p.ifname,
                READY_TIMEOUT.as_secs()
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if let (Some(c6), Some(v6)) = (p.address6, p.vm_overlay6) {
        let mut route = Route6::new(c6, 128, host.index);
        route.prefsrc = Some(v6);
        vm.add_route(&route)
            .map_err(nl(format!("add route {c6}/128 dev {veth} src {v6}")))?;
    }
    if let Some(address) = p.address {
        let mut route = Route4::new(address, 32, host.index);
        route.scope_link = true;
        route.prefsrc = Some(p.vm_overlay);
        vm.add_route(&route).map_err(nl(format!(
            "add route {}/32 dev {veth} src {}",
            address, p.vm_overlay
        )))?;
    }
    Ok(())
}
