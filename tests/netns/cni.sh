#!/usr/bin/env bash
# tests/netns/cni.sh — the CNI plugin `meshfwd-cni`, driven exactly as a
# container runtime drives it: CNI_* environment variables plus the network
# configuration on stdin, run inside a "VM" namespace (root).
#
#   tests/netns/cni.sh                     # everything
#   tests/netns/cni.sh parallel traffic    # only tests whose name contains one of these
#   MESHFWD_CNI=/path/to/meshfwd-cni tests/netns/cni.sh
#
# One mesh (2 VMs, meshfwd running in each, no containers) serves all tests;
# each test runs in a subshell, creates its own extra namespaces and deletes
# them when it ends. IPAM directories live in the run directory (config
# "dataDir"), never under /var/lib. Prints "ok NAME" or "FAIL NAME (reason)"
# per test (plus the tail of its log), and last a line "N passed, N failed".
# Exit status 1 if anything failed.

# shellcheck disable=SC2317,SC2034,SC2119  # test functions are called indirectly; lib.sh reads the globals
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/netns/lib.sh
source "$HERE/lib.sh"
# shellcheck source=tests/netns/runner.sh
source "$HERE/runner.sh"
RN_SUITE=cni
: "${MESHFWD_CNI:=$(dirname "$MESHFWD")/meshfwd-cni}"

: "${MF_CNI_PARALLEL:=8}"     # containers added at once in parallel_adds

ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# ------------------------------------------------------------------ helpers --
# (`cmd | grep PATTERN >/dev/null`, not `grep -q`: under pipefail, grep -q
# exiting at the first match can fail the pipeline with SIGPIPE in cmd.)

# conf VM [EXTRA_JSON_MEMBERS] — the network configuration of VM (its own IPAM
# directory: every VM is a separate node)
conf() {
    local extra=${2:+,$2}
    printf '{"cniVersion":"1.0.0","name":"meshtest","type":"meshfwd-cni","dataDir":"%s"%s}' \
        "$MF_RUN_DIR/ipam-$1" "$extra"
}
ipam_dir() { printf '%s/ipam-%s/meshtest\n' "$MF_RUN_DIR" "$1"; }
leases() { find "$(ipam_dir "$1")" -maxdepth 1 -name '[0-9]*' -printf '%f\n' 2>/dev/null | sort; }

# (CNI_WRAP: a command prefix for the plugin, e.g. strace; see crash_add)
CNI_WRAP=()

