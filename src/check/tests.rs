//! Unit tests of `meshfwd check`: hand-written facts flow into the parsers
//! and verdicts, and the report they make is checked line by line.

use super::*;
use crate::datapath::Encap;
use crate::layout::Layout;
use crate::sys::netdev::IfAddr;
use std::io;
use std::net::Ipv4Addr;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn ifa(ifname: &str, addr: &str, prefix: u8) -> IfAddr {
    IfAddr {
        ifname: ifname.into(),
        addr: ip(addr),
        prefix,
    }
}

#[test]
fn instance_check_names_the_running_meshfwd() {
    use crate::procfs::SocketOwner;
    assert_eq!(check_instance("tun0", None).status, Status::Ok);
    assert_eq!(check_instance("tun0", Some(&[])).status, Status::Warn);
    let own = |comm: &str| SocketOwner {
        pid: 4242,
        comm: comm.into(),
        args: vec!["meshfwd".into(), "tun0".into()],
        inodes: vec![7],
    };
    let c = check_instance("tun0", Some(&[own("meshfwd")]));
    assert_eq!(c.status, Status::Ok, "{c:?}");
    assert!(
        c.message.contains("already running") && c.message.contains("pid 4242 (meshfwd tun0)"),
        "{c:?}"
    );
    let c = check_instance("tun0", Some(&[own("squatter")]));
    assert_eq!(c.status, Status::Warn, "{c:?}");
    assert!(c.fix.unwrap().contains("pid 4242"));
}

