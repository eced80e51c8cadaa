-- SPDX-License-Identifier: MIT
-- core.park and friends (lua/binding/l_park.c): handles moved out of one
-- Lua value into the process-wide registry and back into another — what
-- lets resty.pgstore keep a transaction's connection between worker-thread
-- calls. Also pgstore.connect's `shared` pools, the other half of sharing
-- between the VMs of one process.
local core = require "pgstore.core"
local pgstore = require "pgstore"
local T = require "testenv"

describe("parked handles", function()
  after_each(function() T.assert_no_leaks() end)

  it("moves a pinned connection out and back, closing the original", function()
    local db = T.connect{ pool_size = 1 }
    local conn = assert(db.pool:acquire())
    assert(conn:begin())
    local pid = conn:backend_pid()
    local before = core.park_stats().parked
    local id = core.park(conn)
    assert.equal(before + 1, core.park_stats().parked)
    assert.equal("pgstore.conn (closed)", tostring(conn))
    assert.has_error(function() conn:query("select 1") end, "attempt to use a closed connection")
    local again = assert(core.unpark(id, true))
    assert.equal(pid, again:backend_pid(), "the same connection")
    assert.equal("intrans", again:tx_status(), "its transaction still open")
    assert.equal(1, core.park_stats().busy)
    core.repark(id, again)
    assert.equal(0, core.park_stats().busy)
    local last = assert(core.unpark(id))
    assert.equal(before, core.park_stats().parked, "taken out for good")
    assert.is_nil(core.unpark(id), "gone")
    assert(last:rollback())
    last:release()
    db:close()
  end)

  it("raises when a busy id is taken again, and keeps the handle on a bad repark", function()
    local db = T.connect{ pool_size = 1 }
    local id = core.park(assert(db.pool:acquire()))
    local h = assert(core.unpark(id, true))
    assert.has_error(function() core.unpark(id, true) end,
      "attempt to use a handle that another call is using")
    assert.has_error(function() core.repark(id + 1000, h) end)
    assert.same({ { n = 1 } }, h:query("select 1 as n"), "still usable after the refused repark")
    core.repark(id, h)
    assert.has_error(function() core.park(h) end) -- closed by the repark
    assert.has_error(function() core.park({}) end)
    core.unpark(id):release()
    db:close()
  end)

  it("hands out expired handles to the reaper, and only those", function()
    local db = T.connect{ pool_size = 3 }
    -- due in 1 s: long enough not to be due before the first check on a busy machine
    local soon = core.park(assert(db.pool:acquire()), core.now() + 1)
    local never = core.park(assert(db.pool:acquire()))
    local later = core.park(assert(db:lock("park-spec-lock")), core.now() + 60)
    assert.is_nil(core.unpark_expired())
    core.sleep(1.1)
    assert.equal(1, core.park_stats().expired)
    local h, id = core.unpark_expired()
    assert.equal(soon, id)
    assert.matches("^pgstore%.conn", tostring(h))
    h:release()
    core.park_expire(later) -- its owner went away: due now
    h, id = core.unpark_expired()
    assert.equal(later, id)
    assert.matches("^pgstore%.lock", tostring(h))
    assert(h:release())
    assert.is_nil(core.unpark_expired())
    -- A busy handle is not reaped until it is parked again.
    local b = assert(core.unpark(never, true))
    core.park_expire(never)
    assert.is_nil(core.unpark_expired())
    core.repark(never, b)
    h = assert(core.unpark_expired())
    h:release()
    db:close()
  end)

  it("parks listeners and leases too", function()
    local db = T.connect()
    local l = assert(db:listen("park_spec"))
    local lid = core.park(l.core)
    local lease = assert(core.lease(db.pool, { name = T.unique("park_spec"), count = 2 }))
    local eid = core.park(lease)
    local back = assert(core.unpark(lid))
    assert(db:notify("park_spec", "hi"))
    local n = assert(back:wait(5))
    assert.equal("hi", n.payload)
    back:close()
    local le = assert(core.unpark(eid))
    assert(le:tick())
    le:close()
    db:close()
  end)
end)

describe("shared pools", function()
  it("gives every connect with the same key the same pool", function()
    local key = T.unique("park-spec-shared")
    local opts = { dsn = T.dsn(), application_name = "pgstore-spec-shared", pool_size = 2, shared = key }
    local a = assert(pgstore.connect(opts))
    local b = assert(pgstore.connect(opts))
    local conn = assert(a:acquire())
    assert.equal(1, b:pool_stats().borrowed, "b sees a's borrowed connection")
    a:close()
    assert.same({ { n = 1 } }, b:query("select 1 as n"), "closing one leaves the pool to the other")
    conn:release()
    assert.equal(0, b:pool_stats().borrowed)
    b:close()
  end)
end)
