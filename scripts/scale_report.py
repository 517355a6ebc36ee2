#!/usr/bin/env python3
"""Helper of scripts/scale.sh (stdlib only).

  scale_report.py addrs  --meshfwd PATH [--layout L] < "NAME VM_UNDERLAY N" lines  -> "NAME OVERLAY" lines
  scale_report.py pairs  --containers FILE [--only-vms A,B | --count N --seed S [--fanout A,B]] --out FILE
  scale_report.py ping   --pairs FILE --parallel N --out FILE
  scale_report.py report --run DIR --out JSON [--rss-slack-kib N] [--meta K=V ...]

containers FILE: lines "NAME VM NETNS ADDRESS".
pairs FILE:      lines "KIND SRC_NAME SRC_NETNS DST_NAME DST_ADDRESS".
ping results:    lines "KIND SRC DST ADDRESS ok|fail RTT_MS|-".
"""

import argparse
import concurrent.futures as cf
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time


def read_containers(path):
    cs = []
    for line in open(path):
        f = line.split()
        if len(f) == 4:
            cs.append({"name": f[0], "vm": f[1], "ns": f[2], "addr": f[3]})
    return cs


def vm_key(vm):
    m = re.match(r"vm(\d+)$", vm)
    return int(m.group(1)) if m else 0


# ------------------------------------------------------------------ addrs --
def cmd_addrs(a):
    """The overlay address of each container, from `meshfwd addr --json` (key "overlay")."""
    for line in sys.stdin:
        f = line.split()
        if len(f) != 3:
            continue
        out = subprocess.run([a.meshfwd, "addr", "--layout", a.layout, "--json", "--vm", f[1], "--container", f[2]],
                             check=True, capture_output=True, text=True).stdout
        print(f[0], json.loads(out)["overlay"])
    return 0


# ------------------------------------------------------------------ pairs --
def cmd_pairs(a):
    cs = read_containers(a.containers)
    by_vm = {}
    for c in cs:
        by_vm.setdefault(c["vm"], []).append(c)
    out = []
    if a.only_vms:
        vms = a.only_vms.split(",")
        sel = [c for c in cs if c["vm"] in vms]
        out = [("small", s, d) for s in sel for d in sel if s["vm"] != d["vm"]]
    else:
        rng = random.Random(a.seed)
        possible = sum(len(cs) - len(by_vm[c["vm"]]) for c in cs)
        n = min(a.count, possible)
        seen = set()
        while len(seen) < n:
            s = rng.choice(cs)
            d = rng.choice(cs)
            if s["vm"] == d["vm"] or (s["name"], d["name"]) in seen:
                continue
            seen.add((s["name"], d["name"]))
            out.append(("random", s, d))
        if a.fanout:
            f1, f2 = a.fanout.split(",")
            others = sorted((v for v in by_vm if v not in (f1,)), key=vm_key)
            for i, v in enumerate(others):  # f1 -> every other VM
                out.append(("fanout", by_vm[f1][i % len(by_vm[f1])], rng.choice(by_vm[v])))
            others = sorted((v for v in by_vm if v not in (f2,)), key=vm_key)
            for i, v in enumerate(others):  # every other VM -> f2
                out.append(("fanout", rng.choice(by_vm[v]), by_vm[f2][i % len(by_vm[f2])]))
    with open(a.out, "w") as fh:
        for kind, s, d in out:
            fh.write(f"{kind} {s['name']} {s['ns']} {d['name']} {d['addr']}\n")


# ------------------------------------------------------------------- ping --
RTT_RE = re.compile(r"= [0-9.]+/([0-9.]+)/")


def ping_one(p):
    kind, src, ns, dst, addr = p
    try:
        r = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "ping", "-n", "-q", "-c", "1", "-W", "1", addr],
                           capture_output=True, text=True, timeout=10)
        ok = r.returncode == 0
        m = RTT_RE.search(r.stdout)
        rtt = m.group(1) if (ok and m) else "-"
    except subprocess.TimeoutExpired:
        ok, rtt = False, "-"
    return kind, src, dst, addr, "ok" if ok else "fail", rtt