# cni VM COMMAND CONTAINER_ID NETNS IFNAME CONFIG — run meshfwd-cni in VM's
# namespace with a runtime's environment; stdout in $OUT, stderr in $ERR, exit
# code in $RC. NETNS is a name made by mf_netns_add (passed as /run/netns/...)
# or "" (no CNI_NETNS).
cni() {
    local vm=$1 cmd=$2 id=$3 ns=$4 ifname=$5 config=$6 errf nspath=""
    errf="$MF_RUN_DIR/cni.$BASHPID.err"
    [[ -n $ns ]] && nspath="/run/netns/$(mf_ns "$ns")"
    OUT=$(printf '%s' "$config" | mf_exec "$vm" "${CNI_WRAP[@]}" env -i PATH="$PATH" CNI_COMMAND="$cmd" \
        CNI_CONTAINERID="$id" ${nspath:+CNI_NETNS="$nspath"} CNI_IFNAME="$ifname" \
        CNI_PATH=/usr/lib/cni CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=$id" "$MESHFWD_CNI" 2>"$errf")
    RC=$?
    ERR=$(cat "$errf"); rm -f "$errf"
    note "cni $vm $cmd $id ${ns:-(no netns)} $ifname: rc $RC ${OUT:+out: $OUT }${ERR:+err: $ERR}"
}

# jget PATH — a value from the JSON in $OUT; PATH like ips.0.address
jget() { "$MF_PY" "$MF_TOOLS/mfjson.py" get "$1" <<<"$OUT" 2>/dev/null; }

# error_code — the code of the CNI error object in $OUT (empty if none)
error_code() { "$MF_PY" "$MF_TOOLS/mfjson.py" cni-error-code "$OUT" 2>/dev/null; }

# expect_error CODE TEXT — $OUT is a CNI error object with CODE whose msg contains TEXT
expect_error() {
    local c; c=$(error_code)
    [[ $RC != 0 ]] || fail "expected error $1, got exit 0: $OUT"
    ((RC < 128)) || fail "exit $RC (killed by a signal: panic?): $ERR"
    [[ $c == "$1" ]] || fail "expected error code $1, got '${c}': $OUT $ERR"
    [[ $(jget msg) == *"$2"* ]] || fail "error message lacks '$2': $OUT"
    [[ $ERR != *panicked* ]] || fail "panic: $ERR"
}

wait_gone() { # VM IFACE — the kernel deletes a veth with its namespace, asynchronously
    local i
    for i in $(seq 50); do ip -n "$(mf_ns "$1")" link show "$2" >/dev/null 2>&1 || return 0; sleep 0.1; done
    return 1
}

# ------------------------------------------------------------------- tests --

t_version_and_about() {
    local out rc
    cni vm1 VERSION x "" eth0 '{"cniVersion":"1.0.0"}'
    [[ $RC == 0 && $(jget cniVersion) == 1.0.0 ]] || fail "VERSION: rc $RC, $OUT"
    [[ $OUT == *'"supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]'* ]] || fail "supportedVersions: $OUT"
    cni vm1 VERSION x "" eth0 ''
    [[ $RC == 0 && $(jget cniVersion) == 1.1.0 ]] || fail "VERSION without stdin: rc $RC, $OUT"
    out=$("$MESHFWD_CNI" </dev/null 2>&1); rc=$?
    note "no CNI_COMMAND: rc $rc: $out"
    [[ $rc != 0 && $out == "CNI plugin meshfwd-cni v"*"supports CNI 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"* ]] ||
        fail "run by hand: rc $rc, $out"
}

t_add_check_del() {
    local before="$MF_RUN_DIR/acd.before" vns cns a prev mac tun_mtu
    vns=$(mf_ns vm1)
    mf_snap vm1 >"$before"
    # container #1 is taken by `meshfwd attach`: the IPAM must skip it
    mf_netns_add m1 || fail "netns m1"
    mf_exec vm1 "$MESHFWD" attach "$(mf_ns m1)" --container 1 >&2 || fail "meshfwd attach m1"
    mf_netns_add k1 || fail "netns k1"
    cns=$(mf_ns k1)
    local t0 add_ms del_ms
    t0=$(date +%s%N)
    cni vm1 ADD ctr-k1 k1 eth0 "$(conf vm1)"
    add_ms=$(ms_since "$t0")
    [[ $RC == 0 ]] || fail "ADD: rc $RC, $OUT $ERR"
    a=$(mf_container_addr "${MF_UL[vm1]}" 2)
    [[ $(jget cniVersion) == 1.0.0 ]] || fail "result cniVersion: $OUT"
    [[ $(jget ips.0.address) == "$a/32" ]] || fail "address $(jget ips.0.address), expected container #2 $a/32 (#1 is attached by hand)"
    [[ $(jget ips.0.gateway) == "${MF_OVL[vm1]}" ]] || fail "gateway: $OUT"
    [[ $(jget ips.0.interface) == 1 && $(jget interfaces.1.name) == eth0 ]] || fail "interface index: $OUT"
    [[ $(jget interfaces.1.sandbox) == "/run/netns/$cns" && $(jget interfaces.0.name) == mfc2 ]] || fail "interfaces: $OUT"
    [[ $(jget routes.0.dst) == 0.0.0.0/0 && $(jget routes.0.gw) == "${MF_OVL[vm1]}" ]] || fail "routes: $OUT"
    [[ $(jget dns) == "{}" ]] || fail "dns: $OUT"
    mac=$(ip -n "$cns" -o link show eth0 | sed -n 's/.*link\/ether \([0-9a-f:]*\) .*/\1/p')
    [[ $(jget interfaces.1.mac) == "$mac" ]] || fail "mac $(jget interfaces.1.mac), eth0 has $mac"
    # the same wiring as meshfwd attach
    tun_mtu=$(ip -n "$vns" -o link show tun0 | sed -n 's/.* mtu \([0-9]*\) .*/\1/p')
    ip -n "$cns" -o link show eth0 | grep "mtu $tun_mtu .*state UP" >/dev/null || fail "container eth0 not up with tun0's mtu $tun_mtu"
    ip -n "$vns" -d link show mfc2 | grep "alias meshfwd:$cns" >/dev/null || fail "mfc2 lacks alias meshfwd:$cns"
    ip -n "$vns" route show "$a/32" | grep "dev mfc2 .*src ${MF_OVL[vm1]}" >/dev/null || fail "VM route to $a"
    ip -n "$cns" route | grep "^default via ${MF_OVL[vm1]} dev eth0 onlink" >/dev/null || fail "container default route"
    [[ $(leases vm1) == "$a" ]] || fail "lease files: $(leases vm1 | tr '\n' ' ')"
    grep -q '"containerID":"ctr-k1","ifname":"eth0"' "$(ipam_dir vm1)/$a" || fail "lease content: $(cat "$(ipam_dir vm1)/$a")"
    mf_exec k1 ping -n -c 2 -i 0.2 -W 1 "${MF_OVL[vm2]}" >&2 || fail "k1 cannot ping vm2's overlay address"
    # repeated ADD of the same container: same result, nothing new
    prev=$OUT
    cni vm1 ADD ctr-k1 k1 eth0 "$(conf vm1)"
    [[ $RC == 0 && $(jget ips.0.address) == "$a/32" && $(leases vm1 | wc -l) == 1 ]] || fail "repeated ADD: rc $RC, $OUT"
    # CHECK with the ADD result as prevResult
    cni vm1 CHECK ctr-k1 k1 eth0 "$(conf vm1 "\"prevResult\":$prev")"
    [[ $RC == 0 && -z $OUT ]] || fail "CHECK: rc $RC, $OUT $ERR"
    # CHECK notices a prevResult that puts the address elsewhere
    cni vm1 CHECK ctr-k1 k1 eth0 "$(conf vm1 "\"prevResult\":${prev//\"sandbox\":\"/\"sandbox\":\"/x}")"
    expect_error 102 "in sandbox \"/x/run/netns/"
    # CHECK notices a broken container
    ip -n "$cns" route del default || fail "route del"
    cni vm1 CHECK ctr-k1 k1 eth0 "$(conf vm1 "\"prevResult\":$prev")"
    expect_error 102 "no default route via ${MF_OVL[vm1]}"
    t0=$(date +%s%N)
    cni vm1 DEL ctr-k1 k1 eth0 "$(conf vm1 "\"prevResult\":$prev")"
    del_ms=$(ms_since "$t0")
    [[ $RC == 0 && -z $OUT ]] || fail "DEL: rc $RC, $OUT $ERR"
    [[ -z $(leases vm1) ]] || fail "lease left after DEL: $(leases vm1)"
    ip -n "$cns" -o link show eth0 2>/dev/null && fail "container eth0 still exists after DEL"
    cni vm1 DEL ctr-k1 k1 eth0 "$(conf vm1)"
    [[ $RC == 0 ]] || fail "second DEL: rc $RC, $OUT"
    cni vm1 CHECK ctr-k1 k1 eth0 "$(conf vm1 "\"prevResult\":$prev")"
    expect_error 3 "no lease for container ctr-k1"
    mf_exec vm1 "$MESHFWD" detach "$(mf_ns m1)" >&2 || fail "meshfwd detach m1"
    same_as "$before" vm1
    detail "ADD $add_ms ms, DEL $del_ms ms, incl. ip netns exec"
}

