-- SPDX-License-Identifier: MIT
-- "From the end" is the read_all horizon: an append held open in another
-- process at a lower position while a later one commits is still
-- delivered to a subscription and a projection started "from the end"
-- meanwhile; es:latest_position() stops below an append in flight and
-- never goes back when retention removes the newest events.
local core = require "pgstore.core"
local pgstore = require "pgstore"
local T = require "testenv"

-- Appends one event inside a transaction, prints its position, and keeps
-- the transaction open until the control table says go (at most 120 s: on
-- a loaded machine the processes started after it can take half a minute
-- to get going, and a holder that gave up would roll its append back).
local HOLDER = [[
local core = require "pgstore.core"
local es = assert(db:events{ table = arg[1], notify = arg[1] })
local ok, err = db:transaction(function(tx)
  local res = assert(es:append("held", { { type = "Held", data = {} } }, { tx = tx }))
  io.stdout:write("appended ", res.last_position, "\n")
  io.stdout:flush()
  local deadline = core.now() + 120
  while core.now() < deadline do
    local rows = assert(db:query("select 1 from " .. arg[1] .. "_go"))
    if #rows > 0 then return true end
    core.sleep(0.02)
  end
  return nil, "never told to commit"
end)
print(ok and "committed" or ("failed " .. tostring(err)))
]]

local PROJECTION = [[
return {
  name = %q,
  setup = "create table if not exists %s (position bigint primary key, type text not null)",
  handlers = {
    Held = function(e, tx) assert(tx:exec("insert into %s values ($1, $2)", e.position, e.type)) end,
    Later = function(e, tx) assert(tx:exec("insert into %s values ($1, $2)", e.position, e.type)) end,
  },
}
]]

