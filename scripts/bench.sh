#!/usr/bin/env bash
# scripts/bench.sh — meshfwd next to the raw underlay, kernel VXLAN, fastd and tinc,
# measured in the same run on two network-namespace "VMs" joined by a veth (MTU 1500).
#
#   sudo scripts/bench.sh                       # 3 repetitions of everything (~20 min on 2 cores)
#   sudo scripts/bench.sh --quick               # 1 repetition, 5 s TCP tests (~3 min)
#   sudo scripts/bench.sh --reps 5 --paths raw,vxlan,meshfwd --duration 10
#
# Options:
#   --reps N          repetitions (default 3)
#   --duration S      TCP test length in seconds, after the omitted start (default 20)
#   --omit S          seconds of TCP slow start left out (default 2)
#   --paths LIST      comma list of raw,raw-nooff,vxlan,fastd,tinc,meshfwd,meshfwd-nopin,
#                     meshfwd-nooff,meshfwd-udp,meshfwd-udp-nopin (the default), and on request
#                     meshfwd-t1,meshfwd-t2,meshfwd-t4,meshfwd-t8 (GRE, --no-pin --threads N)
#                     and meshfwd-base,meshfwd-udp-base,meshfwd-base-nopin,
#                     meshfwd-base-t1,-t2,-t4,-t8 (need --baseline)
#   --sweep           add the GRE --threads sweep (meshfwd-t1,-t2,-t4,-t8) to the paths,
#                     and with --baseline the same sweep of the baseline (meshfwd-base-tN)
#   --tests LIST      comma list of ping,tcp1,tcp1v6,tcp4,udp,udp64 (default all); tcp1v6 =
#                     TCP 1 stream over the IPv6 overlay (meshfwd paths only, #17)
#   --quick           --reps 1 --duration 5 --omit 1, shorter UDP steps and ping
#   --out DIR         results directory (default bench-results/<timestamp>)
#   --no-build        use target/release/meshfwd as it is (default: cargo build --release)
#   --no-charts       skip the PNG charts
#   --meshfwd-args A  extra meshfwd options for both meshfwd paths, e.g. "--no-pin"
#   --baseline BIN    also measure BIN (e.g. the previous commit's meshfwd, built
#                     aside) as meshfwd-base / meshfwd-udp-base, next to meshfwd /
#                     meshfwd-udp in every repetition: a before/after in one run
#                     (the table shows meshfwd / meshfwd-base ratios)
#
# Paths: raw = the veth itself; raw-nooff = a second veth between the same two
# namespaces with TSO/GSO/GRO off, so the kernel handles every 1500-byte packet
# on its own (the per-packet ceiling that raw-socket GRE mode works against);
# vxlan = kernel VXLAN (MTU 1450); fastd = fastd
# `method "null"` over TUN (MTU 1450); tinc = tinc 1.0 Cipher/Digest none, router
# mode over TUN (MTU 1450, measured only after PMTU discovery moved it to UDP);
# meshfwd = default settings (MTU 1476 = 1500 - 24): one worker per CPU, pinned,
# the production default; meshfwd-nopin = the same with --no-pin (both namespace
# "VMs" share this machine's CPUs, so their pinned workers collide: the
# unpinned figure shows what the code does without that collision);
# meshfwd-nooff = --no-offload; meshfwd-udp = --encap udp (GRE-in-UDP with UDP
# GSO/GRO, MTU 1468 = 1500 - 32); meshfwd-udp-nopin = the same with --no-pin;
# meshfwd-tN = GRE with --no-pin --threads N (receive cost by worker count).
#
# Within each repetition every test runs on every path in turn (A/B/C/A/B/C; the
# order of paths and of tests is reversed on every other repetition), so slow drift of this shared
# machine hits every path alike.  Ratios meshfwd/X are computed per repetition
# and then medianed.
#
# Everything lives in two network namespaces with a per-run prefix (mfbench<random>-vm1/-vm2);
# nothing is configured in the root namespace and nothing is sent outside the veth.
# The EXIT trap (also on Ctrl-C and failure) stops only the processes this run
# started, deletes the namespaces and their /etc/netns entries.
#
# Output: a table on stdout, <out>/results.json (every raw sample and the summary),
# <out>/table.md, PNG charts <out>/*.png, raw tool output under <out>/raw/ and
# daemon logs under <out>/logs/.

set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
cd "$ROOT" || exit 1
REPORT="$HERE/bench_report.py"

ARGS_STR="$*"
# shellcheck disable=SC2034  # read through a nameref in pick()
ALL_PATHS=(raw raw-nooff vxlan fastd tinc meshfwd meshfwd-nopin meshfwd-nooff meshfwd-udp meshfwd-udp-nopin
    meshfwd-t1 meshfwd-t2 meshfwd-t4 meshfwd-t8 meshfwd-base meshfwd-udp-base meshfwd-base-nopin
    meshfwd-base-t1 meshfwd-base-t2 meshfwd-base-t4 meshfwd-base-t8)
