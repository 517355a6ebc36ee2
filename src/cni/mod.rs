//! `meshfwd-cni`, the CNI plugin: a runtime execs it with the command and
//! the container in environment variables (CNI_COMMAND, CNI_CONTAINERID,
//! CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH) and the network configuration
//! as JSON on stdin ([`config`]); a result or a CNI error object goes back on
//! stdout ([`result`]), diagnostics on stderr.
//!
//! ADD takes a container number of this VM's block from the node-local
//! IPAM ([`ipam`]) and wires the namespace with [`crate::netns::wire_netns`]
//! — the code behind `meshfwd attach`, so a CNI container looks exactly like
//! an attached one (veth `mfc<N>`, alias `meshfwd:<netns>`). DEL unwires with
//! [`crate::netns::unwire_netns_with`] and releases the lease; CHECK compares
//! the namespace with the lease; STATUS asks whether meshfwd's TUN is up; GC
//! drops leases (and wiring) of attachments the runtime no longer knows.
//! One lock per network directory serialises invocations, so parallel ADDs
//! never get the same number.
//!
//! An invocation can be killed between any two steps (the lease is written
//! before the wiring starts). What it leaves is recognisable as ours: the
//! lease names the namespace and the number, hence `mfc<N>`; the veth either
//! carries our alias or, killed before the alias was set, is proven ours by
//! its peer (`CNI_IFNAME` in the lease's namespace, see
//! [`crate::netns::is_unrecorded_veth`]). DEL and GC remove both kinds; a
//! repeated ADD whose wiring is not complete (what CHECK verifies) removes
//! them and wires again.

pub mod config;
pub mod ipam;
pub mod result;

use crate::netns::{self, Detached, Expected, Failure, Families};
use crate::sys::netlink::Netlink;
use config::NetConf;
use ipam::{IpamError, Lease, Locked, Store};
use result::{code, AddResult, CniError};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;

/// The process environment a runtime gives the plugin.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Env {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
    pub path: Option<String>,
}

impl Env {
    pub fn from_process() -> Env {
        // Non-UTF-8 values are kept lossily; validation then refuses them.
        let var = |k: &str| {
            std::env::var_os(k)
                .map(|v| v.to_string_lossy().into_owned())
                .filter(|v| !v.is_empty())
        };
        Env {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
            path: var("CNI_PATH"),
        }
    }
}

/// What one invocation prints and how it exits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub exit: u8,
}

impl Outcome {
    fn ok(stdout: String) -> Outcome {
        Outcome {
            stdout,
            stderr: String::new(),
            exit: 0,
        }
    }

    fn err(e: &CniError, version: &str) -> Outcome {
        Outcome {
            stdout: e.to_json(version),
            stderr: format!("meshfwd-cni: error {}: {}", e.code, e.msg),
            exit: 1,
        }
    }
}

/// The text printed when run by hand (no CNI_COMMAND).
pub fn about() -> String {
    format!(
        "CNI plugin meshfwd-cni v{}, supports CNI {}\n\
         Puts containers on the meshfwd overlay: a veth pair to this VM, a /32 and a /128\n\
         with the same number from this VM's blocks (node-local IPAM, no datastore),\n\
         default routes via the VM's overlay addresses. Runtimes call it with CNI_COMMAND=ADD|DEL|CHECK|VERSION|STATUS|GC and\n\
         the network configuration on stdin; see docs/KUBERNETES.md and docs/cni/.",
        env!("CARGO_PKG_VERSION"),
        result::SUPPORTED_VERSIONS.join(", ")
    )
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let env = Env::from_process();
    let mut stdin = Vec::new();
    // One byte over the limit is enough for config::decode to refuse it.
    let read = std::io::stdin()
        .take(config::MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut stdin)
        .map(|_| ());
    let out = match read {
        Ok(()) => run(&env, &stdin),
        Err(e) => Outcome::err(
            &CniError::new(code::IO_FAILURE, format!("read stdin: {e}")),
            result::LATEST,
        ),
    };
    if !out.stdout.is_empty() {
        println!("{}", out.stdout);
    }
    if !out.stderr.is_empty() {
        eprintln!("{}", out.stderr);
    }
    ExitCode::from(out.exit)
}

