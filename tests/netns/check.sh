#!/usr/bin/env bash
# tests/netns/check.sh — `meshfwd check` in good and deliberately broken
# network namespaces (root).
#
#   sudo tests/netns/check.sh                  # after cargo build --release
#   MESHFWD=/path/to/meshfwd tests/netns/check.sh
#
# Prints "ok NAME" or "FAIL NAME (reason)" per test and ends with exactly
# "N passed, N failed"; exit status 1 if anything failed. Namespaces come from
# tests/netns/lib.sh (per-run prefix, cleanup trap); nothing is configured in
# the root namespace, and only processes started here are stopped.

# shellcheck disable=SC2317  # test functions are called indirectly
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/netns/lib.sh
source "$HERE/lib.sh"
# shellcheck source=tests/netns/runner.sh
source "$HERE/runner.sh"

# Tests run in this shell (rn_test_inline): on failure they set REASON and return 1.
CK_RC=""    # exit status of the last `meshfwd check`
CK_OUT=""   # its stdout (JSON unless --text)

# ck NAME [ARGS...] — run `meshfwd check --json ARGS` in namespace NAME
ck() {
    local name=$1; shift
    CK_OUT="$MF_RUN_DIR/check.$name.out"
    mf_exec "$name" timeout 20 "$MESHFWD" check --json "$@" >"$CK_OUT" 2>"$CK_OUT.err"
    CK_RC=$?
    mf_log "# [$name] meshfwd check --json $* -> exit $CK_RC"
    _ck_valid || return 1
}

# ck_unpriv NAME TAG [ARGS...] — `meshfwd check --json ARGS` in namespace NAME as
# uid 65534 without capabilities (a copy of the binary that uid can reach,
# since the run directory is 0700); output in check.TAG.out
ck_unpriv() {
    local name=$1 tag=$2 dir="$MF_RUN_DIR/bin"; shift 2
    { mkdir -p "$dir" && cp "$MESHFWD" "$dir/meshfwd" && chmod 0711 "$MF_RUN_DIR" &&
        chmod 0755 "$dir" "$dir/meshfwd"; } || { REASON="copy binary"; return 1; }
    CK_OUT="$MF_RUN_DIR/check.$tag.out"
    mf_exec "$name" setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
        "$dir/meshfwd" check --json "$@" >"$CK_OUT" 2>"$CK_OUT.err"
    CK_RC=$?
    mf_log "# [$name] (uid 65534) meshfwd check --json $* -> exit $CK_RC"
    _ck_valid
}

_ck_valid() {
    "$MF_PY" "$MF_TOOLS/mfjson.py" check-report "$CK_OUT" 2>/dev/null ||
        { REASON="output is not the JSON report: $(head -c 200 "$CK_OUT") $(head -c 200 "$CK_OUT.err")"; return 1; }
}

# field CHECK KEY — status/message/fix of one check in the last report
field() { "$MF_PY" "$MF_TOOLS/mfjson.py" check-field "$CK_OUT" "$1" "$2"; }

# want CHECK STATUS [SUBSTRING] — the check has STATUS (and its message contains SUBSTRING)
want() {
    local st msg
    st=$(field "$1" status); msg=$(field "$1" message)
    [[ $st == "$2" ]] || { REASON="$1 is $st, want $2: $msg"; return 1; }
    [[ -z ${3:-} || $msg == *"$3"* ]] || { REASON="$1 message lacks '$3': $msg"; return 1; }
}

# want_rc N — exit status of the last check
want_rc() { [[ $CK_RC == "$1" ]] || { REASON="exit status $CK_RC, want $1 ($(failing))"; return 1; }; }

# failing — "name=status" of every check that is not ok
failing() { "$MF_PY" "$MF_TOOLS/mfjson.py" check-failing "$CK_OUT" 2>/dev/null; }

# only_not_ok CHECK... — every check not named here is ok
only_not_ok() {
    local extra
    extra=$("$MF_PY" "$MF_TOOLS/mfjson.py" check-not-ok "$CK_OUT" "$@")
    [[ -z $extra ]] || { REASON="unexpected: $extra"; return 1; }
}

