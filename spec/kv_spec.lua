-- SPDX-License-Identifier: MIT
-- The key-value store: NUL-safe values, TTLs invisible at once and removed
-- by cleanup, literal prefix deletes, the background cleaner (runs, stops
-- at once on close, cancels a blocked cleanup, 0 disables it), schema init
-- under an advisory lock with the phase hook (real order, failing phase
-- reported, 8 processes at once), roles without DDL rights, bad input,
-- lifetime.
local core = require "pgstore.core"
local T = require "testenv"
local S = require "stores"

local function probe(kv) return kv:get("probe") end

describe("kv: set, get, delete", function()
  local db, kv, t
  S.fixture(setup, teardown, "kv",
    { prefix = "kv", connect = { pool_size = 2 }, opts = { cleanup_interval = 0 } },
    function(...) db, kv, t = ... end)

  it("gets nil, not an error, for an absent key", function()
    local v, err = kv:get("absent")
    assert.is_nil(v)
    assert.is_nil(err)
  end)

  it("sets, gets and overwrites", function()
    assert.is_true(kv:set("k", "one"))
    assert.equal("one", kv:get("k"))
    assert(kv:set("k", "two"))
    assert.equal("two", kv:get("k"))
    assert.equal(1, S.count(db, t, "where key = 'k'"))
  end)

  it("keeps every byte of a value, NULs included", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    local bytes = table.concat(all)
    for _, v in ipairs({ bytes, "\0", "\0lead and trail\0", "" }) do
      assert(kv:set("bin", v))
      assert.equal(v, kv:get("bin"))
    end
  end)

  it("deletes; deleting an absent key is not an error", function()
    assert(kv:set("del", "x"))
    assert.is_true(kv:delete("del"))
    assert.is_nil(kv:get("del"))
    assert.is_true(kv:delete("del"))
  end)

  it("joins the caller's transaction", function()
    local res = db:transaction(function(tx)
      assert(kv:set("txk", "v", nil, { tx = tx }))
      assert.equal("v", kv:get("txk", { tx = tx }))
      return nil, "undo"
    end)
    assert.is_nil(res)
    assert.is_nil(kv:get("txk"))
  end)
end)

describe("kv: expiry", function()
  local db, kv, t
  S.fixture(setup, teardown, "kv", { prefix = "kvttl", opts = { cleanup_interval = 0 } },
    function(...) db, kv, t = ... end)
  before_each(function() assert(kv:delete_prefix("")) end)

  it("hides an expired value at once, before any cleanup", function()
    assert(kv:set("short", "v", 0.2))
    assert.equal("v", kv:get("short"))
    core.sleep(0.3)
    assert.is_nil(kv:get("short"))
    assert.equal(1, S.count(db, t)) -- still in the table
  end)

  it("never expires a value set with no ttl, ttl 0 or a negative ttl", function()
    assert(kv:set("a", "v"))
    assert(kv:set("b", "v", 0))
    assert(kv:set("c", "v", -5))
    assert.equal(3, S.count(db, t, "where expires_at is null"))
  end)

  it("cleanup() removes the expired rows now and says how many", function()
    assert(kv:set("gone1", "v", 0.05))
    assert(kv:set("gone2", "v", 0.05))
    assert(kv:set("stays", "v", 60))
    assert(kv:set("forever", "v"))
    core.sleep(0.15)
    assert.equal(2, kv:cleanup())
    assert.equal(2, S.count(db, t))
    assert.equal("v", kv:get("stays"))
    assert.equal(0, kv:cleanup())
  end)

  it("a new set revives an expired key", function()
    assert(kv:set("again", "old", 0.05))
    core.sleep(0.1)
    assert(kv:set("again", "new"))
    assert.equal("new", kv:get("again"))
  end)
end)