/// One invocation: dispatch on CNI_COMMAND.
pub fn run(env: &Env, stdin: &[u8]) -> Outcome {
    let Some(command) = env.command.as_deref() else {
        return Outcome {
            stdout: String::new(),
            stderr: about(),
            exit: 1,
        };
    };
    if command == "VERSION" {
        // Answer even for a configuration we would refuse.
        let asked = config::decode(stdin).ok().and_then(|m| {
            m.get("cniVersion")
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        });
        return Outcome::ok(result::version_json(asked.as_deref()));
    }
    // Errors use the configuration's version when it is a supported one.
    let version = config::decode(stdin)
        .ok()
        .and_then(|m| config::version_of(&m).ok())
        .unwrap_or_else(|| result::LATEST.to_owned());
    let outcome = (|| {
        if !["ADD", "DEL", "CHECK", "STATUS", "GC"].contains(&command) {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!(
                    "CNI_COMMAND {command:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"
                ),
            ));
        }
        check_cni_args(env.args.as_deref())?;
        let conf = NetConf::parse(stdin)?;
        if let Some(prev) = &conf.prev_result {
            match command {
                "ADD" | "CHECK" => result::check_prev_result(prev)?,
                // DEL cleans up whatever the prevResult says: the lease
                // names what to remove, and a refusal would leak it.
                "DEL" => {
                    if let Err(e) = result::check_prev_result(prev) {
                        eprintln!("meshfwd-cni: warning: DEL ignores it: {}", e.msg);
                    }
                }
                _ => {}
            }
        }
        match command {
            "ADD" => add(env, &conf),
            "DEL" => del(env, &conf).map(|()| String::new()),
            "CHECK" => check(env, &conf).map(|()| String::new()),
            "STATUS" => status(&conf).map(|()| String::new()),
            _ => gc(&conf).map(|()| String::new()),
        }
    })();
    match outcome {
        Ok(stdout) => Outcome::ok(stdout),
        Err(e) => Outcome::err(&e, &version),
    }
}

fn invalid_env(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_ENV, msg)
}

/// CNI_ARGS is `K=V;K=V`; its values mean nothing to this plugin, but a
/// malformed list is a runtime bug worth reporting.
fn check_cni_args(args: Option<&str>) -> Result<(), CniError> {
    for pair in args.unwrap_or("").split(';').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, _)) if !k.is_empty() => {}
            _ => {
                return Err(invalid_env(format!(
                    "CNI_ARGS: {pair:?} is not KEY=VALUE (expected K1=V1;K2=V2)"
                )))
            }
        }
    }
    Ok(())
}

fn required<'a>(v: &'a Option<String>, name: &str) -> Result<&'a str, CniError> {
    v.as_deref()
        .ok_or_else(|| invalid_env(format!("{name} is not set")))
}

/// Container ids as the spec allows them.
fn container_id(env: &Env) -> Result<&str, CniError> {
    let id = required(&env.container_id, "CNI_CONTAINERID")?;
    let ok = id.len() <= 1024
        && id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !ok {
        return Err(invalid_env(format!(
            "CNI_CONTAINERID {id:?} is not valid (letters, digits, '_', '.', '-')"
        )));
    }
    Ok(id)
}

fn ifname(env: &Env) -> Result<&str, CniError> {
    let name = required(&env.ifname, "CNI_IFNAME")?;
    netns::check_ifname(name)
        .map_err(|_| invalid_env(format!("CNI_IFNAME {name:?} is not a valid interface name")))?;
    Ok(name)
}

/// The attach key of CNI_NETNS (a name under /run/netns or a path).
fn netns_key(netns: &str) -> Result<String, CniError> {
    netns::netns_key(netns).map_err(|f| invalid_env(format!("CNI_NETNS: {}", f.message())))
}

fn wiring(f: Failure) -> CniError {
    CniError::new(code::WIRING, f.message())
}

fn io_error(msg: String) -> CniError {
    CniError::new(code::IO_FAILURE, msg)
}

/// This VM's underlay address (config `local`, else detected as meshfwd does)
/// and the interface that carries it.
fn local(conf: &NetConf) -> Result<(Ipv4Addr, Option<String>), CniError> {
    crate::config::detect_local(&conf.layout, conf.local).map_err(|e| {
        CniError::new(
            code::INVALID_CONFIG,
            format!("{e} (set \"local\" in the network configuration)"),
        )
    })
}

