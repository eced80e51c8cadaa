#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The benchmarks' own PostgreSQL cluster: one server with the defaults for
# durability (fsync, synchronous_commit and full_page_writes on), no
# replica, pg_stat_statements loaded when installed, TCP on loopback.
#   bench/cluster.sh start → prints the path of an env file (BENCH_DSN, …)
#   bench/cluster.sh stop ENV_FILE
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../tools/lib.sh"
for v in "${!PG@}"; do unset "$v"; done

pgbin=$(pg_bindir)
ctl() { run_as_cluster_user "$pgbin/pg_ctl" "$@" >&2; }

cmd_start() {
    local dir port owner preload=""
    owner=$(cluster_user)
    dir=$(mktemp -d /tmp/pgstore-bench.XXXX)
    chown "$owner:" "$dir"
    run_as_cluster_user "$pgbin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 \
        --locale=C >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    [[ -f $("$pgbin/pg_config" --pkglibdir 2>/dev/null || echo /nonexistent)/pg_stat_statements.so ||
       -f $(dirname "$pgbin")/lib/pg_stat_statements.so ]] && preload=pg_stat_statements
    port=$(free_port)
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 120
shared_preload_libraries = '$preload'
logging_collector = off
CONF
    ctl start -w -t 60 -D "$dir/data" -l "$dir/server.log"
    "$pgbin/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres \
        -c "create database pgstore_bench" >/dev/null
    [[ -n $preload ]] && "$pgbin/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d pgstore_bench \
        -c "create extension pg_stat_statements" >/dev/null
    cat >"$dir/env.sh" <<ENV
export BENCH_DIR='$dir'
export BENCH_PGBIN='$pgbin'
export BENCH_DSN='host=127.0.0.1 port=$port user=postgres dbname=pgstore_bench'
export BENCH_STATEMENTS='$preload'
ENV
    chmod 644 "$dir/env.sh"
    echo "$dir/env.sh"
}

cmd_stop() {
    # shellcheck disable=SC1090
    source "$1"
    ctl stop -m fast -w -D "$BENCH_DIR/data" >/dev/null 2>&1 || true
    rm -rf -- "$BENCH_DIR"
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop "$2" ;;
    *) die "usage: bench/cluster.sh start | stop ENV_FILE" ;;
esac
