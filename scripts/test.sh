#!/usr/bin/env bash
# scripts/test.sh — THE test command (README quick start and CI run exactly this).
#
#   sudo scripts/test.sh
#
# 1. installs missing Debian packages (iproute2 iperf3 iputils-ping tshark tcpdump
#    python3 systemd; for the kernel GRE interop suite qemu-system-x86
#    busybox-static ethtool; for the CNI suites podman runc containerd
#    containernetworking-plugins strace iptables)
# 2. cargo build --release
# 3. cargo test --release -- --include-ignored   (unit + integration tests; the
#    root-only Rust tests are #[ignore]d for plain `cargo test` and run here)
# 4. root suites (network namespaces; need root; a missing suite is a failure,
#    never a skip): tests/netns/run.sh (the mesh suite, once with GRE and once
#    with GRE-in-UDP), check.sh, attach.sh, kernel.sh (interop with a real
#    kernel GRE/FOU peer: a Debian kernel under qemu), cni.sh, podman.sh,
#    containerd.sh (containerd + the chained reference plugins)
#
# Exits non-zero if anything failed. The last line is an overall
# "N passed, N failed" (cargo test results + netns tests; a step that could
# not run at all counts as one failure).

set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
export DEBIAN_FRONTEND=noninteractive
LOGDIR=$(mktemp -d /tmp/meshfwd-test.XXXXXX)
PASSED=0
FAILED=0
START=$SECONDS

section() { echo; echo "==== $*"; }
finish() {
    echo
    if ((FAILED == 0)); then
        rm -rf "$LOGDIR"
        echo "# total time $((SECONDS - START)) s"
    else
        echo "# total time $((SECONDS - START)) s; step logs in $LOGDIR"
    fi
    echo "$PASSED passed, $FAILED failed"
    ((FAILED == 0)) || exit 1
    exit 0
}

# ---------------------------------------------------------------- packages --
section "Debian packages"
declare -A BIN=([iproute2]=ip [iperf3]=iperf3 [iputils-ping]=ping [tshark]=tshark [tcpdump]=tcpdump [python3]=python3 [systemd]=systemd-analyze
    [qemu-system-x86]=qemu-system-x86_64 [busybox-static]=busybox [ethtool]=ethtool
    [podman]=podman [runc]=runc [containernetworking-plugins]=/usr/lib/cni/loopback [strace]=strace
    [containerd]=containerd [iptables]=iptables)
PKGS=(iproute2 iperf3 iputils-ping tshark tcpdump python3 systemd qemu-system-x86 busybox-static ethtool
    podman runc containernetworking-plugins strace containerd iptables)
missing=()
for pkg in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $EUID -ne 0 ]]; then
        echo "missing packages (need root to install): ${missing[*]}"
    else
        echo "installing: ${missing[*]}"
        # tshark asks whether non-root users may capture: answer no, non-interactively
        echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null
        apt_ok=0
        for _ in 1 2 3; do
            # wait for a concurrent apt/dpkg run instead of failing on its lock
            if apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}" >"$LOGDIR/apt.log" 2>&1; then
                apt_ok=1; break
            fi
            apt-get -o DPkg::Lock::Timeout=300 update -q >>"$LOGDIR/apt.log" 2>&1
        done
        ((apt_ok)) || { tail -n 20 "$LOGDIR/apt.log"; echo "apt-get install failed (log: $LOGDIR/apt.log)"; }
    fi
else
    echo "all present: ${PKGS[*]}"
fi
for pkg in "${!BIN[@]}"; do
    command -v "${BIN[$pkg]}" >/dev/null || echo "WARNING: ${BIN[$pkg]} (package $pkg) is not available"
done