fn open_store(conf: &NetConf) -> Result<Store, CniError> {
    Store::open(&conf.data_dir).map_err(io_error)
}

fn nl_error(what: &str) -> impl FnOnce(std::io::Error) -> CniError + '_ {
    move |e| CniError::new(code::WIRING, format!("{what}: {e}"))
}

// ------------------------------------------------------------------- ADD --

fn add(env: &Env, conf: &NetConf) -> Result<String, CniError> {
    let id = container_id(env)?;
    let ifname = ifname(env)?;
    let netns = required(&env.netns, "CNI_NETNS")?;
    let key = netns_key(netns)?;
    let (local, underlay_if) = local(conf)?;
    let store = open_store(conf)?;
    // Held until the namespace is wired: a parallel ADD sees the lease and
    // the veth of this one.
    let lock = store.lock().map_err(io_error)?;

    let mut vm = Netlink::open().map_err(nl_error("open rtnetlink socket"))?;
    let links = vm.links().map_err(nl_error("list links"))?;
    let addrs = vm.addrs().map_err(nl_error("list addresses"))?;
    let routes = vm.routes().map_err(nl_error("list routes"))?;
    let mut in_use = netns::numbers_in_use(&conf.layout, local, &links, &addrs, &routes);
    if conf.families.v6() {
        // numbers whose IPv6 address is taken here (hand-made wiring); no
        // IPv6 in the kernel means none
        in_use.extend(netns::numbers_in_use6(
            &conf.layout6,
            local,
            &vm.addrs6().unwrap_or_default(),
            &vm.routes6().unwrap_or_default(),
        ));
    }
    let ipv6_only = conf.families == Families::Ipv6Only;
    if ipv6_only {
        // numbers beyond the IPv4 block: every mfc<N> counts
        in_use.extend(
            links
                .iter()
                .filter_map(|l| netns::container_of_veth(&l.name)),
        );
    }
    let (lease, new) = lock
        .allocate_for(
            &conf.layout,
            ipv6_only.then_some(&conf.layout6),
            local,
            id,
            ifname,
            &key,
            &in_use,
        )
        .map_err(|e| match e {
            IpamError::Io(m) => io_error(m),
            IpamError::Full(m) => CniError::new(code::BLOCK_FULL, m),
        })?;
    let Some(number) = lease.number(&conf.layout, local) else {
        return Err(CniError::new(
            code::WIRING,
            format!(
                "{id}/{ifname} holds {} in {}, outside this VM's block (was the layout or \"local\" changed?); DEL it first",
                lease.address,
                store.dir().display()
            ),
        ));
    };
    let veth = netns::veth_name(number);
    let vm_overlay = vm_overlay(conf, local)?;
    let families = families_of(conf, &lease);
    let want6 = ipv6_of(conf, local, number, families);
    // A repeated ADD: done if the wiring is complete, else what an earlier,
    // interrupted ADD (or anyone) left of ours is removed and wired anew.
    let complete = !new
        && lease.netns == key
        && verify(
            &mut vm, &key, netns, number, ifname, &lease, vm_overlay, want6,
        )
        .is_ok();
    if !complete {
        if !new {
            let expected = Expected {
                veth: &veth,
                ifname: &lease.ifname,
            };
            if !lease.netns.is_empty() {
                report(
                    netns::unwire_netns_with(&mut vm, &lease.netns, Some(expected))
                        .map_err(wiring)?,
                );
            }
            if lease.netns != key {
                // The same container and ifname in another namespace: the
                // lease follows it.
                let moved = Lease {
                    netns: key.clone(),
                    ..lease.clone()
                };
                lock.record(&moved).map_err(io_error)?;
            }
        }
        let req = netns::Request {
            layout: &conf.layout,
            layout_name: conf.layout_name,
            local,
            underlay_if: underlay_if.as_deref(),
            netns,
            container: number,
            ifname,
            mtu: conf.mtu,
            tun: &conf.tun,
            layout6: &conf.layout6,
            families,
            ipv6_required: conf.ipv6_required,
        };
        if let Err(f) = netns::wire_netns(&req) {
            release_quietly(&lock, &lease);
            return Err(wiring(f));
        }
    }
    let r = describe(
        &mut vm, &key, netns, &veth, ifname, &lease, conf, local, want6,
    )?;
    Ok(r.to_json(&conf.cni_version))
}