# ck_v6 NAME — IPv6 on and forwarding, as on a dual-stack VM (lib.sh turns
# IPv6 off; the ipv6 check would warn, see t_ipv6_off)
ck_v6() { mf_ipv6_on "$1" && mf_exec "$1" sysctl -qw net.ipv6.conf.all.forwarding=1 >/dev/null; }

# ck_vm_add NAME UNDERLAY — a lib.sh VM namespace ready for dual-stack (ck_v6)
ck_vm_add() { mf_vm_add "$@" && ck_v6 "$1"; }

# on a failure, after the log tail: the last check report
_show_report() { [[ -n $CK_OUT && -s $CK_OUT ]] && sed 's/^/    # /' "$CK_OUT"; }

# ------------------------------------------------------------------ tests --

# A VM as the namespace suite builds it: underlay address, ip_forward=1.
t_good_vm() {
    ck_vm_add good 192.168.16.32 || { REASON="setup"; return 1; }
    ck good || return 1
    want_rc 0 || return 1
    only_not_ok || return 1
    want local_address ok "192.168.16.32 on eth0" || return 1
    # expected TUN MTUs, not read from meshfwd: 1476 = 1500 - 24 (outer IPv4 20 +
    # GRE 4); with --encap udp 1468 = 1500 - 32 (+ UDP 8)
    want mtu ok "TUN MTU 1476" || return 1
    want gre_modules ok "does not need" || return 1
    want ipv6 ok "this VM's IPv6 block fd6d:6573:6866:0:c0a8:1020::/96, tun0 gets fd6d:6573:6866:0:c0a8:1020:0:1/64 (TUN MTU 1476" || return 1
    # human report: same verdict, aligned lines, summary
    mf_exec good "$MESHFWD" check >"$MF_RUN_DIR/good.txt" 2>&1 || { REASON="text report exit $?"; return 1; }
    cat "$MF_RUN_DIR/good.txt"
    # 14 checks since ipv6 (issue #17; 13 since datapath_auto, #15; 12 since
    # the instance check, #19)
    grep -Eq '^summary: 14 ok, 0 warn, 0 fail: ' "$MF_RUN_DIR/good.txt" ||
        { REASON="summary: $(tail -n1 "$MF_RUN_DIR/good.txt")"; return 1; }
    grep -q '^ok    local_address   192.168.16.32 on eth0' "$MF_RUN_DIR/good.txt" || { REASON="text line layout"; return 1; }
}

# IPv6 disabled in the namespace (as lib.sh leaves it): meshfwd would run
# IPv4 only, a warning with the sysctl as fix, not a failure; IPv6 on but
# net.ipv6.conf.all.forwarding 0: a warning too; --overlay6 none says IPv4
# only without a warning; a bad --overlay6 is a usage error.
t_ipv6_off() {
    mf_vm_add v6off 192.168.16.44 || { REASON="setup"; return 1; }
    ck v6off || return 1
    want_rc 0 || return 1
    want ipv6 warn "IPv6 overlay off: IPv6 is disabled" || return 1
    [[ $(field ipv6 fix) == *"net.ipv6.conf.all.disable_ipv6=0"* ]] || { REASON="ipv6 fix: $(field ipv6 fix)"; return 1; }
    only_not_ok ipv6 || return 1
    # IPv6 on but not forwarded: containers would get no IPv6 across VMs
    ck_v6 v6off && mf_exec v6off sysctl -qw net.ipv6.conf.all.forwarding=0 >/dev/null || { REASON="sysctl"; return 1; }
    ck v6off || return 1
    want_rc 0 || return 1
    want ipv6 warn "net.ipv6.conf.all.forwarding = 0: the kernel will not forward IPv6" || return 1
    [[ $(field ipv6 fix) == *"sysctl -w net.ipv6.conf.all.forwarding=1"* ]] || { REASON="ipv6 fix: $(field ipv6 fix)"; return 1; }
    only_not_ok ipv6 || return 1
    ck v6off --overlay6 none || return 1
    want_rc 0 || return 1
    want ipv6 ok "--overlay6 none: meshfwd will forward IPv4 only" || return 1
    mf_exec v6off "$MESHFWD" check --overlay6 fe80::/64 >"$MF_RUN_DIR/v6bad.out" 2>&1
    CK_RC=$?
    want_rc 2 || return 1
    grep -q "error: --overlay6: .*fd00::/8" "$MF_RUN_DIR/v6bad.out" || { REASON="usage error: $(cat "$MF_RUN_DIR/v6bad.out")"; return 1; }
}

