#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs the benchmarks against a throwaway cluster (or $PGSTORE_BENCH_DSN):
#   bench/run.sh [seconds-per-figure]
# Builds first; prints each figure beside its same-run baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/deps.sh
bash tools/build.sh >/dev/null
if [[ -z ${PGSTORE_BENCH_DSN:-} ]]; then
    env_file=$(bash tools/testdb.sh start)
    # shellcheck disable=SC1090
    source "$env_file"
    trap 'bash tools/testdb.sh stop' EXIT
    PGSTORE_BENCH_DSN=$PGSTORE_TEST_DSN
fi
export PGSTORE_BENCH_DSN LUA_PATH="./?.lua;;"
for b in bench/*_bench.lua; do
    build/pgstore --dsn "$PGSTORE_BENCH_DSN" run "$b" "${1:-3}"
    echo
done