t_traffic_between_vms() {
    local a1 a2
    mf_netns_add p1 || fail "netns p1"
    mf_netns_add p2 || fail "netns p2"
    cni vm1 ADD ctr-p1 p1 eth0 "$(conf vm1)"
    [[ $RC == 0 ]] || fail "ADD p1: rc $RC, $OUT $ERR"
    a1=$(jget ips.0.address); a1=${a1%/32}
    cni vm2 ADD ctr-p2 p2 eth0 "$(conf vm2)"
    [[ $RC == 0 ]] || fail "ADD p2: rc $RC, $OUT $ERR"
    a2=$(jget ips.0.address); a2=${a2%/32}
    note "p1 $a1 on vm1, p2 $a2 on vm2"
    [[ $(mf_ping p1 "$a2" 5) == 5/5 ]] || fail "p1 -> p2 ($a2) lost pings"
    [[ $(mf_ping p2 "$a1" 5) == 5/5 ]] || fail "p2 -> p1 ($a1) lost pings"
    cni vm1 DEL ctr-p1 p1 eth0 "$(conf vm1)"; [[ $RC == 0 ]] || fail "DEL p1: rc $RC"
    cni vm2 DEL ctr-p2 p2 eth0 "$(conf vm2)"; [[ $RC == 0 ]] || fail "DEL p2: rc $RC"
}

t_parallel_adds() {
    local i n=$MF_CNI_PARALLEL pids=() p addrs dup bad=0 t0
    for ((i = 1; i <= n; i++)); do mf_netns_add "par$i" || fail "netns par$i"; done
    t0=$(date +%s%N)
    for ((i = 1; i <= n; i++)); do
        ( cni vm2 ADD "ctr-par$i" "par$i" eth0 "$(conf vm2)"
          printf '%s %s\n' "$RC" "$(jget ips.0.address)" >"$MF_RUN_DIR/par.$i" ) &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    detail "$n ADDs at once done in $(ms_since "$t0") ms"
    for ((i = 1; i <= n; i++)); do
        read -r rc addr <"$MF_RUN_DIR/par.$i"
        note "par$i: rc $rc $addr"
        [[ $rc == 0 && -n $addr ]] || bad=$((bad + 1))
    done
    ((bad == 0)) || fail "$bad of $n parallel ADDs failed"
    addrs=$(cut -d' ' -f2 "$MF_RUN_DIR"/par.* | sort)
    dup=$(uniq -d <<<"$addrs")
    [[ -z $dup ]] || fail "duplicate addresses: $dup"
    [[ $(leases vm2 | wc -l) == "$n" ]] || fail "$(leases vm2 | wc -l) lease files for $n containers"
    [[ $(mf_ping par1 "$(cut -d' ' -f2 "$MF_RUN_DIR/par.$n" | cut -d/ -f1)" 2) == 2/2 ]] || fail "par1 cannot reach par$n"
    pids=()
    for ((i = 1; i <= n; i++)); do
        ( cni vm2 DEL "ctr-par$i" "par$i" eth0 "$(conf vm2)"; echo "$RC" >"$MF_RUN_DIR/pardel.$i" ) &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    [[ $(cat "$MF_RUN_DIR"/pardel.* | sort -u) == 0 ]] || fail "parallel DELs failed: $(cat "$MF_RUN_DIR"/pardel.* | tr '\n' ' ')"
    [[ -z $(leases vm2) ]] || fail "leases left: $(leases vm2 | tr '\n' ' ')"
    ip -n "$(mf_ns vm2)" -o link show | grep -E '^[0-9]+: mfc[0-9]+@' >/dev/null && fail "veths left on vm2"
    return 0
}

