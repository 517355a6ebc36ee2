# shellcheck shell=bash
# shellcheck disable=SC2034  # globals are read by the sourcing scripts
# tests/netns/lib.sh — build a throw-away meshfwd demo/test mesh out of
# network namespaces, using nothing but `ip` / `ip netns` / sysctl.
#
#   source tests/netns/lib.sh
#   mf_init                                   # run dir, name prefix, cleanup traps
#   mf_mesh --layout wide --containers 2      # 3 VMs (default underlay addresses)
#   mf_start_all                              # meshfwd tun0 in every VM
#   mf_exec vm1c1 ping -c1 "$(mf_ovl vm2c1)"
#
# Topology (every name below gets the per-run prefix, e.g. mfk3j9x2-vm1):
#
#   ul            underlay namespace: bridge br0, one port per VM (ports u-vmN)
#   vmN           "VM": eth0 (veth to br0) = underlay address/16, MTU 1500,
#                 ip_forward=1, its overlay address on lo (/32) so that container
#                 routes can name it as `src` before meshfwd runs; meshfwd adds the
#                 same address with the overlay prefix length on tun0.
#   vmNcM         "container" M on VM N, wired by `meshfwd attach` run inside
#                 the VM namespace (mf_attach): eth0 = overlay address/32, route
#                 to the VM overlay address dev eth0, default via it (onlink).
#                 VM side of the veth is mfcM (alias meshfwd:<netns>), with a /32
#                 route `src <VM overlay>` and proxy_arp on.
#
# Nothing is created or configured in the root namespace: interfaces are created
# directly inside their namespaces (`ip -n NS link add ... peer ... netns NS2`).
# Every namespace gets its own /etc/netns/NAME/resolv.conf (the host resolver
# may sit inside the classic overlay 10.0.0.0/8), removed again at cleanup.
#
# Cleanup (EXIT/INT/TERM/HUP trap installed by mf_init) stops only the PIDs this
# run recorded (meshfwd, iperf3, tcpdump, helpers), then any process still left
# inside this run's own namespaces, then deletes the namespaces.
#
# Functions that start or reap processes (mf_start, mf_stop, mf_bg, mf_reap)
# keep state in shell variables: call them directly, never inside $( ).

MF_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MF_REPO=$(cd "$MF_LIB_DIR/../.." && pwd)
MF_TOOLS="$MF_REPO/tests/tools"
: "${MESHFWD:=$MF_REPO/target/release/meshfwd}"
if [[ -z "${MF_PY:-}" ]]; then
    if [[ -x /usr/bin/python3 ]]; then MF_PY=/usr/bin/python3; else MF_PY=python3; fi
fi
: "${MF_UNDERLAY_MTU:=1500}"
: "${MF_START_TIMEOUT:=15}"
MF_DEFAULT_VMS=(192.168.16.32 192.168.16.33 192.168.200.7)

MF_PREFIX=""            # per-run namespace name prefix
MF_RUN_DIR=""           # per-run directory (logs, stats, captures)
MF_NETNS=()             # full names of namespaces created by this run
MF_PIDS=()              # background PIDs started by this shell
declare -A MF_PIDNAME=() # pid -> label
declare -A MF_MESHFWD_PID=() # vm -> pid of its running meshfwd
MF_VMS=()               # logical VM names: vm1 vm2 ...
MF_CONTAINERS=()        # logical container names: vm1c1 ...
declare -A MF_UL=()     # vm -> underlay address
declare -A MF_OVL=()    # vm or container -> overlay address
declare -A MF_VM_OF=()  # container -> vm
MF_LAYOUT_ARGS=()       # layout flags shared by `meshfwd` and `meshfwd addr`
MF_RC=""                # exit code collected by mf_stop / mf_reap
MF_CLEANED=0
MF_KEEP="${MF_KEEP:-0}" # 1: keep the run directory after cleanup (2: silently)

mf_log() { printf '%s\n' "$*" >&2; }
mf_die() { mf_log "error: $*"; return 1; }

# --- run setup / cleanup -----------------------------------------------------

