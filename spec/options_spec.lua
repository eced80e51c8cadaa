-- SPDX-License-Identifier: MIT
-- The raise-or-return rule (README, "Errors"), table-driven over the public
-- API: for every constructor and method that takes options, an unknown
-- option and a value of the wrong Lua type raise, naming the option, at
-- the caller's file and line; a value of the right type that is out of
-- range returns nil, err with code "invalid", writes nothing, and the
-- connection still works. Definitions (policies, upcasters, projection
-- scripts) refuse unknown fields by name.
local pgstore = require "pgstore"
local projection = require "pgstore.projection"
local S = require "stores"
local T = require "testenv"

local HERE = debug.getinfo(1, "S").short_src

-- Calls fn, which must raise; the message must start with this file's
-- name and fn's own line (every fn below is one line, and makes its call
-- as a statement: a tail call would leave no frame to point at), and
-- match `pattern`.
local function raises(fn, pattern, label)
  local ok, msg = pcall(fn)
  assert.is_false(ok, label .. ": did not raise")
  assert.is_string(msg, label)
  local where = ("%s:%d: "):format(HERE, debug.getinfo(fn, "S").linedefined)
  assert.equal(where, msg:sub(1, #where), label .. ": " .. msg)
  assert.is_nil(msg:find("lua/pgstore/", 1, true), label .. ": " .. msg)
  if pattern then assert.matches(pattern, msg, 1, true, label) end
  return msg
end

local function merge(a, b)
  local out = {}
  for k, v in pairs(a or {}) do out[k] = v end
  for k, v in pairs(b or {}) do out[k] = v end
  return out
end

describe("options", function()
  local db, es, ss, cp, kv, policies
  local function events() return db:query("select count(*) as n from options_ev")[1].n end
  setup(function()
    db = T.connect()
    es = assert(db:events{ table = "options_ev", notify = false })
    ss = assert(db:snapshots{ table = "options_ss" })
    cp = assert(db:checkpoints{ table = "options_cp" })
    kv = assert(db:kv{ table = "options_kv", cleanup_interval = 0 })
    policies = pgstore.policies{ { name = "keep", streams = "x-*", max_count = 10 } }
  end)
  teardown(function()
    for _, s in ipairs{ kv, cp, ss, es } do s:close() end
    db:close()
    T.assert_no_leaks()
  end)

  -- { name, fn = function(opts) → the call, base = options every call needs,
  --   arg = the options' argument number, wrong = { option = wrong type },
  --   bad = { option = right type, out of range } }
  local CASES = {
    { "connect", function(o) return pgstore.connect(o) end, base = function() return { dsn = T.dsn() } end,
      wrong = { pool_size = "4" }, bad = { pool_size = 0 } },
    { "events", function(o) return db:events(o) end, base = { table = "options_ev", notify = false },
      wrong = { migrate = "yes" }, bad = { table = "" } },
    { "events (codec)", function(o) return db:events(o) end, base = { table = "options_ev", notify = false },
      wrong = { codec = 1 }, bad = { codec = "bogus" } },
    { "snapshots", function(o) return db:snapshots(o) end, wrong = { table = 1 }, bad = { max_value_size = 0 } },
    { "checkpoints", function(o) return db:checkpoints(o) end, wrong = { skip_schema_init = 1 },
      bad = { table = "a b" } },
    { "exec_checkpoints", function(o) return db:exec_checkpoints(o) end, wrong = { max_value_size = "1" },
      bad = { max_value_size = 2 ^ 40 } },
    { "sessions", function(o) return db:sessions(o) end, wrong = { table = true }, bad = { max_value_size = -1 } },
    { "kv", function(o) return db:kv(o) end, base = { table = "options_kv" }, wrong = { cleanup_interval = "0" },
      bad = { cleanup_interval = -1 } },
    { "listen", function(o) return db:listen("options_ch", o) end, arg = 2, wrong = { heartbeat = "1" },
      bad = { heartbeat = -1 } },
    { "relay", function(o) return db:relay("options_ch", o) end, arg = 2, wrong = { timeout = "1" },
      bad = { timeout = 0 } },
    { "partitions", function(o) return db:partitions(o) end, base = { name = "options_pm" },
      wrong = { count = "8" }, bad = { count = 0 } },
    { "lock", function(o) return db:lock("options_lock", o) end, arg = 2, wrong = { timeout = "1" },
      bad = { mode = "bogus" } },
    { "try_lock", function(o) return db:try_lock("options_lock", o) end, arg = 2, wrong = { ttl = true },
      bad = { ttl = 0 } },
    { "with_lock", function(o) return db:with_lock("options_lock", function() return true end, o) end, arg = 3,
      wrong = { mode = 1 }, bad = { timeout = -1 } },
    { "transaction", function(o) return db:transaction(function() return true end, o) end, arg = 2,
      wrong = { isolation = 1 }, bad = { isolation = "bogus" } },
    { "lock (tx)", function(o) return db:transaction(function(tx) return tx:lock("options_lock", o) end) end,
      arg = 2, wrong = { timeout = "1" }, bad = { timeout = -1 } },
    { "subscribe", function(o) return db:subscribe(o) end,
      base = function() return { name = "options_sub", events = es, listen = false } end,
      wrong = { batch = "1" }, bad = { from = "middle" } },
    { "aggregate", function(o) return pgstore.aggregate(o) end,
      base = function() return { events = es, initial = function() return {} end, apply = {} } end,
      wrong = { page = "1" }, bad = { page = 0 } },
    { "append", function(o) return es:append("s", { { type = "E" } }, o) end, arg = 3,
      wrong = { expected = true }, bad = { expected = "bogus" } },
    { "append (version)", function(o) return es:append("s", { { type = "E" } }, o) end, arg = 3,
      wrong = { time = "now" }, bad = { expected = -1 } },
    { "read", function(o) return es:read("s", o) end, arg = 2, wrong = { limit = "1" }, bad = { limit = 1.5 } },
    { "read_all", function(o) return es:read_all(o) end, wrong = { after = true }, bad = { after = "abc" } },
    { "streams", function(o) return es:streams(o) end, wrong = { prefix = 1 }, bad = { limit = 0 } },
    { "save (snapshots)", function(o) return ss:save("s", 1, {}, o) end, arg = 4, wrong = { schema_version = "1" },
      bad = { schema_version = -1 } },
    { "save (checkpoints)", function(o) return cp:save("c", 1, o) end, arg = 3, wrong = { expected = "1" },
      bad = { expected = -1 } },
    { "set", function(o) return kv:set("k", "v", nil, o) end, arg = 4, wrong = { tx = 1 } },
    { "events (max_event_size)", function(o) return db:events(o) end, base = { table = "options_ev", notify = false },
      wrong = { max_event_size = "1" }, bad = { max_event_size = -1 } },
    { "events (max_event_size fraction)", function(o) return db:events(o) end,
      base = { table = "options_ev", notify = false }, wrong = { notify_interval = "1" },
      bad = { max_event_size = 1.5 } },
    { "events (max_event_size huge)", function(o) return db:events(o) end,
      base = { table = "options_ev", notify = false }, wrong = { notify_in_tx = 1 }, bad = { max_event_size = 2 ^ 40 } },
    { "events (notify_interval)", function(o) return db:events(o) end, base = { table = "options_ev", notify = false },
      wrong = { notify_interval = true }, bad = { notify_interval = -1 } },
    { "events (notify_interval NaN)", function(o) return db:events(o) end,
      base = { table = "options_ev", notify = false }, wrong = { notify_interval = {} }, bad = { notify_interval = 0 / 0 } },
    { "listen (max_queue)", function(o) return db:listen("options_ch", o) end, arg = 2, wrong = { max_queue = "1" },
      bad = { max_queue = 1.5 } },
    { "listen (reconnect)", function(o) return db:listen("options_ch", o) end, arg = 2,
      wrong = { reconnect_min = "1" }, bad = { reconnect_min = 5, reconnect_max = 1 } },
    { "append (tx)", function(o) return es:append("s", { { type = "E" } }, o) end, arg = 3, wrong = { tx = 1 } },
    { "append_many", function(o) return es:append_many({ { stream = "s", events = { { type = "E" } } } }, o) end,
      arg = 2, wrong = { tx = "tx" } },
    { "read (types)", function(o) return es:read("s", o) end, arg = 2, wrong = { types = { 1 } },
      bad = { from = -1 } },
    { "read_all (types)", function(o) return es:read_all(o) end, wrong = { types = { "E", true } },
      bad = { limit = -1 } },
    { "connect (read_dsn)", function(o) return pgstore.connect(o) end,
      base = function() return { dsn = T.dsn() } end, wrong = { read_dsn = { 5 } }, bad = { query_timeout = -1 } },
    { "apply", function(o) return policies:apply(es, o) end, arg = 2, wrong = { batch = "1" },
      bad = { batch = 0 } },
  }

  local function base_of(case)
    local b = case.base
    if type(b) == "function" then b = b() end
    return b
  end

  it("raises for an unknown option, naming it, at the caller's line", function()
    for _, case in ipairs(CASES) do
      local name, fn = case[1], case[2]
      local fname = name:match("^%S+")
      local o = merge(base_of(case), { bogus_option = 1 })
      raises(function() fn(o) end,
        ("bad argument #%d to '%s' (unknown option 'bogus_option')"):format(case.arg or 1, fname), name)
    end
    assert.equal(0, events())
    S.alive(db)
  end)

  it("raises for an option of the wrong Lua type, naming it, at the caller's line", function()
    for _, case in ipairs(CASES) do
      local name, fn = case[1], case[2]
      local o = merge(base_of(case), case.wrong)
      local option = next(case.wrong)
      raises(function() fn(o) end, "option '" .. option .. "'", name)
    end
    assert.equal(0, events())
    S.alive(db)
  end)

  it("returns invalid for a value of the right type out of range; nothing is written", function()
    for _, case in ipairs(CASES) do
      if case.bad then
        local name, fn = case[1], case[2]
        local res, err = fn(merge(base_of(case), case.bad))
        if type(res) == "table" and res.close then res:close() end
        assert.is_nil(res, name .. ": accepted")
        assert.is_table(err, name .. ": " .. tostring(err))
        assert.equal("invalid", err.code, name .. ": " .. tostring(err))
        S.alive(db)
      end
    end
    assert.equal(0, events())
  end)

  it("raises for arguments of the wrong Lua type, at the caller's line", function()
    raises(function() es:append(42, { { type = "E" } }) end, "bad argument #1 to 'append'", "stream")
    raises(function() es:append("s", "x") end, "bad argument #2 to 'append'", "events")
    raises(function() es:append_many{ { stream = "s", events = "x" } } end, "bad argument #1 to 'append_many'",
      "batch events")
    raises(function() es:append_many{ { stream = "s", events = {}, bogus = 1 } } end, "unknown option 'bogus'",
      "batch field")
    raises(function() cp:save("c", "1") end, "bad argument #2 to 'save'", "cursor")
    raises(function() kv:set(1, "v") end, "bad argument #1 to 'set'", "key")
    raises(function() db:query(1) end, "bad argument #1 to 'query'", "sql")
    raises(function() db:events("t") end, "bad argument #1 to 'events'", "options")
    raises(function() db:partitions{} end, "option 'name'", "partitions name")
    raises(function() db:subscribe{ events = es } end, "option 'name'", "subscribe name")
    raises(function() db:query("select $1::text", {}) end, "bad argument #2 to 'query' (string, number, boolean or null expected, got table)", "query parameter")
    raises(function() db:exec("select $1::text", "a", function() end) end, "bad argument #3 to 'exec'", "exec parameter")
    raises(function() db:transaction(function(tx) tx:query("select $1::text", {}) end) end, "bad argument #2 to 'query'", "tx:query parameter")
    raises(function() es:append("s", { { type = 5 } }) end, "bad argument #2 to 'append' (event 1: field 'type' must be string, got number)", "event type")
    raises(function() es:append("s", { { type = "E", schema_version = "1" } }) end, "field 'schema_version' must be number", "schema_version")
    raises(function() es:append("s", { { type = "E", dat = {} } }) end, "bad argument #2 to 'append' (event 1: unknown field 'dat')", "event field")
    raises(function() es:append("s", { { type = "E", id = 5 } }) end, "field 'id' must be string", "event id")
    raises(function() es:append_many{ { stream = "s", events = { { type = "E", dat = 1 } } } } end, "bad argument #1 to 'append_many' (event 1: unknown field 'dat')", "append_many event field")
    -- called through pcall, a C function: still the line that called pcall
    local line, ok, msg = debug.getinfo(1, "l").currentline, pcall(es.append, es, 42)
    assert.is_false(ok)
    local where = ("%s:%d: "):format(HERE, line)
    assert.equal(where, msg:sub(1, #where))
    S.alive(db)
  end)

  it("a query parameter of the wrong type borrows no connection", function()
    local small = assert(pgstore.connect{ dsn = T.dsn(), pool_size = 2, acquire_timeout = 1 })
    for _ = 1, 5 do
      raises(function() small:query("select $1::text", {}) end, "bad argument #2 to 'query'", "query")
      raises(function() small:exec("select $1::text", function() end) end, "bad argument #2 to 'exec'", "exec")
      assert.equal(0, small:pool_stats().borrowed)
    end
    -- straight to the binding (no Lua check in front): still nothing borrowed
    for _ = 1, 5 do
      assert.is_false((pcall(small.pool.query, small.pool, "select $1::text", {})))
      assert.equal(0, small:pool_stats().borrowed)
    end
    assert.equal("x", small:query("select $1::text as v", "x")[1].v)
    small:close()
  end)

  it("a tx option must be the transaction db:transaction handed out", function()
    local n0 = events()
    for _, fake in ipairs{ {}, db, { conn = false, active = true } } do
      local res, err = db:transaction(function(tx)
        raises(function() es:append("s", { { type = "E" } }, { tx = fake }) end, "option 'tx' must be the transaction given by db:transaction", "append")
        raises(function() es:append_many({ { stream = "s", events = { { type = "E" } } } }, { tx = fake }) end, "bad argument #2 to 'append_many' (option 'tx' must be the transaction given by db:transaction", "append_many")
        return nil, "roll back"
      end)
      assert.is_nil(res)
      assert.equal("roll back", err)
    end
    assert.equal(n0, events())
    -- the real transaction: append_many writes inside it, and goes with its rollback
    local res, err = db:transaction(function(tx)
      local r = assert(es:append_many({ { stream = "tx-a", events = { { type = "E" } } },
                                        { stream = "tx-b", events = { { type = "E" }, { type = "E" } } } }, { tx = tx }))
      assert.equal(2, #r)
      assert.equal(2, r[2].last_version)
      assert.equal(3, tx:query("select count(*)::int as n from options_ev")[1].n)
      return nil, "roll back"
    end)
    assert.is_nil(res)
    assert.equal("roll back", err)
    assert.equal(n0, events())
    -- a conflict inside names its batch
    res, err = db:transaction(function(tx)
      return es:append_many({ { stream = "tx-a", events = { { type = "E" } } },
                              { stream = "tx-b", events = { { type = "E" } }, expected = 5 } }, { tx = tx })
    end)
    assert.is_nil(res)
    assert.equal("conflict", err.code)
    assert.equal(2, err.batch)
    assert.equal(n0, events())
  end)

  it("returns invalid for arguments of the right type out of range", function()
    local pm = assert(db:partitions{ name = T.unique("options_pm"), count = 4 })
    local res, err = pm:token(4)
    assert.is_nil(res)
    assert.equal("invalid", err.code)
    res, err = pm:owns(1.5)
    assert.is_nil(res)
    assert.equal("invalid", err.code)
    res, err = db:transaction(function(tx) return pm:guard(tx, 0, 0) end)
    assert.is_nil(res)
    assert.equal("invalid", err.code)
    pm:close()
    local conn = assert(db:acquire())
    res, err = conn:begin("chaos")
    assert.is_nil(res)
    assert.equal("invalid", err.code)
    assert.equal("idle", conn:tx_status())
    conn:release()
    for _, t in ipairs{ -1, 0 / 0 } do
      res, err = db:acquire(t)
      assert.is_nil(res)
      assert.equal("invalid", err.code)
    end
    assert.equal(0, db:pool_stats().borrowed)
    res, err = db:transaction(function(tx) return tx:savepoint("a; drop table x") end)
    assert.is_nil(res)
    assert.equal("invalid", err.code)
    assert.matches("invalid savepoint name", err.message, 1, true)
    local l = assert(db:listen("options_ch"))
    res, err = l:wait(-1)
    assert.is_nil(res)
    assert.equal("invalid", err.code)
    raises(function() l:wait("1") end, "bad argument #1 to 'wait' (number or nil expected, got string)", "wait")
    raises(function() l:add(1) end, "bad argument #1 to 'add' (string expected, got number)", "add")
    raises(function() l:remove(1) end, "bad argument #1 to 'remove' (string expected, got number)", "remove")
    l:close()
    res, err = es:append("s", {})
    assert.is_nil(res)
    assert.equal("invalid", err.code)
    assert.equal(0, events())
    S.alive(db)
  end)
end)

describe("checkpoint conflicts", function()
  it("name what was expected and what is stored, false for none", function()
    local db = T.connect()
    local cp = assert(db:checkpoints{ table = "options_cpc" })
    cp:delete("c"); cp:delete("new")
    assert(cp:save("c", 10))
    local res, err = cp:save("c", 11, { expected = false })
    assert.is_nil(res)
    assert.equal("conflict", err.code)
    assert.equal(false, err.expected)
    assert.equal(10, err.actual)
    res, err = cp:save("new", 1, { expected = 5 })
    assert.is_nil(res)
    assert.equal("conflict", err.code)
    assert.equal(5, err.expected)
    assert.equal(false, err.actual)
    res, err = cp:save("c", 11, { expected = 5 })
    assert.equal(5, err.expected)
    assert.equal(10, err.actual)
    cp:close()
    db:close()
  end)
end)

describe("subscriptions", function()
  it("sub:ack with something else than the transaction raises, naming ack", function()
    local db = T.connect()
    local es = assert(db:events{ table = "options_ev", notify = false })
    local sub = assert(db:subscribe{ name = T.unique("options_ack"), events = es, listen = false })
    raises(function() sub:ack(0, {}) end, "bad argument #2 to 'ack' (tx must be the transaction given by db:transaction, got table)", "ack")
    sub:close()
    es:close()
    db:close()
  end)
end)

describe("definitions", function()
  it("policy and upcaster definition errors raise at the caller's line", function()
    raises(function() pgstore.policy{ name = "p", streams = "*", max_coutn = 1 } end, "bad argument #1 to 'policy' (policy: ", "policy")
    raises(function() pgstore.policies{ { name = "p", streams = "*", max_count = -1 } } end, "bad argument #1 to 'policies' (policy: ", "policies")
    raises(function() pgstore.upcasters{ { type = "E", from = 1, to = 3, upcast = function(d) return d end } } end, "bad argument #1 to 'upcasters' (upcasters: ", "upcasters")
  end)

  it("a projection script with partitions = 0 is refused, naming the script and the field", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write([[return { name = "p", handlers = { E = function() end }, partitioned = true, partitions = 0 }]])
    f:close()
    local def, msg = projection.load(path)
    os.remove(path)
    assert.is_nil(def)
    assert.matches(path .. ": partitions must be a whole number", msg, 1, true)
  end)


  it("a policy with an unknown field raises, naming the field", function()
    local ok, msg = pcall(pgstore.policy, { name = "p", streams = "*", max_coutn = 1 })
    assert.is_false(ok)
    assert.matches("unknown field 'max_coutn'", msg, 1, true)
  end)

  it("an upcaster with an unknown field raises, naming the field", function()
    local ok, msg = pcall(pgstore.upcasters, {
      { type = "E", from = 1, to = 2, upcast = function(d) return d end, descripton = "typo" },
    })
    assert.is_false(ok)
    assert.matches("unknown field 'descripton'", msg, 1, true)
  end)

  it("a projection script with an unknown field is refused, naming the field", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write([[return { name = "p", handlers = { E = function() end }, on_eror = "skip" }]])
    f:close()
    local def, msg = projection.load(path)
    os.remove(path)
    assert.is_nil(def)
    assert.matches("unknown field 'on_eror'", msg, 1, true)
  end)

  it("a projection script whose field has the wrong type is refused, naming the field", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write([[return { name = "p", handlers = { E = function() end }, partitioned = "yes" }]])
    f:close()
    local def, msg = projection.load(path)
    os.remove(path)
    assert.is_nil(def)
    assert.matches("field 'partitioned' must be boolean", msg, 1, true)
  end)
end)
