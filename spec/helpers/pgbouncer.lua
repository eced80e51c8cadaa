-- SPDX-License-Identifier: MIT
-- pgbouncer — a real PgBouncer of one spec's own, in transaction pooling
-- mode, in front of the suite's cluster: a temp directory with its config,
-- a trust userlist and its socket, a free port on loopback, run by the
-- cluster user (PgBouncer refuses root). Few server connections, so clients
-- really share them.
local T = require "testenv"

local P = {}
local Bouncer = {}
Bouncer.__index = Bouncer

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- dsn: the server's (libpq key=value with host, port, user); opts.pool_size:
-- server connections per database and user (2); opts.ignore: more startup
-- parameters to ignore (e.g. "options"), comma-separated.
function P.start(dsn, opts)
  opts = opts or {}
  local host = dsn:match("host=(%S+)") or "127.0.0.1"
  local port = assert(dsn:match("port=(%d+)"), "the server DSN names no port")
  local user = dsn:match("user=(%S+)") or "postgres"
  local out, rc = T.sh("bash -c " .. quote(([[set -e; . %q/tools/lib.sh
    dir=$(mktemp -d /tmp/pgstore-bouncer.XXXX); chown "$(cluster_user):" "$dir"
    printf '"%s" ""\n' >"$dir/users.txt"
    for attempt in 1 2 3 4 5; do
      port=$(free_port)
      cat >"$dir/pgbouncer.ini" <<EOF
[databases]
* = host=%s port=%s
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir = $dir
auth_type = trust
auth_file = $dir/users.txt
pool_mode = transaction
default_pool_size = %d
max_client_conn = 200
ignore_startup_parameters = extra_float_digits%s
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
admin_users = %s
EOF
      chown -R "$(cluster_user):" "$dir"
      run_as_cluster_user /usr/sbin/pgbouncer -d "$dir/pgbouncer.ini" >>"$dir/start.log" 2>&1 || true
      # -d forks: until the child has written its pid file there is no
      # process to ask, so only a pid that is gone ends the wait early.
      for _ in $(seq 150); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { echo "bouncer $dir $port"; exit 0; }
        if [ -s "$dir/pgbouncer.pid" ]; then kill -0 "$(cat "$dir/pgbouncer.pid")" 2>/dev/null || break; fi
        sleep 0.1
      done
      grep -q "Address already in use" "$dir/pgbouncer.log" 2>/dev/null || break
    done
    cat "$dir/start.log" "$dir/pgbouncer.log" 2>/dev/null | tail -n 20; rm -rf -- "$dir"; exit 1]])
    :format(T.root(), user, host, port, opts.pool_size or 2, opts.ignore and "," .. opts.ignore or "", user)))
  local dir, bport = out:match("bouncer (%S+) (%d+)")
  assert(rc == 0 and dir, "could not start pgbouncer: " .. out)
  local direct = dsn:gsub("port=%d+", "port=" .. bport)
  return setmetatable({ dir = dir, port = tonumber(bport), dsn = direct }, Bouncer)
end

-- The log so far (errors PgBouncer saw from clients and servers).
function Bouncer:log() return T.read(self.dir .. "/pgbouncer.log") end

-- Stops PgBouncer (by its own pid file) and removes its directory.
function Bouncer:stop()
  T.sh(("bash -c %s"):format(quote(([[
    dir=%q; pid=$(cat "$dir/pgbouncer.pid" 2>/dev/null) || true
    if [ -n "$pid" ]; then kill -INT "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true; fi
    rm -rf -- "$dir"]]):format(self.dir))))
end

return P
