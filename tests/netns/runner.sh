# shellcheck shell=bash
# shellcheck disable=SC2034  # globals are set by and read by the sourcing suites
# tests/netns/runner.sh — the test runner every namespace suite sources (after
# tests/netns/lib.sh, which builds the namespaces and runs meshfwd).
#
#   source "$HERE/lib.sh"; source "$HERE/runner.sh"
#   RN_SUITE=attach                   # optional prefix of every test name
#   rn_need_root; rn_need ip ping "$MF_PY"; rn_need_x "$MESHFWD"
#   mf_init                           # lib.sh: run dir, namespace prefix, cleanup trap
#   rn_init "$MF_RUN_DIR" "$@"        # argv = glob patterns
#   rn_test wiring t_wiring           # "ok attach/wiring" / "FAIL attach/wiring (reason)"
#   rn_finish
#
# Output, the same in every suite: one line per test, "ok NAME" (or
# "ok NAME (detail)") or "FAIL NAME (reason)" followed by the tail of the test's
# log ("    # ..."), and last exactly "N passed, N failed"; exit status 1 if
# anything failed (scripts/test.sh reads that last line).
#
# Test selection: argv patterns, each a glob matched against the whole test name
# (with and without the suite prefix) or a plain substring of it, e.g.
# 'crafted/*', wide/bulk_tcp_sha256, refusals. No pattern: everything.
#
# Three ways to run a test:
#   rn_test NAME FN [ARGS...]         FN in a subshell (its own processes and
#       namespaces are stopped/deleted when it ends), output in its own log;
#       it ends with `fail REASON` (exit) or by returning non-zero.
#   rn_test_inline NAME FN [ARGS...]  FN in this shell (for tests that change
#       suite state, e.g. restart meshfwd or talk to a VM through a fifo); on
#       failure it sets REASON and returns 1.
#   rn_group GROUP SETUP_FN TEST_FN...   one fresh lib.sh mesh (mf_init + SETUP_FN)
#       for the group, then each TEST_FN (named t_NAME) as GROUP/NAME via rn_test;
#       a failed setup fails every selected test of the group ("setup failed: ...").
# Results that are no test function (a setup step, podman.sh's one scenario):
# rn_ok NAME [DETAIL], rn_fail NAME REASON, rn_result NAME REASON-or-empty.
#
# Per-suite knobs: RN_SUITE (name prefix, "attach" -> attach/NAME), RN_NEED_HINT
# (how to install what rn_need misses), and after rn_init RN_TAIL (log lines
# shown under a FAIL, default 15, 0 none), RN_OK_TIME=1 (ok lines carry "(N s[; detail])"),
# RN_ON_FAIL (function called as FN NAME LOG after a FAIL), RN_AFTER_TEST
# (function called after every rn_test).
# Results are kept in $RN_DIR/results (tests of groups run in subshells).

RN_DIR=""
RN_SUITE=${RN_SUITE:-}
RN_NEED_HINT=${RN_NEED_HINT:-}
RN_PATTERNS=()
RN_TAIL=15
RN_OK_TIME=0
RN_ON_FAIL=""
RN_AFTER_TEST=""
RN_START=$SECONDS
RN_OWN_DIR=0            # 1: rn_init made RN_DIR (removed by rn_finish if all passed)
T_REASON=/dev/null      # reason file of the running subshell test
T_DETAIL=/dev/null      # detail file of the running test (shown on its ok line)
REASON=""               # reason of the running inline test

# ------------------------------------------------------------ test helpers --

# fail REASON — end the current subshell test (rn_test / rn_group)
fail() { printf '%s\n' "$*" >"$T_REASON"; mf_log "FAIL: $*"; exit 1; }
# sfail REASON — in a group setup function: record the reason, return 1
#   usage: cmd || sfail "what" || return 1
sfail() { printf '%s\n' "$*" >"$T_REASON"; mf_log "SETUP FAIL: $*"; return 1; }
note() { mf_log "# $*"; }
# detail TEXT — shown on the test's ok line
detail() { printf '%s' "$*" >"$T_DETAIL"; }

# same_as FILE NAME — fail unless namespace NAME's mf_snap equals FILE (taken
# before a round trip)
same_as() {
    mf_snap "$2" >"$1.after"
    diff -u "$1" "$1.after" >&2 || fail "$2 differs after the round trip (diff in the log)"
}

