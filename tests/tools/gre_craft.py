#!/usr/bin/env python3
"""Send hand-built outer IPv4 + GRE + inner IPv4/ICMP echo packets (stdlib only);
with --inner6, inner IPv6/ICMPv6 (GRE protocol 0x86DD).

Run it inside a namespace attached to the test underlay, as root:

    ip netns exec NS gre_craft.py --src 192.168.16.33 --dst 192.168.16.32 \
        --inner-src 241.2.16.2 --inner-dst 241.2.0.2 [defect options]

The packet goes out through an IPPROTO_RAW socket (IP_HDRINCL), so the outer
source can be anything.  The kernel still fills in the outer total length,
identification (when 0) and header checksum.

GRE header (RFC 2784/2890, RFC 1701 for R): C R K S | reserved (9 bits) | ver (3)
then protocol type, then optional checksum+reserved1 (if C or R), key (K),
sequence (S) and, with R, a terminating NULL SRE.

Use --hex to print the packet instead of (or as well as, with --send) sending.
"""

import argparse
import socket
import struct
import sys
import time

FLAG_C, FLAG_R, FLAG_K, FLAG_S = 0x8000, 0x4000, 0x2000, 0x1000
ECN = {"not-ect": 0, "ect1": 1, "ect0": 2, "ce": 3}