fn vals(v: &[(&str, u32)]) -> Vec<(String, u32)> {
    v.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn errno(e: i32) -> Result<(), io::Error> {
    Err(io::Error::from_raw_os_error(e))
}

#[test]
fn cap_eff_bits() {
    let s = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\nCapBnd:\t0\n";
    assert_eq!(parse_cap_eff(s), Some(0x1fffeffffff));
    assert_eq!(parse_cap_eff("Name: x\n"), None);
    assert_eq!(
        check_capabilities(Some(0x1fffeffffff), 0, Encap::Gre).status,
        Status::Ok
    );
    assert_eq!(
        check_capabilities(Some(0x3000), 65534, Encap::Gre).status,
        Status::Ok
    );
    let c = check_capabilities(Some(0x1000), 65534, Encap::Gre);
    assert_eq!(c.status, Status::Fail);
    assert!(
        c.message.contains("missing CAP_NET_RAW") && !c.message.contains("missing CAP_NET_ADMIN"),
        "{c:?}"
    );
    let c = check_capabilities(Some(0), 65534, Encap::Gre);
    assert!(
        c.message.contains("missing CAP_NET_ADMIN and CAP_NET_RAW"),
        "{c:?}"
    );
    assert!(c.fix.unwrap().contains("AmbientCapabilities"));
    assert_eq!(check_capabilities(None, 0, Encap::Gre).status, Status::Warn);
}

#[test]
fn tun_device_errors_say_how_to_fix() {
    assert_eq!(
        check_tun_device(&Ok(()), Some((0o666, 0)), 0).status,
        Status::Ok
    );
    let c = check_tun_device(&errno(libc::ENOENT), None, 0);
    assert_eq!(c.status, Status::Fail);
    assert!(c.fix.as_deref().unwrap().contains("modprobe tun"));
    assert!(c
        .fix
        .as_deref()
        .unwrap()
        .contains("mknod /dev/net/tun c 10 200"));
    let c = check_tun_device(&errno(libc::ENODEV), Some((0o666, 0)), 0);
    assert!(c.fix.as_deref().unwrap().contains("modprobe tun"));
    let c = check_tun_device(&errno(libc::EACCES), Some((0o600, 0)), 65534);
    assert!(
        c.message.contains("mode 0600") && c.message.contains("uid 65534"),
        "{c:?}"
    );
    assert!(c.fix.as_deref().unwrap().contains("chmod 0666"));
    let c = check_tun_device(&errno(libc::EPERM), Some((0o666, 0)), 0);
    assert!(c
        .fix
        .as_deref()
        .unwrap()
        .contains("DeviceAllow=/dev/net/tun rw"));
}

#[test]
fn udp_encap_needs_only_cap_net_admin() {
    let u = Encap::Udp;
    assert_eq!(check_capabilities(Some(0x3000), 0, u).status, Status::Ok);
    let c = check_capabilities(Some(0x1000), 65534, u);
    assert_eq!(c.status, Status::Warn, "{c:?}");
    assert!(c.message.contains("wrong_encap"), "{c:?}");
    let c = check_capabilities(Some(0x2000), 65534, u);
    assert_eq!(c.status, Status::Fail, "{c:?}");
    assert!(c.message.contains("missing CAP_NET_ADMIN") && c.message.contains("optional"));
    assert_eq!(check_raw_socket(&Ok(()), u).status, Status::Ok);
    let c = check_raw_socket(&errno(libc::EPERM), u);
    assert_eq!(c.status, Status::Warn, "{c:?}");
    assert!(c.message.contains("Operation not permitted"), "{c:?}");
    // GRE mode is unchanged by all this.
    assert_eq!(
        check_raw_socket(&errno(libc::EPERM), Encap::Gre).status,
        Status::Fail
    );
    assert_eq!(
        check_capabilities(Some(0x1000), 0, Encap::Gre).status,
        Status::Fail
    );
}

#[test]
fn udp_encap_mtu_overhead() {
    let c = check_mtu(Some(("eth0", 1500)), "tun0", None, Encap::Udp);
    assert_eq!(c.status, Status::Ok);
    assert!(
        c.message.contains(
            "TUN MTU 1468 (minus 32: IPv4 20 + UDP 8 + GRE 4; 1464 with --key, minus 36)"
        ),
        "{c:?}"
    );
    let c = check_mtu(Some(("eth0", 1500)), "tun0", Some(1476), Encap::Udp);
    assert_eq!(
        c.status,
        Status::Warn,
        "the GRE MTU is too big for UDP: {c:?}"
    );
    assert_eq!(
        check_mtu(Some(("eth0", 100)), "tun0", None, Encap::Udp).status,
        Status::Fail
    );
    assert!(check_mtu(None, "tun0", None, Encap::Udp)
        .message
        .contains("TUN MTU 1468"));
}

#[test]
fn udp_port_verdicts() {
    let at = |bind, holders| UdpPortFacts {
        local: ip("192.168.16.32"),
        port: 4754,
        bind,
        holders,
    };
    let inuse = || errno(libc::EADDRINUSE);
    let c = check_udp_port(Some(&at(Ok(()), vec![])), 4754);
    assert_eq!(c.status, Status::Ok);
    assert!(
        c.message.contains("UDP 192.168.16.32:4754 is free"),
        "{c:?}"
    );
    let own = Holder::Meshfwd { pid: 7, udp: true };
    let c = check_udp_port(Some(&at(inuse(), vec![own.clone()])), 4754);
    assert_eq!(c.status, Status::Ok, "{c:?}");
    assert!(c
        .message
        .contains("meshfwd --encap udp (pid 7) (already running)"));
    // A GRE-mode meshfwd holds the port too (wrong_encap counting).
    let gre = Holder::Meshfwd { pid: 8, udp: false };
    let c = check_udp_port(Some(&at(inuse(), vec![gre])), 4754);
    assert_eq!(c.status, Status::Fail, "{c:?}");
    assert!(
        c.fix
            .as_deref()
            .unwrap()
            .contains("stop the GRE-mode meshfwd"),
        "{c:?}"
    );
    let py = Holder::Program {
        comm: "python3".into(),
        pid: 9,
    };
    let c = check_udp_port(Some(&at(inuse(), vec![own.clone(), py])), 4754);
    assert_eq!(c.status, Status::Fail, "{c:?}");
    assert!(
        c.message.contains("python3 (pid 9)")
            && c.fix.as_deref().unwrap().contains("ip fou del port 4754")
    );
    let c = check_udp_port(Some(&at(inuse(), vec![Holder::Kernel])), 4754);
    assert_eq!(c.status, Status::Fail, "{c:?}");
    // Sockets nobody could be named for: not a failure (an unprivileged
    // check cannot see another user's meshfwd), and never "ok" either.
    let c = check_udp_port(
        Some(&at(inuse(), vec![own, Holder::Unseen { uid: 1000 }])),
        4754,
    );
    assert_eq!(c.status, Status::Warn, "{c:?}");
    assert!(c.message.contains("uid 1000"), "{c:?}");
    assert_eq!(
        check_udp_port(Some(&at(inuse(), vec![])), 4754).status,
        Status::Warn
    );
    let c = check_udp_port(Some(&at(errno(libc::EADDRNOTAVAIL), vec![])), 4754);
    assert_eq!(c.status, Status::Fail, "{c:?}");
    assert_eq!(check_udp_port(None, 4754).status, Status::Warn);
}

#[test]
fn proc_net_udp_lines() {
    let t = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  118: 2010A8C0:1292 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 41234 2 0000000000000000 0
  119: 00000000:1292 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 0 2 0000000000000000 0
  120: 2110A8C0:1292 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 555 2 0000000000000000 0
  121: 2010A8C0:1293 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 777 2 0000000000000000 0
garbage
";
    let t6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
   1: 00000000000000000000000000000000:1292 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000   105        0 900 2 0000000000000000 0
   2: 0000000000000000FFFF00002010A8C0:1292 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 901 2 0000000000000000 0
   3: 0000000000000000FFFF00002110A8C0:1292 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 902 2 0000000000000000 0
";
    // 0x1292 = 4754; 2010A8C0 is 192.168.16.32 as printed on a little-endian host.
    if cfg!(target_endian = "little") {
        let a = ip("192.168.16.32");
        assert_eq!(
            parse_proc_net_udp(t, a, 4754, false),
            vec![(41234, 0), (0, 0)]
        );
        assert_eq!(
            parse_proc_net_udp(t, ip("192.168.16.33"), 4754, false),
            vec![(0, 0), (555, 1000)]
        );
        assert_eq!(parse_proc_net_udp(t, a, 4755, false), vec![(777, 0)]);
        assert_eq!(
            parse_proc_net_udp(t6, a, 4754, true),
            vec![(900, 105), (901, 0)]
        );
    }
    assert!(parse_proc_net_udp(t, ip("10.0.0.1"), 1, false).is_empty());
    assert!(parse_proc_net_udp(t6, ip("10.0.0.1"), 4754, false).is_empty());
}

#[test]
fn raw_socket_needs_cap_net_raw() {
    assert_eq!(check_raw_socket(&Ok(()), Encap::Gre).status, Status::Ok);
    let c = check_raw_socket(&errno(libc::EPERM), Encap::Gre);
    assert_eq!(c.status, Status::Fail);
    assert!(c.fix.unwrap().contains("CAP_NET_RAW"));
    let c = check_raw_socket(&errno(libc::EAFNOSUPPORT), Encap::Gre);
    assert!(c.fix.unwrap().contains("RestrictAddressFamilies"));
}

#[test]
fn gre_modules_are_ok_either_way_and_not_needed() {
    let none = GreFacts {
        release: "6.18.0".into(),
        ..Default::default()
    };
    let c = check_gre_modules(&none, Encap::Gre);
    assert_eq!(c.status, Status::Ok);
    assert!(c.message.contains("no kernel GRE support found"), "{c:?}");
    assert!(c.message.contains("does not need"));
    assert!(c.message.contains("/proc/modules (absent"));
    assert!(c.message.contains("/lib/modules/6.18.0 (absent)"));
    let avail = GreFacts {
        proc_modules: Some("bridge 1 0 - Live 0x0\n".into()),
        modules_dir: true,
        module_files: vec!["/lib/modules/6.1/kernel/net/ipv4/ip_gre.ko.xz".into()],
        ..none.clone()
    };
    let c = check_gre_modules(&avail, Encap::Gre);
    assert_eq!(c.status, Status::Ok);
    assert!(
        c.message.contains("ip_gre not loaded") && c.message.contains("ip_gre.ko.xz available")
    );
    let loaded = GreFacts {
        proc_modules: Some("ip_gre 32768 0 - Live 0x0\ngre 16384 1 ip_gre, Live 0x0\n".into()),
        ..none.clone()
    };
    let c = check_gre_modules(&loaded, Encap::Gre);
    assert_eq!(c.status, Status::Ok);
    assert!(c.message.contains("is loaded") && c.message.contains("does not need"));
    let sys = GreFacts {
        sys_ip_gre: true,
        ..none
    };
    assert!(check_gre_modules(&sys, Encap::Gre)
        .message
        .contains("is loaded"));
}

#[test]
fn ip_forward() {
    assert_eq!(check_ip_forward(Some(1)).status, Status::Ok);
    let c = check_ip_forward(Some(0));
    assert_eq!(c.status, Status::Fail);
    assert!(c.fix.unwrap().contains("sysctl -w net.ipv4.ip_forward=1"));
    assert_eq!(check_ip_forward(None).status, Status::Warn);
}

#[test]
fn rp_filter_strict_warns_with_effective_value() {
    let ok = check_rp_filter(
        &vals(&[("all", 0), ("default", 2), ("eth0", 0)]),
        Some("eth0"),
        "tun0",
    );
    assert_eq!(ok.status, Status::Ok, "{ok:?}");
    assert!(
        ok.message
            .contains("tun0 (TUN, not created yet: inherits default) = 2"),
        "{ok:?}"
    );
    // strict on the underlay interface
    let c = check_rp_filter(
        &vals(&[("all", 0), ("default", 0), ("eth0", 1)]),
        Some("eth0"),
        "tun0",
    );
    assert_eq!(c.status, Status::Warn);
    assert!(c.message.contains("eth0 (underlay)"), "{c:?}");
    let fix = c.fix.unwrap();
    assert!(fix.contains("net.ipv4.conf.eth0.rp_filter=2"), "{fix}");
    assert!(!fix.contains("conf.all."), "{fix}");
    // all=1 makes every interface strict: the fix must lower `all` too
    let c = check_rp_filter(
        &vals(&[("all", 1), ("default", 0), ("eth0", 0)]),
        Some("eth0"),
        "tun0",
    );
    assert_eq!(c.status, Status::Warn);
    let fix = c.fix.unwrap();
    assert!(fix.contains("net.ipv4.conf.all.rp_filter=2"), "{fix}");
    // loose wins over strict (max), all=2 with eth0=1 is loose
    let c = check_rp_filter(
        &vals(&[("all", 2), ("default", 1), ("eth0", 1)]),
        Some("eth0"),
        "tun0",
    );
    assert_eq!(c.status, Status::Ok, "{c:?}");
    // a TUN not created yet inherits `default`
    let c = check_rp_filter(&vals(&[("all", 0), ("default", 1)]), None, "tun0");
    assert_eq!(c.status, Status::Warn);
    assert!(c.fix.unwrap().contains("net.ipv4.conf.default.rp_filter=2"));
    // an existing TUN uses its own value, not default
    let c = check_rp_filter(
        &vals(&[("all", 0), ("default", 1), ("tun0", 0)]),
        None,
        "tun0",
    );
    assert_eq!(c.status, Status::Ok, "{c:?}");
}

#[test]
fn local_address_found_ambiguous_none() {
    let l = Layout::wide();
    let c = check_local_address(&l, &Ok((ip("192.168.16.32"), Some("eth0".into()))), &[]);
    assert_eq!(c.status, Status::Ok);
    assert!(
        c.message.contains("241.2.0.0/20") && c.message.contains("241.2.0.1"),
        "{c:?}"
    );
    let c = check_local_address(&l, &Ok((ip("192.168.16.32"), None)), &[]);
    assert_eq!(c.status, Status::Warn);
    let addrs = [
        ifa("eth0", "192.168.1.1", 16),
        ifa("eth1", "192.168.2.1", 16),
    ];
    let c = check_local_address(&l, &Err("several addresses".into()), &addrs);
    assert_eq!(c.status, Status::Fail);
    assert!(c.fix.unwrap().contains("--local"));
    let c = check_local_address(
        &l,
        &Err("no address".into()),
        &[ifa("eth0", "192.0.2.2", 24)],
    );
    assert_eq!(c.status, Status::Fail);
    assert!(c.fix.unwrap().contains("192.168.0.0/16"));
}

#[test]
fn layout_fit() {
    let l = Layout::wide();
    let lo = ifa("lo", "127.0.0.1", 8);
    let c = check_layout(
        &l,
        &[lo.clone(), ifa("eth0", "192.168.16.32", 16)],
        "tun0",
        None,
    );
    assert_eq!(c.status, Status::Ok, "{c:?}");
    // nothing inside the underlay: suggest a layout over the host's network
    let c = check_layout(
        &l,
        &[lo.clone(), ifa("eth0", "192.0.2.2", 24)],
        "tun0",
        None,
    );
    assert_eq!(c.status, Status::Warn);
    assert!(c.message.contains("192.0.2.2/24 on eth0"), "{c:?}");
    assert_eq!(
        c.fix.unwrap(),
        "if the VMs share 192.0.2.0/24: --overlay 240.0.0.0/4 --underlay 192.0.2.0/24 (on every VM)"
    );
    // a host address inside the classic overlay on another interface
    let l = Layout::classic();
    let own = l.block(ip("192.168.16.32"));
    let addrs = [
        lo.clone(),
        ifa("eth0", "192.168.16.32", 16),
        ifa("eth1", "10.200.0.5", 16),
        ifa("lo", "10.16.32.1", 32),
        ifa("tun0", "10.16.32.1", 8),
    ];
    let c = check_layout(&l, &addrs, "tun0", own);
    assert_eq!(c.status, Status::Warn);
    assert!(c.message.contains("10.200.0.5/16 on eth1"), "{c:?}");
    assert!(!c.message.contains("10.16.32.1"), "{c:?}");
    let c = check_layout(&l, &addrs[..2], "tun0", own);
    assert_eq!(c.status, Status::Ok);
}

#[test]
fn mtu_arithmetic() {
    let c = check_mtu(Some(("eth0", 1500)), "tun0", None, Encap::Gre);
    assert_eq!(c.status, Status::Ok);
    assert!(
        c.message.contains("TUN MTU 1476") && c.message.contains("1472 with --key"),
        "{c:?}"
    );
    let c = check_mtu(Some(("eth0", 9000)), "tun0", Some(8976), Encap::Gre);
    assert_eq!(c.status, Status::Ok);
    assert!(c.message.contains("too large if --key"));
    let c = check_mtu(Some(("eth0", 1500)), "tun0", Some(1500), Encap::Gre);
    assert_eq!(c.status, Status::Warn);
    assert!(c.fix.unwrap().contains("ip link set tun0 mtu 1476"));
    assert_eq!(
        check_mtu(Some(("eth0", 90)), "tun0", None, Encap::Gre).status,
        Status::Fail
    );
    assert_eq!(
        check_mtu(None, "tun0", None, Encap::Gre).status,
        Status::Warn
    );
}

const PROC_ROUTE: &str =
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
tun0\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n\
c1\t5B20100A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n\
eth1\t00FFFF0A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
*\t0000640A\t00000000\t0201\t0\t0\t0\t0000FFFF\t0\t0\t0\n";

#[test]
fn parses_proc_net_route() {
    let r = parse_proc_net_route(PROC_ROUTE);
    assert_eq!(r.len(), 6);
    assert_eq!(r[0].dst.to_string(), "0.0.0.0/0");
    assert_eq!(r[0].gateway, Some(ip("192.0.2.1")));
    assert_eq!(r[1].dst.to_string(), "192.0.2.0/24");
    assert_eq!(r[1].gateway, None);
    assert_eq!(r[2].dst.to_string(), "10.0.0.0/8");
    assert_eq!(r[3].dst.to_string(), "10.16.32.91/32");
    assert_eq!(r[4].metric, 100);
    assert_eq!(r[5].ifname, "*");
    assert!(parse_proc_net_route("Iface\n garbage\n").is_empty());
}

#[test]
fn overlay_route_overlap() {
    let routes = parse_proc_net_route(PROC_ROUTE);
    let l = Layout::classic();
    let own = l.block(ip("192.168.16.32"));
    let c = check_overlay_routes(Some(&routes), l.overlay(), "tun0", own);
    assert_eq!(c.status, Status::Warn);
    // the default route, the underlay subnet, tun0's overlay route and the
    // local container's /32 are fine; 10.255.255.0/24 and the blackhole are not
    assert!(c.message.starts_with("2 route(s)"), "{c:?}");
    assert!(c.message.contains("10.255.255.0/24 dev eth1"), "{c:?}");
    assert!(
        c.message.contains("10.100.0.0/16 (unreachable/blackhole)"),
        "{c:?}"
    );
    assert!(!c.message.contains("10.16.32.91"), "{c:?}");
    // the wide overlay is untouched by the same table
    let w = Layout::wide();
    let c = check_overlay_routes(Some(&routes), w.overlay(), "tun0", None);
    assert_eq!(c.status, Status::Ok, "{c:?}");
    // without a known block, a container /32 is reported
    let c = check_overlay_routes(Some(&routes), l.overlay(), "tun0", None);
    assert!(c.message.contains("10.16.32.91/32 dev c1"), "{c:?}");
    // a gateway inside the overlay
    let r = vec![Route {
        ifname: "eth0".into(),
        dst: "0.0.0.0/0".parse().unwrap(),
        gateway: Some(ip("10.1.1.1")),
        metric: 0,
    }];
    let c = check_overlay_routes(Some(&r), l.overlay(), "tun0", own);
    assert_eq!(c.status, Status::Warn);
    assert!(
        c.message.contains("gateway 10.1.1.1 inside the overlay"),
        "{c:?}"
    );
    assert_eq!(
        check_overlay_routes(None, l.overlay(), "tun0", own).status,
        Status::Warn
    );
}

#[test]
fn resolver_inside_overlay() {
    let t = "# comment\nsearch example\nnameserver 10.255.255.53\nnameserver fd00::53\nnameserver 192.0.2.53 # x\noptions ndots:1\n";
    assert_eq!(
        parse_resolv_conf(t),
        vec![ip("10.255.255.53"), ip("192.0.2.53")]
    );
    let src = vec![("/etc/resolv.conf".to_string(), parse_resolv_conf(t))];
    let c = check_resolvers(&Layout::classic(), &src);
    assert_eq!(c.status, Status::Warn);
    assert!(
        c.message
            .contains("10.255.255.53 (/etc/resolv.conf, i.e. VM 192.168.255.255's block)"),
        "{c:?}"
    );
    assert!(!c.message.contains("192.0.2.53"));
    let c = check_resolvers(&Layout::wide(), &src);
    assert_eq!(c.status, Status::Ok);
    assert!(c.message.contains("10.255.255.53, 192.0.2.53"));
    assert_eq!(check_resolvers(&Layout::wide(), &[]).status, Status::Ok);
}

#[test]
fn report_formats() {
    let r = Report::new(vec![
        Check::ok("tun_device", "fine"),
        Check::warn("rp_filter", "strict", "sysctl"),
    ]);
    assert!(r.ok);
    let j: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(j["ok"], true);
    assert_eq!(j["checks"][0]["status"], "ok");
    assert_eq!(j["checks"][0]["fix"], serde_json::Value::Null);
    assert_eq!(j["checks"][1]["status"], "warn");
    assert_eq!(j["checks"][1]["fix"], "sysctl");
    assert!(r.to_json().starts_with("{\"ok\":true,\"checks\":["));
    let t = r.to_text("hdr");
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines[1], "ok    tun_device  fine");
    assert_eq!(lines[2], "warn  rp_filter   strict  fix: sysctl");
    assert_eq!(
        lines[3],
        "summary: 1 ok, 1 warn, 0 fail: ready to run meshfwd (read the warnings)"
    );
    let r = Report::new(vec![Check::fail("ip_forward", "0", "sysctl")]);
    assert!(!r.ok);
    assert!(r.to_text("h").contains("FAIL  ip_forward  0  fix: sysctl"));
    assert!(r.to_json().contains("\"status\":\"fail\""));
}

