#!/usr/bin/env python3
"""Traffic checkers for the netns suite (stdlib only).

  flowcheck.py tcp-recv PORT OUT.json [--timeout S] [--ipv6]
      accept one TCP connection, read to EOF, write {"bytes", "sha256"} to OUT.json
  flowcheck.py tcp-send ADDR PORT MIB [--seed N] [--timeout S]
      send MIB MiB of deterministic pseudo-random data, print {"bytes", "sha256"}
  flowcheck.py udp-recv PORT OUT.json [--idle S] [--timeout S]
      count datagrams per flow (flow id, sequence number); write per-flow
      received / duplicates / reordered (sequence lower than one seen before)
  flowcheck.py udp-send ADDR PORT [--flows F] [--flow-base B] [--count N] [--burst B] [--gap S] [--size BYTES]
      F sockets (distinct source ports, flow ids B..B+F-1) send N datagrams each, round-robin
"""

import argparse
import hashlib
import json
import random
import socket
import struct
import sys
import time


def tcp_recv(a):
    ls = socket.socket(socket.AF_INET6 if a.ipv6 else socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("::" if a.ipv6 else "0.0.0.0", a.port))
    ls.listen(1)
    ls.settimeout(a.timeout)
    print("listening", flush=True)
    conn, peer = ls.accept()
    conn.settimeout(a.timeout)
    h, n = hashlib.sha256(), 0
    while True:
        b = conn.recv(1 << 20)
        if not b:
            break
        h.update(b)
        n += len(b)
    conn.close()
    res = {"bytes": n, "sha256": h.hexdigest(), "peer": peer[0]}
    with open(a.out, "w") as f:
        json.dump(res, f)
    print(json.dumps(res))


def tcp_send(a):
    rnd = random.Random(a.seed)
    total = a.mib << 20
    h = hashlib.sha256()
    deadline = time.time() + 10
    while True:
        try:
            s = socket.create_connection((a.addr, a.port), timeout=2)
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    s.settimeout(a.timeout)
    t0, sent = time.time(), 0
    while sent < total:
        chunk = rnd.randbytes(min(1 << 20, total - sent))
        h.update(chunk)
        s.sendall(chunk)
        sent += len(chunk)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)  # wait for the receiver to close
    s.close()
    dt = time.time() - t0
    print(json.dumps({"bytes": sent, "sha256": h.hexdigest(), "seconds": round(dt, 3),
                      "mbit_s": round(sent * 8 / dt / 1e6, 1)}))


def udp_recv(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("0.0.0.0", a.port))
    print("listening", flush=True)
    flows = {}
    start, got_any = time.time(), False
    s.settimeout(a.idle)
    while time.time() - start < a.timeout:
        try:
            data, _ = s.recvfrom(65535)
        except socket.timeout:
            if got_any:
                break
            continue
        got_any = True
        if len(data) < 8:
            continue
        fid, seq = struct.unpack("!II", data[:8])
        f = flows.setdefault(fid, {"received": 0, "dups": 0, "reordered": 0, "max": -1, "seen": set()})
        f["received"] += 1
        if seq in f["seen"]:
            f["dups"] += 1
        f["seen"].add(seq)
        if seq < f["max"]:
            f["reordered"] += 1
        else:
            f["max"] = seq
    res = {str(k): {x: v for x, v in f.items() if x != "seen"} for k, f in sorted(flows.items())}
    with open(a.out, "w") as fh:
        json.dump(res, fh)
    print(json.dumps(res))


def udp_send(a):
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(a.flows)]
    pad = b"\0" * max(0, a.size - 8)
    for seq in range(a.count):
        for fid, s in enumerate(socks):
            s.sendto(struct.pack("!II", a.flow_base + fid, seq) + pad, (a.addr, a.port))
        if (seq + 1) % a.burst == 0:
            time.sleep(a.gap)
    print(json.dumps({"flows": a.flows, "sent_per_flow": a.count}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("tcp-recv"); r.add_argument("port", type=int); r.add_argument("out")
    r.add_argument("--timeout", type=float, default=60); r.set_defaults(fn=tcp_recv)
    r.add_argument("--ipv6", action="store_true", help="listen on :: (IPv6) instead of 0.0.0.0")
    r = sub.add_parser("tcp-send"); r.add_argument("addr"); r.add_argument("port", type=int)
    r.add_argument("mib", type=int); r.add_argument("--seed", type=int, default=1)
    r.add_argument("--timeout", type=float, default=60); r.set_defaults(fn=tcp_send)
    r = sub.add_parser("udp-recv"); r.add_argument("port", type=int); r.add_argument("out")
    r.add_argument("--idle", type=float, default=2); r.add_argument("--timeout", type=float, default=60)
    r.set_defaults(fn=udp_recv)
    r = sub.add_parser("udp-send"); r.add_argument("addr"); r.add_argument("port", type=int)
    r.add_argument("--flows", type=int, default=4); r.add_argument("--count", type=int, default=5000)
    r.add_argument("--burst", type=int, default=32); r.add_argument("--gap", type=float, default=0.002)
    r.add_argument("--size", type=int, default=200); r.add_argument("--flow-base", type=int, default=0)
    r.set_defaults(fn=udp_send)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
