//! Unit tests of the pure half of the wiring: names, keys, the MTU choice,
//! plans and range checks, the refusals, the proof that an unaliased veth is
//! ours, and the numbers the CNI IPAM skips. Hand-made links, addresses and
//! routes flow in; no system calls.

use super::*;
use crate::layout::Layout;
use crate::sys::netlink::{Addr4, Link, Route4};
use std::net::Ipv4Addr;
use std::path::PathBuf;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn link(index: u32, name: &str, alias: Option<&str>) -> Link {
    Link {
        alias: alias.map(Into::into),
        ..Link::test_veth(index, name)
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
    assert_eq!(p.address, Some(ip("241.2.0.2")));
    assert_eq!(p.vm_overlay, ip("241.2.0.1"));
    assert_eq!(p.veth, "mfc1");
    assert_eq!(wide_plan(4094).address, Some(ip("241.2.15.255")));
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
        Some(ip("10.16.32.255"))
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
        addr: p.address.unwrap(),
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
    let mut r = Route4::new(p.address.unwrap(), 32, 9);
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
fn dual_stack_plans_and_ipv6_refusals() {
    use crate::layout6::Layout6;
    use crate::sys::netlink::{Addr6, Route6};
    let vm = ip("192.168.16.32");
    let l6 = Layout6::default();
    let p = plan_for(
        &Layout::wide(),
        "wide",
        &l6,
        Families::Dual,
        vm,
        "w",
        3,
        "eth0",
        None,
    )
    .unwrap();
    let c6: std::net::Ipv6Addr = "fd6d:6573:6866:0:c0a8:1020:0:4".parse().unwrap();
    assert_eq!(p.address, Some(ip("241.2.0.4")));
    assert_eq!(p.address6, Some(c6));
    assert_eq!(
        p.vm_overlay6,
        Some("fd6d:6573:6866:0:c0a8:1020:0:1".parse().unwrap())
    );
    assert_eq!(p.families(), Families::Dual);
    assert_eq!(p.clone().without_ipv6().families(), Families::Ipv4Only);
    // the same number in both families: IPv4 host part 4 = IPv6 index 4
    assert!(plan_for(
        &Layout::wide(),
        "wide",
        &l6,
        Families::Dual,
        vm,
        "w",
        4095,
        "eth0",
        None
    )
    .is_err());
    let p6 = plan_for(
        &Layout::wide(),
        "wide",
        &l6,
        Families::Ipv6Only,
        vm,
        "w",
        4095,
        "eth0",
        None,
    )
    .unwrap();
    assert_eq!((p6.address, p6.veth.as_str()), (None, "mfc4095"));
    let lo = link(1, "lo", None);
    let eth = link(2, "eth0", None);
    assert_eq!(check_free6(&p, std::slice::from_ref(&lo), &[], &[]), Ok(()));
    let a = Addr6 {
        index: 2,
        addr: c6,
        prefix: 64,
        nodad: false,
        tentative: false,
    };
    let e = check_free6(&p, &[lo.clone(), eth.clone()], &[a], &[]).unwrap_err();
    assert!(
        e.message()
            .ends_with("its address fd6d:6573:6866:0:c0a8:1020:0:4 is assigned to eth0"),
        "{}",
        e.message()
    );
    let e = check_free6(
        &p,
        &[lo.clone(), eth.clone()],
        &[],
        &[Route6::new(c6, 128, 2)],
    )
    .unwrap_err();
    assert!(
        e.message()
            .ends_with("a route to fd6d:6573:6866:0:c0a8:1020:0:4/128 dev eth0 exists"),
        "{}",
        e.message()
    );
    // the mesh /64 (the TUN's prefix route) is no conflict; IPv4-only plans check nothing
    assert_eq!(
        check_free6(
            &p,
            std::slice::from_ref(&lo),
            &[],
            &[Route6::new(l6.prefix().addr(), 64, 2)]
        ),
        Ok(())
    );
    assert_eq!(
        check_free6(&p.without_ipv6(), &[lo], &[], &[Route6::new(c6, 128, 2)]),
        Ok(())
    );
}

#[test]
fn numbers_in_use6_for_the_cni_ipam() {
    use crate::layout6::Layout6;
    use crate::sys::netlink::{Addr6, Route6};
    let l6 = Layout6::default();
    let vm = ip("192.168.16.32");
    let a = |n: u32| Addr6 {
        index: 3,
        addr: l6.compose(vm, n),
        prefix: 128,
        nodad: true,
        tentative: false,
    };
    // index 1 is the VM (on every veth), another VM's and a /64 do not count
    let addrs = [
        a(1),
        a(5),
        Addr6 {
            addr: l6.compose(ip("192.168.16.33"), 7),
            ..a(0)
        },
    ];
    let routes = [
        Route6::new(l6.compose(vm, 5001), 128, 3),
        Route6::new(l6.compose(vm, 9), 64, 3),
    ];
    let used = numbers_in_use6(&l6, vm, &addrs, &routes);
    assert_eq!(used.into_iter().collect::<Vec<_>>(), vec![4, 5000]);
}
