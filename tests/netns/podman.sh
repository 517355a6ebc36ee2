#!/usr/bin/env bash
# tests/netns/podman.sh — a real container runtime (podman 4.3, CNI backend)
# puts containers on the mesh through meshfwd-cni (root).
#
#   tests/netns/podman.sh
#   MF_PODMAN_BYTES=$((64 << 20)) tests/netns/podman.sh
#
# Two VMs (namespaces), meshfwd running in each, one podman container on each
# started with `--network meshnet` (a conflist whose only plugin is
# meshfwd-cni). Acceptance: the containers ping each other, move a 16 MiB TCP
# stream (busybox nc) whose sha256 matches on both sides, CHECK-style facts
# hold (address inside the VM's block, lease recorded), and `podman rm`
# releases the address (the lease file disappears, the veth is gone).
#
# Everything podman reads or writes is test-owned: CONTAINERS_CONF and
# CONTAINERS_STORAGE_CONF point at files written here, whose network config
# dir, CNI plugin dir (meshfwd-cni + Debian's loopback), storage, run and tmp
# dirs are per-VM directories of the run dir; podman runs inside the VM
# namespace through `nsenter --net=/run/netns/NAME` (every podman command via
# the same wrapper, `pm`). The rootfs is a busybox-static directory built here
# (no registry needed). Podman names the container namespaces itself
# (/run/netns/netns-<uuid>); they go away with `podman rm`, which the EXIT
# trap runs for every container of this run before the namespaces are deleted.
# Prints "ok NAME" / "FAIL NAME (reason)" and "N passed, N failed".

# shellcheck disable=SC2317,SC2034,SC2119,SC2129  # lib.sh reads the globals; logs are appended step by step
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/netns/lib.sh
source "$HERE/lib.sh"
# shellcheck source=tests/netns/runner.sh
source "$HERE/runner.sh"
RN_SUITE=podman
: "${MESHFWD_CNI:=$(dirname "$MESHFWD")/meshfwd-cni}"
: "${MF_PODMAN_BYTES:=$((16 << 20))}"
: "${MF_CNI_LOOPBACK:=/usr/lib/cni/loopback}"

P=""            # test-owned podman tree: $P/bin, $P/rootfs, $P/<vm>/...
PM_VMS=()       # VMs whose podman state needs cleaning
# libcni (inside podman) caches results in /var/lib/cni with no podman knob
# to move it; when this run creates that directory, cleanup removes it again
# (rmdir: only if it is empty).
CNI_CACHE=/var/lib/cni
CNI_CACHE_EXISTED=0; [[ -e $CNI_CACHE ]] && CNI_CACHE_EXISTED=1
# podman's default locations, which the test configuration moves away
SYSTEM_DIRS=(/var/lib/containers /run/containers /run/libpod /var/lib/meshfwd-cni)
PREEXISTING=""; for d in "${SYSTEM_DIRS[@]}"; do [[ -e $d ]] && PREEXISTING+=" $d"; done

# pm VM ARGS... — podman with this VM's configuration, inside its namespace
pm() {
    local vm=$1; shift
    CONTAINERS_CONF="$P/$vm/containers.conf" CONTAINERS_STORAGE_CONF="$P/$vm/storage.conf" \
        nsenter --net="/run/netns/$(mf_ns "$vm")" podman "$@"
}

# podman_setup VM — containers.conf, storage.conf and a meshnet conflist for VM
podman_setup() {
    local vm=$1 d="$P/$1"
    mkdir -p "$d/net.d" "$d/graphroot" "$d/runroot" "$d/tmp" "$d/volumes" "$d/ipam" || return 1
    cat >"$d/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$d/tmp/events.log"
runtime = "runc"
tmp_dir = "$d/tmp"
volume_path = "$d/volumes"

[network]
network_backend = "cni"
cni_plugin_dirs = ["$P/bin"]
network_config_dir = "$d/net.d"
EOF
    cat >"$d/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$d/graphroot"
runroot = "$d/runroot"
EOF
    cat >"$d/net.d/meshnet.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "meshnet",
  "plugins": [
    { "type": "meshfwd-cni", "layout": "wide", "tun": "tun0", "dataDir": "$d/ipam" }
  ]
}
EOF
    PM_VMS+=("$vm")
}

