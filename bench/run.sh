#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs the benchmarks against a throwaway cluster (or $PGSTORE_BENCH_DSN):
#   bench/run.sh [seconds-per-figure] [bench/x_bench.lua …]
# Builds first; prints each figure beside its same-run baseline. The
# throwaway cluster is made durable (fsync on, synchronous_commit on).
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
    # Benchmarks run durable: the test cluster starts with fsync off, so
    # turn it back on (synchronous_commit is on by default); each bench
    # prints the settings it ran with.
    "$PGSTORE_TEST_PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$PGSTORE_BENCH_DSN" \
        -c "alter system set fsync = on" -c "alter system set full_page_writes = on" \
        -c "select pg_reload_conf()" >/dev/null
fi
export PGSTORE_BENCH_DSN LUA_PATH="./?.lua;;"
benches=("${@:2}")
[[ ${#benches[@]} -gt 0 ]] || benches=(bench/*_bench.lua)
for b in "${benches[@]}"; do
    build/pgstore --dsn "$PGSTORE_BENCH_DSN" run "$b" "${1:-3}"
    echo
done
