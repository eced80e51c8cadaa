-- SPDX-License-Identifier: MIT
-- privatereplica — a private primary (privatedb) and a streaming replica
-- of it (pg_basebackup -R, its own port and socket directory), for specs
-- that stop, freeze, pause or promote a replica: the suite's shared
-- replica serves other spec files at the same time and must stay as it is.
-- With { sync = true } the replica is a synchronous standby, and the pair
-- can fail over (kill the primary, promote the standby), take the old
-- primary back as a standby (pg_rewind) and switch over.
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
-- opts.sync: the replica is the primary's synchronous standby
-- (synchronous_standby_names = '*', set after the base backup so the
-- standby does not inherit it), and wal_log_hints and wal_keep_size are set for pg_rewind.
function R.start(name, opts)
  local sync = opts and opts.sync
  local primary = P.start(name, sync and { conf = "wal_log_hints = on\nwal_keep_size = 256MB" } or nil)
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
  -- the two nodes by data directory, for failovers: "data" starts as the
  -- primary, "replica" as the standby
  self.nodes = { data = { dir = "data", port = primary.port, sock = "sock", log = "server.log" },
                 replica = { dir = "replica", port = self.port, sock = "sock-replica", log = "replica.log" } }
  self.leader, self.follower = "data", "replica"
  if sync then
    self:psql("data", "alter system set synchronous_standby_names = '*'", "select pg_reload_conf()")
    if not self:wait_sync(30) then
      self:stop()
      error("the replica did not become a synchronous standby")
    end
  end
  return self
end

-- A libpq DSN naming both nodes, which connects to whichever is the
-- read-write primary (`target_session_attrs=read-write`).
function Replica:multi_dsn()
  return ("host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres dbname=postgres target_session_attrs=read-write")
    :format(self.nodes.data.port, self.nodes.replica.port)
end

-- psql on node ("data" | "replica"), each statement on its own (ALTER
-- SYSTEM runs in no transaction block): its output and exit status.
function Replica:psql(node, ...)
  local cs = {}
  for i, sql in ipairs{ ... } do cs[i] = "-c " .. quote(sql) end
  return self:sh(("run_as_cluster_user \"$pgbin/psql\" -X -At -h 127.0.0.1 -p %d -U postgres -d postgres %s")
    :format(self.nodes[node].port, table.concat(cs, " ")))
end

-- Waits (bounded) until the leader has a synchronous standby streaming.
function Replica:wait_sync(timeout)
  return T.eventually(function()
    local out = self:psql(self.leader, "select count(*) from pg_stat_replication where sync_state = 'sync'")
    return tonumber(out:match("%d+")) == 1
  end, timeout or 30)
end

local function node_ctl(node) return ('run_as_cluster_user "$pgbin/pg_ctl" -D "$dir/%s"'):format(node.dir) end

-- The failover: the leader stopped with `pg_ctl stop -m immediate`, the
-- standby promoted after `delay` seconds (what a failover tool takes to
-- notice), then told to wait for no standby (nothing would ever confirm
-- its commits). Returns the seconds from the kill to the promotion.
function Replica:failover(delay)
  local core = require "pgstore.core"
  local old = self.nodes[self.leader]
  local t0 = core.now()
  local out, rc = self:sh(node_ctl(old) .. " stop -m immediate -w")
  assert(rc == 0, "immediate stop failed: " .. out)
  if delay and delay > 0 then core.sleep(delay) end
  self:promote()
  return core.now() - t0
end

-- Promotes the standby and makes it the leader.
function Replica:promote()
  local new = self.nodes[self.follower]
  local out, rc = self:sh(node_ctl(new) .. " promote -w -t 60")
  assert(rc == 0, "promote failed: " .. out)
  self:psql(self.follower, "alter system reset synchronous_standby_names", "select pg_reload_conf()")
  self.leader, self.follower = self.follower, self.leader
end

-- Brings the old primary back as a synchronous standby of the leader:
-- pg_rewind takes back what it wrote past the point where the timelines
-- forked (WAL no client was told about), -R makes it follow the leader.
-- pg_rewind copies the leader's configuration, so the node's own port
-- and socket directory are written again after it.
function Replica:rejoin()
  local old, new = self.nodes[self.follower], self.nodes[self.leader]
  -- pg_rewind reads the source's timeline from its control file, which a
  -- promotion updates only at its next checkpoint
  self:psql(self.leader, "checkpoint")
  local out, rc = self:sh(([[
    d="$dir/%s"
    rm -f "$d/port.conf" # written by this user, maybe not the cluster's: pg_rewind replaces it
    run_as_cluster_user "$pgbin/pg_rewind" -D "$d" -R --source-server="host=127.0.0.1 port=%d user=postgres dbname=postgres" >/dev/null
    echo "port = %d" >"$d/port.conf"
    printf "unix_socket_directories = '%%s'
" "$dir/%s" >>"$d/postgresql.conf"
    %s start -w -t 60 -l "$dir/%s" >/dev/null]]):format(old.dir, new.port, old.port, old.sock, node_ctl(old), old.log))
  assert(rc == 0, "rejoin failed: " .. out)
  self:psql(self.leader, "alter system set synchronous_standby_names = '*'", "select pg_reload_conf()")
  assert(self:wait_sync(30), "the old primary did not become a synchronous standby: "
    .. self:sh(('tail -n 15 "$dir/%s"'):format(old.log)))
end

-- A planned switchover: the leader is fenced first (default_transaction_
-- read_only on, by reload: its sessions stay connected, and their writes
-- are refused with SQLSTATE 25006), the standby catches up, the leader
-- stops and the standby is promoted.
function Replica:switchover(fenced_for)
  local core = require "pgstore.core"
  local old = self.nodes[self.leader]
  self:psql(self.leader, "alter system set default_transaction_read_only = on", "select pg_reload_conf()")
  core.sleep(fenced_for or 0.5)
  local out, rc = self:sh(node_ctl(old) .. " stop -m fast -w")
  assert(rc == 0, "stop failed: " .. out)
  self:promote()
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
  -- (again on its own: the line above ends early when the replica is down)
  self:sh([[ctl stop -m immediate -w >/dev/null 2>&1 || true]])
  self.primary:stop()
end

return R