describe("kv: delete_prefix", function()
  local db, kv, t
  S.fixture(setup, teardown, "kv", { prefix = "kvpfx", opts = { cleanup_interval = 0 } },
    function(...) db, kv, t = ... end)

  local KEYS = { "a%b1", "a%b2", "axb", "a_c", "abc", "ab", "a\\x", "a\\\\y", "b%", "user:1", "user:2", "users" }
  before_each(function()
    assert(kv:delete_prefix(""))
    for _, k in ipairs(KEYS) do assert(kv:set(k, "v")) end
  end)

  local function remaining()
    local rows = db:query(("select key from %s order by key"):format(t))
    local keys = {}
    for _, r in ipairs(rows) do keys[#keys + 1] = r.key end
    return keys
  end

  it("matches an ordinary prefix", function()
    assert.equal(2, kv:delete_prefix("user:"))
    assert.equal("v", kv:get("users"))
  end)

  it("matches % literally", function()
    assert.equal(2, kv:delete_prefix("a%"))
    assert.equal("v", kv:get("axb"))
    assert.equal("v", kv:get("abc"))
  end)

  it("matches _ literally", function()
    assert.equal(1, kv:delete_prefix("a_"))
    assert.equal("v", kv:get("abc"))
    assert.equal("v", kv:get("axb"))
  end)

  it("matches \\ literally", function()
    assert.equal(2, kv:delete_prefix("a\\"))
    assert.is_nil(kv:get("a\\x"))
    assert.is_nil(kv:get("a\\\\y"))
    assert.equal(#KEYS - 2, #remaining())
  end)

  it("empties the table, expired rows included, for an empty prefix", function()
    assert(kv:set("expired", "v", 0.01))
    core.sleep(0.05)
    assert.equal(#KEYS + 1, kv:delete_prefix(""))
    assert.same({}, remaining())
  end)
end)

describe("kv: background cleaner", function()
  local db
  T.block_db(setup, teardown, function(d) db = d end)

  it("removes expired rows on its own, on its own connection", function()
    local t = T.unique("kvclean")
    local kv = assert(db:kv{ table = t, cleanup_interval = 0.1 })
    assert(kv:set("old", "v", 0.05))
    assert(kv:set("live", "v"))
    assert.truthy(T.eventually(function() return S.count(db, t) == 1 end, 3), "expired row not removed")
    -- the cleaner counts the rows just after its DELETE commits
    assert.truthy(T.eventually(function() return kv:cleaner_stats().removed == 1 end, 3))
    local st = kv:cleaner_stats()
    assert.is_true(st.running)
    assert.equal(0.1, st.interval)
    assert.truthy(st.runs >= 1)
    assert.equal(1, st.removed)
    assert.equal(0, st.failures, st.last_error)
    assert.equal(0, db:pool_stats().borrowed)
    kv:close()
    S.drop(db, t)
  end)

  it("runs every 300 seconds by default", function()
    local t = T.unique("kvdflt")
    local kv = assert(db:kv{ table = t })
    local st = kv:cleaner_stats()
    assert.equal(300, st.interval)
    assert.is_true(st.running)
    kv:close()
    S.drop(db, t)
  end)

  it("is disabled by cleanup_interval = 0", function()
    local t = T.unique("kvnoclean")
    local kv = assert(db:kv{ table = t, cleanup_interval = 0 })
    assert(kv:set("old", "v", 0.01))
    core.sleep(0.3)
    local st = kv:cleaner_stats()
    assert.is_false(st.running)
    assert.equal(0, st.runs)
    assert.equal(1, S.count(db, t))
    kv:close()
    S.drop(db, t)
  end)

  it("stops at once on close, even while sleeping a long interval", function()
    local t = T.unique("kvstop")
    local kv = assert(db:kv{ table = t, cleanup_interval = 300 })
    local t0 = core.now()
    kv:close()
    -- at once: not after the interval, however busy the machine is
    assert.truthy(core.now() - t0 < 1, "close took " .. (core.now() - t0))
    S.drop(db, t)
  end)

  it("cancels a cleanup blocked on a lock when the store closes", function()
    local t = T.unique("kvblock")
    local kv = assert(db:kv{ table = t, cleanup_interval = 0.05 })
    local holder = assert(T.admin():acquire())
    assert(holder:begin())
    assert(holder:exec(("lock table %s in access exclusive mode"):format(t)))
    local blocked = T.eventually(function()
      return T.admin():query([[select count(*) as n from pg_stat_activity
        where datname = current_database() and query like 'DELETE FROM%expires_at <=%' and wait_event_type = 'Lock']])[1].n == 1
    end, 3)
    assert.truthy(blocked, "the cleaner never blocked")
    local t0 = core.now()
    kv:close()
    local took = core.now() - t0
    assert(holder:rollback())
    holder:release()
    assert.truthy(took < 1, "close took " .. took)
    S.drop(db, t)
  end)

  it("stops cleaning when its db is closed", function()
    local other = T.connect()
    local t = T.unique("kvdbclose")
    local kv = assert(other:kv{ table = t, cleanup_interval = 0.05 })
    local ud = kv.core
    other:close()
    assert.truthy(T.eventually(function() return not ud:cleaner_stats().running end, 3))
    assert.has_error(function() kv:get("x") end, "attempt to use a closed connection")
    kv:close()
    S.drop(db, t)
  end)
end)

describe("kv: schema init and the phase hook", function()
  local db
  T.block_db(setup, teardown, function(d) db = d end)

  -- A fresh table gets its index from the same file (core/sql/kv--1.sql):
  -- create_index runs only when the index alone is missing.
  local ALL = { "begin_tx", "set_lock_timeout", "acquire_lock", "lock_acquired", "check_table",
                "create_table", "check_index", "commit", "done" }
  local FOUND = { "begin_tx", "set_lock_timeout", "acquire_lock", "lock_acquired", "check_table",
                  "check_index", "commit", "done" }

  local function recorder()
    local seen = {}
    return seen, function(tag) seen[#seen + 1] = tag end
  end

  it("reports every phase in order when it creates the table and index", function()
    local t = T.unique("kvinit")
    local seen, hook = recorder()
    local kv = assert(db:kv{ table = t, cleanup_interval = 0, phase_hook = hook })
    assert.same(ALL, seen)
    assert.is_true(S.exists(db, t))
    assert.is_true(S.exists(db, t .. "_expires_idx"))
    kv:close()
    S.drop(db, t)
  end)

  it("skips the create phases when the table and index exist", function()
    local t = T.unique("kvfound")
    assert(db:kv{ table = t, cleanup_interval = 0 }):close()
    local seen, hook = recorder()
    local kv = assert(db:kv{ table = t, cleanup_interval = 0, phase_hook = hook })
    assert.same(FOUND, seen)
    -- migrate() runs the same steps again, hook included
    for k in pairs(seen) do seen[k] = nil end
    assert.is_true(kv:migrate())
    assert.same(FOUND, seen)
    kv:close()
    S.drop(db, t)
  end)

  it("creates only the missing index", function()
    local t = T.unique("kvnoidx")
    assert(db:kv{ table = t, cleanup_interval = 0 }):close()
    assert(db:exec(("drop index %s_expires_idx"):format(t)))
    local seen, hook = recorder()
    assert(db:kv{ table = t, cleanup_interval = 0, phase_hook = hook }):close()
    assert.same({ "begin_tx", "set_lock_timeout", "acquire_lock", "lock_acquired", "check_table",
                  "check_index", "create_index", "commit", "done" }, seen)
    assert.is_true(S.exists(db, t .. "_expires_idx"))
    S.drop(db, t)
  end)

  it("reports a failure at the failing phase: a lock held elsewhere times out at acquire_lock", function()
    local t = T.unique("kvlock")
    local holder = assert(T.admin():acquire())
    assert(holder:query("select pg_advisory_lock(hashtext('pgstore.migrate'), hashtext($1))", "kv:public." .. t))
    local seen, hook = recorder()
    local t0 = core.now()
    local kv, err = db:kv{ table = t, cleanup_interval = 0, lock_timeout = 0.2, phase_hook = hook }
    local took = core.now() - t0
    assert(holder:query("select pg_advisory_unlock_all()"))
    holder:release()
    S.fails("timeout", "55P03", kv, err)
    assert.equal("acquire_lock", err.phase)
    assert.same({ "begin_tx", "set_lock_timeout", "acquire_lock" }, seen)
    assert.truthy(took >= 0.15 and took < 2, "took " .. took)
    assert.is_false(S.exists(db, t))
    assert.equal(0, db:pool_stats().borrowed)
    S.alive(db)
  end)

  it("rolls everything back when the hook raises, and re-raises", function()
    local t = T.unique("kvhook")
    assert.has_error(function()
      db:kv{ table = t, cleanup_interval = 0, phase_hook = function(tag)
        if tag == "commit" then error("hook says no", 0) end
      end }
    end, "hook says no")
    -- create_table and create_index had run: the rollback undid them
    assert.is_false(S.exists(db, t))
    assert.equal(0, db:pool_stats().borrowed)
    S.alive(db)
  end)

  it("lets 8 processes initialise the same table at once; exactly one creates it", function()
    local t = T.unique("kvpar")
    local barrier = S.make_barrier(db)
    local code = S.BARRIER .. ([[
      barrier(%q, 8)
      local seen = {}
      local kv = assert(db:kv{ table = %q, cleanup_interval = 0,
                               phase_hook = function(tag) seen[#seen + 1] = tag end })
      assert(kv:set("from-" .. arg[1], "v"))
      kv:close()
      print(table.concat(seen, ","))
    ]]):format(barrier, t)
    local results = T.run_parallel(8, code)
    local created = 0
    for _, r in ipairs(results) do
      assert.equal(0, r.rc, r.out)
      assert.matches("commit,done", r.out)
      if r.out:match("create_table") then created = created + 1 end
    end
    assert.equal(1, created)
    assert.equal(8, S.count(db, t))
    S.drop(db, t, barrier)
  end)

  it("takes a lock_timeout up to the server's longest wait, and refuses one beyond it", function()
    local t = T.unique("kvlongwait")
    local kv = assert(db:kv{ table = t, cleanup_interval = 0, lock_timeout = 2147483 })
    kv:close()
    S.fails("invalid", nil, db:kv{ table = t, cleanup_interval = 0, lock_timeout = 1e9 })
    S.drop(db, t)
  end)

  it("skips schema init when asked", function()
    local t = T.unique("kvskip")
    local seen, hook = recorder()
    -- a missing table is named at once, not on every call
    local missing, err = db:kv{ table = t, cleanup_interval = 0, skip_schema_init = true, phase_hook = hook }
    S.fails("not_found", nil, missing, err)
    assert.matches('"' .. t .. '"', err.message, 1, true)
    assert.same({}, seen)
    assert.is_false(S.exists(db, t))
    assert(db:kv{ table = t, cleanup_interval = 0, phase_hook = hook }):close()
    assert.same(ALL, seen)
    local kv = assert(db:kv{ table = t, cleanup_interval = 0, skip_schema_init = true, phase_hook = hook })
    assert.same(ALL, seen)
    assert(kv:set("k", "v"))
    kv:close()
    S.drop(db, t)
  end)

  it("works for a role without DDL rights once the schema exists", function()
    local role = T.unique("pgs_noddl")
    local t = T.unique("kvrole")
    assert(db:exec(("create role %s login"):format(role)))
    assert(db:kv{ table = t, cleanup_interval = 0 }):close()
    assert(db:exec(("grant select, insert, update, delete on %s to %s"):format(t, role)))
    local rdb = T.connect{ dsn = T.dsn() .. " user=" .. role }
    -- the table and index exist: init checks, creates nothing, succeeds
    local kv = assert(rdb:kv{ table = t, cleanup_interval = 0 })
    assert(kv:set("k", "v"))
    assert.equal("v", kv:get("k"))
    kv:close()
    -- a missing table needs DDL: the failure names the phase
    local missing, err = rdb:kv{ table = T.unique("kvnorights"), cleanup_interval = 0 }
    S.fails("sql", "42501", missing, err)
    assert.equal("create_table", err.phase)
    -- skip_schema_init lets such a role open the store regardless
    kv = assert(rdb:kv{ table = t, cleanup_interval = 0, skip_schema_init = true })
    assert.equal("v", kv:get("k"))
    kv:close()
    rdb:close()
    S.drop(db, t)
    assert(db:exec(("drop role %s"):format(role)))
  end)
end)

describe("kv: bad input", function()
  local db, kv, t
  S.fixture(setup, teardown, "kv", { prefix = "kvbad", opts = { cleanup_interval = 0 } },
    function(...) db, kv, t = ... end)
  after_each(function()
    assert.equal(0, S.count(db, t))
    S.alive(db)
  end)

  it("raises on wrong argument types with the argument number", function()
    assert.has_error(function() kv:set(1, "v") end, "bad argument #1 to 'set' (string expected, got number)")
    assert.has_error(function() kv:set("k", 42) end, "bad argument #2 to 'set' (string expected, got number)")
    assert.has_error(function() kv:set("k", nil) end, "bad argument #2 to 'set' (string expected, got nil)")
    assert.has_error(function() kv:set("k", "v", "60") end, "bad argument #3 to 'set' (number or nil expected, got string)")
    assert.has_error(function() kv:set("k", "v", 60, { ttl = 1 }) end, "bad argument #4 to 'set' (unknown option 'ttl')")
    assert.has_error(function() kv:get({}) end, "bad argument #1 to 'get' (string expected, got table)")
    assert.has_error(function() kv:delete_prefix(nil) end, "bad argument #1 to 'delete_prefix' (string expected, got nil)")
    assert.has_error(function() kv.get("k") end)
  end)

  it("refuses NUL bytes in keys and prefixes", function()
    S.fails("invalid", nil, kv:set("a\0b", "v"))
    S.fails("invalid", nil, kv:get("a\0b"))
    S.fails("invalid", nil, kv:delete_prefix("a\0"))
  end)

  it("refuses invalid UTF-8 and empty keys", function()
    assert.matches("UTF-8", S.fails("invalid", nil, kv:set("\255\254", "v")).message, 1, true)
    S.fails("invalid", nil, kv:set("", "v"))
  end)

  it("refuses a key too large for its index", function()
    local chars = {}
    math.randomseed(7)
    for i = 1, 10000 do chars[i] = string.char(math.random(33, 126)) end
    S.fails("invalid", "54000", kv:set(table.concat(chars), "v"))
  end)

  it("refuses a 10 MB value with 'invalid'", function()
    local err = S.fails("invalid", nil, kv:set("big", ("\0x"):rep(5 * 1024 * 1024)))
    assert.matches("max_value_size", err.message)
  end)

  it("refuses an absurd or NaN ttl and the infinities with 'invalid'", function()
    S.fails("invalid", nil, kv:set("k", "v", 1e300))
    S.fails("invalid", nil, kv:set("k", "v", 0 / 0))
    S.fails("invalid", nil, kv:set("k", "v", math.huge))
    S.fails("invalid", nil, kv:set("k", "v", -math.huge))
    -- the core holds the same line for direct users of pgstore.core
    S.fails("invalid", nil, kv.core:set("k", "v", -math.huge))
    assert.is_nil(kv:get("k"))
  end)

  it("raises on options of the wrong type, refuses values out of range with 'invalid'", function()
    assert.has_error(function() db:kv{ phase_hook = "print" } end,
      "bad argument #1 to 'kv' (option 'phase_hook' must be function, got string)")
    for option, value in pairs{ cleanup_interval = -1, lock_timeout = 0, max_value_size = 1.5 } do
      local err = S.fails("invalid", nil, db:kv{ [option] = value })
      assert.matches(option .. " must be", err.message, 1, true)
    end
    S.fails("invalid", nil, db:kv{ max_value_size = 2 ^ 40 })
    -- the binding holds the same line for direct users of pgstore.core
    assert.has_error(function() core.kv(db.pool, { max_value_size = 2 ^ 40 }) end,
      "bad option 'max_value_size' (must be a whole number of bytes up to 1 GiB)")
  end)
end)

describe("kv: large values", function()
  it("stores a 10 MB value with NUL bytes when max_value_size allows it", function()
    local db = T.connect()
    local t = T.unique("kvbig")
    local kv = assert(db:kv{ table = t, cleanup_interval = 0, max_value_size = 16 * 1024 * 1024 })
    local v = ("\0\1\2\255"):rep(10 * 1024 * 1024 / 4)
    assert(kv:set("big", v))
    assert.equal(v, kv:get("big"))
    kv:close()
    S.drop(db, t)
    db:close()
    T.assert_no_leaks()
  end)
end)

describe("kv: schema names", function()
  after_each(function() T.assert_no_leaks() end)

  S.table_names(it, "kv", probe)

  it("refuses a name too long to carry its index name", function()
    local db = T.connect()
    local kv, err = db:kv{ table = ("k"):rep(55) }
    S.fails("invalid", nil, kv, err)
    assert.matches("longer than 63 bytes", err.message)
    S.alive(db)
    db:close()
    T.assert_no_leaks()
  end)
end)

describe("kv: lifetime", function()
  S.lifetime(it, teardown, "kv", probe)
end)
