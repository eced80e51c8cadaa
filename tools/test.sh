#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The whole test suite: ctest and busted against a throwaway cluster, then both
# again on the ASan/UBSan build (skipped with PGSTORE_SANITIZE=0 or when spec
# files are given: arguments go to busted), then the libFuzzer targets for a
# bounded time (tools/fuzz.sh; skipped with PGSTORE_FUZZ=0 or spec files).
# Last, everything the suite printed and the servers logged is searched for
# the test role's password: finding it fails the run. Ends with
# "total: N passed, M failed".
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. tools/lib.sh

passed=0 failed=0 cluster_env="" san_preload="" out=$(mktemp) all=$(mktemp)
finish() {
    if [[ -n $cluster_env ]]; then PGSTORE_TEST_DIR=${cluster_env%/env.sh} bash tools/testdb.sh stop; fi
    rm -f "$out" "$all"
    echo "total: $passed passed, $failed failed"
}
trap finish EXIT
trap 'exit 130' INT TERM

# tally NAME STATUS PASSED FAILED; a runner that fails with no failed test
# (crash, leak report, no summary) counts as one failure.
tally() {
    passed=$((passed + $3)) failed=$((failed + $4))
    if [[ $2 -ne 0 && $4 -eq 0 ]]; then log "$1 exited with status $2"; failed=$((failed + 1)); fi
}

# run_ctest BUILD_DIR: parses "X% tests passed, F tests failed out of T".
run_ctest() {
    ctest --test-dir "$1" --output-on-failure 2>&1 | tee "$out"
    local rc=${PIPESTATUS[0]} f=0 t=0
    if [[ $(grep -E 'tests? failed out of' "$out" | tail -n 1) =~ ([0-9]+)\ tests?\ failed\ out\ of\ ([0-9]+) ]]; then
        f=${BASH_REMATCH[1]} t=${BASH_REMATCH[2]}
    fi
    tally "ctest ($1)" "$rc" $((t - f)) "$f"
    cat "$out" >>"$all"
}

# run_busted BUILD_DIR ARGS…: parses "S successes / F failures / E errors / P pending".
# busted runs under luajit directly: its own re-exec (.busted `lua`) loses the
# quoting of arguments and the exit status (e.g. 23 for a leak report), and
# LSan exits without flushing stdout, hence the line buffering.
run_busted() {
    local dir=$1 s=0 f=0; shift
    local opts=(--ignore-lua "--cpath=$dir/lua/?.so")
    [[ -t 1 ]] && opts+=(-o utfTerminal -Xoutput --color)
    local p=$PWD
    env PGSTORE_BUILD_DIR="$p/$dir" PGSTORE_HOST_BIN="$p/$dir/pgstore" LUA_CPATH="$p/$dir/lua/?.so;;" \
        LUA_PATH="$p/lua/?.lua;$p/lua/?/init.lua;$p/spec/?.lua;$p/spec/helpers/?.lua;;" \
        ${san_preload:+"LD_PRELOAD=$san_preload"} luajit -e "io.stdout:setvbuf'line'" "$(command -v busted)" "${opts[@]}" "$@" 2>&1 | tee "$out"
    local rc=${PIPESTATUS[0]}
    if [[ $(sed 's/\x1b\[[0-9;]*m//g' "$out" | grep -E ' / [0-9]+ errors? / ' | tail -n 1) =~ \
          ([0-9]+)\ success(es)?\ /\ ([0-9]+)\ failures?\ /\ ([0-9]+)\ errors? ]]; then
        s=${BASH_REMATCH[1]} f=$((BASH_REMATCH[3] + BASH_REMATCH[4]))
    fi
    tally "busted ($dir)" "$rc" "$s" "$f"
    cat "$out" >>"$all"
}

# run_fuzz: tools/fuzz.sh prints "fuzz: P passed, F failed".
run_fuzz() {
    bash tools/fuzz.sh 2>&1 | tee "$out"
    local rc=${PIPESTATUS[0]} p=0 f=0
    if [[ $(tail -n 1 "$out") =~ fuzz:\ ([0-9]+)\ passed,\ ([0-9]+)\ failed ]]; then
        p=${BASH_REMATCH[1]} f=${BASH_REMATCH[2]}
    fi
    tally "tools/fuzz.sh" "$rc" "$p" "$f"
    cat "$out" >>"$all"
}

# check_secret: the password of the test role (PGSTORE_TEST_SECRET_PASSWORD)
# must not appear in anything the suite printed nor in the servers' logs.
check_secret() {
    local pw=${PGSTORE_TEST_SECRET_PASSWORD:-} hits=0 f
    [[ -n $pw ]] || return 0
    for f in "$all" "$PGSTORE_TEST_DIR"/server.log "$PGSTORE_TEST_DIR"/replica.log; do
        [[ -f $f ]] && hits=$((hits + $(grep -aFc -- "$pw" "$f")))
    done
    if [[ $hits -eq 0 ]]; then
        log "the test password appears nowhere in the suite's output or the server logs"
        tally "password check" 0 1 0
    else
        log "the test password appears $hits times in the suite's output or the server logs"
        tally "password check" 1 0 1
    fi
}

bash tools/deps.sh || { failed=1; die "tools/deps.sh failed"; }
bash tools/build.sh || { failed=1; die "build failed"; }
cluster_env=$(bash tools/testdb.sh start) || { failed=1; die "could not start the test cluster"; }
. "$cluster_env"
export PGSTORE_ROOT=$PWD

run_ctest build
run_busted build "$@"

if [[ $# -eq 0 && ${PGSTORE_SANITIZE:-1} != 0 ]]; then
    if bash tools/build.sh asan; then
        export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23
        export LSAN_OPTIONS=suppressions=$PWD/tools/lsan.supp UBSAN_OPTIONS=print_stacktrace=1
        # Host processes the specs start keep ASan and UBSan but not LSan:
        # its stop-the-world tracer crashes now and then under heavy process
        # churn. Leaks are checked in the C tests and the specs' own process.
        export PGSTORE_CHILD_ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:exitcode=23
        run_ctest build-asan
        san_preload="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
        # The five-minute soak runs in the first pass; here it is a short
        # one, so the whole suite stays within its time budget.
        PGSTORE_SOAK_SECONDS=${PGSTORE_SANITIZE_SOAK_SECONDS:-30} run_busted build-asan
    else
        tally "tools/build.sh asan" 1 0 0
    fi
fi
if [[ $# -eq 0 && ${PGSTORE_FUZZ:-1} != 0 ]]; then
    run_fuzz
fi
check_secret
exit $((failed > 0))
