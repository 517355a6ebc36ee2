//! Root-only tests of the synchronous rtnetlink client (`meshfwd::sys::netlink`)
//! in two throwaway network namespaces (`mfnl<pid>a`, `mfnl<pid>b`), deleted
//! on exit, also when a test fails. Nothing is configured in the root
//! namespace: every socket is opened inside a test namespace with
//! `Netlink::open_in`. Fails (never skips) when not root or without `ip`.

mod common;
use common::{require_root, run, Namespaces};

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use meshfwd::sys::netlink::{Netlink, Route4};

fn own_netns() -> (u64, u64) {
    let m = std::fs::metadata("/proc/thread-self/ns/net").unwrap();
    (m.dev(), m.ino())
}

fn ip4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
#[ignore = "needs root (network namespaces); scripts/test.sh runs it with --include-ignored"]
fn veth_addresses_routes_alias_proxy_arp() {
    require_root();
    let (a, b) = (
        format!("mfnl{}a", std::process::id()),
        format!("mfnl{}b", std::process::id()),
    );
    let mut guard = Namespaces(Vec::new());
    for n in [&a, &b] {
        run(&["ip", "netns", "add", n]);
        guard.0.push(n.clone());
    }
    let fa = File::open(format!("/run/netns/{a}")).unwrap();
    let fb = File::open(format!("/run/netns/{b}")).unwrap();
    let before = own_netns();
    let mut na = Netlink::open_in(fa.as_fd()).unwrap();
    let mut nb = Netlink::open_in(fb.as_fd()).unwrap();
    assert_eq!(own_netns(), before, "the calling thread changed namespace");
    let e = Netlink::open_in(File::open("/dev/null").unwrap().as_fd())
        .err()
        .unwrap();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");

    // A fresh namespace has only lo, down.
    let links = na.links().unwrap();
    assert_eq!(links.len(), 1, "{links:?}");
    let lo_a = links[0].clone();
    assert_eq!(lo_a.name, "lo");
    assert!(!lo_a.up);

    // veth: one end here, the peer created directly in b.
    na.add_veth("v0", "p0", 1400, fb.as_fd()).unwrap();
    let e = na.add_veth("v0", "p1", 1400, fb.as_fd()).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    let v0 = na.link_by_name("v0").unwrap().unwrap();
    assert_eq!(v0.mtu, Some(1400));
    assert!(!v0.up && !v0.ready());
    assert!(na.link_by_name("p0").unwrap().is_none());
    let p0 = nb.link_by_name("p0").unwrap().unwrap();
    assert_eq!(p0.mtu, Some(1400));
    na.set_mtu(v0.index, 1450).unwrap();
    nb.set_mtu(p0.index, 1450).unwrap();
    assert_eq!(na.link_by_index(v0.index).unwrap().unwrap().mtu, Some(1450));

    // alias and proxy_arp
    na.set_alias(v0.index, "meshfwd:test").unwrap();
    let listed = na.links().unwrap();
    let v = listed.iter().find(|l| l.name == "v0").unwrap();
    assert_eq!(v.alias.as_deref(), Some("meshfwd:test"));
    na.enable_proxy_arp(v0.index).unwrap();
    let pa = run(&[
        "ip",
        "netns",
        "exec",
        &a,
        "sysctl",
        "-n",
        "net.ipv4.conf.v0.proxy_arp",
    ]);
    assert_eq!(pa.trim(), "1");

    // up, and ready (carrier, operstate, queue) within a moment
    na.set_up(lo_a.index, true).unwrap();
    na.set_up(v0.index, true).unwrap();
    let lo_b = nb.link_by_name("lo").unwrap().unwrap();
    nb.set_up(lo_b.index, true).unwrap();
    nb.set_up(p0.index, true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !(na.link_by_index(v0.index).unwrap().unwrap().ready()
        && nb.link_by_index(p0.index).unwrap().unwrap().ready())
    {
        assert!(Instant::now() < deadline, "veth pair not ready");
        std::thread::sleep(Duration::from_millis(1));
    }

    // addresses
    let (va, ca) = (ip4("10.99.0.1"), ip4("10.99.0.2"));
    na.add_addr(lo_a.index, va, 32, Some("lo:test")).unwrap();
    let e = na
        .add_addr(lo_a.index, va, 32, Some("lo:test"))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    assert!(na
        .addrs()
        .unwrap()
        .iter()
        .any(|x| x.addr == va && x.prefix == 32 && x.label.as_deref() == Some("lo:test")));
    nb.add_addr(p0.index, ca, 32, None).unwrap();

    // routes: ca/32 dev v0 src va; in b: va/32 dev p0 scope link, default via va onlink
    let mut to_c = Route4::new(ca, 32, v0.index);
    to_c.scope_link = true;
    to_c.prefsrc = Some(va);
    na.add_route(&to_c).unwrap();
    assert_eq!(
        na.add_route(&to_c).unwrap_err().raw_os_error(),
        Some(libc::EEXIST)
    );
    assert!(na.routes().unwrap().contains(&to_c), "{:?}", na.routes());
    let mut to_v = Route4::new(va, 32, p0.index);
    to_v.scope_link = true;
    nb.add_route(&to_v).unwrap();
    let mut dflt = Route4::new(Ipv4Addr::UNSPECIFIED, 0, p0.index);
    dflt.gateway = Some(va);
    dflt.onlink = true;
    nb.add_route(&dflt).unwrap();
    let rb = nb.routes().unwrap();
    assert!(rb.contains(&to_v) && rb.contains(&dflt), "{rb:?}");
    let shown = run(&["ip", "-n", &b, "route"]);
    assert!(
        shown.contains("default via 10.99.0.1 dev p0 onlink"),
        "{shown}"
    );
    let shown = run(&["ip", "-n", &a, "route"]);
    assert!(
        shown.contains("10.99.0.2 dev v0 scope link src 10.99.0.1"),
        "{shown}"
    );
    run(&[
        "ip",
        "netns",
        "exec",
        &a,
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        "10.99.0.2",
    ]);

    // and back
    na.del_route(&to_c).unwrap();
    assert_eq!(
        na.del_route(&to_c).unwrap_err().raw_os_error(),
        Some(libc::ESRCH)
    );
    na.del_addr(lo_a.index, va, 32).unwrap();
    assert_eq!(
        na.del_addr(lo_a.index, va, 32).unwrap_err().raw_os_error(),
        Some(libc::EADDRNOTAVAIL)
    );
    na.del_link(v0.index).unwrap();
    assert!(nb.link_by_name("p0").unwrap().is_none(), "peer survived");
    assert_eq!(
        na.del_link(v0.index).unwrap_err().raw_os_error(),
        Some(libc::ENODEV)
    );
}

#[test]
#[ignore = "needs root (network namespaces); scripts/test.sh runs it with --include-ignored"]
fn ipv6_addresses_routes_and_in_netns() {
    use meshfwd::sys::netlink::{in_netns, Route6};
    use std::net::Ipv6Addr;
    require_root();
    let n = format!("mfnl{}c", std::process::id());
    let mut guard = Namespaces(Vec::new());
    run(&["ip", "netns", "add", &n]);
    guard.0.push(n.clone());
    let f = File::open(format!("/run/netns/{n}")).unwrap();
    // in_netns: /proc/sys/net shows the namespace entered, not ours
    let before = own_netns();
    let other = in_netns(f.as_fd(), || Ok(own_netns())).unwrap();
    assert_ne!(other, before);
    assert_eq!(own_netns(), before, "the calling thread changed namespace");
    in_netns(f.as_fd(), || {
        std::fs::write("/proc/sys/net/ipv6/conf/default/accept_ra", "0")
    })
    .unwrap();
    let out = run(&[
        "ip",
        "netns",
        "exec",
        &n,
        "sysctl",
        "-n",
        "net.ipv6.conf.default.accept_ra",
    ]);
    assert_eq!(out.trim(), "0");

    let mut nl = Netlink::open_in(f.as_fd()).unwrap();
    nl.add_veth("v6a", "v6b", 1500, f.as_fd()).unwrap();
    let a = nl.link_by_name("v6a").unwrap().unwrap();
    let c6: Ipv6Addr = "fd6d:6573:6866:0:c0a8:1020:0:2".parse().unwrap();
    let v6: Ipv6Addr = "fd6d:6573:6866:0:c0a8:1020:0:1".parse().unwrap();
    nl.add_addr6(a.index, v6, 128, true).unwrap();
    let e = nl.add_addr6(a.index, v6, 128, true).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    nl.set_up(a.index, true).unwrap();
    let got = nl.addrs6().unwrap();
    let mine = got.iter().find(|x| x.addr == v6).expect("v6 listed");
    assert!(
        mine.nodad && !mine.tentative && mine.prefix == 128,
        "{mine:?}"
    );
    let mut r = Route6::new(c6, 128, a.index);
    r.prefsrc = Some(v6);
    nl.add_route(&r).unwrap();
    let mut d = Route6::new(Ipv6Addr::UNSPECIFIED, 0, a.index);
    d.gateway = Some(c6); // reachable through the /128 (a local address would be EINVAL)
    nl.add_route(&d).unwrap();
    let routes = nl.routes6().unwrap();
    assert!(routes.contains(&r), "{routes:?}");
    assert!(routes.contains(&d), "{routes:?}");
    // noprefixroute: no kernel route for the /128 itself
    assert!(
        !routes.iter().any(|x| x.dst == v6 && x.prefix == 128),
        "{routes:?}"
    );
    nl.del_route(&r).unwrap();
    assert_eq!(
        nl.del_route(&r).unwrap_err().raw_os_error(),
        Some(libc::ESRCH)
    );
    nl.del_addr6(a.index, v6, 128).unwrap();
    assert!(!nl.addrs6().unwrap().iter().any(|x| x.addr == v6));
}
