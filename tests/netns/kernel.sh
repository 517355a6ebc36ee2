#!/usr/bin/env bash
# tests/netns/kernel.sh — wire interop of meshfwd with a real Linux kernel GRE
# peer (ip_gre, and FOU for GRE-in-UDP), booted under qemu (root).
#
#   tests/netns/kernel.sh                  # every case
#   tests/netns/kernel.sh key badkey       # only cases/tests whose name contains one of these
#   MF_KERNEL_CACHE=/var/cache/x MF_KEEP_LOGS=1 tests/netns/kernel.sh
#
# The host kernel has no GRE, so the peer is a Debian kernel (the current
# linux-image-*-amd64 of the configured apt sources, downloaded once with
# `apt-get download` and cached in target/kernel-interop/) booted with
# qemu-system-x86_64 under TCG with a busybox initramfs
# (tests/netns/kernel-vm-init is its /init: a command driver on the serial
# console, see vm_run below).
#
# Topology (all inside this run's namespaces, nothing in the root namespace):
#
#   ul      underlay namespace of lib.sh: bridge br0; qemu runs here, its tap
#           "ktap" is a port of br0 (vnet_hdr=off: with a virtio header the GRE
#           checksums would be left to a virtual offload and arrive invalid).
#   kernel VM   one e1000 NIC, one underlay address 192.168.30.X per case and
#           one kernel GRE tunnel per case (local 192.168.30.X, remote the
#           case's meshfwd VM), its overlay address (host part 1 of the block
#           of 192.168.30.X) on the tunnel, the meshfwd VM's block routed into it.
#   CASE    one lib.sh "VM" namespace per case (underlay 192.168.20.X) running
#           meshfwd with the case's options, one container CASEc1 attached.
#
# Per case (CASES), both directions: ping, a TCP transfer of a 1 MiB random
# blob with md5 compare (busybox nc), HTTP (busybox httpd in the VM + busybox
# wget on the host side; python3 http.server in the container + busybox wget in
# the VM); "wire": the GRE flags, key, checksums and sequence numbers each side
# sends, from the underlay capture (tshark); "counters": meshfwd saw traffic
# both ways and counted no drop and no error; FOU cases also "fou_burst".
# Negative cases: "badkey" (key mismatch: ICMP port unreachable from the kernel,
# counted by meshfwd, which keeps working), MISMATCH (C/S flag mismatches: the
# kernel drops and counts them) and "seq/restart" (kernel iseq vs a restarted
# meshfwd --seq). Kernel datapath (#15): "kd*" cases run meshfwd --datapath
# kernel inside the VM against userspace meshfwd here; "kg*" cases run it in a
# network namespace of the VM against a plain ip_gre tunnel in another one;
# "kdtput/smoke" one TCP stream through each of four datapaths in the VM, and
# "kdbench" (only when named) their throughput ratios.
# docs/TESTING.md describes the suite.
#
# Prints "ok NAME" / "FAIL NAME (reason)" per test and last "N passed, N failed";
# exit status 1 if anything failed. A case whose meshfwd flag does not exist in
# the binary, or whose kernel module does not load, FAILS (it is not skipped).

# shellcheck disable=SC2034,SC2317  # lib.sh reads the globals; tests are called indirectly
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/netns/lib.sh
source "$HERE/lib.sh"
# shellcheck source=tests/netns/runner.sh
source "$HERE/runner.sh"
RN_SUITE=kernel

MF_ENCAP=gre   # each case passes its own --encap to meshfwd (lib.sh would add MF_ENCAP's)
: "${MF_KERNEL_CACHE:=$MF_REPO/target/kernel-interop}"
: "${MF_VM_BOOT_TIMEOUT:=120}"   # TCG on a busy 2-core machine: 10-30 s
: "${MF_VM_CMD_TIMEOUT:=60}"
: "${MF_VM_MEM:=512}"   # MiB; the kdbench case runs eight meshfwd processes
: "${MF_BLOB_KIB:=1024}"
: "${MF_BASE:=${MF_BASE_DIR:-/tmp}}"

# Good cases, one line each:
#   NAME | meshfwd flags | kernel `ip link add … type gre` options | meshfwd flag the case needs | VM eth0 GRO (on|off, default on)
# (Kernel tunnels always get `local`, `remote` and `ttl 64`. Names: ≤ 8 chars.
# The VM's eth0 GRO setting is applied before the case's tests.)
CASES=(
    "plain|||"
    "key|--key 7|key 7|--key"
    "keycsum|--key 7 --csum|key 7 csum|--csum"
    "oseq|--key 7|key 7 oseq|--key"
    "seq|--key 7 --csum --seq|key 7 csum seq|--seq"
    # GRE-in-UDP (RFC 8086) against Linux FOU. With GRO on, the kernel drops
    # most full-size GRE-in-UDP packets from meshfwd (UDP InErrors, see
    # docs/TESTING.md); MF_KERNEL_FOU_GRO=1 adds the case "fougro" that shows it.
    "fou|--encap udp|encap fou encap-sport auto encap-dport 4754|--encap|off"
)
[[ ${MF_KERNEL_FOU_GRO:-0} == 1 ]] &&
    CASES+=("fougro|--encap udp|encap fou encap-sport auto encap-dport 4754|--encap|on")
# kernel modules to load in the VM (their dependencies are added and ordered
# automatically from the modules' depends= field)
KI_MODULES=(e1000 ip_gre fou sch_ingress cls_bpf tun veth vxlan)
# the negative case: meshfwd with key 8 against kernel tunnels with key 7 and 8
BADKEY=badkey

KI_QEMU_PID=""
KI_IN=""
KI_SEQ=0
KI_OUT=""
KI_CONSOLE=""
declare -A CASE_KOVL6=() CASE_COVL6=() CASE_GRO=() CASE_FLAGS=() CASE_KOPTS=() CASE_KUL=() CASE_KOVL=() CASE_DEV=() CASE_BAD=()
CASE_NAMES=()
MISMATCH_OK=()

_case_wanted() { # CASE TEST... — is any CASE/TEST selected?
    local c=$1 t; shift
    for t in "$@"; do rn_selected "$c/$t" && return 0; done
    return 1
}

# console_tail [N] — last lines of the VM console, for failure reports
console_tail() {
    [[ -n $KI_CONSOLE && -f $KI_CONSOLE ]] || return 0
    echo "    # VM console (last ${1:-15} lines of $KI_CONSOLE):"
    tr -d '\r' <"$KI_CONSOLE" | tail -n "${1:-15}" | sed 's/^/    #   /'
}

# ------------------------------------------------------------ kernel image --

_ko_depends() { # FILE.ko — its depends= list, space separated
    tr '\0' '\n' <"$1" | sed -n 's/^depends=//p' | head -n 1 | tr ',' ' '
}

# ki_fetch — KI_KDIR: cached dir with vmlinuz, NAME.ko files and modules.order
# (load order). Downloads the Debian kernel image package on first use.
ki_fetch() {
    local pkg dir tmp deb m d missing order=() seen=() want pats
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
    if [[ -z $pkg ]]; then
        apt-get -o DPkg::Lock::Timeout=120 update -q >"$MF_RUN_DIR/apt-update.log" 2>&1
        pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
            awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
    fi
    if [[ -z $pkg ]]; then
        # no package lists (offline?): the newest kernel already cached
        dir=$(find "$MF_KERNEL_CACHE" -maxdepth 2 -name complete -printf '%h\n' 2>/dev/null | sort -V | tail -n 1)
        [[ -n $dir ]] || { mf_log "apt-cache knows no linux-image-amd64 dependency and nothing is cached"; return 1; }
        note "apt-cache knows no linux-image-amd64; using cached $dir"
        KI_KDIR=$dir; return 0
    fi
    dir=$MF_KERNEL_CACHE/$pkg
    if [[ ! -f $dir/complete || ${KI_REFETCH:-0} == 1 ]]; then
        KI_REFETCH=0
        note "downloading $pkg (apt-get download, cached in $dir)"
        mkdir -p "$MF_KERNEL_CACHE" || return 1
        # (a cache of another checkout may hold modules this list lacks: keep
        # them, so that checkouts with different lists do not refetch in turn)
        for m in "$dir"/*.ko; do
            [[ -f $m ]] || continue
            m=$(basename "$m" .ko)
            [[ " ${KI_MODULES[*]} " == *" $m "* ]] || KI_MODULES+=("$m")
        done
        # leftovers of interrupted downloads
        find "$MF_KERNEL_CACHE" -maxdepth 1 -name '.dl.*' -mmin +60 -exec rm -rf {} + 2>/dev/null
        tmp=$(mktemp -d "$MF_KERNEL_CACHE/.dl.XXXXXX") || return 1
        chmod 755 "$tmp"
        if ! (cd "$tmp" && apt-get download -q "$pkg") >"$MF_RUN_DIR/apt-download.log" 2>&1; then
            apt-get -o DPkg::Lock::Timeout=120 update -q >>"$MF_RUN_DIR/apt-download.log" 2>&1
            (cd "$tmp" && apt-get download -q "$pkg") >>"$MF_RUN_DIR/apt-download.log" 2>&1 ||
                { tail -n 5 "$MF_RUN_DIR/apt-download.log" >&2; rm -rf "$tmp"; mf_log "apt-get download $pkg failed"; return 1; }
        fi
        deb=$(find "$tmp" -maxdepth 1 -name '*.deb' | head -n 1)
        mkdir -p "$tmp/x" "$tmp/out"
        # extract vmlinuz and the wanted modules, then their dependencies, until closed
        want=("${KI_MODULES[@]}")
        while ((${#want[@]})); do
            pats=()
            for m in "${want[@]}"; do pats+=("*/$m.ko"); done
            dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp/x" --wildcards './boot/vmlinuz-*' "${pats[@]}" ||
                { rm -rf "$tmp"; mf_log "cannot extract ${want[*]} from $deb"; return 1; }
            missing=()
            for m in "${want[@]}"; do
                d=$(find "$tmp/x/lib" -name "$m.ko" | head -n 1)
                [[ -n $d ]] || { rm -rf "$tmp"; mf_log "$pkg has no module $m"; return 1; }
                cp "$d" "$tmp/out/$m.ko"
                seen+=("$m")
                for d in $(_ko_depends "$tmp/out/$m.ko"); do
                    [[ " ${seen[*]} ${missing[*]} " == *" $d "* ]] || missing+=("$d")
                done
            done
            want=("${missing[@]}")
        done
        # load order: dependencies first (depth-first post-order)
        _ki_order() {
            local m=$1 d
            [[ " ${order[*]} " == *" $m "* ]] && return 0
            for d in $(_ko_depends "$tmp/out/$m.ko"); do _ki_order "$d"; done
            order+=("$m")
        }
        for m in "${seen[@]}"; do _ki_order "$m"; done
        printf '%s\n' "${order[@]}" >"$tmp/out/modules.order"
        cp "$(find "$tmp/x/boot" -name 'vmlinuz-*' | head -n 1)" "$tmp/out/vmlinuz" || { rm -rf "$tmp"; return 1; }
        echo "$pkg" >"$tmp/out/package"
        touch "$tmp/out/complete"
        # (a parallel run may have filled it meanwhile: keep that one; an
        # incomplete or smaller one is swapped, never removed while in use)
        if ! mv -T "$tmp/out" "$dir" 2>/dev/null; then
            local have=1
            for m in "${KI_MODULES[@]}"; do [[ -f $dir/$m.ko ]] || have=0; done
            if ((!have)) || [[ ! -f $dir/complete ]]; then
                if ! { mv -T "$dir" "$tmp/old" && mv -T "$tmp/out" "$dir"; }; then rm -rf "$tmp"; return 1; fi
            fi
        fi
        rm -rf "$tmp"
    fi
    KI_KDIR=$dir
    # modules added to KI_MODULES after the cache was filled: refetch
    for m in "${KI_MODULES[@]}"; do
        [[ -f $dir/$m.ko ]] || { note "cache lacks $m.ko: refetching"; KI_REFETCH=1; ki_fetch; return; }
    done
}

