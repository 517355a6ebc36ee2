#!/usr/bin/env python3
"""Verdicts of the namespace suites over their captures and results (stdlib only).

Each prints what it found (for the test's log) and, where a VERDICT file is
named, writes there the line the test reports on failure; exit 1 on failure.

  verdict.py matrix FILE NAME...
      compact table of a mf_ping_matrix result (lines "SRC DST received/sent")
  verdict.py tcp-compare RECV.json SENDER_JSON BYTES VERDICT
      flowcheck.py tcp-recv's RECV.json against tcp-send's output: both BYTES
      long, same sha256
  verdict.py tshark-underlay FIELDS VERDICT LAYERS VM_UNDERLAY OVERLAY=UNDERLAY...
      the tshark field dump of vm1's underlay capture (run.sh
      t_underlay_capture_tshark): protocol stack LAYERS, checksums, TTL 64, DF,
      outer addresses matching the inner ones, TOS copied, a plain GRE header;
      at least 13 packets each way
  verdict.py udp-sports PCAP VERDICT [TSHARK_ARGS...]
      GRE-in-UDP source ports of 16 inner UDP flows: one port per flow, >= 4 ports
  verdict.py udp-order RESULT.json VERDICT
      flowcheck.py udp-recv's result of 12 flows x 4000: no reordering, no
      duplicates, enough received
  verdict.py gre-wire MESHFWD_UL KERNEL_UL WANT_M WANT_K KEY [PORT] < FIELDS
      tshark fields "src|dst|C|K|S|csum status|key|seq|udp dport" of pings
      between meshfwd and a kernel GRE tunnel (kernel.sh t_wire): the flags
      each side must send (WANT_*: three digits C K S), valid checksums, the
      key, increasing sequence numbers, the UDP port; prints the problems
      (nothing: all good)
"""

import collections
import json
import os
import subprocess
import sys

from toolcli import command, run


@command
def matrix(path, *names):
    res = {}
    for line in open(path):
        f = line.split()
        res[(f[0], f[1])] = f[2] if len(f) > 2 else "0/?"
    w = max(6, max(len(n) for n in names) + 1)
    print(" " * (w + 8) + "".join(n.rjust(w) for n in names))
    for s in names:
        row = []
        for d in names:
            if s == d:
                row.append("-")
            else:
                r = res.get((s, d), "0/?")
                got, sent = r.split("/")
                row.append("ok" if got == sent and got != "0" else ("FAIL" if got == "0" else r))
        print(f"  from {s:<{w}}" + "".join(c.rjust(w) for c in row))


@command
def tcp_compare(recv, sender, want, verdict):
    r = json.load(open(recv))
    s = json.loads(sender)
    want = int(want)
    msg = None
    if s["bytes"] != want:
        msg = f"sent {s['bytes']} bytes, want {want}"
    elif r["bytes"] != want:
        msg = f"received {r['bytes']} of {want} bytes"
    elif r["sha256"] != s["sha256"]:
        msg = f"sha256 mismatch: sent {s['sha256'][:16]}.. received {r['sha256'][:16]}.."
    if msg:
        open(verdict, "w").write(msg)
        return 1
    print(f"{want >> 20} MiB ok, sha256 {s['sha256'][:16]}.., {s['mbit_s']} Mbit/s")
    return 0


@command
def tshark_underlay(path, verdict_path, layers, me, *pairs):
    ul = dict(p.split("=") for p in pairs)
    bad, n, dirs = [], 0, collections.Counter()
    for ln, line in enumerate(open(path), 1):
        f = line.rstrip("\n").split("\t")
        protos, src, dst, ttl, df, cks, ds, gver, gc, gr, gcs, gproto = f + [""] * (12 - len(f))
        src, dst, ttl, df, cks, ds = (x.split(",") for x in (src, dst, ttl, df, cks, ds))
        n += 1
        why = []
        if not protos.startswith(layers):
            why.append(f"protocols {protos}, want {layers}...")
        if len(src) < 2:
            why.append("no inner IPv4")
        else:
            if cks[0] not in ("1", "Good"):
                why.append(f"outer checksum status {cks[0]}")
            if cks[1] not in ("1", "Good"):
                why.append(f"inner checksum status {cks[1]}")
            if ttl[0] != "64":
                why.append(f"outer TTL {ttl[0]}")
            if df[0] not in ("1", "True"):
                why.append("outer DF not set")
            if ul.get(src[1]) != src[0]:
                why.append(f"outer src {src[0]} for inner src {src[1]}")
            if ul.get(dst[1]) != dst[0]:
                why.append(f"outer dst {dst[0]} for inner dst {dst[1]}")
            if int(ds[0], 0) != int(ds[1], 0):
                why.append(f"outer TOS {ds[0]} != inner {ds[1]}")
            dirs["out" if src[0] == me else "in"] += 1
        if gver not in ("0",):
            why.append(f"GRE version {gver}")
        if gr in ("1", "True"):
            why.append("GRE routing bit")
        if gproto not in ("0x0800", "0x00000800", "2048"):
            why.append(f"GRE protocol {gproto}")
        if gc in ("1", "True") and gcs not in ("1", "Good"):
            why.append(f"GRE checksum status {gcs}")
        if why:
            bad.append(f"packet {ln}: " + "; ".join(why))
    verdict = open(verdict_path, "w")
    print(f"{n} GRE packets ({dirs['out']} sent by vm1, {dirs['in']} received)")
    # 5+3+2+3 requests out/in, the same number of replies the other way
    if n < 26 or dirs["out"] < 13 or dirs["in"] < 13:
        bad.append(f"expected >= 13 packets each way, got {dirs['out']} out / {dirs['in']} in")
    for b in bad[:10]:
        print(b)
    verdict.write(("\n".join(bad[:10]) + "\n") if bad else "ok\n")
    if bad:
        verdict.write(f"{len(bad)} bad packet(s) of {n}; first: {bad[0]}\n")
        return 1
    return 0


