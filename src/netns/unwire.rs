//! Unwiring a namespace (detach, CNI DEL and GC): a NETNS key (and, from the
//! CNI plugin, the veth it expects) flows in; the routes and veth recorded by
//! the alias `meshfwd:<key>` (or proven ours by its peer) are deleted, then
//! the `lo:meshfwd` address once unused; a [`Detached`] flows out.

use super::{alias_for, container_of_veth, nl, open_netns, Failure, ALIAS_PREFIX, LO_LABEL};
use crate::sys::netlink::{Link, Netlink};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;

/// What [`unwire_netns`] did: the lines it removed, or why there was nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum Detached {
    Removed(Vec<String>),
    NotAttached(String),
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
            // IPv6 (wired by default): the /128 to the container. An error
            // here (no IPv6 in the kernel) leaves the deletion of the veth
            // to remove them.
            for r in vm
                .routes6()
                .unwrap_or_default()
                .iter()
                .filter(|r| r.oif == Some(l.index) && r.prefix == 128)
            {
                match vm.del_route(r) {
                    Ok(()) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH | libc::ENODEV)) => {}
                    Err(e) => {
                        return Err(nl(format!("delete route {}/128 dev {}", r.dst, l.name))(e))
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

/// Removes V/32 (label lo:meshfwd) from lo unless a veth attached by meshfwd
/// (other than `except`) remains. Never touches an unlabelled address.
pub(super) fn remove_lo_address_if_unused(
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