# mf_init [BASE_DIR] — create the run dir and prefix, install cleanup traps.
mf_init() {
    local base=${1:-${MF_BASE_DIR:-/tmp}} suffix tries=0
    [[ $EUID -eq 0 ]] || { mf_die "network namespaces need root"; return 1; }
    while :; do
        MF_RUN_DIR=$(mktemp -d "$base/meshfwd-run.XXXXXX") || return 1
        suffix=${MF_RUN_DIR##*.}
        MF_PREFIX="mf${suffix,,}"
        # a leftover namespace of an older run could carry the same prefix
        if compgen -G "/run/netns/${MF_PREFIX}-*" >/dev/null; then
            rmdir "$MF_RUN_DIR"; ((++tries < 20)) || return 1; continue
        fi
        break
    done
    MF_NETNS=(); MF_PIDS=(); MF_PIDNAME=(); MF_MESHFWD_PID=(); MF_VMS=(); MF_CONTAINERS=()
    MF_UL=(); MF_OVL=(); MF_VM_OF=(); MF_CLEANED=0; MF_UL_READY=
    trap '_mf_cleanup' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
}

_mf_alive() { # pid alive and not a zombie
    local st
    [[ -r /proc/$1/stat ]] || return 1
    st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $st && $st != Z && $st != X ]]
}

_mf_forget_pid() {
    local p keep=()
    for p in "${MF_PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    MF_PIDS=("${keep[@]}")
    unset 'MF_PIDNAME[$1]'
}

# Stop the PIDs recorded in this shell: SIGTERM, wait up to 3 s, then SIGKILL.
mf_kill_pids() {
    local p i
    ((${#MF_PIDS[@]})) || return 0
    for p in "${MF_PIDS[@]}"; do _mf_alive "$p" && kill -TERM "$p" 2>/dev/null; done
    for ((i = 0; i < 30; i++)); do
        local any=0
        for p in "${MF_PIDS[@]}"; do _mf_alive "$p" && any=1; done
        ((any)) || break
        sleep 0.1
    done
    for p in "${MF_PIDS[@]}"; do _mf_alive "$p" && kill -KILL "$p" 2>/dev/null; done
    for p in "${MF_PIDS[@]}"; do { wait "$p"; } 2>/dev/null; done
    MF_PIDS=(); MF_PIDNAME=()
}

_mf_cleanup() {
    local rc=$? ns p
    ((MF_CLEANED)) && return 0
    MF_CLEANED=1
    trap - INT TERM HUP
    mf_kill_pids
    # anything still running inside our own namespaces was started by this run
    for ns in "${MF_NETNS[@]}"; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    done
    for ns in "${MF_NETNS[@]}"; do
        ip netns del "$ns" 2>/dev/null
        rm -rf "/etc/netns/$ns"
    done
    MF_NETNS=()
    rmdir /etc/netns 2>/dev/null
    if [[ -n $MF_RUN_DIR && -d $MF_RUN_DIR ]]; then
        case $MF_KEEP in
            1) mf_log "run directory kept: $MF_RUN_DIR" ;;
            2) ;; # kept, the caller reports it
            *) rm -rf "$MF_RUN_DIR" ;;
        esac
    fi
    return "$rc"
}

# --- namespaces ----------------------------------------------------------------

mf_ns() { printf '%s-%s\n' "$MF_PREFIX" "$1"; }

# mf_netns_add NAME — namespace with lo up, private resolv.conf, no IPv6.
mf_netns_add() {
    local ns; ns=$(mf_ns "$1")
    [[ -n $MF_PREFIX ]] || { mf_die "mf_init not called"; return 1; }
    ip netns add "$ns" || return 1
    MF_NETNS+=("$ns")
    # (retry: a parallel run's cleanup may rmdir an empty /etc/netns at that moment)
    mkdir -p "/etc/netns/$ns" 2>/dev/null || { sleep 0.2; mkdir -p "/etc/netns/$ns"; } || return 1
    printf '# meshfwd test namespace %s: no DNS on purpose\noptions timeout:1 attempts:1\n' \
        "$ns" >"/etc/netns/$ns/resolv.conf"
    ip -n "$ns" link set lo up || return 1
    # IPv6 is not part of the overlay; keep the namespaces quiet.
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
        net.ipv6.conf.default.disable_ipv6=1 >/dev/null
}

# mf_exec NAME CMD... — run CMD in the namespace of vmN / vmNcM / ul.
mf_exec() { local ns; ns=$(mf_ns "$1"); shift; ip netns exec "$ns" "$@"; }

# --- addresses (meshfwd addr is the single source of truth) ----------------------

# mf_addr_json VM_UNDERLAY N — JSON from `meshfwd addr --json --vm .. --container N`
mf_addr_json() { # VM_UNDERLAY N [ADDR_ARGS...]
    "$MESHFWD" addr "${MF_LAYOUT_ARGS[@]}" --json --vm "$1" --container "$2" "${@:3}"
}