# busybox root filesystem: the static binary plus one symlink per applet
build_rootfs() {
    local r="$P/rootfs" a
    mkdir -p "$r/bin" "$r/etc" "$r/proc" "$r/sys" "$r/dev" "$r/tmp" "$r/out" "$r/run" || return 1
    cp /bin/busybox "$r/bin/busybox" || return 1
    for a in $("$r/bin/busybox" --list); do [[ -e $r/bin/$a ]] || ln -s busybox "$r/bin/$a"; done
    printf 'root:x:0:0:root:/:/bin/sh\n' >"$r/etc/passwd"
    printf 'root:x:0:\n' >"$r/etc/group"
}

podman_cleanup() {
    local vm
    for vm in "${PM_VMS[@]}"; do
        [[ -e /run/netns/$(mf_ns "$vm") ]] || continue
        pm "$vm" rm -a -f -t 0 >/dev/null 2>&1
        [[ -z $(pm "$vm" ps -a -q 2>/dev/null) ]] || mf_log "warning: podman containers left in $vm"
    done
    PM_VMS=()
    ((CNI_CACHE_EXISTED)) || { rmdir "$CNI_CACHE/results" "$CNI_CACHE" 2>/dev/null || true; }
    [[ -n $P && -d $P && ${MF_KEEP:-0} == 0 ]] && rm -rf "$P"
}

# leases VM — the IPAM lease files of VM's meshnet
leases() { find "$P/$1/ipam/meshnet" -maxdepth 1 -name '[0-9]*' -printf '%f\n' 2>/dev/null | sort; }

# ctr_addr VM NAME — the container's eth0 address, as seen from inside it
ctr_addr() { pm "$1" exec "$2" ip -4 -o addr show dev eth0 | sed -n 's/.* inet \([0-9.]*\)\/32 .*/\1/p'; }

