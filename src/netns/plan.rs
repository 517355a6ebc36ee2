//! The pure half of the wiring: names, NETNS keys, the MTU choice, the
//! [`Plan`] derived from the layout, and the checks against the VM's links,
//! addresses and routes. Flags or CNI values flow in; a plan, a refusal or a
//! set of numbers in use flows out. No system calls.

use super::{refused, usage, Failure, ALIAS_PREFIX, VETH_PREFIX};
use crate::layout::Layout;
use crate::layout6::{self, Layout6};
use crate::sys::netlink::{Addr4, Addr6, Link, Route, Route4, Route6};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// Encapsulation overhead of the default `meshfwd TUN` (outer IPv4 + GRE
/// without key), for a veth MTU when the TUN does not exist yet.
const OVERHEAD: u32 = crate::datapath::Encap::Gre.overhead(crate::wire::gre::BASE_LEN) as u32;

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

/// The address families a container gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Families {
    /// IPv4 /32 and IPv6 /128 with the same container number (the default).
    Dual,
    Ipv4Only,
    /// Only the IPv6 /128; the number may lie above the IPv4 block.
    Ipv6Only,
}

impl Families {
    pub fn v4(self) -> bool {
        self != Families::Ipv6Only
    }
    pub fn v6(self) -> bool {
        self != Families::Ipv4Only
    }
    /// `"dual"`, `"ipv4"` or `"ipv6"` (the JSON `families` value).
    pub fn name(self) -> &'static str {
        match self {
            Families::Dual => "dual",
            Families::Ipv4Only => "ipv4",
            Families::Ipv6Only => "ipv6",
        }
    }
}

/// What attach is about to create (all derived from the layouts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub netns: String,
    pub container: u32,
    /// The container's IPv4 /32 (`None` when IPv6-only).
    pub address: Option<Ipv4Addr>,
    pub vm: Ipv4Addr,
    pub vm_overlay: Ipv4Addr,
    /// The container's IPv6 /128 (`None` when IPv4-only).
    pub address6: Option<Ipv6Addr>,
    /// The VM's IPv6 overlay address (index 1), the container's IPv6
    /// gateway, put on the VM-side veth (`None` when IPv4-only).
    pub vm_overlay6: Option<Ipv6Addr>,
    pub veth: String,
    pub ifname: String,
}

impl Plan {
    pub fn families(&self) -> Families {
        match (self.address.is_some(), self.address6.is_some()) {
            (true, true) => Families::Dual,
            (false, true) => Families::Ipv6Only,
            _ => Families::Ipv4Only,
        }
    }

    /// The same plan without IPv6 (dual-stack falling back to IPv4).
    pub fn without_ipv6(mut self) -> Plan {
        self.address6 = None;
        self.vm_overlay6 = None;
        self
    }
}

/// Container numbers run from 1 to the layout's maximum (exit 2 otherwise).
pub fn check_container(layout: &Layout, layout_name: &str, n: u32) -> Result<(), Failure> {
    check_container_for(layout, layout_name, n, Families::Ipv4Only)
}

/// [`check_container`] for `families`: IPv6-only containers run from 1 to
/// 2^32 − 2 ([`layout6::MAX_CONTAINER`]), beyond the IPv4 block.
pub fn check_container_for(
    layout: &Layout,
    layout_name: &str,
    n: u32,
    families: Families,
) -> Result<(), Failure> {
    if families == Families::Ipv6Only {
        if n == 0 || n > layout6::MAX_CONTAINER {
            return Err(usage(format!(
                "--container {n} is out of range: IPv6-only containers are 1..={} on each VM",
                layout6::MAX_CONTAINER
            )));
        }
        return Ok(());
    }
    let max = layout.max_container();
    if n == 0 || n > max {
        let v6 = if max < layout6::MAX_CONTAINER {
            " (--ipv6-only allows up to 4294967294)"
        } else {
            ""
        };
        return Err(usage(format!(
            "--container {n} is out of range: the {layout_name} layout has containers 1..={max} on each VM{v6}"
        )));
    }
    Ok(())
}

/// Validates the numbers and names and derives the IPv4 addresses (exit 2
/// errors): [`plan_for`] with [`Families::Ipv4Only`].
pub fn plan(
    layout: &Layout,
    layout_name: &str,
    vm: Ipv4Addr,
    netns: &str,
    container: u32,
    ifname: &str,
    mtu: Option<u32>,
) -> Result<Plan, Failure> {
    plan_for(
        layout,
        layout_name,
        &Layout6::default(),
        Families::Ipv4Only,
        vm,
        netns,
        container,
        ifname,
        mtu,
    )
}