/// The families a lease is wired with: an IPv6 lease is IPv6-only; an IPv4
/// lease is IPv4-only or dual-stack as the configuration says.
fn families_of(conf: &NetConf, lease: &Lease) -> Families {
    match (lease.address, conf.families) {
        (IpAddr::V6(_), _) => Families::Ipv6Only,
        (IpAddr::V4(_), Families::Ipv4Only) => Families::Ipv4Only,
        (IpAddr::V4(_), _) => Families::Dual,
    }
}

/// Container `number`'s IPv6 address and gateway when `families` has IPv6.
fn ipv6_of(
    conf: &NetConf,
    local: Ipv4Addr,
    number: u32,
    families: Families,
) -> Option<(Ipv6Addr, Ipv6Addr)> {
    families
        .v6()
        .then(|| conf.layout6.container_addr(local, number))
        .flatten()
        .map(|c6| (c6, conf.layout6.vm_addr(local)))
}

/// `A/32` or `A/128`, as CNI results write a lease's address.
fn with_prefix(a: IpAddr) -> String {
    match a {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

/// Logs what an unwiring removed.
fn report(d: Detached) {
    match d {
        Detached::Removed(lines) => eprintln!("meshfwd-cni: {}", lines.join("; ")),
        Detached::NotAttached(_) => {}
    }
}

/// The VM's own overlay address (the containers' gateway).
fn vm_overlay(conf: &NetConf, local: Ipv4Addr) -> Result<Ipv4Addr, CniError> {
    conf.layout.vm_overlay_addr(local).ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            format!("{local} is outside the underlay"),
        )
    })
}

/// The veth the wiring of `lease` uses on this VM, when this VM's address is
/// known and the lease lies in its block: what DEL and GC also remove when an
/// interrupted ADD left it without its alias.
fn expected_veth(conf: &NetConf, local: Option<Ipv4Addr>, lease: &Lease) -> Option<String> {
    lease.number(&conf.layout, local?).map(netns::veth_name)
}

fn release_quietly(lock: &Locked<'_>, lease: &Lease) {
    if let Err(e) = lock.remove(lease) {
        eprintln!("meshfwd-cni: warning: release {}: {e}", lease.address);
    }
}

/// The ADD result, read back from both namespaces.
#[allow(clippy::too_many_arguments)]
fn describe(
    vm: &mut Netlink,
    key: &str,
    sandbox: &str,
    veth: &str,
    ifname: &str,
    lease: &Lease,
    conf: &NetConf,
    local: Ipv4Addr,
    want6: Option<(Ipv6Addr, Ipv6Addr)>,
) -> Result<AddResult, CniError> {
    let host = vm
        .link_by_name(veth)
        .map_err(nl_error("look up the VM-side veth"))?;
    let (_ns, mut ct) = netns::open_netns(key).map_err(wiring)?;
    let peer = ct
        .link_by_name(ifname)
        .map_err(nl_error("look up the container interface"))?
        .ok_or_else(|| {
            CniError::new(
                code::WIRING,
                format!("{ifname} is missing in {sandbox} right after wiring"),
            )
        })?;
    let gateway = conf.layout.vm_overlay_addr(local).ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            format!("{local} is outside the underlay"),
        )
    })?;
    // IPv6 as wired: absent when a default dual-stack ADD fell back to IPv4.
    let ipv6 = match want6 {
        Some((c6, v6)) => {
            let addrs6 = ct.addrs6().unwrap_or_default();
            addrs6
                .iter()
                .any(|a| a.index == peer.index && a.addr == c6)
                .then_some((c6, v6))
        }
        None => None,
    };
    Ok(AddResult {
        host_veth: veth.to_owned(),
        host_mac: host.and_then(|l| l.mac),
        ifname: ifname.to_owned(),
        mac: peer.mac,
        sandbox: sandbox.to_owned(),
        address: match lease.address {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        },
        gateway,
        ipv6,
    })
}

// ------------------------------------------------------------------- DEL --