describe("the end of an event store", function()
  local db, es, name
  setup(function() db = T.connect{ pool_size = 3 } end)
  teardown(function()
    db:close()
    T.assert_no_leaks()
  end)
  before_each(function()
    name = T.unique("ends_ev")
    es = assert(db:events{ table = name, notify = name })
    assert(db:exec(("create table %s_go (go boolean)"):format(name)))
  end)
  after_each(function() es:close() end)

  -- Starts the holder and waits (bounded) until its append is in flight;
  -- then commits a later append. → holder, held position, later position
  local function hold_then_commit_later()
    assert(es:append("before", { { type = "Before", data = {} } }))
    local holder = T.spawn(HOLDER, name)
    local held = T.eventually(function() return tonumber(T.output(holder):match("appended (%d+)")) end, 10)
    assert(held, "the holder never appended: " .. T.output(holder))
    local later = assert(es:append("later", { { type = "Later", data = {} } })).last_position
    assert.is_true(later > held)
    return holder, held, later
  end

  local function release(holder)
    assert(db:exec(("insert into %s_go values (true)"):format(name)))
    local out, ended = T.wait(holder, 10)
    assert.is_true(ended, "the holder did not end")
    assert.matches("committed", out)
  end

  it("latest_position stops below an append in flight", function()
    local holder, held, later = hold_then_commit_later()
    local p = assert(es:latest_position())
    assert.is_true(p < held, ("latest_position %d is past the append in flight at %d"):format(p, held))
    release(holder)
    assert.equal(later, assert(es:latest_position()))
  end)

  it("a subscription from the end delivers an append that commits later at a lower position", function()
    local holder, held, later = hold_then_commit_later()
    local sub = assert(db:subscribe{ name = name, events = es, from = "end", poll = 0.05 })
    release(holder)
    local got, seen = {}, {}
    local deadline = core.now() + 10
    while #got < 2 and core.now() < deadline do
      for _, e in ipairs(assert(sub:next(0.2))) do
        assert.is_nil(seen[e.position], "delivered twice: " .. e.position)
        seen[e.position] = true
        got[#got + 1] = e.position
      end
    end
    sub:close()
    assert.same({ held, later }, got)
  end)

  it("pgstore project --from end applies an append that commits later at a lower position", function()
    local holder, held, later = hold_then_commit_later()
    local dir = T.tmpdir("ends_proj")
    local model = name .. "_model"
    local path = dir .. "/" .. model .. ".lua"
    T.write(path, PROJECTION:format(model, model, model, model))
    local proc = T.spawn(([[os.execute(%q)]]):format(("%s --dsn %q project --table %s --from end %s")
      :format(T.host(), T.dsn(), name, path)))
    -- Its first read_all is the one that finds the end.
    local started = T.eventually(function()
      local rows = assert(db:query("select count(*) as n from pg_stat_activity"
        .. " where datname = current_database() and application_name <> 'pgstore-spec'"
        .. " and query like $1", "%" .. name .. "_read_all%"))
      return rows[1].n > 0
    end, 40)
    assert.is_true(started, "the projection never started: " .. T.output(proc))
    release(holder)
    local rows = T.eventually(function()
      local r = db:query(("select position, type from %s order by position"):format(model))
      return r and #r >= 2 and r
    end, 40)
    T.sh(("pkill -TERM -f %q"):format(path))
    T.wait(proc, 10)
    T.sh("rm -rf " .. dir)
    assert(rows, "the projection did not apply both events: " .. T.output(proc))
    assert.same({ { position = held, type = "Held" }, { position = later, type = "Later" } }, rows)
  end)

  it("a subscription from the end that stops before its first event resumes there", function()
    assert(es:append("before", { { type = "Before", data = {} } }))
    local sub = assert(db:subscribe{ name = name .. "_r", events = es, from = "end", poll = 0.05 })
    sub:close()
    local missed = assert(es:append("between", { { type = "Between", data = {} } }))
    sub = assert(db:subscribe{ name = name .. "_r", events = es, from = "end", poll = 0.05 })
    local got = assert(sub:next(2))
    sub:close()
    assert.equal(1, #got, "the event between the two starts was skipped")
    assert.equal(missed.first_position, got[1].position)
  end)

  it("pgstore project --from end starts every partition at one end, before any runs", function()
    for i = 1, 5 do assert(es:append("s" .. i, { { type = "Before", data = {} } })) end
    local head = assert(es:latest_position())
    local dir = T.tmpdir("ends_part")
    local model = name .. "_pmodel"
    local path = dir .. "/" .. model .. ".lua"
    T.write(path, ([[
return {
  name = %q, partitioned = true, partitions = 4,
  setup = "create table if not exists %s (position bigint primary key)",
  handlers = { After = function(e, tx) assert(tx:exec("insert into %s values ($1)", e.position)) end },
}
]]):format(model, model, model))
    local out, rc = T.sh(("%s --dsn %q project --table %s --from end --once %s")
      :format(T.host(), T.dsn(), name, path))
    assert.equal(0, rc, out)
    local cp = assert(db:checkpoints{ store = es })
    for p = 0, 3 do
      assert.equal(head, cp:load(("projection:%s:%d"):format(model, p)), "partition " .. p)
    end
    cp:close()
    -- events after that start are all applied by a later run, whichever
    -- partition they fall in
    for i = 1, 12 do assert(es:append("t" .. i, { { type = "After", data = {} } })) end
    out, rc = T.sh(("%s --dsn %q project --table %s --from end --once %s")
      :format(T.host(), T.dsn(), name, path))
    assert.equal(0, rc, out)
    T.sh("rm -rf " .. dir)
    assert.equal(12, db:query(("select count(*) as n from %s"):format(model))[1].n)
  end)

  it("latest_position never goes back when retention removes the newest events", function()
    for i = 1, 3 do assert(es:append("keep", { { type = "E", data = { i = i } } })) end
    for i = 1, 4 do assert(es:append("cart-1", { { type = "E", data = { i = i } } })) end
    local before = assert(es:latest_position())
    assert.equal(7, before)
    local set = pgstore.policies{ { name = "carts", streams = "cart-*", truncate_before = 100 } }
    local summary = assert(set:apply(es))
    assert.equal(4, summary.removed)
    assert.equal(3, #db:query(("select 1 from %s"):format(name)))
    assert.equal(before, assert(es:latest_position()))
    -- a fresh store handle agrees, and a subscription from the end starts there
    local other = assert(db:events{ table = name, notify = false })
    assert.equal(before, assert(other:latest_position()))
    other:close()
    local sub = assert(db:subscribe{ name = name, events = es, from = "end", listen = false })
    assert.equal(before, sub:position())
    local res = assert(es:append("cart-1", { { type = "E", data = { i = 5 } } }))
    local got = assert(sub:next(1))
    sub:close()
    assert.equal(1, #got)
    assert.equal(res.last_position, got[1].position)
    assert.equal(5, got[1].version)
  end)

  it("retention leaves events above the end in place while an append is in flight below them", function()
    local holder, held, later = hold_then_commit_later()
    local set = pgstore.policies{ { name = "all", streams = "*", truncate_before = 100 } }
    local summary = assert(set:apply(es))
    assert.equal(1, summary.removed) -- "before" only: "later" is above the end
    release(holder)
    local p = assert(es:latest_position())
    assert.equal(later, p)
    local left = db:query(("select position from %s order by position"):format(name))
    assert.same({ { position = held }, { position = later } }, left)
  end)

  it("latest_position never goes back when a delete or a move removes the newest events", function()
    assert(es:append("keep", { { type = "E", data = {} } }))
    assert(es:append("gone", { { type = "E", data = {} }, { type = "E", data = {} } }))
    assert(es:append("moved", { { type = "E", data = {} } }))
    assert(es:append("gone-too", { { type = "E", data = {} } }))
    assert.equal(5, assert(es:latest_position()))
    assert(es:delete("gone-too"))
    assert.equal(5, assert(es:latest_position()))
    local archive = assert(db:events{ table = name .. "_arch", notify = false })
    assert.equal(1, assert(es:archive_to("moved", archive)))
    assert.equal(5, assert(es:latest_position()))
    assert.equal(1, assert(archive:latest_position()))
    assert.equal(1, assert(es:restore_from("moved", archive)))
    assert.equal(1, assert(archive:latest_position()))
    assert.equal(6, assert(es:latest_position()))
    assert(es:delete("moved"))
    assert(es:delete("gone"))
    assert.equal(6, assert(es:latest_position()))
    archive:close()
  end)

  it("truncate starts the end over", function()
    for i = 1, 3 do assert(es:append("cart-1", { { type = "E", data = { i = i } } })) end
    assert(pgstore.policies{ { name = "carts", streams = "cart-*", truncate_before = 100 } }:apply(es))
    assert.equal(3, assert(es:latest_position()))
    assert(es:truncate())
    assert.equal(0, assert(es:latest_position()))
    assert(es:append("cart-1", { { type = "E", data = {} } }))
    assert.equal(1, assert(es:latest_position()))
  end)
end)
