-- SPDX-License-Identifier: MIT
-- Execution checkpoints: one row per execution id, always the latest;
-- load of an unknown id is not_found; list and delete; many processes
-- saving one id at once leave one row holding one of their values and
-- none fails; bad input; lifetime.
local T = require "testenv"
local S = require "stores"

local function probe(xs) return xs:list() end

describe("exec_checkpoints: save, load, list, delete", function()
  local db, xs, t
  S.fixture(setup, teardown, "exec_checkpoints", { prefix = "xs" },
    function(...) db, xs, t = ... end)

  it("saves a checkpoint table and loads it back", function()
    local cp = { step = 3, vars = { user = "ann", total = 2 ^ 53 }, done = { "a", "b" } }
    assert.is_true(xs:save("exec-1", cp))
    assert.same(cp, xs:load("exec-1"))
  end)

  it("keeps one row per execution id, holding the latest", function()
    assert(xs:save("exec-2", { step = 1 }))
    assert(xs:save("exec-2", { step = 2 }))
    assert(xs:save("exec-2", { step = 1, rewound = true }))
    assert.same({ step = 1, rewound = true }, xs:load("exec-2"))
    assert.equal(1, S.count(db, t, "where exec_id = 'exec-2'"))
  end)

  it("answers nil, err with 'not_found' for an unknown id", function()
    local err = S.fails("not_found", nil, xs:load("never"))
    assert.matches("never", err.message)
    S.alive(db)
  end)

  it("lists the execution ids in order", function()
    assert(xs:delete("exec-1"))
    assert(xs:delete("exec-2"))
    assert.same({}, xs:list())
    for _, id in ipairs({ "b", "c", "a" }) do assert(xs:save(id, {})) end
    assert.same({ "a", "b", "c" }, xs:list())
  end)

  it("deletes; deleting an absent id is not an error", function()
    assert(xs:save("del", { x = 1 }))
    assert.is_true(xs:delete("del"))
    S.fails("not_found", nil, xs:load("del"))
    assert.is_true(xs:delete("del"))
  end)

  it("joins the caller's transaction", function()
    local res = db:transaction(function(tx)
      assert(xs:save("txed", { n = 1 }, { tx = tx }))
      assert.same({ n = 1 }, xs:load("txed", { tx = tx }))
      return nil, "undo"
    end)
    assert.is_nil(res)
    S.fails("not_found", nil, xs:load("txed"))
  end)
end)

describe("exec_checkpoints: concurrent saves of one id", function()
  local db, xs, t
  S.fixture(setup, teardown, "exec_checkpoints", { prefix = "xsrace" },
    function(...) db, xs, t = ... end)

  it("leaves one row with one of the saved values and no error, from 12 processes", function()
    local barrier = S.make_barrier(db)
    local code = S.BARRIER .. ([[
      local xs = assert(db:exec_checkpoints{ table = %q })
      barrier(%q, 12)
      for round = 1, 20 do
        assert(xs:save("shared", { writer = tonumber(arg[1]), round = round }))
      end
      print("ok")
      xs:close()
    ]]):format(t, barrier)
    local results = T.run_parallel(12, code)
    for _, r in ipairs(results) do
      assert.equal(0, r.rc, r.out)
      assert.matches("^ok", r.out)
    end
    assert.equal(1, S.count(db, t, "where exec_id = 'shared'"))
    local cp = assert(xs:load("shared"))
    assert.truthy(cp.writer >= 1 and cp.writer <= 12, "writer " .. tostring(cp.writer))
    assert.equal(20, cp.round) -- each writer's last save was its round 20
    S.drop(db, barrier)
  end)
end)

describe("exec_checkpoints: bad input", function()
  local db, xs, t
  S.fixture(setup, teardown, "exec_checkpoints", { prefix = "xsbad" },
    function(...) db, xs, t = ... end)
  after_each(function()
    assert.equal(0, S.count(db, t))
    S.alive(db)
  end)

  it("raises on wrong argument types with the argument number", function()
    assert.has_error(function() xs:save(7, {}) end, "bad argument #1 to 'save' (string expected, got number)")
    assert.has_error(function() xs:save("x", "state") end, "bad argument #2 to 'save' (table expected, got string)")
    assert.has_error(function() xs:save("x", {}, { when = 1 }) end, "bad argument #3 to 'save' (unknown option 'when')")
    assert.has_error(function() xs:load() end, "bad argument #1 to 'load' (string expected, got nil)")
    assert.has_error(function() xs:delete(false) end, "bad argument #1 to 'delete' (string expected, got boolean)")
  end)

  it("refuses invalid UTF-8 and NUL bytes in the checkpoint", function()
    assert.matches("UTF-8", S.fails("invalid", nil, xs:save("x", { s = "\192\128" })).message, 1, true)
    S.fails("invalid", "22P05", xs:save("x", { s = "a\0b" }))
  end)

  it("refuses NUL bytes and invalid UTF-8 in the id, and an empty id", function()
    S.fails("invalid", nil, xs:save("a\0b", {}))
    assert.matches("UTF-8", S.fails("invalid", nil, xs:save("\255", {})).message, 1, true)
    S.fails("invalid", nil, xs:save("", {}))
  end)

  it("refuses a 10 MB checkpoint with 'invalid'", function()
    local err = S.fails("invalid", nil, xs:save("x", { blob = ("y"):rep(10 * 1024 * 1024) }))
    assert.matches("max_value_size", err.message)
  end)

  it("refuses a checkpoint JSON cannot hold", function()
    S.fails("invalid", nil, xs:save("x", { co = coroutine.create(print) }))
    S.fails("invalid", nil, xs:save("x", { [1] = 1, [100] = 2 })) -- excessively sparse
  end)
end)

describe("exec_checkpoints: schema", function()
  after_each(function() T.assert_no_leaks() end)

  S.table_names(it, "exec_checkpoints", probe)

  it("makes migrate() explicit and idempotent", function()
    local db = T.connect()
    local t = T.unique("xsmig")
    S.fails("not_found", nil, db:exec_checkpoints{ table = t, skip_schema_init = true })
    assert.is_false(S.exists(db, t))
    local xs = assert(db:exec_checkpoints{ table = t })
    assert.is_true(xs:migrate())
    assert.is_true(xs:migrate())
    assert.is_true(S.exists(db, t))
    assert.equal(1, db:query("select version from pgstore_migrations where target = $1",
      "exec_checkpoints:public." .. t)[1].version)
    xs:close()
    S.drop(db, t)
    db:close()
    T.assert_no_leaks()
  end)
end)

describe("exec_checkpoints: lifetime", function()
  S.lifetime(it, teardown, "exec_checkpoints", probe)
end)
