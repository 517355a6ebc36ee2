#!/usr/bin/env python3
"""Helper of scripts/bench.sh: parse iperf3/ping output, summarise, chart.

  bench_report.py udp-result FILE.json        -> "received_bps lost_percent"
  bench_report.py report --out DIR --samples DIR/samples.tsv --meta-file META.json [--no-charts]
  bench_report.py render DIR [--no-charts]    # table + charts again from DIR/results.json

Only the Python standard library is needed, plus matplotlib for the charts.
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys

PATH_ORDER = ["raw", "raw-nooff", "vxlan", "fastd", "tinc", "meshfwd", "meshfwd-nopin", "meshfwd-nooff",
              "meshfwd-udp", "meshfwd-udp-nopin", "meshfwd-t1", "meshfwd-t2", "meshfwd-t4", "meshfwd-t8",
              "meshfwd-base", "meshfwd-udp-base", "meshfwd-base-nopin", "meshfwd-base-t1", "meshfwd-base-t2",
              "meshfwd-base-t4", "meshfwd-base-t8"]
LABEL = {
    "raw": "raw veth",
    "raw-nooff": "raw veth, no offload",
    "vxlan": "kernel VXLAN",
    "fastd": "fastd null",
    "tinc": "tinc 1.0 none",
    "meshfwd": "meshfwd (pinned, default)",
    "meshfwd-nopin": "meshfwd --no-pin",
    "meshfwd-nooff": "meshfwd --no-offload",
    "meshfwd-udp": "meshfwd --encap udp (pinned)",
    "meshfwd-udp-nopin": "meshfwd --encap udp --no-pin",
    "meshfwd-t1": "meshfwd --no-pin --threads 1",
    "meshfwd-t2": "meshfwd --no-pin --threads 2",
    "meshfwd-t4": "meshfwd --no-pin --threads 4",
    "meshfwd-t8": "meshfwd --no-pin --threads 8",
    "meshfwd-base": "meshfwd (--baseline build)",
    "meshfwd-udp-base": "meshfwd --encap udp (--baseline build)",
    "meshfwd-base-nopin": "meshfwd --no-pin (--baseline build)",
    "meshfwd-base-t1": "meshfwd --no-pin --threads 1 (--baseline build)",
    "meshfwd-base-t2": "meshfwd --no-pin --threads 2 (--baseline build)",
    "meshfwd-base-t4": "meshfwd --no-pin --threads 4 (--baseline build)",
    "meshfwd-base-t8": "meshfwd --no-pin --threads 8 (--baseline build)",
}
MESHFWD_PATHS = {p for p in PATH_ORDER if p.startswith("meshfwd")}
DAEMON_PATHS = {"fastd", "tinc"} | MESHFWD_PATHS

# metrics summarised per path: key -> (label, unit, digits)
METRICS = {
    "tcp1_gbps": ("TCP 1 stream", "Gb/s", 2),
    "tcp4_gbps": ("TCP 4 streams", "Gb/s", 2),
    "tcp1v6_gbps": ("TCP 1 stream over IPv6", "Gb/s", 2),
    "udp1400_gbps": ("UDP 1400 B, <1 % loss", "Gb/s", 2),
    "udp1400_unlimited_gbps": ("UDP 1400 B at -b 0, received", "Gb/s", 2),
    "udp1400_unlimited_loss_pct": ("UDP 1400 B at -b 0, loss", "%", 1),
    "udp64_kpps": ("UDP 64 B received", "kpps", 0),
    "ping_p50_us": ("ping RTT p50", "µs", 0),
    "ping_p99_us": ("ping RTT p99", "µs", 0),
    "added_p50_us": ("RTT p50 added over raw", "µs", 0),
    "added_p99_us": ("RTT p99 added over raw", "µs", 0),
    "tcp1_retransmits": ("TCP 1 stream retransmits", "", 0),
    "tcp1_daemon_cores": ("daemon cores busy, TCP 1 stream", "cores", 2),
    "tcp1_gbps_per_core": ("Gb/s per daemon core, TCP 1 stream", "Gb/s", 2),
    "tcp4_gbps_per_core": ("Gb/s per daemon core, TCP 4 streams", "Gb/s", 2),
    "udp1400_gbps_per_core": ("Gb/s per daemon core, UDP 1400 B", "Gb/s", 2),
    "udp64_kpps_per_core": ("kpps per daemon core, UDP 64 B", "kpps", 0),
    "tcp1_machine_cores": ("machine cores busy, TCP 1 stream", "cores", 2),
    "rss_max_mib": ("daemon RSS max (one process)", "MiB", 1),
}
# metrics for which meshfwd/X ratios are computed per repetition
RATIO_METRICS = ["tcp1_gbps", "tcp4_gbps", "udp1400_gbps", "udp64_kpps", "tcp1_gbps_per_core"]

TARGETS = [
    # key, description, kind, threshold, stretch
    ("ratio:fastd:tcp1_gbps", "meshfwd TCP 1-stream / fastd-null", ">=", 8.0, None),
    ("ratio:vxlan:tcp1_gbps", "meshfwd TCP 1-stream / kernel VXLAN", ">=", 0.25, 0.5),
    ("ratio:fastd:tcp1_gbps_per_core", "Gb/s per meshfwd core / fastd's (TCP 1-stream)", ">=", 10.0, None),
    ("path:meshfwd:added_p50_us", "meshfwd ping RTT p50 added over raw (µs)", "<=", 50.0, None),
    ("path:meshfwd:rss_max_mib", "meshfwd RSS under load, max of any sample (MiB)", "<=", 32.0, None),
    # the same targets for GRE-in-UDP (issue #7 adds >= 0.8x VXLAN for it)
    ("ratio-udp:fastd:tcp1_gbps", "meshfwd-udp TCP 1-stream / fastd-null", ">=", 8.0, None),
    ("ratio-udp:vxlan:tcp1_gbps", "meshfwd-udp TCP 1-stream / kernel VXLAN", ">=", 0.8, None),
    ("ratio-udp:fastd:tcp1_gbps_per_core", "Gb/s per meshfwd-udp core / fastd's (TCP 1-stream)", ">=", 10.0, None),
    ("path:meshfwd-udp:added_p50_us", "meshfwd-udp ping RTT p50 added over raw (µs)", "<=", 50.0, None),
    ("path:meshfwd-udp:rss_max_mib", "meshfwd-udp RSS under load, max of any sample (MiB)", "<=", 32.0, None),
]


# ----------------------------------------------------------------- parsing --

def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def iperf_udp(j):
    """(received bps, lost %, received pps, seconds) from an iperf3 -u -J result."""
    if not j or "end" not in j or j.get("error"):
        return None
    end = j["end"]
    r = end.get("sum_received") or end.get("sum")
    if not r:
        return None
    secs = r.get("seconds") or 0
    pkts = r.get("packets", 0) - r.get("lost_packets", 0)
    return {
        "recv_bps": r.get("bits_per_second", 0.0),
        "sent_bps": (end.get("sum_sent") or {}).get("bits_per_second"),
        "loss_pct": r.get("lost_percent", 100.0),
        "recv_pps": pkts / secs if secs else 0.0,
        "packets": r.get("packets", 0),
        "lost_packets": r.get("lost_packets", 0),
        "seconds": secs,
    }


def iperf_tcp(j):
    if not j or "end" not in j or j.get("error"):
        return None
    end = j["end"]
    r = end.get("sum_received") or {}
    s = end.get("sum_sent") or {}
    return {
        "recv_bps": r.get("bits_per_second", 0.0),
        "sent_bps": s.get("bits_per_second", 0.0),
        "retransmits": s.get("retransmits"),
        "seconds": r.get("seconds"),
        "streams": len(end.get("streams", [])),
    }


def parse_ping(text):
    rtts = [float(m) * 1000.0 for m in re.findall(r"time=([0-9.]+) ms", text)]
    m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", text)
    sent, got = (int(m.group(1)), int(m.group(2))) if m else (None, len(rtts))
    if not rtts:
        return None
    return {
        "p50_us": percentile(rtts, 50),
        "p99_us": percentile(rtts, 99),
        "mean_us": statistics.fmean(rtts),
        "min_us": min(rtts),
        "max_us": max(rtts),
        "transmitted": sent,
        "received": got,
    }


def percentile(values, p):
    """Linear interpolation between closest ranks (numpy's default)."""
    v = sorted(values)
    if len(v) == 1:
        return v[0]
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


# ----------------------------------------------------------- sample table --

def read_samples(path, raw_dir, clk_tck):
    rows = []
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            if not line.strip():
                continue
            d = dict(zip(header, line.rstrip("\n").split("\t")))
            row = {
                "rep": int(d["rep"]),
                "path": d["path"],
                "test": d["test"],
                "step": int(d["step"] or 0),
                "file": "raw/" + d["file"],
                "rc": int(d["rc"]),
                "wall_s": float(d["wall_s"]),
                "daemon_cpu_s": int(d["daemon_ticks"] or 0) / clk_tck,
                "machine_busy_cores": None,
                "rss_kib": {},
                "target_bps": int(d["target_bps"]) if d.get("target_bps") else None,
                "unix_time": int(d["start"]),
            }
            tb, tt = int(d["sys_busy_ticks"] or 0), int(d["sys_total_ticks"] or 0)
            ncpu = os.cpu_count() or 1
            if tt:
                row["machine_busy_cores"] = ncpu * tb / tt
            for kv in filter(None, (d.get("rss_kib") or "").split(",")):
                pid, kib = kv.split(":")
                row["rss_kib"][pid] = int(kib)
            row["daemon_cores"] = row["daemon_cpu_s"] / row["wall_s"] if row["wall_s"] else None
            fpath = os.path.join(raw_dir, d["file"])
            if row["test"] == "ping":
                try:
                    with open(fpath) as pf:
                        row["result"] = parse_ping(pf.read())
                except OSError:
                    row["result"] = None
            elif row["test"] in ("udp", "udp64"):
                row["result"] = iperf_udp(load_json(fpath))
            else:
                row["result"] = iperf_tcp(load_json(fpath))
            rows.append(row)
    return rows


def per_rep_metrics(rows, loss_max):
    """{(rep, path): {metric: value}} from the sample rows."""
    out = {}

    def put(rep, path, key, val):
        if val is not None:
            out.setdefault((rep, path), {})[key] = val

    def per_core(value, row):
        if row["path"] not in DAEMON_PATHS or not row.get("daemon_cores"):
            return None
        return value / row["daemon_cores"]

    udp_steps = {}
    for r in rows:
        rep, path, test, res = r["rep"], r["path"], r["test"], r["result"]
        if r["rss_kib"]:
            m = max(r["rss_kib"].values()) / 1024.0
            cur = out.get((rep, path), {}).get("rss_max_mib", 0.0)
            put(rep, path, "rss_max_mib", max(cur, m))
        if res is None:
            continue
        if test in ("tcp1", "tcp4", "tcp1v6"):
            g = res["recv_bps"] / 1e9
            put(rep, path, f"{test}_gbps", g)
            put(rep, path, f"{test}_gbps_per_core", per_core(g, r))
            if test == "tcp1":
                put(rep, path, "tcp1_retransmits", res["retransmits"])
                if path in DAEMON_PATHS:
                    put(rep, path, "tcp1_daemon_cores", r["daemon_cores"])
                put(rep, path, "tcp1_machine_cores", r["machine_busy_cores"])
        elif test == "udp":
            udp_steps.setdefault((rep, path), []).append(r)
        elif test == "udp64":
            k = res["recv_pps"] / 1e3
            put(rep, path, "udp64_kpps", k)
            put(rep, path, "udp64_kpps_per_core", per_core(k, r))
        elif test == "ping":
            put(rep, path, "ping_p50_us", res["p50_us"])
            put(rep, path, "ping_p99_us", res["p99_us"])
    for (rep, path), steps in udp_steps.items():
        probe = [s for s in steps if s["step"] == 0]
        if probe:
            put(rep, path, "udp1400_unlimited_gbps", probe[0]["result"]["recv_bps"] / 1e9)
            put(rep, path, "udp1400_unlimited_loss_pct", probe[0]["result"]["loss_pct"])
        passing = [s for s in steps if s["result"]["loss_pct"] < loss_max]
        if passing:
            best = max(passing, key=lambda s: s["result"]["recv_bps"])
            g = best["result"]["recv_bps"] / 1e9
            put(rep, path, "udp1400_gbps", g)
            put(rep, path, "udp1400_gbps_per_core", per_core(g, best))
    # latency added over the raw path of the same repetition
    for (rep, path), m in list(out.items()):
        raw = out.get((rep, "raw"), {})
        for q in ("p50", "p99"):
            if f"ping_{q}_us" in m and f"ping_{q}_us" in raw:
                m[f"added_{q}_us"] = m[f"ping_{q}_us"] - raw[f"ping_{q}_us"]
    return out


def stats(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v), "values": v}


