#!/usr/bin/env bash
# tests/netns/attach.sh — `meshfwd attach` / `meshfwd detach` on network
# namespaces (root).
#
#   tests/netns/attach.sh                  # everything
#   tests/netns/attach.sh refusals instant # only tests whose name contains one of these
#   MESHFWD=/path/to/meshfwd MF_INSTANT_TRIALS=20 MF_INSTANT_RATE=0 tests/netns/attach.sh
#
# One mesh (3 VMs x 1 container, meshfwd running in every VM) serves all tests;
# each test runs in a subshell, creates its own extra namespaces and deletes
# them when it ends. Prints "ok NAME" or "FAIL NAME (reason)" per test (plus the
# tail of its log), and last a line "N passed, N failed". Exit status 1 if
# anything failed.

# shellcheck disable=SC2317,SC2034,SC2119  # test functions are called indirectly; lib.sh reads the globals
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/netns/lib.sh
source "$HERE/lib.sh"
# shellcheck source=tests/netns/runner.sh
source "$HERE/runner.sh"
RN_SUITE=attach

: "${MF_INSTANT_TRIALS:=5}"
: "${MF_INSTANT_RATE:=300M}"   # background iperf3 rate (0 = unlimited)

# ------------------------------------------------------------------ helpers --

# attach VM NAME N [ARGS...] — run `meshfwd attach`; stdout in $OUT, exit code in $RC
attach() {
    local vm=$1 c=$2 n=$3; shift 3
    OUT=$(mf_exec "$vm" "$MESHFWD" attach "$(mf_ns "$c")" --container "$n" "$@" 2>"$MF_RUN_DIR/attach.err")
    RC=$?
    ERR=$(cat "$MF_RUN_DIR/attach.err")
    note "attach $c -> $vm #$n $*: rc $RC ${OUT:+out: $OUT }${ERR:+err: $ERR}"
}

detach() {
    local vm=$1 c=$2
    OUT=$(mf_exec "$vm" "$MESHFWD" detach "$(mf_ns "$c")" 2>"$MF_RUN_DIR/detach.err")
    RC=$?
    ERR=$(cat "$MF_RUN_DIR/detach.err")
    note "detach $c from $vm: rc $RC ${OUT:+out: $OUT }${ERR:+err: $ERR}"
}

json() { _mf_json_get "$1" <<<"$OUT"; }

# ------------------------------------------------------------------- tests --

t_wiring_and_roundtrip() {
    local before="$MF_RUN_DIR/wiring.before" vns cns tun_mtu a out
    vns=$(mf_ns vm1)
    mf_snap vm1 >"$before"
    mf_netns_add x7 || fail "netns"
    cns=$(mf_ns x7)
    attach vm1 x7 7 --json
    [[ $RC == 0 ]] || fail "attach exited $RC: $ERR"
    a=$(json address)
    [[ $a == "$(mf_container_addr "${MF_UL[vm1]}" 7)" ]] || fail "address $a is not container #7's"
    [[ $(json veth) == mfc7 && $(json ifname) == eth0 && $(json container) == 7 ]] || fail "json: $OUT"
    [[ $(json vm_overlay) == "${MF_OVL[vm1]}" && $(json vm) == "${MF_UL[vm1]}" ]] || fail "json: $OUT"
    tun_mtu=$(ip -n "$vns" -o link show tun0 | sed -n 's/.* mtu \([0-9]*\) .*/\1/p')
    [[ $(json mtu) == "$tun_mtu" ]] || fail "mtu $(json mtu), tun0 has $tun_mtu"
    # VM side
    out=$(ip -n "$vns" -d link show mfc7); note "$out"
    grep -q "alias meshfwd:$cns" <<<"$out" || fail "mfc7 lacks alias meshfwd:$cns"
    ip -n "$vns" -o link show mfc7 | grep -q "mtu $tun_mtu .*state UP" || fail "mfc7 not up with mtu $tun_mtu"
    [[ $(ip netns exec "$vns" sysctl -n net.ipv4.conf.mfc7.proxy_arp) == 1 ]] || fail "proxy_arp off on mfc7"
    out=$(ip -n "$vns" route show "$a/32"); note "$out"
    grep -q "^$a dev mfc7 .*scope link src ${MF_OVL[vm1]}" <<<"$out" || fail "VM route to $a: $out"
    # container side
    ip -n "$cns" -o addr show dev eth0 | grep -q "inet $a/32 " || fail "container lacks $a/32"
    ip -n "$cns" -o link show eth0 | grep -q "mtu $tun_mtu .*state UP" || fail "container eth0 not up with mtu $tun_mtu"
    ip -n "$cns" -o link show lo | grep -q "UP" || fail "container lo down"
    out=$(ip -n "$cns" route); note "$out"
    grep -q "^default via ${MF_OVL[vm1]} dev eth0 onlink" <<<"$out" || fail "container default route: $out"
    grep -q "^${MF_OVL[vm1]} dev eth0 scope link" <<<"$out" || fail "container route to the VM: $out"
    # reachable both ways, from a remote VM's container
    mf_exec vm2c1 ping -n -c 3 -i 0.2 -W 1 "$a" >&2 || fail "vm2c1 cannot ping $a"
    mf_exec x7 ping -n -c 3 -i 0.2 -W 1 "${MF_OVL[vm3c1]}" >&2 || fail "x7 cannot ping vm3c1"
    detach vm1 x7
    [[ $RC == 0 ]] || fail "detach exited $RC: $ERR"
    [[ $OUT == *"mfc7 removed"* ]] || fail "detach said: $OUT"
    ip -n "$cns" -o link show eth0 2>/dev/null && fail "container eth0 still exists after detach"
    same_as "$before" vm1
}