t_del_after_netns_gone() {
    local before="$MF_RUN_DIR/gone.before"
    mf_snap vm1 >"$before"
    mf_netns_add g1 || fail "netns g1"
    cni vm1 ADD ctr-g1 g1 eth0 "$(conf vm1)"
    [[ $RC == 0 ]] || fail "ADD: rc $RC, $OUT $ERR"
    ip netns del "$(mf_ns g1)" || fail "ip netns del"
    cni vm1 DEL ctr-g1 g1 eth0 "$(conf vm1)"
    [[ $RC == 0 ]] || fail "DEL with the namespace gone: rc $RC, $OUT $ERR"
    [[ -z $(leases vm1) ]] || fail "lease left: $(leases vm1)"
    wait_gone vm1 mfc1 || true
    # and without CNI_NETNS at all (a runtime may leave it empty on DEL)
    mf_netns_add g2 || fail "netns g2"
    cni vm1 ADD ctr-g2 g2 eth0 "$(conf vm1)"
    [[ $RC == 0 ]] || fail "ADD g2: rc $RC, $OUT $ERR"
    cni vm1 DEL ctr-g2 "" eth0 "$(conf vm1)"
    [[ $RC == 0 && -z $(leases vm1) ]] || fail "DEL without CNI_NETNS: rc $RC, leases $(leases vm1)"
    ip -n "$(mf_ns g2)" -o link show eth0 2>/dev/null && fail "g2 still wired after DEL without CNI_NETNS"
    wait_gone vm1 mfc1 || fail "mfc1 still on vm1"
    same_as "$before" vm1
}