def summarise(per_rep, paths, reps):
    summary = {}
    for p in paths:
        summary[p] = {}
        for key in METRICS:
            s = stats([per_rep.get((r, p), {}).get(key) for r in reps])
            if s:
                summary[p][key] = s
        if "rss_max_mib" in summary[p]:  # the worst sample is what the target is about
            summary[p]["rss_max_mib"]["worst"] = summary[p]["rss_max_mib"]["max"]
    ratios = {}
    for num in [p for p in ("meshfwd", "meshfwd-nopin", "meshfwd-nooff", "meshfwd-udp", "meshfwd-udp-nopin",
                            "meshfwd-t8", "meshfwd-base-t8") if p in paths]:
        for den in paths:
            if den == num:
                continue
            for key in RATIO_METRICS:
                vals = []
                for r in reps:
                    a = per_rep.get((r, num), {}).get(key)
                    b = per_rep.get((r, den), {}).get(key)
                    if a is not None and b:
                        vals.append(a / b)
                s = stats(vals)
                if s:
                    ratios.setdefault(num, {}).setdefault(den, {})[key] = s
    # TCP over the IPv6 overlay / over IPv4, same path, same repetition (#17)
    for p in paths:
        vals = []
        for r in reps:
            m = per_rep.get((r, p), {})
            if m.get("tcp1v6_gbps") is not None and m.get("tcp1_gbps"):
                vals.append(m["tcp1v6_gbps"] / m["tcp1_gbps"])
        s = stats(vals)
        if s:
            ratios.setdefault("v6_over_v4", {})[p] = s
    return summary, ratios