t_roundtrip_bare_vm() {
    local before="$MF_RUN_DIR/bare.before" vns ovl
    mf_bare_vm bare 192.168.77.5 || fail "bare VM bare"
    vns=$(mf_ns bare)
    ovl=$(mf_vm_addr 192.168.77.5)
    mf_snap bare >"$before"
    mf_netns_add b1 || fail "netns b1"
    mf_netns_add b2 || fail "netns b2"
    attach bare b1 1 --json
    [[ $RC == 0 && $(json lo_address_added) == True ]] || fail "attach b1: rc $RC, $OUT"
    # expected, not read from meshfwd: 1476 = eth0 1500 - 24 (outer IPv4 20 + GRE 4),
    # attach's MTU when there is no TUN to copy it from
    [[ $(json mtu) == 1476 ]] || fail "no tun0 here: mtu should be eth0 1500 - 24, got $(json mtu)"
    ip -n "$vns" -o addr show dev lo | grep -q "inet $ovl/32 .*lo:meshfwd" || fail "lo lacks $ovl/32 label lo:meshfwd"
    attach bare b2 2 --json
    [[ $RC == 0 && $(json lo_address_added) == False ]] || fail "attach b2: rc $RC, $OUT"
    mf_exec b1 ping -n -c 2 -i 0.2 -W 1 "$(json address)" >&2 || fail "b1 cannot ping b2 through the VM"
    detach bare b1
    [[ $RC == 0 ]] || fail "detach b1 exited $RC"
    ip -n "$vns" -o addr show dev lo | grep -q "inet $ovl/32" || fail "$ovl/32 left lo while b2 is attached"
    mf_exec b2 ping -n -c 1 -W 1 "$ovl" >&2 || fail "b2 lost the VM after b1 was detached"
    detach bare b2
    [[ $RC == 0 && $OUT == *"removed $ovl/32 from lo"* ]] || fail "detach b2: rc $RC, $OUT"
    same_as "$before" bare
}

