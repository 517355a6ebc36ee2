#!/usr/bin/env bash
# scripts/scale.sh — meshfwd at scale: 64 "VM" namespaces on one underlay bridge,
# each running meshfwd (1 thread, not pinned) with 4 "containers".
#
#   sudo scripts/scale.sh                        # 64 VMs x 4 containers, 1,000 random pairs (~1 min here)
#   sudo scripts/scale.sh --vms 16 --pairs 200   # smaller
#
# Options:
#   --vms N            VM namespaces (default 64, at most 4000)
#   --containers N     containers per VM (default 4)
#   --pairs N          random (container, container on another VM) pairs to ping (default 1000)
#   --fresh N          containers added while the mesh runs, timed to their first ping (default 5)
#   --parallel N       pings in flight during the pair check (default 16)
#   --jobs N           namespaces wired in parallel during set-up (default 2)
#   --seed N           random seed for the pair sample and the fresh containers (default: random)
#   --layout L         wide (default) or classic
#   --wiring W         how containers are wired: ip (default: one `ip -batch` per side)
#                      or attach (`meshfwd attach`, run inside the VM namespace)
#   --dynamic-arp      no permanent neighbour entries (see below; fails beyond ~16 VMs)
#   --rss-slack-kib N  allowed RSS growth of the first 2 VMs from the 2-VM mesh to the
#                      full mesh (default 1024 KiB, or 5 % if that is larger)
#   --max-time S       hard bound on the whole run, teardown included (default 900)
#   --out FILE         JSON summary (default bench-results/scale-<timestamp>.json)
#   --keep             keep the run directory (logs, stats files) after the run
#   --build            cargo build --release first (default: use target/release/meshfwd)
#
# Phases: set-up of every namespace; meshfwd in vm1 and vm2 only, all their
# container pairs pinged, RSS measured (the 2-VM mesh); meshfwd in every other VM;
# the pair check (random pairs, plus a fan-out that makes vm1 and vm2 talk to
# every other VM); RSS, fds and threads of every meshfwd; the counters of all
# workers; then --fresh containers created on random VMs while a container on
# another VM pings their address every 50 ms: the time from the start of the
# creation (namespace + wiring) to the first echo reply.
#
# VM underlay addresses are spread over 192.168.0.0/16 (192.168.X.Y, X varies).
#
# Neighbour (ARP) entries: every namespace shares this one kernel, whose ARP table
# limit is global (net.ipv4.neigh.default.gc_thresh3, 1024 by default, settable
# in the root namespace only).  64 VMs on one bridge need 64 x 63 underlay entries
# plus two per container, and beyond ~1,000 the kernel logs "neighbor table
# overflow" and drops packets — an artefact of the test bed, not of meshfwd (real
# VMs each have their own table).  So the underlay entries of every VM and both
# ends of every initial container's veth are installed as permanent neighbours
# inside the namespaces (permanent entries do not count against the limit); the
# fresh containers use ordinary ARP.  --dynamic-arp turns this off.
# Everything lives in network namespaces named mfscale<random>-*; nothing is
# configured in the root namespace.  The EXIT trap (also on Ctrl-C, failure or the
# --max-time watchdog) stops only the processes this run started and deletes every
# namespace with this run's prefix and its /etc/netns entry.
#
# Exit status: 0 when every pair answered, every fresh container became reachable,
# every meshfwd is alive with zero drops and errors after the pair check, and the
# 2-VM RSS did not grow in the full mesh; 1 otherwise; 2 on bad usage.

set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
cd "$ROOT" || exit 1
REPORT="$HERE/scale_report.py"

VMS=64
CONTAINERS=4
PAIRS=1000
FRESH=5
PARALLEL=16
JOBS=2
SEED=""
LAYOUT=wide
WIRING=ip
STATIC_NEIGH=1
RSS_SLACK_KIB=1024
MAX_TIME=900
OUT=""
KEEP=0
BUILD=0
ARGS_STR="$*"

usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; }
need_arg() { [[ $# -ge 2 && -n $2 ]] || { echo "$1 needs a value" >&2; exit 2; }; }
need_int() { [[ $2 =~ ^[0-9]+$ ]] || { echo "$1 needs a non-negative integer, not '$2'" >&2; exit 2; }; }
while (($#)); do
    case $1 in
        --vms) need_arg "$@"; need_int "$1" "$2"; VMS=$2; shift 2 ;;
        --containers) need_arg "$@"; need_int "$1" "$2"; CONTAINERS=$2; shift 2 ;;
        --pairs) need_arg "$@"; need_int "$1" "$2"; PAIRS=$2; shift 2 ;;
        --fresh) need_arg "$@"; need_int "$1" "$2"; FRESH=$2; shift 2 ;;
        --parallel) need_arg "$@"; need_int "$1" "$2"; PARALLEL=$2; shift 2 ;;
        --jobs) need_arg "$@"; need_int "$1" "$2"; JOBS=$2; shift 2 ;;
        --seed) need_arg "$@"; need_int "$1" "$2"; SEED=$2; shift 2 ;;
        --layout) need_arg "$@"; LAYOUT=$2; shift 2 ;;
        --wiring) need_arg "$@"; WIRING=$2; shift 2 ;;
        --dynamic-arp) STATIC_NEIGH=0; shift ;;
        --rss-slack-kib) need_arg "$@"; need_int "$1" "$2"; RSS_SLACK_KIB=$2; shift 2 ;;
        --max-time) need_arg "$@"; need_int "$1" "$2"; MAX_TIME=$2; shift 2 ;;
        --out) need_arg "$@"; OUT=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --build) BUILD=1; shift ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
[[ $LAYOUT == wide || $LAYOUT == classic ]] || { echo "--layout must be wide or classic" >&2; exit 2; }
[[ $WIRING == ip || $WIRING == attach ]] || { echo "--wiring must be ip or attach" >&2; exit 2; }
((VMS >= 2 && VMS <= 4000)) || { echo "--vms must be 2..4000" >&2; exit 2; }
((CONTAINERS >= 1)) || { echo "--containers must be at least 1" >&2; exit 2; }
maxc=$([[ $LAYOUT == classic ]] && echo 253 || echo 4093)
((CONTAINERS + FRESH <= maxc)) || { echo "--containers + --fresh must be at most $maxc for layout $LAYOUT" >&2; exit 2; }
((PARALLEL >= 1 && JOBS >= 1)) || { echo "--parallel and --jobs must be at least 1" >&2; exit 2; }
((MAX_TIME >= 60)) || { echo "--max-time must be at least 60" >&2; exit 2; }
[[ -n $SEED ]] || SEED=$((RANDOM * 32768 + RANDOM))
TS=$(date +%Y%m%d-%H%M%S)
[[ -n $OUT ]] || OUT="$ROOT/bench-results/scale-$TS.json"
if [[ $EUID -ne 0 ]]; then
    echo "scale.sh creates network namespaces and TUN devices: run it as root (sudo $0)." >&2
    exit 1
fi
for t in ip ping nsenter; do
    command -v "$t" >/dev/null || { echo "missing tool: $t (apt-get install -y iproute2 iputils-ping util-linux)" >&2; exit 1; }
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
# a recognisable prefix of our own (mf_init picked a free random suffix)
MF_PREFIX="mfscale${MF_RUN_DIR##*.}"; MF_PREFIX=${MF_PREFIX,,}
compgen -G "/run/netns/${MF_PREFIX}-*" >/dev/null && { echo "namespace prefix $MF_PREFIX in use" >&2; exit 1; }
RUN=$MF_RUN_DIR
((KEEP)) && MF_KEEP=1
MF_LAYOUT_ARGS=(--layout "$LAYOUT")
# A copy of the binary: a concurrent `cargo build` cannot swap it mid-run.
cp "$MESHFWD_SRC" "$RUN/meshfwd" || exit 1
MESHFWD="$RUN/meshfwd"

