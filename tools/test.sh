#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The whole test suite: installs what is missing, builds, starts a throwaway
# cluster (primary + replica), runs ctest and busted, then both again on an
# ASan/UBSan build (PGSTORE_SANITIZE=0 skips that pass), and stops the
# cluster even on failure. Arguments go to busted (and skip the ASan pass):
#   tools/test.sh                      everything
#   tools/test.sh spec/events_spec.lua one spec file
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. tools/lib.sh

bash tools/deps.sh || die "installing packages failed"
build_log=$(mktemp)
bash tools/build.sh >"$build_log" 2>&1 || { cat "$build_log"; die "build failed"; }
rm -f "$build_log"

env_file=$(bash tools/testdb.sh start) || die "could not start the test cluster"
# shellcheck disable=SC1090
. "$env_file"
trap 'bash tools/testdb.sh stop' EXIT
trap 'exit 130' INT TERM
export PGSTORE_ROOT=$PWD

passed=0 failed=0 status=0

# run_ctest BUILD_DIR: runs the C tests and adds their counts.
run_ctest() {
    local out line
    out=$(mktemp)
    ctest --test-dir "$1" --output-on-failure 2>&1 | tee "$out"
    [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
    line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$out" | tail -n 1)
    rm -f "$out"
    if [[ $line =~ ([0-9]+)\ tests?\ failed\ out\ of\ ([0-9]+) ]]; then
        failed=$((failed + BASH_REMATCH[1]))
        passed=$((passed + BASH_REMATCH[2] - BASH_REMATCH[1]))
    else
        status=1
    fi
}

# run_busted [busted args…]: runs the specs and adds their counts.
run_busted() {
    local out line
    out=$(mktemp)
    busted "$@" 2>&1 | tee "$out"
    [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
    line=$(grep -E '[0-9]+ successes? / [0-9]+ failures? / [0-9]+ errors?' "$out" | tail -n 1)
    rm -f "$out"
    if [[ $line =~ ([0-9]+)\ successes?\ /\ ([0-9]+)\ failures?\ /\ ([0-9]+)\ errors? ]]; then
        passed=$((passed + BASH_REMATCH[1]))
        failed=$((failed + BASH_REMATCH[2] + BASH_REMATCH[3]))
    else
        status=1
    fi
}

if [[ $# -gt 0 ]]; then
    run_busted "$@"
else
    run_ctest build
    run_busted
    if [[ ${PGSTORE_SANITIZE:-1} != 0 ]]; then
        log "sanitizer pass (ASan + UBSan)"
        bash tools/build.sh asan >"$PWD/build-asan.log" 2>&1 || { cat build-asan.log; die "asan build failed"; }
        export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23
        export LSAN_OPTIONS=suppressions=$PWD/tools/lsan.supp:print_suppressions=0
        export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
        run_ctest build-asan
        LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
            PGSTORE_HOST_BIN=$PWD/build-asan/pgstore run_busted --cpath='build-asan/lua/?.so'
    fi
fi

echo "total: $passed passed, $failed failed"
[[ $failed -eq 0 && $status -eq 0 ]]
