#!/usr/bin/env python3
"""Small network probes of the namespace suites (stdlib only).

  probe.py udp-flows DST
      16 UDP flows (source ports 40000..40015) of 3 datagrams each to DST:9
  probe.py udp-hold ADDR PORT [SECONDS]
      bind UDP ADDR:PORT, print "bound", hold it SECONDS (default 60)
  probe.py metrics-sum URL REGEX
      the sum of the Prometheus sample values at URL whose line matches REGEX
  probe.py metrics-status URL STATUS
      exit 0 if fetching URL answers HTTP STATUS (an error status, e.g. 404)
"""

import re
import socket
import sys
import time
import urllib.error
import urllib.request

from toolcli import command, run


@command
def udp_flows(dst, flows="16", per_flow="3", pause_ms="0"):
    """per_flow 32-byte datagrams to DST:9 from each of FLOWS source ports
    (40000 up), flow after flow, pausing PAUSE_MS after each flow."""
    for sport in range(40000, 40000 + int(flows)):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("", sport))
        for _ in range(int(per_flow)):
            s.sendto(b"x" * 32, (dst, 9))
        s.close()
        time.sleep(float(pause_ms) / 1000)


@command
def udp_hold(addr, port, seconds="60"):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, int(port)))
    print("bound", flush=True)
    time.sleep(float(seconds))


@command
def metrics_sum(url, regex):
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    pat = re.compile(regex)
    print(sum(int(float(l.rsplit(" ", 1)[1])) for l in body.splitlines() if not l.startswith("#") and pat.match(l)))


@command
def metrics_status(url, status):
    try:
        urllib.request.urlopen(url, timeout=5)
        raise SystemExit(f"no {status}")
    except urllib.error.HTTPError as e:
        raise SystemExit(0 if e.code == int(status) else f"status {e.code}")


if __name__ == "__main__":
    run()