SWEEP_PATHS=(meshfwd-t1 meshfwd-t2 meshfwd-t4 meshfwd-t8)
BASE_SWEEP_PATHS=(meshfwd-base-t1 meshfwd-base-t2 meshfwd-base-t4 meshfwd-base-t8)
SWEEP=0
# shellcheck disable=SC2034
ALL_TESTS=(ping tcp1 tcp1v6 tcp4 udp udp64)
REPS=3
DURATION=20
OMIT=2
UDP_STEP=3           # seconds per UDP 1400 B rate step
UDP_MAX_STEPS=5      # rate steps after the unlimited probe
UDP_LOSS_MAX=1       # percent
UDP64_SECS=5
PING_COUNT=1000
PING_INTERVAL=0.002
PATHS_ARG=""
TESTS_ARG=""
OUT=""
BUILD=1
CHARTS=1
QUICK=0
REPS_SET=0 DURATION_SET=0 OMIT_SET=0
BUILD_FAILED=0
MESHFWD_EXTRA=()
BASELINE=""
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)

usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; }
need_arg() { [[ $# -ge 2 && -n $2 ]] || { echo "$1 needs a value" >&2; exit 2; }; }
while (($#)); do
    case $1 in
        --reps) need_arg "$@"; REPS=$2; REPS_SET=1; shift 2 ;;
        --duration) need_arg "$@"; DURATION=$2; DURATION_SET=1; shift 2 ;;
        --omit) need_arg "$@"; OMIT=$2; OMIT_SET=1; shift 2 ;;
        --paths) need_arg "$@"; PATHS_ARG=$2; shift 2 ;;
        --tests) need_arg "$@"; TESTS_ARG=$2; shift 2 ;;
        --out) need_arg "$@"; OUT=$2; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --no-build) BUILD=0; shift ;;
        --no-charts) CHARTS=0; shift ;;
        --meshfwd-args) [[ $# -ge 2 ]] || { echo "--meshfwd-args needs a value" >&2; exit 2; }
            read -ra MESHFWD_EXTRA <<<"$2"; shift 2 ;;
        --baseline) need_arg "$@"; BASELINE=$2; shift 2 ;;
        --sweep) SWEEP=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if ((QUICK)); then
    # --reps / --duration / --omit given explicitly win over --quick
    ((REPS_SET)) || REPS=1
    ((DURATION_SET)) || DURATION=5
    ((OMIT_SET)) || OMIT=1
    UDP_STEP=2; UDP_MAX_STEPS=3; UDP64_SECS=3; PING_COUNT=300
fi
for v in REPS DURATION OMIT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "--${v,,} must be a whole number" >&2; exit 2; }
done
((REPS >= 1 && DURATION >= 1)) || { echo "--reps and --duration must be at least 1" >&2; exit 2; }

pick() { # ALLOWED_ARRAY_NAME CSV -> words, validated, in the given order
    local -n allowed=$1
    local csv=$2 w out=()
    [[ -n $csv ]] || { printf '%s\n' "${allowed[@]}"; return 0; }
    IFS=, read -ra ws <<<"$csv"
    for w in "${ws[@]}"; do
        [[ " ${allowed[*]} " == *" $w "* ]] || { echo "unknown name '$w' (choose from: ${allowed[*]})" >&2; return 1; }
        out+=("$w")
    done
    printf '%s\n' "${out[@]}"
}
if [[ -n $BASELINE ]]; then
    [[ -x $BASELINE ]] || { echo "--baseline $BASELINE: not an executable" >&2; exit 2; }
    BASELINE=$(realpath "$BASELINE")
fi
if [[ -n $PATHS_ARG ]]; then
    mapfile -t PATHS < <(pick ALL_PATHS "$PATHS_ARG") || exit 2
else
    # the default: everything but the sweep, and the -base paths only with --baseline
    mapfile -t PATHS < <(printf '%s\n' "${ALL_PATHS[@]}" | grep -v -e '^meshfwd-t[0-9]' -e '-base-t[0-9]' |
        if [[ -n $BASELINE ]]; then cat; else grep -v -e '-base'; fi)
fi
if ((SWEEP)); then
    sweep=("${SWEEP_PATHS[@]}")
    [[ -n $BASELINE ]] && sweep+=("${BASE_SWEEP_PATHS[@]}")
    for p in "${sweep[@]}"; do [[ " ${PATHS[*]} " == *" $p "* ]] || PATHS+=("$p"); done
fi
if [[ -z $BASELINE ]] && [[ " ${PATHS[*]} " == *-base* ]]; then
    echo "--paths meshfwd-base / meshfwd-udp-base need --baseline BIN" >&2; exit 2