def csum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4_header(src, dst, proto, payload_len, tos=0, ttl=64, df=True, ident=0,
                bad_csum=False, version=4, total_len=None):
    tot = 20 + payload_len if total_len is None else total_len
    hdr = struct.pack("!BBHHHBBH4s4s", (version << 4) | 5, tos, tot, ident,
                      0x4000 if df else 0, ttl, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    c = csum16(hdr)
    if bad_csum:
        c ^= 0x5A5A
    return hdr[:10] + struct.pack("!H", c) + hdr[12:]


def icmp_echo(ident, seq, payload: bytes) -> bytes:
    msg = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
    return msg[:2] + struct.pack("!H", csum16(msg)) + msg[4:]


def build_inner6(a, seq) -> bytes:
    """IPv6 (no extension headers) + ICMPv6 of type --icmp6-type (128 = echo
    request) with a valid checksum over the IPv6 pseudo-header."""
    payload = (a.payload.encode() * (a.payload_len // max(1, len(a.payload)) + 1))[: a.payload_len]
    src = socket.inet_pton(socket.AF_INET6, a.inner_src)
    dst = socket.inet_pton(socket.AF_INET6, a.inner_dst)
    msg = struct.pack("!BBHHH", a.icmp6_type, 0, 0, a.icmp_id, seq) + payload
    pseudo = src + dst + struct.pack("!I3xB", len(msg), 58)
    msg = msg[:2] + struct.pack("!H", csum16(pseudo + msg)) + msg[4:]
    tc = (a.inner_tos & ~3) | ECN[a.inner_ecn]
    word = (6 << 28) | (tc << 20)
    inner = struct.pack("!IHBB", word, len(msg), 58, a.inner_ttl) + src + dst + msg
    if a.truncate_inner is not None:
        inner = inner[: a.truncate_inner]
    return inner


def build_inner(a, seq) -> bytes:
    if a.inner_hex:
        return bytes.fromhex(a.inner_hex)
    if a.inner6:
        return build_inner6(a, seq)
    payload = (a.payload.encode() * (a.payload_len // max(1, len(a.payload)) + 1))[: a.payload_len]
    icmp = icmp_echo(a.icmp_id, seq, payload)
    tos = (a.inner_tos & ~3) | ECN[a.inner_ecn]
    total_len = None
    if a.inner_len_delta:
        total_len = 20 + len(icmp) + a.inner_len_delta
    inner = ipv4_header(a.inner_src, a.inner_dst, 1, len(icmp), tos=tos, ttl=a.inner_ttl,
                        df=True, ident=(a.icmp_id + seq) & 0xFFFF,
                        bad_csum=a.inner_bad_csum, version=a.inner_version,
                        total_len=total_len) + icmp
    if a.truncate_inner is not None:
        inner = inner[: a.truncate_inner]
    return inner


def build_gre(a, inner: bytes, seq) -> bytes:
    word = a.version & 0x7
    word |= (a.reserved & 0x1FF) << 3
    c = a.csum or a.bad_csum
    if c:
        word |= FLAG_C
    if a.routing:
        word |= FLAG_R
    if a.key is not None:
        word |= FLAG_K
    if a.seq is not None:
        word |= FLAG_S
    if a.flags_word is not None:
        word = a.flags_word
    opt = b""
    if word & (FLAG_C | FLAG_R):
        opt += struct.pack("!HH", 0, 0)  # checksum, offset/reserved1
    if word & FLAG_K:
        opt += struct.pack("!I", (a.key or 0) & 0xFFFFFFFF)
    if word & FLAG_S:
        opt += struct.pack("!I", ((a.seq or 0) + seq - a.icmp_seq) & 0xFFFFFFFF)
    if word & FLAG_R:
        opt += struct.pack("!HBB", 0, 0, 0)  # NULL SRE terminates the routing list
    gre = struct.pack("!HH", word, a.proto) + opt + inner
    if word & FLAG_C:
        ck = csum16(gre)
        if a.bad_csum:
            ck ^= 0x1234
        gre = gre[:4] + struct.pack("!H", ck) + gre[6:]
    return gre


def build_packet(a, seq) -> bytes:
    gre = b"" if a.empty else build_gre(a, build_inner(a, seq), seq)
    tos = (a.outer_tos & ~3) | ECN[a.outer_ecn]
    if a.udp:
        # RFC 8086 GRE-in-UDP: UDP header (zero checksum, allowed over IPv4)
        # from a flow-entropy source port to the GRE-in-UDP port.
        udp = struct.pack("!HHHH", a.udp_sport, a.udp, 8 + len(gre), 0) + gre
        return ipv4_header(a.src, a.dst, 17, len(udp), tos=tos, ttl=a.outer_ttl,
                           df=not a.no_df) + udp
    return ipv4_header(a.src, a.dst, 47, len(gre), tos=tos, ttl=a.outer_ttl,
                       df=not a.no_df) + gre


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    o = p.add_argument_group("outer IPv4")
    o.add_argument("--src", required=True, help="outer source address")
    o.add_argument("--dst", required=True, help="outer destination (receiving VM underlay)")
    o.add_argument("--outer-ttl", type=int, default=64)
    o.add_argument("--outer-tos", type=lambda x: int(x, 0), default=0, help="DSCP bits (ECN bits ignored)")
    o.add_argument("--outer-ecn", choices=ECN, default="not-ect", help="outer ECN field")
    o.add_argument("--ce", action="store_const", dest="outer_ecn", const="ce",
                   help="mark the outer header CE (same as --outer-ecn ce)")
    o.add_argument("--no-df", action="store_true")
    o.add_argument("--udp", type=int, metavar="PORT", help="GRE-in-UDP (RFC 8086) to this UDP port")
    o.add_argument("--udp-sport", type=int, default=49152, help="UDP source port (with --udp)")
    o.add_argument("--empty", action="store_true",
                   help="no GRE at all: an empty IP payload (or empty UDP datagram with --udp)")
    g = p.add_argument_group("GRE")
    g.add_argument("--csum", action="store_true", help="C flag with a correct checksum")
    g.add_argument("--bad-csum", action="store_true", help="C flag with a wrong checksum")
    g.add_argument("--key", type=lambda x: int(x, 0), help="K flag with this key")
    g.add_argument("--seq", type=lambda x: int(x, 0), help="S flag, first sequence number")
    g.add_argument("--routing", action="store_true", help="R flag (RFC 1701) + NULL SRE")
    g.add_argument("--reserved", type=lambda x: int(x, 0), default=0,
                   help="value of the 9 reserved flag bits (bits 4-12)")
    g.add_argument("--version", type=int, default=0, help="GRE version (0-7)")
    g.add_argument("--proto", type=lambda x: int(x, 0), default=None,
                   help="protocol type [default: 0x0800, 0x86DD with --inner6]")
    g.add_argument("--flags-word", type=lambda x: int(x, 0),
                   help="override the whole first 16-bit word (flags + version)")
    i = p.add_argument_group("inner IPv4/ICMP echo")
    i.add_argument("--inner-src", required=True)
    i.add_argument("--inner-dst", required=True)
    i.add_argument("--inner-ttl", type=int, default=64)
    i.add_argument("--inner-tos", type=lambda x: int(x, 0), default=0)
    i.add_argument("--inner-ecn", choices=ECN, default="not-ect")
    i.add_argument("--inner-version", type=int, default=4)
    i.add_argument("--inner-bad-csum", action="store_true", help="wrong inner header checksum")
    i.add_argument("--inner-len-delta", type=int, default=0,
                   help="add this to the inner total-length field (lie about the length)")
    i.add_argument("--truncate-inner", type=int, metavar="N",
                   help="keep only the first N bytes of the inner packet (its length field unchanged)")
    i.add_argument("--icmp-id", type=lambda x: int(x, 0), default=0x4D46)
    i.add_argument("--payload", default="meshfwd-gre-craft ")
    i.add_argument("--payload-len", type=int, default=56)
    i.add_argument("--inner-hex", help="use these bytes (hex) as the inner packet verbatim")
    i.add_argument("--inner6", action="store_true",
                   help="inner IPv6 + ICMPv6 (--inner-src/--inner-dst are IPv6 addresses)")
    i.add_argument("--icmp6-type", type=int, default=128,
                   help="ICMPv6 type with --inner6 (128 echo request, 135 neighbour solicitation, ...)")
    r = p.add_argument_group("sending")
    r.add_argument("--count", type=int, default=1)
    r.add_argument("--icmp-seq", type=int, default=1, help="first ICMP sequence number")
    r.add_argument("--interval", type=float, default=0.01)
    r.add_argument("--hex", action="store_true", help="print each packet as hex (no send unless --send)")
    r.add_argument("--send", action="store_true", help="with --hex: send as well")
    a = p.parse_args()
    if a.proto is None:
        a.proto = 0x86DD if a.inner6 else 0x0800

    sock = None
    if not a.hex or a.send:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for n in range(a.count):
        pkt = build_packet(a, a.icmp_seq + n)
        if a.hex:
            print(pkt.hex())
        if sock:
            sock.sendto(pkt, (a.dst, 0))
            if n + 1 < a.count:
                time.sleep(a.interval)
    if sock:
        print(f"sent {a.count} packet(s) {a.src} -> {a.dst}, {len(pkt)} bytes each", file=sys.stderr)


if __name__ == "__main__":
    main()