_mf_json_get() { "$MF_PY" "$MF_TOOLS/mfjson.py" get "$1"; } # KEY < json

# mf_container_addr VM_UNDERLAY N — overlay address of container #N
mf_container_addr() { mf_addr_json "$1" "$2" | _mf_json_get overlay; }

# mf_vm_addr VM_UNDERLAY — the VM's own overlay address (host part 1 of its block)
mf_vm_addr() {
    mf_addr_json "$1" 1 | "$MF_PY" "$MF_TOOLS/mfjson.py" vm-overlay
}

mf_ovl() { printf '%s\n' "${MF_OVL[$1]}"; }
mf_ul() { printf '%s\n' "${MF_UL[$1]}"; }

# --- building the mesh -------------------------------------------------------------

_mf_underlay() {
    [[ -n ${MF_UL_READY:-} ]] && return 0
    mf_netns_add ul || return 1
    local ns; ns=$(mf_ns ul)
    ip -n "$ns" link add br0 type bridge stp_state 0 forward_delay 0 || return 1
    ip -n "$ns" link set br0 mtu "$MF_UNDERLAY_MTU" up || return 1
    MF_UL_READY=1
}

# mf_vm_add NAME UNDERLAY_ADDR
mf_vm_add() {
    local vm=$1 ul=$2 ns ulns ovl
    _mf_underlay || return 1
    ovl=$(mf_vm_addr "$ul") || { mf_die "meshfwd addr failed for VM $ul"; return 1; }
    mf_netns_add "$vm" || return 1
    ns=$(mf_ns "$vm"); ulns=$(mf_ns ul)
    ip -n "$ns" link add eth0 mtu "$MF_UNDERLAY_MTU" type veth \
        peer name "u-$vm" mtu "$MF_UNDERLAY_MTU" netns "$ulns" || return 1
    ip -n "$ulns" link set "u-$vm" master br0 up || return 1
    ip -n "$ns" addr add "$ul/16" dev eth0 || return 1
    ip -n "$ns" link set eth0 up || return 1
    ip -n "$ns" addr add "$ovl/32" dev lo || return 1
    # ip_forward for the containers; rp_filter off so that GRE from an outer
    # source outside the underlay reaches meshfwd (outer_src_not_underlay test).
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
        net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.eth0.rp_filter=0 >/dev/null || return 1
    MF_VMS+=("$vm"); MF_UL[$vm]=$ul; MF_OVL[$vm]=$ovl
}

# mf_bare_vm NAME UNDERLAY_ADDR — a bare "VM" (for attach/CNI tests): the
# underlay address on eth0 (a port of the underlay bridge), lo up, forwarding
# on, but no overlay address anywhere and no meshfwd; not one of MF_VMS.
mf_bare_vm() {
    local vm=$1 ul=$2 ns ulns
    _mf_underlay || return 1
    mf_netns_add "$vm" || return 1
    ns=$(mf_ns "$vm"); ulns=$(mf_ns ul)
    ip -n "$ns" link add eth0 type veth peer name "u-$vm" netns "$ulns" || { mf_die "veth $vm"; return 1; }
    ip -n "$ulns" link set "u-$vm" master br0 up || { mf_die "bridge port u-$vm"; return 1; }
    ip -n "$ns" addr add "$ul/16" dev eth0 || { mf_die "eth0 address in $vm"; return 1; }
    ip -n "$ns" link set eth0 up || { mf_die "eth0 up in $vm"; return 1; }
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1 >/dev/null
}

# mf_container_add VM N — container #N (overlay host part N+1) on VM: a fresh
# namespace vmNcN, wired by `meshfwd attach` (see mf_attach).
mf_container_add() {
    mf_netns_add "$1c$2" || return 1
    mf_attach "$1" "$1c$2" "$2"
}

# mf_attach VM NAME N [ATTACH_ARGS...] — `meshfwd attach` the namespace NAME
# (from mf_netns_add) as container #N of VM, from inside the VM namespace; the
# address comes from its --json output. Records NAME as a container of VM.
mf_attach() {
    local vm=$1 c=$2 n=$3 out addr; shift 3
    out=$(mf_exec "$vm" "$MESHFWD" attach "$(mf_ns "$c")" --container "$n" \
        "${MF_LAYOUT_ARGS[@]}" --json "$@") || { mf_die "meshfwd attach $c to $vm as #$n failed"; return 1; }
    addr=$(_mf_json_get address <<<"$out") || { mf_die "meshfwd attach: bad JSON: $out"; return 1; }
    MF_CONTAINERS+=("$c"); MF_OVL[$c]=$addr; MF_VM_OF[$c]=$vm
}