#[test]
fn datapath_auto_says_what_it_would_pick_and_why() {
    let loaded = GreFacts {
        release: "6.1.0-57-amd64".into(),
        proc_modules: Some("ip_gre 32768 0 - Live 0x0\n".into()),
        ..Default::default()
    };
    let ready = KernelDpFacts {
        bpf_map: Ok(()),
        unprivileged_bpf_disabled: Some(2),
        tc_modules: vec![("sch_ingress", true, true), ("cls_bpf", false, true)],
    };
    let pick = |g: &GreFacts, k: &KernelDpFacts, e, key| {
        let c = check_datapath_auto(g, k, e, key);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        c.message
    };
    // 6.1: unkeyed grids stay in userspace, keyed ones go to the kernel.
    let m = pick(&loaded, &ready, Encap::Gre, None);
    assert!(m.contains("pick userspace") && m.contains("6.3"), "{m}");
    let m = pick(&loaded, &ready, Encap::Gre, Some(7));
    assert!(
        m.contains("would try kernel") && m.contains("ip_gre loaded"),
        "{m}"
    );
    assert!(m.contains("tcx needs 6.6") && m.contains("GRE key"), "{m}");
    let m = pick(&loaded, &ready, Encap::Udp, Some(7));
    assert!(m.contains("userspace") && m.contains("GRE-in-UDP"), "{m}");
    // 6.18 without ip_gre (this project's build hosts).
    let none = GreFacts {
        release: "6.18.0".into(),
        ..Default::default()
    };
    let m = pick(&none, &ready, Encap::Gre, None);
    assert!(
        m.contains("userspace") && m.contains("no kernel GRE"),
        "{m}"
    );
    let avail = GreFacts {
        module_files: vec!["/lib/modules/6.18.0/kernel/net/ipv4/ip_gre.ko.xz".into()],
        ..none.clone()
    };
    let m = pick(&avail, &ready, Encap::Gre, None);
    assert!(
        m.contains("would try kernel") && m.contains("loadable"),
        "{m}"
    );
    assert!(m.contains("tcx available"), "{m}");
    let no_bpf = KernelDpFacts {
        bpf_map: Err("EPERM".into()),
        ..ready
    };
    let m = pick(&avail, &no_bpf, Encap::Gre, None);
    assert!(m.contains("BPF is not allowed") && m.contains("=2"), "{m}");
    let no_tc = KernelDpFacts {
        bpf_map: Ok(()),
        unprivileged_bpf_disabled: None,
        tc_modules: vec![("sch_ingress", false, false), ("cls_bpf", true, false)],
    };
    let m = pick(&avail, &no_tc, Encap::Gre, None);
    assert!(m.contains("no sch_ingress"), "{m}");
    let old = GreFacts {
        release: "4.19.0".into(),
        ..loaded
    };
    assert!(pick(&old, &no_tc, Encap::Gre, Some(1)).contains("older than 5.1"));
}

