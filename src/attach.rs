//! `meshfwd attach NETNS --container N` / `meshfwd detach NETNS`: wire a
//! container network namespace to this VM, and unwire it.
//!
//! Run in the VM's network namespace (the one meshfwd's TUN lives in). For
//! container #N with overlay address C (host part N + 1 of this VM's block)
//! and the VM's own overlay address V (host part 1), attach creates:
//!
//! * VM side: veth `mfc<N>` (see [`veth_name`]), alias `meshfwd:NETNS` (the
//!   record detach looks for), `proxy_arp` on, up, MTU M, and the route
//!   `C/32 dev mfc<N> scope link src V` (added last, see below).
//! * V/32 on `lo` (label `lo:meshfwd`) unless `lo` already has V: the `src V`
//!   route needs V to be a local address, also while meshfwd is not running
//!   (the TUN and its copy of V disappear when meshfwd exits, and the kernel
//!   flushes routes whose `src` is no longer local). detach removes the
//!   labelled address again when no attached container remains; an unlabelled
//!   V on `lo` (set up by someone else) is never touched.
//! * Container side: the veth peer, created directly inside NETNS as
//!   `--ifname` (default eth0) with the same MTU, `lo` up, `C/32` on the
//!   peer, `V/32 dev eth0 scope link`, `default via V dev eth0 onlink`.
//!
//! M is `--mtu`, else the MTU of `--tun` (default tun0) if it exists, else the
//! underlay interface MTU − 24 (1476 if that is unknown).
//!
//! Instant routability: the container-side configuration is complete and
//! both veth ends are ready (carrier, operstate up and transmit queue
//! activated: the kernel drops packets sent to a device whose queue is still
//! the `noop` placeholder) before the VM's `C/32` route is added, so the very
//! first packet that reaches C finds a working path. Nothing else is needed:
//! every meshfwd derives this VM from C without any table.
//!
//! Refusals: container number 0 or above the layout's maximum, invalid
//! `--ifname`/`--mtu`, a layout error (exit 2); container number in use (veth
//! exists, C assigned or routed here), NETNS already attached, NETNS missing
//! or not a network namespace or this VM's own namespace, NETNS already has
//! `--ifname` (exit 1). A failed attach removes what it created. Forwarding
//! (`net.ipv4.ip_forward`) is not changed: when it is off, attach warns.
//!
//! detach finds the veth by its alias, deletes its routes and the veth (which
//! deletes the peer in the container too), then the `lo:meshfwd` address if no
//! attached container remains. Detaching a namespace that is not attached
//! (twice, or after the namespace was deleted, which deletes the pair) is a
//! note and exit 0.
//!
//! All changes go through rtnetlink ([`crate::sys::netlink`]): the container
//! side through a socket opened in NETNS by a short-lived thread; no thread
//! of this process ever stays in another namespace.

use crate::cli::{AttachArgs, DetachArgs};
use crate::layout::Layout;
use crate::sys::netlink::{Link, Netlink, Route4};
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// VM-side veth names: `mfc<N>`.
pub const VETH_PREFIX: &str = "mfc";
/// The alias on the VM-side veth: `meshfwd:<netns>`.
pub const ALIAS_PREFIX: &str = "meshfwd:";
/// Label of the VM overlay address attach puts on `lo`.
pub const LO_LABEL: &str = "lo:meshfwd";
/// Encapsulation overhead of the default `meshfwd TUN` (outer IPv4 + GRE
/// without key), for a veth MTU when the TUN does not exist yet.
const OVERHEAD: u32 = crate::datapath::Encap::Gre.overhead(crate::wire::gre::BASE_LEN) as u32;
/// How long attach waits for both veth ends to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// An error with its exit status: 1 failure/refusal, 2 usage/layout.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    Refused(String),
    Usage(String),
}

impl Failure {
    pub fn code(&self) -> u8 {
        match self {
            Failure::Refused(_) => 1,
            Failure::Usage(_) => 2,
        }
    }
    pub fn message(&self) -> &str {
        match self {
            Failure::Refused(m) | Failure::Usage(m) => m,
        }
    }
}

fn refused(m: impl Into<String>) -> Failure {
    Failure::Refused(m.into())
}