# ki_initramfs OUT — busybox-static, iproute2's ip (+ libraries), modules, /init, /blob
ki_initramfs() {
    local out=$1 root=$MF_RUN_DIR/initramfs bb bin path lib m
    bb=$(command -v busybox) || { mf_log "busybox not found (package busybox-static)"; return 1; }
    if ldd "$bb" >/dev/null 2>&1; then
        mf_log "$bb is dynamically linked: install busybox-static"; return 1
    fi
    rm -rf "$root"
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib/modules,proc,sys,dev,tmp,www,etc} || return 1
    cp "$bb" "$root/bin/busybox"
    # iproute2's ip (gre options, fou) and ethtool (GRO), with their libraries
    for bin in ip ethtool tc; do
        path=$(command -v "$bin") || { mf_log "$bin not found (packages iproute2, ethtool)"; return 1; }
        cp "$path" "$root/usr/sbin/$bin"
        for lib in $(ldd "$path" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
            mkdir -p "$root$(dirname "$lib")"
            cp -L "$lib" "$root$lib"
        done
    done
    cp "$HERE/kernel-vm-init" "$root/init" && chmod 755 "$root/init"
    chmod 1777 "$root/tmp"   # as on a real system: --user nobody writes its stats file there
    # users for --user (kguser)
    printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    while read -r m; do cp "$KI_KDIR/$m.ko" "$root/lib/modules/"; done <"$KI_KDIR/modules.order"
    cp "$KI_KDIR/modules.order" "$root/lib/modules/"
    cp "$BLOB" "$root/blob"
    (cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null) | gzip -1 >"$out" || return 1
    rm -rf "$root"
    # the static meshfwd for the kernel-datapath cases, as a second archive
    # (the kernel unpacks concatenated ones)
    if [[ -n $KD_BIN ]]; then
        mkdir -p "$root/usr/bin" && cp "$KD_BIN" "$root/usr/bin/meshfwd" && cp "$KD_TPUT" "$root/usr/bin/mftput" || return 1
        (cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null) | gzip -1 >>"$out" || return 1
        rm -rf "$root"
    fi
}

# ------------------------------------------------------------ VM driver --

# vm_boot — start qemu in the ul namespace on tap ktap (port of br0), wait for @@BOOTED
vm_boot() {
    local ul kernel initrd fifo i t0=$SECONDS
    ul=$(mf_ns ul)
    initrd=$MF_RUN_DIR/initrd.gz
    ki_initramfs "$initrd" || return 1
    ip -n "$ul" tuntap add ktap mode tap || return 1
    ip -n "$ul" link set ktap master br0 up || return 1
    fifo=$MF_RUN_DIR/vm.in
    KI_CONSOLE=$MF_RUN_DIR/vm-console.log
    mkfifo "$fifo" || return 1
    exec {KI_IN}<>"$fifo"
    # console on stdio: commands in through the fifo, output to the log
    ip netns exec "$ul" qemu-system-x86_64 -accel tcg -smp 1 -m "$MF_VM_MEM" -nodefaults -no-reboot \
        -display none -serial stdio -monitor none \
        -kernel "$KI_KDIR/vmlinuz" -initrd "$initrd" \
        -append "console=ttyS0 panic=-1 quiet loglevel=1 rdinit=/init" \
        -netdev tap,id=n0,ifname=ktap,script=no,downscript=no,vnet_hdr=off \
        -device e1000,netdev=n0,mac=52:54:00:6b:00:01 \
        <"$fifo" >"$KI_CONSOLE" 2>"$MF_RUN_DIR/qemu.err" &
    KI_QEMU_PID=$!
    MF_PIDS+=("$KI_QEMU_PID"); MF_PIDNAME[$KI_QEMU_PID]=qemu
    for ((i = 0; i < MF_VM_BOOT_TIMEOUT * 10; i++)); do
        grep -q '^@@BOOTED' <(tr -d '\r' <"$KI_CONSOLE") && break
        _mf_alive "$KI_QEMU_PID" || { mf_log "qemu exited: $(tail -n 5 "$MF_RUN_DIR/qemu.err")"; return 1; }
        sleep 0.1
    done
    grep -q '^@@BOOTED' <(tr -d '\r' <"$KI_CONSOLE") || { mf_log "VM did not boot in ${MF_VM_BOOT_TIMEOUT} s"; return 1; }
    KI_BOOT_S=$((SECONDS - t0))
    note "VM booted in ${KI_BOOT_S} s: $(tr -d '\r' <"$KI_CONSOLE" | grep '^@@BOOTED')"
}

# vm_module NAME — did the module load in the VM?
vm_module() { tr -d '\r' <"$KI_CONSOLE" | grep -q "^@@MODULE $1 ok"; }

# vm_run [-t SECONDS] COMMAND — run a one-line shell command in the VM; its
# output in KI_OUT, its exit status returned (124: no answer in time).
vm_run() {
    local t=$MF_VM_CMD_TIMEOUT id line i
    if [[ $1 == -t ]]; then t=$2; shift 2; fi
    # unique also when called inside $( ) (a subshell's KI_SEQ increments are lost)
    id=${BASHPID}x$((++KI_SEQ))
    # one line: the VM's driver reads a command per line (line breaks in a
    # command are the caller's layout; they become spaces)
    set -- "${*//$'\n'/ }"
    printf '%s %s\n' "$id" "$*" >&"$KI_IN"
    printf '# vm[%s] %s\n' "$id" "$*" >>"$MF_RUN_DIR/vm-commands.log"
    for ((i = 0; i < t * 20; i++)); do
        line=$(tr -d '\r' <"$KI_CONSOLE" | grep -m 1 "^@@RC $id ")
        if [[ -n $line ]]; then
            KI_OUT=$(tr -d '\r' <"$KI_CONSOLE" | sed -n "s/^@@OUT $id //p")
            printf '%s\n' "$KI_OUT" | sed 's/^/    /' >>"$MF_RUN_DIR/vm-commands.log"
            return "${line##* }"
        fi
        _mf_alive "$KI_QEMU_PID" || { KI_OUT="qemu is gone"; return 125; }
        sleep 0.05
    done
    KI_OUT="no answer from the VM within $t s"
    return 124
}

# vm_must COMMAND — vm_run, or fail the setup
vm_must() {
    vm_run "$@" && return 0
    mf_log "VM command failed: $* -> ${KI_OUT:-no output}"
    return 1
}

# ------------------------------------------------------------ setup --

# case_setup NAME INDEX MESHFWD_FLAGS KERNEL_OPTS [dual] — meshfwd VM +
# container on the host side, underlay address + tunnel in the kernel VM.
# dual (the good cases): IPv6 on in the meshfwd VM and its container (meshfwd
# with its default --overlay6, the container attached dual-stack), and the
# kernel tunnel carries IPv6 too: no link-local address on it (addrgenmode
# none, so nothing but mesh traffic goes in: no router solicitation, no MLD),
# the kernel VM's IPv6 overlay address (index 1 of its /96) as a /128 nodad,
# the meshfwd VM's /96 routed into it (docs/OPERATIONS.md, Mixed grids).
case_setup() {
    local name=$1 idx=$2 flags=$3 kopts=$4 dual=${5:-} mul kul kovl block dev v6=""
    mul=192.168.20.$((10 + idx)); kul=192.168.30.$((10 + idx))
    mf_vm_add "$name" "$mul" || return 1
    if [[ $dual == dual ]]; then
        mf_ipv6_on "$name" && mf_exec "$name" sysctl -qw net.ipv6.conf.all.forwarding=1 >/dev/null || return 1
        mf_netns_add "${name}c1" && mf_ipv6_on "${name}c1" && mf_attach "$name" "${name}c1" 1 || return 1
        CASE_KOVL6[$name]=$(mf_addr_json "$kul" 1 | _mf_json_get vm_overlay6) || return 1
        CASE_COVL6[$name]=$(mf_addr_json "$mul" 1 | _mf_json_get overlay6) || return 1
        # attach wired it dual-stack (it falls back to IPv4 only with a warning)
        # (the output in a variable first: grep -q would end the pipe early, and
        # pipefail would report ip's SIGPIPE)
        v6=$(mf_exec "${name}c1" ip -6 -o addr show dev eth0)
        grep -q "inet6 ${CASE_COVL6[$name]}/128 " <<<"$v6" || { mf_log "${name}c1 lacks ${CASE_COVL6[$name]}/128: $v6"; return 1; }
        v6=$(mf_addr_json "$mul" 1 | _mf_json_get block6) || return 1
    else
        mf_container_add "$name" 1 || return 1
    fi
    kovl=$(mf_vm_addr "$kul") || return 1
    block=$(mf_addr_json "$mul" 1 | _mf_json_get block) || return 1
    dev=g-$name
    CASE_KUL[$name]=$kul; CASE_KOVL[$name]=$kovl; CASE_DEV[$name]=$dev
    CASE_FLAGS[$name]=$flags; CASE_KOPTS[$name]=$kopts
    # shellcheck disable=SC2086  # flags are words
    mf_start "$name" $flags || return 1
    vm_must "ip addr add $kul/16 dev eth0" || return 1
    if [[ " $kopts " =~ \ encap\ fou\ .*encap-dport\ ([0-9]+) ]]; then   # FOU receive port
        vm_must "ip fou show | grep -q 'port ${BASH_REMATCH[1]} ' || ip fou add port ${BASH_REMATCH[1]} ipproto 47" || return 1
    fi
    vm_must "ip link add $dev type gre local $kul remote $mul ttl 64 $kopts" || return 1
    if [[ -n $v6 ]]; then
        vm_must "ip link set $dev addrgenmode none && sysctl -qw net.ipv6.conf.$dev.disable_ipv6=0" || return 1
    fi
    vm_must "ip link set $dev up && ip addr add $kovl/32 dev $dev && ip route add $block dev $dev" || return 1
    if [[ -n $v6 ]]; then
        vm_must "ip -6 addr add ${CASE_KOVL6[$name]}/128 dev $dev nodad && ip -6 route add $v6 dev $dev" || return 1
    fi
    note "case $name: meshfwd ${MF_UL[$name]} (${MF_OVL[$name]}, container ${MF_OVL[${name}c1]}${v6:+ ${CASE_COVL6[$name]}}) $flags <-> kernel $kul ($kovl${v6:+ ${CASE_KOVL6[$name]}}) gre $kopts"
}