# No address inside the underlay (a bare namespace, forwarding on).
t_no_underlay_address() {
    mf_netns_add bare && ck_v6 bare || { REASON="setup"; return 1; }
    mf_exec bare sysctl -qw net.ipv4.ip_forward=1 >/dev/null || { REASON="sysctl"; return 1; }
    ck bare || return 1
    want_rc 1 || return 1
    want local_address fail "no address of this host is inside the underlay" || return 1
    [[ $(field local_address fix) == *"--local"* || $(field local_address fix) == *"ip addr add"* ]] ||
        { REASON="local_address fix: $(field local_address fix)"; return 1; }
    want layout warn || return 1
    want mtu warn || return 1
    only_not_ok local_address layout mtu || return 1
}

# Two addresses inside the underlay: ambiguous until --local picks one.
t_ambiguous_local() {
    ck_vm_add multi 192.168.16.34 || { REASON="setup"; return 1; }
    mf_exec multi ip addr add 192.168.17.34/16 dev eth0 || { REASON="ip addr"; return 1; }
    ck multi || return 1
    want_rc 1 || return 1
    want local_address fail "several addresses" || return 1
    ck multi --local 192.168.17.34 || return 1
    want_rc 0 || return 1
    want local_address ok "192.168.17.34 on eth0" || return 1
}

# Forwarding off: containers cannot reach the TUN. Documented as a failure.
t_ip_forward_off() {
    ck_vm_add nofwd 192.168.16.35 || { REASON="setup"; return 1; }
    mf_exec nofwd sysctl -qw net.ipv4.ip_forward=0 >/dev/null || { REASON="sysctl"; return 1; }
    ck nofwd || return 1
    want_rc 1 || return 1
    want ip_forward fail "net.ipv4.ip_forward = 0" || return 1
    [[ $(field ip_forward fix) == *"sysctl -w net.ipv4.ip_forward=1"* ]] || { REASON="fix: $(field ip_forward fix)"; return 1; }
    only_not_ok ip_forward || return 1
    mf_exec nofwd "$MESHFWD" check >"$MF_RUN_DIR/nofwd.txt" 2>&1
    cat "$MF_RUN_DIR/nofwd.txt"
    grep -q '^FAIL  ip_forward .*fix: sysctl -w net.ipv4.ip_forward=1' "$MF_RUN_DIR/nofwd.txt" || { REASON="text FAIL line"; return 1; }
    grep -q '^summary: 13 ok, 0 warn, 1 fail: NOT ready' "$MF_RUN_DIR/nofwd.txt" || { REASON="text summary"; return 1; }
}

# A route to part of the overlay through another interface.
t_route_overlaps_overlay() {
    ck_vm_add route 192.168.16.36 || { REASON="setup"; return 1; }
    mf_exec route ip route add 250.1.0.0/16 dev eth0 || { REASON="ip route"; return 1; }
    ck route || return 1
    want_rc 0 || return 1
    want overlay_routes warn "250.1.0.0/16 dev eth0" || return 1
    only_not_ok overlay_routes || return 1
    # the same route does not touch the classic overlay
    ck route --layout classic || return 1
    want overlay_routes ok || return 1
}

# The namespace's resolver inside 10.0.0.0/8 with the classic layout.
t_resolver_in_classic_overlay() {
    ck_vm_add dns 192.168.16.37 || { REASON="setup"; return 1; }
    printf 'nameserver 10.255.255.53\nnameserver 192.0.2.53\n' >"/etc/netns/$(mf_ns dns)/resolv.conf"
    ck dns --layout classic || return 1
    want_rc 0 || return 1
    want dns_resolver warn "10.255.255.53" || return 1
    [[ $(field dns_resolver message) != *192.0.2.53* ]] || { REASON="192.0.2.53 reported"; return 1; }
    ck dns || return 1
    want dns_resolver ok "10.255.255.53, 192.0.2.53" || return 1
}