def evaluate_targets(summary, ratios):
    out = []
    for key, desc, kind, thr, stretch in TARGETS:
        parts = key.split(":")
        s = None
        if parts[0] in ("ratio", "ratio-udp"):
            num = "meshfwd-udp" if parts[0] == "ratio-udp" else "meshfwd"
            s = ratios.get(num, {}).get(parts[1], {}).get(parts[2])
        else:
            s = summary.get(parts[1], {}).get(parts[2])
        if s is None:
            out.append({"target": desc, "key": key, "threshold": thr, "op": kind, "value": None,
                        "met": None})
            continue
        # RSS: judged on the worst sample; everything else on the median
        val = s["max"] if key.endswith("rss_max_mib") else s["median"]
        met = val >= thr if kind == ">=" else val <= thr
        item = {"target": desc, "key": key, "threshold": thr, "op": kind, "value": val,
                "min": s["min"], "max": s["max"], "per_rep": s["values"], "met": met}
        if stretch is not None:
            item["stretch"] = stretch
            item["stretch_met"] = val >= stretch if kind == ">=" else val <= stretch
        out.append(item)
    return out


# ------------------------------------------------------------- machine --

def machine_info():
    info = {"kernel": platform.release(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        with open("/etc/debian_version") as f:
            info["debian"] = f.read().strip()
    except OSError:
        pass

    def ver(cmd, pat):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
            m = re.search(pat, out.stdout + out.stderr)
            return m.group(1) if m else None
        except (OSError, subprocess.SubprocessError):
            return None
    info["iperf3"] = ver(["iperf3", "--version"], r"iperf ([0-9.]+)")
    info["fastd"] = ver(["fastd", "--version"], r"fastd (v?[0-9.]+)")
    info["tinc"] = ver(["tincd", "--version"], r"tinc version ([0-9.]+)")
    try:
        with open("/proc/loadavg") as f:
            info["loadavg_at_report"] = f.read().split()[:3]
    except OSError:
        pass
    return info


# ---------------------------------------------------------------- output --

def fmt(v, digits):
    if v is None:
        return "–"
    if abs(v) >= 1000 and digits == 0:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def cell(s, digits):
    if not s:
        return "–"
    if s["n"] == 1:
        return fmt(s["median"], digits)
    return f"{fmt(s['median'], digits)} ({fmt(s['min'], digits)}–{fmt(s['max'], digits)})"


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(r) + " |")
    return "\n".join(lines)


def render_tables(res):
    meta, summary, ratios, targets = res["meta"], res["summary"], res["ratios"], res["targets"]
    paths = [p for p in PATH_ORDER if p in summary]
    mtu = meta.get("mtu", {})
    out = []
    extra = meta.get("meshfwd_extra_args")
    out.append(f"Medians of {meta['reps']} repetition(s), (min–max) across repetitions."
               + (f" meshfwd run with extra options `{extra}`." if extra else "") + "\n")
    out.append("**Throughput**\n")
    hdr = ["path", "inner MTU", "TCP 1 stream Gb/s", "TCP 4 streams Gb/s", "UDP 1400 B Gb/s (<1 % loss)",
           "UDP 64 B kpps", "TCP 1 retransmits"]
    rows = []
    for p in paths:
        s = summary[p]
        rows.append([LABEL[p], str(mtu.get(p) or "–"), cell(s.get("tcp1_gbps"), 2), cell(s.get("tcp4_gbps"), 2),
                     cell(s.get("udp1400_gbps"), 2), cell(s.get("udp64_kpps"), 0),
                     cell(s.get("tcp1_retransmits"), 0)])
    out.append(md_table(hdr, rows))
    out.append("\n**Latency and cost**\n")
    hdr = ["path", "ping p50 µs", "ping p99 µs", "p50 added over raw µs", "p99 added over raw µs",
           "daemon cores (TCP 1)", "Gb/s per daemon core (TCP 1)", "daemon RSS max MiB"]
    rows = []
    for p in paths:
        s = summary[p]
        rss = s.get("rss_max_mib")
        rows.append([LABEL[p], cell(s.get("ping_p50_us"), 0), cell(s.get("ping_p99_us"), 0),
                     cell(s.get("added_p50_us"), 0) if p != "raw" else "0",
                     cell(s.get("added_p99_us"), 0) if p != "raw" else "0",
                     cell(s.get("tcp1_daemon_cores"), 2), cell(s.get("tcp1_gbps_per_core"), 2),
                     fmt(rss["max"], 1) if rss else "–"])
    out.append(md_table(hdr, rows))
    for num in ("meshfwd", "meshfwd-nopin", "meshfwd-nooff", "meshfwd-udp", "meshfwd-udp-nopin", "meshfwd-t8",
                "meshfwd-base-t8"):
        if num not in ratios:
            continue
        out.append(f"\n**Ratios {LABEL[num]} / X** (computed per repetition, then medianed)\n")
        hdr = ["X", "TCP 1 stream", "TCP 4 streams", "UDP 1400 B", "UDP 64 B pps", "Gb/s per daemon core (TCP 1)"]
        rows = []
        for den in paths:
            if den not in ratios[num]:
                continue
            r = ratios[num][den]
            rows.append([LABEL[den]] + [cell(r.get(k), 2) for k in RATIO_METRICS])
        out.append(md_table(hdr, rows))
    v6 = ratios.get("v6_over_v4", {})
    if v6:
        out.append("\n**TCP 1 stream over the IPv6 overlay / over IPv4** (same path, per repetition, then"
                   " medianed; goal >= 0.9)\n")
        rows = []
        for p in paths:
            if p in v6:
                s6 = summary[p]
                rows.append([LABEL[p], cell(s6.get("tcp1_gbps"), 2), cell(s6.get("tcp1v6_gbps"), 2), cell(v6[p], 2),
                             ", ".join(fmt(v, 2) for v in v6[p]["values"])])
        out.append(md_table(["path", "TCPv4 Gb/s", "TCPv6 Gb/s", "TCPv6 / TCPv4", "per repetition"], rows))
    if targets:
        out.append("\n**Targets** (median of the per-repetition values, min–max; RSS: the worst sample)\n")
        rows = []
        for t in targets:
            if t["value"] is None:
                verdict = "not measured"
            else:
                verdict = "**met**" if t["met"] else "**not met**"
                if "stretch" in t:
                    verdict += f"; stretch {t['op']} {t['stretch']:g}: " + ("met" if t["stretch_met"] else "not met")
            d = 0 if t["key"].endswith("_us") else 1 if t["key"].endswith("_mib") else 2
            val = "–" if t["value"] is None else (
                fmt(t["value"], d) + (f" ({fmt(t['min'], d)}–{fmt(t['max'], d)})" if t.get("min") != t.get("max") else ""))
            reps = ", ".join(fmt(v, d) for v in t.get("per_rep") or []) or "–"
            rows.append([t["target"], f"{t['op']} {t['threshold']:g}", val, reps, verdict])
        out.append(md_table(["target", "goal", "measured", "per repetition", "verdict"], rows))
    return "\n".join(out) + "\n"


def charts(res, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    summary = res["summary"]
    paths = [p for p in PATH_ORDER if p in summary]
    short = {"raw": "raw veth", "raw-nooff": "raw veth\nno offload", "vxlan": "kernel\nVXLAN", "fastd": "fastd\nnull", "tinc": "tinc 1.0\nnone",
             "meshfwd": "meshfwd", "meshfwd-nooff": "meshfwd\nno offload",
             "meshfwd-udp": "meshfwd\nGRE-in-UDP", "meshfwd-base": "meshfwd\nbaseline",
             "meshfwd-udp-base": "meshfwd-udp\nbaseline", "meshfwd-nopin": "meshfwd\n--no-pin",
             "meshfwd-udp-nopin": "meshfwd-udp\n--no-pin", "meshfwd-t1": "GRE\n1 thread",
             "meshfwd-t2": "GRE\n2 threads", "meshfwd-t4": "GRE\n4 threads", "meshfwd-t8": "GRE\n8 threads",
             "meshfwd-base-nopin": "baseline\n--no-pin", "meshfwd-base-t1": "baseline\n1 thread",
             "meshfwd-base-t2": "baseline\n2 threads", "meshfwd-base-t4": "baseline\n4 threads",
             "meshfwd-base-t8": "baseline\n8 threads"}
    labels = [short[p] for p in paths]
    meta = res["meta"]
    sub = f"{meta['reps']} rep(s), median with min–max; 2 namespaces, veth MTU 1500; {meta.get('timestamp', '')}"
    files = []

    def bars(ax, keys, names, colors, digits, scale=1.0, log=False):
        n = len(keys)
        width = 0.8 / n
        for i, (k, name, c) in enumerate(zip(keys, names, colors)):
            xs, meds, lo, hi = [], [], [], []
            for j, p in enumerate(paths):
                s = summary[p].get(k)
                if not s:
                    continue
                xs.append(j + (i - (n - 1) / 2) * width)
                meds.append(s["median"] * scale)
                lo.append((s["median"] - s["min"]) * scale)
                hi.append((s["max"] - s["median"]) * scale)
            if not xs:
                continue
            ax.bar(xs, meds, width * 0.95, yerr=[lo, hi], capsize=3, label=name, color=c,
                   error_kw={"elinewidth": 1, "ecolor": "#333"})
            for x, m, h in zip(xs, meds, hi):
                ax.annotate(fmt(m, digits), (x, m + h), textcoords="offset points", xytext=(0, 2),
                            ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(paths)))
        ax.set_xticklabels(labels, fontsize=8)
        if log:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.grid(axis="y", alpha=0.3, which="both")
        ax.set_axisbelow(True)

    # 1. throughput per path
    fig, ax = plt.subplots(figsize=(9, 4.6), dpi=100)
    bars(ax, ["tcp1_gbps", "tcp4_gbps", "udp1400_gbps"],
         ["TCP 1 stream", "TCP 4 streams", "UDP 1400 B (<1 % loss)"],
         ["#1f77b4", "#6baed6", "#ff7f0e"], 2, log=True)
    ax.set_ylabel("Gb/s (log scale)")
    ax.set_title("Throughput per path\n" + sub, fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    f = os.path.join(out_dir, "throughput.png")
    fig.savefig(f)
    plt.close(fig)
    files.append(f)

    # 2. latency
    fig, ax = plt.subplots(figsize=(9, 4.6), dpi=100)
    bars(ax, ["ping_p50_us", "ping_p99_us"], ["ping RTT p50", "ping RTT p99"], ["#2ca02c", "#98df8a"], 0,
         log=True)
    raw = summary.get("raw", {}).get("ping_p50_us")
    if raw:
        y = raw["median"] + 50
        ax.axhline(y, color="#d62728", linestyle="--", linewidth=1)
        ax.annotate("target for meshfwd p50:\nraw p50 + 50 µs", (0.5, y), textcoords="offset points",
                    xytext=(0, 3), ha="center", va="bottom", fontsize=8, color="#d62728")
    ax.set_ylabel("round-trip time, µs (log scale)")
    ax.set_title("Ping RTT per path (idle, 56 B)\n" + sub, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    f = os.path.join(out_dir, "latency.png")
    fig.savefig(f)
    plt.close(fig)
    files.append(f)

    # 3. efficiency and packet rate
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=100)
    bars(a1, ["tcp1_gbps_per_core"], ["TCP 1 stream"], ["#9467bd"], 2)
    for j, p in enumerate(paths):
        if p not in DAEMON_PATHS:
            a1.annotate("kernel,\nno daemon", (j, 0), textcoords="offset points", xytext=(0, 4),
                        ha="center", va="bottom", fontsize=7, color="#666")
    a1.set_ylabel("Gb/s per daemon core")
    a1.set_title("TCP 1 stream Gb/s per tunnel-daemon core\n(both VMs' daemons: utime+stime)", fontsize=10)
    bars(a2, ["udp64_kpps"], ["UDP 64 B"], ["#8c564b"], 0)
    a2.set_ylabel("received kpps")
    a2.set_title("UDP 64 B packets/s received\n(sender at -b 0)", fontsize=10)
    for a in (a1, a2):
        a.tick_params(axis="x", labelsize=7)
        a.margins(y=0.12)
    fig.tight_layout()
    f = os.path.join(out_dir, "efficiency.png")
    fig.savefig(f)
    plt.close(fig)
    files.append(f)
    return files


def render(res, out_dir, with_charts):
    table = render_tables(res)
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(table)
    print()
    print(table)
    if with_charts:
        try:
            files = charts(res, out_dir)
            print("charts: " + ", ".join(os.path.relpath(x) for x in files))
        except ImportError as e:
            print(f"charts skipped: {e}", file=sys.stderr)


def meshfwd_counters(log_dir):
    """Non-zero drop/error counters of the last meshfwd instance of each variant."""
    out = {}
    try:
        names = sorted(os.listdir(log_dir))
    except OSError:
        return out
    for n in names:
        if not n.endswith(".stats.json"):
            continue
        j = load_json(os.path.join(log_dir, n))
        if not j:
            continue
        nz = {f"{g}.{k}": v for g in ("drops", "errors") for k, v in (j.get(g) or {}).items() if v}
        for k in ("tun_kernel_rx_dropped", "tun_kernel_tx_dropped"):
            if j.get(k):
                nz[k] = j[k]
        out[n[: -len(".stats.json")]] = {"tx_packets": j.get("tx_packets"), "rx_packets": j.get("rx_packets"),
                                         "nonzero_drops_errors": nz}
    return out


def cmd_report(a):
    with open(a.meta_file) as f:
        meta = json.load(f)
    meta["machine"] = machine_info()
    meta["meshfwd_last_counters"] = meshfwd_counters(os.path.join(a.out, "logs"))
    rows = read_samples(a.samples, os.path.join(a.out, "raw"), meta.get("clk_tck", 100))
    reps = sorted({r["rep"] for r in rows})
    paths = [p for p in PATH_ORDER if any(r["path"] == p for r in rows)]
    per_rep = per_rep_metrics(rows, meta.get("udp_loss_max_pct", 1))
    summary, ratios = summarise(per_rep, paths, reps)
    res = {
        "meta": meta,
        "summary": summary,
        "ratios": ratios,
        "targets": evaluate_targets(summary, ratios),
        "per_rep": [{"rep": r, "path": p, **m} for (r, p), m in sorted(per_rep.items())],
        "samples": rows,
    }
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    render(res, a.out, not a.no_charts)


def cmd_render(a):
    with open(os.path.join(a.dir, "results.json")) as f:
        res = json.load(f)
    render(res, a.dir, not a.no_charts)


def cmd_udp_result(a):
    r = iperf_udp(load_json(a.file))
    if r is None:
        return 1
    print(f"{r['recv_bps']:.0f} {r['loss_pct']:.4f} {r['sent_bps'] or r['recv_bps']:.0f}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp = ap.add_subparsers(dest="cmd", required=True)
    p = sp.add_parser("udp-result")
    p.add_argument("file")
    p.set_defaults(fn=cmd_udp_result)
    p = sp.add_parser("report")
    p.add_argument("--out", required=True)
    p.add_argument("--samples", required=True)
    p.add_argument("--meta-file", required=True)
    p.add_argument("--no-charts", action="store_true")
    p.set_defaults(fn=cmd_report)
    p = sp.add_parser("render")
    p.add_argument("dir")
    p.add_argument("--no-charts", action="store_true")
    p.set_defaults(fn=cmd_render)
    a = ap.parse_args()
    return a.fn(a) or 0


if __name__ == "__main__":
    sys.exit(main())