fn usage(m: impl Into<String>) -> Failure {
    Failure::Usage(m.into())
}

/// An rtnetlink failure with what was being done, and a hint for EPERM.
fn nl(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> Failure {
    move |e| {
        let hint = match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => " (needs CAP_NET_ADMIN: run as root)",
            _ => "",
        };
        refused(format!("{what}: {e}{hint}"))
    }
}

// ------------------------------------------------------------------ pure --

/// The VM-side veth of container `n`: `mfc<n>` (at most 13 characters for
/// any layout, below the 15 of IFNAMSIZ).
pub fn veth_name(n: u32) -> String {
    format!("{VETH_PREFIX}{n}")
}

/// The container number of a VM-side veth name (`mfc12` → 12).
pub fn container_of_veth(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(VETH_PREFIX)?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The identity of a NETNS argument, as recorded in the alias: a name under
/// /run/netns (`web1` and `/run/netns/web1` are the same), or a path as given.
pub fn netns_key(spec: &str) -> Result<String, Failure> {
    let bad = |why: &str| usage(format!("NETNS '{spec}': {why}"));
    if spec.is_empty() {
        return Err(bad("empty"));
    }
    if spec.contains('\0') || spec.chars().any(char::is_control) {
        return Err(bad("contains control characters"));
    }
    let key = match spec.strip_prefix("/run/netns/") {
        Some(name) if !name.is_empty() && !name.contains('/') => name,
        _ => spec,
    };
    if !key.contains('/') && (key == "." || key == "..") {
        return Err(bad("not a namespace name"));
    }
    // IFALIASZ is 256 including the terminating NUL.
    if ALIAS_PREFIX.len() + key.len() > 255 {
        return Err(bad("too long"));
    }
    Ok(key.to_owned())
}

/// Where the namespace file of a NETNS key is.
pub fn netns_path(key: &str) -> PathBuf {
    if key.contains('/') {
        PathBuf::from(key)
    } else {
        PathBuf::from("/run/netns").join(key)
    }
}

/// The alias recorded on the VM-side veth.
pub fn alias_for(key: &str) -> String {
    format!("{ALIAS_PREFIX}{key}")
}

/// Checks an interface name the way the kernel does (`dev_valid_name`).
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() >= libc::IFNAMSIZ
        || name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "--ifname '{name}' is not a valid interface name (1-15 characters, no '/', ':' or spaces)"
        ));
    }
    Ok(())
}

/// The veth MTU: `--mtu`, else the TUN's, else underlay − 24, else 1476.
pub fn choose_mtu(explicit: Option<u32>, tun: Option<u32>, underlay: Option<u32>) -> u32 {
    explicit
        .or(tun)
        .or_else(|| {
            underlay
                .and_then(|u| u.checked_sub(OVERHEAD))
                .filter(|m| *m >= 68)
        })
        .unwrap_or(1500 - OVERHEAD)
}

/// What attach is about to create (all derived from the layout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub netns: String,
    pub container: u32,
    pub address: Ipv4Addr,
    pub vm: Ipv4Addr,
    pub vm_overlay: Ipv4Addr,
    pub veth: String,
    pub ifname: String,
}

/// Container numbers run from 1 to the layout's maximum (exit 2 otherwise).
pub fn check_container(layout: &Layout, layout_name: &str, n: u32) -> Result<(), Failure> {
    let max = layout.max_container();
    if n == 0 || n > max {
        return Err(usage(format!(
            "--container {n} is out of range: the {layout_name} layout has containers 1..={max} on each VM"
        )));
    }
    Ok(())
}

/// Validates the numbers and names and derives the addresses (exit 2 errors).
pub fn plan(
    layout: &Layout,
    layout_name: &str,
    vm: Ipv4Addr,
    netns: &str,
    container: u32,
    ifname: &str,
    mtu: Option<u32>,
) -> Result<Plan, Failure> {
    check_container(layout, layout_name, container)?;
    let address = layout
        .container_addr(vm, container)
        .ok_or_else(|| usage(format!("VM address {vm} is outside the underlay")))?;
    let vm_overlay = layout
        .vm_overlay_addr(vm)
        .ok_or_else(|| usage(format!("VM address {vm} is outside the underlay")))?;
    check_ifname(ifname).map_err(usage)?;
    if let Some(m) = mtu {
        if !(68..=65535).contains(&m) {
            return Err(usage(format!("--mtu {m} is out of range (68..=65535)")));
        }
    }
    Ok(Plan {
        netns: netns_key(netns)?,
        container,
        address,
        vm,
        vm_overlay,
        veth: veth_name(container),
        ifname: ifname.to_owned(),
    })
}

