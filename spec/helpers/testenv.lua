-- SPDX-License-Identifier: MIT
-- testenv — what every spec needs: the test cluster's DSN (started by
-- tools/test.sh, which gives each spec file a database of its own),
-- connections tagged with an application_name so leaks can be counted in
-- that database, an admin connection, and shell helpers for the cluster.
local pgstore = require "pgstore"

local T = {}

function T.dsn()
  local dsn = os.getenv("PGSTORE_TEST_DSN")
  assert(dsn and dsn ~= "", "PGSTORE_TEST_DSN is not set: run the suite with tools/test.sh")
  return dsn
end

function T.replica_dsn() return os.getenv("PGSTORE_TEST_REPLICA_DSN") end

-- The spec file's own database, named in the DSN.
function T.dbname()
  return assert(T.dsn():match("dbname=([%w_]+)"), "the test DSN names no database")
end

-- A db tagged with a spec-specific application_name.
function T.connect(opts)
  opts = opts or {}
  opts.dsn = opts.dsn or T.dsn()
  opts.application_name = opts.application_name or "pgstore-spec"
  return assert(pgstore.connect(opts))
end

local admin
function T.admin()
  if not admin or admin:is_closed() then
    admin = assert(pgstore.connect{ dsn = T.dsn(), application_name = "pgstore-admin", pool_size = 2 })
  end
  return admin
end

-- A db for a whole describe block, given busted's setup and teardown:
-- connected in setup (T.connect(opts)) and handed to `bind`; closed in
-- teardown, which then checks that no connection leaked.
function T.block_db(setup, teardown, bind, opts)
  local db
  setup(function()
    db = T.connect(opts)
    bind(db)
  end)
  teardown(function()
    db:close()
    T.assert_no_leaks()
  end)
end

-- Backends of this spec's database connected with this application_name
-- (other spec files run beside it, in databases of their own).
function T.backends(appname)
  local rows = assert(T.admin():query([[select count(*) as n from pg_stat_activity
    where application_name = $1 and datname = current_database() and pid <> pg_backend_pid()]],
    appname or "pgstore-spec"))
  return rows[1].n
end

-- Waits (bounded) until a condition holds; returns its last value.
function T.eventually(fn, timeout)
  local core = require "pgstore.core"
  local deadline = core.now() + (timeout or 5)
  local v = fn()
  while not v and core.now() < deadline do
    core.sleep(0.02)
    v = fn()
  end
  return v
end

-- Runs a shell command; returns its output and whether it exited 0.
function T.sh(cmd)
  -- Commands run without the sanitizer preload the suite itself may run
  -- under: servers, psql and pg_ctl are not ours to instrument, and the
  -- host binary of a sanitizer build links the runtime itself.
  -- In the sanitizer pass, host processes get PGSTORE_CHILD_ASAN_OPTIONS.
  local f = io.popen("unset LD_PRELOAD; " ..
    "if [ -n \"$PGSTORE_CHILD_ASAN_OPTIONS\" ]; then export ASAN_OPTIONS=\"$PGSTORE_CHILD_ASAN_OPTIONS\"; fi; " ..
    cmd .. " 2>&1; echo \"__rc=$?\"")
  local out = f:read("*a")
  f:close()
  local rc = tonumber(out:match("__rc=(%d+)%s*$"))
  return out:gsub("__rc=%d+%s*$", ""), rc
end

function T.root()
  return (os.getenv("PGSTORE_ROOT") or "."):gsub("/$", "")
end

-- tools/testdb.sh COMMAND on the suite's cluster (restart, stop-immediate, …).
function T.testdb(cmd)
  local out, rc = T.sh(("bash %s/tools/testdb.sh %s"):format(T.root(), cmd))
  assert(rc == 0, "testdb.sh " .. cmd .. " failed: " .. out)
  return out
end

-- A file's contents; "" when it does not exist (yet).
function T.read(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

-- Writes text ("" when nil) to path, replacing it; returns path.
function T.write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text or "")
  f:close()
  return path
end

-- A new private directory, /tmp/pgstore-<name>.XXXXXX.
function T.tmpdir(name)
  return ((T.sh(("mktemp -d /tmp/pgstore-%s.XXXXXX"):format(name))):gsub("%s+$", ""))
end

-- The host binary under test.
function T.host()
  return os.getenv("PGSTORE_HOST_BIN") or (T.root() .. "/build/pgstore")
end

-- Asserts that a spec closed every connection it opened.
function T.assert_no_leaks(appname)
  collectgarbage()
  collectgarbage()
  local n = T.eventually(function() return T.backends(appname) == 0 end, 5)
  assert(n, ("leaked connections: %d backends still open for %s"):format(T.backends(appname), appname or "pgstore-spec"))
end

-- Runs `n` host processes at once, each executing the Lua source `code`
-- with a connected `db` and `arg[1]` = its index (1..n), `arg[2..]` = extra.
-- Returns an array of { out = stdout+stderr, rc = exit code } in index
-- order. Real processes: this is how concurrency claims are tested.
function T.run_parallel(n, code, extra)
  local dir = T.tmpdir("par")
  T.write(dir .. "/script.lua", code)
  local cmds = {}
  for i = 1, n do
    cmds[#cmds + 1] = ("(%s --dsn %q run %s/script.lua %d %s >%s/out.%d 2>&1; echo $? >%s/rc.%d) &")
      :format(T.host(), T.dsn(), dir, i, extra or "", dir, i, dir, i)
  end
  T.sh(table.concat(cmds, "\n") .. "\nwait")
  local results = {}
  for i = 1, n do
    results[i] = { out = T.read(dir .. "/out." .. i), rc = tonumber(T.read(dir .. "/rc." .. i):match("%d+")) or -1 }
  end
  T.sh("rm -rf " .. dir)
  return results
end

-- Starts one host process in the background running the Lua source
-- `code` (with `db` connected, arg = { ... }). Returns a handle with the
-- process id and its output file; see T.wait and T.signal.
function T.spawn(code, ...)
  local dir = T.tmpdir("bg")
  T.write(dir .. "/script.lua", code)
  local args = {}
  for i, a in ipairs{ ... } do args[i] = ("%q"):format(tostring(a)) end
  local out = T.sh(("%s --dsn %q run %s/script.lua %s >%s/out 2>&1 & echo $!")
    :format(T.host(), T.dsn(), dir, table.concat(args, " "), dir))
  return { pid = tonumber(out:match("(%d+)")), dir = dir, out = dir .. "/out" }
end

function T.alive(proc)
  local _, rc = T.sh("kill -0 " .. proc.pid)
  return rc == 0
end

-- Waits (bounded) for a spawned process to end; returns its output.
function T.wait(proc, timeout)
  T.eventually(function() return not T.alive(proc) end, timeout or 30)
  return T.read(proc.out), not T.alive(proc)
end

function T.signal(proc, sig)
  T.sh(("kill -%s %d"):format(sig, proc.pid))
end

function T.output(proc)
  return T.read(proc.out)
end

-- A unique name for tables and streams of one test.
local counter = 0
function T.unique(prefix)
  counter = counter + 1
  return ("%s_%d_%d"):format(prefix or "t", os.time() % 100000, counter)
end

return T