# host-side servers of a case's container: HTTP (python3) on :8000
case_servers() {
    local name=$1 c=${1}c1 i
    mf_bg "http-$name" "$c" "$MF_PY" -m http.server 8000 --bind "${MF_OVL[$c]}" --directory "$MF_RUN_DIR/www" || return 1
    for ((i = 0; i < 50; i++)); do
        mf_exec "$c" ss -Hltn 'sport = :8000' | grep -q . && return 0
        sleep 0.1
    done
    mf_log "http.server in $c did not listen"; return 1
}

# ------------------------------------------------------------ tests --
# Each test: t_X CASE — prints nothing; on failure sets REASON and returns 1.

blob_md5() { md5sum <"$BLOB" | cut -d' ' -f1; }

t_ping_to_vm() {
    local r; r=$(mf_ping "${1}c1" "${CASE_KOVL[$1]}" 3)
    [[ $r == 3/3 ]] || { REASON="container -> VM ${CASE_KOVL[$1]}: $r replies"; return 1; }
}

t_ping_from_vm() {
    vm_run "ping -c 3 -i 0.3 -W 2 ${MF_OVL[${1}c1]}" ||
        { REASON="VM -> container ${MF_OVL[${1}c1]}: $(tail -n 2 <<<"$KI_OUT" | tr '\n' ' ')"; return 1; }
}

# _tcp_to_vm CASE PORT ADDR — the blob from the container to the VM's ADDR (busybox nc), md5 compared
_tcp_to_vm() {
    local port=$2 rx=/tmp/rx.$1.$2 md5 size
    size=$(stat -c %s "$BLOB")
    vm_run "rm -f $rx; (sleep 120 | nc -l -p $port >$rx 2>/dev/null) & for i in \$(seq 50); do netstat -ltn | grep -q :$port && exit 0; sleep 0.1; done; exit 1" ||
        { REASON="nc -l in the VM did not listen: $KI_OUT"; return 1; }
    mf_exec "${1}c1" timeout 30 busybox nc "$3" "$port" <"$BLOB" ||
        { REASON="nc to $3 port $port exited $?"; return 1; }
    vm_run "for i in \$(seq 100); do [ \$(wc -c <$rx) -ge $size ] && break; sleep 0.1; done; md5sum $rx; wc -c <$rx"
    md5=$(awk 'NR == 1 { print $1 }' <<<"$KI_OUT")
    [[ $md5 == "$(blob_md5)" ]] || { REASON="VM received $(tail -n 1 <<<"$KI_OUT") bytes with md5 $md5, sent $size"; return 1; }
}
t_tcp_to_vm() { _tcp_to_vm "$1" $((5100 + $2)) "${CASE_KOVL[$1]}"; }

# _tcp_from_vm CASE PORT ADDR — the blob from the VM to the container's ADDR, md5 compared
_tcp_from_vm() {
    local port=$2 rx=$MF_RUN_DIR/rx.$1.$2 c=${1}c1 i pid md5
    rm -f "$rx"
    mf_bg "nc-$1-$port" "$c" sh -c "sleep 120 | exec busybox nc -l -p $port >'$rx'"
    pid=$MF_LAST_PID
    for ((i = 0; i < 50; i++)); do
        mf_exec "$c" ss -Hltn "sport = :$port" | grep -q . && break
        sleep 0.1
    done
    vm_run "timeout 30 nc $3 $port </blob" || { REASON="nc in the VM exited: $KI_OUT"; return 1; }
    for ((i = 0; i < 100; i++)); do
        [[ -f $rx && $(stat -c %s "$rx") -ge $(stat -c %s "$BLOB") ]] && break
        sleep 0.1
    done
    mf_reap "$pid" 1 || true
    md5=$(md5sum <"$rx" | cut -d' ' -f1)
    [[ $md5 == "$(blob_md5)" ]] || { REASON="container received $(stat -c %s "$rx") bytes with md5 $md5"; return 1; }
}
t_tcp_from_vm() { _tcp_from_vm "$1" $((5200 + $2)) "${MF_OVL[${1}c1]}"; }

# IPv6 inner packets (#17) through the same tunnels: the kernel's GRE device
# carries them as protocol 0x86DD (and through FOU), meshfwd derives the peer
# from the IPv6 destination's VM bits.
t_ping6_to_vm() {
    local r; r=$(mf_ping "${1}c1" "${CASE_KOVL6[$1]}" 3)
    [[ $r == 3/3 ]] || { REASON="container -> VM ${CASE_KOVL6[$1]}: $r replies"; return 1; }
}
t_ping6_from_vm() {
    vm_run "ping6 -c 3 -i 0.3 -W 2 ${CASE_COVL6[$1]}" ||
        { REASON="VM -> container ${CASE_COVL6[$1]}: $(tail -n 2 <<<"$KI_OUT" | tr '\n' ' ')"; return 1; }
}
t_tcp6_to_vm() { _tcp_to_vm "$1" $((5300 + $2)) "${CASE_KOVL6[$1]}"; }
t_tcp6_from_vm() { _tcp_from_vm "$1" $((5400 + $2)) "${CASE_COVL6[$1]}"; }
t_http6_from_vm() {
    local md5
    md5=$(mf_exec "${1}c1" timeout 30 busybox wget -q -O - "http://[${CASE_KOVL6[$1]}]/blob" | md5sum | cut -d' ' -f1)
    [[ $md5 == "$(blob_md5)" ]] || { REASON="wget http://[${CASE_KOVL6[$1]}]/blob (VM httpd): md5 $md5"; return 1; }
}

t_http_from_vm() {
    local md5
    # (no -T: busybox 1.35's wget -T segfaults; timeout(1) bounds it instead)
    md5=$(mf_exec "${1}c1" timeout 30 busybox wget -q -O - "http://${CASE_KOVL[$1]}/blob" | md5sum | cut -d' ' -f1)
    [[ $md5 == "$(blob_md5)" ]] || { REASON="wget http://${CASE_KOVL[$1]}/blob (VM httpd): md5 $md5"; return 1; }
}

t_http_to_host() {
    local md5
    vm_run "timeout 30 wget -q -O - http://${MF_OVL[${1}c1]}:8000/blob | md5sum" || { REASON="wget in the VM: $KI_OUT"; return 1; }
    md5=$(awk 'NR == 1 { print $1 }' <<<"$KI_OUT")
    [[ $md5 == "$(blob_md5)" ]] || { REASON="VM wget http://${MF_OVL[${1}c1]}:8000/blob: md5 $md5"; return 1; }
}

# meshfwd of the case: traffic both ways, not one drop, not one error
t_counters() {
    local bad
    mf_exec "$1" true # (stats are rewritten about every second)
    sleep 1.2
    bad=$("$MF_PY" "$MF_TOOLS/mfjson.py" stats-health "$(mf_stats_file "$1")") ||
        { REASON="cannot read the stats file"; return 1; }
    [[ -z $bad ]] || { REASON="$bad"; return 1; }
}

# The GRE headers of the case's pings in the underlay capture, both ways: the
# C/K/S flags the configuration asks for (meshfwd --csum/--key/--seq, kernel
# [o]csum/[o]key/[o]seq), valid checksums (tshark verifies them), the key, and
# sequence numbers that increase. wire6: the same for ping6, whose GRE
# protocol type must be 0x86DD.
_wire() { # CASE 4|6
    local name=$1 mflags=" ${CASE_FLAGS[$1]} " kopts=" ${CASE_KOPTS[$1]} " want_m want_k out key=0 port="" filter
    [[ $mflags =~ \ --key\ ([0-9]+) ]] && key=${BASH_REMATCH[1]}
    [[ $kopts =~ \ encap\ fou\ .*encap-dport\ ([0-9]+) ]] && port=${BASH_REMATCH[1]}
    want_m="$([[ $mflags == *" --csum "* ]] && echo 1 || echo 0)$([[ $mflags == *" --key "* ]] && echo 1 || echo 0)$([[ $mflags == *" --seq "* ]] && echo 1 || echo 0)"
    want_k="$([[ $kopts =~ \ o?csum\  ]] && echo 1 || echo 0)$([[ $kopts =~ \ o?key\  ]] && echo 1 || echo 0)$([[ $kopts =~ \ o?seq\  ]] && echo 1 || echo 0)"
    # pings of its own, so that the test stands alone
    if [[ $2 == 6 ]]; then
        mf_ping "${name}c1" "${CASE_KOVL6[$name]}" 3 >/dev/null
        vm_run "ping6 -c 3 -i 0.3 -W 2 ${CASE_COVL6[$name]}"
        filter="gre && !icmp && gre.proto == 0x86dd && (icmpv6.type == 128 || icmpv6.type == 129)"
    else
        mf_ping "${name}c1" "${CASE_KOVL[$name]}" 3 >/dev/null
        vm_run "ping -c 3 -i 0.3 -W 2 ${MF_OVL[${name}c1]}"
        filter="gre && !(icmp.type == 3) && (icmp.type == 0 || icmp.type == 8)"
    fi
    sleep 0.5 # tcpdump -U writes each packet at once; give it a moment anyway
    out=$(tshark -r "$MF_RUN_DIR/underlay.pcap" -Y "$filter" \
        -T fields -E occurrence=f -E separator='|' -e ip.src -e ip.dst -e gre.flags.checksum \
        -e gre.flags.key -e gre.flags.sequence_number -e gre.checksum.status -e gre.key -e gre.sequence_number -e udp.dstport \
        ${port:+-d "udp.port==$port,gre"} 2>/dev/null |
        "$MF_PY" "$MF_TOOLS/verdict.py" gre-wire "${MF_UL[$name]}" "${CASE_KUL[$name]}" "$want_m" "$want_k" "$key" "$port") ||
        { REASON="tshark/python failed"; return 1; }
    [[ -z $out ]] || { REASON=$out; return 1; }
}
t_wire() { _wire "$1" 4; }
t_wire6() { _wire "$1" 6; }

GOOD_TESTS=(ping_to_vm ping_from_vm tcp_to_vm tcp_from_vm http_from_vm http_to_host wire
    ping6_to_vm ping6_from_vm tcp6_to_vm tcp6_from_vm http6_from_vm wire6 counters)