/// The result of a successful attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub plan: Plan,
    pub mtu: u32,
    pub ip_forward: Option<bool>,
    /// attach put V/32 on lo (label lo:meshfwd).
    pub lo_address_added: bool,
}

impl Attached {
    pub fn to_json(&self) -> String {
        let p = &self.plan;
        serde_json::json!({
            "netns": p.netns,
            "container": p.container,
            "address": p.address.to_string(),
            "vm": p.vm.to_string(),
            "vm_overlay": p.vm_overlay.to_string(),
            "veth": p.veth,
            "ifname": p.ifname,
            "mtu": self.mtu,
            "ip_forward": self.ip_forward,
            "lo_address_added": self.lo_address_added,
        })
        .to_string()
    }

    pub fn sentence(&self) -> String {
        let p = &self.plan;
        format!(
            "attached {}: container #{} {}/32 on {}, veth {}, via {}, mtu {}",
            p.netns, p.container, p.address, p.ifname, p.veth, p.vm_overlay, self.mtu
        )
    }
}

/// The refusals attach checks against the VM's links, addresses and routes
/// (pure, so it is unit-tested): container number or address in use, or the
/// namespace attached already.
pub fn check_free(
    p: &Plan,
    links: &[Link],
    addrs: &[crate::sys::netlink::Addr4],
    routes: &[Route4],
) -> Result<(), Failure> {
    let name_of = |idx: u32| {
        links
            .iter()
            .find(|l| l.index == idx)
            .map_or_else(|| format!("#{idx}"), |l| l.name.clone())
    };
    if let Some(l) = links.iter().find(|l| l.name == p.veth) {
        let by = l
            .alias
            .as_deref()
            .and_then(|a| a.strip_prefix(ALIAS_PREFIX))
            .map_or(String::new(), |ns| format!(" (attached to {ns})"));
        return Err(refused(format!(
            "container #{} is in use on this VM: {} exists{by}",
            p.container, p.veth
        )));
    }
    let alias = alias_for(&p.netns);
    if let Some(l) = links.iter().find(|l| l.alias.as_deref() == Some(&alias)) {
        let n = container_of_veth(&l.name).map_or(String::new(), |n| format!(" as container #{n}"));
        return Err(refused(format!(
            "{} is already attached on this VM{n} (veth {}); detach it first",
            p.netns, l.name
        )));
    }
    if let Some(a) = addrs.iter().find(|a| a.addr == p.address) {
        return Err(refused(format!(
            "container #{} is in use on this VM: its address {} is assigned to {}",
            p.container,
            p.address,
            name_of(a.index)
        )));
    }
    if let Some(r) = routes.iter().find(|r| r.prefix == 32 && r.dst == p.address) {
        let dev = r
            .oif
            .map_or(String::new(), |i| format!(" dev {}", name_of(i)));
        return Err(refused(format!(
            "container #{} is in use on this VM: a route to {}/32{dev} exists",
            p.container, p.address
        )));
    }
    Ok(())
}

// --------------------------------------------------------------- attach --

pub fn attach(args: &AttachArgs) -> ExitCode {
    match run_attach(args) {
        Ok(a) => {
            if args.json {
                println!("{}", a.to_json());
            } else {
                println!("{}", a.sentence());
            }
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("meshfwd attach: error: {}", f.message());
            ExitCode::from(f.code())
        }
    }
}

/// Warnings name the program the operator ran: `meshfwd attach`, or the
/// CNI plugin, which runs the same wiring.
fn warn(msg: &str) {
    let cni = std::env::args_os()
        .next()
        .is_some_and(|a| a.to_string_lossy().ends_with("meshfwd-cni"));
    let who = if cni { "meshfwd-cni" } else { "meshfwd attach" };
    eprintln!("{who}: warning: {msg}");
}

