-- SPDX-License-Identifier: MIT
-- db:relay: local delivery at once, fan-out to other relays and processes,
-- no echo, bounded changes and queue, broadcasts dropped and reported (not
-- queued) while the database is down, and the reconnect report after it.
local core = require "pgstore.core"
local T = require "testenv"

describe("db:relay", function()
  local db
  T.block_db(setup, teardown, function(d) db = d end)

  it("delivers locally at once and to other servers, without echo", function()
    local ch = T.unique("relay")
    local a = assert(db:relay(ch))
    local b = assert(db:relay(ch))
    assert.equal(2, a.timeout) -- the default bound on a broadcast
    assert.is_true(a:broadcast{ kind = "product", id = 42, tags = { "x", "y" } })
    local change, origin = a:next(0) -- no round trip needed
    assert.same({ kind = "product", id = 42, tags = { "x", "y" } }, change)
    assert.equal("local", origin)
    change, origin = assert(b:next(5))
    assert.same({ kind = "product", id = 42, tags = { "x", "y" } }, change)
    assert.equal(a.l:stats().pid, origin) -- the sender's backend
    local none, err = a:next(0.2) -- its own NOTIFY does not come back
    assert.is_nil(none)
    assert.equal("timeout", err.code)
    local s = a:stats()
    assert.same({ 1, 0, 0 }, { s.sent, s.received, s.dropped })
    assert.equal(1, b:stats().received)
    a:close()
    b:close()
  end)

  it("receives what other processes broadcast", function()
    local ch = T.unique("relay")
    local r = assert(db:relay(ch))
    local results = T.run_parallel(2, [[
      local relay = assert(db:relay(arg[2]))
      for i = 1, 20 do assert(relay:broadcast{ from = tonumber(arg[1]), i = i }) end
      relay:close()
    ]], ch)
    for i, res in ipairs(results) do assert.equal(0, res.rc, "process " .. i .. ": " .. res.out) end
    local seen = { {}, {} }
    for _ = 1, 40 do
      local change, origin = assert(r:next(5))
      assert.is_number(origin)
      local list = seen[change.from]
      assert.equal(#list + 1, change.i) -- in order per sender
      list[#list + 1] = change.i
    end
    assert.equal(20, #seen[1])
    assert.equal(20, #seen[2])
    r:close()
  end)

  it("refuses changes that are too big or not JSON, before sending anything", function()
    local ch = T.unique("relay")
    local a = assert(db:relay(ch, { max_change = 7999 }))
    local b = assert(db:relay(ch))
    local ok, err = a:broadcast{ blob = ("x"):rep(8000) }
    assert.is_nil(ok)
    assert.equal("invalid", err.code)
    assert.matches("over the relay's max_change of 7999 bytes", err.message)
    ok, err = a:broadcast{ f = print }
    assert.equal("invalid", err.code)
    assert.is_true(a:broadcast{ blob = ("x"):rep(7988) }) -- {"blob":"…"} is 7999 bytes
    assert.equal(7988, #assert(a:next(0)).blob)
    assert.equal(7988, #assert(b:next(5)).blob)
    assert.is_nil(a:next(0.1))
    assert.is_nil(b:next(0.1))
    assert.equal(2, a:stats().dropped)
    assert.has_error(function() a:broadcast("text") end)
    assert.has_error(function() a:next("soon") end)
    a:close()
    b:close()
  end)

  it("pgstore.open_relay owns its db and closes it", function()
    local pgstore = require "pgstore"
    local r = assert(pgstore.open_relay({ dsn = T.dsn(), application_name = "pgstore-spec" }, T.unique("relay")))
    assert(r:broadcast{ x = 1 })
    r:close()
    assert.is_true(r.db == nil)
  end)

  it("keeps a bounded queue, dropping the oldest, counting them and saying so first", function()
    local r = assert(db:relay(T.unique("relay"), { max_queue = 3 }))
    for i = 1, 5 do assert(r:broadcast{ i = i }) end
    local none, err = r:next(0)
    assert.is_nil(none)
    assert.equal("lost", err.code)
    assert.same({ 2, "overflow" }, { err.lost, err.reason })
    assert.matches("2 changes were lost", err.message)
    local got = {}
    while true do
      local change = r:next(0.1)
      if not change then break end
      got[#got + 1] = change.i
    end
    assert.same({ 3, 4, 5 }, got)
    assert.equal(2, r:stats().overflow)
    r:close()
  end)

  it("skips NOTIFYs on its channel that are not JSON objects or arrays", function()
    local ch = T.unique("relay")
    local r = assert(db:relay(ch))
    assert(db:notify(ch, "not json"))
    assert(db:notify(ch, "42"))
    assert(db:notify(ch, "[1,2]"))
    assert(db:notify(ch, '{"ok":true}'))
    assert.same({ 1, 2 }, assert(r:next(5)))
    assert.same({ ok = true }, assert(r:next(5)))
    assert.equal(2, r:stats().invalid)
    r:close()
  end)

  it("drops and reports broadcasts while the database is down, then recovers", function()
    local ch = T.unique("relay")
    local r = assert(db:relay(ch, { timeout = 0.5, reconnect_min = 0.05, reconnect_max = 0.2 }))
    T.admin():close()
    T.testdb("stop-immediate")
    local t0 = core.now()
    local ok, err = r:broadcast{ n = 1 }
    local took = core.now() - t0
    local ok2, err2 = r:broadcast{ n = 2 }
    local took2 = core.now() - t0 - took
    T.testdb("start-again")
    assert.is_nil(ok)
    assert.truthy(err.code == "connection" or err.code == "timeout", err.code)
    assert.truthy(took < 1.5, "the broadcast blocked " .. took .. "s")
    assert.is_nil(ok2)
    assert.truthy(err2.code == "connection" or err2.code == "timeout", err2.code)
    assert.truthy(took2 < 1.5)
    assert.equal(2, r:stats().dropped)
    -- both were still delivered locally
    assert.equal(1, assert(r:next(0)).n)
    assert.equal(2, assert(r:next(0)).n)
    -- once the server is back: the reconnect is reported, broadcasts flow
    local change
    change, err = r:next(10)
    assert.is_nil(change)
    assert.equal("connection", err.code)
    assert.is_true(err.reconnected)
    local other = assert(db:relay(ch))
    assert(T.eventually(function() return r:broadcast{ n = 3 } end, 5))
    assert.equal(3, assert(other:next(5)).n)
    assert.equal(3, assert(r:next(1)).n) -- its own, locally
    other:close()
    r:close()
    assert.equal("pgstore.relay (closed)", tostring(r))
    assert.has_error(function() r:next(0) end, "attempt to use a closed relay")
  end)
end)
