-- SPDX-License-Identifier: MIT
-- Named locks: db:lock / try_lock / with_lock, tx:lock, keys, the table
-- mode, and real processes — a killed holder's lock is released, and of
-- processes racing on try_lock exactly one holds the lock at any time.
local core = require "pgstore.core"
local locks = require "pgstore.locks"
local T = require "testenv"

-- Starts `pgstore run script args…` in the background; returns its pid.
local function spawn(script, out, ...)
  local args = table.concat({ ... }, " ")
  local o = T.sh(("%s --dsn %q run %s %s >%s 2>&1 & echo $!"):format(T.host(), T.dsn(), script, args, out))
  return assert(tonumber(o:match("(%d+)")), o)
end

-- Intervals [enter, exit] recorded by racing processes must not overlap.
local function assert_disjoint(rows)
  table.sort(rows, function(a, b) return a.t_enter < b.t_enter end)
  for i = 2, #rows do
    assert(rows[i].t_enter >= rows[i - 1].t_exit,
      ("worker %d entered at %.6f while worker %d held it until %.6f"):format(
        rows[i].worker, rows[i].t_enter, rows[i - 1].worker, rows[i - 1].t_exit))
  end
end

describe("locks", function()
  local db, other, dir
  setup(function()
    db = T.connect{ pool_size = 3 }
    other = T.connect{ pool_size = 3 }
    dir = T.tmpdir("locks")
  end)
  teardown(function()
    db:close()
    other:close()
    T.sh("rm -rf " .. dir)
    T.assert_no_leaks()
  end)

  it("db:lock excludes, release frees, try_lock says nil when held elsewhere", function()
    local key = T.unique("lk")
    local release = assert(db:lock(key))
    assert.is_true(release:held())
    assert.equal(key, release:key())
    assert.matches("pgstore.lock %(advisory, " .. key, tostring(release))
    local r2, err = other:try_lock(key)
    assert.is_nil(r2)
    assert.is_nil(err)
    assert.is_true(release())
    assert.is_true(release()) -- releasing twice is harmless
    assert.equal("pgstore.lock (closed)", tostring(release))
    r2 = assert(other:try_lock(key))
    assert.is_true(r2:release())
    assert.equal(0, db:pool_stats().borrowed)
  end)

  it("times out with 'timeout' when the lock stays held", function()
    local key = T.unique("lk")
    local release = assert(db:lock(key))
    local t0 = core.now()
    local r2, err = other:lock(key, { timeout = 0.3 })
    local waited = core.now() - t0
    assert.is_nil(r2)
    assert.equal("timeout", err.code)
    assert.matches("not acquired within", err.message)
    assert.truthy(waited >= 0.28 and waited < 2, "waited " .. waited)
    r2, err = other:lock(key, { timeout = 0 })
    assert.equal("timeout", err.code)
    release()
    assert(other:lock(key, { timeout = 1 }))()
  end)

  it("is held on the server under the documented key", function()
    local key = "invoice:42"
    assert.equal("-5808556873153909620", locks.key("a")) -- fnv1a64("a") = 0xaf63dc4c8601ec8c
    local release = assert(db:lock(key))
    local rows = assert(T.admin():query([[
      select count(*) as n from pg_locks where locktype = 'advisory' and granted and objsubid = 1
         and ((classid::bigint << 32) | objid::bigint) = $1::bigint]], locks.key(key)))
    assert.equal(1, rows[1].n)
    release()
  end)

  it("with_lock runs fn holding the lock and always releases it", function()
    local key = T.unique("lk")
    local a, b = db:with_lock(key, function(lock)
      assert.is_true(lock:held())
      assert.is_nil(other:try_lock(key))
      return "done", 2
    end)
    assert.same({ "done", 2 }, { a, b })
    assert(other:try_lock(key))()
    assert.has_error(function()
      db:with_lock(key, function() error("boom", 0) end)
    end, "boom")
    assert(other:try_lock(key))() -- released despite the error
    local res, err = db:with_lock(key, function() return nil, "declined" end)
    assert.is_nil(res)
    assert.equal("declined", err)
  end)

  it("tx:lock holds until commit; tx:try_lock says false when held", function()
    local key = T.unique("lk")
    assert(db:transaction(function(tx)
      assert(tx:lock(key))
      assert.is_nil(other:try_lock(key))
      assert(other:transaction(function(otx)
        assert.is_false(otx:try_lock(key))
        local ok, err = otx:lock(key, { timeout = 0.2 })
        assert.is_nil(ok)
        assert.equal("timeout", err.code)
        return true
      end) == nil) -- that transaction was aborted by the timeout
      return true
    end))
    assert(other:try_lock(key))() -- the commit released it
    assert(db:transaction(function(tx)
      assert.is_true(tx:try_lock(key))
      return true
    end))
  end)

  it("rejects bad keys with 'invalid' and raises on misuse", function()
    for _, key in ipairs({ "", ("k"):rep(513), "nul\0byte", "bad\xff utf8", "\xc3" }) do
      local r, err = db:lock(key)
      assert.is_nil(r)
      assert.equal("invalid", err.code)
      assert.matches("invalid lock key", err.message)
      r, err = db:try_lock(key)
      assert.equal("invalid", err.code)
    end
    assert(db:try_lock(("k"):rep(512)))()
    assert(db:try_lock("ключ 🔒"))()
    assert.has_error(function() db:lock(42) end, "bad argument #1 to 'lock' (string expected, got number)")
    assert.equal("invalid", select(2, db:lock("k", { mode = "chaos" })).code)
    assert.equal("invalid", select(2, db:lock("k", { timeout = -1 })).code)
    assert.has_error(function() db:lock("k", { wait = 1 }) end)
    assert.has_error(function() db:with_lock("k") end)
    assert.same({ { one = 1 } }, db:query("select 1 as one"))
  end)

  it("table mode: compare-and-set, growing tokens, TTL and renew", function()
    local key, opts = T.unique("tk"), { mode = "table", table = "pgstore_spec_locks", ttl = 0.5 }
    local a = assert(db:lock(key, opts))
    local t1 = a:token()
    assert.is_nil(other:try_lock(key, opts))
    assert(a:renew())
    assert.is_true(a())
    local b = assert(other:try_lock(key, opts))
    assert.equal(t1 + 1, b:token())
    -- b stops renewing: after its TTL, a takes it; b learns it lost it.
    local t0 = core.now()
    a = assert(db:lock(key, { mode = "table", table = "pgstore_spec_locks", ttl = 5, timeout = 3 }))
    assert.truthy(core.now() - t0 < 1.5)
    local ok, err = b:renew()
    assert.is_nil(ok)
    assert.equal("lease_lost", err.code)
    ok, err = b:release()
    assert.equal("lease_lost", err.code)
    assert.is_true(a())
    assert(db:exec("drop table pgstore_spec_locks"))
  end)

  it("a lock held by a killed process is released (advisory at once, table after its TTL)", function()
    for _, mode in ipairs({ "advisory", "table" }) do
      local key = T.unique("kill")
      local opts = mode == "table" and { mode = "table", table = "pgstore_spec_klocks", ttl = 1 } or nil
      T.write(dir .. "/hold.lua", ([[
        local release = assert(db:lock(arg[1], %s))
        print("LOCKED") io.stdout:flush()
        require("pgstore.core").sleep(60)
      ]]):format(mode == "table" and "{ mode = 'table', table = 'pgstore_spec_klocks', ttl = 1 }" or "nil"))
      local out = dir .. "/hold.out"
      local pid = spawn(dir .. "/hold.lua", out, key)
      assert(T.eventually(function() return T.read(out):find("LOCKED") end, 10), T.read(out))
      assert.is_nil(db:try_lock(key, opts))
      T.sh("kill -KILL " .. pid)
      local t0 = core.now()
      local r = T.eventually(function() return db:try_lock(key, opts) end, 5)
      assert.truthy(r, mode .. ": still held after the holder died")
      local took = core.now() - t0
      assert.truthy(took < (mode == "table" and 2 or 1), mode .. " took " .. took)
      r()
    end
    assert(db:exec("drop table pgstore_spec_klocks"))
  end)

  for _, mode in ipairs({ "advisory", "table" }) do
    it("racing processes: exactly one holds the lock at any time (" .. mode .. ")", function()
      local key, log = T.unique("race"), T.unique("race_log")
      assert(db:exec(("create table %s (worker int, t_enter float8, t_exit float8)"):format(log)))
      local results = T.run_parallel(3, ([[
        local core = require "pgstore.core"
        local me, key, log = tonumber(arg[1]), arg[2], arg[3]
        local opts = %s
        local held, deadline = {}, core.now() + 2
        while core.now() < deadline do
          local release = assert(db:try_lock(key, opts) or true)
          if release ~= true then
            local t_enter = core.now()
            core.sleep(0.005)
            local t_exit = core.now()
            assert(release())
            held[#held + 1] = { t_enter, t_exit }
          end
        end
        for _, h in ipairs(held) do
          assert(db:exec("insert into " .. log .. " values ($1, $2, $3)", me, h[1], h[2]))
        end
        print("held", #held)
      ]]):format(mode == "table" and "{ mode = 'table', table = 'pgstore_spec_rlocks', ttl = 5 }" or "nil"),
        key .. " " .. log)
      for i, r in ipairs(results) do assert.equal(0, r.rc, "worker " .. i .. ": " .. r.out) end
      local rows = assert(db:query("select worker, t_enter, t_exit from " .. log))
      local per = {}
      for _, row in ipairs(rows) do per[row.worker] = (per[row.worker] or 0) + 1 end
      assert.truthy(#rows >= 20, "only " .. #rows .. " holds")
      assert.truthy((per[1] or 0) > 0 and (per[2] or 0) > 0 and (per[3] or 0) > 0,
        "a worker never got the lock")
      assert_disjoint(rows)
      assert(db:exec("drop table " .. log))
      if mode == "table" then assert(db:exec("drop table pgstore_spec_rlocks")) end
    end)
  end
end)