/// Opens a namespace file and checks it is another network namespace.
pub fn open_netns(key: &str) -> Result<(File, Netlink), Failure> {
    let path = netns_path(key);
    let file = File::open(&path).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => refused(format!(
            "network namespace {key} does not exist ({} not found)",
            path.display()
        )),
        _ => refused(format!("open network namespace {}: {e}", path.display())),
    })?;
    let own = std::fs::metadata("/proc/thread-self/ns/net")
        .map_err(|e| refused(format!("read /proc/thread-self/ns/net: {e}")))?;
    let theirs = file
        .metadata()
        .map_err(|e| refused(format!("stat {}: {e}", path.display())))?;
    if (own.dev(), own.ino()) == (theirs.dev(), theirs.ino()) {
        return Err(refused(format!(
            "{key} is this VM's own network namespace; give the container's"
        )));
    }
    let sock = Netlink::open_in(file.as_fd()).map_err(|e| match e.raw_os_error() {
        Some(libc::EINVAL) => refused(format!("{} is not a network namespace", path.display())),
        _ => nl(format!("enter network namespace {key}"))(e),
    })?;
    Ok((file, sock))
}

fn run_attach(args: &AttachArgs) -> Result<Attached, Failure> {
    let layout = args.layout.resolve().map_err(usage)?;
    // Validate what needs no system access before detecting the local address.
    netns_key(&args.netns)?;
    check_ifname(&args.ifname).map_err(usage)?;
    check_container(&layout, args.layout.name(), args.container)?;
    let (local, underlay_if) = crate::config::detect_local(&layout, args.local).map_err(usage)?;
    wire_netns(&Request {
        layout: &layout,
        layout_name: args.layout.name(),
        local,
        underlay_if: underlay_if.as_deref(),
        netns: &args.netns,
        container: args.container,
        ifname: &args.ifname,
        mtu: args.mtu,
        tun: &args.tun,
    })
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
/// this VM (everything the module documentation lists), or refuses and
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

/// Removes V/32 (label lo:meshfwd) from lo unless a veth attached by meshfwd
/// (other than `except`) remains. Never touches an unlabelled address.
fn remove_lo_address_if_unused(
    vm: &mut Netlink,
    lo: u32,
    v: Ipv4Addr,
    except: Option<u32>,
) -> Result<bool, Failure> {
    let links = vm.links().map_err(nl("list links"))?;
    let others = links.iter().any(|l| {
        Some(l.index) != except
            && l.alias
                .as_deref()
                .is_some_and(|a| a.starts_with(ALIAS_PREFIX))
    });
    if others {
        return Ok(false);
    }
    match vm.del_addr(lo, v, 32) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(false),
        Err(e) => Err(nl(format!("remove {v}/32 from lo"))(e)),
    }
}

// --------------------------------------------------------------- detach --

pub fn detach(args: &DetachArgs) -> ExitCode {
    match run_detach(args) {
        Ok(Detached::Removed(lines)) => {
            for l in lines {
                println!("{l}");
            }
            ExitCode::SUCCESS
        }
        Ok(Detached::NotAttached(note)) => {
            eprintln!("meshfwd detach: note: {note}");
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("meshfwd detach: error: {}", f.message());
            ExitCode::from(f.code())
        }
    }
}

/// What [`unwire_netns`] did: the lines it removed, or why there was nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum Detached {
    Removed(Vec<String>),
    NotAttached(String),
}

fn run_detach(args: &DetachArgs) -> Result<Detached, Failure> {
    // The layout flags are accepted for symmetry with attach and validated;
    // detach itself finds everything from the alias record.
    let layout = args.layout.resolve().map_err(usage)?;
    if let Some(l) = args.local {
        layout
            .check_local(l)
            .map_err(|e| usage(format!("--local: {e}")))?;
    }
    let key = netns_key(&args.netns)?;
    let mut vm = Netlink::open().map_err(nl("open rtnetlink socket"))?;
    unwire_netns(&mut vm, &key)
}

/// Removes what [`wire_netns`] created for the namespace `key` (found by the
/// alias on the VM-side veth), then the `lo:meshfwd` address once no attached
/// container remains. The single implementation behind `meshfwd detach` and
/// the CNI plugin's DEL; nothing attached is a [`Detached::NotAttached`] note.
pub fn unwire_netns(vm: &mut Netlink, key: &str) -> Result<Detached, Failure> {
    unwire_netns_with(vm, key, None)
}

