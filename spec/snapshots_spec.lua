-- SPDX-License-Identifier: MIT
-- The snapshot store: latest per stream, older versions never overwrite
-- newer ones, invalidation, exact numbers, the caller's transaction,
-- schema init, bad input (nothing written, db still usable), lifetime.
local T = require "testenv"
local S = require "stores"

local function probe(ss) return ss:load("probe") end

describe("snapshots: save and load", function()
  local db, ss, t
  S.fixture(setup, teardown, "snapshots", { prefix = "snap" },
    function(...) db, ss, t = ... end)
  before_each(function() assert(ss:invalidate_all()) end)

  it("loads nil, not an error, for a stream without a snapshot", function()
    local snap, err = ss:load("nobody")
    assert.is_nil(snap)
    assert.is_nil(err)
  end)

  it("saves and loads stream, version, state, schema_version and time", function()
    assert.same({ true, true }, { ss:save("order-1", 7, { total = 12.5, lines = { "a", "b" } }, { schema_version = 3 }) })
    local snap = assert(ss:load("order-1"))
    assert.equal("order-1", snap.stream)
    assert.equal(7, snap.version)
    assert.same({ total = 12.5, lines = { "a", "b" } }, snap.state)
    assert.equal(3, snap.schema_version)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d", snap.time)
  end)

  it("defaults schema_version to 1", function()
    assert(ss:save("s", 1, {}))
    assert.equal(1, ss:load("s").schema_version)
  end)

  it("keeps one row per stream, the latest", function()
    assert(ss:save("s", 1, { n = 1 }))
    assert(ss:save("s", 5, { n = 5 }))
    assert.equal(5, ss:load("s").version)
    assert.equal(1, S.count(db, t))
  end)

  it("does not overwrite a newer snapshot with an older version", function()
    assert(ss:save("s", 5, { n = 5 }))
    local ok, written = ss:save("s", 3, { n = 3 })
    assert.is_true(ok)
    assert.is_false(written)
    local snap = ss:load("s")
    assert.equal(5, snap.version)
    assert.same({ n = 5 }, snap.state)
  end)

  it("overwrites an equal version (re-snapshot in a new schema)", function()
    assert(ss:save("s", 5, { n = 5 }, { schema_version = 1 }))
    local _, written = ss:save("s", 5, { m = 5 }, { schema_version = 2 })
    assert.is_true(written)
    local snap = ss:load("s")
    assert.same({ m = 5 }, snap.state)
    assert.equal(2, snap.schema_version)
  end)

  it("stores any JSON value as state, numbers exactly", function()
    local cases = {
      { 2 ^ 53 }, { 0.1 + 0.2 }, { 123456789012345 }, { -1e-300 }, "plain string",
      42, true, { nested = { deep = { 1, 2, { x = "y" } } } }, { "grüße", "世界", "🙂" },
    }
    for i, state in ipairs(cases) do
      assert(ss:save("json-" .. i, 1, state))
      assert.same(state, ss:load("json-" .. i).state)
    end
  end)
end)

describe("snapshots: invalidate", function()
  local db, ss, t
  S.fixture(setup, teardown, "snapshots", { prefix = "snapinv" },
    function(...) db, ss, t = ... end)

  it("removes one stream's snapshot and leaves the others", function()
    assert(ss:save("a", 1, {}))
    assert(ss:save("b", 1, {}))
    assert.is_true(ss:invalidate("a"))
    assert.is_nil(ss:load("a"))
    assert.truthy(ss:load("b"))
  end)

  it("treats invalidating an absent snapshot as done", function()
    assert.is_true(ss:invalidate("never-saved"))
  end)

  it("removes every snapshot and says how many", function()
    assert(ss:invalidate_all())
    for i = 1, 4 do assert(ss:save("s" .. i, i, {})) end
    assert.equal(4, ss:invalidate_all())
    assert.equal(0, S.count(db, t))
    assert.equal(0, ss:invalidate_all())
  end)
end)

describe("snapshots: in the caller's transaction", function()
  local db, ss, t
  S.fixture(setup, teardown, "snapshots", { prefix = "snaptx", connect = { pool_size = 2 } },
    function(...) db, ss, t = ... end)

  it("commits and rolls back with the transaction", function()
    assert(db:transaction(function(tx)
      assert(ss:save("kept", 1, { a = 1 }, { tx = tx }))
      assert.equal(1, ss:load("kept", { tx = tx }).version)
      return true
    end))
    local res, err = db:transaction(function(tx)
      assert(ss:save("dropped", 1, {}, { tx = tx }))
      assert(ss:invalidate("kept", { tx = tx }))
      return nil, "undo"
    end)
    assert.is_nil(res)
    assert.equal("undo", err)
    assert.is_nil(ss:load("dropped"))
    assert.truthy(ss:load("kept"))
  end)

  it("refuses something that is not a transaction, and a finished one", function()
    assert.has_error(function() ss:save("s", 1, {}, { tx = {} }) end,
      "bad argument #4 to 'save' (option 'tx' must be the transaction given by db:transaction, got table)")
    local done
    db:transaction(function(tx) done = tx end)
    assert.has_error(function() ss:load("s", { tx = done }) end, "attempt to use a finished transaction")
  end)
end)