/// Validates the numbers and names and derives the addresses of both
/// families (exit 2 errors).
#[allow(clippy::too_many_arguments)]
pub fn plan_for(
    layout: &Layout,
    layout_name: &str,
    layout6: &Layout6,
    families: Families,
    vm: Ipv4Addr,
    netns: &str,
    container: u32,
    ifname: &str,
    mtu: Option<u32>,
) -> Result<Plan, Failure> {
    check_container_for(layout, layout_name, container, families)?;
    let address = if families.v4() {
        Some(
            layout
                .container_addr(vm, container)
                .ok_or_else(|| usage(format!("VM address {vm} is outside the underlay")))?,
        )
    } else {
        None
    };
    let (address6, vm_overlay6) = if families.v6() {
        (
            layout6.container_addr(vm, container),
            Some(layout6.vm_addr(vm)),
        )
    } else {
        (None, None)
    };
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
        address6,
        vm_overlay6,
        veth: veth_name(container),
        ifname: ifname.to_owned(),
    })
}

/// The refusals attach checks against the VM's links, addresses and routes
/// (pure, so it is unit-tested): container number or address in use, or the
/// namespace attached already.
pub fn check_free(
    p: &Plan,
    links: &[Link],
    addrs: &[Addr4],
    routes: &[Route4],
) -> Result<(), Failure> {
    let name_of = |idx: u32| link_name(links, idx);
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
    let Some(address) = p.address else {
        return Ok(());
    };
    let assigned = addrs.iter().find(|a| a.addr == address).map(|a| a.index);
    refuse_if_taken(p.container, address, 32, assigned, routes, &name_of)
}

/// The IPv6 half of [`check_free`]: the container's IPv6 address assigned or
/// routed (/128) here.
pub fn check_free6(
    p: &Plan,
    links: &[Link],
    addrs: &[Addr6],
    routes: &[Route6],
) -> Result<(), Failure> {
    let Some(address) = p.address6 else {
        return Ok(());
    };
    let name_of = |idx: u32| link_name(links, idx);
    let assigned = addrs.iter().find(|a| a.addr == address).map(|a| a.index);
    refuse_if_taken(p.container, address, 128, assigned, routes, &name_of)
}

/// The name of interface `index` among `links`, else `#index`.
fn link_name(links: &[Link], index: u32) -> String {
    links
        .iter()
        .find(|l| l.index == index)
        .map_or_else(|| format!("#{index}"), |l| l.name.clone())
}

/// Container `container`'s `address` (either family) is taken when it is
/// assigned to an interface here (`assigned`: its index) or has a host route
/// (`/host`: 32 or 128) here; `name_of` names an interface index.
fn refuse_if_taken<A: PartialEq + std::fmt::Display>(
    container: u32,
    address: A,
    host: u8,
    assigned: Option<u32>,
    routes: &[Route<A>],
    name_of: &impl Fn(u32) -> String,
) -> Result<(), Failure> {
    if let Some(index) = assigned {
        return Err(refused(format!(
            "container #{container} is in use on this VM: its address {address} is assigned to {}",
            name_of(index)
        )));
    }
    if let Some(r) = routes.iter().find(|r| r.prefix == host && r.dst == address) {
        let dev = r
            .oif
            .map_or(String::new(), |i| format!(" dev {}", name_of(i)));
        return Err(refused(format!(
            "container #{container} is in use on this VM: a route to {address}/{host}{dev} exists"
        )));
    }
    Ok(())
}

/// The container numbers of `vm`'s block that are taken on this VM whatever
/// any allocator recorded: a veth `mfc<N>` exists, or N's address is assigned
/// here or has a /32 route here (hand-made wiring). The CNI IPAM skips them.
pub fn numbers_in_use(
    layout: &Layout,
    vm: Ipv4Addr,
    links: &[Link],
    addrs: &[Addr4],
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

/// The IPv6 half of [`numbers_in_use`]: the container numbers whose IPv6
/// address in `vm`'s /96 is assigned here or has a /128 route here (the VM's
/// own address, index 1, on every veth, is no container).
pub fn numbers_in_use6(
    layout6: &Layout6,
    vm: Ipv4Addr,
    addrs: &[Addr6],
    routes: &[Route6],
) -> std::collections::BTreeSet<u32> {
    let number_of = |a: Ipv6Addr| {
        layout6
            .decompose(a)
            .filter(|d| d.vm == vm && d.index >= 2)
            .map(|d| d.index - 1)
    };
    addrs
        .iter()
        .filter_map(|a| number_of(a.addr))
        .chain(
            routes
                .iter()
                .filter(|r| r.prefix == 128)
                .filter_map(|r| number_of(r.dst)),
        )
        .collect()
}