# ---------------------------------------------------------------- pre-flight --

# rn_abort REASON — before any test ran: one FAIL line, the summary, exit 1
rn_abort() {
    echo "FAIL ${RN_SUITE:+$RN_SUITE/}setup ($*)"
    echo "0 passed, 1 failed"
    exit 1
}
rn_need_root() { [[ $EUID -eq 0 ]] || rn_abort "$(basename "$0") must run as root (network namespaces)"; }
rn_need() { # TOOL... — on PATH (or an executable path)
    local t
    for t in "$@"; do command -v "$t" >/dev/null || rn_abort "missing tool: $t${RN_NEED_HINT:+ ($RN_NEED_HINT)}"; done
}
rn_need_x() { # FILE... — built binaries
    local f
    for f in "$@"; do [[ -x $f ]] || rn_abort "$f not found (cargo build --release)"; done
}

# ------------------------------------------------------------------- runner --

# rn_init DIR [PATTERN...] — results and logs in DIR (DIR "": a new directory
# under /tmp, removed by rn_finish if all passed)
rn_init() {
    RN_DIR=$1; shift
    RN_PATTERNS=("$@")
    if [[ -z $RN_DIR ]]; then
        RN_DIR=$(mktemp -d /tmp/meshfwd-netns.XXXXXX) || rn_abort "mktemp"
        RN_OWN_DIR=1
    fi
    : >"$RN_DIR/results"
    trap '_rn_interrupted' INT TERM
}
_rn_interrupted() { echo "FAIL interrupted"; echo "FAIL interrupted" >>"$RN_DIR/results"; rn_finish 130; }

# rn_name NAME — NAME as printed (with the suite prefix)
rn_name() { printf '%s\n' "${RN_SUITE:+$RN_SUITE/}$1"; }

