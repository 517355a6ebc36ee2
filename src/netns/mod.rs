//! Container network-namespace wiring, the library behind `meshfwd attach` /
//! `detach` (the command line in `src/attach.rs`) and the CNI plugin
//! (`src/cni/`). In flow plain values (a [`Request`]: layout, this VM's
//! underlay address, NETNS, container number, interface name, MTU, TUN; or a
//! NETNS key for unwiring); out flow rtnetlink changes on both ends of a veth
//! pair and an [`Attached`] / [`Detached`] record, or a [`Failure`] with its
//! exit status. Submodules: `plan` (pure derivations and checks, unit-tested
//! in `tests`), `wire` (attach) and `unwire` (detach), the rtnetlink work.
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

mod plan;
mod unwire;
mod wire;

#[cfg(test)]
mod tests;

pub use plan::{
    alias_for, check_container, check_container_for, check_free, check_free6, check_ifname,
    choose_mtu, container_of_veth, netns_key, netns_path, numbers_in_use, numbers_in_use6, plan,
    plan_for, veth_name, Families, Plan,
};
pub use unwire::{is_unrecorded_veth, unwire_netns, unwire_netns_with, Detached, Expected};
pub use wire::{wire_netns, Attached, Request};

use crate::sys::netlink::Netlink;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

/// VM-side veth names: `mfc<N>`.
pub const VETH_PREFIX: &str = "mfc";
/// The alias on the VM-side veth: `meshfwd:<netns>`.
pub const ALIAS_PREFIX: &str = "meshfwd:";
/// Label of the VM overlay address attach puts on `lo`.
pub const LO_LABEL: &str = "lo:meshfwd";

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
pub(crate) fn nl(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> Failure {
    move |e| {
        let hint = match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => " (needs CAP_NET_ADMIN: run as root)",
            _ => "",
        };
        refused(format!("{what}: {e}{hint}"))
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