# A custom layout with 2 host bits: host part 0 reserved, 1 the VM, so just
# two container numbers per VM. Bare VM (no meshfwd): ADD works without it.
t_block_exhaustion() {
    local c l=',"overlay":"10.0.0.0/14","underlay":"192.168.0.0/16","local":"192.168.77.9"' got=()
    mf_bare_vm tiny 192.168.77.9 || fail "bare VM tiny"
    for c in x1 x2 x3; do mf_netns_add "$c" || fail "netns $c"; done
    cni tiny ADD ctr-x1 x1 eth0 "$(conf tiny "${l#,}")"
    [[ $RC == 0 ]] || fail "ADD x1: rc $RC, $OUT $ERR"; got+=("$(jget ips.0.address)")
    cni tiny ADD ctr-x2 x2 eth0 "$(conf tiny "${l#,}")"
    [[ $RC == 0 ]] || fail "ADD x2: rc $RC, $OUT $ERR"; got+=("$(jget ips.0.address)")
    note "addresses ${got[*]}"
    # 192.168.77.9 -> block 10.1.52.36/30: .36 reserved, .37 the VM
    [[ "${got[*]}" == "10.1.52.38/32 10.1.52.39/32" ]] || fail "addresses ${got[*]}, expected host parts 2 and 3 of 10.1.52.36/30"
    [[ $(jget ips.0.gateway) == 10.1.52.37 ]] || fail "gateway $(jget ips.0.gateway)"
    cni tiny ADD ctr-x3 x3 eth0 "$(conf tiny "${l#,}")"
    expect_error 101 "no free container address left in this VM's block 10.1.52.36/30"
    ip -n "$(mf_ns x3)" -o link show eth0 2>/dev/null && fail "x3 got an eth0 anyway"
    [[ $(leases tiny | wc -l) == 2 ]] || fail "leases: $(leases tiny | tr '\n' ' ')"
    cni tiny DEL ctr-x1 x1 eth0 "$(conf tiny "${l#,}")"
    [[ $RC == 0 ]] || fail "DEL x1: rc $RC"
    cni tiny ADD ctr-x3 x3 eth0 "$(conf tiny "${l#,}")"
    [[ $RC == 0 && $(jget ips.0.address) == 10.1.52.38/32 ]] || fail "ADD x3 after DEL x1: rc $RC, $OUT"
    [[ $(mf_ping x3 10.1.52.39 2) == 2/2 ]] || fail "x3 cannot reach x2 through the VM"
}

t_malformed_input() {
    local e
    mf_netns_add bad || fail "netns"
    cni vm1 ADD c bad eth0 'this is not json'
    expect_error 6 "not valid JSON"
    cni vm1 ADD c bad eth0 "$(printf '\xff\xfe\x00garbage')"
    expect_error 6 "not valid JSON"
    cni vm1 ADD c bad eth0 '{"cniVersion":"1.0.0","name":"meshtest","ipam":{"type":"host-local"}}'
    expect_error 2 "remove the \"ipam\" section"
    cni vm1 ADD c bad eth0 '{"cniVersion":"9.9.9","name":"meshtest"}'
    expect_error 1 "use one of"
    cni vm1 ADD c bad eth0 "$(conf vm1 '"layout":"huge"')"
    expect_error 7 '"wide" or "classic"'
    cni vm1 ADD c bad eth0 "$(conf vm1 '"mtu":-1')"
    expect_error 7 '"mtu"'
    cni vm1 ADD c bad eth0 "$(conf vm1 '"local":"192.168.99.99","overlay":"10.0.0.0/30"')"
    expect_error 7 "give both"
    cni vm1 ADD "" bad eth0 "$(conf vm1)"
    expect_error 4 "CNI_CONTAINERID is not set"
    cni vm1 ADD c bad 'eth0/../x' "$(conf vm1)"
    expect_error 4 "CNI_IFNAME"
    cni vm1 ADD c nosuchns eth0 "$(conf vm1)"
    expect_error 100 "does not exist"
    cni vm1 FROB c bad eth0 "$(conf vm1)"
    expect_error 4 "not one of ADD"
    cni vm1 CHECK c bad eth0 "$(conf vm1)"
    expect_error 7 "prevResult"
    [[ -z $(leases vm1) ]] || fail "a refused ADD left a lease: $(leases vm1)"
    ip -n "$(mf_ns vm1)" -o link show | grep -E '^[0-9]+: mfc[0-9]+@' >/dev/null && fail "a refused ADD left a veth"
    return 0
}

# prevResult as a chained plugin or a buggy runtime may send it: each kind of
# damage is error 7 on ADD and CHECK (nothing created, nothing removed); DEL
# still cleans up (a refusal would leak the lease)
t_malformed_prev_result() {
    local p good
    mf_netns_add pr || fail "netns pr"
    local bad=('[1]' '"x"' '{"cniVersion":1}' '{"interfaces":{}}' '{"interfaces":[{}]}'
        '{"ips":[{"address":"241.2.0.9"}]}' '{"ips":[{"address":"241.2.0.9/32","gateway":"gw"}]}'
        '{"ips":[{"address":"241.2.0.9/32","interface":4}]}' '{"routes":[{"gw":"241.2.0.1"}]}'
        '{"dns":{"nameservers":[53]}}')
    for p in "${bad[@]}"; do
        cni vm1 ADD ctr-pr pr eth0 "$(conf vm1 "\"prevResult\":$p")"
        expect_error 7 '"prevResult"'
    done
    [[ -z $(leases vm1) ]] || fail "a refused ADD left a lease: $(leases vm1)"
    ip -n "$(mf_ns vm1)" -o link show | grep -E '^[0-9]+: mfc[0-9]+@' >/dev/null && fail "a refused ADD left a veth"
    cni vm1 ADD ctr-pr pr eth0 "$(conf vm1)"; [[ $RC == 0 ]] || fail "ADD: rc $RC $OUT"
    good=$OUT
    for p in "${bad[@]}"; do
        cni vm1 CHECK ctr-pr pr eth0 "$(conf vm1 "\"prevResult\":$p")"
        expect_error 7 '"prevResult"'
    done
    cni vm1 CHECK ctr-pr pr eth0 "$(conf vm1 "\"prevResult\":$good")"
    [[ $RC == 0 ]] || fail "CHECK with the real result after the refusals: rc $RC $OUT"
    cni vm1 DEL ctr-pr pr eth0 "$(conf vm1 '"prevResult":{"ips":7}')"
    [[ $RC == 0 ]] || fail "DEL with a malformed prevResult: rc $RC $OUT"
    [[ $ERR == *"DEL ignores it"* ]] || fail "DEL did not warn about the prevResult: $ERR"
    [[ -z $(leases vm1) ]] || fail "DEL left the lease: $(leases vm1)"
    wait_gone vm1 mfc1 || fail "DEL left mfc1"
    detail "${#bad[@]} kinds refused by ADD and CHECK; DEL released"
}

t_status_and_gc() {
    local c11='"cniVersion":"1.1.0"' cfg
    cfg=$(conf vm2 | sed 's/"cniVersion":"1.0.0"/'"$c11"'/')
    cni vm2 STATUS "" "" "" "$cfg"
    [[ $RC == 0 && -z $OUT ]] || fail "STATUS with meshfwd running: rc $RC, $OUT"
    mf_bare_vm nomesh 192.168.77.10 || fail "bare VM nomesh"
    cni nomesh STATUS "" "" "" "$cfg"
    expect_error 50 "TUN tun0 does not exist on this node"
    mf_netns_add ga || fail "netns ga"
    mf_netns_add gb || fail "netns gb"
    cni vm2 ADD ctr-ga ga eth0 "$cfg"; [[ $RC == 0 ]] || fail "ADD ga: rc $RC $OUT"
    cni vm2 ADD ctr-gb gb eth0 "$cfg"; [[ $RC == 0 ]] || fail "ADD gb: rc $RC $OUT"
    cni vm2 GC "" "" "" "${cfg%\}},\"cni.dev/valid-attachments\":[{\"containerID\":\"ctr-ga\",\"ifname\":\"eth0\"}]}"
    [[ $RC == 0 ]] || fail "GC: rc $RC, $OUT $ERR"
    [[ $(leases vm2 | wc -l) == 1 ]] || fail "GC left $(leases vm2 | wc -l) leases, expected 1"
    ip -n "$(mf_ns gb)" -o link show eth0 2>/dev/null && fail "GC left gb wired"
    ip -n "$(mf_ns ga)" -o link show eth0 >/dev/null 2>&1 || fail "GC unwired ga, a valid attachment"
    cni vm2 DEL ctr-ga ga eth0 "$cfg"; [[ $RC == 0 && -z $(leases vm2) ]] || fail "DEL ga"
}

# crash_add SYSCALLS WHEN ID NS — ADD on vm1, SIGKILLed by strace at the
# WHEN-th call of SYSCALLS (e.g. sendto,sendmsg 9): nothing after that call
# happens (whether the call itself reached the kernel does not matter here).
# RC 137 = killed, 0 = finished before that call.
crash_add() {
    CNI_WRAP=(strace -f -qq -o /dev/null -e trace="$1" -e inject="$1:signal=SIGKILL:when=$2")
    cni vm1 ADD "$3" "$4" eth0 "$(conf vm1)"
    CNI_WRAP=()
}

# leftovers NS — what is on vm1 / in NS / in the IPAM dir besides the baseline
# shellcheck disable=SC2207  # names without spaces, split on purpose
leftovers() {
    local vns cns l=()
    vns=$(mf_ns vm1); cns=$(mf_ns "$1")
    l+=($(ip -n "$vns" -o link show | sed -n 's/^[0-9]*: \(mfc[0-9]*\)[@:].*/\1/p'))
    ip -n "$vns" -o addr show dev lo | grep 'lo:meshfwd' >/dev/null && l+=(lo:meshfwd)
    l+=($(ip -n "$cns" -o link show | sed -n 's/^[0-9]*: \([^:@]*\)[@:].*/ct:\1/p' | grep -v '^ct:lo$'))
    l+=($(leases vm1 | sed 's/^/lease:/'))
    l+=($(find "$(ipam_dir vm1)" -maxdepth 1 -name '.*.tmp*' -printf 'tmp:%f\n' 2>/dev/null))
    echo "${l[*]}"
}

# clean_after WHAT BEFORE NS — after DEL: nothing of the container left anywhere
clean_after() {
    local left; left=$(leftovers "$3")
    [[ -z $left ]] || fail "$1: DEL left $left"
    same_as "$2" vm1
}

# CNI issue #19 defect 5: an ADD killed between two steps must leave state
# that DEL removes and that a retried ADD repairs. strace kills the plugin at
# every netlink send in turn (and at each rename of the IPAM's temp files);
# after each kill either DEL runs (then ADD + DEL again), or ADD is retried
# (it must succeed, CHECK must pass, the container must reach its VM) and then
# DEL; after every DEL nothing may be left: no mfc* link or lo:meshfwd
# address on the VM, no interface but lo in the container, no lease, no temp file.
t_crash_recovery() {
    local ns=${1:-cr}
    local before="$MF_RUN_DIR/crash.$ns.before" w mode left sends="" kinds=() prev
    command -v strace >/dev/null || fail "strace not installed (apt-get install strace)"
    mf_snap vm1 >"$before"
    # (the dual variant made its namespace already: outside its subshell, so
    # that the test's EXIT trap deletes it)
    [[ -e /run/netns/$(mf_ns "$ns") ]] || mf_netns_add "$ns" || fail "netns $ns"
    for spec in "sendto,sendmsg "{1..60} "rename,renameat,renameat2 "{1..3}; do
        read -r sc w <<<"$spec"
        [[ $sc == sendto* && -n $sends && $sends == *done* ]] && continue
        for mode in del add; do
            crash_add "$sc" "$w" ctr-crash "$ns"
            if [[ $RC == 0 ]]; then   # finished before the w-th call: the sweep is complete
                [[ $sc == sendto* ]] && sends+=" done@$w"
                cni vm1 DEL ctr-crash "$ns" eth0 "$(conf vm1)"
                [[ $RC == 0 ]] || fail "DEL after a complete ADD: rc $RC, $OUT $ERR"
                clean_after "uninterrupted ADD ($sc $w)" "$before" "$ns"
                break
            fi
            [[ $RC == 137 ]] || fail "ADD killed at $sc #$w: rc $RC (expected 137): $OUT $ERR"
            left=$(leftovers "$ns")
            note "killed at $sc #$w ($mode): left: ${left:-nothing}"
            [[ $mode == del && -n $left ]] && kinds+=("${sc%%,*}#$w:[$left]")
            if [[ $mode == add ]]; then
                cni vm1 ADD ctr-crash "$ns" eth0 "$(conf vm1)"
                [[ $RC == 0 ]] || fail "killed at $sc #$w, retried ADD: rc $RC, $OUT $ERR"
                prev=$OUT
                cni vm1 CHECK ctr-crash "$ns" eth0 "$(conf vm1 "\"prevResult\":$prev")"
                [[ $RC == 0 ]] || fail "killed at $sc #$w, CHECK after the retried ADD: rc $RC, $OUT $ERR"
                [[ $(mf_ping "$ns" "${MF_OVL[vm1]}" 1) == 1/1 ]] || fail "killed at $sc #$w: container cannot ping the VM after the retried ADD"
            fi
            cni vm1 DEL ctr-crash "$ns" eth0 "$(conf vm1)"
            [[ $RC == 0 ]] || fail "killed at $sc #$w, DEL: rc $RC, $OUT $ERR"
            clean_after "killed at $sc #$w, $mode" "$before" "$ns"
            if [[ $mode == del ]]; then
                cni vm1 ADD ctr-crash "$ns" eth0 "$(conf vm1)"
                [[ $RC == 0 ]] || fail "killed at $sc #$w, ADD after DEL: rc $RC, $OUT $ERR"
                cni vm1 DEL ctr-crash "$ns" eth0 "$(conf vm1)"
                [[ $RC == 0 ]] || fail "killed at $sc #$w, DEL after DEL+ADD: rc $RC"
                clean_after "killed at $sc #$w, DEL+ADD+DEL" "$before" "$ns"
            fi
        done
    done
    [[ $sends == *done* ]] || fail "ADD was still killed at send 60: sweep incomplete"
    note "kills that left state: ${kinds[*]}"
    w=${sends#*done@}
    detail "a whole ADD makes $((w - 1)) netlink sends; kills that left state: ${kinds[*]:-none}; all cleaned"
}

# The same sweep with IPv6 on in vm1 and the container: the dual-stack ADD
# (IPv6 address on both veth ends, sysctls, /128 routes) killed at every step.
t_crash_recovery_dual() {
    local vns rc; vns=$(mf_ns vm1)
    mf_netns_add cr6 || fail "netns cr6"
    mf_ipv6_on cr6 || fail "IPv6 on in cr6"
    mf_ipv6_on vm1 || fail "IPv6 on in vm1"
    (t_crash_recovery cr6); rc=$?
    ip netns exec "$vns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    return $rc
}

# Dual-stack by default: one lease, both addresses in the result (interface 1,
# gateways, ::/0), the wiring checked by CHECK for both families, DEL removes both.
t_dual_stack() {
    local before="$MF_RUN_DIR/ds.before" ul=192.168.77.20 vns cns a a6 v6 prev out c
    mf_bare_vm cds $ul || fail "bare VM cds"
    mf_ipv6_on cds || fail "IPv6 on in cds"
    vns=$(mf_ns cds)
    mf_snap cds >"$before"
    mf_netns_add d1 || fail "netns d1"
    mf_ipv6_on d1 || fail "IPv6 on in d1"
    cns=$(mf_ns d1)
    # the meshfwd-cni entry of docs/cni/meshfwd-dualstack.conflist, with this node's
    # address and the test's IPAM directory
    c=$("$MF_PY" -c 'import json, sys
l = json.load(open(sys.argv[1])); p = l["plugins"][0]
p.update(cniVersion=l["cniVersion"], name="meshtest", dataDir=sys.argv[2], local=sys.argv[3])
print(json.dumps(p))' "$HERE/../../docs/cni/meshfwd-dualstack.conflist" "$MF_RUN_DIR/ipam-cds" $ul) || fail "conflist"
    cni cds ADD ctr-d1 d1 eth0 "$c"
    [[ $RC == 0 ]] || fail "ADD: rc $RC, $OUT $ERR"
    a=$(mf_container_addr $ul 1)
    a6=$("$MESHFWD" addr --json --vm $ul --container 1 | _mf_json_get overlay6)
    v6=$("$MESHFWD" addr --json $ul | _mf_json_get vm_overlay6)
    [[ $(jget ips.0.address) == "$a/32" && $(jget ips.1.address) == "$a6/128" ]] || fail "ips: $OUT"
    [[ $(jget ips.1.gateway) == "$v6" && $(jget ips.1.interface) == 1 ]] || fail "IPv6 gateway/interface: $OUT"
    [[ $(jget routes.1.dst) == ::/0 && $(jget routes.1.gw) == "$v6" ]] || fail "IPv6 route: $OUT"
    [[ $(leases cds) == "$a" ]] || fail "one lease, named by the IPv4 address: $(leases cds | tr '\n' ' ')"
    out=$(ip -n "$cns" -6 -o addr show dev eth0); note "$out"
    grep "inet6 $a6/128 scope global nodad" <<<"$out" >/dev/null || fail "container lacks $a6/128 nodad"
    grep tentative <<<"$out" >/dev/null && fail "tentative address: $out"
    [[ $(ip netns exec "$cns" sysctl -n net.ipv6.conf.eth0.accept_ra) == 0 ]] || fail "accept_ra"
    ip -n "$vns" -6 route show "$a6/128" | grep "dev mfc1 .*src $v6" >/dev/null || fail "VM route to $a6"
    mf_exec d1 ping -6 -n -c 2 -i 0.2 -W 1 "$v6" >&2 || fail "d1 cannot ping6 $v6"
    mf_exec cds ping -6 -n -c 2 -i 0.2 -W 1 "$a6" >&2 || fail "cds cannot ping6 $a6"
    prev=$OUT
    cni cds ADD ctr-d1 d1 eth0 "$c"
    [[ $RC == 0 && $OUT == "$prev" ]] || fail "repeated ADD: rc $RC, $OUT"
    cni cds CHECK ctr-d1 d1 eth0 "${c%\}},\"prevResult\":$prev}"
    [[ $RC == 0 && -z $OUT ]] || fail "CHECK: rc $RC, $OUT $ERR"
    ip -n "$cns" -6 route del default || fail "route del"
    cni cds CHECK ctr-d1 d1 eth0 "$(conf cds "\"local\":\"$ul\",\"prevResult\":$prev")"
    expect_error 102 "no IPv6 default route via $v6"
    cni cds DEL ctr-d1 d1 eth0 "$c"
    [[ $RC == 0 && -z $(leases cds) ]] || fail "DEL: rc $RC, $OUT"
    [[ -z $(ip -n "$vns" -6 route show "$a6/128") ]] || fail "IPv6 route left after DEL"
    same_as "$before" cds
}

# ipv6Only: the lease is the IPv6 address, and numbers go beyond the IPv4 block.
t_ipv6_only() {
    local before="$MF_RUN_DIR/v6o.before" ul=192.168.77.21 cns a6 prev c dir
    mf_bare_vm cv6 $ul || fail "bare VM cv6"
    mf_ipv6_on cv6 || fail "IPv6 on in cv6"
    mf_snap cv6 >"$before"
    mf_netns_add e1 || fail "netns e1"
    mf_ipv6_on e1 || fail "IPv6 on in e1"
    cns=$(mf_ns e1)
    c=$(conf cv6 "\"local\":\"$ul\",\"ipv6Only\":true")
    # round robin continues after the last number handed out: start past 4094
    dir=$(ipam_dir cv6); mkdir -p "$dir"
    "$MESHFWD" addr --json --vm $ul --container 4999 --ipv6-only | _mf_json_get overlay6 >"$dir/last_reserved"
    cni cv6 ADD ctr-e1 e1 eth0 "$c"
    [[ $RC == 0 ]] || fail "ADD: rc $RC, $OUT $ERR"
    a6=$("$MESHFWD" addr --json --vm $ul --container 5000 --ipv6-only | _mf_json_get overlay6)
    [[ $(jget ips.0.address) == "$a6/128" && -z $(jget ips.1.address) ]] || fail "ips: $OUT"
    [[ $(jget routes.0.dst) == ::/0 && $(jget interfaces.0.name) == mfc5000 ]] || fail "result: $OUT"
    [[ -f $dir/$a6 ]] || fail "lease file $a6 missing: $(ls "$dir")"
    [[ -z $(ip -n "$cns" -4 -o addr show dev eth0) ]] || fail "IPv4 address on an IPv6-only container"
    mf_exec e1 ping -6 -n -c 2 -i 0.2 -W 1 "$(jget ips.0.gateway)" >&2 || fail "e1 cannot ping6 its VM"
    prev=$OUT
    cni cv6 CHECK ctr-e1 e1 eth0 "$(conf cv6 "\"local\":\"$ul\",\"ipv6Only\":true,\"prevResult\":$prev")"
    [[ $RC == 0 ]] || fail "CHECK: rc $RC, $OUT $ERR"
    cni cv6 DEL ctr-e1 e1 eth0 "$c"
    [[ $RC == 0 && ! -f $dir/$a6 ]] || fail "DEL: rc $RC, $OUT"
    same_as "$before" cv6
}

# IPv6 disabled in the container: IPv4 with a warning by default, error 100
# when "overlay6" asks for IPv6; malformed IPv6 keys are error 7.
t_ipv6_disabled_and_malformed() {
    local ul=192.168.77.22 c
    mf_bare_vm cn6 $ul || fail "bare VM cn6"
    mf_ipv6_on cn6 || fail "IPv6 on in cn6"
    mf_netns_add f1 || fail "netns f1"
    cni cn6 ADD ctr-f1 f1 eth0 "$(conf cn6 "\"local\":\"$ul\",\"overlay6\":\"fd00:1::/64\"")"
    expect_error 100 "IPv6 is disabled in"
    [[ -z $(leases cn6) ]] || fail "lease left by a failed ADD"
    cni cn6 ADD ctr-f1 f1 eth0 "$(conf cn6 "\"local\":\"$ul\"")"
    [[ $RC == 0 && $ERR == *"gets IPv4 only"* && -z $(jget ips.1.address) ]] || fail "default: rc $RC, $OUT $ERR"
    cni cn6 CHECK ctr-f1 f1 eth0 "$(conf cn6 "\"local\":\"$ul\",\"prevResult\":$OUT")"
    [[ $RC == 0 ]] || fail "CHECK of the IPv4 fallback: rc $RC, $OUT $ERR"
    cni cn6 DEL ctr-f1 f1 eth0 "$(conf cn6 "\"local\":\"$ul\"")"
    [[ $RC == 0 ]] || fail "DEL: rc $RC"
    for c in '"overlay6":"fd00::/48"|must be a /64' '"overlay6":"fc00::/64"|fd00::/8' \
        '"overlay6":"2001:db8::/64"|fd00::/8' '"overlay6":"bogus"|"overlay6"' \
        '"ipv6Only":"yes"|must be true or false' '"ipv4Only":true,"ipv6Only":true|exclude each other'; do
        cni cn6 ADD ctr-f1 f1 eth0 "$(conf cn6 "\"local\":\"$ul\",${c%%|*}")"
        expect_error 7 "${c#*|}"
    done
}