# mf_detach NAME — `meshfwd detach` container NAME from its VM and forget it
# (its namespace stays; it is deleted at cleanup).
mf_detach() {
    local c=$1 vm=${MF_VM_OF[$1]:-} x keep=()
    [[ -n $vm ]] || { mf_die "$c is not an attached container"; return 1; }
    mf_exec "$vm" "$MESHFWD" detach "$(mf_ns "$c")" >/dev/null || { mf_die "meshfwd detach $c failed"; return 1; }
    for x in "${MF_CONTAINERS[@]}"; do [[ $x == "$c" ]] || keep+=("$x"); done
    MF_CONTAINERS=("${keep[@]}")
    unset 'MF_OVL[$c]' 'MF_VM_OF[$c]'
}

# mf_mesh [--layout wide|classic] [--containers N] [UNDERLAY_ADDR...]
#   VMs are named vm1, vm2, ... in the order of the addresses given
#   (default 192.168.16.32 192.168.16.33 192.168.200.7).
mf_mesh() {
    local containers=2 vms=() i j
    MF_LAYOUT_ARGS=()
    while (($#)); do
        case $1 in
            --layout) MF_LAYOUT_ARGS=(--layout "$2"); shift 2 ;;
            --containers) containers=$2; shift 2 ;;
            *) vms+=("$1"); shift ;;
        esac
    done
    ((${#vms[@]})) || vms=("${MF_DEFAULT_VMS[@]}")
    [[ -x $MESHFWD ]] || { mf_die "meshfwd binary not found at $MESHFWD (cargo build --release)"; return 1; }
    for i in "${!vms[@]}"; do
        mf_vm_add "vm$((i + 1))" "${vms[$i]}" || return 1
        for ((j = 1; j <= containers; j++)); do
            mf_container_add "vm$((i + 1))" "$j" || return 1
        done
    done
}

# mf_snap NAME — links, addresses and routes (all tables) of a namespace, one
# line each, to compare before and after a round trip
mf_snap() {
    local ns; ns=$(mf_ns "$1")
    ip -n "$ns" -o link show | sed 's/\\.*//'
    ip -n "$ns" -o addr show
    ip -n "$ns" route show table all
}

# mf_describe — one line per VM/container
mf_describe() {
    local vm c
    for vm in "${MF_VMS[@]}"; do
        printf '  %-6s underlay %-15s overlay %-15s netns %s\n' "$vm" "${MF_UL[$vm]}" "${MF_OVL[$vm]}" "$(mf_ns "$vm")"
        for c in "${MF_CONTAINERS[@]}"; do
            [[ ${MF_VM_OF[$c]} == "$vm" ]] || continue
            printf '    %-8s overlay %-15s netns %s\n' "$c" "${MF_OVL[$c]}" "$(mf_ns "$c")"
        done
    done
}

# --- processes -------------------------------------------------------------------

# Background jobs of a non-interactive bash start with SIGINT/SIGQUIT ignored;
# restore the default disposition so meshfwd and friends see SIGINT like they
# would under a terminal or a service manager (env execs: the PID stays the same).
if env --default-signal=INT true 2>/dev/null; then _MF_ENV_DFL=1; else _MF_ENV_DFL=0; fi
_mf_dfl() {
    if ((_MF_ENV_DFL)); then exec env --default-signal=INT,QUIT "$@"; else exec "$@"; fi
}

# mf_bg LABEL NAME CMD... — start CMD in namespace NAME in the background,
# stdout+stderr to $MF_RUN_DIR/LABEL.log, PID recorded (MF_LAST_PID).
mf_bg() {
    local label=$1 name=$2; shift 2
    _mf_dfl ip netns exec "$(mf_ns "$name")" "$@" >"$MF_RUN_DIR/$label.log" 2>&1 &
    MF_LAST_PID=$!
    MF_PIDS+=("$MF_LAST_PID"); MF_PIDNAME[$MF_LAST_PID]=$label
}

# mf_reap PID [TIMEOUT_S] — wait for a recorded background PID, exit code in MF_RC
# (124 and the process is killed if it does not finish in time).
mf_reap() {
    local pid=$1 t=${2:-30} i
    for ((i = 0; i < t * 10; i++)); do _mf_alive "$pid" || break; sleep 0.1; done
    if _mf_alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null; { wait "$pid"; } 2>/dev/null; MF_RC=124
    else
        { wait "$pid"; } 2>/dev/null; MF_RC=$?
    fi
    _mf_forget_pid "$pid"
    [[ $MF_RC == 0 ]]
}

mf_stats_file() { printf '%s/%s.stats.json\n' "$MF_RUN_DIR" "$1"; }
mf_meshfwd_log() { printf '%s/%s.meshfwd.log\n' "$MF_RUN_DIR" "$1"; }

# mf_start VM [MESHFWD_ARGS...] — start `meshfwd LAYOUT $MF_ENCAP_ARGS ARGS tun0`
# in VM, wait for its --stats-file to appear (readiness), record its PID.
# MF_ENCAP (gre|udp, default gre) selects the encapsulation of every instance.
mf_start() {
    local vm=$1 stats log pid i; shift
    local encap=(); [[ ${MF_ENCAP:-gre} == gre ]] || encap=(--encap "$MF_ENCAP")
    stats=$(mf_stats_file "$vm"); log=$(mf_meshfwd_log "$vm")
    rm -f "$stats"
    echo "# $(date +%T) meshfwd ${MF_LAYOUT_ARGS[*]} ${encap[*]} --stats-file $stats $* tun0" >>"$log"
    _mf_dfl ip netns exec "$(mf_ns "$vm")" "$MESHFWD" "${MF_LAYOUT_ARGS[@]}" "${encap[@]}" --stats-file "$stats" "$@" tun0 >>"$log" 2>&1 &
    pid=$!
    MF_PIDS+=("$pid"); MF_PIDNAME[$pid]="meshfwd-$vm"; MF_MESHFWD_PID[$vm]=$pid
    for ((i = 0; i < MF_START_TIMEOUT * 20; i++)); do
        [[ -s $stats ]] && break
        if ! _mf_alive "$pid"; then
            mf_reap "$pid" 1
            mf_log "meshfwd in $vm exited early (code $MF_RC); log $log:"
            sed 's/^/    /' "$log" >&2
            unset 'MF_MESHFWD_PID[$vm]'
            return 1
        fi
        sleep 0.05
    done
    if [[ ! -s $stats ]]; then
        mf_log "meshfwd in $vm: no stats file after ${MF_START_TIMEOUT}s; log:"
        sed 's/^/    /' "$log" >&2
        return 1
    fi
}

# mf_start_all [MESHFWD_ARGS...]
mf_start_all() {
    local vm
    for vm in "${MF_VMS[@]}"; do mf_start "$vm" "$@" || return 1; done
}

# mf_stop VM [SIGNAL] [TIMEOUT_S] — signal meshfwd (default TERM), exit code in MF_RC.
mf_stop() {
    local vm=$1 sig=${2:-TERM} t=${3:-10} pid=${MF_MESHFWD_PID[$1]:-}
    [[ -n $pid ]] || { mf_die "no meshfwd running in $vm"; return 1; }
    kill "-$sig" "$pid" 2>/dev/null
    mf_reap "$pid" "$t"
    unset 'MF_MESHFWD_PID[$vm]'
    return 0
}

# mf_wait_exit VM TIMEOUT_S — wait for meshfwd to exit on its own; MF_RC (124 = timeout, killed)
mf_wait_exit() {
    local vm=$1 pid=${MF_MESHFWD_PID[$1]:-}
    [[ -n $pid ]] || { mf_die "no meshfwd running in $vm"; return 1; }
    mf_reap "$pid" "$2"
    unset 'MF_MESHFWD_PID[$vm]'
    return 0
}

# mf_tun_mtu VM — the MTU meshfwd gave tun0 in VM (the encapsulation overhead
# is meshfwd's business: scripts take this number instead of computing it)
mf_tun_mtu() { ip -n "$(mf_ns "$1")" -o link show dev tun0 | sed -n 's/.* mtu \([0-9]*\) .*/\1/p'; }

mf_running() { local pid=${MF_MESHFWD_PID[$1]:-}; [[ -n $pid ]] && _mf_alive "$pid"; }

# mf_stat VM KEY — a counter from the VM's stats file; KEY like tx_packets or
# drops.key_mismatch.  Retries briefly if the file is being rewritten.
mf_stat() {
    local f i; f=$(mf_stats_file "$1")
    for ((i = 0; i < 20; i++)); do
        "$MF_PY" "$MF_TOOLS/mfjson.py" get "$2" "$f" 2>/dev/null && return 0
        sleep 0.05
    done
    mf_log "cannot read $2 from $f"
    return 1
}

# mf_wait_stat VM KEY OP VALUE [TIMEOUT_S] — poll until `counter OP VALUE`
# (OP: -gt -ge -eq ...); prints the last value read.
mf_wait_stat() {
    local vm=$1 key=$2 op=$3 want=$4 t=${5:-5} v i
    for ((i = 0; i <= t * 10; i++)); do
        v=$(mf_stat "$vm" "$key") && test "$v" "$op" "$want" && { echo "$v"; return 0; }
        sleep 0.1
    done
    echo "${v:-?}"
    return 1
}

# mf_dump_stats VM — counters, one per line, non-zero drops/errors only
mf_dump_stats() { "$MF_PY" "$MF_TOOLS/mfjson.py" stats-dump "$(mf_stats_file "$1")"; }

# mf_nonzero VM — the non-zero drops/errors counters, "group.key=value ..."
mf_nonzero() { "$MF_PY" "$MF_TOOLS/mfjson.py" stats-nonzero "$(mf_stats_file "$1")"; }

# --- traffic helpers -----------------------------------------------------------------

# mf_ping FROM TO_ADDR [COUNT] — quiet ping; prints "received/transmitted"
mf_ping() {
    local out
    out=$(mf_exec "$1" ping -n -q -c "${3:-3}" -i 0.2 -W 1 -w $((${3:-3} + 2)) "$2" 2>&1)
    sed -n 's/^\([0-9]*\) packets transmitted, \([0-9]*\) \(packets \)\{0,1\}received.*/\2\/\1/p' <<<"$out"
}

# mf_ping_matrix OUTFILE [COUNT] — every container pings every other container,
# sources in parallel; OUTFILE lines: "SRC DST received/transmitted"
mf_ping_matrix() {
    local out=$1 count=${2:-3} src dst pids=() p
    : >"$out"
    for src in "${MF_CONTAINERS[@]}"; do
        (
            for dst in "${MF_CONTAINERS[@]}"; do
                [[ $src == "$dst" ]] && continue
                echo "$src $dst $(mf_ping "$src" "${MF_OVL[$dst]}" "$count")"
            done >"$MF_RUN_DIR/matrix.$src"
        ) &
        pids+=($!); MF_PIDS+=($!); MF_PIDNAME[$!]="ping-$src"
    done
    for p in "${pids[@]}"; do mf_reap "$p" 60; done
    for src in "${MF_CONTAINERS[@]}"; do cat "$MF_RUN_DIR/matrix.$src" >>"$out"; rm -f "$MF_RUN_DIR/matrix.$src"; done
}

# mf_print_matrix FILE — compact table of a mf_ping_matrix result
mf_print_matrix() { "$MF_PY" "$MF_TOOLS/verdict.py" matrix "$1" "${MF_CONTAINERS[@]}"; }

# mf_tcpdump LABEL NAME IFACE FILTER... — start a capture, wait until it listens
mf_tcpdump() {
    local label=$1 name=$2 ifc=$3 i; shift 3
    mf_bg "$label" "$name" tcpdump -n -U --immediate-mode -i "$ifc" -w "$MF_RUN_DIR/$label.pcap" "$@"
    for ((i = 0; i < 50; i++)); do
        grep -q 'listening on' "$MF_RUN_DIR/$label.log" 2>/dev/null && return 0
        _mf_alive "$MF_LAST_PID" || break
        sleep 0.1
    done
    mf_log "tcpdump $label did not start:"; cat "$MF_RUN_DIR/$label.log" >&2
    return 1
}

# mf_tcpdump_stop PID — SIGINT, so the pcap is flushed and closed cleanly
mf_tcpdump_stop() {
    sleep 0.3
    kill -INT "$1" 2>/dev/null
    mf_reap "$1" 5 || true
}

# mf_ipv6_on NAME — IPv6 back on in a namespace (mf_netns_add turns it off), for
# dual-stack containers; DAD off first, so that no address is still tentative
# when a test takes a snapshot, and wait for a bare VM's eth0 carrier.
mf_ipv6_on() {
    local ns i; ns=$(mf_ns "$1")
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 || return 1
    for i in $(ip -n "$ns" -o link show | awk -F': ' '{print $2}' | sed 's/@.*//'); do
        ip netns exec "$ns" sysctl -qw "net.ipv6.conf.$i.accept_dad=0" || return 1
    done
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0 || return 1
    for i in $(seq 30); do ip -n "$ns" -o link show | grep NO-CARRIER >/dev/null || break; sleep 0.1; done
}