fn del(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let id = container_id(env)?;
    let ifname = ifname(env)?;
    // CNI_NETNS may be missing or gone: the lease names the namespace.
    let env_key = env.netns.as_deref().map(netns_key).transpose()?;
    let store = open_store(conf)?;
    let lock = store.lock().map_err(io_error)?;
    let lease = lock.find(id, ifname).map_err(io_error)?;
    let key = lease
        .as_ref()
        .map(|l| l.netns.clone())
        .filter(|k| !k.is_empty())
        .or(env_key);
    if let Some(key) = key {
        // Without this VM's address (a configuration problem) only the
        // veth with our alias can be found; DEL still does that much.
        let here = lease.as_ref().and_then(|_| local(conf).ok()).map(|l| l.0);
        let veth = lease.as_ref().and_then(|l| expected_veth(conf, here, l));
        let expected = veth
            .as_deref()
            .zip(lease.as_ref())
            .map(|(veth, l)| Expected {
                veth,
                ifname: &l.ifname,
            });
        let mut vm = Netlink::open().map_err(nl_error("open rtnetlink socket"))?;
        report(netns::unwire_netns_with(&mut vm, &key, expected).map_err(wiring)?);
    }
    if let Some(l) = lease {
        lock.remove(&l).map_err(io_error)?;
    }
    Ok(())
}

// ----------------------------------------------------------------- CHECK --

fn mismatch(msg: String) -> CniError {
    CniError::new(code::CHECK_MISMATCH, msg)
}

fn check(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    if !result::at_least(&conf.cni_version, "0.4.0") {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "CHECK needs cniVersion 0.4.0 or later, the configuration says {}",
                conf.cni_version
            ),
        ));
    }
    let id = container_id(env)?;
    let ifname = ifname(env)?;
    let netns = required(&env.netns, "CNI_NETNS")?;
    let key = netns_key(netns)?;
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "CHECK needs \"prevResult\" (the result of ADD) in the configuration",
        )
    })?;
    let (local, _) = local(conf)?;
    let store = open_store(conf)?;
    let lock = store.lock().map_err(io_error)?;
    let lease = lock.find(id, ifname).map_err(io_error)?.ok_or_else(|| {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            format!(
                "no lease for container {id} interface {ifname} in {}",
                store.dir().display()
            ),
        )
    })?;
    let listed = result::prev_result_addresses(prev);
    let want = with_prefix(lease.address);
    if !listed.contains(&want) {
        return Err(mismatch(format!(
            "prevResult does not list {want}, the address leased to {id}/{ifname}"
        )));
    }
    // The chained plugins find the container's interface through the
    // prevResult: it must name CNI_IFNAME in this sandbox.
    if let Some((name, sandbox)) = result::prev_result_interface_of(prev, &want) {
        if name != ifname || sandbox.as_deref().is_some_and(|s| s != netns) {
            return Err(mismatch(format!(
                "prevResult puts {want} on {name} in sandbox {:?}, not on {ifname} in {netns}",
                sandbox.unwrap_or_default()
            )));
        }
    }
    let number = lease.number(&conf.layout, local).ok_or_else(|| {
        mismatch(format!(
            "leased address {} is outside this VM's block",
            lease.address
        ))
    })?;
    // IPv6: the lease's own (IPv6-only), else the twin of the IPv4 lease
    // when ADD reported it (it may have fallen back to IPv4, unless IPv6 was
    // required).
    let want6 = match ipv6_of(conf, local, number, families_of(conf, &lease)) {
        Some((c6, v6)) if lease.address.is_ipv6() => Some((c6, v6)),
        Some((c6, v6)) => {
            let want6 = format!("{c6}/128");
            if listed.contains(&want6) {
                Some((c6, v6))
            } else if conf.ipv6_required {
                return Err(mismatch(format!(
                    "prevResult does not list {want6}, the IPv6 address of {id}/{ifname}"
                )));
            } else {
                None
            }
        }
        None => None,
    };
    if let Some((c6, _)) = want6 {
        let want6 = format!("{c6}/128");
        if let Some((name, sandbox)) = result::prev_result_interface_of(prev, &want6) {
            if name != ifname || sandbox.as_deref().is_some_and(|s| s != netns) {
                return Err(mismatch(format!(
                    "prevResult puts {want6} on {name} in sandbox {:?}, not on {ifname} in {netns}",
                    sandbox.unwrap_or_default()
                )));
            }
        }
    }
    let vm_overlay = vm_overlay(conf, local)?;
    let mut vm = Netlink::open().map_err(nl_error("open rtnetlink socket"))?;
    verify(
        &mut vm, &key, netns, number, ifname, &lease, vm_overlay, want6,
    )
}

