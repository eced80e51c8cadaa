-- SPDX-License-Identifier: MIT
-- Parked events through the real binary: a projection parks what its
-- handler fails on; `pgstore status` counts them; `pgstore parked` lists,
-- shows, retries on the fixed code (the read model and the parked row in
-- one transaction) and discards them.
local T = require "testenv"

describe("pgstore parked", function()
  local db, store, dir, model
  setup(function()
    db = T.connect()
    store, model = T.unique("parked_ev"), T.unique("parked_model")
    dir = T.tmpdir("parked")
  end)
  teardown(function()
    db:close()
    T.sh("rm -rf " .. dir)
    T.assert_no_leaks()
  end)

  local function pg(args)
    return T.sh(("%s --dsn %q %s"):format(T.host(), T.dsn(), args))
  end

  -- The projection file: fails on negative amounts unless `fixed`.
  local function write_projection(fixed)
    T.write(dir .. "/p.lua", ([[
return {
  name = "%s", on_error = "park",
  setup = "create table if not exists %s (stream text primary key, amount int)",
  handlers = { Paid = function(e, tx)
    if e.data.amount < 0 and not %s then error("negative amount " .. e.data.amount) end
    assert(tx:exec("insert into %s values ($1, $2)", e.stream, e.data.amount))
  end },
}]]):format(model, model, tostring(fixed), model))
  end

  it("parks, counts, lists, shows, retries on fixed code and discards", function()
    for i, amount in ipairs{ 5, -1, 7, -2 } do
      local out, rc = pg(("append --table %s s-%d Paid '{\"amount\": %d}'"):format(store, i, amount))
      assert.equal(0, rc, out)
    end
    write_projection(false)
    local out, rc = pg(("project --table %s --once %s/p.lua"):format(store, dir))
    assert.equal(0, rc, out)
    assert.equal(2, db:query("select count(*) as n from " .. model)[1].n)

    out, rc = pg("status --table " .. store)
    assert.equal(0, rc, out)
    assert.matches("parked%s+%d+", out)
    assert.matches(model .. "%s+[^\n]*" .. store .. "[^\n]* 2 ", out)

    out, rc = pg("parked list --projection " .. model)
    assert.equal(0, rc, out)
    assert.matches(model .. "\t[^\t]*\t2\ts%-2\tPaid\t", out)
    assert.matches(model .. "\t[^\t]*\t4\ts%-4\tPaid\t", out)
    assert.matches("negative amount %-1", out)

    out, rc = pg("parked show 2 --projection " .. model)
    assert.equal(0, rc, out)
    assert.matches('"amount": %-1', out)
    assert.matches("traceback", out)

    -- still failing code: nothing changes
    out, rc = pg(("parked retry 2 --projection %s/p.lua --table %s"):format(dir, store))
    assert.equal(1, rc, out)
    assert.matches("negative amount %-1", out)
    assert.equal(2, db:query("select count(*) as n from pgstore_parked where projection = $1", model)[1].n)

    write_projection(true)
    out, rc = pg(("parked retry 2 --projection %s/p.lua --table %s"):format(dir, store))
    assert.equal(0, rc, out)
    assert.equal(-1, db:query("select amount from " .. model .. " where stream = 's-2'")[1].amount)
    assert.equal(1, db:query("select count(*) as n from pgstore_parked where projection = $1", model)[1].n)

    -- a store's own parked events; a mistyped store is said so, not 0 parked
    out, rc = pg(("parked list --table %s --projection %s"):format(store, model))
    assert.equal(0, rc, out)
    assert.matches("1 parked", out, 1, true)
    out, rc = pg(("parked list --table %s"):format(store:sub(1, -2)))
    assert.equal(1, rc, out)
    assert.matches("no event store " .. store:sub(1, -2) .. " (did you mean " .. store .. "?)", out, 1, true)
    -- discarding what is not parked fails, as show does
    out, rc = pg("parked discard 99 --projection " .. model)
    assert.equal(1, rc, out)
    assert.matches("no parked event", out, 1, true)

    out, rc = pg("parked discard --all --projection " .. model)
    assert.equal(0, rc, out)
    assert.matches("discarded 1", out)
    assert.equal(0, db:query("select count(*) as n from pgstore_parked where projection = $1", model)[1].n)

    out, rc = pg("parked shwo")
    assert.equal(2, rc, out)
    assert.matches("did you mean show?", out, 1, true)
  end)
end)