t_refusals() {
    local before="$MF_RUN_DIR/refusals.before" vns
    vns=$(mf_ns vm1)
    mf_snap vm1 >"$before"
    mf_netns_add r1 || fail "netns"
    attach vm1 r1 1                         # vm1c1 is container #1
    [[ $RC == 1 && $ERR == *"container #1 is in use"* ]] || fail "in-use number: rc $RC, $ERR"
    attach vm1 r1 0
    [[ $RC == 2 && $ERR == *"out of range"* ]] || fail "container 0: rc $RC, $ERR"
    attach vm1 r1 4095
    [[ $RC == 2 && $ERR == *"1..=4094"* ]] || fail "container 4095: rc $RC, $ERR"
    attach vm1 r1 255 --layout classic
    [[ $RC == 2 && $ERR == *"1..=254"* ]] || fail "classic 255: rc $RC, $ERR"
    attach vm1 nosuchns 9
    [[ $RC == 1 && $ERR == *"does not exist"* ]] || fail "missing netns: rc $RC, $ERR"
    attach vm1 r1 9 --ifname lo
    [[ $RC == 1 && $ERR == *"already has an interface named lo"* ]] || fail "ifname exists: rc $RC, $ERR"
    attach vm1 vm1c1 9                      # already attached as #1
    [[ $RC == 1 && $ERR == *"already attached"* ]] || fail "netns attached twice: rc $RC, $ERR"
    attach vm1 vm1 9                        # the VM's own namespace
    [[ $RC == 1 && $ERR == *"own network namespace"* ]] || fail "own netns: rc $RC, $ERR"
    attach vm1 r1 9 --mtu 20
    [[ $RC == 2 ]] || fail "--mtu 20: rc $RC, $ERR"
    attach vm1 r1 9 --ifname 'a b'
    [[ $RC == 2 ]] || fail "--ifname 'a b': rc $RC, $ERR"
    # a number whose address is routed here by hand
    ip -n "$vns" route add "$(mf_container_addr "${MF_UL[vm1]}" 9)/32" dev lo || fail "route"
    attach vm1 r1 9
    ip -n "$vns" route del "$(mf_container_addr "${MF_UL[vm1]}" 9)/32" dev lo
    [[ $RC == 1 && $ERR == *"a route to"* ]] || fail "routed address: rc $RC, $ERR"
    [[ $(wc -l <<<"$ERR") == 1 ]] || fail "more than one error line: $ERR"
    same_as "$before" vm1
}

t_rollback() {
    local before="$MF_RUN_DIR/rollback.before" cns
    mf_bare_vm rbvm 192.168.77.6 || fail "bare VM rbvm"
    mf_snap rbvm >"$before"
    mf_netns_add rb || fail "netns"
    cns=$(mf_ns rb)
    # the container already routes the VM overlay address (through a veth pair
    # of its own), so attach fails late, at its container-side route
    ip -n "$cns" link add x0 type veth peer name x1 || fail "veth in the container"
    ip -n "$cns" link set x0 up || fail "x0 up"
    ip -n "$cns" route add "$(mf_vm_addr 192.168.77.6)/32" dev x0 || fail "route in the container"
    ip -n "$cns" link set lo down
    ip -n "$cns" route show >&2
    attach rbvm rb 3
    [[ $RC == 1 && $ERR == *"add route"* ]] || fail "expected a failed route add: rc $RC, $ERR"
    ip -n "$cns" -o link show eth0 2>/dev/null && fail "eth0 left in the container"
    ip -n "$cns" -o link show lo | grep -q ',UP' && fail "container lo left up"
    same_as "$before" rbvm
}

t_detach_twice() {
    local before="$MF_RUN_DIR/twice.before"
    mf_snap vm2 >"$before"
    mf_netns_add d2 || fail "netns"
    attach vm2 d2 5
    [[ $RC == 0 ]] || fail "attach: rc $RC, $ERR"
    detach vm2 d2
    [[ $RC == 0 ]] || fail "first detach: rc $RC, $ERR"
    detach vm2 d2
    [[ $RC == 0 && $ERR == *"not attached"* ]] || fail "second detach: rc $RC, $ERR"
    same_as "$before" vm2
}

t_detach_after_netns_deleted() {
    local before="$MF_RUN_DIR/gone.before" ns vns
    mf_bare_vm gvm 192.168.77.7 || fail "bare VM gvm"
    vns=$(mf_ns gvm)
    mf_snap gvm >"$before"
    mf_netns_add gone || fail "netns"
    attach gvm gone 6
    [[ $RC == 0 ]] || fail "attach: rc $RC, $ERR"
    ns=$(mf_ns gone)
    ip netns del "$ns" || fail "ip netns del"
    detach gvm gone
    [[ $RC == 0 ]] || fail "detach after the namespace was deleted: rc $RC, $ERR"
    # the kernel deletes the veth with the namespace, asynchronously
    for _ in $(seq 50); do ip -n "$vns" link show mfc6 >/dev/null 2>&1 || break; sleep 0.1; done
    same_as "$before" gvm
    detach gvm gone
    [[ $RC == 0 ]] || fail "second detach: rc $RC"
}