#[test]
fn ipv6_check_follows_the_daemons_rule() {
    use crate::layout6::Layout6;
    let l6 = Some(Layout6::default());
    let vm = Some(ip("192.168.16.32"));
    let gre = crate::wire::gre::BASE_LEN;
    // dual-stack: the VM's /96 and TUN address, the MTU, forwarding
    let c = check_ipv6(l6, vm, Some(1500), Encap::Gre, gre, "tun0", None, Some(1));
    assert_eq!(c.status, Status::Ok);
    assert!(
        c.message.contains("fd6d:6573:6866:0:c0a8:1020::/96")
            && c.message
                .contains("tun0 gets fd6d:6573:6866:0:c0a8:1020:0:1/64")
            && c.message.contains("TUN MTU 1476")
            && c.message.contains("forwarding = 1"),
        "{}",
        c.message
    );
    let c = check_ipv6(l6, None, None, Encap::Gre, gre, "tun0", None, Some(1));
    assert_eq!(c.status, Status::Ok);
    assert!(c.message.contains("see local_address"), "{}", c.message);
    // IPv6 forwarding off: containers get no IPv6 across VMs (a warning, as
    // attach's; IPv4 does not depend on it)
    for fwd in [Some(0), None] {
        let c = check_ipv6(l6, vm, Some(1500), Encap::Gre, gre, "tun0", None, fwd);
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.contains("will not forward IPv6"), "{}", c.message);
        assert!(c.fix.unwrap().contains("net.ipv6.conf.all.forwarding=1"));
    }
    // --overlay6 none: said, not a warning
    let c = check_ipv6(None, vm, Some(1500), Encap::Gre, gre, "tun0", None, Some(1));
    assert_eq!(c.status, Status::Ok);
    assert!(c.message.contains("IPv4 only"));
    // IPv6 disabled in the namespace: a warning that names the sysctl
    let off = crate::procfs::ipv6_disabled_by("1\n", "1\n");
    let c = check_ipv6(l6, vm, Some(1500), Encap::Gre, gre, "tun0", off, None);
    assert_eq!(c.status, Status::Warn);
    assert!(c.message.starts_with("IPv6 overlay off: ") && c.message.contains("IPv4 only"));
    assert!(c.fix.unwrap().contains("disable_ipv6=0"));
    // no IPv6 in the kernel
    let c = check_ipv6(
        l6,
        vm,
        Some(1500),
        Encap::Gre,
        gre,
        "tun0",
        Some("this kernel has no IPv6 (no /proc/sys/net/ipv6)".into()),
        None,
    );
    assert_eq!(c.status, Status::Warn);
    assert!(c.fix.unwrap().contains("ipv6.disable=1"));
    // TUN MTU below 1280: underlay 1303 - 24 = 1279; 1304 passes; a key costs 4
    let c = check_ipv6(l6, vm, Some(1303), Encap::Gre, gre, "tun0", None, Some(1));
    assert_eq!(c.status, Status::Warn, "{}", c.message);
    assert!(c.message.contains("1279") && c.fix.unwrap().contains("at least 1304"));
    let c = check_ipv6(l6, vm, Some(1304), Encap::Gre, gre, "tun0", None, Some(1));
    assert_eq!(c.status, Status::Ok, "{}", c.message);
    let c = check_ipv6(
        l6,
        vm,
        Some(1304),
        Encap::Gre,
        gre + 4,
        "tun0",
        None,
        Some(1),
    );
    assert_eq!(c.status, Status::Warn, "{}", c.message);
    // GRE-in-UDP: 32 bytes of overhead
    let c = check_ipv6(l6, vm, Some(1311), Encap::Udp, gre, "tun0", None, Some(1));
    assert_eq!(c.status, Status::Warn, "{}", c.message);
    assert!(c.fix.unwrap().contains("at least 1312"));
}