# Strict reverse-path filtering on the underlay interface.
t_rp_filter_strict() {
    ck_vm_add strict 192.168.16.38 || { REASON="setup"; return 1; }
    mf_exec strict sysctl -qw net.ipv4.conf.eth0.rp_filter=1 >/dev/null || { REASON="sysctl"; return 1; }
    ck strict || return 1
    want_rc 0 || return 1
    want rp_filter warn "eth0 (underlay)" || return 1
    [[ $(field rp_filter fix) == *"net.ipv4.conf.eth0.rp_filter=2"* ]] || { REASON="fix: $(field rp_filter fix)"; return 1; }
    only_not_ok rp_filter || return 1
}

# Unprivileged: no capabilities, no raw socket, and /dev/net/tun only if the
# node is world-accessible (udev's 0666; 0600 on some hosts).
t_unprivileged() {
    ck_vm_add unpriv 192.168.16.39 || { REASON="setup"; return 1; }
    local mode
    ck_unpriv unpriv unpriv || return 1
    want_rc 1 || return 1
    want capabilities fail "missing CAP_NET_ADMIN and CAP_NET_RAW" || return 1
    want raw_socket fail || return 1
    mode=$(stat -c %a /dev/net/tun)
    if [[ $mode == *6 || $mode == *7 ]]; then
        want tun_device ok || return 1
    else
        want tun_device fail "uid 65534" || return 1
        [[ $(field tun_device fix) == *"chmod 0666 /dev/net/tun"* ]] || { REASON="tun fix: $(field tun_device fix)"; return 1; }
    fi
    only_not_ok capabilities raw_socket tun_device || return 1
}

# A VM with meshfwd running and a container attached: its own TUN route and
# the container's /32 route are not collisions; the TUN's MTU and rp_filter
# are read from the live device.
t_running_vm() {
    ck_vm_add run 192.168.16.40 || { REASON="setup"; return 1; }
    mf_container_add run 1 || { REASON="container"; return 1; }
    mf_start run || { REASON="meshfwd did not start"; return 1; }
    ck run || return 1
    want_rc 0 || return 1
    only_not_ok || return 1
    want overlay_routes ok "240.0.0.0/4 dev tun0 present" || return 1
    want mtu ok "existing tun0 has MTU 1476" || return 1
    want rp_filter ok "tun0 (TUN) = 0" || return 1
    want instance ok "already running: tun0 is taken in this network namespace by pid ${MF_MESHFWD_PID[run]} (" || return 1
    mf_stop run
    ck run || return 1
    want instance ok "no meshfwd forwards on tun0" || return 1
}

