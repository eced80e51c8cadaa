-- SPDX-License-Identifier: MIT
-- Bad input at the edges, every door: numbers the server cannot hold
-- (times, timeouts, TTLs, cursors, poll intervals: NaN, infinities,
-- negatives, fractions where whole numbers are meant, beyond 2^53),
-- invalid UTF-8 where a name or payload reaches the server, empty table
-- names, savepoint names, and append_many past its batch limit. Each is
-- `invalid` at the call, names what is wrong, and sends nothing.
local core = require "pgstore.core"
local S = require "stores"
local T = require "testenv"

local NAN, INF = 0 / 0, math.huge

describe("bad input at the edges", function()
  local db, es
  setup(function()
    db = T.connect()
    es = assert(db:events{ table = "bad_edges", notify = "bad_edges_ch" })
  end)
  teardown(function()
    es:close()
    db:close()
    T.assert_no_leaks()
  end)
  before_each(function() assert(es:truncate()) end)

  local function events() return db:query("select count(*) as n from bad_edges")[1].n end

  -- Each case of `cases` ({ label = value }) through fn must give nil and
  -- an `invalid` error whose message names `name`; nothing is written and
  -- the connection still answers.
  local function refuse(name, cases, fn)
    local before = events()
    for label, value in pairs(cases) do
      local ok, res, err = pcall(fn, value)
      assert.is_true(ok, label .. ": raised " .. tostring(res))
      assert.is_nil(res, label .. ": accepted")
      assert.is_table(err, label .. ": " .. tostring(err))
      assert.equal("invalid", err.code, label .. ": " .. tostring(err))
      if name then
        assert.truthy(err.message:find(name, 1, true), label .. ": message does not name " .. name .. ": " .. err.message)
      end
    end
    assert.equal(before, events())
    S.alive(db)
  end

  it("refuses append times a timestamp cannot hold, before sending anything", function()
    local bad = { ['1e20'] = 1e20, ['1e308'] = 1e308, inf = INF, NaN = NAN, negative = -1,
                  ['past year 294276'] = 9.3e12 }
    refuse("time", bad, function(t) return es:append("t", { { type = "E" } }, { time = t }) end)
    refuse("time", bad, function(t) return es:append_many{ { stream = "t", events = { { type = "E" } }, time = t } } end)
    refuse("time", bad, function(t)
      return db:transaction(function(tx) return es:append("t", { { type = "E" } }, { time = t, tx = tx }) end)
    end)
    -- a far but holdable time is kept to the second
    assert(es:append("t", { { type = "E" } }, { time = 4102444800 }))
    assert.equal("2100-01-01", db:query("select to_char(time at time zone 'UTC', 'YYYY-MM-DD') as d from bad_edges")[1].d)
  end)

  it("refuses lock timeouts and TTLs the server cannot hold", function()
    local bad = { inf = INF, ['1e308'] = 1e308, NaN = NAN, negative = -1, ['-inf'] = -INF }
    refuse("timeout", bad, function(v) return db:lock("k", { timeout = v }) end)
    refuse("timeout", bad, function(v) return db:try_lock("k", { timeout = v }) end)
    refuse("timeout", bad, function(v) return db:with_lock("k", function() return true end, { timeout = v }) end)
    refuse("timeout", bad, function(v) return db:lock("k", { mode = "table", timeout = v }) end)
    refuse("ttl", bad, function(v) return db:try_lock("k", { mode = "table", ttl = v }) end)
    refuse("ttl", { zero = 0 }, function(v) return db:try_lock("k", { mode = "table", ttl = v }) end)
    refuse("timeout", bad, function(v)
      return db:transaction(function(tx) return tx:lock("k", { timeout = v }) end)
    end)
    -- the largest timeout the server holds (2^31 - 1 ms) is fine
    local lock = assert(db:lock("k", { timeout = 2147483 }))
    assert(lock:release())
    local tl = assert(db:try_lock("k", { mode = "table", ttl = 2147483 }))
    assert(tl:release())
  end)

  it("refuses invalid UTF-8 in notify payloads and partition names", function()
    local bad = { ['a lone continuation byte'] = "a\x80b", ['0xFF'] = "\xff", overlong = "\xc0\xaf",
                  surrogate = "\xed\xa0\x80", truncated = "ab\xe2\x82" }
    refuse("UTF-8", bad, function(p) return db:notify("fine", p) end)
    refuse("UTF-8", bad, function(p) return db:transaction(function(tx) return tx:notify("fine", p) end) end)
    local l = assert(db:listen("fine"))
    refuse("UTF-8", bad, function(p) return l:notify("fine", p) end)
    l:close()
    refuse("UTF-8", bad, function(p) return core.check_notify("fine", p) end)
    refuse("UTF-8", bad, function(n) return db:partitions{ name = n } end)
    refuse("UTF-8", bad, function(o) return db:partitions{ name = "p", owner = o } end)
    -- valid UTF-8 goes through
    assert(db:notify("fine", "héllo ✓ 𝄞"))
    local pm = assert(db:partitions{ name = T.unique("pärt") })
    pm:close()
  end)

  it("refuses invalid UTF-8 in every stored name before sending it: a transaction goes on", function()
    local raw = assert(db:events{ table = "bad_edges", notify = false, codec = "raw", migrate = false })
    local kv = assert(db:kv{ table = "bad_edges_kv" })
    local cp = assert(db:checkpoints{ store = es })
    local ss = assert(db:snapshots{ table = "bad_edges_snap" })
    local sess = assert(db:sessions{ table = "bad_edges_sess" })
    local xs = assert(db:exec_checkpoints{ table = "bad_edges_xs" })
    local BAD = "ab\255"
    -- what: the message names it; fn(tx) is one call with the bad text
    local doors = {
      { "stream name", function(tx) return es:append(BAD, { { type = "E" } }, { tx = tx }) end },
      { "type", function(tx) return es:append("s", { { type = BAD } }, { tx = tx }) end },
      { "idempotency key", function(tx) return es:append("s", { { type = "E" } }, { tx = tx, idempotency_key = BAD }) end },
      { "data", function(tx) return raw:append("s", { { type = "E", data = '"' .. BAD .. '"' } }, { tx = tx }) end },
      { "data", function(tx) return es:append("s", { { type = "E", data = { k = BAD } } }, { tx = tx }) end },
      { "metadata", function(tx) return raw:append("s", { { type = "E", data = "1", metadata = '{"m":"' .. BAD .. '"}' } }, { tx = tx }) end },
      { "key", function(tx) return kv:set(BAD, "v", nil, { tx = tx }) end },
      { "key", function(tx) return kv:get(BAD, { tx = tx }) end },
      { "key", function(tx) return kv:delete(BAD, { tx = tx }) end },
      { "prefix", function(tx) return kv:delete_prefix(BAD, { tx = tx }) end },
      { "consumer", function(tx) return cp:save(BAD, 1, { tx = tx }) end },
      { "consumer", function(tx) return cp:load(BAD, { tx = tx }) end },
      { "stream", function(tx) return ss:save(BAD, 1, { n = 1 }, { tx = tx }) end },
      { "state", function(tx) return ss:save("s", 1, { n = BAD }, { tx = tx }) end },
      { "session id", function(tx) return sess:save(BAD, { version = 1, state = {} }, { tx = tx }) end },
      { "execution id", function(tx) return xs:save(BAD, { step = 1 }, { tx = tx }) end },
    }
    for i, door in ipairs(doors) do
      local what, call = door[1], door[2]
      local got
      assert(db:transaction(function(tx)
        local res, err = call(tx)
        got = { res = res, err = err }
        -- the transaction is not aborted: the next statement goes through
        return assert(es:append("ok", { { type = "E" } }, { tx = tx }))
      end))
      local label = ("door %d (%s)"):format(i, what)
      assert.is_nil(got.res, label .. ": accepted")
      assert.is_table(got.err, label)
      assert.equal("invalid", got.err.code, label .. ": " .. tostring(got.err))
      assert.truthy(got.err.message:find("UTF-8", 1, true), label .. ": " .. got.err.message)
      assert.truthy(got.err.message:find(what, 1, true), label .. ": " .. got.err.message)
    end
    assert.equal(#doors, events())
    -- outside a transaction: reads, filters, tombstone reasons, subscriptions
    assert(es:append("s", { { type = "E" } }))
    local outside = {
      { "stream name", function() return es:read(BAD) end },
      { "types[1]", function() return es:read("s", { types = { BAD } }) end },
      { "types[1]", function() return es:read_all{ types = { BAD } } end },
      { "prefix", function() return es:read_all{ prefix = BAD } end },
      { "reason", function() return es:tombstone("s", BAD) end },
      { "consumer", function() return db:subscribe{ name = BAD, events = es } end },
    }
    for i, door in ipairs(outside) do
      local res, err = door[2]()
      local label = ("outside %d (%s)"):format(i, door[1])
      assert.is_nil(res, label .. ": accepted")
      assert.equal("invalid", err.code, label .. ": " .. tostring(err))
      assert.truthy(err.message:find("UTF-8", 1, true), label .. ": " .. err.message)
      assert.truthy(err.message:find(door[1], 1, true), label .. ": " .. err.message)
    end
    assert.equal(1, #assert(es:read("s")), "the stream was not tombstoned")
    -- valid UTF-8 goes through everywhere
    assert(es:append("strëam ✓", { { type = "Tÿpe" } }, { idempotency_key = "kéy" }))
    assert(kv:set("kéy", "v"))
    assert(cp:save("cönsumer", 1))
    for _, h in ipairs{ raw, kv, cp, ss, sess, xs } do h:close() end
  end)

  it("refuses subscription cursors and poll intervals at the call", function()
    local name = T.unique("edges")
    local bad_from = { negative = -5, fractional = 0.5, ['1e300'] = 1e300, inf = INF, NaN = NAN,
                       ['2^53 + 2'] = 2 ^ 53 + 2 }
    refuse("from", bad_from, function(f) return db:subscribe{ name = name, events = es, from = f } end)
    refuse("from", bad_from, function(f) return db:subscribe{ name = name, events = es, from = f, listen = false } end)
    -- the same once the consumer has a checkpoint (from is then not used, but still wrong)
    local sub = assert(db:subscribe{ name = name, events = es, listen = false })
    assert(es:append("s", { { type = "E" } }))
    local batch = assert(sub:next(0))
    assert(sub:ack(batch[#batch].position))
    sub:close()
    refuse("from", bad_from, function(f) return db:subscribe{ name = name, events = es, from = f } end)
    local bad_poll = { NaN = NAN, inf = INF, negative = -1, ['1e308'] = 1e308 }
    refuse("poll", bad_poll, function(p) return db:subscribe{ name = name, events = es, poll = p } end)
    refuse("batch", { fractional = 1.5, NaN = NAN, zero = 0 },
      function(b) return db:subscribe{ name = name, events = es, batch = b } end)
  end)

  it("says a bad savepoint name is a bad savepoint name", function()
    for _, bad in ipairs{ "a b", "x;y", "1st", ("s"):rep(64), "a.b", "é" } do
      for _, op in ipairs{ "savepoint", "rollback_to", "release" } do
        local _, err = db:transaction(function(tx)
          return tx[op](tx, bad)
        end)
        assert.is_table(err, op .. " " .. bad)
        assert.equal("invalid", err.code, op .. " " .. bad .. ": " .. tostring(err))
        assert.truthy(err.message:find("savepoint name", 1, true), op .. ": " .. err.message)
        assert.is_nil(err.message:find("table", 1, true), op .. ": " .. err.message)
      end
    end
    S.alive(db)
  end)

  it("refuses an empty table name for every store instead of using the default", function()
    local relations = function() return db:query("select count(*) as n from pg_class")[1].n end
    local before = relations()
    for _, kind in ipairs{ "events", "snapshots", "checkpoints", "exec_checkpoints", "sessions", "kv" } do
      local res, err = db[kind](db, { table = "" })
      assert.is_nil(res, kind)
      assert.equal("invalid", err.code, kind .. ": " .. tostring(err))
      assert.truthy(err.message:find("table", 1, true), kind .. ": " .. err.message)
    end
    S.fails("invalid", nil, db:partitions{ name = "p", table = "" })
    S.fails("invalid", nil, db:try_lock("k", { mode = "table", table = "" }))
    assert.equal(before, relations())
  end)

  it("bounds append_many: over the limit is invalid at once, the limit itself commits", function()
    local max = core.limits.batches
    assert.is_number(max)
    assert.is_true(max >= 1000)
    local function batches(n)
      local out = {}
      for i = 1, n do out[i] = { stream = "m" .. i, events = { { type = "E" } } } end
      return out
    end
    local t0 = core.now()
    local res, err = es:append_many(batches(max + 1))
    assert.is_nil(res)
    assert.equal("invalid", err.code, tostring(err))
    assert.truthy(err.message:find(tostring(max), 1, true), err.message)
    assert.is_nil(err.batch) -- no batch is to blame
    assert.is_true(core.now() - t0 < 2, "checked before encoding or sending")
    assert.equal(0, events())
    -- the same in a caller's transaction
    res, err = db:transaction(function(tx) return es:append_many(batches(max + 1), { tx = tx }) end)
    assert.is_nil(res)
    assert.equal("invalid", err.code, tostring(err))
    assert.equal(0, events())
    -- and through the binding, for direct users of pgstore.core
    local enc = batches(max + 1)
    for _, b in ipairs(enc) do b.events = { { type = "E", data = "{}" } } end
    res, err = es.handle:append_many(enc)
    assert.is_nil(res)
    assert.equal("invalid", err.code, tostring(err))
    -- exactly the limit, each batch a stream of its own, commits at once
    res = assert(es:append_many(batches(max)))
    assert.equal(max, #res)
    assert.equal(max, events())
  end)
end)

-- ---- every other number option: one rule ---------------------------------------

describe("number options", function()
  local db
  setup(function() db = T.connect() end)
  teardown(function()
    db:close()
    T.assert_no_leaks()
  end)

  -- Seconds: NaN, infinities, negatives and values past what the server or
  -- a clock holds are `invalid`, naming the option.
  local SECONDS = { NaN = NAN, inf = INF, ['-inf'] = -INF, negative = -1, ['1e308'] = 1e308 }
  -- Counts: the above, and fractions.
  local COUNTS = { NaN = NAN, inf = INF, negative = -1, ['1e308'] = 1e308, fractional = 1.5 }

  local function refused(label, name, cases, fn)
    for vlabel, v in pairs(cases) do
      local ok, res, err = pcall(fn, v)
      assert.is_true(ok, label .. " = " .. vlabel .. ": raised " .. tostring(res))
      if res and type(res) == "table" and res.close then res:close() end
      assert.is_nil(res, label .. " = " .. vlabel .. ": accepted")
      assert.is_table(err, label .. " = " .. vlabel .. ": " .. tostring(err))
      assert.equal("invalid", err.code, label .. " = " .. vlabel .. ": " .. tostring(err))
      assert.truthy(err.message:find(name, 1, true), label .. " = " .. vlabel .. ": " .. err.message)
    end
  end

  it("are invalid out of range, naming the option, wherever they are taken", function()
    local dsn = T.dsn()
    local pgstore = require "pgstore"
    for _, k in ipairs{ "connect_timeout", "acquire_timeout", "query_timeout" } do
      refused("connect " .. k, k, SECONDS, function(v) return pgstore.connect{ dsn = dsn, [k] = v } end)
    end
    refused("statement_timeout (ms)", "statement_timeout", COUNTS,
      function(v) return pgstore.connect{ dsn = dsn, statement_timeout = v } end)
    refused("pool_size", "pool_size", COUNTS, function(v) return pgstore.connect{ dsn = dsn, pool_size = v } end)
    refused("acquire", "timeout", SECONDS, function(v) return db:acquire(v) end)
    refused("transaction retries", "retries", COUNTS, function(v)
      return db:transaction(function() return true end, { retries = v })
    end)
    for _, k in ipairs{ "notify_interval", "idempotency_ttl" } do
      refused("events " .. k, k, SECONDS, function(v) return db:events{ table = "bad_edges_n", [k] = v } end)
    end
    refused("events max_event_size", "max_event_size", COUNTS,
      function(v) return db:events{ table = "bad_edges_n", max_event_size = v } end)
    refused("kv cleanup_interval", "cleanup_interval", SECONDS,
      function(v) return db:kv{ table = "bad_edges_kv", cleanup_interval = v } end)
    refused("kv lock_timeout", "lock_timeout", SECONDS,
      function(v) return db:kv{ table = "bad_edges_kv", cleanup_interval = 0, lock_timeout = v } end)
    local kv = assert(db:kv{ table = "bad_edges_kv", cleanup_interval = 0 })
    refused("kv:set ttl", "ttl", { NaN = NAN, inf = INF, ['1e308'] = 1e308 }, function(v) return kv:set("k", "v", v) end)
    kv:close()
    for _, k in ipairs{ "heartbeat", "heartbeat_timeout", "reconnect_min", "reconnect_max" } do
      refused("listen " .. k, k, SECONDS, function(v) return db:listen("fine", { [k] = v }) end)
    end
    refused("listen max_queue", "max_queue", COUNTS, function(v) return db:listen("fine", { max_queue = v }) end)
    local l = assert(db:listen("fine"))
    refused("listener wait", "timeout", SECONDS, function(v) return l:wait(v) end)
    refused("listener notify", "timeout", SECONDS, function(v) return l:notify("fine", "x", v) end)
    l:close()
    local es = assert(db:events{ table = "bad_edges_n", notify = false })
    local sub = assert(db:subscribe{ name = T.unique("n"), events = es, listen = false })
    refused("sub:next", "timeout", SECONDS, function(v) return sub:next(v) end)
    sub:close()
    es:close()
    local relay = assert(db:relay("fine"))
    refused("relay:next", "timeout", SECONDS, function(v) return relay:next(v) end)
    relay:close()
    for _, k in ipairs{ "lease", "renew" } do
      refused("partitions " .. k, k, SECONDS, function(v) return db:partitions{ name = "p", [k] = v } end)
    end
    refused("partitions count", "count", COUNTS, function(v) return db:partitions{ name = "p", count = v } end)
    refused("relay timeout", "timeout", SECONDS, function(v) return db:relay("fine", { timeout = v }) end)
    refused("relay max_queue", "max_queue", COUNTS, function(v) return db:relay("fine", { max_queue = v }) end)
    S.alive(db)
  end)

  it("hold projection definitions to the same rule", function()
    local projection = require "pgstore.projection"
    for _, field in ipairs{ "batch", "partitions" } do
      for _, v in ipairs{ "1e300", "0/0", "math.huge", "1.5", "0" } do
        local path = os.tmpname()
        local f = assert(io.open(path, "w"))
        f:write(("return { name = 'p', handlers = { E = function() end }, partitioned = true, %s = %s }")
          :format(field, v))
        f:close()
        local def, msg = projection.load(path)
        os.remove(path)
        assert.is_nil(def, field .. " = " .. v)
        assert.matches(path .. ": " .. field .. " must be a whole number", msg, 1, true)
      end
    end
  end)

  it("raise in pgstore.core for its direct users, by the same bounds", function()
    local dsn = T.dsn()
    for _, k in ipairs{ "connect_timeout", "acquire_timeout", "query_timeout" } do
      for label, v in pairs(SECONDS) do
        local ok, err = pcall(core.pool, { dsn = dsn, [k] = v })
        assert.is_false(ok, k .. " = " .. label)
        assert.matches("bad option '" .. k .. "'", err, 1, true)
      end
    end
    for label, v in pairs(COUNTS) do
      local ok, err = pcall(core.pool, { dsn = dsn, pool_size = v })
      assert.is_false(ok, "pool_size = " .. label)
      assert.matches("bad option 'pool_size'", err, 1, true)
    end
    -- the core refuses a lock's timeout and TTL itself
    for label, v in pairs{ inf = INF, NaN = NAN, ['1e308'] = 1e308 } do
      S.fails("invalid", nil, core.lock(db.pool, "k", { timeout = v }, false))
      S.fails("invalid", nil, core.lock(db.pool, "k", { mode = "table", ttl = v }, true))
      local _, err = db:transaction(function(tx) return core.xact_lock(tx.conn, "k", v) end)
      assert.equal("invalid", err.code, label .. ": " .. tostring(err))
    end
    assert.equal(1000, core.limits.batches)
    assert.equal(2147483, core.limits.seconds)
  end)
end)
