#!/usr/bin/env bash
# scripts/demo.sh — see meshfwd forward between "containers" on three "VMs".
#
#   sudo scripts/demo.sh                    # wide layout (240.0.0.0/4 over 192.168.0.0/16)
#   sudo scripts/demo.sh --layout classic   # 10.0.0.0/8 over 192.168.0.0/16
#   sudo scripts/demo.sh --no-build         # use the existing target/release/meshfwd
#
# Everything happens inside network namespaces created for this run (names
# start with mf<random>-); nothing is configured in your root namespace, and the
# namespaces, processes and /etc/netns entries are removed when the demo ends,
# also on Ctrl-C or error.

set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

LAYOUT=wide
BUILD=1
IPERF_SECONDS=5
usage() { sed -n '2,11s/^# \{0,1\}//p' "$0"; }
while (($#)); do
    case $1 in
        --layout) LAYOUT=${2:?--layout needs wide or classic}; shift 2 ;;
        --layout=*) LAYOUT=${1#*=}; shift ;;
        classic | wide) LAYOUT=$1; shift ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
[[ $LAYOUT == wide || $LAYOUT == classic ]] || { echo "layout must be wide or classic" >&2; exit 2; }

bold() { if [[ -t 1 ]]; then printf '\033[1m%s\033[0m\n' "$*"; else printf '%s\n' "$*"; fi; }
step() { echo; bold "== $*"; }

if [[ $EUID -ne 0 ]]; then
    echo "The demo creates network namespaces and TUN devices: run it as root (sudo $0)." >&2
    exit 1
fi

step "Checking tools"
need=()
for p in iproute2:ip iperf3:iperf3 iputils-ping:ping; do
    command -v "${p#*:}" >/dev/null || need+=("${p%%:*}")
done
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "ip, ping, iperf3, python3: present"

if ((BUILD)); then
    step "Building meshfwd (cargo build --release)"
    [[ -d $HOME/.cargo/bin ]] && PATH="$HOME/.cargo/bin:$PATH"
    command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
    cargo build --release --quiet
fi
export MESHFWD=${MESHFWD:-$ROOT/target/release/meshfwd}
[[ -x $MESHFWD ]] || { echo "no meshfwd binary at $MESHFWD" >&2; exit 1; }

# shellcheck source=tests/netns/lib.sh
source "$ROOT/tests/netns/lib.sh"
set +e # lib.sh functions report errors through their return codes
mf_init "" || exit 1
trap 'echo; echo "cleaning up ..."; _mf_cleanup; echo "done: namespaces, processes and /etc/netns entries removed"' EXIT

die() { echo "demo failed: $*" >&2; exit 1; }

step "Building the mesh: 3 VMs x 2 containers, layout $LAYOUT (namespaces ${MF_PREFIX}-*)"
mf_mesh --layout "$LAYOUT" --containers 2 || die "could not build the namespaces"
mf_describe
if [[ $LAYOUT == classic ]]; then
    echo "  note: the classic overlay is 10.0.0.0/8; every namespace has its own resolv.conf so"
    echo "        DNS never leaks into it (watch for resolvers/routes in 10/8 on real VMs)."
fi

step "Starting meshfwd tun0 --layout $LAYOUT in every VM"
for vm in "${MF_VMS[@]}"; do
    mf_start "$vm" || die "meshfwd did not start in $vm (log: $(mf_meshfwd_log "$vm"))"
    printf '  %s: pid %s, %s\n' "$vm" "${MF_MESHFWD_PID[$vm]}" \
        "$(mf_exec "$vm" ip -o -4 addr show dev tun0 | awk '{print "tun0 " $4}') mtu $(mf_exec "$vm" cat /sys/class/net/tun0/mtu)"
done

step "All-pairs ping between containers (3 echo requests each)"
matrix="$MF_RUN_DIR/matrix.txt"
mf_ping_matrix "$matrix" 3
mf_print_matrix "$matrix"
okpairs=$(awk '{split($3,a,"/"); if (a[1]==a[2] && a[1]>0) n++} END {print n+0}' "$matrix")
total=$(wc -l <"$matrix")
echo "  $okpairs of $total pairs answered every ping"

step "VM host to a container on another VM"
echo "  vm1 (${MF_OVL[vm1]}) -> vm3c1 (${MF_OVL[vm3c1]}): $(mf_ping vm1 "${MF_OVL[vm3c1]}" 3) replies"

step "iperf3 TCP, ${IPERF_SECONDS} s, cubic: vm1c1 (${MF_OVL[vm1c1]}) -> vm2c1 (${MF_OVL[vm2c1]})"
mf_bg iperf3-server vm2c1 iperf3 -s -1 -B "${MF_OVL[vm2c1]}"
srv=$MF_LAST_PID
sleep 0.5
if mf_exec vm1c1 timeout $((IPERF_SECONDS + 20)) iperf3 -c "${MF_OVL[vm2c1]}" -t "$IPERF_SECONDS" -C cubic -f m \
    >"$MF_RUN_DIR/iperf3-client.log" 2>&1; then
    grep -E '^\[ *[0-9]+\].*(sender|receiver)' "$MF_RUN_DIR/iperf3-client.log" | sed 's/^/  /'
else
    echo "  iperf3 failed:"; sed 's/^/    /' "$MF_RUN_DIR/iperf3-client.log"
fi
mf_reap "$srv" 5 || true

step "meshfwd counters"
sleep 1.1 # stats files are rewritten every second
for vm in "${MF_VMS[@]}"; do
    echo "$vm (${MF_UL[$vm]}):"
    mf_dump_stats "$vm"
done

step "Stopping meshfwd (SIGTERM)"
for vm in "${MF_VMS[@]}"; do
    mf_stop "$vm"
    echo "  $vm: exit code $MF_RC"
done

if [[ $okpairs -ne $total ]]; then
    echo; echo "Some pairs did not answer: see the matrix above."
    exit 1
fi
echo; bold "Demo finished: all $total container pairs reachable through meshfwd ($LAYOUT layout)."
