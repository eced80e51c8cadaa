#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs the benchmarks, durable, on a cluster of their own (bench/cluster.sh:
# fsync, synchronous_commit and full_page_writes on, TCP loopback) or on
# $PGSTORE_BENCH_DSN:
#   bench/run.sh [--seconds S] [--reps N] [--fsync-off] [bench/x_bench.lua …]
# S seconds per figure (default 3; a bare first number means the same),
# the median of N repetitions (default 3). --fsync-off runs the event
# store's figures again with fsync and full_page_writes off, labelled so.
# Builds first; prints each figure beside its same-run baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=3 reps=3 fsync_off=0 benches=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --seconds) seconds=$2; shift 2 ;;
        --reps) reps=$2; shift 2 ;;
        --fsync-off) fsync_off=1; shift ;;
        [0-9]*) seconds=$1; shift ;;
        *) benches+=("$1"); shift ;;
    esac
done
[[ ${#benches[@]} -gt 0 ]] || benches=(bench/*_bench.lua)
bash tools/deps.sh
bash tools/build.sh >/dev/null
if [[ -z ${PGSTORE_BENCH_DSN:-} ]]; then
    env_file=$(bash bench/cluster.sh start)
    trap 'bash bench/cluster.sh stop "$env_file"' EXIT
    # shellcheck disable=SC1090
    source "$env_file"
    PGSTORE_BENCH_DSN=$BENCH_DSN
fi
PGSTORE_BENCH_PGBIN=${PGSTORE_BENCH_PGBIN:-$(. tools/lib.sh && pg_bindir)}
export PGSTORE_BENCH_DSN PGSTORE_BENCH_PGBIN PGSTORE_BENCH_REPS=$reps LUA_PATH="./?.lua;;"
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $(uname -sr)"
for b in "${benches[@]}"; do
    build/pgstore --dsn "$PGSTORE_BENCH_DSN" run "$b" "$seconds"
    echo
done
if [[ $fsync_off == 1 ]]; then
    "$PGSTORE_BENCH_PGBIN/psql" -X -q "$PGSTORE_BENCH_DSN" -c "alter system set fsync = off" \
        -c "alter system set full_page_writes = off" -c "select pg_reload_conf()" >/dev/null
    PGSTORE_BENCH_LABEL="NOT DURABLE: fsync off, full_page_writes off" PGSTORE_BENCH_WRITES_ONLY=1 \
        build/pgstore --dsn "$PGSTORE_BENCH_DSN" run bench/events_bench.lua "$seconds"
fi