# A container attached while traffic flows is reachable from a remote VM on
# its very first echo request (ping -c 1 -W 1, no retry), and reaches a remote
# container on its first one. MF_INSTANT_TRIALS fresh containers, rotating VMs.
t_instant_routability() {
    local i vm far c addr t0 t1 ok=0 bad=() pings=()
    mf_bg bg-ping vm2c1 ping -n -q -i 0.01 -s 1000 "${MF_OVL[vm3c1]}"
    mf_bg bg-iperf-s vm1c1 iperf3 -s -1
    sleep 0.3
    mf_bg bg-iperf-c vm3c1 iperf3 -c "${MF_OVL[vm1c1]}" -t 120 -b "$MF_INSTANT_RATE" -C cubic
    local iperf=$MF_LAST_PID
    sleep 1
    local tx0; tx0=$(mf_stat vm1 rx_packets)
    for ((i = 1; i <= MF_INSTANT_TRIALS; i++)); do
        vm="vm$(( (i - 1) % 3 + 1 ))"; far="vm$(( i % 3 + 1 ))c1"
        c="new$i"
        mf_netns_add "$c" || fail "netns $c"
        t0=$(date +%s%N)
        attach "$vm" "$c" $((100 + i)) --json
        t1=$(date +%s%N)
        [[ $RC == 0 ]] || fail "attach $c: rc $RC, $ERR"
        addr=$(json address)
        if mf_exec "$far" ping -n -c 1 -W 1 "$addr" >"$MF_RUN_DIR/instant.$i" 2>&1; then
            pings+=("$far->$c:ok($(sed -n 's/.*time=\([0-9.]*\) ms.*/\1ms/p' "$MF_RUN_DIR/instant.$i"))")
        else
            bad+=("$far->$c")
            pings+=("$far->$c:LOST")
        fi
        if mf_exec "$c" ping -n -c 1 -W 1 "${MF_OVL[$far]}" >>"$MF_RUN_DIR/instant.$i" 2>&1; then
            pings+=("$c->$far:ok")
        else
            bad+=("$c->$far"); pings+=("$c->$far:LOST")
        fi
        note "trial $i: $c on $vm ($addr), attach $(( (t1 - t0) / 1000000 )) ms; ${pings[*]: -2}"
        [[ ${#bad[@]} == 0 ]] && ok=$((ok + 1))
    done
    note "background traffic: vm1 rx_packets grew by $(( $(mf_stat vm1 rx_packets) - tx0 ))"
    _mf_alive "$iperf" || note "warning: the background iperf3 ended early (log: $MF_RUN_DIR/bg-iperf-c.log)"
    echo "instant routability: ${pings[*]}" >&2
    [[ ${#bad[@]} == 0 ]] || fail "first ping lost: ${bad[*]} (of $MF_INSTANT_TRIALS trials)"
}

# addr6 VM_UNDERLAY N [--ipv6-only] — the IPv6 address of container #N, from `meshfwd addr`
addr6() { mf_addr_json "$@" | _mf_json_get overlay6; }

# Dual-stack by default: the /128 (nodad, no tentative address left),
# accept_ra=0 on both ends, the VM's IPv6 overlay address on the VM-side veth
# as gateway, ping6 both ways through the veth; detach removes both families.
t_dual_stack() {
    local before="$MF_RUN_DIR/dual.before" vns cns a a6 v6 out ul=192.168.77.10
    mf_bare_vm dsvm $ul || fail "bare VM dsvm"
    mf_ipv6_on dsvm || fail "IPv6 on in dsvm"
    vns=$(mf_ns dsvm)
    mf_snap dsvm >"$before"
    mf_netns_add x8 || fail "netns"
    mf_ipv6_on x8 || fail "IPv6 on in x8"
    cns=$(mf_ns x8)
    attach dsvm x8 8 --json
    [[ $RC == 0 ]] || fail "attach exited $RC: $ERR"
    a=$(json address); a6=$(json address6); v6=$(json vm_overlay6)
    [[ $a == "$(mf_container_addr $ul 8)" ]] || fail "address $a is not container #8's"
    [[ $a6 == "$(addr6 $ul 8)" ]] || fail "address6 $a6 is not container #8's"
    [[ $v6 == "$("$MESHFWD" addr --json $ul | _mf_json_get vm_overlay6)" ]] || fail "vm_overlay6 $v6"
    [[ $(json families) == dual ]] || fail "families: $OUT"
    # VM side: V6/128 nodad on the veth, the /128 route with src V6, accept_ra=0
    out=$(ip -n "$vns" -6 -o addr show dev mfc8); note "$out"
    grep -q "inet6 $v6/128 scope global nodad noprefixroute" <<<"$out" || fail "mfc8 lacks $v6/128 nodad: $out"
    [[ $(ip netns exec "$vns" sysctl -n net.ipv6.conf.mfc8.accept_ra) == 0 ]] || fail "accept_ra on mfc8"
    out=$(ip -n "$vns" -6 route show "$a6/128"); note "$out"
    grep -q "^$a6 dev mfc8 .*src $v6" <<<"$out" || fail "VM route to $a6: $out"
    # container side
    out=$(ip -n "$cns" -6 -o addr show dev eth0); note "$out"
    grep -q "inet6 $a6/128 scope global nodad" <<<"$out" || fail "container lacks $a6/128 nodad: $out"
    grep -q tentative <<<"$out" && fail "tentative address in the container: $out"
    [[ $(ip netns exec "$cns" sysctl -n net.ipv6.conf.eth0.accept_ra) == 0 ]] || fail "accept_ra on the container's eth0"
    out=$(ip -n "$cns" -6 route); note "$out"
    grep -q "^default via $v6 dev eth0" <<<"$out" || fail "container IPv6 default route: $out"
    grep -q "^$v6 dev eth0" <<<"$out" || fail "container route to $v6: $out"
    out=$(ip -n "$cns" -4 -o addr show dev eth0)
    grep -q "inet $a/32 " <<<"$out" || fail "container lacks $a/32: $out"
    mf_exec x8 ping -6 -n -c 2 -i 0.2 -W 1 "$v6" >&2 || fail "x8 cannot ping6 its VM $v6"
    mf_exec dsvm ping -6 -n -c 2 -i 0.2 -W 1 "$a6" >&2 || fail "vm1 cannot ping6 $a6"
    mf_exec dsvm ping -n -c 1 -W 1 "$a" >&2 || fail "vm1 cannot ping $a"
    detach dsvm x8
    [[ $RC == 0 ]] || fail "detach exited $RC: $ERR"
    [[ -z $(ip -n "$vns" -6 route show "$a6/128") ]] || fail "route to $a6 left behind"
    same_as "$before" dsvm
}

# --ipv6-only: no IPv4 at all, and a number above the IPv4 block (wide: 4094).
t_ipv6_only_beyond_ipv4() {
    local before="$MF_RUN_DIR/v6only.before" cns a6 v6 out
    mf_bare_vm v6vm 192.168.77.8 || fail "bare VM v6vm"
    mf_ipv6_on v6vm || fail "IPv6 on in v6vm"
    mf_snap v6vm >"$before"
    mf_netns_add o1 || fail "netns"
    mf_netns_add o2 || fail "netns"
    mf_ipv6_on o1 || fail "IPv6 on in o1"
    mf_ipv6_on o2 || fail "IPv6 on in o2"
    cns=$(mf_ns o1)
    attach v6vm o1 5000
    [[ $RC == 2 && $ERR == *"--ipv6-only allows"* ]] || fail "dual-stack #5000: rc $RC, $ERR"
    attach v6vm o1 5000 --ipv6-only --json
    [[ $RC == 0 ]] || fail "attach --ipv6-only 5000: rc $RC, $ERR"
    a6=$(json address6); v6=$(json vm_overlay6)
    [[ $a6 == "$(addr6 192.168.77.8 5000 --ipv6-only)" && $a6 == *:1389 ]] || fail "address6 $a6 (index 5001 = 0x1389)"
    [[ $(json address) == None && $(json families) == ipv6 && $(json veth) == mfc5000 ]] || fail "json: $OUT"
    out=$(ip -n "$cns" -o addr show dev eth0); note "$out"
    grep -q "inet " <<<"$out" && fail "IPv4 address on an IPv6-only container: $out"
    [[ -z $(ip -n "$cns" route) ]] || fail "IPv4 routes in an IPv6-only container"
    mf_exec o1 ping -6 -n -c 2 -i 0.2 -W 1 "$v6" >&2 || fail "o1 cannot ping6 $v6"
    mf_exec v6vm ping -6 -n -c 2 -i 0.2 -W 1 "$a6" >&2 || fail "v6vm cannot ping6 $a6"
    # container to container through the VM (IPv6 forwarding in the VM)
    ip netns exec "$(mf_ns v6vm)" sysctl -qw net.ipv6.conf.all.forwarding=1
    attach v6vm o2 4294967294 --ipv6-only --json
    [[ $RC == 0 && $(json address6) == *:c0a8:4d08:ffff:ffff ]] || fail "top number: rc $RC, $OUT"
    mf_exec o1 ping -6 -n -c 2 -i 0.2 -W 1 "$(json address6)" >&2 || fail "o1 cannot ping6 o2"
    attach v6vm o2 4294967295 --ipv6-only
    [[ $RC == 2 ]] || fail "number 2^32-1: rc $RC"
    detach v6vm o1; [[ $RC == 0 ]] || fail "detach o1: rc $RC"
    detach v6vm o2; [[ $RC == 0 ]] || fail "detach o2: rc $RC"
    ip netns exec "$(mf_ns v6vm)" sysctl -qw net.ipv6.conf.all.forwarding=0
    same_as "$before" v6vm
}

# IPv6 disabled in the container: a warning and IPv4 only when dual-stack was
# the default, an error when IPv6 was asked for; bad --overlay6 is usage.
t_ipv6_disabled_and_bad_prefix() {
    local before="$MF_RUN_DIR/nov6.before" cns
    mf_bare_vm nov6 192.168.77.9 || fail "bare VM nov6"
    mf_ipv6_on nov6 || fail "IPv6 on in nov6"
    mf_snap nov6 >"$before"
    mf_netns_add n1 || fail "netns"   # IPv6 off, as mf_netns_add leaves it
    cns=$(mf_ns n1)
    attach nov6 n1 2 --ipv6-only
    [[ $RC == 1 && $ERR == *"IPv6 is disabled in"* ]] || fail "--ipv6-only without IPv6: rc $RC, $ERR"
    attach nov6 n1 2 --overlay6 fd00:1::/64
    [[ $RC == 1 && $ERR == *"IPv6 is disabled in"* ]] || fail "--overlay6 without IPv6: rc $RC, $ERR"
    attach nov6 n1 2 --json
    [[ $RC == 0 && $ERR == *"warning: IPv6 is disabled in"*"gets IPv4 only"* ]] || fail "default: rc $RC, $ERR"
    [[ $(json families) == ipv4 && $(json address6) == None && $(json ipv6_unavailable) == *disable_ipv6* ]] || fail "json: $OUT"
    [[ -z $(ip -n "$cns" -6 -o addr show dev eth0) ]] || fail "IPv6 address in a namespace without IPv6"
    detach nov6 n1; [[ $RC == 0 ]] || fail "detach: rc $RC"
    for p in fd00::/48 fc00::/64 2001:db8::/64 nonsense; do
        attach nov6 n1 2 --overlay6 "$p"
        [[ $RC == 2 && $ERR == *"--overlay6"* ]] || fail "--overlay6 $p: rc $RC, $ERR"
    done
    attach nov6 n1 2 --ipv4-only --ipv6-only
    [[ $RC == 2 ]] || fail "--ipv4-only --ipv6-only: rc $RC"
    same_as "$before" nov6
}

# -------------------------------------------------------------------- main --

main() {
    rn_need_root
    rn_need ip ping iperf3 "$MF_PY"
    rn_need_x "$MESHFWD"
    mf_init || rn_abort "mf_init"
    rn_init "$MF_RUN_DIR" "$@"
    echo "# meshfwd attach suite: $MESHFWD, logs in $MF_RUN_DIR"
    if ! { mf_mesh --containers 1 && mf_start_all; } >"$MF_RUN_DIR/setup.log" 2>&1; then
        rn_fail setup "mesh or meshfwd start failed"; tail -n 15 "$MF_RUN_DIR/setup.log" | sed 's/^/    # /'
        rn_finish
    fi
    local t
    for t in t_wiring_and_roundtrip t_roundtrip_bare_vm t_refusals t_rollback t_detach_twice \
        t_detach_after_netns_deleted t_dual_stack t_ipv6_only_beyond_ipv4 \
        t_ipv6_disabled_and_bad_prefix t_instant_routability; do
        rn_test "${t#t_}" "$t"
    done
    for t in "${MF_VMS[@]}"; do mf_running "$t" || rn_fail meshfwd_alive "$t: meshfwd died"; done
    rn_finish
}

main "$@"