/// Whether container `number`'s wiring for `lease` in the namespace `key` is
/// complete: CHECK's comparison, also what decides whether a repeated ADD
/// has anything to do. `want6` is the container's IPv6 address and gateway
/// when it has IPv6.
#[allow(clippy::too_many_arguments)]
fn verify(
    vm: &mut Netlink,
    key: &str,
    netns: &str,
    number: u32,
    ifname: &str,
    lease: &Lease,
    vm_overlay: Ipv4Addr,
    want6: Option<(Ipv6Addr, Ipv6Addr)>,
) -> Result<(), CniError> {
    let want = with_prefix(lease.address);
    let v4 = match lease.address {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    };
    // VM side: the veth with our alias, and the /32 route to the container.
    let veth = netns::veth_name(number);
    let host = vm
        .link_by_name(&veth)
        .map_err(nl_error("look up the VM-side veth"))?
        .ok_or_else(|| {
            mismatch(format!(
                "{veth} (container #{number}) does not exist on this VM"
            ))
        })?;
    let alias = netns::alias_for(key);
    if host.alias.as_deref() != Some(alias.as_str()) {
        return Err(mismatch(format!(
            "{veth} has alias {:?}, expected {alias:?}",
            host.alias.unwrap_or_default()
        )));
    }
    if !host.up {
        return Err(mismatch(format!("{veth} is down")));
    }
    let routes = vm.routes().map_err(nl_error("list routes"))?;
    if let Some(a) = v4 {
        if !routes
            .iter()
            .any(|r| r.prefix == 32 && r.dst == a && r.oif == Some(host.index))
        {
            return Err(mismatch(format!("this VM has no route {a}/32 dev {veth}")));
        }
    }
    if let Some((c6, _)) = want6 {
        let routes6 = vm.routes6().map_err(nl_error("list IPv6 routes"))?;
        if !routes6
            .iter()
            .any(|r| r.prefix == 128 && r.dst == c6 && r.oif == Some(host.index))
        {
            return Err(mismatch(format!(
                "this VM has no route {c6}/128 dev {veth}"
            )));
        }
    }

    // Container side: the interface, its /32 and the default route.
    let (_ns, mut ct) = netns::open_netns(key)
        .map_err(|f| CniError::new(code::UNKNOWN_CONTAINER, f.message().to_owned()))?;
    let peer = ct
        .link_by_name(ifname)
        .map_err(nl_error("look up the container interface"))?
        .ok_or_else(|| mismatch(format!("{netns} has no interface {ifname}")))?;
    if peer.peer_index != Some(host.index) {
        return Err(mismatch(format!(
            "{ifname} in {netns} is not the peer of {veth}"
        )));
    }
    if !peer.up {
        return Err(mismatch(format!("{ifname} in {netns} is down")));
    }
    if let Some(a) = v4 {
        let addrs = ct.addrs().map_err(nl_error("list container addresses"))?;
        if !addrs
            .iter()
            .any(|x| x.index == peer.index && x.addr == a && x.prefix == 32)
        {
            return Err(mismatch(format!("{ifname} in {netns} lacks {want}")));
        }
        let routes = ct.routes().map_err(nl_error("list container routes"))?;
        if !routes
            .iter()
            .any(|r| r.prefix == 0 && r.gateway == Some(vm_overlay) && r.oif == Some(peer.index))
        {
            return Err(mismatch(format!(
                "{netns} has no default route via {vm_overlay} dev {ifname}"
            )));
        }
    }
    if let Some((c6, v6)) = want6 {
        let addrs6 = ct
            .addrs6()
            .map_err(nl_error("list container IPv6 addresses"))?;
        if !addrs6
            .iter()
            .any(|x| x.index == peer.index && x.addr == c6 && x.prefix == 128)
        {
            return Err(mismatch(format!("{ifname} in {netns} lacks {c6}/128")));
        }
        let routes6 = ct
            .routes6()
            .map_err(nl_error("list container IPv6 routes"))?;
        if !routes6
            .iter()
            .any(|r| r.prefix == 0 && r.gateway == Some(v6) && r.oif == Some(peer.index))
        {
            return Err(mismatch(format!(
                "{netns} has no IPv6 default route via {v6} dev {ifname}"
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------- STATUS / GC --

fn status(conf: &NetConf) -> Result<(), CniError> {
    let not_ready = |msg: String| CniError::new(code::NOT_AVAILABLE, msg);
    if !result::at_least(&conf.cni_version, "1.1.0") {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "STATUS needs cniVersion 1.1.0, the configuration says {}",
                conf.cni_version
            ),
        ));
    }
    let mut vm = Netlink::open().map_err(|e| not_ready(format!("open rtnetlink socket: {e}")))?;
    let tun = vm
        .link_by_name(&conf.tun)
        .map_err(|e| not_ready(format!("look up {}: {e}", conf.tun)))?
        .ok_or_else(|| {
            not_ready(format!(
                "meshfwd's TUN {} does not exist on this node: start meshfwd (e.g. systemctl start meshfwd@{})",
                conf.tun, conf.tun
            ))
        })?;
    if !tun.up {
        return Err(not_ready(format!(
            "meshfwd's TUN {} is down on this node: is meshfwd running?",
            conf.tun
        )));
    }
    Ok(())
}

fn gc(conf: &NetConf) -> Result<(), CniError> {
    if !result::at_least(&conf.cni_version, "1.1.0") {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "GC needs cniVersion 1.1.0, the configuration says {}",
                conf.cni_version
            ),
        ));
    }
    let valid = conf.valid_attachments.as_deref().unwrap_or(&[]);
    let store = open_store(conf)?;
    let lock = store.lock().map_err(io_error)?;
    let mut vm = None;
    let mut this_vm = None;
    let mut first_error = None;
    for l in lock.leases().map_err(io_error)? {
        if valid
            .iter()
            .any(|(id, ifname)| *id == l.container_id && *ifname == l.ifname)
        {
            continue;
        }
        if !l.netns.is_empty() {
            if vm.is_none() {
                vm = Some(Netlink::open().map_err(nl_error("open rtnetlink socket"))?);
            }
            let here = *this_vm.get_or_insert_with(|| local(conf).ok().map(|l| l.0));
            let veth = expected_veth(conf, here, &l);
            let expected = veth.as_deref().map(|veth| Expected {
                veth,
                ifname: &l.ifname,
            });
            if let Some(nl) = vm.as_mut() {
                if let Err(f) = netns::unwire_netns_with(nl, &l.netns, expected) {
                    first_error.get_or_insert(wiring(f));
                    continue;
                }
            }
        }
        eprintln!(
            "meshfwd-cni: GC released {} ({}/{})",
            l.address, l.container_id, l.ifname
        );
        if let Err(e) = lock.remove(&l) {
            first_error.get_or_insert(io_error(e));
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn env(cmd: &str) -> Env {
        Env {
            command: Some(cmd.into()),
            container_id: Some("abc".into()),
            netns: Some("/run/netns/x".into()),
            ifname: Some("eth0".into()),
            args: None,
            path: Some("/opt/cni/bin".into()),
        }
    }

    fn error_of(o: &Outcome) -> (u32, String, String) {
        assert_eq!(o.exit, 1, "{o:?}");
        let v: Value = serde_json::from_str(&o.stdout).expect("error JSON on stdout");
        (
            v["code"].as_u64().unwrap() as u32,
            v["msg"].as_str().unwrap().to_owned(),
            v["cniVersion"].as_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn no_command_prints_about_and_fails() {
        let o = run(&Env::default(), b"");
        assert_eq!(o.exit, 1);
        assert!(o.stdout.is_empty());
        assert!(
            o.stderr.starts_with("CNI plugin meshfwd-cni v"),
            "{}",
            o.stderr
        );
        assert!(o.stderr.contains("1.0.0, 1.1.0"));
    }

    #[test]
    fn version_answers_whatever_the_config() {
        for stdin in [&b""[..], b"{", br#"{"cniVersion":"0.4.0"}"#] {
            let o = run(&env("VERSION"), stdin);
            assert_eq!(o.exit, 0);
            let v: Value = serde_json::from_str(&o.stdout).unwrap();
            assert!(v["supportedVersions"]
                .as_array()
                .unwrap()
                .contains(&"1.0.0".into()));
        }
        let o = run(&env("VERSION"), br#"{"cniVersion":"0.4.0"}"#);
        assert!(o.stdout.contains(r#""cniVersion":"0.4.0""#));
    }

    #[test]
    fn bad_input_is_a_cni_error_not_a_panic() {
        let good = br#"{"cniVersion":"1.0.0","name":"m","type":"meshfwd-cni","dataDir":"/nonexistent-meshfwd-test"}"#;
        let (c, m, v) = error_of(&run(&env("ADD"), b"not json"));
        assert_eq!((c, v.as_str()), (code::DECODE, result::LATEST));
        assert!(m.contains("not valid JSON"), "{m}");
        let (c, m, _) = error_of(&run(&env("FROB"), good));
        assert_eq!(c, code::INVALID_ENV);
        assert!(m.contains("FROB"), "{m}");
        let mut e = env("ADD");
        e.container_id = None;
        let (c, m, v) = error_of(&run(&e, good));
        assert_eq!((c, v.as_str()), (code::INVALID_ENV, "1.0.0"));
        assert!(m.contains("CNI_CONTAINERID is not set"), "{m}");
        e.container_id = Some("a/../b".into());
        assert_eq!(error_of(&run(&e, good)).0, code::INVALID_ENV);
        let mut e = env("ADD");
        e.ifname = Some("x".repeat(16));
        assert_eq!(error_of(&run(&e, good)).0, code::INVALID_ENV);
        let mut e = env("ADD");
        e.netns = None;
        assert!(error_of(&run(&e, good)).1.contains("CNI_NETNS"));
        let mut e = env("ADD");
        e.args = Some("IgnoreUnknown=1;broken".into());
        assert!(error_of(&run(&e, good)).1.contains("CNI_ARGS"));
        e.args = Some("IgnoreUnknown=1;K8S_POD_NAME=x".into());
        let (c, _, _) = error_of(&run(
            &e,
            br#"{"cniVersion":"1.0.0","name":"m","local":"1.2.3.4"}"#,
        ));
        assert_eq!(c, code::INVALID_CONFIG);
        let (c, _, _) = error_of(&run(&env("DEL"), br#"{"cniVersion":"3.0.0","name":"m"}"#));
        assert_eq!(c, code::INCOMPATIBLE_VERSION);
        let (c, _, _) = error_of(&run(&env("CHECK"), br#"{"cniVersion":"0.3.1","name":"m"}"#));
        assert_eq!(c, code::INCOMPATIBLE_VERSION);
        let (c, _, _) = error_of(&run(
            &env("STATUS"),
            br#"{"cniVersion":"1.0.0","name":"m"}"#,
        ));
        assert_eq!(c, code::INCOMPATIBLE_VERSION);
        let (c, _, _) = error_of(&run(&env("GC"), br#"{"cniVersion":"1.0.0","name":"m"}"#));
        assert_eq!(c, code::INCOMPATIBLE_VERSION);
    }

    #[test]
    fn malformed_prev_result_is_refused_before_any_state() {
        let dir = std::env::temp_dir().join(format!("meshfwd-cni-prev-{}", std::process::id()));
        let conf = |prev: &str| {
            format!(
                r#"{{"cniVersion":"1.0.0","name":"m","type":"meshfwd-cni","dataDir":"{}","prevResult":{prev}}}"#,
                dir.display()
            )
        };
        for cmd in ["ADD", "CHECK"] {
            for prev in [
                r#"[1]"#,
                r#"{"ips":[{"address":"x"}]}"#,
                r#"{"interfaces":7}"#,
            ] {
                let (c, m, _) = error_of(&run(&env(cmd), conf(prev).as_bytes()));
                assert_eq!(c, code::INVALID_CONFIG, "{cmd} {prev}: {m}");
                assert!(m.starts_with("\"prevResult\""), "{m}");
            }
        }
        // nothing was created: the refusal comes before the IPAM directory
        assert!(!dir.exists());
    }

    #[test]
    fn cni_args_syntax() {
        assert!(check_cni_args(None).is_ok());
        assert!(check_cni_args(Some("")).is_ok());
        assert!(check_cni_args(Some("IgnoreUnknown=1;K8S_POD_NAME=a=b;")).is_ok());
        assert!(check_cni_args(Some("=x")).is_err());
        assert!(check_cni_args(Some("x")).is_err());
    }
}
