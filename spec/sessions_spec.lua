-- SPDX-License-Identifier: MIT
-- Sessions: JSONB state and history with optimistic versions, the check
-- and the write in one statement (16 real processes racing on one version:
-- exactly one wins, every other gets 'conflict'), delete, bad input with
-- nothing written, lifetime.
local T = require "testenv"
local S = require "stores"

local function probe(sess) return sess:load("probe") end

describe("sessions: load and save", function()
  local db, sess, t
  S.fixture(setup, teardown, "sessions", { prefix = "sess", connect = { pool_size = 2 } },
    function(...) db, sess, t = ... end)

  it("loads nil, not an error, for an unknown session", function()
    local s, err = sess:load("nobody")
    assert.is_nil(s)
    assert.is_nil(err)
  end)

  it("saves and loads version, state and history", function()
    local state = { user = "ann", cart = { { sku = "a", qty = 2 } }, big = 2 ^ 53 - 1 }
    local history = { { event = "login" }, { event = "add", sku = "a" } }
    assert.is_true(sess:save("s1", { version = 1, state = state, history = history }))
    local s = assert(sess:load("s1"))
    assert.equal(1, s.version)
    assert.same(state, s.state)
    assert.same(history, s.history)
    assert.matches("^%d%d%d%d%-", s.time)
  end)

  it("stores a missing or empty history as a JSON array", function()
    assert(sess:save("s2", { version = 1, state = {} }))
    assert(sess:save("s3", { version = 1, state = {}, history = {} }))
    local rows = db:query(("select jsonb_typeof(history) as t from %s where id in ('s2', 's3')"):format(t))
    assert.same({ { t = "array" }, { t = "array" } }, rows)
    assert.same({}, sess:load("s2").history)
  end)

  it("saves a newer version over an older one", function()
    assert(sess:save("s4", { version = 1, state = { n = 1 } }))
    assert(sess:save("s4", { version = 2, state = { n = 2 } }))
    assert(sess:save("s4", { version = 10, state = { n = 10 } }))
    local s = sess:load("s4")
    assert.equal(10, s.version)
    assert.same({ n = 10 }, s.state)
  end)

  it("refuses the same version with 'conflict' and writes nothing", function()
    assert(sess:save("s5", { version = 3, state = { n = "three" } }))
    local err = S.fails("conflict", nil, sess:save("s5", { version = 3, state = { n = "other" } }))
    assert.equal(3, err.expected)
    assert.equal(3, err.actual)
    assert.same({ n = "three" }, sess:load("s5").state)
    S.alive(db)
  end)

  it("refuses an older version with 'conflict' and writes nothing", function()
    assert(sess:save("s6", { version = 5, state = { n = 5 } }))
    local err = S.fails("conflict", nil, sess:save("s6", { version = 4, state = { n = 4 } }))
    assert.equal(4, err.expected)
    assert.equal(5, err.actual)
    assert.equal(5, sess:load("s6").version)
  end)

  it("deletes; deleting an absent session is not an error", function()
    assert(sess:save("s7", { version = 4, state = {} }))
    assert.is_true(sess:delete("s7"))
    assert.is_nil(sess:load("s7"))
    assert.is_true(sess:delete("s7"))
    -- a deleted session starts over
    assert(sess:save("s7", { version = 1, state = {} }))
  end)

  it("checks and writes in one statement, no explicit transaction or row lock", function()
    local statements = assert(db:transaction(function(tx)
      assert(sess:save("s8", { version = 1, state = {} }, { tx = tx }))
      return tx:query("select statement from pg_prepared_statements where statement like $1",
        ('INSERT INTO "public"."%s"%%'):format(t))
    end))
    assert.equal(1, #statements)
    local sql = statements[1].statement
    assert.matches("^INSERT INTO", sql)
    assert.matches("ON CONFLICT %(id%) DO UPDATE", sql)
    assert.matches("WHERE stored%.version < EXCLUDED%.version$", sql)
    assert.is_nil(sql:upper():find("FOR UPDATE", 1, true))
  end)

  it("joins the caller's transaction", function()
    local res = db:transaction(function(tx)
      assert(sess:save("s9", { version = 1, state = {} }, { tx = tx }))
      return nil, "undo"
    end)
    assert.is_nil(res)
    assert.is_nil(sess:load("s9"))
  end)
end)

describe("sessions: 16 processes saving the same version", function()
  local db, sess, t
  S.fixture(setup, teardown, "sessions", { prefix = "sessrace" },
    function(...) db, sess, t = ... end)

  local function race(id, version)
    local barrier = S.make_barrier(db)
    local code = S.BARRIER .. ([[
      local sess = assert(db:sessions{ table = %q, skip_schema_init = true })
      barrier(%q, 16)
      local ok, err = sess:save(%q, { version = %d, state = { winner = tonumber(arg[1]) } })
      print(ok and "saved" or err.code)
      sess:close()
    ]]):format(t, barrier, id, version)
    local results = T.run_parallel(16, code)
    S.drop(db, barrier)
    local winner, conflicts = nil, 0
    for i, r in ipairs(results) do
      assert.equal(0, r.rc, r.out)
      if r.out:match("^saved") then
        assert.is_nil(winner, "two winners: " .. tostring(winner) .. " and " .. i)
        winner = i
      else
        assert.matches("^conflict", r.out)
        conflicts = conflicts + 1
      end
    end
    return winner, conflicts
  end

  it("lets exactly one create a new session; the other 15 get 'conflict'", function()
    local winner, conflicts = race("fresh", 1)
    assert.truthy(winner)
    assert.equal(15, conflicts)
    local s = sess:load("fresh")
    assert.equal(1, s.version)
    assert.equal(winner, s.state.winner)
  end)

  it("lets exactly one move an existing session on; the other 15 get 'conflict'", function()
    assert(sess:save("existing", { version = 1, state = { winner = 0 } }))
    local winner, conflicts = race("existing", 2)
    assert.truthy(winner)
    assert.equal(15, conflicts)
    local s = sess:load("existing")
    assert.equal(2, s.version)
    assert.equal(winner, s.state.winner)
  end)
end)

describe("sessions: bad input", function()
  local db, sess, t
  S.fixture(setup, teardown, "sessions", { prefix = "sessbad" },
    function(...) db, sess, t = ... end)
  after_each(function()
    assert.equal(0, S.count(db, t))
    S.alive(db)
  end)

  it("raises on wrong argument and field types with the argument number", function()
    assert.has_error(function() sess:save(1, { version = 1, state = {} }) end,
      "bad argument #1 to 'save' (string expected, got number)")
    assert.has_error(function() sess:save("s", 1) end, "bad argument #2 to 'save' (table expected, got number)")
    assert.has_error(function() sess:save("s", { version = "1", state = {} }) end,
      "bad argument #2 to 'save' (field 'version' must be a number, got string)")
    assert.has_error(function() sess:save("s", { version = 1, state = "x" }) end,
      "bad argument #2 to 'save' (field 'state' must be a table, got string)")
    assert.has_error(function() sess:save("s", { version = 1, state = {}, history = "x" }) end,
      "bad argument #2 to 'save' (field 'history' must be a table, got string)")
    assert.has_error(function() sess:load(true) end, "bad argument #1 to 'load' (string expected, got boolean)")
  end)

  it("refuses negative, fractional and absurd versions with 'invalid'", function()
    S.fails("invalid", nil, sess:save("s", { version = -1, state = {} }))
    S.fails("invalid", nil, sess:save("s", { version = 1.25, state = {} }))
    S.fails("invalid", nil, sess:save("s", { version = math.huge, state = {} }))
  end)

  it("refuses invalid UTF-8 in state or history with 'invalid'", function()
    assert.matches("UTF-8", S.fails("invalid", nil, sess:save("s", { version = 1, state = { name = "\237\160\128" } })).message, 1, true)
    assert.matches("UTF-8", S.fails("invalid", nil, sess:save("s", { version = 1, state = {}, history = { "\255" } })).message, 1, true)
  end)

  it("refuses NUL bytes in the id and in state strings", function()
    S.fails("invalid", nil, sess:save("a\0b", { version = 1, state = {} }))
    S.fails("invalid", "22P05", sess:save("s", { version = 1, state = { s = "\0" } }))
  end)

  it("refuses a history that is not an array", function()
    S.fails("invalid", "23514", sess:save("s", { version = 1, state = {}, history = { kind = "object" } }))
  end)

  it("refuses a 10 MB state with 'invalid'", function()
    local err = S.fails("invalid", nil, sess:save("s", { version = 1, state = { b = ("z"):rep(10 * 1024 * 1024) } }))
    assert.matches("max_value_size", err.message)
  end)
end)

describe("sessions: schema", function()
  after_each(function() T.assert_no_leaks() end)

  S.table_names(it, "sessions", probe)

  it("uses the table named in the options, created once", function()
    local db = T.connect()
    local t = T.unique("atto_sessions")
    local a = assert(db:sessions{ table = t })
    local b = assert(db:sessions{ table = t })
    assert(a:save("x", { version = 1, state = { from = "a" } }))
    assert.same({ from = "a" }, b:load("x").state)
    a:close()
    b:close()
    S.drop(db, t)
    db:close()
    T.assert_no_leaks()
  end)
end)

describe("sessions: lifetime", function()
  S.lifetime(it, teardown, "sessions", probe)
end)
