-- SPDX-License-Identifier: MIT
-- Idempotency keys: an append whose outcome is unknown because it timed
-- out carries its key (retrying with it is safe), and keys expire after the
-- store's idempotency_ttl — never sooner — through a bounded cleanup that
-- policies:apply, `pgstore policy apply` and the projection host's policy
-- timer run.
local pgstore = require "pgstore"
local T = require "testenv"

describe("idempotency keys", function()
  local db, es, name
  setup(function() db = T.connect{ pool_size = 3 } end)
  teardown(function()
    db:close()
    T.assert_no_leaks()
  end)
  before_each(function()
    name = T.unique("idem_ev")
    es = assert(db:events{ table = name, notify = false, idempotency_ttl = 3600 })
  end)
  after_each(function() es:close() end)

  local function one(i) return { { type = "E", data = { i = i } } } end

  -- Keys appended now, then made `age` seconds old.
  local function keys_aged(prefix, n, age)
    for i = 1, n do assert(es:append(prefix .. "-s" .. i, one(i), { idempotency_key = prefix .. i })) end
    assert(db:exec(("update %s_idempotency set created_at = now() - make_interval(secs => $1) where key like $2")
      :format(name), age, prefix .. "%"))
  end

  local function keys_left(prefix)
    return db:query(("select count(*) as n from %s_idempotency where key like $1"):format(name), prefix .. "%")[1].n
  end

  describe("a timeout", function()
    local slow
    before_each(function() slow = T.connect{ pool_size = 2, statement_timeout = 300 } end)
    after_each(function() slow:close() end)

    -- Holds the stream's head row so an append to it waits past the
    -- statement timeout; → the pinned connection (roll it back to release).
    local function hold_head(stream)
      assert(es:append(stream, one(0)))
      local conn = assert(db:acquire())
      assert(conn:begin())
      assert(conn:query(("select 1 from %s_heads where stream = $1 for update"):format(name), stream))
      return conn
    end

    it("on an append with a key is outcome-unknown: it carries the key, and the retry is exactly once", function()
      local ses = assert(slow:events{ table = name, notify = false })
      local conn = hold_head("t-1")
      local res, err = ses:append("t-1", one(1), { idempotency_key = "tk-1" })
      assert.is_nil(res)
      assert.equal("timeout", err.code)
      assert.equal("57014", err.sqlstate)
      assert.equal("tk-1", err.idempotency_key)
      assert.matches("retry with the same idempotency key", err.message, 1, true)
      assert(conn:rollback())
      conn:release()
      local first = assert(ses:append("t-1", one(1), { idempotency_key = "tk-1" }))
      assert.is_false(first.replayed)
      assert.equal(2, first.last_version)
      local again = assert(ses:append("t-1", one(1), { idempotency_key = "tk-1" }))
      assert.is_true(again.replayed)
      assert.equal(first.last_position, again.last_position)
      assert.equal(2, es:version("t-1"))
      -- without a key there is nothing to carry
      conn = hold_head("t-2")
      res, err = ses:append("t-2", one(1))
      assert.is_nil(res)
      assert.equal("timeout", err.code)
      assert.is_nil(err.idempotency_key)
      assert(conn:rollback())
      conn:release()
      ses:close()
    end)

    it("on append_many with a key on every batch carries the keys", function()
      local ses = assert(slow:events{ table = name, notify = false })
      local conn = hold_head("m-2")
      local res, err = ses:append_many{
        { stream = "m-1", events = one(1), idempotency_key = "mk-1" },
        { stream = "m-2", events = one(2), idempotency_key = "mk-2" },
      }
      assert.is_nil(res)
      assert.equal("timeout", err.code)
      assert.same({ "mk-1", "mk-2" }, err.idempotency_keys)
      assert(conn:rollback())
      conn:release()
      ses:close()
    end)

    it("on append_many with a batch without a key carries none (a retry would append it again)", function()
      local ses = assert(slow:events{ table = name, notify = false })
      local conn = hold_head("h-3")
      local res, err = ses:append_many{
        { stream = "h-1", events = one(1), idempotency_key = "hk-1" },
        { stream = "h-2", events = one(1) },
        { stream = "h-3", events = one(1), idempotency_key = "hk-3" },
      }
      assert.is_nil(res)
      assert.equal("timeout", err.code)
      assert.is_nil(err.idempotency_keys)
      assert.falsy(err.message:match("retry with the same"), err.message)
      assert(conn:rollback())
      conn:release()
      ses:close()
    end)
  end)

  describe("idempotency_ttl", function()
    it("is checked by the options checker", function()
      local ok, err = db:events{ table = name, idempotency_ttl = -1 }
      assert.is_nil(ok)
      assert.equal("invalid", err.code)
      ok, err = db:events{ table = name, idempotency_ttl = 1.5 }
      assert.is_nil(ok)
      assert.equal("invalid", err.code)
      local raised, msg = pcall(db.events, db, { table = name, idempotency_ttl = "1d" })
      assert.is_false(raised)
      assert.matches("bad argument #1 to 'events' (option 'idempotency_ttl'", msg, 1, true)
      local e7 = assert(db:events{ table = name, notify = false })
      assert.equal(7 * 24 * 3600, e7.idempotency_ttl)
      e7:close()
    end)

    it("has an index on the keys' age", function()
      local rows = assert(db:query("select indexdef from pg_indexes where tablename = $1", name .. "_idempotency"))
      local found = false
      for _, r in ipairs(rows) do found = found or r.indexdef:match("%(created_at%)") ~= nil end
      assert.is_true(found)
    end)

    it("the cleanup never removes a key younger than the TTL; an expired key no longer replays", function()
      keys_aged("old", 3, 3601)
      keys_aged("young", 3, 3540)
      assert.equal(3, assert(es:expire_idempotency_keys{ dry_run = true }))
      assert.equal(3, keys_left("old"))
      assert.equal(3, assert(es:expire_idempotency_keys()))
      assert.equal(0, keys_left("old"))
      assert.equal(3, keys_left("young"))
      assert.equal(0, assert(es:expire_idempotency_keys()))
      local young = assert(es:append("young-s1", one(1), { idempotency_key = "young1" }))
      assert.is_true(young.replayed)
      local old = assert(es:append("old-s1", one(1), { idempotency_key = "old1" }))
      assert.is_false(old.replayed)
      assert.equal(2, old.last_version)
    end)

    it("the cleanup works in batches, bounded per call", function()
      keys_aged("b", 25, 7200)
      assert.equal(15, assert(es:expire_idempotency_keys{ batch = 10, max = 15 }))
      assert.equal(10, keys_left("b"))
      assert.equal(10, assert(es:expire_idempotency_keys{ batch = 4 }))
      assert.equal(0, keys_left("b"))
      local ok, err = es:expire_idempotency_keys{ batch = 0 }
      assert.is_nil(ok)
      assert.equal("invalid", err.code)
    end)

    it("0 keeps keys forever", function()
      keys_aged("f", 2, 10 * 365 * 86400)
      local forever = assert(db:events{ table = name, notify = false, idempotency_ttl = 0 })
      assert.equal(0, assert(forever:expire_idempotency_keys()))
      forever:close()
      assert.equal(2, keys_left("f"))
    end)

    it("is the store's: a cleaning handle without one goes by what the writers set", function()
      keys_aged("w", 2, 8 * 86400)
      -- the writers keep keys forever; a cleanup with the default week keeps them too
      local writers = assert(db:events{ table = name, notify = false, idempotency_ttl = 0 })
      local cleaner = assert(db:events{ table = name, notify = false })
      assert.equal(0, assert(cleaner:expire_idempotency_keys()))
      assert.equal(2, keys_left("w"))
      -- the last TTL set explicitly is the store's
      local shorter = assert(db:events{ table = name, notify = false, idempotency_ttl = 86400 })
      assert.equal(2, assert(cleaner:expire_idempotency_keys()))
      assert.equal(0, keys_left("w"))
      writers:close()
      cleaner:close()
      shorter:close()
    end)

    it("policies:apply removes expired keys, and a dry run only counts them", function()
      keys_aged("p", 4, 4000)
      keys_aged("q", 2, 60)
      local set = pgstore.policies{ { name = "none", streams = "nothing-*", max_count = 1 } }
      local plan = assert(set:plan(es))
      assert.equal(4, plan.keys)
      assert.equal(4, keys_left("p"))
      local summary = assert(set:apply(es))
      assert.equal(4, summary.keys_removed)
      assert.equal(0, keys_left("p"))
      assert.equal(2, keys_left("q"))
    end)

    describe("in the host", function()
      local dir
      setup(function() dir = T.tmpdir("idem") end)
      teardown(function() T.sh("rm -rf " .. dir) end)

      local POLICY = [[return { name = "none", streams = "nothing-*", max_count = 1 }]]

      it("pgstore policy apply removes the keys past --idempotency-ttl", function()
        keys_aged("c", 3, 1000)
        keys_aged("d", 2, 10)
        T.write(dir .. "/p.lua", POLICY)
        local out, rc = T.sh(("%s --dsn %q policy apply --table %s --idempotency-ttl 500 %s/p.lua 2>&1")
          :format(T.host(), T.dsn(), name, dir))
        assert.equal(0, rc, out)
        assert.matches("done: removed 0 events, archived 0 streams, expired 3 idempotency keys", out, 1, true)
        assert.equal(0, keys_left("c"))
        assert.equal(2, keys_left("d"))
      end)

      it("the projection host's policy timer removes them too", function()
        keys_aged("h", 3, 1000)
        keys_aged("i", 2, 10)
        T.write(dir .. "/p.lua", POLICY)
        T.write(dir .. "/proj.lua", [[return { name = "idem_noop", handlers = { E = function() end } }]])
        local out, rc = T.sh(("%s --dsn %q project --table %s --once --policy %s/p.lua --idempotency-ttl 500 %s/proj.lua 2>&1")
          :format(T.host(), T.dsn(), name, dir, dir))
        assert.equal(0, rc, out)
        assert.matches("expired 3 idempotency keys", out, 1, true)
        assert.equal(0, keys_left("h"))
        assert.equal(2, keys_left("i"))
      end)
    end)
  end)
end)