fi
mapfile -t TESTS < <(pick ALL_TESTS "$TESTS_ARG") || exit 2
((${#PATHS[@]} && ${#TESTS[@]})) || exit 2

if [[ $EUID -ne 0 ]]; then
    echo "bench.sh creates network namespaces, TUN devices and tunnels: run it as root." >&2
    exit 1
fi

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
has() { [[ " ${PATHS[*]} " == *" $1 "* ]]; }
has_meshfwd() { [[ " ${PATHS[*]} " == *" meshfwd"* ]]; }
has_test() { [[ " ${TESTS[*]} " == *" $1 "* ]]; }

# ------------------------------------------------------------------ tools --
export DEBIAN_FRONTEND=noninteractive
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v ping >/dev/null || need+=(iputils-ping)
has raw-nooff && ! command -v ethtool >/dev/null && need+=(ethtool)
has fastd && ! command -v fastd >/dev/null && need+=(fastd)
has tinc && ! command -v tincd >/dev/null && need+=(tinc)
PY=/usr/bin/python3
if ! "$PY" -c 'import matplotlib' 2>/dev/null; then need+=(python3-matplotlib); fi
if ((${#need[@]})); then
    log "installing Debian packages: ${need[*]}"
    apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${need[@]}" >/tmp/bench-apt.$$.log 2>&1 ||
        { apt-get -o DPkg::Lock::Timeout=300 update -q >>/tmp/bench-apt.$$.log 2>&1 &&
            apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${need[@]}" >>/tmp/bench-apt.$$.log 2>&1; } ||
        { tail -n 20 /tmp/bench-apt.$$.log; echo "apt-get install failed" >&2; exit 1; }
    rm -f /tmp/bench-apt.$$.log
fi
if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
    log "python3-matplotlib not importable by $PY: charts disabled"; CHARTS=0
fi

if has_meshfwd; then
    if ((BUILD)); then
        [[ -d $HOME/.cargo/bin ]] && PATH="$HOME/.cargo/bin:$PATH"
        command -v cargo >/dev/null || { echo "cargo not found (or use --no-build)" >&2; exit 1; }
        log "cargo build --release"
        if ! cargo build --release --quiet; then
            [[ -x $ROOT/target/release/meshfwd ]] || { echo "cargo build failed" >&2; exit 1; }
            log "WARNING: cargo build failed; measuring the existing target/release/meshfwd"
            BUILD_FAILED=1
        fi
    fi
    [[ -x $ROOT/target/release/meshfwd ]] || { echo "no target/release/meshfwd (cargo build --release)" >&2; exit 1; }
fi

# ------------------------------------------------------------- estimate --
# seconds per test incl. start-up, as measured on the 2-core machine
est_test() {
    case $1 in
        ping) awk -v n="$PING_COUNT" -v i="$PING_INTERVAL" 'BEGIN{printf "%d", n * i + 0.5}' ;;
        tcp1 | tcp1v6 | tcp4) echo $((DURATION + OMIT)) ;;
        udp) echo $(((UDP_MAX_STEPS + 1) * UDP_STEP + 1)) ;; # probe + steps (upper bound)
        udp64) echo $((UDP64_SECS)) ;;
    esac
}
EST=20
for t in "${TESTS[@]}"; do
    per=$(est_test "$t")
    EST=$((EST + REPS * ${#PATHS[@]} * (per + 1)))
done

TS=$(date +%Y%m%d-%H%M%S)
[[ -n $OUT ]] || OUT="$ROOT/bench-results/$TS"
mkdir -p "$OUT/raw" "$OUT/logs" || exit 1
OUT=$(cd "$OUT" && pwd)
SAMPLES="$OUT/samples.tsv"
printf 'rep\tpath\ttest\tstep\tfile\trc\twall_s\tdaemon_ticks\tsys_busy_ticks\tsys_total_ticks\trss_kib\ttarget_bps\tstart\n' >"$SAMPLES"

echo "meshfwd benchmark: paths ${PATHS[*]}; tests ${TESTS[*]}; $REPS repetition(s);"
echo "  TCP ${DURATION} s (+${OMIT} s omitted), cubic; UDP 1400 B sweep ${UDP_STEP} s/step, loss < ${UDP_LOSS_MAX} %;"
echo "  UDP 64 B ${UDP64_SECS} s; ping ${PING_COUNT} x ${PING_INTERVAL} s.  Results: $OUT"
[[ -n $BASELINE ]] && echo "  baseline meshfwd (paths *-base): $BASELINE"
((${#MESHFWD_EXTRA[@]})) && echo "  extra meshfwd options: ${MESHFWD_EXTRA[*]}"
printf '  estimated run time: about %d min %02d s\n' $((EST / 60)) $((EST % 60))

# ------------------------------------------------------------- namespaces --
export MESHFWD_SRC="$ROOT/target/release/meshfwd"
# shellcheck source=tests/netns/lib.sh
source "$ROOT/tests/netns/lib.sh"
mf_init "" || exit 1
# a recognisable prefix of our own (mf_init picked a free random suffix)
MF_PREFIX="mfbench${MF_RUN_DIR##*.}"; MF_PREFIX=${MF_PREFIX,,}
compgen -G "/run/netns/${MF_PREFIX}-*" >/dev/null && { echo "namespace prefix $MF_PREFIX in use" >&2; exit 1; }
RUN=$MF_RUN_DIR
START_TS=$SECONDS

exec {ERR_FD}>&2
bench_cleanup() {
    local rc=$? ns p f
    trap - EXIT
    # a second Ctrl-C (or a signal sent to the whole process group) must not cut
    # the teardown short: ignore them until processes and namespaces are gone
    trap '' INT TERM HUP
    [[ -n ${RSS_PID:-} ]] && kill "$RSS_PID" 2>/dev/null
    # keep the daemon logs (not the throw-away keys)
    if [[ -d $RUN ]]; then
        cp "$RUN"/*.log "$OUT/logs/" 2>/dev/null
        for f in "$RUN"/tinc*/log; do [[ -f $f ]] && cp "$f" "$OUT/logs/$(basename "$(dirname "$f")").log"; done
    fi
    mf_kill_pids # only the PIDs this run started (lib.sh)
    for ns in "${MF_NETNS[@]}"; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
        rm -rf "/etc/netns/$ns"
    done
    MF_NETNS=()
    _mf_cleanup # the rest: run directory with keys and configs
    # (to the saved stderr: a trap can run while a command's 2> redirection is active)
    ((rc == 0)) || echo "bench.sh: stopped (exit $rc); partial results in $OUT" >&"$ERR_FD"
    exit "$rc"
}
trap bench_cleanup EXIT

# The meshfwd binary is copied so that a concurrent `cargo build` cannot swap it mid-run.
if has_meshfwd; then
    cp "$MESHFWD_SRC" "$RUN/meshfwd" || exit 1
    MESHFWD="$RUN/meshfwd"
fi
if [[ -n $BASELINE ]]; then
    cp "$BASELINE" "$RUN/meshfwd-base" || exit 1
fi
MESHFWD_CUR=${MESHFWD:-}

VM1=vm1 VM2=vm2
UL1=192.168.16.32 UL2=192.168.16.33
mf_netns_add $VM1 || exit 1
mf_netns_add $VM2 || exit 1
NS1=$(mf_ns $VM1) NS2=$(mf_ns $VM2)
ip -n "$NS1" link add eth0 mtu 1500 type veth peer name eth0 mtu 1500 netns "$NS2" || exit 1
ip -n "$NS1" addr add $UL1/16 dev eth0 && ip -n "$NS1" link set eth0 up || exit 1
ip -n "$NS2" addr add $UL2/16 dev eth0 && ip -n "$NS2" link set eth0 up || exit 1
# IPv6 on in both "VMs" for meshfwd's dual-stack overlay (tcp1v6); the veth
# (created with IPv6 off) stays IPv4-only.
for ns in "$NS1" "$NS2"; do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0 >/dev/null
done
x1() { ip netns exec "$NS1" "$@"; }
x2() { ip netns exec "$NS2" "$@"; }

wait_ping() { # DST TIMEOUT_S [SIZE]
    local dst=$1 t=$2 size=${3:-56} i
    for ((i = 0; i < t * 4; i++)); do
        x1 ping -n -q -c 1 -W 1 -s "$size" "$dst" >/dev/null 2>&1 && return 0
        sleep 0.25
    done
    return 1
}
wait_ping $UL2 5 || { echo "underlay veth does not answer ping" >&2; exit 1; }

declare -A DST=() PIDS=() MTU=()
mtu_of() { ip -n "$1" -o link show dev "$2" 2>/dev/null | sed -nE 's/.* mtu ([0-9]+) .*/\1/p'; }
DST[raw]=$UL2
declare -A PATH_OK=()

# -- a second veth without segmentation offloads (TSO/GSO/GRO off on both ends)
setup_raw_nooff() {
    local i ns
    ip -n "$NS1" link add eth1 mtu 1500 type veth peer name eth1 mtu 1500 netns "$NS2" || return 1
    for i in 1 2; do
        if ((i == 1)); then ns=$NS1; else ns=$NS2; fi
        ip -n "$ns" addr add "198.18.9.$i/24" dev eth1 || return 1
        ip netns exec "$ns" ethtool -K eth1 tso off gso off gro off >/dev/null || return 1
        ip -n "$ns" link set eth1 up || return 1
    done
    DST[raw-nooff]=198.18.9.2
    wait_ping 198.18.9.2 5
}

# -- kernel VXLAN (L2 over UDP 4789; 1450 = 1500 - 50)
setup_vxlan() {
    local i ns me peer
    for i in 1 2; do
        if ((i == 1)); then ns=$NS1 me=$UL1 peer=$UL2; else ns=$NS2 me=$UL2 peer=$UL1; fi
        ip -n "$ns" link add vx0 type vxlan id 42 local "$me" remote "$peer" dstport 4789 dev eth0 || return 1
        ip -n "$ns" link set vx0 mtu 1450 up || return 1
        ip -n "$ns" addr add "198.18.1.$i/24" dev vx0 || return 1
    done
    DST[vxlan]=198.18.1.2
    wait_ping 198.18.1.2 5
}

# -- fastd v22, method "null", TUN mode.  Needs a key pair even for null.
setup_fastd() {
    local i o me peer
    for i in 1 2; do fastd --generate-key >"$RUN/fastd$i.keys" 2>/dev/null || return 1; done
    for i in 1 2; do
        o=$((3 - i))
        if ((i == 1)); then me=$UL1 peer=$UL2; else me=$UL2 peer=$UL1; fi
        cat >"$RUN/fastd$i.conf" <<EOF
log level warn;
interface "fastd0";
mode tun;
method "null";
bind $me:10000;
secret "$(awk '/^Secret:/{print $2}' "$RUN/fastd$i.keys")";
mtu 1450;
on up "ip addr add 198.18.2.$i/24 dev \$INTERFACE && ip link set \$INTERFACE up";
peer "vm$o" {
    key "$(awk '/^Public:/{print $2}' "$RUN/fastd$o.keys")";
    remote $peer:10000;
}
EOF
    done
    mf_bg fastd1 $VM1 fastd -c "$RUN/fastd1.conf" || return 1
    PIDS[fastd]=$MF_LAST_PID
    mf_bg fastd2 $VM2 fastd -c "$RUN/fastd2.conf" || return 1
    PIDS[fastd]+=" $MF_LAST_PID"
    DST[fastd]=198.18.2.2
    wait_ping 198.18.2.2 10
}

# -- tinc 1.0, Cipher/Digest none, router mode, TUN.  Its data goes over the TCP
#    meta connection until PMTU discovery has raised the peer's minimum MTU to
#    the interface MTU: wait for that (SIGUSR2 dumps "pmtu X (min Y max Z)").
setup_tinc() {
    local i o me t
    for i in 1 2; do
        o=$((3 - i)); t="$RUN/tinc$i"
        if ((i == 1)); then me=$UL1; else me=$UL2; fi
        mkdir -p "$t/hosts" || return 1
        cat >"$t/tinc.conf" <<EOF
Name = vm$i
ConnectTo = vm$o
Interface = tinc0
DeviceType = tun
Mode = router
AddressFamily = ipv4
BindToAddress = $me
EOF
        cat >"$t/hosts/vm$i" <<EOF
Address = $me
Port = 655
Subnet = 198.18.3.$i/32
Cipher = none
Digest = none
EOF
        # shellcheck disable=SC2016  # $INTERFACE is for the tinc-up script
        printf '#!/bin/sh\nip addr add 198.18.3.%s/24 dev "$INTERFACE"\nip link set "$INTERFACE" mtu 1450 up\n' "$i" >"$t/tinc-up"
        chmod +x "$t/tinc-up"
        tincd -c "$t" -K 2048 </dev/null >"$RUN/tinc$i-keygen.txt" 2>&1 || return 1
    done
    cp "$RUN/tinc1/hosts/vm1" "$RUN/tinc2/hosts/" && cp "$RUN/tinc2/hosts/vm2" "$RUN/tinc1/hosts/" || return 1
    for i in 1 2; do
        mf_bg "tincd$i" "vm$i" tincd -c "$RUN/tinc$i" -D -d1 --pidfile="$RUN/tinc$i/pid" --logfile="$RUN/tinc$i/log" || return 1
        PIDS[tinc]+="${PIDS[tinc]:+ }$MF_LAST_PID"
    done
    DST[tinc]=198.18.3.2
    wait_ping 198.18.3.2 15 || return 1
    # 1450-byte IP packets are 1464 bytes for tinc (it counts a 14-byte Ethernet header)
    local k p ok m
    for ((k = 0; k < 60; k++)); do
        x1 ping -n -q -c 3 -i 0.1 -W 1 -s 1400 198.18.3.2 >/dev/null 2>&1
        ok=0
        for p in ${PIDS[tinc]}; do
            kill -USR2 "$p" 2>/dev/null
        done
        sleep 0.3
        for i in 1 2; do
            o=$((3 - i))
            m=$(grep -E "^.* vm$o at .* pmtu [0-9]+ \(min [0-9]+ max [0-9]+\)" "$RUN/tinc$i/log" | tail -n 1 |
                sed -E 's/.*\(min ([0-9]+) max [0-9]+\).*/\1/')
            [[ -n $m && $m -ge 1464 ]] && ok=$((ok + 1))
        done
        ((ok == 2)) && { log "tinc: PMTU discovery done, data on UDP"; return 0; }
        sleep 0.2
    done
    log "tinc: PMTU discovery did not finish in time"
    return 1
}

# -- meshfwd: started on demand, one variant at a time (both would receive every
#    GRE packet on their raw sockets).
MESHFWD_MODE=""
DST[meshfwd]=$("$MESHFWD_SRC" addr --json $UL2 2>/dev/null | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["vm_overlay"])' 2>/dev/null)
for p in "${PATHS[@]}"; do [[ $p == meshfwd* ]] && DST[$p]=${DST[meshfwd]}; done
# the peer VM's IPv6 overlay address (index 1), for tcp1v6
DST6=$("$MESHFWD_SRC" addr --json $UL2 2>/dev/null | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["vm_overlay6"])' 2>/dev/null)
meshfwd_stop() {
    local vm p
    [[ -n $MESHFWD_MODE ]] || return 0
    for vm in $VM1 $VM2; do
        mf_running "$vm" || { unset 'MF_MESHFWD_PID[$vm]'; continue; }
        mf_stop "$vm" TERM 10
        [[ $MF_RC == 0 ]] || log "meshfwd ($MESHFWD_MODE) in $vm exited with $MF_RC"
        # counters of the last instance of each variant (the others were alike)
        cp "$(mf_stats_file "$vm")" "$OUT/logs/$MESHFWD_MODE.$vm.stats.json" 2>/dev/null
    done
    MESHFWD_MODE=""
    for p in "${PATHS[@]}"; do [[ $p == meshfwd* ]] && PIDS[$p]=""; done
}
meshfwd_args() { # MODE -> the options that make that path
    case $1 in
        meshfwd | meshfwd-base) ;;
        meshfwd-nopin | meshfwd-base-nopin) echo --no-pin ;;
        meshfwd-nooff) echo --no-offload ;;
        meshfwd-udp | meshfwd-udp-base) echo --encap udp ;;
        meshfwd-udp-nopin) echo --encap udp --no-pin ;;
        meshfwd-t[0-9]* | meshfwd-base-t[0-9]*) echo --no-pin --threads "${1##*-t}" ;;
    esac
}
meshfwd_start() { # MODE (one of the meshfwd* paths)
    local mode=$1 args=() vm
    [[ $MESHFWD_MODE == "$mode" ]] && mf_running $VM1 && mf_running $VM2 && return 0
    meshfwd_stop
    read -ra args <<<"$(meshfwd_args "$mode")"
    # the -base paths run the --baseline binary, everything else this build
    MESHFWD=$MESHFWD_CUR
    [[ $mode == *-base || $mode == *-base-* ]] && MESHFWD="$RUN/meshfwd-base"
    args+=("${MESHFWD_EXTRA[@]}")
    for vm in $VM1 $VM2; do
        mf_start "$vm" "${args[@]}" || return 1
    done
    MESHFWD_MODE=$mode
    PIDS[$mode]="${MF_MESHFWD_PID[$VM1]} ${MF_MESHFWD_PID[$VM2]}"
    MTU[$mode]=$(mtu_of "$NS1" tun0)
    wait_ping "${DST[$mode]}" 5
}

# -- bring up the always-on paths
for p in "${PATHS[@]}"; do
    case $p in
        raw) PATH_OK[raw]=1 ;;
        raw-nooff | vxlan | fastd | tinc)
            log "setting up $p"
            if "setup_${p//-/_}"; then PATH_OK[$p]=1; else log "$p did not come up: it is left out (logs in $OUT/logs)"; fi ;;
        meshfwd*)
            log "checking $p"
            if meshfwd_start "$p"; then PATH_OK[$p]=1; else log "$p did not come up: it is left out"; fi ;;
    esac
