#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Where a write's time goes on the server: runs N clients of single-event
# appends (bench/events_bench.lua's workers) on the bench cluster and
# prints what the server did meanwhile — wait events sampled from
# pg_stat_activity every 10 ms, the top statements of pg_stat_statements,
# and with --perf the hottest server functions (perf record -a).
#   bench/profile.sh [--clients N] [--seconds S] [--batch B] [--perf]
set -euo pipefail
cd "$(dirname "$0")/.."
clients=32 seconds=10 batch=1 use_perf=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --clients) clients=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --batch) batch=$2; shift 2 ;;
        --perf) use_perf=1; shift ;;
        *) echo "usage: bench/profile.sh [--clients N] [--seconds S] [--batch B] [--perf]" >&2; exit 2 ;;
    esac
done
bash tools/build.sh >/dev/null
env_file=$(bash bench/cluster.sh start)
tmp=$(mktemp -d /tmp/pgstore-profile.XXXX)
trap 'bash bench/cluster.sh stop "$env_file"; rm -rf "$tmp"' EXIT
# shellcheck disable=SC1090
source "$env_file"
export PGSTORE_BENCH_DSN=$BENCH_DSN LUA_PATH="./?.lua;;"
q() { "$BENCH_PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$BENCH_DSN" "$@"; }

# Open the store once (it migrates), then start from zero.
build/pgstore --dsn "$BENCH_DSN" run bench/events_bench.lua worker append "$batch" 0.2 0 >/dev/null
q -c "create unlogged table waits (wait text)" -c "select pg_stat_statements_reset()" >/dev/null 2>&1 ||
    q -c "create unlogged table waits (wait text)" >/dev/null
for i in $(seq 1 "$clients"); do
    build/pgstore --dsn "$BENCH_DSN" run bench/events_bench.lua worker append "$batch" "$seconds" "$i" \
        >"$tmp/$i" 2>&1 &
done
sleep 0.5
if [[ $use_perf == 1 ]]; then
    perf record -F 499 -a -o "$tmp/perf.data" -- sleep "$((seconds - 1))" >/dev/null 2>&1 &
fi
# pg_stat_activity is a snapshot per transaction: clear it between samples.
q -c "do \$\$ begin for i in 1..$(((seconds - 1) * 100)) loop
  perform pg_stat_clear_snapshot();
  insert into waits select coalesce(wait_event_type || ':' || wait_event, 'CPU')
    from pg_stat_activity where backend_type = 'client backend' and state = 'active'
      and pid <> pg_backend_pid();
  perform pg_sleep(0.01); end loop; end \$\$" >/dev/null
wait
total=0
for i in $(seq 1 "$clients"); do
    r=$(sed -n 's/^rate //p' "$tmp/$i"); total=$(echo "$total + ${r:-0}" | bc)
done
echo "$clients clients × $batch-event appends for ${seconds}s: $total events/s"
echo; echo "wait events of active client backends (share of samples):"
q -P pager=off -c "select wait, count(*), round(100.0 * count(*) / sum(count(*)) over (), 1) as pct
  from waits group by wait order by 2 desc limit 12"
if [[ -n $BENCH_STATEMENTS ]]; then
    echo "statements by total time:"
    q -P pager=off -c "select calls, round(total_exec_time::numeric, 0) as total_ms,
      round(mean_exec_time::numeric, 3) as mean_ms, left(regexp_replace(query, '\s+', ' ', 'g'), 90) as query
      from pg_stat_statements order by total_exec_time desc limit 10"
fi
if [[ $use_perf == 1 ]]; then
    echo "server functions by samples (perf):"
    perf report -i "$tmp/perf.data" --comm postgres --sort sym --stdio 2>/dev/null |
        grep -E '^ +[0-9]' | head -25
fi
