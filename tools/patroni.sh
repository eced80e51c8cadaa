#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# An example high-availability setup on loopback: one etcd and two Patroni
# nodes (config: scripts/patroni/node.yml.in) in a private temp directory,
# PostgreSQL run by the cluster user, synchronous replication. Needs the
# Debian packages patroni, etcd-server and python3-psycopg2 (not installed
# by tools/deps.sh). Prints the multi-host DSN pgstore connects with.
#
#   tools/patroni.sh start     etcd + node1 + node2, waits for a leader
#   tools/patroni.sh status    the members (patronictl list) and the DSN
#   tools/patroni.sh crash     the leader's Patroni killed (-9) and its
#                              PostgreSQL stopped -m immediate: a failover
#   tools/patroni.sh stop      everything stopped, the directory removed
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
. "$here/lib.sh"

state=${PGSTORE_PATRONI_STATE:-/tmp/pgstore-patroni.state} # where the directory is
export PATH=/usr/bin:$PATH # Debian's python3, with patroni's modules

dir_of() { [[ -f $state ]] && cat "$state" || die "not started (no $state)"; }

# patronictl against node1's configuration.
ctl() { run_as_cluster_user /usr/bin/patronictl -c "$1/node1.yml" "${@:2}"; }

dsn_of() {
    local dir=$1
    printf 'host=127.0.0.1,127.0.0.1 port=%s,%s user=postgres dbname=postgres target_session_attrs=read-write passfile=%s\n' \
        "$(cat "$dir/port-node1")" "$(cat "$dir/port-node2")" "$dir/client.pgpass"
}

# daemon PIDFILE LOGFILE CMD…: CMD as the cluster user in the background;
# its own pid (not that of runuser) in PIDFILE.
daemon() {
    (run_as_cluster_user bash -c 'echo $$ >"$0"; exec "${@:2}" >>"$1" 2>&1 </dev/null' "$@" &) >/dev/null 2>&1
    for _ in {1..50}; do [[ -s $1 ]] && return 0; sleep 0.1; done
    die "could not start $3"
}

start() {
    [[ -f $state ]] && die "already started in $(cat "$state") (tools/patroni.sh stop first)"
    command -v patroni >/dev/null && command -v etcd >/dev/null || die "needs the patroni and etcd-server packages"
    local owner dir pgbin super repl etcd_port peer_port
    owner=$(cluster_user)
    pgbin=$(pg_bindir)
    dir=$(mktemp -d /tmp/pgstore-patroni.XXXXXX)
    chown "$owner:" "$dir"
    chmod 700 "$dir"
    echo "$dir" >"$state"
    super=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
    repl=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
    # the client's password file: this user's, never in argv nor the DSN
    (umask 077 && printf '127.0.0.1:*:*:postgres:%s\n' "$super" >"$dir/client.pgpass")
    etcd_port=$(free_port)
    peer_port=$(free_port)
    daemon "$dir/etcd.pid" "$dir/etcd.log" etcd --name pgstore --data-dir "$dir/etcd" \
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "pgstore=http://127.0.0.1:$peer_port"
    for node in node1 node2; do
        local pg_port rest_port
        pg_port=$(free_port)
        rest_port=$(free_port)
        echo "$pg_port" >"$dir/port-$node"
        echo "$rest_port" >"$dir/rest-$node"
        run_as_cluster_user mkdir -p "$dir/log-$node"
        sed -e "s|@NAME@|$node|g" -e "s|@DIR@|$dir|g" -e "s|@PGBIN@|$pgbin|g" \
            -e "s|@PG_PORT@|$pg_port|g" -e "s|@REST_PORT@|$rest_port|g" -e "s|@ETCD_PORT@|$etcd_port|g" \
            -e "s|@SUPER_PASSWORD@|$super|g" -e "s|@REPL_PASSWORD@|$repl|g" \
            "$root/scripts/patroni/node.yml.in" >"$dir/$node.yml"
        chown "$owner:" "$dir/$node.yml"
        chmod 600 "$dir/$node.yml"
    done
    for _ in {1..50}; do
        curl -fs "http://127.0.0.1:$etcd_port/health" >/dev/null 2>&1 && break
        sleep 0.2
    done
    daemon "$dir/patroni-node1.pid" "$dir/node1.log" /usr/bin/patroni "$dir/node1.yml"
    sleep 3 # node1 bootstraps the cluster; node2 then copies it
    daemon "$dir/patroni-node2.pid" "$dir/node2.log" /usr/bin/patroni "$dir/node2.yml"
    for _ in {1..120}; do
        if [[ $(ctl "$dir" list -f json 2>/dev/null | grep -o '"State": "\(running\|streaming\)"' | wc -l) -eq 2 ]]; then
            status
            return 0
        fi
        sleep 0.5
    done
    tail -n 20 "$dir/node1.log" "$dir/node2.log" >&2 || true
    die "the cluster did not come up (logs in $dir)"
}

status() {
    local dir
    dir=$(dir_of)
    ctl "$dir" list
    echo "dsn: $(dsn_of "$dir")"
}

# The leader's Patroni SIGKILLed (it cannot hand over nor restart its
# PostgreSQL), then that PostgreSQL stopped -m immediate: the standby's
# Patroni takes the leader key once it expires (ttl) and promotes.
crash() {
    local dir leader
    dir=$(dir_of)
    leader=$(ctl "$dir" list -f json | python3 -c 'import json,sys; print([m["Member"] for m in json.load(sys.stdin) if m["Role"] == "Leader"][0])')
    kill -9 "$(cat "$dir/patroni-$leader.pid")" 2>/dev/null || true
    run_as_cluster_user "$(pg_bindir)/pg_ctl" stop -m immediate -w -D "$dir/data-$leader"
    echo "crashed $leader at $(date +%T.%N | cut -c1-12)"
}

stop() {
    local dir
    dir=$(dir_of)
    for node in node1 node2; do
        [[ -f $dir/patroni-$node.pid ]] && kill -TERM "$(cat "$dir/patroni-$node.pid")" 2>/dev/null || true
    done
    for _ in {1..60}; do
        kill -0 "$(cat "$dir/patroni-node1.pid")" 2>/dev/null ||
            kill -0 "$(cat "$dir/patroni-node2.pid")" 2>/dev/null || break
        sleep 0.5
    done
    for node in node1 node2; do
        [[ -f $dir/data-$node/postmaster.pid ]] &&
            run_as_cluster_user "$(pg_bindir)/pg_ctl" stop -m immediate -D "$dir/data-$node" >/dev/null 2>&1 || true
    done
    [[ -f $dir/etcd.pid ]] && kill -TERM "$(cat "$dir/etcd.pid")" 2>/dev/null || true
    sleep 0.5
    rm -rf -- "$dir" "$state"
}

case ${1:-} in
start | status | crash | stop) "$1" ;;
*) echo "usage: tools/patroni.sh start|status|crash|stop" >&2; exit 2 ;;
esac
