#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds the libFuzzer targets (tests/fuzz, clang, ASan + UBSan) in
# build-fuzz/ and runs each for PGSTORE_FUZZ_SECONDS (30 when CI=true, else
# 10). A crash leaves its input in build-fuzz/artifacts/. Prints one line
# per target and "fuzz: N passed, M failed"; exits 1 when one failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. tools/lib.sh

seconds=${PGSTORE_FUZZ_SECONDS:-$([[ ${CI:-} == true ]] && echo 30 || echo 10)}
targets=(fuzz_json fuzz_text fuzz_rows fuzz_params)
command -v clang >/dev/null || die "clang is needed for the fuzz targets (tools/deps.sh installs it)"
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPGSTORE_FUZZ=ON \
    -DPGSTORE_FUZZ_SECONDS="$seconds" >/dev/null || die "could not configure build-fuzz"
cmake --build build-fuzz -j2 --target "${targets[@]}" >/dev/null || die "could not build the fuzz targets"

passed=0 failed=0
mkdir -p build-fuzz/artifacts
for t in "${targets[@]}"; do
    corpus=build-fuzz/tests/fuzz/corpus/$t
    mkdir -p "$corpus"
    log=build-fuzz/$t.log
    # Plain runs: the fuzzers link their own sanitizer runtime.
    env -u LD_PRELOAD ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
        "build-fuzz/tests/fuzz/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix=build-fuzz/artifacts/ "$corpus" "tests/fuzz/corpus/$t" \
        >"$log" 2>&1
    rc=$?
    runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo "?")
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -n 1 | grep -Eo '[0-9]+' || echo "?")
    if [[ $rc -eq 0 ]]; then
        passed=$((passed + 1))
        echo "fuzz: $t ok: $runs inputs in ${seconds}s, coverage $cov"
    else
        failed=$((failed + 1))
        echo "fuzz: $t FAILED (exit $rc), see $log:"
        grep -E 'ERROR|runtime error|SUMMARY|Test unit written' "$log" | head -n 20
    fi
done
echo "fuzz: $passed passed, $failed failed"
exit $((failed > 0))