exec {ERR_FD}>&2
WATCHDOG_PID=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
scale_cleanup() {
    local rc=$? t0=$EPOCHREALTIME f ns p n
    trap - EXIT
    # a second Ctrl-C must not cut the teardown short
    trap '' INT TERM HUP
    n=$(compgen -G "/run/netns/${MF_PREFIX}-*" | wc -l)
    echo "cleaning up: $n namespaces (${MF_PREFIX}-*) and the processes this run started ..." >&"$ERR_FD"
    _mf_cleanup # recorded PIDs (meshfwd, pingers, set-up jobs, watchdog), then the namespaces
    # a set-up job interrupted half-way may have left a namespace nobody recorded:
    # sweep everything with this run's own prefix
    for f in /run/netns/"$MF_PREFIX"-*; do
        [[ -e $f ]] || continue
        ns=${f##*/}
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
        rm -rf "/etc/netns/$ns"
    done
    rmdir /etc/netns 2>/dev/null
    n=$(compgen -G "/run/netns/${MF_PREFIX}-*" | wc -l)
    printf 'cleanup done in %.1f s (%d namespaces left)\n' "$(bc_sub "$EPOCHREALTIME" "$t0")" "$n" >&"$ERR_FD"
    ((rc == 0)) || echo "scale.sh: exit $rc" >&"$ERR_FD"
    exit "$rc"
}
trap scale_cleanup EXIT

bc_sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", a - b }'; }
PHASES="$RUN/phases.txt"
: >"$PHASES"
phase_t0=0
phase_begin() { phase_t0=$EPOCHREALTIME; printf '\n== %s\n' "$1"; }
phase_end() { # NAME
    local d; d=$(bc_sub "$EPOCHREALTIME" "$phase_t0")
    echo "$1 $d" >>"$PHASES"
    printf '   (%s: %.1f s)\n' "$1" "$d"
}
die() { echo "scale.sh: $*" >&2; exit 1; }

# Hard bound: the watchdog TERMs this shell, whose trap tears everything down.
(
    trap 'kill "$s" 2>/dev/null; exit 0' TERM
    sleep "$MAX_TIME" & s=$!
    wait "$s" && { echo "scale.sh: --max-time ${MAX_TIME}s reached, stopping" >&2; kill -TERM $$; }
) &
WATCHDOG_PID=$!
MF_PIDS+=("$WATCHDOG_PID"); MF_PIDNAME[$WATCHDOG_PID]=watchdog

# --------------------------------------------------------------- plan --
# VM i (0-based) -> 192.168.X.Y: X walks all of 1..254 (67 is prime to 254),
# Y varies too; distinct for up to 254 x 251 VMs, never .0/.255.
vm_underlay() { local i=$1; echo "192.168.$((1 + (i * 67) % 254)).$((2 + (i * 29) % 251))"; }

NSPACES=$((1 + VMS * (1 + CONTAINERS) + FRESH))
# rough costs measured on the 2-core machine: ~0.12 s per VM, ~0.05 s per container
# namespace (split over up to 2 jobs), 0.08 s per meshfwd start, ~2 ms per ping
# (16 in flight), 0.5 s per fresh container, 10 ms per namespace at teardown
EST=$(awk -v v="$VMS" -v c="$((VMS * CONTAINERS))" -v j="$JOBS" -v p="$PAIRS" -v f="$FRESH" -v n="$NSPACES" \
    'BEGIN { printf "%d", 5 + v * 0.12 + c * 0.05 / (j > 2 ? 2 : j) + v * 0.08 + v * 0.02 + (p + 2 * v) * 0.002 + f * 0.5 + n * 0.01 }')
echo "meshfwd scale test: $VMS VMs x $CONTAINERS containers ($NSPACES namespaces, prefix ${MF_PREFIX}-), layout $LAYOUT,"
echo "  meshfwd --threads 1 --no-pin per VM; $PAIRS random pairs ($PARALLEL pings in flight) + fan-out; $FRESH fresh containers"
if ((!STATIC_NEIGH)); then NEIGH_DESC="dynamic ARP"
elif [[ $WIRING == ip ]]; then NEIGH_DESC="permanent for the underlay and the initial containers"
else NEIGH_DESC="permanent for the underlay"; fi
echo "  wiring: $WIRING; neighbour entries: $NEIGH_DESC; seed $SEED; run dir $RUN"
printf '  estimated run time: about %d min %02d s (hard limit %d s)\n' $((EST / 60)) $((EST % 60)) "$MAX_TIME"

# --------------------------------------------------------------- set-up --
# wire_container VM NAME N [STATIC] — namespace NAME (created here) as container #N
# of VM.  ip: veth (VM side cN, container side eth0, MTU = TUN_MTU), the /32
# address, a route to the VM overlay address and a default route via it (onlink)
# in the container; the VM side up with a /32 route `src <VM overlay>` — one
# `ip -batch` per side.  attach: `meshfwd attach` inside the VM namespace does the
# same (with --mtu TUN_MTU: the TUN may not exist yet).  STATIC=1 (ip wiring only): fixed MACs and a permanent neighbour entry on
# both ends (see "Neighbour entries" above).
veth_mac() { # SIDE(0 VM, 1 container) VM N
    local v=${2#vm}
    printf '02:%02x:%02x:%02x:%02x:%02x\n' "$1" $((v >> 8)) $((v & 255)) $(($3 >> 8)) $(($3 & 255))
}
wire_container() {
    local vm=$1 c=$2 n=$3 static=${4:-0} addr=${MF_OVL[$2]} vovl=${MF_OVL[$1]} ns cns mtu=$TUN_MTU
    local vmac="" cmac="" vneigh="" cneigh=""
    mf_netns_add "$c" || return 1
    ns=$(mf_ns "$vm"); cns=$(mf_ns "$c")
    if [[ $WIRING == attach ]]; then
        ip netns exec "$ns" "$MESHFWD" attach "$cns" --container "$n" --mtu "$mtu" "${MF_LAYOUT_ARGS[@]}" >/dev/null || return 1
        return 0
    fi
    if ((static)); then
        vmac=$(veth_mac 0 "$vm" "$n"); cmac=$(veth_mac 1 "$vm" "$n")
        cneigh="neigh replace $vovl lladdr $vmac dev eth0 nud permanent"
        vneigh="neigh replace $addr lladdr $cmac dev c$n nud permanent"
        vmac="address $vmac" cmac="address $cmac"
    fi
    # shellcheck disable=SC2086  # $vmac/$cmac: empty, or "address MAC"
    ip -n "$ns" link add "c$n" $vmac mtu "$mtu" type veth peer name eth0 $cmac mtu "$mtu" netns "$cns" || return 1
    ip -n "$cns" -batch - <<EOF || return 1
addr add $addr/32 dev eth0
link set eth0 up
route add $vovl/32 dev eth0
route add default via $vovl dev eth0 onlink
$cneigh
EOF
    ip -n "$ns" -batch - <<EOF || return 1
link set c$n up
route add $addr/32 dev c$n src $vovl
$vneigh
EOF
}

# register_containers VM:N... — addresses (meshfwd addr --json, one helper call)
# and bookkeeping, in this (parent) shell; the namespace names are recorded up
# front so that cleanup finds them even if the job creating one is interrupted.
register_containers() {
    local x vm n c addr out
    out=$(for x in "$@"; do echo "${x%%:*}c${x##*:} ${MF_UL[${x%%:*}]} ${x##*:}"; done |
        "$MF_PY" "$REPORT" addrs --meshfwd "$MESHFWD" --layout "$LAYOUT") || return 1
    for x in "$@"; do
        vm=${x%%:*} n=${x##*:} c="${x%%:*}c${x##*:}"
        addr=$(awk -v c="$c" '$1 == c { print $2 }' <<<"$out")
        [[ -n $addr ]] || return 1
        MF_CONTAINERS+=("$c"); MF_OVL[$c]=$addr; MF_VM_OF[$c]=$vm
        MF_NETNS+=("$(mf_ns "$c")")
    done
}

phase_begin "set-up: underlay bridge, $VMS VMs, $((VMS * CONTAINERS)) containers ($JOBS jobs)"
for ((i = 0; i < VMS; i++)); do
    mf_vm_add "vm$((i + 1))" "$(vm_underlay "$i")" || die "could not create VM vm$((i + 1))"
done
if ((STATIC_NEIGH)); then
    # every VM: a permanent neighbour entry for every other VM's underlay address
    declare -A UL_MAC=()
    for vm in "${MF_VMS[@]}"; do
        read -r _ _ mac _ < <(ip -br -n "$(mf_ns "$vm")" link show dev eth0)
        [[ -n ${mac:-} ]] || die "no eth0 MAC in $vm"
        UL_MAC[$vm]=$mac
    done
    for vm in "${MF_VMS[@]}"; do
        for peer in "${MF_VMS[@]}"; do
            [[ $peer == "$vm" ]] || echo "neigh replace ${MF_UL[$peer]} lladdr ${UL_MAC[$peer]} dev eth0 nud permanent"
        done | ip -n "$(mf_ns "$vm")" -batch - || die "neighbour entries in $vm"
    done
    echo "   $((VMS * (VMS - 1))) permanent underlay neighbour entries"
fi
specs=()
for vm in "${MF_VMS[@]}"; do for ((j = 1; j <= CONTAINERS; j++)); do specs+=("$vm:$j"); done; done
register_containers "${specs[@]}" || die "meshfwd addr failed"
# The veths get the TUN's MTU. meshfwd derives it from the underlay MTU and its
# encapsulation (MF_ENCAP, GRE options); rather than repeating that arithmetic
# here, a short run of meshfwd in vm1 (the options of the real runs) says it.
mf_start vm1 --threads 1 --no-pin || die "meshfwd did not start in vm1 (log $(mf_meshfwd_log vm1))"
TUN_MTU=$(mf_tun_mtu vm1)
mf_stop vm1
[[ $TUN_MTU =~ ^[0-9]+$ ]] || die "no tun0 MTU from meshfwd in vm1"
printf '   %d VMs up after %.1f s, e.g. vm1 %s, vm2 %s, vm%d %s; TUN MTU %s\n' "$VMS" "$(bc_sub "$EPOCHREALTIME" "$phase_t0")" \
    "${MF_UL[vm1]}" "${MF_UL[vm2]}" "$VMS" "${MF_UL[vm$VMS]}" "$TUN_MTU"
# containers: one background job per VM, at most $JOBS at a time
declare -A JOB_VM=()
setup_failed=0
reap_one() {
    local pid rc
    wait -n -p pid "${!JOB_VM[@]}"; rc=$?
    [[ -n ${pid:-} ]] || return 0
    _mf_forget_pid "$pid"
    if ((rc != 0)); then
        setup_failed=1
        echo "   set-up of ${JOB_VM[$pid]}'s containers failed (log $RUN/setup-${JOB_VM[$pid]}.log):" >&2
        sed 's/^/     /' "$RUN/setup-${JOB_VM[$pid]}.log" >&2
    fi
    unset 'JOB_VM[$pid]'
}
for vm in "${MF_VMS[@]}"; do
    while ((${#JOB_VM[@]} >= JOBS)); do reap_one; done
    ((setup_failed)) && break
    (
        for ((j = 1; j <= CONTAINERS; j++)); do
            wire_container "$vm" "${vm}c$j" "$j" "$STATIC_NEIGH" || { echo "wiring ${vm}c$j failed" >&2; exit 1; }
        done
    ) >"$RUN/setup-$vm.log" 2>&1 &
    JOB_VM[$!]=$vm
    MF_PIDS+=("$!") # lib.sh stops these at cleanup
    # shellcheck disable=SC2034  # read by lib.sh
    MF_PIDNAME[$!]="setup-$vm"
done
while ((${#JOB_VM[@]})); do reap_one; done
((setup_failed)) && die "set-up failed"
n_ns=$(compgen -G "/run/netns/${MF_PREFIX}-*" | wc -l)
echo "   $n_ns namespaces"
phase_end setup

# the containers file for the helper: NAME VM NETNS ADDRESS
CFILE="$RUN/containers.txt"
for c in "${MF_CONTAINERS[@]}"; do echo "$c ${MF_VM_OF[$c]} $(mf_ns "$c") ${MF_OVL[$c]}"; done >"$CFILE"

# ----------------------------------------------------------- processes --
# proc_sample LABEL PID -> "LABEL PID rss_kib fds threads" ("dead" if gone).  fds:
# the least of 3 counts 20 ms apart (the stats file is rewritten every second
# through a temporary file, which can show up as one transient fd).
proc_sample() {
    local k v rss=0 thr=0 fds=999999 n i
    _mf_alive "$2" || { echo "$1 $2 dead dead dead"; return; }
    while read -r k v _; do
        case $k in VmRSS:) rss=$v ;; Threads:) thr=$v ;; esac
    done <"/proc/$2/status"
    for i in 1 2 3; do
        n=$(find "/proc/$2/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
        ((n < fds)) && fds=$n
        ((i < 3)) && sleep 0.02
    done
    echo "$1 $2 $rss $fds $thr"
}
start_meshfwd() { # VM
    mf_start "$1" --threads 1 --no-pin || die "meshfwd did not start in $1 (log $(mf_meshfwd_log "$1"))"
}

phase_begin "2-VM mesh: meshfwd in vm1 and vm2 only"
start_meshfwd vm1
start_meshfwd vm2
"$MF_PY" "$REPORT" pairs --containers "$CFILE" --only-vms vm1,vm2 --out "$RUN/pairs-small.txt" || die "pair list"
"$MF_PY" "$REPORT" ping --pairs "$RUN/pairs-small.txt" --parallel "$PARALLEL" --out "$RUN/result-small.txt" || die "ping runner"
sleep 1.1 # let the stats files catch up
for vm in vm1 vm2; do proc_sample "$vm" "${MF_MESHFWD_PID[$vm]}"; done >"$RUN/rss-small.txt"
mkdir -p "$RUN/snap-small" && cp "$RUN"/vm1.stats.json "$RUN"/vm2.stats.json "$RUN/snap-small/"
awk '{ printf "   %s: RSS %d KiB, %d fds, %d threads\n", $1, $3, $4, $5 }' "$RUN/rss-small.txt"
phase_end small_mesh

phase_begin "starting meshfwd in the other $((VMS - 2)) VMs"
for vm in "${MF_VMS[@]:2}"; do start_meshfwd "$vm"; done
echo "   $(( ${#MF_MESHFWD_PID[@]} )) meshfwd processes running"
phase_end start

phase_begin "pair check: $PAIRS random pairs across VMs + fan-out (vm1 -> every VM, every VM -> vm2)"
"$MF_PY" "$REPORT" pairs --containers "$CFILE" --count "$PAIRS" --seed "$SEED" --fanout vm1,vm2 \
    --out "$RUN/pairs.txt" || die "pair list"
"$MF_PY" "$REPORT" ping --pairs "$RUN/pairs.txt" --parallel "$PARALLEL" --out "$RUN/result-pairs.txt" || die "ping runner"
phase_end pairs

phase_begin "RSS, fds and threads of every meshfwd; counters of all workers"
sleep 1.1
for vm in "${MF_VMS[@]}"; do proc_sample "$vm" "${MF_MESHFWD_PID[$vm]}"; done >"$RUN/rss-full.txt"
mkdir -p "$RUN/snap-pairs" && cp "$RUN"/vm*.stats.json "$RUN/snap-pairs/"
phase_end measure

# ------------------------------------------------------- time to first ping --
phase_begin "time to first ping: $FRESH fresh containers on random VMs, pinged every 50 ms from a remote VM"
: >"$RUN/ttfp.txt"
RANDOM=$SEED
declare -A NEXT_N=()
for ((k = 1; k <= FRESH; k++)); do
    vm=${MF_VMS[RANDOM % VMS]}
    n=${NEXT_N[$vm]:-$((CONTAINERS + 1))}; NEXT_N[$vm]=$((n + 1))
    c="${vm}c$n"
    # the source: an initial container on another VM
    while :; do src=${MF_CONTAINERS[RANDOM % (VMS * CONTAINERS)]}; [[ ${MF_VM_OF[$src]} != "$vm" ]] && break; done
    register_containers "$vm:$n" || die "meshfwd addr failed"
    addr=${MF_OVL[$c]}
    t0=$EPOCHREALTIME
    mf_bg "ttfp-$k" "$src" ping -n -D -c 1 -w 20 -i 0.05 "$addr"
    pinger=$MF_LAST_PID
    wire_container "$vm" "$c" "$n" || die "wiring $c failed"
    t1=$EPOCHREALTIME
    mf_reap "$pinger" 25; rc=$MF_RC
    tr=$(sed -n 's/^\[\([0-9.]*\)\] .* bytes from .*/\1/p' "$RUN/ttfp-$k.log" | head -1)
    seq=$(sed -n 's/^\[[0-9.]*\] .* bytes from .*icmp_seq=\([0-9]*\).*/\1/p' "$RUN/ttfp-$k.log" | head -1)
    echo "$c $vm $addr $src ${MF_VM_OF[$src]} $t0 $t1 ${tr:--} ${seq:--} $rc" >>"$RUN/ttfp.txt"
    if [[ -n $tr ]]; then
        printf '   %-10s %-15s on %-5s from %-8s: wired in %6.1f ms, first reply after %6.1f ms (icmp_seq %s)\n' \
            "$c" "$addr" "$vm" "$src" "$(awk -v a="$t1" -v b="$t0" 'BEGIN{print (a-b)*1000}')" \
            "$(awk -v a="$tr" -v b="$t0" 'BEGIN{print (a-b)*1000}')" "$seq"
    else
        printf '   %-10s %-15s on %-5s from %-8s: NO reply within 20 s (ping exit %s)\n' "$c" "$addr" "$vm" "$src" "$rc"
    fi
done
phase_end ttfp

sleep 1.1
mkdir -p "$RUN/snap-end" && cp "$RUN"/vm*.stats.json "$RUN/snap-end/"
for vm in "${MF_VMS[@]}"; do proc_sample "$vm" "${MF_MESHFWD_PID[$vm]}"; done >"$RUN/rss-end.txt"

# ------------------------------------------------------------- summary --
printf '\n== summary\n'
"$MF_PY" "$REPORT" report --run "$RUN" --out "$OUT" --rss-slack-kib "$RSS_SLACK_KIB" \
    --meta "vms=$VMS" "containers=$CONTAINERS" "pairs=$PAIRS" "fresh=$FRESH" "parallel=$PARALLEL" \
    "jobs=$JOBS" "seed=$SEED" "layout=$LAYOUT" "wiring=$WIRING" "static_neighbours=$STATIC_NEIGH" "prefix=$MF_PREFIX" "args=$ARGS_STR" \
    "meshfwd=$MESHFWD_SRC" "estimate_s=$EST" "max_time_s=$MAX_TIME" "timestamp=$TS"
rc=$?
echo "JSON summary: $OUT"
exit "$rc"