main() {
    local t
    rn_need_root
    RN_NEED_HINT="apt-get install podman runc containernetworking-plugins busybox-static"
    rn_need podman runc nsenter ip sha256sum "$MF_PY" /bin/busybox "$MF_CNI_LOOPBACK"
    rn_need_x "$MESHFWD" "$MESHFWD_CNI"
    mf_init || rn_abort "mf_init"
    rn_init "$MF_RUN_DIR" # (one scenario: no test selection)
    # podman first (its CNI DEL needs the VM namespaces), then lib.sh's cleanup
    trap 'podman_cleanup; _mf_cleanup' EXIT
    P="$MF_RUN_DIR/podman"
    local L="$MF_RUN_DIR/podman.log"
    echo "# podman + meshfwd-cni: $(podman --version), logs in $MF_RUN_DIR"

    # ---- setup: mesh, plugin dir, rootfs, per-VM podman configuration
    # vm1 has IPv6 (pa is dual-stack), vm2 has none (pb falls back to IPv4 only)
    if ! { mf_mesh --containers 0 192.168.16.32 192.168.16.33 && mf_start_all && mf_ipv6_on vm1 &&
        mkdir -p "$P/bin" && cp "$MESHFWD_CNI" "$P/bin/meshfwd-cni" && cp "$MF_CNI_LOOPBACK" "$P/bin/loopback" &&
        build_rootfs && podman_setup vm1 && podman_setup vm2 &&
        head -c "$MF_PODMAN_BYTES" /dev/urandom >"$P/send.bin" && mkdir -p "$P/out"; } >>"$L" 2>&1; then
        rn_fail setup "mesh, meshfwd or podman configuration failed"; tail -n 15 "$L" | sed 's/^/    # /'
        rn_finish
    fi
    local t0=$SECONDS a1 a2 want
    # ---- one container per VM through meshfwd-cni
    local started=1
    pm vm1 run -d --name pa --network meshnet --cap-add NET_RAW -v "$P/out:/out" \
        --rootfs "$P/rootfs" /bin/sleep 600 >>"$L" 2>&1 || started=0
    pm vm2 run -d --name pb --network meshnet --cap-add NET_RAW -v "$P/send.bin:/send.bin:ro" \
        --rootfs "$P/rootfs" /bin/sleep 600 >>"$L" 2>&1 || started=0
    a1=$(ctr_addr vm1 pa 2>>"$L"); a2=$(ctr_addr vm2 pb 2>>"$L")
    note "pa on vm1: $a1, pb on vm2: $a2" >>"$L" 2>&1
    if ((started)) && [[ -n $a1 && -n $a2 ]]; then
        rn_ok podman_run_through_meshfwd_cni "$((SECONDS - t0)) s; pa $a1, pb $a2"
    else
        rn_fail podman_run_through_meshfwd_cni "podman run failed or no eth0 address (pa '$a1', pb '$a2')"
        tail -n 20 "$L" | sed 's/^/    # /'
        rn_finish
    fi

    # addresses come from each VM's block, as its leases say
    want=$(mf_container_addr "${MF_UL[vm1]}" 1)
    if [[ $a1 == "$want" && $(leases vm1) == "$a1" && $(leases vm2) == "$a2" && $a2 == "$(mf_container_addr "${MF_UL[vm2]}" 1)" ]]; then
        rn_ok addresses_and_leases "vm1 lease $(leases vm1), vm2 lease $(leases vm2)"
    else
        rn_fail addresses_and_leases "pa $a1 (want $want), leases vm1 '$(leases vm1)' vm2 '$(leases vm2)'"
    fi

    # ---- pa is dual-stack: podman took the /128 from the CNI result, the VM reaches it
    local a6 v6 got6
    a6=$("$MESHFWD" addr --json --vm "${MF_UL[vm1]}" --container 1 | _mf_json_get overlay6)
    v6=$("$MESHFWD" addr --json "${MF_UL[vm1]}" | _mf_json_get vm_overlay6)
    got6=$(pm vm1 inspect --format '{{.NetworkSettings.Networks.meshnet.GlobalIPv6Address}}' pa 2>>"$L")
    { pm vm1 exec pa ip -6 addr; pm vm1 inspect --format '{{json .NetworkSettings}}' pa; } >>"$L" 2>&1
    if [[ $got6 == "$a6" ]] && pm vm1 exec pa ip -6 -o addr show dev eth0 2>>"$L" | grep "$a6/128" >/dev/null &&
        mf_exec vm1 ping -6 -n -c 2 -i 0.2 -W 1 "$a6" >>"$L" 2>&1 &&
        [[ -z $(pm vm2 inspect --format '{{.NetworkSettings.Networks.meshnet.GlobalIPv6Address}}' pb 2>>"$L") ]]; then
        rn_ok dual_stack "pa $a1 and $a6 (podman inspect), ping6 from vm1 via $v6; pb IPv4 only"
    else
        rn_fail dual_stack "pa: podman inspect GlobalIPv6Address '$got6', expected $a6 (log $L)"
    fi

    # ---- ping both ways
    if pm vm1 exec pa ping -c 3 -W 2 "$a2" >>"$L" 2>&1 && pm vm2 exec pb ping -c 3 -W 2 "$a1" >>"$L" 2>&1; then
        rn_ok ping_both_ways "$(grep -h 'round-trip' "$L" | tail -n 1)"
    else
        rn_fail ping_both_ways "pa <-> pb ping failed (log $L)"
    fi

    # ---- 16 MiB over TCP, sha256 compared
    local size t1 ms sum_tx sum_rx
    pm vm1 exec -d pa /bin/sh -c 'sleep 120 | nc -l -p 5001 >/out/recv.bin' >>"$L" 2>&1
    sleep 0.5
    t1=$(date +%s%N)
    pm vm2 exec pb /bin/sh -c "timeout 60 nc $a1 5001 </send.bin" >>"$L" 2>&1
    for ((i = 0; i < 300; i++)); do
        size=$(stat -c %s "$P/out/recv.bin" 2>/dev/null || echo 0)
        ((size >= MF_PODMAN_BYTES)) && break
        sleep 0.1
    done
    ms=$(( ($(date +%s%N) - t1) / 1000000 ))
    sum_tx=$(pm vm2 exec pb sha256sum /send.bin 2>>"$L" | cut -d' ' -f1)
    sum_rx=$(pm vm1 exec pa sha256sum /out/recv.bin 2>>"$L" | cut -d' ' -f1)
    note "transfer: $size of $MF_PODMAN_BYTES bytes in $ms ms; sha256 sent $sum_tx received $sum_rx" >>"$L" 2>&1
    if [[ $size == "$MF_PODMAN_BYTES" && -n $sum_tx && $sum_tx == "$sum_rx" ]]; then
        rn_ok tcp_transfer_checksum "$((MF_PODMAN_BYTES >> 20)) MiB in $ms ms, sha256 ${sum_rx:0:16}… on both sides"
    else
        rn_fail tcp_transfer_checksum "received $size of $MF_PODMAN_BYTES bytes, sha256 sent '$sum_tx' received '$sum_rx'"
    fi

    # ---- podman rm releases the address (CNI DEL through meshfwd-cni)
    local sandboxes ids
    sandboxes=$(pm vm1 inspect --format '{{.NetworkSettings.SandboxKey}}' pa 2>>"$L"; pm vm2 inspect --format '{{.NetworkSettings.SandboxKey}}' pb 2>>"$L")
    ids=$(pm vm1 inspect --format '{{.Id}}' pa 2>>"$L"; pm vm2 inspect --format '{{.Id}}' pb 2>>"$L")
    note "sandboxes: ${sandboxes//$'\n'/ }" >>"$L" 2>&1
    pm vm1 rm -f -t 0 pa >>"$L" 2>&1
    pm vm2 rm -f -t 0 pb >>"$L" 2>&1
    if [[ -z $(leases vm1) && -z $(leases vm2) ]] &&
        ! ip -n "$(mf_ns vm1)" -o link show | grep -E '^[0-9]+: mfc[0-9]+@' >/dev/null && ! ip -n "$(mf_ns vm2)" -o link show | grep -E '^[0-9]+: mfc[0-9]+@' >/dev/null; then
        rn_ok podman_rm_releases "leases and veths gone on both VMs"
    else
        rn_fail podman_rm_releases "left: leases vm1 '$(leases vm1)' vm2 '$(leases vm2)'; $(ip -n "$(mf_ns vm1)" -o link show | grep -oE '^[0-9]+: mfc[0-9]+' | tr '\n' ' ')"
    fi
    local left=""
    for t in $sandboxes; do [[ -e $t ]] && left+=" $t"; done
    for t in $ids; do compgen -G "$CNI_CACHE/results/*$t*" >/dev/null && left+=" cache:$t"; done
    if [[ -n $sandboxes && -z $left ]]; then
        rn_ok podman_rm_leaves_nothing "container namespaces and libcni cache entries gone"
    else
        rn_fail podman_rm_leaves_nothing "left:${left:- (no sandbox paths known)}"
    fi

    # the next container gets an address again (the released number is reusable)
    if pm vm1 run --rm --network meshnet --rootfs "$P/rootfs" /bin/sh -c 'ip -4 -o addr show dev eth0' >>"$L" 2>&1 &&
        [[ -z $(leases vm1) ]]; then
        rn_ok run_rm_cycle "podman run --rm: added and released"
    else
        rn_fail run_rm_cycle "podman run --rm failed or left a lease '$(leases vm1)'"
    fi

    # nothing of podman's leaked into the system-wide locations
    local created=""
    for t in "${SYSTEM_DIRS[@]}"; do [[ -e $t && " $PREEXISTING " != *" $t "* ]] && created+=" $t"; done
    if [[ -z $created ]]; then
        rn_ok nothing_outside_the_run_dir "none of ${SYSTEM_DIRS[*]} created"
    else
        rn_fail nothing_outside_the_run_dir "created:$created"
    fi
    for t in vm1 vm2; do mf_running "$t" || rn_fail meshfwd_alive "$t: meshfwd died"; done
    rn_finish
}

main