done
meshfwd_stop

MTU[raw]=$(mtu_of "$NS1" eth0)
MTU[raw-nooff]=$(mtu_of "$NS1" eth1)
MTU[vxlan]=$(mtu_of "$NS1" vx0)
MTU[fastd]=$(mtu_of "$NS1" fastd0)
MTU[tinc]=$(mtu_of "$NS1" tinc0)

# ------------------------------------------------------------ measuring --
CLK_TCK=$(getconf CLK_TCK)
proc_ticks() { # PIDS... -> utime+stime summed (clock ticks)
    local p line f sum=0
    for p in "$@"; do
        read -r line <"/proc/$p/stat" 2>/dev/null || continue
        line=${line##*) }
        read -ra f <<<"$line"
        sum=$((sum + f[11] + f[12]))
    done
    echo "$sum"
}
sys_ticks() { # -> "busy total" for the whole machine from /proc/stat
    local _ u n s i w q sq st rest
    read -r _ u n s i w q sq st rest </proc/stat
    echo "$((u + n + s + q + sq + st)) $((u + n + s + i + w + q + sq + st))"
}
now() { date +%s.%N; }

RSS_PID=""
rss_start() { # OUTFILE PIDS...
    local rss_file=$1; shift
    (
        trap 'exit 0' TERM
        while :; do
            for p in "$@"; do
                while read -r k v _; do [[ $k == VmRSS: ]] && echo "$p $v"; done <"/proc/$p/status" 2>/dev/null
            done
            sleep 0.25
        done
    ) >"$rss_file" 2>/dev/null &
    RSS_PID=$!
}
rss_stop() { # OUTFILE -> "pid:maxkib,pid:maxkib"
    [[ -n $RSS_PID ]] && { kill "$RSS_PID" 2>/dev/null; wait "$RSS_PID" 2>/dev/null; }
    RSS_PID=""
    awk '{ if ($2 > m[$1]) m[$1] = $2 } END { s = ""; for (p in m) s = s (s == "" ? "" : ",") p ":" m[p]; print s }' "$1"
    rm -f "$1"
}

SERVER_PID=""
server_start() {
    local i
    mf_bg iperf3-server $VM2 iperf3 -s -p 5201
    SERVER_PID=$MF_LAST_PID
    for ((i = 0; i < 50; i++)); do
        [[ -n $(x2 ss -Hltn 'sport = :5201' 2>/dev/null) ]] && return 0
        sleep 0.1
    done
    log "iperf3 server did not start"; return 1
}
server_restart() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null
        mf_reap "$SERVER_PID" 3
    fi
    server_start
}

