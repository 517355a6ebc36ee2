#!/usr/bin/env bash
# scripts/soak.sh — meshfwd under sustained load: iperf3 TCP between containers on
# different VMs plus a stream of malformed GRE, for a bounded time; RSS and open
# fds of every meshfwd sampled on a fixed interval.
#
#   sudo scripts/soak.sh                      # 600 s (~11 min with set-up and teardown)
#   sudo scripts/soak.sh --duration 120       # shorter
#
# Options:
#   --duration S      seconds of traffic (default 600)
#   --interval S      sampling interval (default 10)
#   --warmup S        samples before this are not the RSS baseline (default: 60 s,
#                     or a fifth of --duration if that is less)
#   --vms N           2 or 3 VMs (default 3; the malformed GRE comes from the last VM,
#                     so with 2 VMs vm1 both runs iperf3 and sends it)
#   --rate PPS        malformed GRE packets per second, roughly (default 100)
#   --rss-slack-kib N allowed RSS growth from the baseline to the last sample
#                     (default 1024 KiB, or 5 % of the baseline if that is larger)
#   --out FILE        JSON summary (default bench-results/soak-<timestamp>.json)
#   --keep            keep the run directory (logs, samples, iperf3 JSON)
#   --build           cargo build --release first (default: use target/release/meshfwd)
#
# Topology (tests/netns/lib.sh): VMs 192.168.16.32, 192.168.16.33, 192.168.200.7,
# 2 containers each, meshfwd with its defaults (wide layout, one pinned worker per
# CPU).  Traffic: iperf3 -C cubic vm1c1 -> vm2c1 and vm2c2 -> vm1c2 for the whole
# duration; from the last VM, tests/tools/gre_craft.py in a loop sends GRE at vm2
# with one defect each (GRE version 1, routing bit, reserved bits, bad checksum,
# wrong key, IPv6 payload type, outer source outside the underlay, inner source
# outside the overlay, spoofed inner source, inner destination on another VM,
# truncated inner packet, inner IPv6 header, CE over Not-ECT), each of which has
# its own drop counter.
#
# Verdict: PASS when every meshfwd is alive to the end (and exits 0 on SIGTERM),
# its RSS grew by at most the slack between the first sample after the warm-up and
# the last one, its open fds never changed after the warm-up, both iperf3 runs
# completed, and every malformation's drop counter moved on vm2; else FAIL, exit 1.
#
# Everything lives in network namespaces named mfsoak<random>-*; nothing is
# configured in the root namespace.  The EXIT trap (also on Ctrl-C or failure)
# stops only the processes this run started and deletes the namespaces.

set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
cd "$ROOT" || exit 1
REPORT="$HERE/soak_report.py"

DURATION=600
INTERVAL=10
WARMUP=""
NVMS=3
RATE=100
RSS_SLACK_KIB=1024
OUT=""
KEEP=0
BUILD=0
ARGS_STR="$*"

usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; }
need_arg() { [[ $# -ge 2 && -n $2 ]] || { echo "$1 needs a value" >&2; exit 2; }; }
need_int() { [[ $2 =~ ^[0-9]+$ ]] || { echo "$1 needs a non-negative integer, not '$2'" >&2; exit 2; }; }
while (($#)); do
    case $1 in
        --duration) need_arg "$@"; need_int "$1" "$2"; DURATION=$2; shift 2 ;;
        --interval) need_arg "$@"; need_int "$1" "$2"; INTERVAL=$2; shift 2 ;;
        --warmup) need_arg "$@"; need_int "$1" "$2"; WARMUP=$2; shift 2 ;;
        --vms) need_arg "$@"; need_int "$1" "$2"; NVMS=$2; shift 2 ;;
        --rate) need_arg "$@"; need_int "$1" "$2"; RATE=$2; shift 2 ;;
        --rss-slack-kib) need_arg "$@"; need_int "$1" "$2"; RSS_SLACK_KIB=$2; shift 2 ;;
        --out) need_arg "$@"; OUT=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --build) BUILD=1; shift ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
((NVMS == 2 || NVMS == 3)) || { echo "--vms must be 2 or 3" >&2; exit 2; }
((INTERVAL >= 1)) || { echo "--interval must be at least 1" >&2; exit 2; }
((DURATION >= 3 * INTERVAL)) || { echo "--duration must be at least 3 intervals" >&2; exit 2; }
((RATE >= 1 && RATE <= 2000)) || { echo "--rate must be 1..2000" >&2; exit 2; }
if [[ -z $WARMUP ]]; then WARMUP=$((DURATION / 5 < 60 ? DURATION / 5 : 60)); fi
((WARMUP < DURATION)) || { echo "--warmup must be shorter than --duration" >&2; exit 2; }
TS=$(date +%Y%m%d-%H%M%S)
[[ -n $OUT ]] || OUT="$ROOT/bench-results/soak-$TS.json"
if [[ $EUID -ne 0 ]]; then
    echo "soak.sh creates network namespaces and TUN devices: run it as root (sudo $0)." >&2
    exit 1
