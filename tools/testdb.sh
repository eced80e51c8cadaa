#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Throwaway PostgreSQL primary + streaming replica for tests, on free ports.
# `source "$(tools/testdb.sh start)"` starts one (stdout: the path of its env.sh);
# the other commands find it through $PGSTORE_TEST_DIR (or $PGSTORE_TEST_ENV).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Plain servers and clients with explicit connection parameters only, even
# when called from a spec under the sanitizer pass (LD_PRELOAD of libasan).
for v in "${!PG@}"; do [[ $v == PGSTORE_* ]] || unset "$v"; done
unset LD_PRELOAD ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS

ctl() { run_as_cluster_user "$pgbin/pg_ctl" "$@" >&2; }
sql() { "$pgbin/psql" -X -At -v ON_ERROR_STOP=1 "host=$dir/$1 port=$2 user=postgres dbname=postgres" "${@:3}"; }

# stop_all: stop both servers and remove the directory.
stop_all() {
    local node
    cd /
    for node in replica primary; do
        if [[ -f $dir/$node/postmaster.pid ]]; then
            ctl stop -m immediate -w -D "$dir/$node" >/dev/null 2>&1 || true
        fi
    done
    rm -rf -- "$dir"
}

# abort MESSAGE [LOG]: show the log's tail, tear everything down, fail.
abort() {
    log "error: $1"
    if [[ -n ${2:-} && -f $2 ]]; then tail -n 30 "$2" >&2; fi
    stop_all
    exit 1
}

# start_node DATADIR SOCKDIR LOG: start on a free port (retried if taken); print it.
start_node() {
    local port seen _
    for _ in 1 2 3 4 5; do
        port=$(free_port) || return 1
        printf "port = %s\nunix_socket_directories = '%s'\n" "$port" "$2" |
            run_as_cluster_user tee "$1/port.conf" >/dev/null || return 1
        seen=$(wc -l <"$3")
        if ctl start -w -t 60 -D "$1" -l "$3"; then echo "$port"; return 0; fi
        tail -n "+$((seen + 1))" "$3" | grep -q 'Address already in use' || return 1
        log "port $port was taken, trying another"
    done
    return 1
}