# run_measured REP PATH TEST STEP FILE TARGET_BPS CMD... — run CMD in vm1 with stdout
# to FILE, with daemon CPU, machine CPU and daemon RSS around it; append a sample row.
# shellcheck disable=SC2086  # $dpids: a list of PIDs, split on purpose
run_measured() {
    local rep=$1 path=$2 test=$3 step=$4 file=$5 target=$6; shift 6
    local dpids=${PIDS[$path]:-} c0 c1 s0 s1 t0 t1 rc rss="" rssf
    rssf="$RUN/rss.$$"
    [[ -n $dpids ]] && rss_start "$rssf" $dpids
    c0=$(proc_ticks $dpids); s0=$(sys_ticks); t0=$(now)
    x1 "$@" >"$OUT/raw/$file" 2>"$RUN/client.err"
    rc=$?
    t1=$(now); s1=$(sys_ticks); c1=$(proc_ticks $dpids)
    [[ -n $dpids ]] && rss=$(rss_stop "$rssf")
    if ((rc != 0)); then
        cat "$RUN/client.err" >>"$OUT/raw/$file.err"
        log "  $path $test${step:+ step $step}: exit code $rc ($(tail -c 200 "$RUN/client.err" | tr '\n' ' '))"
    fi
    local sb0 st0 sb1 st1
    read -r sb0 st0 <<<"$s0"; read -r sb1 st1 <<<"$s1"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$path" "$test" "$step" "$file" "$rc" \
        "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')" "$((c1 - c0))" "$((sb1 - sb0))" "$((st1 - st0))" \
        "$rss" "$target" "$(date +%s)" >>"$SAMPLES"
    return $rc
}