def cmd_ping(a):
    pairs = [tuple(line.split()) for line in open(a.pairs) if line.strip()]
    t0 = time.monotonic()
    with cf.ThreadPoolExecutor(max_workers=a.parallel) as ex:
        res = list(ex.map(ping_one, pairs))
    dt = time.monotonic() - t0
    with open(a.out, "w") as fh:
        for r in res:
            fh.write(" ".join(r) + "\n")
    kinds = {}
    for r in res:
        kinds.setdefault(r[0], []).append(r)
    for k, rs in kinds.items():
        ok = [r for r in rs if r[4] == "ok"]
        rtts = [float(r[5]) for r in ok if r[5] != "-"]
        med = f", RTT median {statistics.median(rtts):.3f} ms max {max(rtts):.3f} ms" if rtts else ""
        print(f"   {k}: {len(rs)} pairs, {len(ok)} answered, {len(rs) - len(ok)} failed{med}")
        for r in [r for r in rs if r[4] != "ok"][:10]:
            print(f"     FAILED {r[1]} -> {r[2]} ({r[3]})")
    print(f"   {len(res)} pings in {dt:.1f} s")
    return 0


# ----------------------------------------------------------------- report --
def load_samples(path):
    rows = {}
    if not os.path.exists(path):
        return rows
    for line in open(path):
        f = line.split()
        if len(f) != 5:
            continue
        alive = f[2] != "dead"
        rows[f[0]] = {"pid": int(f[1]), "alive": alive,
                      "rss_kib": int(f[2]) if alive else None,
                      "fds": int(f[3]) if alive else None,
                      "threads": int(f[4]) if alive else None}
    return rows


