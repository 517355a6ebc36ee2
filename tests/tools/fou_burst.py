#!/usr/bin/env python3
"""Send a burst of GRE-in-UDP (RFC 8086) packets carrying in-sequence inner TCP
segments (stdlib only, independent of meshfwd), to see how a receiver's GRO
treats them. Used by tests/netns/kernel.sh (case fougro).

    ip netns exec NS fou_burst.py --src 192.168.20.16 --dst 192.168.30.16 \
        --inner-src 241.65.0.2 --inner-dst 241.225.0.1 [--count 20] \
        [--udp-csum] [--sport 4754] [--port 4754]

Full-size packets: 20 IPv4 + 8 UDP + 4 GRE + 20 IPv4 + 20 TCP + 1416 = 1488
bytes with the default --mss. Goes out through an IPPROTO_RAW socket; the
kernel fills in the outer identification.
"""

import argparse
import socket
import struct


def csum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src, dst, proto, payload_len, ident):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, ident, 0x4000, 64, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack("!H", csum16(h)) + h[12:]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--inner-src", required=True)
    p.add_argument("--inner-dst", required=True)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--mss", type=int, default=1416)
    p.add_argument("--udp-csum", action="store_true", help="compute the UDP checksum (default: 0, none)")
    p.add_argument("--sport", type=int, default=49152)
    p.add_argument("--port", type=int, default=4754)
    a = p.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for i in range(a.count):
        payload = bytes((i * 7 + j) & 0xFF for j in range(a.mss))
        tcp = struct.pack("!HHIIBBHHH", 40000, 5999, 1000000 + i * a.mss, 1, 5 << 4, 0x10, 1000, 0, 0) + payload
        pseudo = socket.inet_aton(a.inner_src) + socket.inet_aton(a.inner_dst) + struct.pack("!BBH", 0, 6, len(tcp))
        tcp = tcp[:16] + struct.pack("!H", csum16(pseudo + tcp)) + tcp[18:]
        gre = struct.pack("!HH", 0, 0x0800) + ipv4(a.inner_src, a.inner_dst, 6, len(tcp), 0x1000 + i) + tcp
        udp = struct.pack("!HHHH", a.sport, a.port, 8 + len(gre), 0) + gre
        if a.udp_csum:
            pseudo = socket.inet_aton(a.src) + socket.inet_aton(a.dst) + struct.pack("!BBH", 0, 17, len(udp))
            udp = udp[:6] + struct.pack("!H", csum16(pseudo + udp) or 0xFFFF) + udp[8:]
        sock.sendto(ipv4(a.src, a.dst, 17, len(udp), 0) + udp, (a.dst, 0))


if __name__ == "__main__":
    main()