/// The veth a caller expects for a namespace even without its alias record:
/// VM side `veth` (`mfc<N>` of a known container number), container side
/// `ifname`.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    pub veth: &'a str,
    pub ifname: &'a str,
}

/// Whether a VM-side link without an alias is the veth [`wire_netns`] made
/// for `expected` in the namespace `key` before it was interrupted (killed
/// between creating the pair and setting the alias): it is named
/// `expected.veth`, carries no alias at all, is a veth, and its peer is
/// `expected.ifname` in `key`, itself a veth whose peer is this link (the
/// namespace id and both indexes agree). Anything else — another alias, a
/// peer elsewhere, a namespace that cannot be opened — is not ours.
pub fn is_unrecorded_veth(
    l: &Link,
    expected: Expected<'_>,
    vm_nsid_of_key: Option<i32>,
    peer: Option<&Link>,
) -> bool {
    l.name == expected.veth
        && l.alias.as_deref().map_or(true, str::is_empty)
        && l.kind.as_deref() == Some("veth")
        && l.peer_netnsid.is_some()
        && l.peer_netnsid == vm_nsid_of_key
        && peer.is_some_and(|p| {
            Some(p.index) == l.peer_index
                && p.name == expected.ifname
                && p.kind.as_deref() == Some("veth")
                && p.peer_index == Some(l.index)
        })
}

/// Finds the link [`is_unrecorded_veth`] describes, looking into `key`.
fn find_unrecorded_veth<'l>(
    vm: &mut Netlink,
    links: &'l [Link],
    key: &str,
    expected: Expected<'_>,
) -> Option<&'l Link> {
    let l = links.iter().find(|l| l.name == expected.veth)?;
    if l.alias.as_deref().is_some_and(|a| !a.is_empty()) || l.kind.as_deref() != Some("veth") {
        return None;
    }
    let (ns, mut ct) = open_netns(key).ok()?;
    let nsid = vm.nsid_of(ns.as_fd()).ok()?;
    let peer = ct.link_by_index(l.peer_index?).ok()?;
    is_unrecorded_veth(l, expected, nsid, peer.as_ref()).then_some(l)
}

/// [`unwire_netns`], and also the veth `expected` when it is provably the
/// one an interrupted wiring of `key` left without its alias
/// ([`is_unrecorded_veth`]). The CNI plugin passes the `mfc<N>` of its lease.
pub fn unwire_netns_with(
    vm: &mut Netlink,
    key: &str,
    expected: Option<Expected<'_>>,
) -> Result<Detached, Failure> {
    let alias = alias_for(key);
    let links = vm.links().map_err(nl("list links"))?;
    let mut ours: Vec<&Link> = links
        .iter()
        .filter(|l| l.alias.as_deref() == Some(&alias))
        .collect();
    if let Some(e) = expected {
        if let Some(l) = find_unrecorded_veth(vm, &links, key, e) {
            ours.push(l);
        }
    }
    let mut lines = Vec::new();
    if !ours.is_empty() {
        let routes = vm.routes().map_err(nl("list routes"))?;
        for l in &ours {
            for r in routes.iter().filter(|r| r.oif == Some(l.index)) {
                match vm.del_route(r) {
                    Ok(()) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH | libc::ENODEV)) => {}
                    Err(e) => {
                        return Err(nl(format!(
                            "delete route {}/{} dev {}",
                            r.dst, r.prefix, l.name
                        ))(e))
                    }
                }
            }
            match vm.del_link(l.index) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
                Err(e) => return Err(nl(format!("delete {}", l.name))(e)),
            }
            let n =
                container_of_veth(&l.name).map_or(String::new(), |n| format!("container #{n}, "));
            let how = if l.alias.as_deref() == Some(&alias) {
                ""
            } else {
                " (left without its alias by an interrupted wiring)"
            };
            lines.push(format!("detached {key}: {n}veth {} removed{how}", l.name));
        }
    }
    // The lo:meshfwd address, once no attached container remains (also after
    // the last container's namespace was deleted without a detach).
    let lo = links.iter().find(|l| l.name == "lo").map(|l| l.index);
    let addrs = vm.addrs().map_err(nl("list addresses"))?;
    for a in addrs
        .iter()
        .filter(|a| Some(a.index) == lo && a.prefix == 32 && a.label.as_deref() == Some(LO_LABEL))
    {
        // `ours` are gone already; a fresh listing decides.
        if remove_lo_address_if_unused(vm, a.index, a.addr, None)? {
            lines.push(format!(
                "removed {}/32 from lo (no attached container left)",
                a.addr
            ));
        }
    }
    if ours.is_empty() {
        return Ok(Detached::NotAttached(format!(
            "{key} is not attached on this VM (no veth with alias {alias}); nothing to do"
        )));
    }
    Ok(Detached::Removed(lines))
}