# -------------------------------------------------------------------- main --

# a test's leftovers must not leak into the next one
_forget_ipam() { rm -rf "$MF_RUN_DIR"/ipam-*; }

main() {
    rn_need_root
    rn_need ip ping "$MF_PY"
    rn_need_x "$MESHFWD" "$MESHFWD_CNI"
    mf_init || rn_abort "mf_init"
    rn_init "$MF_RUN_DIR" "$@"
    RN_OK_TIME=1 RN_AFTER_TEST=_forget_ipam
    echo "# meshfwd-cni suite: $MESHFWD_CNI, logs in $MF_RUN_DIR"
    if ! { mf_mesh --containers 0 192.168.16.32 192.168.16.33 && mf_start_all; } >"$MF_RUN_DIR/setup.log" 2>&1; then
        rn_fail setup "mesh or meshfwd start failed"; tail -n 15 "$MF_RUN_DIR/setup.log" | sed 's/^/    # /'
        rn_finish
    fi
    local t
    for t in t_version_and_about t_add_check_del t_traffic_between_vms t_parallel_adds \
        t_del_after_netns_gone t_crash_recovery t_crash_recovery_dual t_block_exhaustion t_malformed_input t_malformed_prev_result t_status_and_gc \
        t_dual_stack t_ipv6_only t_ipv6_disabled_and_malformed; do
        rn_test "${t#t_}" "$t"
    done
    for t in "${MF_VMS[@]}"; do mf_running "$t" || rn_fail meshfwd_alive "$t: meshfwd died"; done
    rn_finish
}

main "$@"
