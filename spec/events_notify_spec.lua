-- SPDX-License-Identifier: MIT
-- NOTIFY after appends, seen by a raw LISTEN connection (psql): coalesced
-- after commit by default (fewer notifications than appends, the last one
-- carrying the last position), or one per append inside the transaction;
-- appends inside a caller's transaction wake listeners at its commit.
local T = require "testenv"

-- Runs psql LISTENing on channel for `seconds`; returns a function that
-- waits for psql to end (it prints what it got then) and returns the
-- payloads. The listener stays long enough for a busy machine.
local function listen(channel, seconds)
  local file = os.tmpname()
  os.execute(("unset LD_PRELOAD; (psql %q -X -q -c 'LISTEN %s' -c 'select pg_sleep(%s)' >%s 2>&1;"
    .. " echo done >>%s) &"):format(T.dsn(), channel, seconds, file, file))
  return function()
    local out
    T.eventually(function()
      local f = io.open(file)
      out = f:read("*a")
      f:close()
      return out:find("done\n$")
    end, seconds + 10)
    os.remove(file)
    local payloads = {}
    for p in out:gmatch('with payload "(%d+)"') do payloads[#payloads + 1] = tonumber(p) end
    return payloads, out
  end
end

local function listeners()
  return T.admin():query([[select count(*) as n from pg_stat_activity
    where datname = current_database() and application_name = 'psql' and query like 'select pg_sleep%' and state = 'active']])[1].n
end

describe("events NOTIFY", function()
  local db
  T.block_db(setup, teardown, function(d) db = d end)

  it("coalesces notifications after commit and always sends the last position", function()
    local es = assert(db:events{ table = "ev_notify", notify = "ev_chan" })
    assert(es:truncate())
    local done = listen("ev_chan", 5)
    assert(T.eventually(function() return listeners() > 0 end))
    local last
    for i = 1, 200 do last = assert(es:append("n" .. (i % 5), { { type = "E" } })).last_position end
    local payloads, out = done()
    assert.truthy(#payloads >= 1, out)
    assert.truthy(#payloads < 200, "not coalesced: " .. #payloads)
    assert.equal(last, payloads[#payloads])
    es:close()
  end)

  it("notifies inside the transaction with notify_in_tx", function()
    local es = assert(db:events{ table = "ev_notify", notify = "ev_chan_tx", notify_in_tx = true })
    local done = listen("ev_chan_tx", 3)
    assert(T.eventually(function() return listeners() > 0 end))
    local positions = {}
    for i = 1, 5 do positions[i] = assert(es:append("tx", { { type = "E" } })).last_position end
    assert.same(positions, (done()))
    es:close()
  end)

  it("wakes listeners at commit for appends inside db:transaction, never for a rollback", function()
    local es = assert(db:events{ table = "ev_notify", notify = "ev_chan_dbtx" })
    local done = listen("ev_chan_dbtx", 4)
    assert(T.eventually(function() return listeners() > 0 end))
    assert.is_nil(db:transaction(function(tx)
      assert(es:append("gone", { { type = "E" } }, { tx = tx }))
      return nil, "changed my mind"
    end))
    local last = assert(db:transaction(function(tx)
      local res
      for i = 1, 5 do res = assert(es:append("txn", { { type = "E", data = { i = i } } }, { tx = tx })) end
      return res.last_position
    end))
    local payloads, out = done()
    assert.truthy(#payloads >= 1, out)
    assert.equal(last, payloads[#payloads])
    for _, p in ipairs(payloads) do assert.truthy(p >= last - 4, "a rolled-back append notified: " .. out) end
    es:close()
  end)

  it("a subscriber sees an append made in another process's transaction without waiting for its poll", function()
    local es = assert(db:events{ table = "ev_notify", notify = "ev_chan_sub" })
    local name = T.unique("txsub")
    local sub = assert(db:subscribe{ name = name, events = es, from = "end", poll = 60 })
    assert.same({}, sub:next(0.2))
    local p = T.spawn([[
      local es = assert(db:events{ table = "ev_notify", notify = "ev_chan_sub" })
      assert(db:transaction(function(tx)
        assert(es:append("from-tx", { { type = "E" } }, { tx = tx }))
        assert(es:append("from-tx", { { type = "E" } }, { tx = tx }))
        return true
      end))
      print("committed")
    ]])
    local t0 = require("pgstore.core").now()
    local got = {}
    while #got < 2 and require("pgstore.core").now() - t0 < 10 do
      for _, e in ipairs(assert(sub:next(10))) do got[#got + 1] = e end
    end
    local waited = require("pgstore.core").now() - t0
    local out = T.wait(p, 10)
    assert.matches("committed", out)
    assert.equal(2, #got)
    assert.equal("from-tx", got[1].stream)
    -- the poll is 60 s: only the NOTIFY delivered at commit can wake it this soon
    assert.truthy(waited < 8, ("waited %.1f s"):format(waited))
    print(("\n  appends in a transaction: the subscriber (poll 60 s) woke %.2f s after the writer started"):format(waited))
    sub:close()
    es:close()
  end)

  it("sends nothing with notify = false", function()
    local es = assert(db:events{ table = "ev_notify", notify = false })
    local done = listen("pgstore_events", 1)
    assert(T.eventually(function() return listeners() > 0 end))
    assert(es:append("quiet", { { type = "E" } }))
    assert.same({}, (done()))
    es:close()
  end)
end)