iperf() { # REP PATH TEST STEP FILE TARGET IPERF_ARGS...  (IPERF_DST overrides the target)
    local rep=$1 path=$2 test=$3 step=$4 file=$5 target=$6 t=$((DURATION + OMIT + 30)); shift 6
    run_measured "$rep" "$path" "$test" "$step" "$file" "$target" \
        timeout "$t" iperf3 -c "${IPERF_DST:-${DST[$path]}}" -p 5201 -J --connect-timeout 3000 "$@" && return 0
    server_restart
    return 1
}

test_ping() {
    local rep=$1 path=$2
    run_measured "$rep" "$path" ping 0 "r$rep-$path-ping.txt" "" \
        ping -n -c "$PING_COUNT" -i "$PING_INTERVAL" -W 1 "${DST[$path]}"
}
test_tcp1() {
    iperf "$1" "$2" tcp1 0 "r$1-$2-tcp1.json" "" -C cubic -t "$DURATION" -O "$OMIT"
}
test_tcp1v6() { # meshfwd paths only: the same single stream over the IPv6 overlay
    # (not the -base paths: a --baseline binary may predate the IPv6 overlay)
    [[ $2 == meshfwd* && $2 != *-base* && -n $DST6 ]] || return 0
    IPERF_DST=$DST6 iperf "$1" "$2" tcp1v6 0 "r$1-$2-tcp1v6.json" "" -6 -C cubic -t "$DURATION" -O "$OMIT"
}
test_tcp4() {
    iperf "$1" "$2" tcp4 0 "r$1-$2-tcp4.json" "" -C cubic -t "$DURATION" -O "$OMIT" -P 4
}
test_udp64() {
    iperf "$1" "$2" udp64 0 "r$1-$2-udp64.json" "" -u -w 4M -l 64 -b 0 -t "$UDP64_SECS"
}
udp_result() { "$PY" "$REPORT" udp-result "$OUT/raw/$1"; } # -> "recv_bps loss_pct sent_bps"
passes() { awk -v l="$1" -v m="$UDP_LOSS_MAX" 'BEGIN{exit !(l < m)}'; }
# Highest UDP 1400 B rate with < 1 % loss.  -w 4M (= rmem_max here) on both
# iperf3 sockets: with the 208 KiB default, iperf3's own receive buffer overflows
# (UdpRcvbufErrors) before any tunnel does.  A probe at -b 0 gives the sender's
# rate (failing unless the sender itself is the limit) and the received rate R0.
# Then: try R0; step down by 0.75x until a rate passes; once a passing and a
# failing rate bracket the limit, bisect geometrically until they are within
# 12 % (or UDP_MAX_STEPS rates were tried).  The best passing step is the result.
test_udp() {
    local rep=$1 path=$2 k f recv loss sent rate lo="" hi=""
    f="r$rep-$path-udp-0.json"
    iperf "$rep" "$path" udp 0 "$f" 0 -u -w 4M -l 1400 -b 0 -t "$UDP_STEP" || return 1
    read -r recv loss sent <<<"$(udp_result "$f")"
    [[ -n $recv ]] || return 1
    passes "$loss" && return 0 # sender-limited: the probe is the result
    hi=${sent%.*}
    rate=${recv%.*}
    for ((k = 1; k <= UDP_MAX_STEPS; k++)); do
        ((rate >= 1000000)) || break
        f="r$rep-$path-udp-$k.json"
        iperf "$rep" "$path" udp "$k" "$f" "$rate" -u -w 4M -l 1400 -b "$rate" -t "$UDP_STEP" || return 1
        read -r recv loss sent <<<"$(udp_result "$f")"
        if passes "$loss"; then lo=$rate; else hi=$rate; fi
        if [[ -z $lo ]]; then
            rate=$(awk -v r="$hi" 'BEGIN{printf "%d", r * 0.75}')
        else
            awk -v a="$lo" -v b="$hi" 'BEGIN{exit !(b / a > 1.12)}' || break
            rate=$(awk -v a="$lo" -v b="$hi" 'BEGIN{printf "%d", sqrt(a * b)}')
        fi
    done
    return 0
}

