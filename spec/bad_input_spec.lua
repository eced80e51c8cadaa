-- SPDX-License-Identifier: MIT
-- Bad input, table-driven: each case gets a clear error code, writes
-- nothing, and leaves the connection usable. Names with quotes,
-- semicolons, 64+ bytes, non-ASCII and NUL; LIKE wildcards in prefixes;
-- NUL bytes and invalid UTF-8 where text is stored; JSON that is not JSON
-- (or is more than one value) under codec "raw"; payloads of 0 bytes,
-- 10 MB and over the limit; absurd versions; garbage cursors. Then a sweep
-- that calls every public function of every public object with values of
-- the wrong type in every argument, in a child process, where a crash or a
-- hang fails the spec instead of ending the suite.
local core = require "pgstore.core"
local S = require "stores"
local T = require "testenv"

local null = core.null

local BAD_NAMES = {
  ['a quote'] = 'ev"il', ['a semicolon'] = "x; drop table pg_class", ['64 bytes'] = ("t"):rep(64),
  ['non-ASCII'] = "tablé", ['a NUL byte'] = "t\0x", ['three parts'] = "a.b.c", ['a space'] = "t x",
  ['a leading digit'] = "1t",
}

describe("bad input", function()
  local db, es, raw
  setup(function()
    db = T.connect()
    es = assert(db:events{ table = "bad_input", notify = false })
    raw = assert(db:events{ table = "bad_input", notify = false, codec = "raw", migrate = false })
  end)
  teardown(function()
    raw:close()
    es:close()
    db:close()
    T.assert_no_leaks()
  end)
  before_each(function() assert(es:truncate()) end)

  local function relations()
    return db:query("select count(*) as n from pg_class")[1].n
  end
  local function events() return db:query("select count(*) as n from bad_input")[1].n end

  -- Runs fn(value) for each case; each must fail with `code`; nothing is
  -- written (count() unchanged) and the connection still answers.
  local function refuse(code, cases, fn, count)
    count = count or events
    local before = count()
    for label, value in pairs(cases) do
      local res, err = fn(value)
      assert.is_nil(res, label .. ": accepted")
      assert.is_table(err, label .. ": " .. tostring(err))
      assert.equal(code, err.code, label .. ": " .. tostring(err))
    end
    assert.equal(before, count())
    S.alive(db)
  end

  it("refuses bad table names for every store, creating nothing", function()
    local kinds = { "events", "snapshots", "checkpoints", "exec_checkpoints", "sessions", "kv" }
    for _, kind in ipairs(kinds) do
      refuse("invalid", BAD_NAMES, function(name) return db[kind](db, { table = name }) end, relations)
    end
    refuse("invalid", BAD_NAMES, function(name) return db:partitions{ name = "p", table = name } end, relations)
    refuse("invalid", BAD_NAMES, function(name) return db:try_lock("k", { mode = "table", table = name }) end,
      relations)
    refuse("invalid", { nul = "n\0x" }, function(name) return db:partitions{ name = name } end, relations)
    refuse("invalid", { nul = "o\0x" }, function(owner) return db:partitions{ name = "p", owner = owner } end,
      relations)
  end)

  it("refuses bad channel names wherever a channel is named", function()
    local bad = {
      ['a quote'] = 'ch"an', ['a semicolon'] = "ch;an", ['64 bytes'] = ("c"):rep(64), ['non-ASCII'] = "chän",
      ['a NUL byte'] = "ch\0an", ['empty'] = "", ['a space'] = "ch an",
    }
    refuse("invalid", bad, function(ch) return db:listen(ch) end)
    refuse("invalid", bad, function(ch) return db:listen{ "ok", ch } end)
    refuse("invalid", bad, function(ch) return db:notify(ch, "x") end)
    refuse("invalid", bad, function(ch) return db:transaction(function(tx) return tx:notify(ch, "x") end) end)
    refuse("invalid", bad, function(ch) return db:events{ table = "bad_input", notify = ch, migrate = false } end)
    refuse("invalid", bad, function(ch) return db:relay(ch) end)
    local l = assert(db:listen("fine"))
    refuse("invalid", bad, function(ch) return l:add(ch) end)
    refuse("invalid", bad, function(ch) return l:notify(ch, "x") end)
    assert.same({ "fine" }, l:channels())
    l:close()
    -- payloads: a NUL, or 8000 bytes and more
    refuse("invalid", { nul = "a\0b", big = ("p"):rep(8000) }, function(p) return db:notify("fine", p) end)
  end)

  it("matches prefixes literally: LIKE wildcards are characters", function()
    local kv = assert(db:kv{ table = "bad_input_kv", cleanup_interval = 0 })
    assert(kv:delete_prefix(""))
    for _, k in ipairs{ "a%1", "a%%", "a_1", "ab1", "a\\1", "axx" } do assert(kv:set(k, "v")) end
    assert.equal(2, kv:delete_prefix("a%"))
    assert.equal(1, kv:delete_prefix("a_"))
    assert.equal(1, kv:delete_prefix("a\\"))
    assert.equal("v", kv:get("ab1"))
    assert.equal("v", kv:get("axx"))
    kv:close()
    for _, s in ipairs{ "s%1", "s_1", "sa1", "s\\1" } do assert(es:append(s, { { type = "E" } })) end
    local function streams(prefix)
      local out = {}
      for _, e in ipairs(assert(es:read_all{ prefix = prefix })) do out[#out + 1] = e.stream end
      return out
    end
    assert.same({ "s%1" }, streams("s%"))
    assert.same({ "s_1" }, streams("s_"))
    assert.same({ "s\\1" }, streams("s\\"))
  end)

  it("refuses NUL bytes wherever text is stored", function()
    local nul = { nul = "a\0b" }
    refuse("invalid", nul, function(s) return es:append(s, { { type = "E" } }) end)
    refuse("invalid", nul, function(t) return es:append("s", { { type = t } }) end)
    refuse("invalid", nul, function(id) return es:append("s", { { type = "E", id = id } }) end)
    refuse("invalid", nul, function(k) return es:append("s", { { type = "E" } }, { idempotency_key = k }) end)
    refuse("invalid", nul, function(s) return es:append_many{ { stream = s, events = { { type = "E" } } } } end)
    refuse("invalid", nul, function(k)
      return es:append_many{ { stream = "s", events = { { type = "E" } }, idempotency_key = k } }
    end)
    refuse("invalid", nul, function(d) return es:append("s", { { type = "E", data = { s = d } } }) end)
    refuse("invalid", nul, function(d) return es:append("s", { { type = "E", metadata = { s = d } } }) end)
    refuse("invalid", nul, function(d) return raw:append("s", { { type = "E", data = '"' .. d .. '"' } }) end)
    refuse("invalid", nul, function(s) return es:read(s) end)
    refuse("invalid", nul, function(s) return es:version(s) end)
    refuse("invalid", nul, function(s) return es:status(s) end)
    refuse("invalid", nul, function(p) return es:read_all{ prefix = p } end)
    refuse("invalid", nul, function(t) return es:read_all{ types = { t } } end)
    assert(es:append("keep", { { type = "E" } }))
    refuse("invalid", nul, function(r) return es:tombstone("keep", r) end)
    refuse("invalid", nul, function(s) return es:tombstone(s) end)
    refuse("invalid", nul, function(s) return es:delete(s) end)
    assert.equal("active", es:status("keep"))
    refuse("invalid", nul, function(sql) return db:query("select 1 as one" .. sql) end)
    refuse("invalid", nul, function(sql) return db:exec("delete from bad_input" .. sql .. " where false") end)
    refuse("invalid", nul, function(k) return db:try_lock(k) end)

    local stores = {
      kv = assert(db:kv{ table = "bad_input_kv", cleanup_interval = 0 }),
      ss = assert(db:snapshots{ table = "bad_input_ss" }),
      cp = assert(db:checkpoints{ table = "bad_input_cp" }),
      xs = assert(db:exec_checkpoints{ table = "bad_input_xs" }),
      sess = assert(db:sessions{ table = "bad_input_sess" }),
    }
    local function rows()
      local n = 0
      for _, t in ipairs{ "bad_input_kv", "bad_input_ss", "bad_input_cp", "bad_input_xs", "bad_input_sess" } do
        n = n + db:query(("select count(*) as n from %s"):format(t))[1].n
      end
      return n
    end
    refuse("invalid", nul, function(k) return stores.kv:set(k, "v") end, rows)
    refuse("invalid", nul, function(k) return stores.ss:save(k, 1, {}) end, rows)
    refuse("invalid", nul, function(v) return stores.ss:save("s", 1, { v = v }) end, rows)
    refuse("invalid", nul, function(k) return stores.cp:save(k, 1) end, rows)
    refuse("invalid", nul, function(k) return stores.xs:save(k, { a = 1 }) end, rows)
    refuse("invalid", nul, function(k) return stores.sess:save(k, { version = 1, state = {} }) end, rows)
    -- where bytes are stored, NUL is data
    local bytes = "a\0b\255\0"
    assert(stores.kv:set("bytes", bytes))
    assert.equal(bytes, stores.kv:get("bytes"))
    for _, s in pairs(stores) do s:close() end
  end)

  it("refuses invalid UTF-8 where text is stored", function()
    local bad = { ['0xff'] = "a\255b", ['truncated sequence'] = "a\226\130", ['overlong'] = "a\192\175" }
    refuse("invalid", bad, function(s) return es:append(s, { { type = "E" } }) end)
    refuse("invalid", bad, function(t) return es:append("s", { { type = t } }) end)
    refuse("invalid", bad, function(d) return es:append("s", { { type = "E", data = { s = d } } }) end)
    refuse("invalid", bad, function(d) return raw:append("s", { { type = "E", data = '"' .. d .. '"' } }) end)
    refuse("invalid", bad, function(k) return es:append("s", { { type = "E" } }, { idempotency_key = k }) end)
    local kv = assert(db:kv{ table = "bad_input_kv", cleanup_interval = 0 })
    local cp = assert(db:checkpoints{ table = "bad_input_cp" })
    refuse("invalid", bad, function(k) return kv:set(k, "v") end, function() return 0 end)
    refuse("invalid", bad, function(k) return cp:save(k, 1) end, function() return 0 end)
    kv:close()
    cp:close()
  end)

  it("refuses text that is not exactly one JSON value under codec 'raw'", function()
    local bad = {
      ['not JSON'] = "{nope", ['empty'] = "", ['blank'] = "  ", ['two values'] = "1 2",
      ['unterminated'] = '"abc', ['trailing comma'] = "[1,]", ['NaN'] = "NaN", ['single quotes'] = "'x'",
      ['a second event'] = 'null},{"type":"Injected","data":{"admin":true}',
      ['an extra key'] = '1,"type":"Overridden"', ['an id'] = '1,"id":"00000000-0000-0000-0000-000000000001"',
      ['a control byte'] = '"a\1b"', ['bad escape'] = '"\\x"', ['leading zero'] = "01",
    }
    refuse("invalid", bad, function(d) return raw:append("s", { { type = "E", data = d } }) end)
    refuse("invalid", bad, function(m) return raw:append("s", { { type = "E", data = "1", metadata = m } }) end)
    -- well-formed text of any shape goes through untouched
    local good = ' {"a": [1, -2.5e3, "x\\n\\u00e9", true, null], "b": {}} '
    assert(raw:append("s", { { type = "E", data = good, metadata = "[]" } }))
    local e = assert(raw:read("s"))[1]
    assert.same({ a = { 1, -2500, "x\né", true, null }, b = {} }, require("cjson").decode(e.data))
    assert.equal(1, events())
  end)

  it("handles payloads of 0 bytes, 10 MB and over the configured limit", function()
    -- 0 bytes: JSON's empty string is data; zero bytes of raw text are not JSON
    local r = assert(es:append("empty", { { type = "E", data = "" } }))
    assert.equal("", assert(es:read("empty"))[1].data)
    refuse("invalid", { zero = "" }, function(d) return raw:append("s", { { type = "E", data = d } }) end)
    local ten = ("x"):rep(10 * 1024 * 1024)
    refuse("invalid", { ['10 MB'] = ten }, function(d) return es:append("s", { { type = "E", data = d } }) end)
    local big = assert(db:events{ table = "bad_input", notify = false, migrate = false,
                                  max_event_size = 16 * 1024 * 1024 })
    r = assert(big:append("big", { { type = "E", data = ten } }))
    assert.equal(10 * 1024 * 1024, #assert(big:read("big"))[1].data)
    big:close()
    local small = assert(db:events{ table = "bad_input", notify = false, migrate = false, max_event_size = 1000 })
    assert(small:append("edge", { { type = "E", data = ("y"):rep(998) } })) -- 1000 bytes of JSON
    refuse("invalid", { ['1001 bytes'] = ("y"):rep(999) },
      function(d) return small:append("edge", { { type = "E", data = d } }) end)
    small:close()
    local kv = assert(db:kv{ table = "bad_input_kv", cleanup_interval = 0 })
    assert(kv:set("zero", ""))
    assert.equal("", kv:get("zero"))
    refuse("invalid", { ['10 MB'] = ten }, function(v) return kv:set("ten", v) end,
      function() return db:query("select count(*) as n from bad_input_kv")[1].n end)
    kv:close()
    local kv16 = assert(db:kv{ table = "bad_input_kv", cleanup_interval = 0, max_value_size = 16 * 1024 * 1024 })
    assert(kv16:set("ten", ten))
    assert.equal(ten, kv16:get("ten"))
    assert(kv16:delete("ten"))
    kv16:close()
  end)

  it("refuses versions that are negative, fractional, NaN or beyond 2^53", function()
    assert(es:append("v", { { type = "E" } }))
    local bad = { negative = -1, fractional = 1.5, NaN = 0 / 0, ['2^63'] = 2 ^ 63, huge = math.huge,
                  ['-huge'] = -math.huge }
    refuse("invalid", bad, function(v) return es:append("v", { { type = "E" } }, { expected = v }) end)
    refuse("invalid", bad, function(v) return es:append_many{ { stream = "v", events = { { type = "E" } }, expected = v } } end)
    refuse("invalid", bad, function(v) return es:read("v", { from = v }) end)
    refuse("invalid", bad, function(v) return es:read("v", { to = v }) end)
    refuse("invalid", bad, function(v) return es:read("v", { limit = v }) end)
    refuse("invalid", bad, function(v) return es:read_all{ limit = v } end)
    -- 2^53 + 1 is 2^53 in a double: a version nobody has, so a conflict
    local res, err = es:append("v", { { type = "E" } }, { expected = 2 ^ 53 + 1 })
    assert.is_nil(res)
    assert.equal("conflict", err.code)
    assert.equal(1, events())
    local ss = assert(db:snapshots{ table = "bad_input_ss" })
    local sess = assert(db:sessions{ table = "bad_input_sess" })
    local cp = assert(db:checkpoints{ table = "bad_input_cp" })
    local none = function() return 0 end
    bad['2^53 + 2'] = 2 ^ 53 + 2
    refuse("invalid", bad, function(v) return ss:save("s", v, {}) end, none)
    refuse("invalid", bad, function(v) return ss:save("s", 1, {}, { schema_version = v }) end, none)
    refuse("invalid", bad, function(v) return sess:save("id", { version = v, state = {} }) end, none)
    refuse("invalid", bad, function(v) return cp:save("c", v) end, none)
    refuse("invalid", bad, function(v) return cp:save("c", 1, { expected = v }) end, none)
    ss:close()
    sess:close()
    cp:close()
    local pm = assert(db:partitions{ name = T.unique("bad_pm") })
    assert(pm:tick())
    refuse("invalid", bad, function(v) return db:transaction(function(tx) return pm:guard(tx, 0, v) end) end, none)
    refuse("invalid", bad, function(v) return pm:token(v) end, none)
    pm:close()
    S.alive(db)
  end)

  it("refuses garbage cursors", function()
    assert(es:append("c", { { type = "E" } }))
    local garbage = { letters = "abc", negative = "-1", exponent = "1e3", hex = "0x10", empty = "",
                      spaces = " 1", fraction = 1.5, below = -1, NaN = 0 / 0, beyond = 2 ^ 53 + 2,
                      ['digits beyond'] = "99999999999999999999" }
    refuse("invalid", garbage, function(c) return es:read_all{ after = c } end)
    assert.has_error(function() es:read_all{ after = {} } end)
    assert.has_error(function() es:read_all{ after = true } end)
    refuse("invalid", { middle = "middle" }, function(from) return db:subscribe{ name = "g", events = es, from = from } end)
    local sub, err = db:subscribe{ name = T.unique("g"), events = es, from = -5, listen = false }
    assert.is_nil(sub)
    assert.equal("invalid", err.code)
    S.alive(db)
  end)
end)

-- ---- the sweep ---------------------------------------------------------------

-- Lua source for the child: builds one of every public object (and the C
-- handles under them, which pgstore.core exposes too), then calls every
-- method with each wrong value in each of the first four arguments. Each
-- call is logged before it is made, so a crash or a hang names it.
local SWEEP = [[
local core = require "pgstore.core"
local pgstore = require "pgstore"
local partitions = require "pgstore.partitions"
local locks = require "pgstore.locks"
local log = assert(io.open(arg[1], "w"))
local tag = arg[2]

local values = {
  { "true", true }, { "false", false }, { "0", 0 }, { "-1", -1 }, { "1.5", 1.5 }, { "NaN", 0 / 0 },
  { "-huge", -math.huge }, { "2^63", 2 ^ 63 }, { "''", "" }, { "'x\\0y'", "x\0y" }, { "'bogus'", "bogus" },
  { "{}", {} }, { "{1,2}", { 1, 2 } }, { "{bogus=1}", { bogus = 1 } }, { "function", print },
  { "thread", coroutine.create(print) }, { "userdata", io.stdout }, { "null", core.null },
}
-- +huge would be a legitimate "wait forever" for the methods that wait.
local WAITS = { wait = true, next = true, acquire = true, lock = true, with_lock = true, sleep = true,
                backoff = true }

local calls, raised, errs, ok = 0, 0, 0, 0
local function try(desc, fn, ...)
  calls = calls + 1
  log:write(("%.3f "):format(core.now()), desc, "\n")
  log:flush()
  local res = { pcall(fn, ...) }
  if not res[1] then raised = raised + 1
  elseif res[2] == nil and res[3] ~= nil then errs = errs + 1
  else ok = ok + 1 end
end

local function methods(obj)
  local mt = debug.getmetatable(obj) -- handles hide theirs from getmetatable
  local idx = type(mt) == "table" and mt.__index
  local out = {}
  if type(idx) == "table" then
    for k, v in pairs(idx) do
      if type(v) == "function" and k ~= "new" and k:sub(1, 1) ~= "_" then out[#out + 1] = k end
    end
  end
  table.sort(out)
  return out
end

-- Calls every method of obj (except `skip`) with a wrong value in each
-- argument position; `close` methods last. Garbage is collected before
-- each call, so whatever an earlier call pinned (a connection, a lock)
-- is given back and cannot make a later one wait.
local function sweep(name, obj, skip)
  local list, closers = {}, {}
  for _, m in ipairs(methods(obj)) do
    if not (skip and skip[m]) then
      if m == "close" or m == "release" then closers[#closers + 1] = m else list[#list + 1] = m end
    end
  end
  -- A missing timeout means "wait forever" to the methods that wait.
  local function args_for(m, pos, value)
    local args = {}
    if WAITS[m] and pos > 1 then args[1] = 0 end
    args[pos] = value
    return args
  end
  for _, group in ipairs{ list, closers } do
    for _, m in ipairs(group) do
      local f = obj[m]
      for pos = 1, 4 do
        for _, v in ipairs(values) do
          if not (WAITS[m] and v[2] == 2 ^ 63) then
            local args = args_for(m, pos, v[2])
            collectgarbage()
            try(("%s:%s(arg %d = %s)"):format(name, m, pos, v[1]), function() return f(obj, unpack(args, 1, 4)) end)
          end
        end
        -- the object itself where an argument belongs
        local args = args_for(m, pos, obj)
        try(("%s:%s(arg %d = self)"):format(name, m, pos), function() return f(obj, unpack(args, 1, 4)) end)
      end
      -- the method called on something that is not the object
      for _, v in ipairs(values) do
        try(("%s.%s(%s)"):format(name, m, v[1]), f, v[2], 0)
      end
    end
  end
end

local function fresh_db() return assert(pgstore.connect{ dsn = arg[3], pool_size = 3, application_name = "pgstore-sweep" }) end

-- module functions
for _, f in ipairs{ "connect", "open_events", "open_kv", "open_snapshots", "open_checkpoints",
                    "open_exec_checkpoints", "open_sessions", "open_partitions", "upcasters", "policy",
                    "policies", "aggregate" } do
  for _, v in ipairs(type(pgstore[f]) == "function" and values or {}) do
    try(("pgstore.%s(%s)"):format(f, v[1]), function()
      local o = pgstore[f](v[2])
      if type(o) == "table" and o.close then o:close() end
    end)
    try(("pgstore.%s(dsn, %s)"):format(f, v[1]), function()
      local o = pgstore[f](arg[3], v[2])
      if type(o) == "table" and o.close then o:close() end
    end)
  end
end
for _, v in ipairs(values) do
  try("partitions.partition_for(" .. v[1] .. ")", partitions.partition_for, v[2], 8)
  try("partitions.partition_for(k, " .. v[1] .. ")", partitions.partition_for, "k", v[2])
  try("locks.key(" .. v[1] .. ")", locks.key, v[2])
end
for _, f in ipairs{ "pool", "events", "kv", "snapshots", "checkpoints", "exec_checkpoints", "sessions",
                    "listener", "lease", "lock", "notify", "partition_for", "lock_key", "fnv1a64",
                    "quote_ident", "xact_lock", "xact_try_lock", "now", "sleep", "backoff" } do
  if type(core[f]) == "function" then
    for pos = 1, 3 do
      for _, v in ipairs(values) do
        if not (WAITS[f] and (v[2] == math.huge or v[2] == 2 ^ 63)) then
          local args = {}
          args[pos] = v[2]
          try(("core.%s(arg %d = %s)"):format(f, pos, v[1]), function()
            local o = core[f](unpack(args, 1, 3))
            if type(o) == "userdata" and o.close then o:close() end
          end)
        end
      end
    end
  end
end

local db = fresh_db()
-- Each kind twice: the Lua object, and another one's C handle (closing
-- the object closes its handle).
local function make()
  return {
    { "es", assert(db:events{ table = tag .. "_ev", notify = tag .. "_ch" }) },
    { "snapshots", assert(db:snapshots{ table = tag .. "_ss" }) },
    { "checkpoints", assert(db:checkpoints{ table = tag .. "_cp" }) },
    { "exec_checkpoints", assert(db:exec_checkpoints{ table = tag .. "_xs" }) },
    { "sessions", assert(db:sessions{ table = tag .. "_sess" }) },
    { "kv", assert(db:kv{ table = tag .. "_kv", cleanup_interval = 0 }) },
    { "listener", assert(db:listen(tag .. "_ch")) },
    { "relay", assert(db:relay(tag .. "_relay", { timeout = 0.2 })) },
    { "partitions", assert(db:partitions{ name = tag .. "_pm", lease = 2, renew = 0.5 }) },
  }
end
local objects = make()
for _, o in ipairs(make()) do
  local handle = rawget(o[2], "handle") or rawget(o[2], "core") or rawget(o[2], "l")
  assert(type(handle) == "userdata", o[1])
  objects[#objects + 1] = { o[1] .. " (C handle)", handle }
end
local es = objects[1][2]
assert(es:append("s", { { type = "E" } }))
objects[#objects + 1] = { "lock", assert(db:lock(tag .. "_lock", { timeout = 1 })) }
objects[#objects + 1] = { "subscription", assert(db:subscribe{ name = tag .. "_sub", events = es, poll = 0.05 }) }
local conn = assert(db:acquire())
objects[#objects + 1] = { "conn", conn }
objects[#objects + 1] = { "db.pool", db.pool }
for _, o in ipairs(objects) do
  local skip = nil
  if o[1] == "db.pool" then skip = { close = true } end
  sweep(o[1], o[2], skip)
end
conn:release()
for _, o in ipairs(objects) do
  if o[1] ~= "db.pool" and o[2].close then pcall(o[2].close, o[2]) end
end
-- a transaction's handle, inside the transaction
db:transaction(function(tx)
  sweep("tx", tx)
  return true
end)
-- the db last: its own close ends it
sweep("db", db)
db:close()
collectgarbage()
log:close()
print(("SWEEP %d calls: %d raised, %d returned nil, err, %d returned"):format(calls, raised, errs, ok))
]]

describe("the wrong-type sweep", function()
  it("calls every public function with wrong types in every argument without crashing", function()
    local dir = (T.sh("mktemp -d /tmp/pgstore-sweep.XXXXXX")):gsub("%s+$", "")
    local logfile = dir .. "/calls"
    local proc = T.spawn(SWEEP, logfile, "sweep" .. os.time() % 100000, T.dsn())
    local out, ended = T.wait(proc, 240)
    if not ended then T.signal(proc, "KILL") end
    local last = ""
    for l in io.lines(logfile) do last = l end
    T.sh("cp " .. logfile .. " /tmp/pgstore-sweep-last.log")
    assert.is_true(ended, "the sweep hung at: " .. last)
    local summary = out:match("SWEEP [^\n]+")
    assert.truthy(summary, ("the sweep died at: %s\n%s"):format(last, out))
    -- under the sanitizer build: no undefined behaviour, nothing leaked
    assert.is_nil(out:find("runtime error", 1, true), out)
    assert.is_nil(out:find("LeakSanitizer", 1, true), out)
    print("\n  " .. summary)
    T.sh("rm -rf " .. dir)
    T.assert_no_leaks("pgstore-sweep")
  end)
end)