# FOU cases also: 20 in-sequence TCP segments in GRE-in-UDP, built by
# tests/tools/fou_burst.py (not by meshfwd; UDP checksum 0 and on), must all
# reach the kernel tunnel without UDP InErrors. With GRO on the VM's NIC they
# do not (case fougro): the loss is the kernel receiver's, not meshfwd's format.
t_fou_burst() {
    local name=$1 before after c e0 e1 r0 r1
    for c in "" --udp-csum; do
        vm_run "awk '/^Udp:/ { x = \$4 } END { print x }' /proc/net/snmp; cat /sys/class/net/${CASE_DEV[$name]}/statistics/rx_packets"
        before=${KI_OUT//$'\n'/ }
        mf_exec "$name" "$MF_PY" "$MF_TOOLS/fou_burst.py" --src "${MF_UL[$name]}" --dst "${CASE_KUL[$name]}" \
            --inner-src "${MF_OVL[${name}c1]}" --inner-dst "${CASE_KOVL[$name]}" --count 20 ${c:+"$c"} ||
            { REASON="fou_burst.py failed"; return 1; }
        sleep 1
        vm_run "awk '/^Udp:/ { x = \$4 } END { print x }' /proc/net/snmp; cat /sys/class/net/${CASE_DEV[$name]}/statistics/rx_packets"
        after=${KI_OUT//$'\n'/ }
        read -r e0 r0 <<<"$before"; read -r e1 r1 <<<"$after"
        note "fou_burst ${c:-no UDP checksum}: UDP InErrors $e0 -> $e1, tunnel rx_packets $r0 -> $r1"
        ((e1 == e0 && r1 - r0 >= 20)) ||
            { REASON="20 crafted packets (${c:-no UDP checksum}): kernel UDP InErrors +$((e1 - e0)), tunnel rx_packets +$((r1 - r0))"; return 1; }
    done
}

# ------------------------------------------------------------ negative case --

# badkey: meshfwd --key 8; kernel tunnels g-bad7 (key 7, VM address A7) and
# g-bad8 (key 8, VM address A8). The container's /32 is routed into g-bad7, the
# meshfwd VM's block into g-bad8.
badkey_setup() {
    local mul=192.168.20.50 k7=192.168.30.50 k8=192.168.30.51 block c
    mf_vm_add "$BADKEY" "$mul" || return 1
    mf_container_add "$BADKEY" 1 || return 1
    c=${BADKEY}c1
    block=$(mf_addr_json "$mul" 1 | _mf_json_get block) || return 1
    CASE_KOVL[bad7]=$(mf_vm_addr "$k7") || return 1
    CASE_KOVL[bad8]=$(mf_vm_addr "$k8") || return 1
    mf_start "$BADKEY" --key 8 || return 1
    vm_must "ip addr add $k7/16 dev eth0 && ip addr add $k8/16 dev eth0" || return 1
    vm_must "ip link add g-bad7 type gre local $k7 remote $mul ttl 64 key 7 && ip link set g-bad7 up && ip addr add ${CASE_KOVL[bad7]}/32 dev g-bad7" || return 1
    vm_must "ip link add g-bad8 type gre local $k8 remote $mul ttl 64 key 8 && ip link set g-bad8 up && ip addr add ${CASE_KOVL[bad8]}/32 dev g-bad8" || return 1
    vm_must "ip route add ${MF_OVL[$c]}/32 dev g-bad7 && ip route add $block dev g-bad8" || return 1
}

t_badkey_icmp() { # meshfwd -> kernel with the wrong key: ICMP port unreachable, counted
    local r v
    r=$(mf_ping "${BADKEY}c1" "${CASE_KOVL[bad7]}" 2)
    [[ $r == 0/* ]] || { REASON="ping over a mismatched key got replies: $r"; return 1; }
    v=$(mf_wait_stat "$BADKEY" errors.icmp_port_unreachable -ge 1 5) ||
        { REASON="errors.icmp_port_unreachable=$v after 2 pings with the wrong key"; return 1; }
    note "errors.icmp_port_unreachable=$v"
}

t_badkey_rx() { # kernel -> meshfwd with the wrong key: dropped as key_mismatch
    local v
    vm_run "ping -c 2 -i 0.3 -W 1 ${MF_OVL[${BADKEY}c1]}" && { REASON="VM ping with key 7 to a key-8 meshfwd got replies"; return 1; }
    v=$(mf_wait_stat "$BADKEY" drops.key_mismatch -ge 2 5) || { REASON="drops.key_mismatch=$v after 2 pings with key 7"; return 1; }
}

t_badkey_keeps_working() { # the same meshfwd still reaches a kernel tunnel with its key
    local r
    mf_running "$BADKEY" || { REASON="meshfwd died"; return 1; }
    r=$(mf_ping "$BADKEY" "${CASE_KOVL[bad8]}" 3)
    [[ $r == 3/3 ]] || { REASON="meshfwd VM -> ${CASE_KOVL[bad8]} (key 8 tunnel): $r replies"; return 1; }
}

BAD_TESTS=(icmp rx keeps_working)

# vm_diag CASE — kernel-side counters of the case's tunnel and of UDP, and
# meshfwd's counters, into the test log (for failures)
vm_diag() {
    local dev=${CASE_DEV[$1]:-}
    echo "## diagnostics for $1"
    [[ -n $dev ]] && vm_run -t 10 "ip -s -s link show dev $dev; ip -s link show dev eth0; cat /proc/net/snmp; cat /proc/net/udp; ip fou show" && printf '%s\n' "$KI_OUT"
    [[ -f $(mf_stats_file "$1") ]] && mf_dump_stats "$1"
    echo "##"
}

# ------------------------------------------------------------ mismatches --

# Misconfigured pairs, one line each: the kernel must drop meshfwd's packets and
# count them on the tunnel (/sys/class/net/DEV/statistics/rx_COUNTER_errors).
#   NAME | meshfwd flags | kernel gre options | kernel counter
MISMATCH=(
    "csumoff|--key 7|key 7 csum|crc"      # kernel `csum` requires C on every packet
    "csumon|--key 7 --csum|key 7|crc"     # ... and refuses C on a tunnel without csum
    "iseqoff|--key 7|key 7 iseq|fifo"     # kernel `iseq` requires S on every packet
)

kstat() { # DEV COUNTER — a kernel tunnel counter in the VM
    vm_run -t 10 "cat /sys/class/net/$1/statistics/rx_$2_errors" && printf '%s\n' "$KI_OUT"
}

t_mismatch() { # NAME COUNTER
    local name=$1 ctr=$2 dev=${CASE_DEV[$1]} before after r
    before=$(kstat "$dev" "$ctr") || { REASON="cannot read rx_${ctr}_errors"; return 1; }
    r=$(mf_ping "${name}c1" "${CASE_KOVL[$name]}" 3)
    [[ $r == 0/* ]] || { REASON="container -> VM over a mismatched tunnel got replies: $r"; return 1; }
    after=$(kstat "$dev" "$ctr")
    ((after - before >= 3)) || { REASON="kernel rx_${ctr}_errors $before -> $after after 3 pings"; return 1; }
    mf_running "$name" || { REASON="meshfwd died"; return 1; }
    note "$name: kernel rx_${ctr}_errors $before -> $after; meshfwd $(mf_dump_stats "$name" | tr '\n' ' ')"
}

# seq: restart meshfwd --seq; a kernel `iseq` tunnel remembers the next
# sequence number it expects and drops the restarted sender's lower numbers
# (rx_fifo_errors) until they catch up; re-creating the kernel tunnel resets it.
t_seq_restart() {
    local name=$1 dev=${CASE_DEV[$1]} r before after block
    block=$(mf_addr_json "${MF_UL[$name]}" 1 | _mf_json_get block)
    mf_stop "$name" || { REASON="mf_stop"; return 1; }
    # shellcheck disable=SC2086  # flags are words
    mf_start "$name" ${CASE_FLAGS[$name]} || { REASON="meshfwd did not restart"; return 1; }
    before=$(kstat "$dev" fifo)
    r=$(mf_ping "${name}c1" "${CASE_KOVL[$name]}" 3)
    after=$(kstat "$dev" fifo)
    note "after the restart: ping $r, kernel rx_fifo_errors $before -> $after"
    [[ $r == 0/* ]] || { REASON="after a meshfwd restart the iseq tunnel still answered ($r): behaviour changed, update docs/OPERATIONS.md"; return 1; }
    ((after - before >= 3)) || { REASON="kernel rx_fifo_errors $before -> $after"; return 1; }
    vm_run "ip link set $dev down && ip link set $dev up && ip route replace $block dev $dev"
    r=$(mf_ping "${name}c1" "${CASE_KOVL[$name]}" 3)
    note "after ip link set $dev down/up: ping $r"
    vm_must "ip link del $dev && ip link add $dev type gre local ${CASE_KUL[$name]} remote ${MF_UL[$name]} ttl 64 ${CASE_KOPTS[$name]} && ip link set $dev up && ip addr add ${CASE_KOVL[$name]}/32 dev $dev && ip route add $block dev $dev" ||
        { REASON="re-creating $dev: $KI_OUT"; return 1; }
    r=$(mf_ping "${name}c1" "${CASE_KOVL[$name]}" 3)
    [[ $r == 3/3 ]] || { REASON="after re-creating the kernel tunnel: ping $r"; return 1; }
}

# ------------------------------------------------------------ kernel datapath --
#
# meshfwd --datapath kernel INSIDE the VM (a static build appended to the
# initramfs: one collect-metadata GRE device "mfk0" with the eBPF programs on
# clsact) against userspace meshfwd in a host-side case namespace. One case at
# a time (one collect-metadata GRE device per namespace), after all the
# ip_gre cases: the device takes every GRE packet no kernel tunnel matches.
#   NAME | host meshfwd flags | VM meshfwd flags | the same as kernel gre options (for t_wire)
KD_CASES=(
    "kdkey|--key 9|--datapath kernel --key 9|key 9"
    "kdcsum|--key 9 --csum|--datapath kernel --key 9 --csum|key 9 csum"
    "kdauto||--datapath auto||off"
    "kdautogro||--datapath auto||on"
)
KD_TESTS=(ping_to_vm ping_from_vm tcp_to_vm tcp_from_vm http_from_vm http_to_host wire counters
    kd_counters kd_craft kd_kill9_restart kd_sigterm)
# userspace meshfwd in the VM where ip_gre is loaded: --datapath auto on an
# unkeyed grid falls back to it below 6.3. Two things the kernel does to GRE
# it does not own (docs/EBPF.md): ip_gre answers it with ICMP port
# unreachable unless meshfwd's drop-all collect-metadata device mfgrequiet
# takes it (kd_us_icmp), and with GRO on the VM's NIC (kdautogro) GRE GRO
# merges packets before meshfwd sees them, which the fanout path must write
# to the TUN as TSO writes or the VM counts TCP checksum errors (kd_us_csum;
# before the fix: InCsumErrors 0 -> 781, tcp_to_vm and http_to_host failed).
KD_US_TESTS=(ping_to_vm ping_from_vm tcp_to_vm tcp_from_vm http_from_vm http_to_host wire kd_us_icmp
    kd_us_csum kd_counters kd_craft kd_sigterm)
declare -A KD_CSUM0=()
KD_DEV=mfk0
KD_BIN=""
KD_TPUT=""   # examples/mftput, the TCP throughput probe of kdbench
declare -A KD_VMFLAGS=()

# kd_build — the static meshfwd (and mftput) for the VM (cargo, incremental)
kd_build() {
    local target=x86_64-unknown-linux-gnu
    command -v cargo >/dev/null || { mf_log "cargo not found: the VM needs a static meshfwd build"; return 1; }
    (cd "$MF_REPO" && RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --release --bin meshfwd --example mftput --target "$target") \
        >"$MF_RUN_DIR/kd-build.log" 2>&1 || { tail -n 5 "$MF_RUN_DIR/kd-build.log" >&2; mf_log "static build failed"; return 1; }
    KD_BIN=$MF_REPO/target/$target/release/meshfwd
    KD_TPUT=$MF_REPO/target/$target/release/examples/mftput
    ldd "$KD_BIN" 2>&1 | grep -qE 'statically linked|not a dynamic executable' ||
        { mf_log "$KD_BIN is not statically linked"; return 1; }
}

# kd_vm_start [-n NETNS] NAME ARGS... — meshfwd ARGS in the VM (in the VM's
# network namespace NETNS), in the background (its exit code in
# /tmp/NAME.rc), ready when its stats file exists
kd_vm_start() {
    local n ns=""
    if [[ $1 == -n ]]; then ns="/usr/sbin/ip netns exec $2 "; shift 2; fi
    n=$1; shift
    vm_run "rm -f /tmp/$n.json /tmp/$n.rc /tmp/$n.pid; (${ns}/usr/bin/meshfwd --stats-file /tmp/$n.json $* >>/tmp/$n.log 2>&1 & echo \$! >/tmp/$n.pid; wait \$!; echo \$? >/tmp/$n.rc) >/dev/null 2>&1 &
        for i in \$(seq 300); do [ -s /tmp/$n.json ] && exit 0; [ -e /tmp/$n.rc ] && exit 1; sleep 0.1; done; exit 1" ||
        { vm_run "cat /tmp/$n.log"; mf_log "meshfwd in the VM did not start: $KI_OUT"; return 1; }
}

# kd_vm_stop NAME SIGNAL — signal the VM's meshfwd and wait (30 s) for its exit code in KI_OUT
kd_vm_stop() {
    vm_run -t 40 "kill -$2 \$(cat /tmp/$1.pid); for i in \$(seq 300); do [ -e /tmp/$1.rc ] && { cat /tmp/$1.rc; exit 0; }; sleep 0.1; done; exit 1"
}

# kd_stat NAME KEY — a counter of the VM meshfwd's stats file (drops.X, tx_packets)
kd_stat() {
    vm_run "cat /tmp/$1.json" || return 1
    "$MF_PY" -c 'import json,sys; d=json.loads(sys.stdin.read()); k=sys.argv[1].split(".")
for p in k: d=d[p]
print(d)' "$2" <<<"$KI_OUT"
}

kd_setup() { # NAME INDEX HOST_FLAGS VM_FLAGS KOPTS
    local name=$1 idx=$2 mul kul
    mul=192.168.20.$((60 + idx)); kul=192.168.30.$((60 + idx))
    mf_vm_add "$name" "$mul" || return 1
    mf_container_add "$name" 1 || return 1
    CASE_KUL[$name]=$kul; CASE_KOVL[$name]=$(mf_vm_addr "$kul") || return 1
    CASE_DEV[$name]=$KD_DEV; CASE_FLAGS[$name]=$3; CASE_KOPTS[$name]=$5; KD_VMFLAGS[$name]=$4
    # shellcheck disable=SC2086  # flags are words
    mf_start "$name" $3 || return 1
    vm_must "ip addr add $kul/16 dev eth0" || return 1
    kd_vm_start "$name" --local "$kul" "$4" "$KD_DEV" || return 1
    vm_run "cat /tmp/$name.log; ip -d link show $KD_DEV; /usr/sbin/tc qdisc show dev $KD_DEV; /usr/sbin/tc filter show dev $KD_DEV ingress; /usr/sbin/tc filter show dev $KD_DEV egress" &&
        printf '%s\n' "$KI_OUT" | sed "s/^/# vm $name: /" >>"$MF_RUN_DIR/setup.log"
    note "kd case $name: meshfwd ${MF_UL[$name]} $3 <-> VM meshfwd --datapath kernel $4 on $kul (${CASE_KOVL[$name]})"
}

# the VM meshfwd's own counters: traffic both ways, no drop
t_kd_counters() {
    local bad f=$MF_RUN_DIR/kd-$1.json
    sleep 1.2
    vm_run "cat /tmp/$1.json" || { REASON="no stats file in the VM"; return 1; }
    printf '%s\n' "$KI_OUT" >"$f"
    bad=$("$MF_PY" "$MF_TOOLS/mfjson.py" stats-health "$f") || { REASON="cannot parse the VM stats file"; return 1; }
    [[ -z $bad ]] || { REASON="VM meshfwd: $bad"; return 1; }
}

# crafted GRE from the host-side VM, each defect once: the ingress program
# drops it and counts exactly its reason (inner source of another VM, a
# wrong key, an inner destination outside this VM's block)
t_kd_craft() {
    local name=$1 key="" wrong="--key 1" csum=() defect reason before after opts
    [[ " ${CASE_FLAGS[$name]} " == *" --csum "* ]] && csum=(--csum)
    if [[ " ${CASE_FLAGS[$name]} " =~ \ --key\ ([0-9]+) ]]; then
        key="--key ${BASH_REMATCH[1]}"; wrong="--key $((BASH_REMATCH[1] + 1))"
    fi
    for defect in "spoofed_source|$key --inner-src 241.99.0.2 --inner-dst ${CASE_KOVL[$name]}" \
        "key_mismatch|$wrong --inner-src ${MF_OVL[${name}c1]} --inner-dst ${CASE_KOVL[$name]}" \
        "inner_dst_not_local|$key --inner-src ${MF_OVL[${name}c1]} --inner-dst 241.99.0.2"; do
        reason=${defect%%|*}; opts=${defect#*|}
        before=$(kd_stat "$name" "drops.$reason") || { REASON="cannot read the VM stats"; return 1; }
        # shellcheck disable=SC2086  # options are words
        mf_exec "$name" timeout 10 "$MF_PY" "$MF_TOOLS/gre_craft.py" --src "${MF_UL[$name]}" --dst "${CASE_KUL[$name]}" \
            "${csum[@]}" $opts >/dev/null || { REASON="gre_craft.py failed ($reason)"; return 1; }
        for _ in 1 2 3 4 5; do
            sleep 1
            after=$(kd_stat "$name" "drops.$reason")
            ((after > before)) && break
        done
        ((after == before + 1)) || { REASON="VM drops.$reason $before -> $after after one crafted packet"; return 1; }
        note "VM drops.$reason $before -> $after"
    done
}

# the VM's ip_gre would answer GRE meant for its userspace meshfwd with ICMP
# port unreachable (no tunnel of its own matches); meshfwd creates a
# collect-metadata GRE device with drop-all programs (mfgrequiet) that takes
# those packets quietly: the host-side meshfwd counts no ICMP and nothing else
t_kd_us_icmp() {
    local v bad
    vm_run "grep -c 'created mfgrequiet' /tmp/$1.log && ip -d link show mfgrequiet && /usr/sbin/tc filter show dev mfgrequiet ingress" ||
        { REASON="no mfgrequiet device in the VM: $KI_OUT"; return 1; }
    mf_exec "$1" true
    sleep 1.2
    v=$(mf_stat "$1" errors.icmp_port_unreachable)
    [[ $v == 0 ]] || { REASON="host meshfwd errors.icmp_port_unreachable=$v: the VM's ip_gre answered GRE it does not own"; return 1; }
    bad=$("$MF_PY" "$MF_TOOLS/mfjson.py" stats-health "$(mf_stats_file "$1")")
    [[ -z ${bad// /} ]] || { REASON="$bad"; return 1; }
    note "host meshfwd errors.icmp_port_unreachable=$v (mfgrequiet in the VM)"
}

# Tcp InCsumErrors of the VM (/proc/net/snmp)
vm_tcp_csum_errors() {
    vm_run "awk '/^Tcp:/ { if (!h) { for (i = 1; i <= NF; i++) if (\$i == \"InCsumErrors\") c = i; h = 1 } else print \$c }' /proc/net/snmp" &&
        printf '%s\n' "${KI_OUT//[^0-9]/}"
}

# the transfers into the VM (tcp_to_vm, http_to_host) left no TCP checksum
# error in the VM: GRE GRO merged packets (GRO on, case kdautogro) must reach
# the TUN as TSO writes, not as oversized packets with a partial checksum.
# Also reports how many merged packets the VM's meshfwd received (its
# rx_bytes per rx_packets above the underlay MTU shows them).
t_kd_us_csum() {
    local name=$1 now rxp rxb
    now=$(vm_tcp_csum_errors) || { REASON="cannot read the VM's /proc/net/snmp"; return 1; }
    rxp=$(kd_stat "$name" rx_packets); rxb=$(kd_stat "$name" rx_bytes)
    note "VM Tcp InCsumErrors ${KD_CSUM0[$name]:-?} -> $now; VM meshfwd rx_packets $rxp rx_bytes $rxb (mean $((rxb / (rxp > 0 ? rxp : 1))) B)"
    [[ -n ${KD_CSUM0[$name]:-} && $now == "${KD_CSUM0[$name]}" ]] ||
        { REASON="VM Tcp InCsumErrors ${KD_CSUM0[$name]:-?} -> $now"; return 1; }
}

# kill -9 leaves the device; a restart reclaims it and forwards again
t_kd_kill9_restart() {
    local name=$1 r
    kd_vm_stop "$name" KILL >/dev/null || { REASON="meshfwd in the VM did not die: $KI_OUT"; return 1; }
    vm_run "ip link show $KD_DEV" || { REASON="after kill -9 $KD_DEV is gone (expected it left behind)"; return 1; }
    kd_vm_start "$name" --local "${CASE_KUL[$name]}" "${KD_VMFLAGS[$name]}" "$KD_DEV" ||
        { REASON="restart after kill -9 failed"; return 1; }
    vm_run "grep -c 'removed the stale kernel-datapath device' /tmp/$name.log" || { REASON="restart log does not mention the stale device"; return 1; }
    r=$(mf_ping "${name}c1" "${CASE_KOVL[$name]}" 3)
    [[ $r == 3/3 ]] || { REASON="after the restart: container -> VM $r replies"; return 1; }
}

# SIGTERM: exit 0, device (and with it qdisc, filters, programs) gone
t_kd_sigterm() {
    local name=$1 rc
    kd_vm_stop "$name" TERM || { REASON="meshfwd in the VM did not exit on SIGTERM: $KI_OUT"; return 1; }
    rc=${KI_OUT//[^0-9]/}
    [[ $rc == 0 ]] || { REASON="exit code $rc after SIGTERM"; return 1; }
    vm_run "ip link show $KD_DEV" && { REASON="$KD_DEV still exists after SIGTERM"; return 1; }
    vm_run "ip link show mfgrequiet" && { REASON="mfgrequiet still exists after SIGTERM"; return 1; }
    [[ ${KD_VMFLAGS[$name]} == *"--datapath kernel"* ]] || return 0
    vm_run "grep -c 'removed $KD_DEV' /tmp/$name.log" || { REASON="no removal in the log"; return 1; }
}

# below 6.3 an unkeyed grid is refused in kernel mode and auto falls back,
# saying why; `meshfwd check` says the same
t_kd_unkeyed() {
    local kul=192.168.30.60
    vm_must "ip addr add $kul/16 dev eth0 2>/dev/null; true" || { REASON="address"; return 1; }
    vm_run "/usr/bin/meshfwd --datapath kernel --local $kul $KD_DEV" && { REASON="unkeyed kernel mode started on $(uname -r)"; return 1; }
    [[ $KI_OUT == *"BPF_F_NO_TUNNEL_KEY needs Linux 6.3"* ]] || { REASON="refusal message: $KI_OUT"; return 1; }
    vm_run "ip link show $KD_DEV" && { REASON="$KD_DEV left behind by the refused start"; return 1; }
    kd_vm_start kdfallback --datapath auto --local "$kul" "$KD_DEV" || { REASON="auto did not start"; return 1; }
    vm_run "grep 'datapath auto' /tmp/kdfallback.log" || { REASON="no 'datapath auto' line"; return 1; }
    [[ $KI_OUT == *"datapath auto: userspace, because"*"6.3"* ]] || { REASON="auto said: $KI_OUT"; return 1; }
    note "$KI_OUT"
    kd_vm_stop kdfallback TERM >/dev/null
    vm_run "/usr/bin/meshfwd check --json --local $kul | grep -o '\"name\":\"datapath_auto\"[^}]*'"
    [[ $KI_OUT == *"pick userspace"*"6.3"* ]] || { REASON="check without --key: $KI_OUT"; return 1; }
    vm_run "/usr/bin/meshfwd check --json --key 9 --local $kul | grep -o '\"name\":\"datapath_auto\"[^}]*'"
    [[ $KI_OUT == *"would try kernel"* ]] || { REASON="check --key 9: $KI_OUT"; return 1; }
    note "check --key 9: $KI_OUT"
}

kd_main() {
    local line name hflags vflags kopts gro idx=0 t tests
    _case_wanted kdunkeyed unkeyed && rn_test_inline kdunkeyed/unkeyed t_kd_unkeyed
    for line in "${KD_CASES[@]}"; do
        IFS='|' read -r name hflags vflags kopts gro <<<"$line"
        idx=$((idx + 1))
        tests=("${KD_TESTS[@]}")
        [[ $vflags == *"--datapath kernel"* ]] || tests=("${KD_US_TESTS[@]}")
        _case_wanted "$name" "${tests[@]}" || continue
        if ! kd_setup "$name" "$idx" "$hflags" "$vflags" "$kopts" || ! case_servers "$name"; then
            rn_result "$name/setup" "$(tail -n 1 "$MF_RUN_DIR/setup.log")"; console_tail
        else
            vm_run "ethtool -K eth0 gro ${gro:-on}" || rn_result "$name/gro" "ethtool -K eth0 gro ${gro:-on}: $KI_OUT"
            KD_CSUM0[$name]=$(vm_tcp_csum_errors)
            # the datapath the VM's meshfwd says it runs
            vm_run "grep -o 'datapath [a-z]*[ :(,][^,]*' /tmp/$name.log | head -n 2" && note "$name in the VM: ${KI_OUT//$'\n'/; }"
            for t in "${tests[@]}"; do rn_test_inline "$name/$t" "t_$t" "$name" $((40 + idx)); done
        fi
        # whatever happened: nothing of this case left in the VM
        vm_run "[ -e /tmp/$name.pid ] && kill -9 \$(cat /tmp/$name.pid) 2>/dev/null; sleep 0.5; ip link del $KD_DEV 2>/dev/null; true"
    done
}

_kd_wanted() {
    local line
    _case_wanted kdunkeyed unkeyed && return 0
    for line in "${KD_CASES[@]}"; do _case_wanted "${line%%|*}" "${KD_TESTS[@]}" "${KD_US_TESTS[@]}" && return 0; done
    return 1
}

# ------------------------------------------------------------ kernel mode ⇄ ip_gre --
#
# kernel-mode meshfwd ⇄ a plain ip_gre tunnel, both INSIDE the VM: two
# network namespaces of the VM, NAME-m (meshfwd --datapath kernel, device
# mfk0) and NAME-k (`ip link add g … type gre KOPTS`, no meshfwd, the
# meshfwd VM's block routed into it), joined by a veth pair as underlay
# (192.168.40.1 ⇄ 192.168.40.2). Both ways: ping, TCP (the blob, md5), HTTP
# (busybox httpd/wget); "counters": meshfwd's stats (traffic both ways, no
# drop, no error) and the ip_gre tunnel's (packets both ways, no error);
# "sigterm": exit 0, mfk0 gone from its namespace.
#   NAME | VM meshfwd flags | the same as ip_gre options
# kguser: the same with --user nobody, and "user": after start-up meshfwd
# runs as uid 65534 with CAP_NET_ADMIN and CAP_BPF only (CapEff/CapPrm) and
# its counters keep moving (the counter map and the device statistics are
# still readable); "sigterm" then shows that it still removes the device.
KG_CASES=(
    "kgkey|--key 5|key 5"
    "kgcsum|--key 5 --csum|key 5 csum"
    "kguser|--key 5 --user nobody|key 5|user"
)
KG_TESTS=(ping_m2k ping_k2m tcp_m2k tcp_k2m http_m2k http_k2m counters)
KG_MUL=192.168.40.1
KG_KUL=192.168.40.2
declare -A KG_MOVL=() KG_KOVL=()

# kg_pair NAME A B AUL BUL — VM namespaces NAME-A and NAME-B joined by a veth pair (v0 ⇄ v1)
kg_pair() {
    local n=$1
    vm_must "mkdir -p /run/netns && ip netns add $n-$2 && ip netns add $n-$3 &&
        ip link add v0 netns $n-$2 type veth peer name v1 netns $n-$3 &&
        ip -n $n-$2 link set lo up && ip -n $n-$3 link set lo up &&
        ip -n $n-$2 addr add $4/24 dev v0 && ip -n $n-$3 addr add $5/24 dev v1 &&
        ip -n $n-$2 link set v0 up && ip -n $n-$3 link set v1 up &&
        ip netns exec $n-$2 sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 &&
        ip netns exec $n-$3 sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"
}

# kg_pair_del NAME A B — stop every process in both namespaces, delete them
kg_pair_del() {
    vm_run -t 20 "for ns in $1-$2 $1-$3; do p=\$(ip netns pids \$ns 2>/dev/null); [ -n \"\$p\" ] && kill -9 \$p; done; sleep 0.3; ip netns del $1-$2; ip netns del $1-$3; true"
}

kg_setup() { # NAME FLAGS KOPTS
    local n=$1 block
    KG_MOVL[$n]=$(mf_vm_addr "$KG_MUL") || return 1
    KG_KOVL[$n]=$(mf_vm_addr "$KG_KUL") || return 1
    block=$(mf_addr_json "$KG_MUL" 1 | _mf_json_get block) || return 1
    kg_pair "$n" m k "$KG_MUL" "$KG_KUL" || return 1
    vm_must "ip -n $n-k link add g type gre local $KG_KUL remote $KG_MUL ttl 64 $3 &&
        ip -n $n-k link set g up && ip -n $n-k addr add ${KG_KOVL[$n]}/32 dev g && ip -n $n-k route add $block dev g" || return 1
    kd_vm_start -n "$n-m" "$n" --layout wide --local "$KG_MUL" --datapath kernel "$2" "$KD_DEV" || return 1
    vm_must "ip netns exec $n-m httpd -p 80 -h /www && ip netns exec $n-k httpd -p 80 -h /www" || return 1
    vm_run "cat /tmp/$n.log; ip -n $n-m -d link show $KD_DEV; ip -n $n-k -d link show g" &&
        printf '%s\n' "$KI_OUT" | sed "s/^/# vm $n: /" >>"$MF_RUN_DIR/setup.log"
    note "kg case $n: VM netns $n-m meshfwd --datapath kernel $2 on $KG_MUL (${KG_MOVL[$n]}) <-> VM netns $n-k ip_gre $3 on $KG_KUL (${KG_KOVL[$n]})"
}

_kg_ping() { # NAME FROM_NS TO_ADDR
    vm_run "ip netns exec $1-$2 ping -c 3 -i 0.3 -W 2 $3" ||
        { REASON="$2 -> $3: $(tail -n 2 <<<"$KI_OUT" | tr '\n' ' ')"; return 1; }
}
t_kg_ping_m2k() { _kg_ping "$1" m "${KG_KOVL[$1]}"; }
t_kg_ping_k2m() { _kg_ping "$1" k "${KG_MOVL[$1]}"; }

_kg_tcp() { # NAME FROM TO TO_ADDR PORT — the blob over busybox nc, md5 compared
    local n=$1 rx=/tmp/rx.$1.$3 md5 size
    size=$(stat -c %s "$BLOB")
    vm_run "rm -f $rx; (sleep 120 | ip netns exec $n-$3 nc -l -p $5 >$rx 2>/dev/null) & for i in \$(seq 50); do ip netns exec $n-$3 netstat -ltn | grep -q :$5 && exit 0; sleep 0.1; done; exit 1" ||
        { REASON="nc -l in $n-$3 did not listen: $KI_OUT"; return 1; }
    vm_run "timeout 30 /usr/sbin/ip netns exec $n-$2 nc $4 $5 </blob" || { REASON="nc $2 -> $4:$5: $KI_OUT"; return 1; }
    vm_run "for i in \$(seq 100); do [ \$(wc -c <$rx) -ge $size ] && break; sleep 0.1; done; md5sum $rx; wc -c <$rx"
    md5=$(awk 'NR == 1 { print $1 }' <<<"$KI_OUT")
    [[ $md5 == "$(blob_md5)" ]] || { REASON="$3 received $(tail -n 1 <<<"$KI_OUT") bytes with md5 $md5, sent $size"; return 1; }
}
t_kg_tcp_m2k() { _kg_tcp "$1" m k "${KG_KOVL[$1]}" 5301; }
t_kg_tcp_k2m() { _kg_tcp "$1" k m "${KG_MOVL[$1]}" 5302; }

_kg_http() { # NAME FROM TO_ADDR
    local md5
    vm_run "timeout 30 /usr/sbin/ip netns exec $1-$2 wget -q -O - http://$3/blob | md5sum" || { REASON="wget in $1-$2: $KI_OUT"; return 1; }
    md5=$(awk 'NR == 1 { print $1 }' <<<"$KI_OUT")
    [[ $md5 == "$(blob_md5)" ]] || { REASON="wget http://$3/blob in $1-$2: md5 $md5"; return 1; }
}
t_kg_http_m2k() { _kg_http "$1" m "${KG_KOVL[$1]}"; }
t_kg_http_k2m() { _kg_http "$1" k "${KG_MOVL[$1]}"; }

# meshfwd's counters (traffic both ways, no drop, no error) and the ip_gre
# tunnel's (packets both ways; no receive or transmit error of any kind)
t_kg_counters() {
    local n=$1 bad f=$MF_RUN_DIR/kg-$1.json k v s=""
    sleep 1.2
    vm_run "cat /tmp/$n.json" || { REASON="no stats file in the VM"; return 1; }
    printf '%s\n' "$KI_OUT" >"$f"
    bad=$("$MF_PY" "$MF_TOOLS/mfjson.py" stats-health "$f") || { REASON="cannot parse the VM stats file"; return 1; }
    [[ -z $bad ]] || { REASON="meshfwd: $bad"; return 1; }
    vm_run "ip netns exec $n-k sh -c 'cd /sys/class/net/g/statistics && for f in *; do echo \$f \$(cat \$f); done'" ||
        { REASON="cannot read the ip_gre tunnel's statistics: $KI_OUT"; return 1; }
    while read -r k v; do
        case $k in
        rx_packets | tx_packets) ((v > 0)) || bad+=" $k=$v" ;;
        *error* | *dropped*) ((v == 0)) || bad+=" $k=$v" ;;
        esac
        [[ $k == [rt]x_packets ]] && s+=" $k=$v"
    done <<<"$KI_OUT"
    [[ -z $bad ]] || { REASON="ip_gre tunnel:$bad"; return 1; }
    note "ip_gre tunnel:$s; meshfwd $("$MF_PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print("rx_packets=%s tx_packets=%s" % (d["rx_packets"], d["tx_packets"]))' "$f")"
}

t_kg_user() {
    local n=$1 st uid caps r0 r1
    vm_run "cat /proc/\$(cat /tmp/$n.pid)/status" || { REASON="no /proc status of meshfwd: $KI_OUT"; return 1; }
    st=$KI_OUT
    uid=$(awk '/^Uid:/ { print $2 "/" $3 "/" $4 }' <<<"$st")
    caps=$(awk '/^Cap(Eff|Prm|Inh):/ { printf "%s%s ", $1, $2 }' <<<"$st")
    [[ $uid == 65534/65534/65534 ]] || { REASON="uid (real/effective/saved) $uid, want 65534"; return 1; }
    # CAP_NET_ADMIN (12) and CAP_BPF (39): 1 << 12 | 1 << 39
    [[ $caps == "CapInh:0000000000000000 CapPrm:0000008000001000 CapEff:0000008000001000 " ]] ||
        { REASON="capabilities $caps, want CAP_NET_ADMIN and CAP_BPF only"; return 1; }
    grep -q '^NoNewPrivs:.*1' <<<"$st" || { REASON="no_new_privs not set"; return 1; }
    r0=$(kd_stat "$n" rx_packets) || { REASON="cannot read the stats file"; return 1; }
    _kg_ping "$n" k "${KG_MOVL[$n]}" || return 1
    sleep 2.2
    r1=$(kd_stat "$n" rx_packets)
    ((r1 >= r0 + 3)) || { REASON="rx_packets $r0 -> $r1 after 3 pings: counters stopped as uid 65534"; return 1; }
    note "uid $uid, $caps; rx_packets $r0 -> $r1 after 3 pings"
}

t_kg_sigterm() {
    local n=$1 rc
    kd_vm_stop "$n" TERM || { REASON="meshfwd in $n-m did not exit on SIGTERM: $KI_OUT"; return 1; }
    rc=${KI_OUT//[^0-9]/}
    [[ $rc == 0 ]] || { REASON="exit code $rc after SIGTERM"; return 1; }
    vm_run "ip -n $n-m link show $KD_DEV" && { REASON="$KD_DEV still exists in $n-m after SIGTERM"; return 1; }
    vm_run "grep -c 'removed $KD_DEV' /tmp/$n.log" || { REASON="no removal in the log: $(vm_run "tail -n 3 /tmp/$n.log"; echo "$KI_OUT")"; return 1; }
}

kg_main() {
    local line name flags kopts extra t tests
    for line in "${KG_CASES[@]}"; do
        IFS='|' read -r name flags kopts extra <<<"$line"
        # shellcheck disable=SC2206  # extra tests are words
        tests=("${KG_TESTS[@]}" $extra sigterm)
        _case_wanted "$name" "${tests[@]}" || continue
        if ! kg_setup "$name" "$flags" "$kopts"; then
            rn_result "$name/setup" "$(tail -n 1 "$MF_RUN_DIR/setup.log")"; console_tail
        else
            for t in "${tests[@]}"; do rn_test_inline "$name/$t" "t_kg_$t" "$name"; done
        fi
        kg_pair_del "$name" m k
    done
}

_kg_wanted() {
    local line
    for line in "${KG_CASES[@]}"; do _case_wanted "${line%%|*}" "${KG_TESTS[@]}" user sigterm && return 0; done
    return 1
}

# ------------------------------------------------------------ throughput in the VM --
#
# One TCP stream (examples/mftput, static, in the initramfs) between two
# network namespaces of the VM joined by a veth pair (192.168.50.1 ⇄ .2),
# one such pair per datapath, all set up at once and identical but for the
# tunnel: "bk" kernel-mode meshfwd on both ends (--key 5), "bx" kernel VXLAN
# (id 42, port 4789), "bg" userspace meshfwd --encap gre --key 5, "bu"
# userspace meshfwd --encap udp --key 5. Every process of all four stays up
# during every measurement.
#   kdtput/smoke   (default) one 1-second transfer per datapath: the server
#                  received every byte the client sent, through each datapath
#   kdbench/ratios (only when a command-line pattern names kdbench) the four
#                  alternated, MF_KDBENCH_REPS rounds of MF_KDBENCH_SECS each,
#                  the order rotated per round; prints the median and range of
#                  each datapath's ratio to VXLAN within a round, then one more
#                  kernel-mode run with kernel.bpf_stats_enabled=1 for the
#                  programs' own cost per packet (fdinfo run_time_ns/run_cnt)
: "${MF_KDBENCH_REPS:=5}"
: "${MF_KDBENCH_SECS:=5}"
: "${MF_KDBENCH_TARGET:=0.9}"   # kdbench/target: median kernel-mode/VXLAN ratio at least this
KB_DPS=(bk bx bg bu)
declare -A KB_NAME=([bk]="kernel-mode meshfwd" [bx]="kernel VXLAN" [bg]="userspace meshfwd --encap gre" [bu]="userspace meshfwd --encap udp")
declare -A KB_DST=()
KB_AUL=192.168.50.1
KB_BUL=192.168.50.2
KB_READY=""

_kb_named() { # was kdbench named on the command line?
    local p
    for p in "${RN_PATTERNS[@]}"; do [[ $p == *kdbench* ]] && return 0; done
    return 1
}

kb_setup() {
    local dp flags
    KB_READY=0
    for dp in "${KB_DPS[@]}"; do
        kg_pair "$dp" a b "$KB_AUL" "$KB_BUL" || return 1
        case $dp in
        bx)
            vm_must "ip -n bx-a link add vx0 type vxlan id 42 local $KB_AUL remote $KB_BUL dstport 4789 dev v0 &&
                ip -n bx-b link add vx0 type vxlan id 42 local $KB_BUL remote $KB_AUL dstport 4789 dev v1 &&
                ip -n bx-a addr add 10.99.0.1/24 dev vx0 && ip -n bx-b addr add 10.99.0.2/24 dev vx0 &&
                ip -n bx-a link set vx0 up && ip -n bx-b link set vx0 up" || return 1
            KB_DST[$dp]=10.99.0.2
            ;;
        *)
            case $dp in
            bk) flags="--datapath kernel --key 5 $KD_DEV" ;;
            bg) flags="--encap gre --key 5 mf0" ;;
            bu) flags="--encap udp --key 5 mf0" ;;
            esac
            kd_vm_start -n "$dp-a" "$dp-a" --layout wide --local "$KB_AUL" "$flags" || return 1
            kd_vm_start -n "$dp-b" "$dp-b" --layout wide --local "$KB_BUL" "$flags" || return 1
            KB_DST[$dp]=$(mf_vm_addr "$KB_BUL") || return 1
            ;;
        esac
        vm_must "(ip netns exec $dp-b mftput server 0.0.0.0:5400 >/tmp/tput-$dp.log 2>&1 &) ; for i in \$(seq 50); do ip netns exec $dp-b netstat -ltn | grep -q :5400 && exit 0; sleep 0.1; done; exit 1" ||
            return 1
        vm_run "ip -n $dp-a -d link show; ip -n $dp-a route; grep -h 'datapath\|MTU' /tmp/$dp-a.log 2>/dev/null | head -n 3" &&
            printf '%s\n' "$KI_OUT" | sed "s/^/# vm $dp-a: /" >>"$MF_RUN_DIR/setup.log"
    done
    KB_READY=1
}

# kb_run DP SECONDS — one transfer; its Mbit/s in KB_MBIT
kb_run() {
    KB_MBIT=""
    vm_run -t $(($2 * 3 + 60)) "ip netns exec $1-a mftput client ${KB_DST[$1]}:5400 $2" ||
        { REASON="${KB_NAME[$1]}: mftput client: $KI_OUT"; return 1; }
    [[ $KI_OUT =~ mbit=([0-9.]+) ]] || { REASON="${KB_NAME[$1]}: mftput said $KI_OUT"; return 1; }
    KB_MBIT=${BASH_REMATCH[1]}
    echo "# $1 (${KB_NAME[$1]}): $KI_OUT"
}

t_kb_smoke() {
    local dp out=""
    [[ $KB_READY == 1 ]] || { REASON="setup failed: $(tail -n 1 "$MF_RUN_DIR/setup.log")"; return 1; }
    for dp in "${KB_DPS[@]}"; do
        kb_run "$dp" 1 || return 1
        out+=" $dp=${KB_MBIT}"
    done
    note "one 1-second TCP stream each, Mbit/s (TCG, only for scale):$out"
}

t_kb_ratios() {
    local r i dp f=$MF_RUN_DIR/kdbench.txt pid cnt ns
    [[ $KB_READY == 1 ]] || { REASON="setup failed: $(tail -n 1 "$MF_RUN_DIR/setup.log")"; return 1; }
    : >"$f"
    for ((r = 0; r < MF_KDBENCH_REPS; r++)); do
        for ((i = 0; i < ${#KB_DPS[@]}; i++)); do
            dp=${KB_DPS[$(((i + r) % ${#KB_DPS[@]}))]}
            kb_run "$dp" "$MF_KDBENCH_SECS" || return 1
            echo "$r $dp $KB_MBIT" >>"$f"
        done
    done
    "$MF_PY" - "$f" "$MF_KDBENCH_TARGET" >"$MF_RUN_DIR/kdbench-summary.txt" <<'PY' || { REASON="summary failed"; return 1; }
import sys, statistics as st
rounds = {}
for line in open(sys.argv[1]):
    r, dp, m = line.split()
    rounds.setdefault(r, {})[dp] = float(m)
names = {"bk": "kernel-mode meshfwd", "bg": "userspace --encap gre", "bu": "userspace --encap udp", "bx": "kernel VXLAN"}
print(f"# {len(rounds)} rounds; per round each datapath's Mbit/s divided by VXLAN's")
for dp in ("bk", "bg", "bu", "bx"):
    mb = [v[dp] for v in rounds.values()]
    ra = [v[dp] / v["bx"] for v in rounds.values()]
    print(f"KDBENCH {dp} {names[dp]}: ratio median {st.median(ra):.2f} range {min(ra):.2f}-{max(ra):.2f}; "
          f"Mbit/s median {st.median(mb):.0f} range {min(mb):.0f}-{max(mb):.0f}")
print(f"KDBENCH target kernel-mode >= {sys.argv[2]} x VXLAN: "
      f"{'met' if st.median([v['bk'] / v['bx'] for v in rounds.values()]) >= float(sys.argv[2]) else 'MISSED'} (median)")
PY
    # (kb_main prints the KDBENCH lines of $MF_RUN_DIR/kdbench-summary.txt)
    # the programs' own cost: one more kernel-mode run with BPF run-time stats on
    vm_run "sysctl -qw kernel.bpf_stats_enabled=1" || { REASON="kernel.bpf_stats_enabled: $KI_OUT"; return 1; }
    kb_run bk "$MF_KDBENCH_SECS" || return 1
    echo "KDBENCH bk with kernel.bpf_stats_enabled=1: $KB_MBIT Mbit/s" >>"$MF_RUN_DIR/kdbench-summary.txt"
    # fdinfo of meshfwd's two program fds (egress is loaded first: the lower
    # prog_id), one line each: prog_id, run_time_ns, run_cnt
    for ns in bk-a bk-b; do
        vm_run "pid=\$(cat /tmp/$ns.pid); for f in /proc/\$pid/fdinfo/*; do grep -q '^prog_type' \$f && grep -h -e '^prog_id' -e '^run_time_ns' -e '^run_cnt' \$f | tr -s '\t\n' '  ' && echo; done; ip -n $ns -s link show $KD_DEV; echo" ||
            { REASON="bpf stats of $ns: $KI_OUT"; return 1; }
        echo "# bpf stats $ns: $KI_OUT"
        printf '%s\n' "$KI_OUT" | grep '^prog_id' | sort -n -k 2 | awk -v ns="$ns" -v secs="$MF_KDBENCH_SECS" '
            { t = $4; c = $6; n++; all += t
              printf "KDBENCH bpf %s %s program: %d runs, %.0f ns per run\n", ns, n == 1 ? "egress" : "ingress", c, c ? t / c : 0 }
            END { printf "KDBENCH bpf %s both programs: %.1f ms in %s s (%.1f %% of the one vCPU)\n", ns, all / 1e6, secs, all / 1e7 / secs }' \
            >>"$MF_RUN_DIR/kdbench-summary.txt"
    done
    vm_run "sysctl -qw kernel.bpf_stats_enabled=0"
    cat "$MF_RUN_DIR/kdbench-summary.txt"
    return 0
}

kb_main() {
    kb_setup || rn_result kdtput/setup "$(tail -n 1 "$MF_RUN_DIR/setup.log")"
    rn_test_inline kdtput/smoke t_kb_smoke
    if _kb_named; then
        if rn_test_inline kdbench/ratios t_kb_ratios; then
            sed 's/^/# /' "$MF_RUN_DIR/kdbench-summary.txt"
            if grep -q '^KDBENCH target .*: met' "$MF_RUN_DIR/kdbench-summary.txt"; then
                rn_ok kdbench/target "kernel-mode >= $MF_KDBENCH_TARGET x VXLAN"
            else
                rn_fail kdbench/target "median kernel-mode/VXLAN ratio below $MF_KDBENCH_TARGET"
            fi
        fi
    fi
    local dp
    for dp in "${KB_DPS[@]}"; do kg_pair_del "$dp" a b; done
}

_kb_wanted() { rn_selected kdtput/smoke || { _kb_named && rn_selected kdbench/ratios; }; }

# ------------------------------------------------------------ main --

# after a failed test: the kernel's and meshfwd's counters of its case, into its log
_diag() { vm_diag "${1%%/*}" >>"$2" 2>&1; }

main() {
    local line name flags kopts needs gro idx t m ctr tests
    rn_need_root
    RN_NEED_HINT="install qemu-system-x86 busybox-static iproute2 ethtool python3 tcpdump tshark"
    rn_need ip ss ethtool tc qemu-system-x86_64 busybox apt-get dpkg-deb "$MF_PY" md5sum gzip tcpdump tshark
    rn_need_x "$MESHFWD"
    mf_init "$MF_BASE" || rn_abort "mf_init"
    rn_init "$MF_RUN_DIR" "$@"
    RN_ON_FAIL=_diag
    echo "# meshfwd kernel GRE interop suite: $MESHFWD, logs in $MF_RUN_DIR"
    exec 3>&2 2>>"$MF_RUN_DIR/setup.log"   # setup chatter to the log

    BLOB=$MF_RUN_DIR/www/blob
    mkdir -p "$MF_RUN_DIR/www" && head -c $((MF_BLOB_KIB * 1024)) /dev/urandom >"$BLOB"

    if ! ki_fetch; then
        rn_result setup/kernel_image "$(tail -n 1 "$MF_RUN_DIR/setup.log")"; rn_finish
    fi
    echo "# kernel $(cat "$KI_KDIR/package"), modules: $(tr '\n' ' ' <"$KI_KDIR/modules.order")"
    MF_LAYOUT_ARGS=(--layout wide)
    if { _kd_wanted || _kg_wanted || _kb_wanted; } && ! kd_build; then
        rn_result setup/kd_build "$(tail -n 1 "$MF_RUN_DIR/setup.log")"; rn_finish
    fi
    # the underlay traffic of the whole run, for diagnosis (kept with the logs on failure)
    if ! { _mf_underlay && mf_tcpdump underlay ul br0 -s 256 && vm_boot; }; then
        rn_result setup/vm_boot "$(tail -n 1 "$MF_RUN_DIR/setup.log")"; console_tail 25; rn_finish
    fi
    echo "# VM booted in ${KI_BOOT_S} s (qemu TCG)"
    # e1000 reports carrier ~1-2 s after link up; ARP requests before that are lost
    vm_must "ip link set eth0 up && httpd -p 80 -h /www && for i in \$(seq 100); do [ \$(cat /sys/class/net/eth0/operstate) = up ] && exit 0; sleep 0.1; done; exit 1" ||
        { rn_result setup/vm_net "eth0 did not come up: $KI_OUT"; console_tail; rn_finish; }
    while read -r m; do
        vm_module "$m" || rn_result "setup/module_$m" "$(tr -d '\r' <"$KI_CONSOLE" | grep "^@@MODULE $m " || echo "no load report")"
    done <"$KI_KDIR/modules.order"

    idx=0
    for line in "${CASES[@]}"; do
        IFS='|' read -r name flags kopts needs gro <<<"$line"
        CASE_GRO[$name]=${gro:-on}
        idx=$((idx + 1))
        _case_wanted "$name" "${GOOD_TESTS[@]}" || continue
        if [[ -n $needs ]] && ! "$MESHFWD" --help 2>/dev/null | grep -q -- "$needs\b"; then
            rn_result "$name/setup" "meshfwd has no $needs flag"; continue
        fi
        if ! case_setup "$name" "$idx" "$flags" "$kopts" dual || ! case_servers "$name"; then
            rn_result "$name/setup" "$(tail -n 1 "$MF_RUN_DIR/setup.log")"; console_tail; continue
        fi
        CASE_NAMES+=("$name")
    done
    idx=20
    for line in "${MISMATCH[@]}"; do
        IFS='|' read -r name flags kopts ctr <<<"$line"
        idx=$((idx + 1))
        _case_wanted "$name" mismatch || continue
        if case_setup "$name" "$idx" "$flags" "$kopts"; then
            MISMATCH_OK+=("$name|$ctr")
        else
            rn_result "$name/setup" "$(tail -n 1 "$MF_RUN_DIR/setup.log")"
        fi
    done
    if _case_wanted "$BADKEY" "${BAD_TESTS[@]}"; then
        if badkey_setup; then CASE_BAD[$BADKEY]=1; else rn_result "$BADKEY/setup" "$(tail -n 1 "$MF_RUN_DIR/setup.log")"; fi
    fi

    # all the cases share the VM; run them one after the other
    idx=0
    for name in "${CASE_NAMES[@]}"; do
        idx=$((idx + 1))
        vm_run "ethtool -K eth0 gro ${CASE_GRO[$name]}" || rn_result "$name/gro" "ethtool -K eth0 gro ${CASE_GRO[$name]}: $KI_OUT"
        tests=("${GOOD_TESTS[@]}")
        [[ " ${CASE_KOPTS[$name]} " == *" encap fou "* ]] && tests+=(fou_burst)
        for t in "${tests[@]}"; do
            rn_test_inline "$name/$t" "t_$t" "$name" "$idx"
        done
        mf_running "$name" || rn_result "$name/meshfwd_alive" "meshfwd died: $(tail -n 3 "$(mf_meshfwd_log "$name")")"
    done
    for line in "${MISMATCH_OK[@]}"; do
        rn_test_inline "${line%%|*}/mismatch" t_mismatch "${line%%|*}" "${line#*|}"
    done
    if [[ " ${CASE_NAMES[*]} " == *" seq "* ]]; then
        rn_test_inline seq/restart t_seq_restart seq
    fi
    if [[ -n ${CASE_BAD[$BADKEY]:-} ]]; then
        for t in "${BAD_TESTS[@]}"; do rn_test_inline "$BADKEY/$t" "t_badkey_$t"; done
    fi
    _kd_wanted && kd_main
    _kg_wanted && kg_main
    _kb_wanted && kb_main
    rn_any_failed && console_tail 20
    exec 2>&3
    rn_finish
}

main "$@"
