-- SPDX-License-Identifier: MIT
-- Locks that tell the truth: lock:held() asks the server, every hold of a
-- key has a larger fencing token than the last (advisory and table mode),
-- and a holder cut off from the server — its backend terminated, its server
-- restarted — is refused by the guard while the new holder's work commits.
local core = require "pgstore.core"
local locks = require "pgstore.locks"
local T = require "testenv"
local private = require "privatedb"

-- The backend holding the advisory lock on key, or nil.
local function holder_pid(key)
  local rows = assert(T.admin():query([[
    select pid from pg_locks where locktype = 'advisory' and granted and objsubid = 1
       and ((classid::bigint << 32) | objid::bigint) = $1::bigint]], locks.key(key)))
  return rows[1] and rows[1].pid
end

local function terminate(pid)
  assert(T.admin():query("select pg_terminate_backend($1)", pid))
end

describe("lock fencing", function()
  local db, other
  setup(function()
    db = T.connect{ pool_size = 3 }
    other = T.connect{ pool_size = 3 }
  end)
  teardown(function()
    db:close()
    other:close()
    T.assert_no_leaks()
  end)

  it("held() asks the server: false once the lock's backend is terminated", function()
    local key = T.unique("held")
    local lock = assert(db:lock(key))
    assert.is_true(lock:held())
    local t0, n = core.now(), 200
    for _ = 1, n do assert.is_true(lock:held()) end
    local each = (core.now() - t0) / n
    print(("held(): one round trip, %.0f µs each on loopback"):format(each * 1e6))
    assert.truthy(each < 0.02, each)
    terminate(assert(holder_pid(key)))
    assert(T.eventually(function() return holder_pid(key) == nil end, 5))
    local held, err = lock:held()
    assert.is_false(held)
    assert.equal("connection", err.code) -- its session is gone: it could not even ask
    local taken = assert(other:try_lock(key))
    assert.is_false(lock:held())
    local ok, rerr = lock:release()
    assert.is_nil(ok)
    assert.equal("lease_lost", rerr.code)
    assert.is_false(lock:held()) -- released: no round trip
    assert.is_true(taken:held())
    assert.is_true(taken())
    assert.same({ { one = 1 } }, db:query("select 1 as one"))
  end)

  it("table mode: held() is false once the TTL ran out and the key was taken", function()
    local key, opts = T.unique("theld"), { mode = "table", table = "pgstore_spec_flocks", ttl = 0.3 }
    local a = assert(db:lock(key, opts))
    assert.is_true(a:held())
    core.sleep(0.4)
    assert.is_false(a:held()) -- expired: no longer held, though nobody took it yet
    local b = assert(other:lock(key, { mode = "table", table = "pgstore_spec_flocks", ttl = 5 }))
    assert.is_true(b:token() > a:token())
    assert.is_false(a:held())
    assert.is_true(b:held())
    b()
    assert.equal("lease_lost", select(2, a:release()).code)
  end)

  it("every advisory hold of a key has a larger token than the last, across processes", function()
    local key, log = T.unique("tok"), T.unique("tok_log")
    local first = assert(db:lock(key))
    local t1 = first:token()
    assert.is_number(t1)
    first()
    local second = assert(other:lock(key))
    assert.is_true(second:token() > t1)
    second()
    assert(db:exec(("create table %s (worker int, token bigint, t_enter float8)"):format(log)))
    local results = T.run_parallel(3, [[
      local core = require "pgstore.core"
      local me, key, log = tonumber(arg[1]), arg[2], arg[3]
      local held, deadline = {}, core.now() + 1.5
      while core.now() < deadline do
        local lock = db:try_lock(key)
        if lock then
          held[#held + 1] = { lock:token(), core.now() }
          core.sleep(0.002)
          assert(lock())
        end
      end
      for _, h in ipairs(held) do
        assert(db:exec("insert into " .. log .. " values ($1, $2, $3)", me, h[1], h[2]))
      end
    ]], key .. " " .. log)
    for i, r in ipairs(results) do assert.equal(0, r.rc, "worker " .. i .. ": " .. r.out) end
    local rows = assert(db:query("select worker, token, t_enter from " .. log .. " order by t_enter"))
    assert.truthy(#rows >= 10, "only " .. #rows .. " holds")
    print(("tokens: %d holds by 3 processes, each token larger than the last"):format(#rows))
    local last = t1 + 1
    for _, row in ipairs(rows) do
      assert.truthy(row.token > last, ("token %d after %d"):format(row.token, last))
      last = row.token
    end
    assert(db:exec("drop table " .. log))
  end)

  it("a holder cut off from the server is refused by the guard; the new holder's work commits", function()
    local key, tbl = T.unique("cut"), T.unique("fenced")
    assert(db:exec(("create table %s (who text, token bigint)"):format(tbl)))
    local dir = T.tmpdir("fence")
    local proc = T.spawn([[
      local key, tbl, dir = arg[1], arg[2], arg[3]
      local core = require "pgstore.core"
      local lock = assert(db:lock(key))
      print("LOCKED " .. lock:token()) io.stdout:flush()
      while not io.open(dir .. "/go") do core.sleep(0.02) end
      print("HELD " .. tostring((lock:held())))
      local ok, err = db:transaction(function(tx)
        local fenced, gerr = lock:guard(tx)
        if not fenced then return nil, gerr end
        assert(tx:exec("insert into " .. tbl .. " values ('stale', $1)", lock:token()))
        return true
      end)
      print(ok and "COMMITTED" or ("REFUSED " .. err.code)) io.stdout:flush()
    ]], key, tbl, dir)
    assert(T.eventually(function() return T.output(proc):find("LOCKED") end, 10), T.output(proc))
    local stale = tonumber(T.output(proc):match("LOCKED (%d+)"))
    terminate(assert(holder_pid(key)))
    local lock = assert(other:lock(key, { timeout = 5 }))
    assert.is_true(lock:token() > stale)
    assert(other:transaction(function(tx)
      assert(lock:guard(tx))
      assert(tx:exec("insert into " .. tbl .. " values ('new', $1)", lock:token()))
      return true
    end))
    T.write(dir .. "/go", "")
    local out = T.wait(proc, 20)
    assert.matches("HELD false", out)
    assert.matches("REFUSED lease_lost", out)
    assert.same({ { who = "new", token = lock:token() } }, db:query("select who, token from " .. tbl))
    lock()
    assert(db:exec("drop table " .. tbl))
    T.sh("rm -rf " .. dir)
  end)

  it("the next holder waits for the transactions guarded by the previous token", function()
    local key = T.unique("wait")
    local a = assert(db:lock(key))
    local ta = a:token()
    assert(db:transaction(function(tx)
      assert(a:guard(tx))
      terminate(assert(holder_pid(key)))
      assert(T.eventually(function() return holder_pid(key) == nil end, 5))
      -- the advisory lock is free, but a guarded transaction is still open
      assert.is_nil(other:try_lock(key))
      local t0 = core.now()
      local none, err = other:lock(key, { timeout = 0.3 })
      assert.is_nil(none)
      assert.equal("timeout", err.code)
      assert.truthy(core.now() - t0 < 2)
      return true
    end))
    local b = assert(other:lock(key, { timeout = 2 }))
    assert.is_true(b:token() > ta)
    b()
    assert.equal("lease_lost", select(2, a:release()).code)
  end)

  it("db:lock_guard checks a token passed on; a stale one aborts the transaction", function()
    local key = T.unique("pass")
    local lock = assert(db:lock(key))
    local token = lock:token()
    assert(other:transaction(function(tx)
      assert(other:lock_guard(tx, key, token))
      return true
    end))
    local tbl = T.unique("passed")
    assert(db:exec(("create table %s (n int)"):format(tbl)))
    local ok, err = other:transaction(function(tx)
      assert(tx:exec("insert into " .. tbl .. " values (1)"))
      local fenced, gerr = other:lock_guard(tx, key, token - 1)
      assert.is_nil(fenced)
      assert.equal("lease_lost", gerr.code)
      assert.matches("is not current", gerr.message)
      return true -- even so, the transaction cannot commit
    end)
    assert.is_nil(ok)
    assert.truthy(err)
    assert.same({ { n = 0 } }, db:query("select count(*)::int as n from " .. tbl))
    lock()
    assert.has_error(function() other:lock_guard({}, key, token) end)
    assert.has_error(function() lock:guard(nil) end)
    assert(db:exec("drop table " .. tbl))
  end)

  it("table mode: the guard refuses a taken-over token", function()
    local key, opts = T.unique("tguard"), { mode = "table", table = "pgstore_spec_flocks", ttl = 0.3 }
    local a = assert(db:lock(key, opts))
    core.sleep(0.4)
    local b = assert(other:lock(key, { mode = "table", table = "pgstore_spec_flocks", ttl = 5 }))
    local ok, err = db:transaction(function(tx) return a:guard(tx) end)
    assert.is_nil(ok)
    assert.equal("lease_lost", err.code)
    assert(other:transaction(function(tx) return b:guard(tx) end))
    assert(other:transaction(function(tx)
      return other:lock_guard(tx, key, b:token(), { mode = "table", table = "pgstore_spec_flocks" })
    end))
    b()
    assert(db:exec("drop table pgstore_spec_flocks"))
  end)

  it("held() is false after a server restart, and the next token is still larger", function()
    local cluster = private.start("locks")
    local ok, err = pcall(function()
      local pdb = assert(require("pgstore").connect{ dsn = cluster.dsn, pool_size = 2 })
      local key = "restart"
      local lock = assert(pdb:lock(key))
      local t1 = lock:token()
      assert.is_true(lock:held())
      cluster:restart("fast")
      assert.is_false((lock:held()))
      assert.equal("lease_lost", select(2, lock:release()).code)
      local again = assert(T.eventually(function() return pdb:lock(key, { timeout = 1 }) end, 10))
      assert.is_true(again:token() > t1)
      again()
      pdb:close()
    end)
    cluster:stop()
    assert(ok, err)
  end)
end)
