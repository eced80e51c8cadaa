-- SPDX-License-Identifier: MIT
-- privatedb — a PostgreSQL cluster of one spec's own (initdb, pg_ctl, a
-- free port on loopback, its own socket directory, run by the cluster
-- user), for specs that restart or stop a server: the suite's shared
-- cluster serves other spec files at the same time and must stay up.
local T = require "testenv"

local P = {}

-- s as one shell word.
local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
local Cluster = {}
Cluster.__index = Cluster

-- Shell lines run with tools/lib.sh loaded and the cluster's facts set.
function Cluster:sh(lines)
  return T.sh("bash -c " .. quote(([[set -e; . %q/tools/lib.sh
    dir=%q pgbin=%q
    ctl() { run_as_cluster_user "$pgbin/pg_ctl" "$@" -D "$dir/data"; }
    ]]):format(T.root(), self.dir, self.pgbin) .. lines))
end

-- Starts a cluster: its dir, port, dsn (database postgres, user postgres).
-- opts.conf: lines added to its postgresql.conf before the first start.
function P.start(name, opts)
  local out, rc = T.sh("bash -c " .. quote(([[set -e; . %q/tools/lib.sh
    owner=$(cluster_user); pgbin=$(pg_bindir)
    dir=$(mktemp -d /tmp/pgstore-private-%s.XXXX); chown "$owner:" "$dir"; chmod 755 "$dir"
    run_as_cluster_user mkdir "$dir/sock"
    run_as_cluster_user "$pgbin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >/dev/null
    printf "listen_addresses = '127.0.0.1'\nunix_socket_directories = '%%s'\nfsync = off\ninclude_if_exists = 'port.conf'\n" \
      "$dir/sock" >>"$dir/data/postgresql.conf"
    printf '%%s\n' %s >>"$dir/data/postgresql.conf"
    # a free port may be taken before the server binds it (other specs start
    # servers too): try another
    for attempt in 1 2 3 4 5; do
      port=$(free_port)
      echo "port = $port" >"$dir/data/port.conf"
      if run_as_cluster_user "$pgbin/pg_ctl" start -w -t 60 -D "$dir/data" -l "$dir/server.log" >/dev/null; then
        echo "cluster $dir $port $pgbin"; exit 0
      fi
      grep -q "Address already in use" "$dir/server.log" || break
    done
    tail -n 20 "$dir/server.log"; rm -rf -- "$dir"; exit 1]]):format(T.root(), name,
    quote(opts and opts.conf or ""))))
  local dir, port, pgbin = out:match("cluster (%S+) (%d+) (%S+)")
  assert(rc == 0 and dir, "could not start a private cluster: " .. out)
  return setmetatable({ dir = dir, port = tonumber(port), pgbin = pgbin,
    dsn = ("host=127.0.0.1 port=%s user=postgres dbname=postgres"):format(port) }, Cluster)
end

-- pg_ctl restart -m MODE (fast | immediate), waited for.
function Cluster:restart(mode)
  local out, rc = self:sh(("ctl restart -m %s -w -t 60 -l \"$dir/server.log\""):format(mode))
  assert(rc == 0, "restart failed: " .. out)
end

-- The same, in the background: returns at once; Cluster:restarted() says
-- when it is over. mode "away": an immediate stop, 2 s down, a start.
function Cluster:restart_async(mode)
  local ctl = ("run_as_cluster_user %s/pg_ctl -D %s/data"):format(self.pgbin, self.dir)
  local how = ("%s restart -m %s -w -t 60 -l %s/server.log"):format(ctl, mode, self.dir)
  if mode == "away" then
    how = ("%s stop -m immediate -w; sleep 2; %s start -w -t 60 -l %s/server.log"):format(ctl, ctl, self.dir)
  end
  T.sh(("rm -f %s/restarted; (bash -c %s >/dev/null 2>&1; touch %s/restarted) >/dev/null 2>&1 &")
    :format(self.dir, quote((". %s/tools/lib.sh; "):format(T.root()) .. how), self.dir))
end

function Cluster:restarted()
  local f = io.open(self.dir .. "/restarted")
  if f then f:close() end
  return f ~= nil
end

-- pg_ctl stop -m immediate / start: the server away until started again.
function Cluster:down()
  local out, rc = self:sh("ctl stop -m immediate -w")
  assert(rc == 0, "stop failed: " .. out)
end

function Cluster:up()
  local out, rc = self:sh("ctl start -w -t 60 -l \"$dir/server.log\"")
  assert(rc == 0, "start failed: " .. out)
end

-- Stops the server and removes everything.
function Cluster:stop()
  self:sh([[ctl stop -m immediate -w >/dev/null 2>&1 || true; rm -rf -- "$dir"]])
end

return P