ensure_path() { # PATH — up and answering, else 1
    local p=$1 pid
    [[ -n ${PATH_OK[$p]:-} ]] || return 1
    case $p in
        meshfwd*) meshfwd_start "$p" || { log "$p: could not start"; return 1; } ;;
        fastd | tinc)
            for pid in ${PIDS[$p]}; do
                _mf_alive "$pid" || { log "$p: daemon $pid has exited; path dropped"; PATH_OK[$p]=""; return 1; }
            done ;;
    esac
    return 0
}

server_start || exit 1
log "setup done in $((SECONDS - START_TS)) s; measuring"
MEASURE_TS=$SECONDS
for ((rep = 1; rep <= REPS; rep++)); do
    order=("${PATHS[@]}") torder=("${TESTS[@]}")
    if ((rep % 2 == 0)); then
        order=(); for ((i = ${#PATHS[@]} - 1; i >= 0; i--)); do order+=("${PATHS[$i]}"); done
        # the tests too: a test that always runs first (right after the
        # daemons start, or after a quiet spell) would be favoured
        torder=(); for ((i = ${#TESTS[@]} - 1; i >= 0; i--)); do torder+=("${TESTS[$i]}"); done
    fi
    for t in "${torder[@]}"; do
        log "rep $rep/$REPS: $t on ${order[*]}"
        for p in "${order[@]}"; do
            ensure_path "$p" || continue
            "test_$t" "$rep" "$p" || log "  $p $t failed"
        done
    done
    elapsed=$((SECONDS - MEASURE_TS))
    log "rep $rep done, $((elapsed / 60)) min $((elapsed % 60)) s so far"
done
meshfwd_stop
kill "$SERVER_PID" 2>/dev/null; mf_reap "$SERVER_PID" 3

# ------------------------------------------------------------------ report --
TOTAL=$((SECONDS - START_TS))
MESHFWD_COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || MESHFWD_COMMIT+="+dirty"
MESHFWD_SHA=""
[[ -f $RUN/meshfwd ]] && MESHFWD_SHA=$(sha256sum "$RUN/meshfwd" | cut -c1-16)
mtu_json="{"
for p in "${PATHS[@]}"; do
    m=${MTU[$p]:-}
    mtu_json+="\"$p\": ${m:-null},"
done
mtu_json="${mtu_json%,}}"
cat >"$RUN/meta.json" <<EOF
{"timestamp": "$TS", "reps": $REPS, "duration_s": $DURATION, "omit_s": $OMIT,
 "udp_step_s": $UDP_STEP, "udp_loss_max_pct": $UDP_LOSS_MAX, "udp64_s": $UDP64_SECS,
 "ping_count": $PING_COUNT, "ping_interval_s": $PING_INTERVAL, "clk_tck": $CLK_TCK,
 "paths": "$(IFS=,; echo "${PATHS[*]}")", "tests": "$(IFS=,; echo "${TESTS[*]}")",
 "mtu": $mtu_json, "meshfwd_commit": "$MESHFWD_COMMIT", "meshfwd_sha256": "$MESHFWD_SHA",
 "runtime_s": $TOTAL, "measure_s": $((SECONDS - MEASURE_TS)), "estimate_s": $EST,
 "build_failed": $BUILD_FAILED, "meshfwd_extra_args": "${MESHFWD_EXTRA[*]}", "loadavg_start": "$LOADAVG_START",
 "loadavg_end": "$(cut -d' ' -f1-3 /proc/loadavg)", "command": "scripts/bench.sh $ARGS_STR"}
EOF
report_args=(report --out "$OUT" --samples "$SAMPLES" --meta-file "$RUN/meta.json")
((CHARTS)) || report_args+=(--no-charts)
"$PY" "$REPORT" "${report_args[@]}" || { echo "report failed" >&2; exit 1; }
printf 'total run time: %d min %02d s (estimate was %d min %02d s)\n' $((TOTAL / 60)) $((TOTAL % 60)) $((EST / 60)) $((EST % 60))
echo "results: $OUT/results.json"
