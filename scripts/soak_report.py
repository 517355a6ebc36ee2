#!/usr/bin/env python3
"""Summary and verdict of scripts/soak.sh (stdlib only).

  soak_report.py --run DIR --out JSON --warmup S --rss-slack-kib N --recv VM --vms VM... [--meta K=V ...]

Reads from the run directory: samples.txt ("T VM PID ALIVE RSS_KIB FDS THREADS"),
start-VM.stats.json / end-VM.stats.json, iperf3-*.log (iperf3 -J), iperf3-rc.txt,
malformed.txt ("NAME|REASON|OPTIONS"), malformed.log, alive.txt, exit.txt, panics.txt.
Prints a compact summary, writes the JSON summary, exits 0 on PASS, 1 on FAIL.
"""

import argparse
import glob
import json
import os
import re
import sys


def load_json(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None


def iperf_result(path):
    try:
        text = open(path).read()
    except OSError:
        return {"error": "no output"}
    i = text.find("{")
    try:
        j = json.loads(text[i:]) if i >= 0 else None
    except ValueError:
        j = None
    if not j:
        return {"error": text.strip()[-300:] or "no output"}
    if "error" in j and not j.get("end", {}).get("sum_received"):
        return {"error": j["error"]}
    end = j.get("end", {})
    rcv, snd = end.get("sum_received", {}), end.get("sum_sent", {})
    r = {"seconds": round(rcv.get("seconds", 0), 1),
         "received_gbps": round(rcv.get("bits_per_second", 0) / 1e9, 3),
         "sent_gbps": round(snd.get("bits_per_second", 0) / 1e9, 3),
         "received_bytes": rcv.get("bytes", 0),
         "retransmits": snd.get("retransmits"),
         "congestion": end.get("sender_tcp_congestion")}
    ivs = [iv["sum"]["bits_per_second"] / 1e9 for iv in j.get("intervals", []) if "sum" in iv]
    if ivs:
        r["interval_gbps_min"] = round(min(ivs), 3)
        r["interval_gbps_max"] = round(max(ivs), 3)
        r["zero_intervals"] = sum(1 for v in ivs if v == 0)
    if "error" in j:
        r["error"] = j["error"]
    return r


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--run", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--warmup", type=float, required=True)
    p.add_argument("--rss-slack-kib", type=int, default=1024)
    p.add_argument("--recv", required=True)
    p.add_argument("--vms", nargs="+", required=True)
    p.add_argument("--meta", nargs="*", default=[])
    a = p.parse_args()
    run = a.run
    meta = dict(m.split("=", 1) for m in a.meta)
    failures = []

    # ---- samples
    samples = {vm: [] for vm in a.vms}
    for line in open(f"{run}/samples.txt"):
        f = line.split()
        if len(f) != 7:
            continue
        t, vm, pid, alive, rss, fds, thr = f
        samples.setdefault(vm, []).append({"t": int(t), "pid": int(pid), "alive": alive == "1",
                                           "rss_kib": int(rss), "fds": int(fds), "threads": int(thr)})
    alive_end = {}
    if os.path.exists(f"{run}/alive.txt"):
        for line in open(f"{run}/alive.txt"):
            vm, v = line.split()
            alive_end[vm] = v == "1"
    exit_codes = {}
    if os.path.exists(f"{run}/exit.txt"):
        for line in open(f"{run}/exit.txt"):
            vm, v = line.split()
            exit_codes[vm] = v
    panics = [x.strip() for x in open(f"{run}/panics.txt")] if os.path.exists(f"{run}/panics.txt") else []
    panics = [x for x in panics if x]
    if panics:
        failures.append(f"'panic' in meshfwd logs: {panics}")

    procs = {}
    for vm in a.vms:
        ss = samples.get(vm, [])
        live = [s for s in ss if s["alive"]]
        after = [s for s in live if s["t"] >= a.warmup]
        pr = {"samples": len(ss), "alive_all_samples": bool(ss) and all(s["alive"] for s in ss),
              "pid_constant": len({s["pid"] for s in ss}) == 1,
              "alive_at_end": alive_end.get(vm, False), "exit_code_on_sigterm": exit_codes.get(vm)}
        if live:
            base = after[0] if after else live[-1]
            last = live[-1]
            slack = max(a.rss_slack_kib, 0.05 * base["rss_kib"])
            pr["rss_kib"] = {"first": live[0]["rss_kib"], "baseline": base["rss_kib"], "baseline_t": base["t"],
                             "last": last["rss_kib"], "min": min(s["rss_kib"] for s in live),
                             "max": max(s["rss_kib"] for s in live),
                             "growth_after_warmup": last["rss_kib"] - base["rss_kib"],
                             "max_after_warmup": max(s["rss_kib"] for s in after) if after else None,
                             "allowed_growth": round(slack)}
            pr["fds"] = {"first": live[0]["fds"], "last": last["fds"], "min": min(s["fds"] for s in live),
                         "max": max(s["fds"] for s in live),
                         "distinct_after_warmup": sorted({s["fds"] for s in after})}
            pr["threads"] = {"min": min(s["threads"] for s in live), "max": max(s["threads"] for s in live)}
            if pr["rss_kib"]["growth_after_warmup"] > slack:
                failures.append(f"{vm}: RSS grew by {pr['rss_kib']['growth_after_warmup']} KiB after the warm-up "
                                f"(allowed {round(slack)} KiB)")
            if len(pr["fds"]["distinct_after_warmup"]) > 1:
                failures.append(f"{vm}: open fds changed after the warm-up: {pr['fds']['distinct_after_warmup']}")
        if not pr["alive_all_samples"] or not pr["pid_constant"]:
            failures.append(f"{vm}: meshfwd not alive in every sample")
        if not pr["alive_at_end"]:
            failures.append(f"{vm}: meshfwd not alive at the end")
        if pr["exit_code_on_sigterm"] not in ("0", None):
            failures.append(f"{vm}: meshfwd exit code {pr['exit_code_on_sigterm']} on SIGTERM")
        procs[vm] = pr

    # ---- counters
    counters = {}
    for vm in a.vms:
        s0 = load_json(f"{run}/start-{vm}.stats.json") or {}
        s1 = load_json(f"{run}/end-{vm}.stats.json") or {}
        c = {}
        for k, v in s1.items():
            if isinstance(v, dict):
                d = {r: n - s0.get(k, {}).get(r, 0) for r, n in v.items()}
                c[k] = {r: n for r, n in sorted(d.items()) if n}
            elif k != "workers":
                c[k] = v - s0.get(k, 0)
        c["workers"] = s1.get("workers")
        counters[vm] = c
    recv_drops = counters.get(a.recv, {}).get("drops", {})
    rc_ = counters.get(a.recv, {})
    # every GRE packet the receiver took in was either dropped (with a reason) or delivered
    recv_unaccounted = (rc_.get("rx_packets", 0) - sum(recv_drops.values()) - rc_.get("tun_tx_packets", 0)
                        - rc_.get("errors", {}).get("tun_write", 0)) if rc_ else None

    # ---- malformed stream
    mal = []
    sent = {}
    if os.path.exists(f"{run}/malformed.log"):
        for line in open(f"{run}/malformed.log"):
            m = re.match(r"(\S+): sent (\d+) packet", line)
            if m:
                sent[m.group(1)] = sent.get(m.group(1), 0) + int(m.group(2))
    errors_log = [line.strip() for line in open(f"{run}/malformed.log")
                  if line.strip() and " sent " not in line][:5] if os.path.exists(f"{run}/malformed.log") else []
    for line in open(f"{run}/malformed.txt"):
        name, reason, opts = line.rstrip("\n").split("|", 2)
        mal.append({"name": name, "expected_drop": reason, "options": opts, "sent": sent.get(name, 0),
                    "counter_delta": recv_drops.get(reason, 0)})
    sent_total = sum(sent.values())
    for m in mal:
        if m["sent"] == 0:
            failures.append(f"malformed {m['name']}: nothing sent")
        elif m["counter_delta"] <= 0:
            failures.append(f"malformed {m['name']}: drops.{m['expected_drop']} did not move on {a.recv}")
    expected_reasons = {m["expected_drop"] for m in mal}
    dur = float(meta.get("duration_s", 0)) or 1
    malformed = {"sender": meta.get("sender"), "receiver": a.recv, "sent_total": sent_total,
                 "rate_pps": round(sent_total / dur, 1),
                 "dropped_total_expected_reasons": sum(v for k, v in recv_drops.items() if k in expected_reasons),
                 "receiver_rx_minus_drops_minus_delivered": recv_unaccounted,
                 "kinds": mal, "sender_errors": errors_log}

    # ---- iperf3
    iperf = {}
    rcs = {}
    if os.path.exists(f"{run}/iperf3-rc.txt"):
        for line in open(f"{run}/iperf3-rc.txt"):
            k, v = line.split()
            rcs[k] = int(v)
    for path in sorted(glob.glob(f"{run}/iperf3-vm*-vm*.log")):
        name = os.path.basename(path)[: -len(".log")]
        r = iperf_result(path)
        r["exit"] = rcs.get(name)
        iperf[name.replace("iperf3-", "")] = r
        if r.get("exit") != 0 or r.get("error") or not r.get("received_bytes"):
            failures.append(f"iperf3 {name}: exit {r.get('exit')} {r.get('error', '')}".strip())

    summary = {"test": "soak", "meta": meta,
               "host": {"nproc": os.cpu_count(), "kernel": os.uname().release},
               "rss_slack_kib": a.rss_slack_kib, "warmup_s": a.warmup,
               "meshfwd": procs, "iperf3": iperf, "malformed_gre": malformed, "counters_delta": counters,
               "samples": samples, "failures": failures,
               "verdict": "PASS" if not failures else "FAIL"}
    tmp = a.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(summary, fh, indent=1)
        fh.write("\n")
    os.replace(tmp, a.out)

    # ---- text
    mib = lambda k: f"{k / 1024:.2f}"  # noqa: E731
    print(f"soak: {meta.get('duration_s')} s, samples every {meta.get('interval_s')} s, baseline after "
          f"{a.warmup:g} s; malformed GRE {meta.get('sender')} -> {a.recv}")
    print(f"  {'meshfwd':7} {'RSS MiB first/base/last':>24} {'min/max':>12} {'growth':>9} {'fds first/last':>15} "
          f"{'fds min/max':>12} {'alive':>6} {'exit':>5}")
    for vm, pr in procs.items():
        r, f = pr.get("rss_kib"), pr.get("fds")
        if not r:
            print(f"  {vm:7} no live sample")
            continue
        print(f"  {vm:7} {mib(r['first']) + '/' + mib(r['baseline']) + '/' + mib(r['last']):>24} "
              f"{mib(r['min']) + '/' + mib(r['max']):>12} {r['growth_after_warmup']:>+6d} KiB "
              f"{str(f['first']) + '/' + str(f['last']):>15} {str(f['min']) + '/' + str(f['max']):>12} "
              f"{'yes' if pr['alive_at_end'] and pr['alive_all_samples'] else 'NO':>6} {pr['exit_code_on_sigterm'] or '-':>5}")
    for name, r in iperf.items():
        if "received_gbps" in r:
            print(f"  iperf3 {name}: {r['received_gbps']} Gb/s received over {r['seconds']} s, "
                  f"{r['retransmits']} retransmits, {r['congestion']}; 1-s intervals "
                  f"{r.get('interval_gbps_min')}..{r.get('interval_gbps_max')} Gb/s, {r.get('zero_intervals')} at zero")
        else:
            print(f"  iperf3 {name}: FAILED {r.get('error')}")
    print(f"  malformed GRE: {sent_total} packets sent ({malformed['rate_pps']} pkt/s); drops on {a.recv} (delta):")
    print("    " + ", ".join(f"{m['name']}->{m['expected_drop']} {m['sent']}/{m['counter_delta']}" for m in mal))
    print(f"    (sent/counter; gre_flags and inner_malformed each count two kinds); on {a.recv}: rx - drops - "
          f"delivered to the TUN = {recv_unaccounted}")
    for vm, c in counters.items():
        print(f"  {vm} counters (delta): tx {c.get('tx_packets')} rx {c.get('rx_packets')} tun_tx {c.get('tun_tx_packets')}; "
              f"drops {c.get('drops') or 'none'}; errors {c.get('errors') or 'none'}; kernel TUN drops rx "
              f"{c.get('tun_kernel_rx_dropped')} tx {c.get('tun_kernel_tx_dropped')}")
    print(f"verdict: {summary['verdict']}" + ("" if not failures else ": " + "; ".join(failures)))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