fi
for t in ip iperf3 ping; do
    command -v "$t" >/dev/null || { echo "missing tool: $t (apt-get install -y iproute2 iperf3 iputils-ping)" >&2; exit 1; }
done

if ((BUILD)); then
    [[ -d $HOME/.cargo/bin ]] && PATH="$HOME/.cargo/bin:$PATH"
    cargo build --release --quiet || { echo "cargo build failed" >&2; exit 1; }
fi
MESHFWD_SRC=${MESHFWD:-$ROOT/target/release/meshfwd}
[[ -x $MESHFWD_SRC ]] || { echo "no meshfwd binary at $MESHFWD_SRC (cargo build --release, or --build)" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")" || exit 1

# shellcheck source=tests/netns/lib.sh
source "$ROOT/tests/netns/lib.sh"
mf_init "" || exit 1
MF_PREFIX="mfsoak${MF_RUN_DIR##*.}"; MF_PREFIX=${MF_PREFIX,,}
compgen -G "/run/netns/${MF_PREFIX}-*" >/dev/null && { echo "namespace prefix $MF_PREFIX in use" >&2; exit 1; }
RUN=$MF_RUN_DIR
((KEEP)) && MF_KEEP=1
# A copy of the binary: a concurrent `cargo build` cannot swap it mid-run.
cp "$MESHFWD_SRC" "$RUN/meshfwd" || exit 1
MESHFWD="$RUN/meshfwd"

exec {ERR_FD}>&2
# shellcheck disable=SC2317  # invoked by the EXIT trap
soak_cleanup() {
    local rc=$?
    trap - EXIT
    trap '' INT TERM HUP # a second Ctrl-C must not cut the teardown short
    echo "cleaning up: namespaces ${MF_PREFIX}-* and the processes this run started ..." >&"$ERR_FD"
    _mf_cleanup
    ((rc == 0)) || echo "soak.sh: exit $rc" >&"$ERR_FD"
    exit "$rc"
}
trap soak_cleanup EXIT
die() { echo "soak.sh: $*" >&2; exit 1; }

# Hard bound: set-up, the duration, the iperf3 tail, teardown.
MAX_TIME=$((DURATION + 180))
(
    trap 'kill "$s" 2>/dev/null; exit 0' TERM
    sleep "$MAX_TIME" & s=$!
    wait "$s" && { echo "soak.sh: time limit of ${MAX_TIME}s reached, stopping" >&2; kill -TERM $$; }
) &
MF_PIDS+=("$!")
# shellcheck disable=SC2034  # read by lib.sh
MF_PIDNAME[$!]=watchdog

echo "meshfwd soak: ${DURATION} s of iperf3 (cubic, 2 flows) + malformed GRE at ~${RATE} pkt/s;"
echo "  RSS/fds sampled every ${INTERVAL} s, baseline after ${WARMUP} s warm-up; namespaces ${MF_PREFIX}-*; hard limit ${MAX_TIME} s"

# ---------------------------------------------------------------- mesh --
VMADDRS=("${MF_DEFAULT_VMS[@]:0:NVMS}")
mf_mesh --containers 2 "${VMADDRS[@]}" || die "could not build the mesh"
mf_describe
for vm in "${MF_VMS[@]}"; do
    mf_start "$vm" || die "meshfwd did not start in $vm (log $(mf_meshfwd_log "$vm"))"
done
RECV=vm2 # receives the malformed GRE (and one of the iperf3 flows)
SENDER=vm1; ((NVMS == 3)) && SENDER=vm3 # sends it
for pair in "vm1c1 vm2c1" "vm2c2 vm1c2"; do
    read -r a b <<<"$pair"
    got=$(mf_ping "$a" "${MF_OVL[$b]}" 3)
    [[ $got == 3/3 ]] || die "$a cannot reach $b before the soak ($got)"
done
echo "  meshfwd running in ${MF_VMS[*]}; containers reach each other"

# -------------------------------------------------------- malformed GRE --
# NAME|EXPECTED DROP REASON|gre_craft.py defect options.  The rest of each packet
# is valid: outer SENDER -> RECV, inner ICMP echo SENDERc1 -> vm2c1.
SUL=${MF_UL[$SENDER]} RUL=${MF_UL[$RECV]}
ISRC=${MF_OVL[${SENDER}c1]} IDST=${MF_OVL[vm2c1]}
OTHER=${MF_OVL[vm1c2]} # an address on vm1: spoofed source (if SENDER != vm1) / not-local destination
[[ $SENDER == vm1 ]] && OTHER=${MF_OVL[vm2c2]} # 2 VMs: spoof vm2's own container instead
MALFORMED=(
    "gre_version|gre_version|--version 1"
    "routing_bit|gre_flags|--routing"
    "reserved_bits|gre_flags|--reserved 0x40"
    "bad_checksum|gre_checksum|--bad-csum"
    "wrong_key|key_mismatch|--key 0x2a"
    "ipv6_payload_type|gre_not_ipv4|--proto 0x86dd"
    "outer_src_outside_underlay|outer_src_not_underlay|--src 172.31.0.9"
    "inner_src_outside_overlay|inner_src_not_overlay|--inner-src 192.0.2.1"
    "spoofed_inner_source|spoofed_source|--inner-src $OTHER"
    "inner_dst_other_vm|inner_dst_not_local|--inner-dst ${MF_OVL[vm1c1]}"
    "truncated_inner|inner_malformed|--truncate-inner 12"
    "inner_ipv6_header|inner_malformed|--inner-version 6"
    "ce_over_not_ect|ecn_ce_not_ect|--ce"
)
printf '%s\n' "${MALFORMED[@]}" >"$RUN/malformed.txt"
# shellcheck disable=SC2016  # expanded by the loop's own shell
SENDER_LOOP='
end=$((SECONDS + $1)); shift
per=$PER
while ((SECONDS < end)); do
    for spec in "$@"; do
        ((SECONDS < end)) || break
        IFS="|" read -r name reason opts <<<"$spec"
        "$PY" "$CRAFT" --src "$SUL" --dst "$RUL" --inner-src "$ISRC" --inner-dst "$IDST" \
            --icmp-id 0x5341 --count "$per" --interval "$IV" $opts 2>&1 >/dev/null | sed "s/^/$name: /"
    done
done'
IV=$(awk -v r="$RATE" 'BEGIN { printf "%.4f", 1 / r }')
PER=$((RATE / 2 > 10 ? RATE / 2 : 10)) # packets per gre_craft.py run (~0.5 s each)
export PY=$MF_PY CRAFT="$MF_TOOLS/gre_craft.py" SUL RUL ISRC IDST IV PER

# ------------------------------------------------------------- traffic --
fd_count() { # PID: the least of 3 counts 20 ms apart (the stats file is rewritten
    # every second through a temporary file, which can show up as a transient fd)
    local n m=999999 i
    for i in 1 2 3; do
        n=$(find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
        ((n < m)) && m=$n
        ((i < 3)) && sleep 0.02
    done
    echo "$m"
}
sample() { # T -> one line per VM in samples.txt, one line on stdout
    local t=$1 vm pid k v rss thr fds line="" alive
    for vm in "${MF_VMS[@]}"; do
        pid=${MF_MESHFWD_PID[$vm]}
        rss=0 thr=0 fds=0 alive=0
        if _mf_alive "$pid"; then
            alive=1
            while read -r k v _; do
                case $k in VmRSS:) rss=$v ;; Threads:) thr=$v ;; esac
            done <"/proc/$pid/status"
            fds=$(fd_count "$pid")
        fi
        echo "$t $vm $pid $alive $rss $fds $thr" >>"$RUN/samples.txt"
        if ((alive)); then
            line+=$(printf ' | %s rss %6.2f MiB fds %2d thr %d' "$vm" "$(awk -v r="$rss" 'BEGIN{print r/1024}')" "$fds" "$thr")
        else
            line+=" | $vm DEAD"
        fi
    done
    # overlay throughput (sum of tx_bytes of all VMs) since the last sample, drops on RECV
    local c tx drops gbps
    c=$("$MF_PY" - "$RUN" "$RECV" "${MF_VMS[@]}" <<'EOF' 2>/dev/null
import json, sys
run, recv, vms = sys.argv[1], sys.argv[2], sys.argv[3:]
tx = drops = 0
for vm in vms:
    s = json.load(open(f"{run}/{vm}.stats.json"))
    tx += s["tx_bytes"]
    if vm == recv:
        drops = sum(s["drops"].values())
print(tx, drops)
EOF
    )
    read -r tx drops <<<"${c:-0 ?}"
    gbps=$(awk -v a="$tx" -v b="$LAST_TX" -v t="$t" -v lt="$LAST_T" 'BEGIN { printf "%.2f", (t > lt ? (a - b) * 8 / (t - lt) / 1e9 : 0) }')
    LAST_TX=$tx LAST_T=$t
    printf 't=%4ds%s | GRE out %s Gb/s | %s drops %s\n' "$t" "$line" "$gbps" "$RECV" "$drops"
}
LAST_TX=0 LAST_T=0
: >"$RUN/samples.txt"
for vm in "${MF_VMS[@]}"; do cp "$(mf_stats_file "$vm")" "$RUN/start-$vm.stats.json"; done

