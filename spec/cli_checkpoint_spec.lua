-- SPDX-License-Identifier: MIT
-- Checkpoints by hand through the real binary: list, set, reset, and
-- stepping a stopped projection (on_error = "stop") past one bad event,
-- which lands in the parked table; refused while a worker holds the
-- projection's lease, unless --force.
local T = require "testenv"

describe("pgstore checkpoint", function()
  local db, store, dir, model
  setup(function()
    db = T.connect()
    store, model = T.unique("cp_ev"), T.unique("cp_model")
    dir = T.tmpdir("cpcli")
    T.write(dir .. "/p.lua", ([[
return {
  name = "%s", on_error = "stop",
  setup = "create table if not exists %s (stream text primary key, amount int)",
  handlers = { Paid = function(e, tx)
    if e.data.amount < 0 then error("negative amount") end
    assert(tx:exec("insert into %s values ($1, $2)", e.stream, e.data.amount))
  end },
}]]):format(model, model, model))
  end)
  teardown(function()
    db:close()
    T.sh("rm -rf " .. dir)
    T.assert_no_leaks()
  end)

  local function pg(args)
    return T.sh(("%s --dsn %q %s"):format(T.host(), T.dsn(), args))
  end
  local function count(sql, ...) return db:query(sql, ...)[1].n end

  it("steps a stopped projection past one bad event, recorded as parked", function()
    for i, amount in ipairs{ -1, 5, 7 } do
      local out, rc = pg(("append --table %s s-%d Paid '{\"amount\": %d}'"):format(store, i, amount))
      assert.equal(0, rc, out)
    end
    local project = ("project --table %s --once %s/p.lua"):format(store, dir)
    local out, rc = pg(project)
    assert.equal(1, rc, out)
    assert.matches("negative amount", out)

    -- a gap is refused: the event at 1 would be skipped too
    out, rc = pg(("checkpoint skip %s 2 --table %s"):format(model, store))
    assert.equal(1, rc, out)
    assert.matches("would be skipped too", out, 1, true)

    out, rc = pg(("checkpoint skip %s 1 --table %s"):format(model, store))
    assert.equal(0, rc, out)
    assert.equal(1, count("select count(*) as n from pgstore_parked where projection = $1 and position = 1"
      .. " and error like '%stepped past%'", model))
    out, rc = pg("checkpoint list --table " .. store)
    assert.equal(0, rc, out)
    assert.matches("projection:" .. model .. "%s+1%s+2", out)
    out, rc = pg(project)
    assert.equal(0, rc, out)
    assert.equal(2, count("select count(*) as n from " .. model))
  end)

  it("sets and resets, refusing while a worker holds the lease unless --force", function()
    local out, rc = pg(("checkpoint set %s 1 --table %s"):format(model, store))
    assert.equal(0, rc, out)
    local resolved = db:query("select store from pgstore_checkpoints where consumer = $1", "projection:" .. model)[1].store
    assert.equal(1, db:query("select position from pgstore_checkpoints where consumer = $1",
      "projection:" .. model)[1].position)

    -- past the head, or a name with no checkpoint: refused unless --force
    out, rc = pg(("checkpoint set %s 99 --table %s"):format(model, store))
    assert.equal(1, rc, out)
    assert.matches("past the head of [^\n]* %(3%)", out)
    out, rc = pg(("checkpoint set %s 2 --table %s"):format(model:sub(1, -2), store))
    assert.equal(1, rc, out)
    assert.matches("no checkpoint " .. model:sub(1, -2) .. " in ", out, 1, true)
    assert.matches("(did you mean " .. model .. "?)", out, 1, true)
    assert.equal(0, count("select count(*) as n from pgstore_checkpoints where consumer = $1",
      "projection:" .. model:sub(1, -2)))
    out, rc = pg(("checkpoint set %s 99 --table %s --force"):format(model, store))
    assert.equal(0, rc, out)

    -- a live worker's lease on the projection's partition set
    out, rc = pg("migrate --table " .. store) -- the lease table
    assert.equal(0, rc, out)
    assert(db:exec([[insert into pgstore_leases (name, partition, owner, token, expires_at)
      values ($1, 0, 'elsewhere:1', 1, now() + interval '1 minute')]], ("projection:%s:%s"):format(resolved, model)))
    out, rc = pg(("checkpoint reset %s --table %s"):format(model, store))
    assert.equal(1, rc, out)
    assert.matches("elsewhere:1", out, 1, true)
    assert.equal(1, count("select count(*) as n from pgstore_checkpoints where consumer = $1", "projection:" .. model))

    out, rc = pg(("checkpoint reset %s --table %s --force"):format(model, store))
    assert.equal(0, rc, out)
    assert.equal(0, count("select count(*) as n from pgstore_checkpoints where consumer = $1", "projection:" .. model))

    out, rc = pg(("checkpoint reset nosuch --table %s"):format(store))
    assert.equal(1, rc, out)
    out, rc = pg("checkpoint rest x")
    assert.equal(2, rc, out)
    assert.matches("did you mean reset?", out, 1, true)
  end)
  it("a stopped projection commits the events before the bad one; skip then needs no --force", function()
    local st = T.unique("cp_stop")
    for i = 1, 6 do
      local out, rc = pg(("append --table %s t-%d Paid '{\"amount\": %d}'"):format(st, i, i == 5 and -1 or i))
      assert.equal(0, rc, out)
    end
    db:exec("delete from " .. model)
    local project = ("project --table %s --once %s/p.lua"):format(st, dir)
    local out, rc = pg(project)
    assert.equal(1, rc, out)
    assert.matches("negative amount", out)
    assert.matches("position 5", out, 1, true)
    assert.equal(4, count("select count(*) as n from " .. model))
    out, rc = pg("checkpoint list --table " .. st)
    assert.equal(0, rc, out)
    assert.matches("projection:" .. model .. "%s+4%s+2", out)
    -- a second run fails the same way and applies nothing twice
    out, rc = pg(project)
    assert.equal(1, rc, out)
    assert.equal(4, count("select count(*) as n from " .. model))

    out, rc = pg(("checkpoint skip %s 5 --table %s"):format(model, st))
    assert.equal(0, rc, out)
    out, rc = pg(project)
    assert.equal(0, rc, out)
    assert.equal(5, count("select count(*) as n from " .. model))
    assert.equal(0, count("select count(*) as n from " .. model .. " where stream = 't-5'"))
  end)
  it("a partitioned stopped projection commits its prefix under its lease guard", function()
    local st, pm = T.unique("cp_pstop"), T.unique("cp_pmodel")
    T.write(dir .. "/pp.lua", ([[
return {
  name = "%s", on_error = "stop", partitioned = true, partitions = 1, batch = 100,
  setup = "create table if not exists %s (stream text primary key, amount int)",
  handlers = { Paid = function(e, tx)
    if e.data.amount < 0 then error("negative amount") end
    assert(tx:exec("insert into %s values ($1, $2)", e.stream, e.data.amount))
  end },
}]]):format(pm, pm, pm))
    for i = 1, 6 do
      local out, rc = pg(("append --table %s u-%d Paid '{\"amount\": %d}'"):format(st, i, i == 5 and -1 or i))
      assert.equal(0, rc, out)
    end
    local project = ("project --table %s --once --lease 2 %s/pp.lua"):format(st, dir)
    local out, rc = pg(project)
    assert.equal(1, rc, out)
    assert.matches("position 5", out, 1, true)
    assert.equal(4, count("select count(*) as n from " .. pm))
    out, rc = pg("checkpoint list --table " .. st)
    assert.equal(0, rc, out)
    assert.matches("projection:" .. pm .. ":0%s+4%s+2", out)
    out, rc = pg(("checkpoint skip %s 5 --table %s --force"):format(pm, st)) -- the stopped worker's lease may linger
    assert.equal(0, rc, out)
    out, rc = pg(project)
    assert.equal(0, rc, out)
    assert.equal(5, count("select count(*) as n from " .. pm))
    db:exec("drop table " .. pm)
  end)
end)
