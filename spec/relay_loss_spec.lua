-- SPDX-License-Identifier: MIT
-- db:relay never hides a loss: changes dropped by a full queue (the
-- listener's or the relay's) come out of next() as a "lost" error before
-- anything sent after them, and changes larger than a NOTIFY payload go
-- through the relay table — to other processes, in order, bounded by
-- max_change, and reported as lost once they are gone from the table.
local T = require "testenv"

-- Drains a relay: every change and every error, in order, until it is quiet.
local function drain(r)
  local seen = {}
  while true do
    local change, err = r:next(0.5)
    if change then
      seen[#seen + 1] = change
    elseif err.code == "timeout" then
      return seen
    else
      seen[#seen + 1] = err
    end
  end
end

describe("db:relay losses", function()
  local db
  T.block_db(setup, teardown, function(d) db = d end)

  it("reports changes dropped by the listener's full queue, before the later ones", function()
    local ch = T.unique("loss")
    local r = assert(db:relay(ch, { max_queue = 5 }))
    local results = T.run_parallel(1, [[
      local relay = assert(db:relay(arg[2]))
      for i = 1, 60 do assert(relay:broadcast{ i = i }) end
      relay:close()
    ]], ch)
    assert.equal(0, results[1].rc, results[1].out)
    require("pgstore.core").sleep(0.3) -- all 60 are in the listener's socket
    local seen = drain(r)
    local last, losses, got, counted = 0, 0, 0, 0
    local lost_since = false
    for _, e in ipairs(seen) do
      if e.code then
        assert.equal("lost", e.code)
        assert.equal("overflow", e.reason)
        assert.is_number(e.lost, "a loss report without its count: " .. tostring(e))
        losses, lost_since, counted = losses + 1, true, counted + e.lost
      else
        assert.truthy(e.i > last, "out of order")
        -- a gap is only allowed right after a loss was reported
        assert.truthy(e.i == last + 1 or lost_since,
          ("change %d came after %d with no loss reported"):format(e.i, last))
        last, lost_since, got = e.i, false, got + 1
      end
    end
    assert.truthy(losses >= 1, "no loss reported")
    print(("relay overflow: 60 sent, %d received, %d loss report(s), no unreported gap"):format(got, losses))
    assert.truthy(got < 60 and got >= 1, got .. " changes")
    assert.equal(60, last) -- the newest are kept
    -- each dropped change counted once, in the reports and in the stats
    assert.equal(60 - got, counted)
    assert.equal(60 - got, r:stats().overflow)
    r:close()
  end)

  it("sends changes larger than a NOTIFY payload to other processes, in order", function()
    local ch = T.unique("large")
    local r = assert(db:relay(ch))
    local results = T.run_parallel(1, [[
      local relay = assert(db:relay(arg[2]))
      assert(relay:broadcast{ i = 1, blob = ("a"):rep(100000) })
      assert(relay:broadcast{ i = 2 })
      assert(relay:broadcast{ i = 3, blob = ("b"):rep(900000) })
      local ok, err = relay:broadcast{ blob = ("c"):rep(1024 * 1024) }
      assert(not ok and err.code == "invalid", "over max_change")
      relay:close()
    ]], ch)
    assert.equal(0, results[1].rc, results[1].out)
    local a = assert(r:next(5))
    assert.same({ 1, 100000 }, { a.i, #a.blob })
    assert.equal(("a"):rep(100000), a.blob)
    assert.equal(2, assert(r:next(5)).i)
    local c = assert(r:next(5))
    assert.same({ 3, 900000 }, { c.i, #c.blob })
    assert.equal("timeout", select(2, r:next(0.3)).code) -- the refused one was not sent
    -- locally too, and a larger max_change lets more through
    local big = assert(db:relay(ch, { max_change = 3 * 1024 * 1024 }))
    assert(big:broadcast{ blob = ("d"):rep(2 * 1024 * 1024) })
    assert.equal(2 * 1024 * 1024, #assert(big:next(0)).blob)
    assert.equal(2 * 1024 * 1024, #assert(r:next(5)).blob)
    big:close()
    r:close()
  end)

  it("reports a large change gone from the relay table as lost, then goes on", function()
    local ch = T.unique("keep")
    local sender = assert(db:relay(ch, { keep = 0.2 }))
    local r = assert(db:relay(ch))
    assert(sender:broadcast{ n = 1, blob = ("x"):rep(9000) })
    require("pgstore.core").sleep(0.5)
    assert(sender:broadcast{ n = 2, blob = ("y"):rep(9000) }) -- deletes the first
    local none, err = r:next(5)
    assert.is_nil(none)
    assert.equal("lost", err.code)
    assert.same({ 1, "unreadable" }, { err.lost, err.reason })
    assert.matches("no longer in the relay table", err.message)
    assert.equal(2, assert(r:next(5)).n)
    local rows = assert(db:query("select count(*)::int as n from pgstore_relay where channel = $1", ch))
    assert.equal(1, rows[1].n)
    sender:close()
    r:close()
  end)

  it("keeps other channels' large changes, waits out a read that fails, and refuses a bad payload", function()
    local core = require "pgstore.core"
    local ch, other = T.unique("mine"), T.unique("other")
    local r, sender = assert(db:relay(ch)), assert(db:relay(ch))
    local hasty = assert(db:relay(other, { keep = 0.001 }))
    assert(sender:broadcast{ n = 1, blob = ("x"):rep(9000) })
    core.sleep(0.2)
    assert(hasty:broadcast{ blob = ("z"):rep(9000) }) -- deletes old rows of its own channel only
    core.sleep(0.2)
    -- the relay table cannot be read for a moment: the change waits, it is not lost
    assert(db:exec("alter table pgstore_relay rename to pgstore_relay_away"))
    local none, err = r:next(2)
    assert(db:exec("alter table pgstore_relay_away rename to pgstore_relay"))
    assert.is_nil(none)
    assert.is_not.equal("lost", err.code, tostring(err))
    assert.equal(1, assert(r:next(5)).n)
    -- a change that is no valid NOTIFY payload is refused before anyone sees it
    local ok, bad = sender:broadcast{ s = "\255" }
    assert.is_nil(ok)
    assert.equal("invalid", bad.code)
    assert.equal(1, assert(sender:next(1)).n) -- its own first change, delivered locally
    assert.equal("timeout", select(2, sender:next(0.3)).code)
    assert.equal("timeout", select(2, r:next(0.3)).code)
    r:close()
    sender:close()
    hasty:close()
  end)

  it("checks its options", function()
    local ch = T.unique("opts")
    assert.equal("invalid", select(2, db:relay(ch, { max_change = 0 })).code)
    assert.equal("invalid", select(2, db:relay(ch, { keep = -1 })).code)
    assert.equal("invalid", select(2, db:relay(ch, { table = "no;such" })).code)
    assert.has_error(function() db:relay(ch, { keep = "long" }) end)
  end)
end)