# ------------------------------------------------------------------- cargo --
section "Rust toolchain"
[[ -x $HOME/.cargo/bin/cargo ]] && PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null; then
    echo "cargo not found. Install Rust (rust-version in Cargo.toml) with rustup:"
    echo "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh && . \"\$HOME/.cargo/env\""
    if [[ $EUID -eq 0 ]]; then
        echo "trying Debian's cargo package meanwhile (may be older than rust-version) ..."
        apt-get -o DPkg::Lock::Timeout=300 install -y -q cargo >>"$LOGDIR/apt.log" 2>&1 || true
    fi
fi
if ! command -v cargo >/dev/null; then
    echo "FAIL: no cargo"
    FAILED=$((FAILED + 1)); finish
fi
cargo --version; rustc --version

section "cargo build --release"
cargo build --release 2>&1 | tee "$LOGDIR/build.log"
build_rc=${PIPESTATUS[0]}
if [[ $build_rc -ne 0 || ! -x target/release/meshfwd ]]; then
    echo "FAIL: cargo build --release (exit $build_rc)"
    FAILED=$((FAILED + 1)); finish
fi

section "cargo test --release -- --include-ignored"
cargo test --release -- --include-ignored 2>&1 | tee "$LOGDIR/cargo-test.log"
cargo_rc=${PIPESTATUS[0]}
read -r tp tf < <(awk '/^test result:/ {
        for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i }
    } END { print p + 0, f + 0 }' "$LOGDIR/cargo-test.log")
PASSED=$((PASSED + tp)); FAILED=$((FAILED + tf))
if [[ $cargo_rc -ne 0 && $tf -eq 0 ]]; then
    echo "FAIL: cargo test --release exited $cargo_rc without a failing test (build error?)"
    FAILED=$((FAILED + 1))
fi
echo "# cargo test: $tp passed, $tf failed (exit $cargo_rc)"

# ------------------------------------------------------------------- netns --
section "netns integration suite (tests/netns/run.sh)"
if [[ $EUID -ne 0 ]]; then
    echo "FAIL: the namespace suite needs root (network namespaces, TUN, raw sockets)."
    echo "      It is NOT skipped: run   sudo scripts/test.sh"
    FAILED=$((FAILED + 1)); finish
fi
# Each root suite prints "ok NAME"/"FAIL NAME (reason)" lines and ends with
# "N passed, N failed"; a suite that ends without that line counts as a failure.
# NAME=SCRIPT [ENV=VALUE...]: the mesh suite runs once per encapsulation.
SUITES=(
    "run=tests/netns/run.sh MF_ENCAP=gre"
    "run-udp=tests/netns/run.sh MF_ENCAP=udp"
    "check=tests/netns/check.sh"
    "attach=tests/netns/attach.sh"
    # boots a Debian kernel under qemu as a kernel GRE/FOU peer (downloads the
    # kernel image package once into target/kernel-interop/)
    "kernel=tests/netns/kernel.sh"
    "cni=tests/netns/cni.sh"
    "podman=tests/netns/podman.sh"
    "containerd=tests/netns/containerd.sh"
)
for entry in "${SUITES[@]}"; do
    read -r spec env_kv <<<"$entry"
    name=${spec%%=*}; suite=${spec#*=}
    section "root suite $suite ${env_kv:-}"
    if [[ ! -f $suite ]]; then
        echo "FAIL: $suite is missing"
        FAILED=$((FAILED + 1)); continue
    fi
    # shellcheck disable=SC2086  # env_kv is one or more NAME=VALUE words
    env ${env_kv:-} bash "$suite" 2>&1 | tee "$LOGDIR/netns-$name.log"
    rc=${PIPESTATUS[0]}
    summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$LOGDIR/netns-$name.log" | tail -n 1)
    if [[ -n $summary ]]; then
        read -r np _ nf _ <<<"$summary"
        PASSED=$((PASSED + np)); FAILED=$((FAILED + nf))
        [[ $rc -eq 0 || $nf -gt 0 ]] || FAILED=$((FAILED + 1))
    else
        echo "FAIL: $suite ended without a summary (exit $rc)"
        FAILED=$((FAILED + 1))
    fi
done
finish