mf_bg iperf3-server-vm2c1 vm2c1 iperf3 -s -1 -B "${MF_OVL[vm2c1]}"
srv1=$MF_LAST_PID
mf_bg iperf3-server-vm1c2 vm1c2 iperf3 -s -1 -B "${MF_OVL[vm1c2]}"
srv2=$MF_LAST_PID
sleep 0.5
T0=$EPOCHREALTIME
mf_bg iperf3-vm1c1-vm2c1 vm1c1 iperf3 -c "${MF_OVL[vm2c1]}" -t "$DURATION" -C cubic -J --connect-timeout 3000
cli1=$MF_LAST_PID
mf_bg iperf3-vm2c2-vm1c2 vm2c2 iperf3 -c "${MF_OVL[vm1c2]}" -t "$DURATION" -C cubic -J --connect-timeout 3000
cli2=$MF_LAST_PID
mf_bg malformed "$SENDER" bash -c "$SENDER_LOOP" soak-sender "$DURATION" "${MALFORMED[@]}"
mal=$MF_LAST_PID
echo "  traffic started at $(date +%T): iperf3 vm1c1 -> vm2c1 and vm2c2 -> vm1c2; malformed GRE $SENDER -> $RECV"

# ------------------------------------------------------------ sampling --
elapsed() { awk -v a="$EPOCHREALTIME" -v b="$T0" 'BEGIN { printf "%.3f", a - b }'; }
sample 0
for ((t = INTERVAL; t <= DURATION; t += INTERVAL)); do
    # sleep until T0 + t (no drift)
    s=$(awk -v a="$EPOCHREALTIME" -v b="$T0" -v t="$t" 'BEGIN { d = b + t - a; printf "%.3f", (d > 0 ? d : 0) }')
    sleep "$s"
    sample "$t"