/// The container numbers of `vm`'s block that are taken on this VM whatever
/// any allocator recorded: a veth `mfc<N>` exists, or N's address is assigned
/// here or has a /32 route here (hand-made wiring). The CNI IPAM skips them.
pub fn numbers_in_use(
    layout: &Layout,
    vm: Ipv4Addr,
    links: &[Link],
    addrs: &[crate::sys::netlink::Addr4],
    routes: &[Route4],
) -> std::collections::BTreeSet<u32> {
    let number_of = |a: Ipv4Addr| match layout.decompose(a) {
        Some(d) if d.vm == vm => match crate::layout::Role::of_host(d.host) {
            crate::layout::Role::Container(n) => Some(n),
            _ => None,
        },
        _ => None,
    };
    let max = layout.max_container();
    links
        .iter()
        .filter_map(|l| container_of_veth(&l.name))
        .filter(|n| (1..=max).contains(n))
        .chain(addrs.iter().filter_map(|a| number_of(a.addr)))
        .chain(
            routes
                .iter()
                .filter(|r| r.prefix == 32)
                .filter_map(|r| number_of(r.dst)),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::netlink::Addr4;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn link(index: u32, name: &str, alias: Option<&str>) -> Link {
        Link {
            index,
            name: name.into(),
            alias: alias.map(Into::into),
            mtu: Some(1500),
            up: true,
            lower_up: true,
            oper_up: true,
            qdisc: Some("noqueue".into()),
            mac: None,
            kind: Some("veth".into()),
            peer_index: None,
            peer_netnsid: None,
        }
    }

    fn wide_plan(n: u32) -> Plan {
        plan(
            &Layout::wide(),
            "wide",
            ip("192.168.16.32"),
            "web1",
            n,
            "eth0",
            None,
        )
        .unwrap()
    }

    #[test]
    fn veth_names() {
        assert_eq!(veth_name(1), "mfc1");
        assert_eq!(container_of_veth("mfc4094"), Some(4094));
        assert_eq!(container_of_veth("mfc"), None);
        assert_eq!(container_of_veth("mfc01"), None);
        assert_eq!(container_of_veth("mfc1a"), None);
        assert_eq!(container_of_veth("eth0"), None);
        // the largest container number of any layout (30 host bits) fits IFNAMSIZ
        assert!(veth_name((1u32 << 30) - 2).len() < libc::IFNAMSIZ);
        assert!(veth_name(u32::MAX).len() < libc::IFNAMSIZ);
    }

    #[test]
    fn netns_keys_and_paths() {
        assert_eq!(netns_key("web1").unwrap(), "web1");
        assert_eq!(netns_key("/run/netns/web1").unwrap(), "web1");
        assert_eq!(netns_key("/proc/42/ns/net").unwrap(), "/proc/42/ns/net");
        assert_eq!(netns_path("web1"), PathBuf::from("/run/netns/web1"));
        assert_eq!(
            netns_path("/proc/42/ns/net"),
            PathBuf::from("/proc/42/ns/net")
        );
        assert_eq!(alias_for("web1"), "meshfwd:web1");
        for bad in ["", "..", ".", "a\nb", "x\0"] {
            assert!(matches!(netns_key(bad), Err(Failure::Usage(_))), "{bad:?}");
        }
        assert!(netns_key(&"x".repeat(247)).is_ok());
        assert!(netns_key(&"x".repeat(248)).is_err());
    }

    #[test]
    fn interface_names() {
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("a234567890abcde").is_ok());
        for bad in ["", "a234567890abcdef", "a/b", "a b", "a:b", ".", ".."] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mtu_choice() {
        assert_eq!(choose_mtu(Some(1400), Some(1476), Some(1500)), 1400);
        assert_eq!(choose_mtu(None, Some(1472), Some(1500)), 1472);
        assert_eq!(choose_mtu(None, None, Some(9000)), 8976);
        assert_eq!(choose_mtu(None, None, Some(80)), 1476);
        assert_eq!(choose_mtu(None, None, None), 1476);
    }

    #[test]
    fn plans_and_range_checks() {
        let p = wide_plan(1);
        assert_eq!(p.address, ip("241.2.0.2"));
        assert_eq!(p.vm_overlay, ip("241.2.0.1"));
        assert_eq!(p.veth, "mfc1");
        assert_eq!(wide_plan(4094).address, ip("241.2.15.255"));
        let vm = ip("192.168.16.32");
        let l = Layout::wide();
        let e = plan(&l, "wide", vm, "w", 0, "eth0", None).unwrap_err();
        assert_eq!(e.code(), 2);
        assert!(
            e.message().contains("containers 1..=4094"),
            "{}",
            e.message()
        );
        let e = plan(&Layout::classic(), "classic", vm, "w", 255, "eth0", None).unwrap_err();
        assert!(e.message().contains("1..=254"), "{}", e.message());
        assert_eq!(
            plan(&Layout::classic(), "classic", vm, "w", 254, "eth0", None)
                .unwrap()
                .address,
            ip("10.16.32.255")
        );
        assert_eq!(
            plan(&l, "wide", vm, "w", 1, "eth0", Some(67))
                .unwrap_err()
                .code(),
            2
        );
        assert_eq!(
            plan(&l, "wide", vm, "w", 1, "bad name", None)
                .unwrap_err()
                .code(),
            2
        );
    }

    #[test]
    fn refusals() {
        let p = wide_plan(3);
        let lo = link(1, "lo", None);
        let eth = link(2, "eth0", None);
        assert_eq!(check_free(&p, &[lo.clone(), eth.clone()], &[], &[]), Ok(()));
        // veth of the number exists
        let e = check_free(
            &p,
            &[lo.clone(), link(7, "mfc3", Some("meshfwd:other"))],
            &[],
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e,
            Failure::Refused(
                "container #3 is in use on this VM: mfc3 exists (attached to other)".into()
            )
        );
        // same netns attached under another number
        let e = check_free(&p, &[link(8, "mfc5", Some("meshfwd:web1"))], &[], &[]).unwrap_err();
        assert!(
            e.message()
                .contains("web1 is already attached on this VM as container #5 (veth mfc5)"),
            "{}",
            e.message()
        );
        // address assigned here
        let a = Addr4 {
            index: 2,
            addr: p.address,
            prefix: 24,
            label: None,
        };
        let e = check_free(&p, &[lo.clone(), eth.clone()], &[a], &[]).unwrap_err();
        assert!(
            e.message()
                .ends_with("its address 241.2.0.4 is assigned to eth0"),
            "{}",
            e.message()
        );
        // address routed here (hand-made wiring, e.g. the old lib.sh's c3)
        let mut r = Route4::new(p.address, 32, 9);
        r.scope_link = true;
        let e = check_free(&p, &[lo.clone(), link(9, "c3", None)], &[], &[r]).unwrap_err();
        assert!(
            e.message()
                .ends_with("a route to 241.2.0.4/32 dev c3 exists"),
            "{}",
            e.message()
        );
        // a covering prefix is not a conflict
        let wide = Route4::new(ip("240.0.0.0"), 4, 2);
        assert_eq!(check_free(&p, &[lo, eth], &[], &[wide]), Ok(()));
    }

    #[test]
    fn unrecorded_veth_only_when_the_peer_proves_it() {
        // mfc7 (index 40 here) without alias, peer index 2 in the namespace
        // this VM knows as nsid 3; in there eth0 (index 2) points back at 40.
        let mut host = link(40, "mfc7", None);
        host.peer_index = Some(2);
        host.peer_netnsid = Some(3);
        let mut peer = link(2, "eth0", None);
        peer.peer_index = Some(40);
        peer.peer_netnsid = Some(0);
        let e = Expected {
            veth: "mfc7",
            ifname: "eth0",
        };
        assert!(is_unrecorded_veth(&host, e, Some(3), Some(&peer)));
        // an empty alias is no alias
        let mut h = host.clone();
        h.alias = Some(String::new());
        assert!(is_unrecorded_veth(&h, e, Some(3), Some(&peer)));
        // any alias: recorded (ours by alias, or someone else's)
        h.alias = Some("meshfwd:other".into());
        assert!(!is_unrecorded_veth(&h, e, Some(3), Some(&peer)));
        h.alias = Some("uplink".into());
        assert!(!is_unrecorded_veth(&h, e, Some(3), Some(&peer)));
        // another number, or not a veth
        assert!(!is_unrecorded_veth(
            &host,
            Expected {
                veth: "mfc8",
                ifname: "eth0"
            },
            Some(3),
            Some(&peer)
        ));
        let mut h = host.clone();
        h.kind = Some("dummy".into());
        assert!(!is_unrecorded_veth(&h, e, Some(3), Some(&peer)));
        // the peer lives in another namespace, or the namespace has no id here
        assert!(!is_unrecorded_veth(&host, e, Some(4), Some(&peer)));
        assert!(!is_unrecorded_veth(&host, e, None, Some(&peer)));
        let mut h = host.clone();
        h.peer_netnsid = None;
        assert!(!is_unrecorded_veth(&h, e, None, Some(&peer)));
        // the container's interface is not our peer: other name, other
        // index, points elsewhere, not a veth, missing
        assert!(!is_unrecorded_veth(
            &host,
            Expected {
                veth: "mfc7",
                ifname: "net1"
            },
            Some(3),
            Some(&peer)
        ));
        let mut p = peer.clone();
        p.index = 5;
        assert!(!is_unrecorded_veth(&host, e, Some(3), Some(&p)));
        let mut p = peer.clone();
        p.peer_index = Some(41);
        assert!(!is_unrecorded_veth(&host, e, Some(3), Some(&p)));
        let mut p = peer.clone();
        p.kind = None;
        assert!(!is_unrecorded_veth(&host, e, Some(3), Some(&p)));
        assert!(!is_unrecorded_veth(&host, e, Some(3), None));
    }

    #[test]
    fn numbers_in_use_for_the_cni_ipam() {
        let l = Layout::wide();
        let vm = ip("192.168.16.32");
        let links = [
            link(1, "lo", None),
            link(5, "mfc3", Some("meshfwd:a")),
            link(6, "mfc0", None),
            link(7, "mfc4095", None), // beyond the wide layout's 4094
        ];
        let addr = |a: &str| Addr4 {
            index: 1,
            addr: ip(a),
            prefix: 32,
            label: None,
        };
        // the VM's own address (host part 1) and another VM's container do not count
        let addrs = [addr("241.2.0.1"), addr("241.2.0.8"), addr("241.2.16.5")];
        let mut routed = Route4::new(ip("241.2.0.11"), 32, 9);
        routed.scope_link = true;
        let block = Route4::new(ip("241.2.0.0"), 20, 9);
        let used = numbers_in_use(&l, vm, &links, &addrs, &[routed, block]);
        assert_eq!(used.into_iter().collect::<Vec<_>>(), vec![3, 7, 10]);
    }

    #[test]
    fn json_and_sentence() {
        let a = Attached {
            plan: wide_plan(1),
            mtu: 1476,
            ip_forward: Some(true),
            lo_address_added: false,
        };
        let j: serde_json::Value = serde_json::from_str(&a.to_json()).unwrap();
        assert_eq!(j["container"], 1);
        assert_eq!(j["address"], "241.2.0.2");
        assert_eq!(j["vm"], "192.168.16.32");
        assert_eq!(j["vm_overlay"], "241.2.0.1");
        assert_eq!(j["veth"], "mfc1");
        assert_eq!(j["ifname"], "eth0");
        assert_eq!(j["mtu"], 1476);
        assert_eq!(j["netns"], "web1");
        assert_eq!(
            a.sentence(),
            "attached web1: container #1 241.2.0.2/32 on eth0, veth mfc1, via 241.2.0.1, mtu 1476"
        );
    }
}