describe("snapshots: schema", function()
  local db
  T.block_db(setup, teardown, function(d) db = d end)

  it("creates its table on open, and migrate() is idempotent", function()
    local t = T.unique("snapmig")
    local ss = assert(db:snapshots{ table = t })
    assert.is_true(S.exists(db, t))
    assert.is_true(ss:migrate())
    assert.is_true(ss:migrate())
    ss:close()
    S.drop(db, t)
  end)

  it("skips schema init when asked, naming a missing table at once", function()
    local t = T.unique("snapskip")
    local missing, err = db:snapshots{ table = t, skip_schema_init = true }
    S.fails("not_found", nil, missing, err)
    assert.matches('"' .. t .. '"', err.message, 1, true)
    assert.is_false(S.exists(db, t))
    assert(db:snapshots{ table = t }):close()
    local ss = assert(db:snapshots{ table = t, skip_schema_init = true })
    assert.is_true(ss:migrate())
    assert(ss:save("s", 1, {}))
    ss:close()
    S.drop(db, t)
  end)

  it("re-creates a table dropped by hand", function()
    local t = T.unique("snapdrop")
    local ss = assert(db:snapshots{ table = t })
    assert(db:exec("drop table " .. t))
    assert.is_true(ss:migrate())
    assert(ss:save("s", 1, {}))
    ss:close()
    S.drop(db, t)
  end)

  S.table_names(it, "snapshots", probe)
end)

describe("snapshots: bad input", function()
  local db, ss, t
  S.fixture(setup, teardown, "snapshots", { prefix = "snapbad" },
    function(...) db, ss, t = ... end)
  after_each(function()
    assert.equal(0, S.count(db, t))
    S.alive(db)
  end)

  it("raises on wrong argument types with the argument number", function()
    assert.has_error(function() ss:save(42, 1, {}) end, "bad argument #1 to 'save' (string expected, got number)")
    assert.has_error(function() ss:save("s", "1", {}) end, "bad argument #2 to 'save' (number expected, got string)")
    assert.has_error(function() ss:save("s", 1, nil) end)
    assert.has_error(function() ss:save("s", 1, print) end)
    assert.has_error(function() ss:save("s", 1, {}, { schema_version = "2" }) end,
      "bad argument #4 to 'save' (option 'schema_version' must be number, got string)")
    assert.has_error(function() ss:save("s", 1, {}, { bogus = true }) end,
      "bad argument #4 to 'save' (unknown option 'bogus')")
    assert.has_error(function() ss:load(nil) end, "bad argument #1 to 'load' (string expected, got nil)")
    assert.has_error(function() ss.load("s") end)
  end)

  it("refuses negative, fractional and absurd versions with 'invalid'", function()
    S.fails("invalid", nil, ss:save("s", -1, {}))
    S.fails("invalid", nil, ss:save("s", 1.5, {}))
    S.fails("invalid", nil, ss:save("s", 2 ^ 60, {}))
    S.fails("invalid", nil, ss:save("s", 0 / 0, {}))
    S.fails("invalid", nil, ss:save("s", 1, {}, { schema_version = -2 }))
  end)

  it("refuses a 10 MB state with 'invalid' (max_value_size)", function()
    local err = S.fails("invalid", nil, ss:save("s", 1, { blob = ("x"):rep(10 * 1024 * 1024) }))
    assert.matches("max_value_size", err.message)
  end)

  it("refuses NUL bytes in the stream name and in state strings", function()
    S.fails("invalid", nil, ss:save("a\0b", 1, {}))
    S.fails("invalid", "22P05", ss:save("s", 1, { text = "nul\0here" }))
    S.fails("invalid", nil, ss:load("a\0b"))
  end)

  it("refuses invalid UTF-8 in the state and the stream name", function()
    assert.matches("UTF-8", S.fails("invalid", nil, ss:save("s", 1, { text = "bad \255\254 bytes" })).message, 1, true)
    assert.matches("UTF-8", S.fails("invalid", nil, ss:save("bad \255", 1, {})).message, 1, true)
  end)

  it("refuses a state JSON cannot hold", function()
    local err = S.fails("invalid", nil, ss:save("s", 1, { f = print }))
    assert.matches("cannot be encoded as JSON", err.message)
    S.fails("invalid", nil, ss:save("s", 1, { n = math.huge }))
    S.fails("invalid", nil, ss:save("s", 1, { [true] = 1 }))
  end)

  it("refuses an empty stream name", function()
    S.fails("invalid", nil, ss:save("", 1, {}))
  end)
end)

describe("snapshots: lifetime", function()
  S.lifetime(it, teardown, "snapshots", probe)
end)