cmd_start() {
    local owner pport rport i name value
    owner=$(cluster_user); pgbin=$(pg_bindir)
    dir=$(mktemp -d /tmp/pgstore-test.XXXX)
    trap 'abort interrupted' INT TERM
    trap 'abort "start failed at line $LINENO"' ERR
    chown "$owner:" "$dir"; chmod 755 "$dir"; cd "$dir"
    run_as_cluster_user mkdir sock sock-replica
    run_as_cluster_user touch server.log replica.log

    (run_as_cluster_user "$pgbin/initdb" -D "$dir/primary" -U postgres --auth=trust \
        -E UTF8 --locale=C --no-sync) >initdb.log 2>&1 || abort "initdb failed" initdb.log
    cat >>primary/postgresql.conf <<CONF
listen_addresses = '127.0.0.1'
fsync = off
full_page_writes = off
max_connections = 300
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
logging_collector = off
include_if_exists = 'port.conf'
CONF
    cat >primary/pg_hba.conf <<HBA
local all         all        trust
host  all         pgs_secret 127.0.0.1/32 scram-sha-256
host  all         all        127.0.0.1/32 trust
host  replication all        127.0.0.1/32 trust
HBA
    pport=$(start_node "$dir/primary" "$dir/sock" "$dir/server.log") ||
        abort "primary did not start" server.log
    (sql sock "$pport" -q) >/dev/null <<SQL || abort "could not set up the test database" server.log
CREATE DATABASE pgstore_test;
CREATE ROLE pgs_secret LOGIN PASSWORD 'pgs-Test-Secret-9417';
GRANT CONNECT ON DATABASE pgstore_test TO pgs_secret;
SQL

    # A physical slot keeps every WAL segment the replica has not received:
    # without one, a checkpoint during a heavy pass may recycle a segment a
    # lagging replica still needs, and its replay stops for good.
    run_as_cluster_user "$pgbin/pg_basebackup" -D "$dir/replica" -R -X stream -c fast -N \
        -C -S pgstore_replica \
        -h 127.0.0.1 -p "$pport" -U postgres >&2 || abort "pg_basebackup failed" server.log
    rport=$(start_node "$dir/replica" "$dir/sock-replica" "$dir/replica.log") ||
        abort "replica did not start" replica.log
    for i in {1..120}; do
        [[ $(sql sock-replica "$rport" -c "select pg_is_in_recovery() and exists
              (select from pg_stat_wal_receiver where status = 'streaming')" 2>/dev/null) == t ]] && break
        [[ $i == 120 ]] && abort "replica is not streaming from the primary" replica.log
        sleep 0.5
    done

    local tcp="host=127.0.0.1 user=postgres dbname=pgstore_test"
    while read -r name value; do printf "export %s='%s'\n" "$name" "$value"; done >env.sh <<VARS
PGSTORE_TEST_ENV $dir/env.sh
PGSTORE_TEST_DIR $dir
PGSTORE_TEST_PGBIN $pgbin
PGSTORE_TEST_USER $owner
PGSTORE_TEST_PGDATA $dir/primary
PGSTORE_TEST_REPLICA_PGDATA $dir/replica
PGSTORE_TEST_PORT $pport
PGSTORE_TEST_REPLICA_PORT $rport
PGSTORE_TEST_DSN $tcp port=$pport
PGSTORE_TEST_REPLICA_DSN $tcp port=$rport
PGSTORE_TEST_SECRET_USER pgs_secret
PGSTORE_TEST_SECRET_PASSWORD pgs-Test-Secret-9417
PGHOST 127.0.0.1
PGPORT $pport
PGUSER postgres
PGDATABASE pgstore_test
VARS
    chmod 644 env.sh
    trap - INT TERM ERR
    log "primary on 127.0.0.1:$pport, replica on 127.0.0.1:$rport, state in $dir"
    echo "$dir/env.sh"
}

# createdb NAME…: (re)creates empty databases on the primary, one per spec
# file, and waits until the replica has replayed them, so a spec may connect
# to either at once. FILE_COPY logs one record per database instead of every
# page of the template, so a replica that lags after a heavy pass catches up
# quickly. A slow replica is waited for as long as its replay moves; only one
# that stands still for two minutes fails the run.
cmd_createdb() {
    local name lsn replayed last="" still=0 stmts="SET client_min_messages = warning;"$'\n'
    for name in "$@"; do
        [[ $name =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "not a database name: $name"
        stmts+="DROP DATABASE IF EXISTS $name WITH (FORCE);"$'\n'
        stmts+="CREATE DATABASE $name STRATEGY = FILE_COPY;"$'\n'
    done
    sql sock "$PGSTORE_TEST_PORT" -q <<<"$stmts" >/dev/null || die "could not create the databases"
    lsn=$(sql sock "$PGSTORE_TEST_PORT" -c "select pg_current_wal_lsn()")
    while :; do
        replayed=$(sql sock-replica "$PGSTORE_TEST_REPLICA_PORT" -c "select pg_last_wal_replay_lsn()") || replayed=""
        [[ -n $replayed && $(sql sock-replica "$PGSTORE_TEST_REPLICA_PORT" \
              -c "select '$replayed'::pg_lsn >= '$lsn'::pg_lsn") == t ]] && return 0
        if [[ $replayed == "$last" ]]; then
            still=$((still + 1))
            if ((still >= 1200)); then
                tail -n 30 "$dir/replica.log" >&2
                die "the replica stopped replaying at ${replayed:-?} (needs $lsn); see $dir/replica.log"
            fi
        else
            still=0 last=$replayed
        fi
        sleep 0.1
    done
}

# status: state of both servers; fails unless both run.
status() {
    local rc=0 node
    for node in primary replica; do
        printf "%s: " "$node"
        run_as_cluster_user "$pgbin/pg_ctl" status -D "$dir/$node" | head -n 1 || rc=1
    done
    return "$rc"
}

# load_env: find the cluster started by `start`.
load_env() {
    local f=${PGSTORE_TEST_ENV:-}
    [[ -n ${PGSTORE_TEST_DIR:-} ]] && f=$PGSTORE_TEST_DIR/env.sh
    [[ -n $f ]] || die "no test cluster: set PGSTORE_TEST_DIR or PGSTORE_TEST_ENV (see: $0 start)"
    [[ -f $f ]] || die "no test cluster state file: $f"
    . "$f"
    dir=$PGSTORE_TEST_DIR pgbin=$PGSTORE_TEST_PGBIN
    [[ ${dir##*/} == pgstore-test.* ]] || die "not a test cluster directory: $dir"
    cd "$dir"
}

case ${1:-} in
    start)          cmd_start ;;
    stop)           load_env; stop_all ;;
    restart)        load_env; ctl restart -m fast -w -t 60 -D "$dir/primary" -l "$dir/server.log" ;;
    stop-immediate) load_env; ctl stop -m immediate -w -D "$dir/primary" ;;
    start-again)    load_env; ctl start -w -t 60 -D "$dir/primary" -l "$dir/server.log" ;;
    status)         load_env; status ;;
    createdb)       load_env; shift; cmd_createdb "$@" ;;
    psql)           load_env; shift; exec "$pgbin/psql" "$PGSTORE_TEST_DSN" "$@" ;;
    psql-replica)   load_env; shift; exec "$pgbin/psql" "$PGSTORE_TEST_REPLICA_DSN" "$@" ;;
    *) echo "usage: $0 start|stop|restart|stop-immediate|start-again|status|createdb|psql|psql-replica" >&2
       exit 2 ;;
esac