# rn_selected NAME — selected by the command-line patterns?
rn_selected() {
    local p full; full=$(rn_name "$1")
    ((${#RN_PATTERNS[@]})) || return 0
    for p in "${RN_PATTERNS[@]}"; do
        # shellcheck disable=SC2053  # the pattern is a glob on purpose
        [[ $1 == $p || $full == $p || $full == *"$p"* ]] && return 0
    done
    return 1
}

# rn_result NAME REASON [DETAIL] — record and print one result (REASON empty: ok)
rn_result() {
    local line name; name=$(rn_name "$1")
    if [[ -z $2 ]]; then line="ok $name${3:+ ($3)}"; else line="FAIL $name ($2)"; fi
    echo "$line"; echo "$line" >>"$RN_DIR/results"
}
rn_any_failed() { grep -q '^FAIL ' "$RN_DIR/results"; }
rn_ok() { rn_result "$1" "" "${2:-}"; }
rn_fail() { rn_result "$1" "${2:-failed}"; }

_rn_file() { printf '%s/%s.%s\n' "$RN_DIR" "${1//\//.}" "$2"; } # NAME EXT

# _rn_report NAME RC REASON [LOG] — ok/FAIL line of a finished test, the log tail
_rn_report() {
    local name=$1 rc=$2 reason=$3 log=${4:-} extra=""
    if [[ $rc == 0 ]]; then
        [[ -s $T_DETAIL ]] && extra=$(cat "$T_DETAIL")
        if ((RN_OK_TIME)); then extra="$((SECONDS - _RN_T0)) s${extra:+; $extra}"; fi
        rn_ok "$name" "$extra"
        return 0
    fi
    [[ -n $reason ]] || reason="exit code $rc"
    rn_fail "$name" "$reason"
    if ((RN_TAIL)) && [[ -n $log && -s $log ]]; then
        tail -n "$RN_TAIL" "$log" | sed 's/^/    # /'
        echo "    # full log: $log"
    fi
    [[ -z $RN_ON_FAIL ]] || "$RN_ON_FAIL" "$name" "$log"
    return 1
}

_rn_begin() { # NAME — fresh reason/detail files
    _RN_T0=$SECONDS
    T_REASON=$(_rn_file "$1" reason); T_DETAIL=$(_rn_file "$1" detail)
    : >"$T_REASON"; : >"$T_DETAIL"
}

# _rn_test_cleanup BASE_NS... — end of a subshell test: stop the processes it
# started, delete the namespaces it created (those not in BASE_NS)
_rn_test_cleanup() {
    local ns p
    mf_kill_pids
    for ns in "${MF_NETNS[@]}"; do
        [[ " $* " == *" $ns "* ]] && continue
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null; rm -rf "/etc/netns/$ns"
    done
}

# rn_test NAME FN [ARGS...] — FN in a subshell, output in its own log
rn_test() {
    local name=$1 fn=$2 log rc; shift 2
    rn_selected "$name" || return 0
    _rn_begin "$name"
    log=$(_rn_file "$name" log)
    (
        MF_PIDS=(); MF_PIDNAME=()
        trap '_rn_test_cleanup '"${MF_NETNS[*]}" EXIT
        trap 'exit 130' INT; trap 'exit 143' TERM
        "$fn" "$@"
    ) >"$log" 2>&1
    rc=$?
    _rn_report "$name" "$rc" "$(head -n 1 "$T_REASON" 2>/dev/null)" "$log"
    [[ -z $RN_AFTER_TEST ]] || "$RN_AFTER_TEST" "$name"
    return "$rc"
}

# rn_test_inline NAME FN [ARGS...] — FN in this shell; failure reason in REASON
rn_test_inline() {
    local name=$1 fn=$2 log rc; shift 2
    rn_selected "$name" || return 0
    _rn_begin "$name"
    log=$(_rn_file "$name" log)
    REASON=""
    echo "# --- $(rn_name "$name")" >>"$log"
    "$fn" "$@" >>"$log" 2>&1
    rc=$?
    [[ $rc == 0 || -n $REASON ]] || REASON="exit status $rc"
    _rn_report "$name" "$rc" "$REASON" "$log"
    [[ -z $RN_AFTER_TEST ]] || "$RN_AFTER_TEST" "$name"
    return "$rc"
}

# rn_group GROUP SETUP_FN TEST_FN... — a mesh for GROUP (mf_init under RN_DIR,
# built by SETUP_FN), then each TEST_FN (t_NAME) as GROUP/NAME; all in a
# subshell, whose lib.sh cleanup trap tears the mesh down.
rn_group() {
    local group=$1 setup=$2 t sel=(); shift 2
    for t in "$@"; do rn_selected "$group/${t#t_}" && sel+=("$t"); done
    ((${#sel[@]})) || return 0
    (
        mf_init "$RN_DIR" || exit 1
        MF_KEEP=2 # artifacts stay under $RN_DIR (removed by rn_finish if all passed)
        local log="$RN_DIR/$group.setup.log"
        T_REASON="$RN_DIR/$group.setup.reason"
        : >"$T_REASON"
        if ! "$setup" >"$log" 2>&1 || [[ -s $T_REASON ]]; then
            local reason; reason="setup failed: $(head -n 1 "$T_REASON")"
            [[ $reason != "setup failed: " ]] || reason="setup failed: exit code 1"
            for t in "${sel[@]}"; do
                _rn_report "$group/${t#t_}" 1 "$reason" "$log"
                log=/dev/null # show the setup log once per group
            done
            exit 1
        fi
        for t in "${sel[@]}"; do rn_test "$group/${t#t_}" "$t"; done
    )
}

# rn_finish [RC] — the summary line; exit 1 if anything failed (or RC != 0).
# Logs are removed if all passed (unless MF_KEEP_LOGS=1), else kept and named.
rn_finish() {
    local rc=${1:-0} pass fail
    trap - INT TERM
    pass=$(grep -c '^ok ' "$RN_DIR/results")
    fail=$(grep -c '^FAIL ' "$RN_DIR/results")
    ((pass + fail > 0)) || { echo "no test matched" >&2; fail=1; }
    echo "# suite time $((SECONDS - RN_START)) s"
    if ((fail == 0 && rc == 0)) && [[ ${MF_KEEP_LOGS:-0} != 1 ]]; then
        if ((RN_OWN_DIR)); then rm -rf "$RN_DIR"; else MF_KEEP=0; fi
    else
        echo "# logs kept in $RN_DIR"
        MF_KEEP=2
    fi
    echo "$pass passed, $fail failed"
    ((fail == 0 && rc == 0)) || exit 1
    exit 0
}