# GRE-in-UDP needs no CAP_NET_RAW: `check --encap udp` says so (warnings,
# exit 0), and meshfwd --encap udp started without it forwards to a peer; the
# check then sees its port held by meshfwd.
t_udp_without_cap_net_raw() {
    ck_vm_add udpa 192.168.16.41 || { REASON="setup"; return 1; }
    ck_vm_add udpb 192.168.16.42 || { REASON="setup"; return 1; }
    local noraw=(setpriv --bounding-set=-net_raw --inh-caps=-net_raw) wrapper="$MF_RUN_DIR/meshfwd-noraw" pid bnd
    CK_OUT="$MF_RUN_DIR/check.udpnoraw.out"
    mf_exec udpa "${noraw[@]}" "$MESHFWD" check --json --encap udp >"$CK_OUT" 2>"$CK_OUT.err"
    CK_RC=$?
    _ck_valid || return 1
    want_rc 0 || return 1
    want capabilities warn "CAP_NET_RAW is not" || return 1
    want raw_socket warn "wrong_encap" || return 1
    want udp_port ok "UDP 192.168.16.41:4754 is free" || return 1
    want mtu ok "TUN MTU 1468 (minus 32" || return 1
    only_not_ok capabilities raw_socket || return 1

    { printf '#!/bin/sh\nexec %s "%s" "$@"\n' "${noraw[*]}" "$MESHFWD" >"$wrapper" && chmod 0755 "$wrapper"; } ||
        { REASON="wrapper"; return 1; }
    MF_ENCAP=udp MESHFWD=$wrapper mf_start udpa || { REASON="meshfwd --encap udp without CAP_NET_RAW did not start"; return 1; }
    MF_ENCAP=udp mf_start udpb || { REASON="meshfwd udpb did not start"; return 1; }
    pid=${MF_MESHFWD_PID[udpa]}
    bnd=$(awk '/^CapBnd:/ {print $2}' "/proc/$pid/status")
    (((16#$bnd >> 13) & 1)) && { REASON="meshfwd in udpa still has CAP_NET_RAW in its bounding set ($bnd)"; return 1; }
    grep -q "wrong_encap will not be counted" "$(mf_meshfwd_log udpa)" || { REASON="no wrong_encap warning in the log"; return 1; }
    mf_exec udpa ping -n -c 3 -i 0.2 -W 2 "${MF_OVL[udpb]}" || { REASON="no ping udpa -> udpb over GRE-in-UDP without CAP_NET_RAW"; return 1; }
    ck udpa --encap udp || return 1
    want udp_port ok "held by meshfwd --encap udp (pid $pid) (already running)" || return 1
    # unprivileged, the holder cannot be seen: a warning, never ok or fail
    ck_unpriv udpa udpunpriv --encap udp || return 1
    want udp_port warn "uid 0 whose process this check cannot see" || return 1
    mf_stop udpa; mf_stop udpb
}

# Something else holds UDP 4754: the GRE-in-UDP check fails and names it;
# the GRE check does not look at the port. A GRE-mode meshfwd holding it is
# named as such.
t_udp_port_taken() {
    ck_vm_add udpc 192.168.16.43 || { REASON="setup"; return 1; }
    local pid i
    mf_bg holder udpc "$MF_PY" "$MF_TOOLS/probe.py" udp-hold 192.168.16.43 4754 60
    pid=$MF_LAST_PID
    for ((i = 0; i < 100; i++)); do grep -qs bound "$MF_RUN_DIR/holder.log" && break; sleep 0.1; done
    grep -qs bound "$MF_RUN_DIR/holder.log" || { REASON="the python3 holder did not bind 4754: $(cat "$MF_RUN_DIR/holder.log")"; return 1; }
    ck udpc --encap udp || return 1
    want_rc 1 || return 1
    want udp_port fail "in use by python3 (pid $pid)" || return 1
    [[ $(field udp_port fix) == *"--udp-port"* ]] || { REASON="udp_port fix: $(field udp_port fix)"; return 1; }
    only_not_ok udp_port || return 1
    ck udpc || return 1
    want_rc 0 || return 1
    [[ $(field udp_port status) == MISSING ]] || { REASON="GRE mode reports udp_port"; return 1; }
    kill "$pid"; mf_reap "$pid" 5 || true
    # a meshfwd in GRE mode binds the port too (to count wrong_encap)
    mf_start udpc || { REASON="meshfwd (GRE) did not start"; return 1; }
    pid=${MF_MESHFWD_PID[udpc]}
    ck udpc --encap udp || return 1
    want udp_port fail "meshfwd in GRE mode (pid $pid" || return 1
    [[ $(field udp_port fix) == *"stop the GRE-mode meshfwd"* ]] || { REASON="udp_port fix: $(field udp_port fix)"; return 1; }
    mf_stop udpc
}

# ---------------------------------------------------------------- systemd --
# scripts/systemd/meshfwd@.service, checked offline (no running systemd needed;
# package `systemd` provides systemd-analyze). `systemd-analyze verify` exits 0
# even for unknown keys or unparsable values, so any output at all is a failure.

UNIT="$MF_REPO/scripts/systemd/meshfwd@.service"

# _unit_copy DIR — the unit as instance meshfwd@tun0.service in DIR, ExecStart
# pointing at the binary under test (verify insists that it exists)
_unit_copy() {
    mkdir -p "$1" || return 1
    sed "s|^ExecStart=/usr/local/bin/meshfwd |ExecStart=$MESHFWD |" "$UNIT" >"$1/meshfwd@tun0.service"
}

_verify() { # FILE — systemd-analyze verify, output to stdout
    (cd "$(dirname "$1")" && systemd-analyze verify "$1" 2>&1; echo "rc=$?")
}

t_unit_verifies() {
    local d="$MF_RUN_DIR/unit" out
    # shellcheck disable=SC2016  # a literal $MESHFWD_ARGS
    grep -qx 'ExecStart=/usr/local/bin/meshfwd $MESHFWD_ARGS %i' "$UNIT" || { REASON="ExecStart line changed"; return 1; }
    _unit_copy "$d" || { REASON="copy"; return 1; }
    out=$(_verify "$d/meshfwd@tun0.service")
    echo "$out"
    [[ $out == "rc=0" ]] || { REASON="systemd-analyze verify: $(tr '\n' ' ' <<<"$out")"; return 1; }
}

# the verification above can fail: each broken copy must be reported
t_unit_verify_detects_errors() {
    local d="$MF_RUN_DIR/unit-bad" out n=0 edit
    for edit in 's/^ProtectHome=yes/ProtectHome=yes\nProtectHomeTypo=yes/' 's/^Restart=on-failure/Restart=sometimes/' \
        's/^RestrictAddressFamilies=.*/RestrictAddressFamilies=AF_INETT/' 's|^ExecStart=.*|ExecStart=/nonexistent/meshfwd %i|'; do
        n=$((n + 1))
        _unit_copy "$d$n" || { REASON="copy"; return 1; }
        sed -i "$edit" "$d$n/meshfwd@tun0.service"
        out=$(_verify "$d$n/meshfwd@tun0.service")
        echo "[$edit] $out"
        [[ $out != "rc=0" ]] || { REASON="not detected: $edit"; return 1; }
    done
}

t_unit_security_exposure() {
    local d="$MF_RUN_DIR/unit" out score
    _unit_copy "$d" || { REASON="copy"; return 1; }
    out=$(systemd-analyze security --offline=yes --no-pager "$d/meshfwd@tun0.service" 2>&1)
    echo "$out"
    score=$(sed -n 's/.*Overall exposure level for meshfwd@tun0.service: \([0-9.]*\).*/\1/p' <<<"$out")
    [[ -n $score ]] || { REASON="no exposure score in: $(tail -n 2 <<<"$out")"; return 1; }
    echo "exposure $score"
    # 1.9 with systemd 252; what is left is inherent (host network, CAP_NET_ADMIN/RAW, AF_INET)
    "$MF_PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) <= 2.0 else 1)' "$score" ||
        { REASON="exposure $score > 2.0"; return 1; }
}

_need_systemd_analyze() {
    command -v systemd-analyze >/dev/null && return 0
    echo "# installing package systemd (for systemd-analyze)"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends systemd >/dev/null 2>&1
    command -v systemd-analyze >/dev/null
}

main() {
    rn_need_root
    rn_need ip setpriv timeout "$MF_PY"
    rn_need_x "$MESHFWD"
    mf_init "${MF_BASE_DIR:-/tmp}" || rn_abort "mf_init"
    rn_init "$MF_RUN_DIR" "$@"
    RN_TAIL=5 RN_ON_FAIL=_show_report
    echo "# meshfwd check tests: $MESHFWD, namespaces $MF_PREFIX-*, logs $MF_RUN_DIR"
    rn_test_inline check/good_vm t_good_vm
    rn_test_inline check/ipv6_off t_ipv6_off
    rn_test_inline check/no_underlay_address t_no_underlay_address
    rn_test_inline check/ambiguous_local t_ambiguous_local
    rn_test_inline check/ip_forward_off t_ip_forward_off
    rn_test_inline check/route_overlaps_overlay t_route_overlaps_overlay
    rn_test_inline check/resolver_in_classic_overlay t_resolver_in_classic_overlay
    rn_test_inline check/rp_filter_strict t_rp_filter_strict
    rn_test_inline check/unprivileged t_unprivileged
    rn_test_inline check/running_vm t_running_vm
    rn_test_inline check/udp_without_cap_net_raw t_udp_without_cap_net_raw
    rn_test_inline check/udp_port_taken t_udp_port_taken
    local units=(systemd/unit_verifies systemd/unit_verify_detects_errors systemd/unit_security_exposure) u wanted=0
    for u in "${units[@]}"; do rn_selected "$u" && wanted=1; done
    if ((!wanted)); then
        :
    elif _need_systemd_analyze; then
        rn_test_inline systemd/unit_verifies t_unit_verifies
        rn_test_inline systemd/unit_verify_detects_errors t_unit_verify_detects_errors
        rn_test_inline systemd/unit_security_exposure t_unit_security_exposure
    else
        rn_fail systemd/unit_verifies "systemd-analyze missing and apt-get install systemd failed"
    fi
    rn_finish
}

main "$@"