done

# ---------------------------------------------------------------- end --
: >"$RUN/iperf3-rc.txt"
mf_reap "$cli1" 30; echo "iperf3-vm1c1-vm2c1 $MF_RC" >>"$RUN/iperf3-rc.txt"
mf_reap "$cli2" 30; echo "iperf3-vm2c2-vm1c2 $MF_RC" >>"$RUN/iperf3-rc.txt"
mf_reap "$srv1" 5; mf_reap "$srv2" 5
mf_reap "$mal" 10; echo "$MF_RC" >"$RUN/malformed-rc.txt"
sleep 1.1 # a last stats file
: >"$RUN/alive.txt"
for vm in "${MF_VMS[@]}"; do
    if mf_running "$vm"; then echo "$vm 1" >>"$RUN/alive.txt"; else echo "$vm 0" >>"$RUN/alive.txt"; fi
    cp "$(mf_stats_file "$vm")" "$RUN/end-$vm.stats.json"
done
: >"$RUN/exit.txt"
for vm in "${MF_VMS[@]}"; do
    if mf_running "$vm"; then mf_stop "$vm" TERM 10; echo "$vm $MF_RC" >>"$RUN/exit.txt"; else echo "$vm dead" >>"$RUN/exit.txt"; fi
done
grep -il 'panic' "$RUN"/*.meshfwd.log >"$RUN/panics.txt" 2>/dev/null

printf '\n== summary\n'
"$MF_PY" "$REPORT" --run "$RUN" --out "$OUT" --warmup "$WARMUP" --rss-slack-kib "$RSS_SLACK_KIB" \
    --recv "$RECV" --vms "${MF_VMS[@]}" \
    --meta "duration_s=$DURATION" "interval_s=$INTERVAL" "warmup_s=$WARMUP" "rate_pps=$RATE" \
    "sender=$SENDER" "receiver=$RECV" "prefix=$MF_PREFIX" "args=$ARGS_STR" "meshfwd=$MESHFWD_SRC" \
    "timestamp=$TS" "soak_elapsed_s=$(elapsed)"
rc=$?
echo "JSON summary: $OUT"
exit "$rc"
