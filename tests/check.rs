//! `meshfwd check` as a process: usage errors, exit status and the JSON
//! schema. Needs no root (the verdicts depend on the host; the namespace
//! scenarios are in tests/netns/check.sh).

use std::process::{Command, Output};

const NAMES: [&str; 14] = [
    "tun_device",
    "capabilities",
    "raw_socket",
    "gre_modules",
    "ip_forward",
    "local_address",
    "layout",
    "mtu",
    "rp_filter",
    "overlay_routes",
    "dns_resolver",
    "instance",
    // appended by #15: new checks go last, existing names and order are a contract
    "datapath_auto",
    // appended by #17
    "ipv6",
];

fn check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshfwd"))
        .arg("check")
        .args(args)
        .output()
        .expect("run meshfwd check")
}

#[test]
fn bad_usage_exits_2_with_one_line() {
    for args in [
        &["--overlay", "10.0.0.0/16", "--underlay", "192.168.0.0/16"][..],
        &["--local", "10.1.2.3"],
        &["--local", "192.168.255.255"],
        &["--tun", "a/b"],
        &["--tun", "much-too-long-name"],
        &["--overlay6", "fe80::/64"],
        &["--overlay6", "fd00::/48"],
    ] {
        let out = check(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("meshfwd check: error: "), "{err}");
    }
    // clap's own usage errors are 2 as well
    assert_eq!(check(&["--layout", "bogus"]).status.code(), Some(2));
    assert_eq!(check(&["--overlay", "10.0.0.0/8"]).status.code(), Some(2));
}

#[test]
fn json_schema_is_stable_and_matches_exit_status() {
    for layout in ["wide", "classic"] {
        let out = check(&["--json", "--layout", layout]);
        let code = out.status.code().expect("exit code");
        assert!(code == 0 || code == 1, "exit {code}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let obj = v.as_object().unwrap();
        assert_eq!(obj.keys().collect::<Vec<_>>(), ["checks", "ok"]);
        let checks = v["checks"].as_array().unwrap();
        let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, NAMES);
        let mut any_fail = false;
        for c in checks {
            assert_eq!(c.as_object().unwrap().len(), 4, "{c}");
            let status = c["status"].as_str().unwrap();
            assert!(["ok", "warn", "fail"].contains(&status), "{c}");
            assert!(!c["message"].as_str().unwrap().is_empty(), "{c}");
            // ok lines carry no fix; warn and fail lines always say what to do
            assert_eq!(c["fix"].is_null(), status == "ok", "{c}");
            any_fail |= status == "fail";
        }
        assert_eq!(v["ok"], !any_fail);
        assert_eq!(
            code,
            i32::from(any_fail),
            "exit status must be 1 exactly when a check failed"
        );
        // gre_modules is informational on every kernel
        assert_eq!(checks[3]["status"], "ok");
        assert!(checks[3]["message"]
            .as_str()
            .unwrap()
            .contains("meshfwd does not need them"));
    }
}

#[test]
fn human_report_is_aligned_with_a_summary() {
    let out = check(&[]);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("meshfwd check: layout wide: overlay 240.0.0.0/4"),
        "{text}"
    );
    assert_eq!(lines.len(), NAMES.len() + 2, "{text}");
    let width = NAMES.iter().map(|n| n.len()).max().unwrap();
    for (line, name) in lines[1..=NAMES.len()].iter().zip(NAMES) {
        let (status, rest) = line.split_at(6);
        assert!(["ok    ", "warn  ", "FAIL  "].contains(&status), "{line}");
        assert_eq!(&rest[..name.len()], name, "{line}");
        assert_eq!(rest.as_bytes()[width + 1], b' ', "{line}");
        assert_ne!(rest.as_bytes()[width + 2], b' ', "{line}");
        assert_eq!(status == "ok    ", !line.contains("  fix: "), "{line}");
    }
    let summary = lines.last().unwrap();
    assert!(summary.starts_with("summary: "), "{summary}");
    let fails = lines.iter().filter(|l| l.starts_with("FAIL")).count();
    assert!(summary.contains(&format!(", {fails} fail: ")), "{summary}");
    assert_eq!(out.status.code(), Some(i32::from(fails > 0)));
}

/// The shipped unit keeps what docs/OPERATIONS.md promises (no systemd needed;
/// tests/netns/check.sh runs `systemd-analyze verify` and `security` on it).
#[test]
fn systemd_unit_keeps_its_policy() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/systemd/meshfwd@.service"
    );
    let unit = std::fs::read_to_string(path).expect("read the unit");
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for want in [
        "ExecStart=/usr/local/bin/meshfwd $MESHFWD_ARGS %i",
        "EnvironmentFile=-/etc/default/meshfwd",
        "Restart=on-failure",
        "RestartSec=1s",
        "RestartPreventExitStatus=2",
        "DynamicUser=yes",
        "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW",
        "NoNewPrivileges=yes",
        "DeviceAllow=/dev/net/tun rw",
        "BindPaths=/dev/net/tun",
        "ProtectSystem=strict",
        "ProtectKernelTunables=yes",
        "ReadWritePaths=/proc/sys/net/ipv6/conf",
        "RestrictAddressFamilies=AF_INET AF_NETLINK",
        "MemoryDenyWriteExecute=yes",
        "SystemCallFilter=@system-service",
        "SystemCallFilter=capset sched_setaffinity",
    ] {
        assert!(lines.contains(&want), "{path} lacks `{want}`");
    }
    // [Unit], [Service], [Install]
    assert_eq!(lines.iter().filter(|l| l.starts_with('[')).count(), 3);
}