@command
def udp_sports(pcap, verdict_path, *tshark_args):
    out = subprocess.run(["tshark", "-r", pcap, *tshark_args, "-T", "fields", "-E", "occurrence=a",
                          "-E", "aggregator=,", "-e", "udp.srcport", "-e", "ip.proto"],
                         capture_output=True, text=True).stdout
    ports = collections.defaultdict(set)
    for line in out.splitlines():
        sp, proto = line.split("\t")
        sp = sp.split(",")
        if len(sp) >= 2 and proto.split(",")[-1] == "17":   # outer UDP carrying inner UDP
            ports[sp[1]].add(sp[0])
    bad = {k: v for k, v in ports.items() if len(v) != 1}
    outer = set().union(*ports.values()) if ports else set()
    msg = f"{len(ports)} inner flows over {len(outer)} outer source ports"
    print(msg)
    verdict = open(verdict_path, "w")
    if len(ports) != 16 or bad or len(outer) < 4:
        verdict.write(f"want 16 flows, each on one port, >= 4 ports: {msg}; split flows: {bad}\n")
        return 1
    verdict.write(msg + "\n")
    return 0


@command
def udp_order(path, verdict_path):
    r = json.load(open(path))
    bad = []
    for fid, f in r.items():
        print(f"flow {fid}: received {f['received']}/4000 dups {f['dups']} reordered {f['reordered']}")
        if f["reordered"]:
            bad.append(f"flow {fid}: {f['reordered']} reordered")
        if f["dups"]:
            bad.append(f"flow {fid}: {f['dups']} duplicates")
        # loss is not what this test is about (UDP bursts overflow queues), but
        # reordering needs enough packets through to be meaningful
        if f["received"] < 100:
            bad.append(f"flow {fid}: only {f['received']}/4000 received")
    total = sum(f["received"] for f in r.values())
    print(f"total received {total}/48000")
    if total < 12000:
        bad.append(f"only {total}/48000 datagrams received")
    if len(r) != 12:
        bad.append(f"{len(r)} of 12 flows seen")
    open(verdict_path, "w").write("; ".join(bad) + "\n")
    return 1 if bad else 0


@command
def gre_wire(*args):
    m_ul, k_ul, want_m, want_k, key, port = (list(args) + [""])[:6]
    want = {(m_ul, k_ul): want_m, (k_ul, m_ul): want_k}
    name = {(m_ul, k_ul): "meshfwd->kernel", (k_ul, m_ul): "kernel->meshfwd"}
    seen = {d: 0 for d in want}
    last = {}
    bad = []
    for line in sys.stdin:
        f = (line.rstrip("\n").split("|") + [""] * 9)[:9]
        d = (f[0], f[1])
        if d not in want:
            continue
        seen[d] += 1
        got = f[2] + f[3] + f[4]
        if got != want[d]:
            bad.append(f"{name[d]} flags CKS={got}, want {want[d]}")
        if f[8] != port:
            bad.append(f"{name[d]} UDP destination port {f[8] or None}, want {port or None}")
        if f[2] == "1" and f[5] != "1":
            bad.append(f"{name[d]} checksum status {f[5]} (1 = good)")
        if f[3] == "1" and int(f[6], 16) != int(key):
            bad.append(f"{name[d]} key {f[6]}, want {key}")
        if f[4] == "1":
            s = int(f[7])
            if d in last and s <= last[d]:
                bad.append(f"{name[d]} sequence {s} after {last[d]}")
            last[d] = s
    for d, n in seen.items():
        if n < 3:
            bad.append(f"only {n} {name[d]} pings captured")
    print("; ".join(dict.fromkeys(bad)))


if __name__ == "__main__":
    run()