def dist(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return {"min": min(vals), "median": statistics.median(vals), "max": max(vals), "n": len(vals)}


def load_stats_dir(d):
    out = {}
    if not os.path.isdir(d):
        return out
    for fn in os.listdir(d):
        if fn.endswith(".stats.json"):
            try:
                out[fn[: -len(".stats.json")]] = json.load(open(os.path.join(d, fn)))
            except (OSError, ValueError):
                pass
    return out


def totals(stats):
    t = {"vms": len(stats), "drops": {}, "errors": {}}
    for s in stats.values():
        for k, v in s.items():
            if isinstance(v, dict):
                for r, n in v.items():
                    t[k][r] = t[k].get(r, 0) + n
            elif k != "workers":
                t[k] = t.get(k, 0) + v
            else:
                t["workers"] = t.get("workers", 0) + v
    t["drops_total"] = sum(t["drops"].values())
    t["errors_total"] = sum(t["errors"].values())
    t["drops"] = {k: v for k, v in sorted(t["drops"].items()) if v}
    t["errors"] = {k: v for k, v in sorted(t["errors"].items()) if v}
    return t


def pair_results(path):
    kinds = {}
    if not os.path.exists(path):
        return kinds
    for line in open(path):
        f = line.split()
        if len(f) != 6:
            continue
        k = kinds.setdefault(f[0], {"total": 0, "ok": 0, "failed": 0, "failures": [], "rtts": []})
        k["total"] += 1
        if f[4] == "ok":
            k["ok"] += 1
            if f[5] != "-":
                k["rtts"].append(float(f[5]))
        else:
            k["failed"] += 1
            if len(k["failures"]) < 50:
                k["failures"].append({"src": f[1], "dst": f[2], "addr": f[3]})
    for k in kinds.values():
        r = k.pop("rtts")
        k["rtt_ms"] = ({"median": round(statistics.median(r), 3), "max": round(max(r), 3),
                        "p99": round(sorted(r)[int(0.99 * (len(r) - 1))], 3)} if r else None)
    return kinds


def cmd_report(a):
    run = a.run
    meta = dict(m.split("=", 1) for m in a.meta)
    phases = {}
    if os.path.exists(f"{run}/phases.txt"):
        for line in open(f"{run}/phases.txt"):
            n, d = line.split()
            phases[n] = round(float(d), 2)
    small = load_samples(f"{run}/rss-small.txt")
    full = load_samples(f"{run}/rss-full.txt")
    end = load_samples(f"{run}/rss-end.txt")
    pairs_small = pair_results(f"{run}/result-small.txt")
    pairs = pair_results(f"{run}/result-pairs.txt")
    st_small = load_stats_dir(f"{run}/snap-small")
    st_pairs = load_stats_dir(f"{run}/snap-pairs")
    st_end = load_stats_dir(f"{run}/snap-end")
    tot_pairs = totals(st_pairs)
    tot_end = totals(st_end)

    # time to first ping
    ttfp = []
    if os.path.exists(f"{run}/ttfp.txt"):
        for line in open(f"{run}/ttfp.txt"):
            f = line.split()
            if len(f) != 10:
                continue
            c, vm, addr, src, src_vm, t0, t1, tr, seq, rc = f
            e = {"container": c, "vm": vm, "address": addr, "from": src, "from_vm": src_vm,
                 "wiring_ms": round((float(t1) - float(t0)) * 1000, 1),
                 "first_reply_ms": round((float(tr) - float(t0)) * 1000, 1) if tr != "-" else None,
                 "icmp_seq": int(seq) if seq != "-" else None, "ping_exit": int(rc)}
            ttfp.append(e)
    got = [e["first_reply_ms"] for e in ttfp if e["first_reply_ms"] is not None]

    failures = []
    # pairs
    for name, kinds in (("2-VM pairs", pairs_small), ("pairs", pairs)):
        for k, v in kinds.items():
            if v["failed"]:
                failures.append(f"{name} {k}: {v['failed']} of {v['total']} failed")
    if not pairs.get("random", {}).get("total"):
        failures.append("no random pairs were checked")
    # liveness
    dead = [vm for vm, r in end.items() if not r["alive"]] + [vm for vm, r in full.items() if not r["alive"]]
    if dead or len(end) != int(meta.get("vms", len(end))):
        failures.append(f"meshfwd not alive at the end: {sorted(set(dead), key=vm_key)} ({len(end)} sampled)")
    # drops / errors after the pair check
    if tot_pairs["drops_total"] or tot_pairs["errors_total"]:
        failures.append(f"after the pair check: drops {tot_pairs['drops']} errors {tot_pairs['errors']}")
    for k in ("tun_kernel_rx_dropped", "tun_kernel_tx_dropped"):
        if tot_pairs.get(k):
            failures.append(f"after the pair check: {k} = {tot_pairs[k]}")
    if tot_end["errors_total"]:
        failures.append(f"at the end: errors {tot_end['errors']}")
    # time to first ping
    if any(e["first_reply_ms"] is None for e in ttfp):
        failures.append("a fresh container never answered")
    # growth with the number of peers: the same two processes, 1 peer -> all peers
    growth = {}
    for vm in small:
        s, f = small[vm], full.get(vm)
        if not f or not s["alive"] or not f["alive"]:
            continue
        slack = max(a.rss_slack_kib, 0.05 * s["rss_kib"])
        g = {"rss_kib_2vm": s["rss_kib"], "rss_kib_full": f["rss_kib"],
             "rss_growth_kib": f["rss_kib"] - s["rss_kib"], "allowed_kib": round(slack),
             "fds_2vm": s["fds"], "fds_full": f["fds"], "threads_2vm": s["threads"], "threads_full": f["threads"]}
        growth[vm] = g
        if g["rss_growth_kib"] > slack:
            failures.append(f"{vm}: RSS grew by {g['rss_growth_kib']} KiB from the 2-VM mesh to the full mesh "
                            f"(allowed {round(slack)} KiB)")
        if f["fds"] != s["fds"] or f["threads"] != s["threads"]:
            failures.append(f"{vm}: fds {s['fds']} -> {f['fds']}, threads {s['threads']} -> {f['threads']}")
    fds_full = dist([r["fds"] for r in full.values()])
    if fds_full and fds_full["min"] != fds_full["max"]:
        failures.append(f"open fds differ between meshfwd instances: {fds_full}")

    summary = {
        "test": "scale",
        "meta": meta,
        "host": {"nproc": os.cpu_count(), "kernel": os.uname().release,
                 "loadavg_end": open("/proc/loadavg").read().split()[:3]},
        "phases_s": phases,
        "total_s": round(sum(phases.values()), 1),
        "pairs_2vm": pairs_small,
        "pairs": pairs,
        "rss_kib": {"two_vm_mesh": {vm: r["rss_kib"] for vm, r in small.items()},
                    "full_mesh": dist([r["rss_kib"] for r in full.values()]),
                    "end": dist([r["rss_kib"] for r in end.values()]),
                    "full_mesh_per_vm": {vm: r["rss_kib"] for vm, r in sorted(full.items(), key=lambda x: vm_key(x[0]))}},
        "fds": {"two_vm_mesh": {vm: r["fds"] for vm, r in small.items()}, "full_mesh": fds_full},
        "threads": {"two_vm_mesh": {vm: r["threads"] for vm, r in small.items()},
                    "full_mesh": dist([r["threads"] for r in full.values()])},
        "growth_2vm_to_full": growth,
        "stats_totals_2vm": totals(st_small),
        "stats_totals_after_pairs": tot_pairs,
        "stats_totals_end": tot_end,
        "time_to_first_ping": {"containers": ttfp,
                               "median_ms": round(statistics.median(got), 1) if got else None,
                               "max_ms": max(got) if got else None,
                               "ping_interval_ms": 50},
        "failures": failures,
        "verdict": "PASS" if not failures else "FAIL",
    }
    tmp = a.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(summary, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, a.out)

    # compact text
    def kib(v):
        return f"{v / 1024:.2f} MiB"
    print(f"scale: {meta.get('vms')} VMs x {meta.get('containers')} containers, layout {meta.get('layout')}, "
          f"wiring {meta.get('wiring')}, seed {meta.get('seed')}; {summary['total_s']} s "
          f"(" + ", ".join(f"{k} {v}" for k, v in phases.items()) + ")")
    for k, v in pairs.items():
        rtt = f", RTT median {v['rtt_ms']['median']} ms, p99 {v['rtt_ms']['p99']} ms" if v["rtt_ms"] else ""
        print(f"  pairs {k:7}: {v['ok']}/{v['total']} answered, {v['failed']} failed{rtt}")
    for k, v in pairs_small.items():
        print(f"  pairs 2-VM   : {v['ok']}/{v['total']} answered")
    rf = summary["rss_kib"]["full_mesh"]
    if rf:
        print(f"  RSS per meshfwd, full mesh ({rf['n']}): min {kib(rf['min'])}  median {kib(rf['median'])}  "
              f"max {kib(rf['max'])}")
    for vm, g in growth.items():
        print(f"  {vm}: 2-VM mesh {kib(g['rss_kib_2vm'])} -> full mesh {kib(g['rss_kib_full'])} "
              f"({g['rss_growth_kib']:+d} KiB, allowed {g['allowed_kib']}); fds {g['fds_2vm']} -> {g['fds_full']}; "
              f"threads {g['threads_2vm']} -> {g['threads_full']}")
    if fds_full:
        print(f"  fds per meshfwd: {fds_full['min']}..{fds_full['max']}; threads "
              f"{summary['threads']['full_mesh']['min']}..{summary['threads']['full_mesh']['max']}")
    for label, t in (("after pair check", tot_pairs), ("at the end      ", tot_end)):
        print(f"  totals {label} ({t['vms']} VMs, {t.get('workers', 0)} workers): tun_rx {t.get('tun_rx_packets', 0)} "
              f"tx {t.get('tx_packets', 0)} rx {t.get('rx_packets', 0)} tun_tx {t.get('tun_tx_packets', 0)}; "
              f"drops {t['drops_total']} {t['drops'] or ''}; errors {t['errors_total']} {t['errors'] or ''}; "
              f"kernel TUN drops rx {t.get('tun_kernel_rx_dropped', 0)} tx {t.get('tun_kernel_tx_dropped', 0)}")
    if tot_end["drops_total"] > tot_pairs["drops_total"]:
        print("    (drops after the pair check: pings at fresh addresses before their route existed; "
              "the VM drops them as dst_local_vm)")
    if ttfp:
        print("  time to first ping (creation start -> first echo reply from a remote VM's container, 50 ms pings):")
        print("    " + ", ".join(f"{e['container']} {e['first_reply_ms']} ms (wired {e['wiring_ms']})" for e in ttfp))
        print(f"    median {summary['time_to_first_ping']['median_ms']} ms, max {summary['time_to_first_ping']['max_ms']} ms")
    print(f"verdict: {summary['verdict']}" + ("" if not failures else ": " + "; ".join(failures)))
    return 0 if not failures else 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("addrs")
    s.add_argument("--meshfwd", required=True)
    s.add_argument("--layout", default="wide")
    s = sub.add_parser("pairs")
    s.add_argument("--containers", required=True)
    s.add_argument("--only-vms")
    s.add_argument("--count", type=int, default=1000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--fanout")
    s.add_argument("--out", required=True)
    s = sub.add_parser("ping")
    s.add_argument("--pairs", required=True)
    s.add_argument("--parallel", type=int, default=16)
    s.add_argument("--out", required=True)
    s = sub.add_parser("report")
    s.add_argument("--run", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--rss-slack-kib", type=int, default=1024)
    s.add_argument("--meta", nargs="*", default=[])
    a = p.parse_args()
    return {"addrs": cmd_addrs, "pairs": cmd_pairs, "ping": cmd_ping, "report": cmd_report}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
