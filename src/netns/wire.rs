//! Wiring a namespace (attach, CNI ADD): a [`Request`] flows in, is planned
//! and checked against the VM, then becomes rtnetlink changes on the VM side
//! and, through a socket opened in NETNS, the container side; an
//! [`Attached`] flows out, or a [`Failure`] after what was created is removed
//! again.

use super::unwire::remove_lo_address_if_unused;
use super::{
    alias_for, check_free, choose_mtu, nl, open_netns, plan, refused, warn, Failure, Plan, LO_LABEL,
};
use crate::layout::Layout;
use crate::sys::netlink::{Link, Netlink, Route4};
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
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
}

/// Wires the container namespace `req.netns` as container `req.container` of
/// this VM (everything [`crate::netns`] lists), or refuses and
/// leaves nothing behind. The single implementation behind `meshfwd attach`
/// and the CNI plugin's ADD.
pub fn wire_netns(req: &Request<'_>) -> Result<Attached, Failure> {
    let p = plan(
        req.layout,
        req.layout_name,
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
    let lo = by_name("lo").ok_or_else(|| refused("this VM has no lo interface"))?;
    let lo_has_v = addrs
        .iter()
        .any(|a| a.index == lo.index && a.addr == p.vm_overlay);
    let ip_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .ok()
        .map(|s| s.trim() != "0");
    if ip_forward == Some(false) {
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
    vm.enable_proxy_arp(host.index)
        .map_err(nl(format!("enable proxy_arp on {veth}")))?;
    if !lo_has_v {
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
    ct.add_addr(peer.index, p.address, 32, None)
        .map_err(nl(in_ct(&format!("add {}/32 to {}", p.address, p.ifname))))?;
    ct.set_up(peer.index, true)
        .map_err(nl(in_ct(&format!("set {} up", p.ifname))))?;
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
    let mut route = Route4::new(p.address, 32, host.index);
    route.scope_link = true;
    route.prefsrc = Some(p.vm_overlay);
    vm.add_route(&route).map_err(nl(format!(
        "add route {}/32 dev {veth} src {}",
        p.address, p.vm_overlay
    )))?;
    Ok(())
}
