-- SPDX-License-Identifier: MIT
-- Consumer checkpoints: load/save/upsert, saving inside the caller's
-- transaction (exactly-once with the read model), the guarded forms
-- (expected cursor, none yet) including a race between real processes,
-- delete and list, bad input, lifetime.
local pgstore = require "pgstore"
local T = require "testenv"
local S = require "stores"

local function probe(cp) return cp:load("probe") end

describe("checkpoints: load and save", function()
  local db, cp, t
  S.fixture(setup, teardown, "checkpoints", { prefix = "cp" },
    function(...) db, cp, t = ... end)

  it("loads nil, not an error, for a new consumer", function()
    local cursor, err = cp:load("new-consumer")
    assert.is_nil(cursor)
    assert.is_nil(err)
  end)

  it("saves and loads the cursor, one row per consumer", function()
    assert.is_true(cp:save("c1", 10))
    assert.equal(10, cp:load("c1"))
    assert.is_true(cp:save("c1", 25))
    assert.equal(25, cp:load("c1"))
    assert.equal(1, S.count(db, t, "where consumer = 'c1'"))
  end)

  it("keeps cursors up to 2^53 exact", function()
    assert(cp:save("big", 2 ^ 53))
    assert.equal(2 ^ 53, cp:load("big"))
  end)

  it("may move a cursor back (a rebuild starts over)", function()
    assert(cp:save("rb", 100))
    assert(cp:save("rb", 0))
    assert.equal(0, cp:load("rb"))
  end)

  it("deletes a consumer; deleting an absent one is not an error", function()
    assert(cp:save("gone", 3))
    assert.is_true(cp:delete("gone"))
    assert.is_nil(cp:load("gone"))
    assert.is_true(cp:delete("gone"))
  end)

  it("lists every checkpoint by consumer", function()
    assert(cp:save("zz-list", 2))
    assert(cp:save("aa-list", 1))
    local rows = assert(cp:list())
    local seen = {}
    for _, r in ipairs(rows) do seen[#seen + 1] = r.consumer end
    local sorted = { unpack(seen) }
    table.sort(sorted)
    assert.same(sorted, seen)
    assert.equal("aa-list", rows[1].consumer)
    assert.equal(1, rows[1].cursor)
    assert.matches("^%d%d%d%d%-", rows[1].time)
  end)
end)

describe("checkpoints: in the caller's transaction", function()
  local db, cp, t, model
  setup(function()
    db = T.connect{ pool_size = 2 }
    t = T.unique("cptx")
    model = T.unique("model")
    cp = assert(db:checkpoints{ table = t })
    assert(db:exec(("create table %s (k text primary key, n int)"):format(model)))
  end)
  teardown(function()
    cp:close()
    S.drop(db, t, model)
    db:close()
    T.assert_no_leaks()
  end)

  it("commits the checkpoint with the read-model write", function()
    assert(db:transaction(function(tx)
      assert(tx:exec(("insert into %s values ('a', 1)"):format(model)))
      return cp:save("proj", 1, { tx = tx })
    end))
    assert.equal(1, cp:load("proj"))
    assert.equal(1, S.count(db, model))
  end)

  it("rolls the checkpoint back with the read-model write", function()
    local res = db:transaction(function(tx)
      assert(tx:exec(("insert into %s values ('b', 2)"):format(model)))
      assert(cp:save("proj", 2, { tx = tx }))
      assert.equal(2, cp:load("proj", { tx = tx }))
      return nil, "handler failed"
    end)
    assert.is_nil(res)
    assert.equal(1, cp:load("proj"))
    assert.equal(1, S.count(db, model))
  end)

  it("reports a guarded save's conflict without spoiling the transaction", function()
    assert(db:transaction(function(tx)
      S.fails("conflict", nil, cp:save("proj", 9, { tx = tx, expected = 0 }))
      -- the transaction is still usable: the conflict is not an SQL error
      assert(tx:exec(("insert into %s values ('c', 3)"):format(model)))
      return cp:save("proj", 3, { tx = tx, expected = 1 })
    end))
    assert.equal(3, cp:load("proj"))
  end)
end)

describe("checkpoints: guarded saves", function()
  local db, cp, t
  S.fixture(setup, teardown, "checkpoints", { prefix = "cpguard" },
    function(...) db, cp, t = ... end)

  it("saves when the stored cursor is the expected one", function()
    assert(cp:save("g1", 5))
    assert.is_true(cp:save("g1", 8, { expected = 5 }))
    assert.equal(8, cp:load("g1"))
  end)

  it("refuses with 'conflict' when another worker moved it", function()
    assert(cp:save("g2", 5))
    assert(cp:save("g2", 7)) -- the other worker
    local err = S.fails("conflict", nil, cp:save("g2", 6, { expected = 5 }))
    assert.equal(5, err.expected)
    assert.equal(7, err.actual)
    assert.equal(7, cp:load("g2"))
  end)

  it("refuses an expected cursor when nothing is stored", function()
    S.fails("conflict", nil, cp:save("g3", 1, { expected = 0 }))
    assert.is_nil(cp:load("g3"))
  end)

  it("expected = false (or pgstore.null) saves only the first checkpoint", function()
    assert.is_true(cp:save("g4", 1, { expected = false }))
    local err = S.fails("conflict", nil, cp:save("g4", 2, { expected = false }))
    assert.matches("expected none", err.message)
    S.fails("conflict", nil, cp:save("g4", 2, { expected = pgstore.null }))
    assert.equal(1, cp:load("g4"))
  end)

  it("lets exactly one of 8 racing processes move the same cursor", function()
    assert(cp:save("race", 0))
    local barrier = S.make_barrier(db)
    local code = S.BARRIER .. ([[
      local cp = assert(db:checkpoints{ table = %q })
      barrier(%q, 8)
      local ok, err = cp:save("race", 100 + tonumber(arg[1]), { expected = 0 })
      print(ok and "saved" or err.code)
      cp:close()
    ]]):format(t, barrier)
    local results = T.run_parallel(8, code)
    local saved, conflicts = 0, 0
    for i, r in ipairs(results) do
      assert.equal(0, r.rc, r.out)
      if r.out:match("^saved") then saved = saved + 1; assert.equal(100 + i, cp:load("race")) end
      if r.out:match("^conflict") then conflicts = conflicts + 1 end
    end
    assert.equal(1, saved)
    assert.equal(7, conflicts)
    S.drop(db, barrier)
  end)
end)

describe("checkpoints: bad input", function()
  local db, cp, t
  S.fixture(setup, teardown, "checkpoints", { prefix = "cpbad" },
    function(...) db, cp, t = ... end)
  after_each(function()
    assert.equal(0, S.count(db, t))
    S.alive(db)
  end)

  it("raises on wrong argument and option types with the argument number", function()
    assert.has_error(function() cp:save(1, 1) end, "bad argument #1 to 'save' (string expected, got number)")
    assert.has_error(function() cp:save("c", "1") end, "bad argument #2 to 'save' (number expected, got string)")
    assert.has_error(function() cp:save("c", 1, { expected = "0" }) end,
      "bad argument #3 to 'save' (option 'expected' must be number or boolean or userdata, got string)")
    assert.has_error(function() cp:save("c", 1, { expected = true }) end,
      "bad argument #3 to 'save' (option 'expected' must be a number, false or pgstore.null)")
    assert.has_error(function() cp:load({}) end, "bad argument #1 to 'load' (string expected, got table)")
    assert.has_error(function() cp:load("c", "tx") end, "bad argument #2 to 'load' (table expected, got string)")
  end)

  it("refuses negative, fractional and absurd cursors with 'invalid'", function()
    S.fails("invalid", nil, cp:save("c", -1))
    S.fails("invalid", nil, cp:save("c", 0.5))
    S.fails("invalid", nil, cp:save("c", 1e300))
    S.fails("invalid", nil, cp:save("c", 1, { expected = -3 }))
  end)

  it("refuses NUL bytes, invalid UTF-8 and empty consumer names", function()
    S.fails("invalid", nil, cp:save("a\0b", 1))
    assert.matches("UTF-8", S.fails("invalid", nil, cp:save("bad \255", 1)).message, 1, true)
    S.fails("invalid", nil, cp:save("", 1))
    S.fails("invalid", nil, cp:load("a\0b"))
  end)
end)

describe("checkpoints: schema", function()
  after_each(function() T.assert_no_leaks() end)

  S.table_names(it, "checkpoints", probe)

  it("skips schema init when asked: a missing table is not_found", function()
    local db = T.connect()
    local t = T.unique("cpskip")
    local missing, err = db:checkpoints{ table = t, skip_schema_init = true }
    S.fails("not_found", nil, missing, err)
    assert.matches('"' .. t .. '"', err.message, 1, true)
    assert.is_false(S.exists(db, t))
    assert(db:checkpoints{ table = t }):close()
    local cp = assert(db:checkpoints{ table = t, skip_schema_init = true })
    assert.is_true(cp:migrate())
    assert(cp:save("c", 1))
    cp:close()
    S.drop(db, t)
    db:close()
    T.assert_no_leaks()
  end)
end)

describe("checkpoints: lifetime", function()
  S.lifetime(it, teardown, "checkpoints", probe)
end)
