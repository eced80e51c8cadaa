-- SPDX-License-Identifier: MIT
-- privatereplica — a private primary (privatedb) and a streaming replica
-- of it (pg_basebackup -R, its own port and socket directory), for specs
-- that stop, freeze, pause or promote a replica: the suite's shared
-- replica serves other spec files at the same time and must stay as it is.
local T = require "testenv"
local P = require "privatedb"

local R = {}

local Replica = {}
Replica.__index = Replica

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

function Replica:sh(lines)
  return T.sh("bash -c " .. quote(([[set -e; . %q/tools/lib.sh
    dir=%q pgbin=%q
    ctl() { run_as_cluster_user "$pgbin/pg_ctl" "$@" -D "$dir/replica"; }
    ]]):format(T.root(), self.primary.dir, self.primary.pgbin) .. lines))
end

-- Starts a primary and a replica streaming from it: { primary, port, dsn }.
function R.start(name)
  local primary = P.start(name)
  local self = setmetatable({ primary = primary }, Replica)
  local out, rc = self:sh(([[
    run_as_cluster_user mkdir "$dir/sock-replica"
    run_as_cluster_user "$pgbin/pg_basebackup" -h 127.0.0.1 -p %d -U postgres -D "$dir/replica" -R -X stream -c fast
    printf "unix_socket_directories = '%%s'\nhot_standby_feedback = on\n" "$dir/sock-replica" >>"$dir/replica/postgresql.conf"
    for attempt in 1 2 3 4 5; do
      port=$(free_port)
      echo "port = $port" >"$dir/replica/port.conf"
      if ctl start -w -t 60 -l "$dir/replica.log" >/dev/null; then echo "replica $port"; exit 0; fi
      grep -q "Address already in use" "$dir/replica.log" || break
    done
    tail -n 20 "$dir/replica.log"; exit 1]]):format(primary.port))
  local port = out:match("replica (%d+)")
  if rc ~= 0 or not port then
    primary:stop()
    error("could not start a private replica: " .. out)
  end
  self.port = tonumber(port)
  self.dsn = ("host=127.0.0.1 port=%s user=postgres dbname=postgres"):format(port)
  return self
end

-- The replica's server processes: the postmaster and its children.
local PIDS = [[pm=$(head -n 1 "$dir/replica/postmaster.pid"); pids="$pm $(pgrep -P "$pm" | tr '\n' ' ' || true)"]]

-- SIGSTOP to every process of the replica: it accepts TCP connections
-- (the kernel does) and answers nothing until thaw(), or until `limit`
-- seconds (default 10) have passed, so a reader that hangs fails its spec
-- instead of hanging it.
function Replica:freeze(limit)
  local out, rc = self:sh(PIDS .. ("\nrun_as_cluster_user kill -STOP $pids"
    .. "\n(sleep %d; kill -CONT $pids) >/dev/null 2>&1 </dev/null &"):format(limit or 10))
  assert(rc == 0, "freeze failed: " .. out)
end

function Replica:thaw()
  local out, rc = self:sh(PIDS .. "\nrun_as_cluster_user kill -CONT $pids")
  assert(rc == 0, "thaw failed: " .. out)
end

function Replica:down()
  local out, rc = self:sh("ctl stop -m immediate -w")
  assert(rc == 0, "stop failed: " .. out)
end

function Replica:up()
  local out, rc = self:sh("ctl start -w -t 60 -l \"$dir/replica.log\"")
  assert(rc == 0, "start failed: " .. out)
end

-- Stops the replica (thawed first), then the primary, and removes both.
function Replica:stop()
  self:sh(PIDS .. "\nrun_as_cluster_user kill -CONT $pids >/dev/null 2>&1 || true; ctl stop -m immediate -w >/dev/null 2>&1 || true")
  self.primary:stop()
end

return R
