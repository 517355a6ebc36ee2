#!/usr/bin/env python3
"""JSON helpers of the namespace suites (tests/netns/*.sh; stdlib only).

  mfjson.py get PATH [FILE]
      print the value at PATH (dotted keys, list indices as numbers, e.g.
      ips.0.address) of the JSON in FILE (default stdin)
  mfjson.py vm-overlay
      the VM overlay address from `meshfwd addr --json` on stdin (its
      "vm_overlay", else host part 1 of its "block")
  mfjson.py stats-dump STATS
      a meshfwd stats file: the flat counters on one line, then the non-zero
      drops and errors
  mfjson.py stats-nonzero STATS
      "group.key=value ..." of the non-zero drops/errors counters
  mfjson.py stats-health STATS
      like stats-nonzero, plus "key=0" for tx_packets, rx_packets and
      tun_tx_packets if they did not move (empty output: healthy)
  mfjson.py stats-schema STATS VERDICT
      check the stats file's schema; print the start of the JSON, write "ok" or
      the problems to VERDICT; exit 1 on problems
  mfjson.py check-report FILE
      exit 0 if FILE is a `meshfwd check --json` report ({"ok", "checks"})
  mfjson.py check-field FILE CHECK KEY
      KEY (status/message/fix) of one check of the report, or MISSING
  mfjson.py check-failing FILE
      "name=status" of every check that is not ok, or "all ok"
  mfjson.py check-not-ok FILE [EXCEPT...]
      "name=status" of every check that is not ok and not named in EXCEPT
  mfjson.py cni-error-code JSON
      the code of the CNI error object JSON (exit 1 if it is not one)
"""

import ipaddress
import json
import sys

from toolcli import command, run


def at(v, path):
    for k in path.split("."):
        v = v[int(k)] if isinstance(v, list) else v[k]
    return v


def load(path):
    with open(path) as f:
        return json.load(f)


@command
def get(path, file=None):
    v = load(file) if file else json.load(sys.stdin)
    print(at(v, path))


@command
def vm_overlay():
    j = json.load(sys.stdin)
    print(j.get("vm_overlay") or ipaddress.ip_network(j["block"], strict=False).network_address + 1)


def nonzero(s):
    return [f"{g}.{k}={v}" for g in ("drops", "errors") for k, v in s[g].items() if v]


@command
def stats_dump(path):
    s = load(path)
    flat = [f"{k}={v}" for k, v in s.items() if not isinstance(v, dict)]
    print("  " + " ".join(flat))
    for group in ("drops", "errors"):
        nz = {k: v for k, v in s.get(group, {}).items() if v}
        print(f"  {group}: " + (" ".join(f"{k}={v}" for k, v in nz.items()) if nz else "none"))


@command
def stats_nonzero(path):
    print(" ".join(nonzero(load(path))))


@command
def stats_health(path):
    s = load(path)
    bad = nonzero(s)
    for k in ("tx_packets", "rx_packets", "tun_tx_packets"):
        if not s[k]:
            bad.append(f"{k}=0")
    print(" ".join(bad))


@command
def stats_schema(path, verdict):
    s = load(path)
    out = open(verdict, "w")
    bad = []
    for k in "tun_rx_packets tun_rx_bytes tx_packets tx_bytes rx_packets rx_bytes tun_tx_packets tun_tx_bytes".split():
        if not isinstance(s.get(k), int):
            bad.append(f"missing/non-int {k}")
    drops = s.get("drops", {})
    for k in ("too_short not_ipv4 bad_ip_header dst_not_in_overlay dst_local_vm dst_reserved peer_not_unicast "
              "src_not_local oversize outer_src_not_underlay gre_version gre_flags gre_not_ipv4 gre_checksum "
              "key_mismatch inner_malformed inner_src_not_overlay spoofed_source inner_dst_not_local "
              "ecn_ce_not_ect truncated").split():
        if not isinstance(drops.get(k), int):
            bad.append(f"missing drops.{k}")
    if not isinstance(s.get("errors"), dict) or not s["errors"]:
        bad.append("errors object missing/empty")
    elif not any(k.startswith("send_") for k in s["errors"]) or "tun_write" not in s["errors"]:
        bad.append(f"errors lacks send_*/tun_write: {sorted(s['errors'])}")
    print(json.dumps(s)[:400])
    out.write(("; ".join(bad) if bad else "ok") + "\n")
    return 1 if bad else 0


@command
def check_report(path):
    v = load(path)
    assert set(v) == {"ok", "checks"}


@command
def check_field(path, name, key):
    v = load(path)
    c = [c for c in v["checks"] if c["name"] == name]
    print(c[0][key] if c else "MISSING")


def not_ok(path, skip=()):
    v = load(path)
    return " ".join(c["name"] + "=" + c["status"] for c in v["checks"] if c["status"] != "ok" and c["name"] not in skip)


@command
def check_failing(path):
    print(not_ok(path) or "all ok")


@command
def check_not_ok(path, *skip):
    print(not_ok(path, skip))


@command
def cni_error_code(text):
    v = json.loads(text)
    assert set(v) == {"cniVersion", "code", "msg", "details"}, v
    print(v["code"])


if __name__ == "__main__":
    run()
