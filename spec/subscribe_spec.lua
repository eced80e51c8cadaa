-- SPDX-License-Identifier: MIT
-- Subscriptions: catch-up then live from a stored checkpoint, resuming
-- after a restart, waking on NOTIFY, polling without it, and 100,000 events
-- from 8 concurrent writer processes delivered exactly once while the
-- LISTEN connection is terminated twice mid-stream.
local core = require "pgstore.core"
local proxy = require "proxy"
local T = require "testenv"

describe("subscriptions", function()
  local db, es, name
  setup(function() db = T.connect{ pool_size = 3 } end)
  teardown(function()
    db:close()
    T.assert_no_leaks()
  end)
  before_each(function()
    name = T.unique("sub_ev")
    es = assert(db:events{ table = name, notify = name })
  end)
  after_each(function() es:close() end)

  local function append(stream, n)
    local batch = {}
    for i = 1, n do batch[i] = { type = "E", data = { i = i } } end
    return assert(es:append(stream, batch))
  end

  it("catches up from the start, then returns new events, and resumes after its checkpoint", function()
    append("a", 5)
    local sub = assert(db:subscribe{ name = name, events = es, batch = 3 })
    local got = {}
    for _ = 1, 2 do for _, e in ipairs(assert(sub:next(0))) do got[#got + 1] = e.data.i end end
    assert.same({ 1, 2, 3, 4, 5 }, got)
    assert.same({}, sub:next(0))
    assert(sub:ack(5))
    append("a", 2)
    local more = assert(sub:next(1))
    assert.equal(2, #more)
    sub:close()
    -- a new subscription with the same name starts after the checkpoint
    sub = assert(db:subscribe{ name = name, events = es })
    local again = assert(sub:next(0))
    assert.equal(2, #again)
    assert.equal(6, again[1].position)
    assert.equal(2, sub:lag())
    sub:close()
  end)

  it("starts at the end when asked and has no lag then", function()
    append("b", 4)
    local sub = assert(db:subscribe{ name = name, events = es, from = "end" })
    assert.same({}, sub:next(0))
    assert.equal(0, sub:lag())
    append("b", 1)
    assert.equal(5, sub:next(1)[1].position)
    sub:close()
  end)

  it("wakes on NOTIFY well before its poll interval", function()
    local sub = assert(db:subscribe{ name = name, events = es, poll = 5 })
    assert.same({}, sub:next(0))
    local writer = T.spawn(([[
      local es = assert(db:events{ table = %q, notify = %q })
      require("pgstore.core").sleep(0.3)
      assert(es:append("late", { { type = "E" } }))
    ]]):format(name, name))
    local t0 = core.now()
    local rows = assert(sub:next(4))
    local waited = core.now() - t0
    T.wait(writer, 5)
    assert.equal(1, #rows)
    assert.truthy(waited < 2, ("woke after %.2fs"):format(waited))
    sub:close()
  end)

  it("polls when it cannot listen", function()
    local quiet = assert(db:events{ table = name, notify = false })
    local sub = assert(db:subscribe{ name = name, events = quiet, poll = 0.1 })
    assert.is_nil(sub.listener)
    append("c", 1)
    assert.equal(1, #assert(sub:next(1)))
    sub:close()
    quiet:close()
  end)

  it("stores the checkpoint inside a transaction with the effects", function()
    append("d", 3)
    local sub = assert(db:subscribe{ name = name, events = es })
    local rows = assert(sub:next(0))
    local ok = db:transaction(function(tx)
      assert(sub:ack(rows[#rows].position, tx))
      return nil, "changed my mind"
    end)
    assert.is_nil(ok)
    assert.equal(0, sub:rewind())
    local cp = assert(db:checkpoints{ store = es })
    assert.is_nil(cp:load(name)) -- rolled back with the transaction
    rows = assert(sub:next(0))   -- delivered again from there
    assert(db:transaction(function(tx) return sub:ack(rows[#rows].position, tx) end))
    sub:committed()
    assert.equal(3, cp:load(name))
    cp:close()
    sub:close()
  end)

  it("refuses a second runner's stale ack with 'conflict'", function()
    append("e", 2)
    local one = assert(db:subscribe{ name = name, events = es })
    local two = assert(db:subscribe{ name = name, events = es })
    assert(one:next(0))
    assert(two:next(0))
    assert(one:ack(2))
    local ok, err = two:ack(2)
    assert.is_nil(ok)
    assert.equal("conflict", err.code)
    one:close()
    two:close()
  end)

  it("acks each event of a batch in one transaction, each against the one before", function()
    append("t", 6)
    local sub = assert(db:subscribe{ name = name, events = es, batch = 3, listen = false })
    for _ = 1, 2 do
      local rows = assert(sub:next(0))
      assert.equal(3, #rows)
      assert(db:transaction(function(tx)
        for _, e in ipairs(rows) do assert(sub:ack(e.position, tx)) end
        return sub:ack(rows[#rows].position, tx) -- the same cursor again
      end))
      sub:committed()
    end
    local cp = assert(db:checkpoints{ store = es })
    assert.equal(6, cp:load(name))
    assert.same({}, sub:next(0))
    cp:close()
    sub:close()
  end)

  it("refuses with `invalid` an ack past what was delivered or behind the last ack, storing nothing", function()
    append("v", 30)
    local cp = assert(db:checkpoints{ store = es })
    local sub = assert(db:subscribe{ name = name, events = es, batch = 10, listen = false })
    assert.equal(10, #assert(sub:next(0)))
    local ok, err = sub:ack(25)
    assert.is_nil(ok)
    assert.equal("invalid", err.code)
    assert.is_nil(cp:load(name))
    assert(sub:ack(10))
    assert.equal(20, #assert(sub:next(0)) + #assert(sub:next(0)))
    assert(sub:ack(30))
    ok, err = sub:ack(5)
    assert.is_nil(ok)
    assert.equal("invalid", err.code)
    assert.equal(30, cp:load(name))
    -- an explicit rewind still goes back to the stored checkpoint
    assert(cp:save(name, 12))
    assert.equal(12, sub:rewind())
    assert.equal(13, assert(sub:next(0))[1].position)
    cp:close()
    sub:close()
  end)

  it("refuses a `from` cursor that is no position with `invalid` when subscribing", function()
    for _, from in ipairs{ -7, 1.5 } do
      local sub, err = db:subscribe{ name = name, events = es, from = from, listen = false }
      assert.is_nil(sub)
      assert.equal("invalid", err.code)
    end
  end)

  it("refuses a NaN timeout with `invalid` instead of polling forever", function()
    local sub = assert(db:subscribe{ name = name, events = es, listen = false })
    local t0 = core.now()
    local rows, err = sub:next(0 / 0)
    assert.is_nil(rows)
    assert.equal("invalid", err.code)
    assert.truthy(core.now() - t0 < 1)
    sub:close()
  end)

  -- A batch's transaction fails with `connection` (its COMMIT lost, as far
  -- as the subscriber knows) and the checkpoint cannot be read back then:
  -- the subscriber logs it and goes on. Whether the COMMIT had landed or
  -- not, every event is applied exactly once.
  for _, landed in ipairs{ false, true } do
    it("goes on once after a commit of unknown outcome it could not read back (" ..
       (landed and "it committed" or "it did not commit") .. ")", function()
      local P = proxy.start{ lifetime = 60 }
      local pdb = T.connect{ dsn = P.dsn, pool_size = 1 }
      local cp = assert(pdb:checkpoints{ store = es })
      append("u", 20)
      assert(db:exec(("create table %s_applied (position bigint not null)"):format(name)))
      local sub = assert(db:subscribe{ name = name, events = es, batch = 10, listen = false, checkpoints = cp })
      local function apply(rows, lost)
        return db:transaction(function(tx)
          for _, e in ipairs(rows) do
            assert(tx:exec(("insert into %s_applied values ($1)"):format(name), e.position))
          end
          local acked, aerr = sub:ack(rows[#rows].position, tx)
          if not acked then return nil, aerr end
          if lost and not landed then return nil, { code = "connection", message = "COMMIT lost" } end
          return true
        end)
      end
      local ok, err = apply(assert(sub:next(0)), true)
      if landed then err = { code = "connection", message = "COMMIT lost" } end
      assert.is_true(landed == (ok == true))
      P:down(true)
      local cursor, rerr = sub:rolled_back(err)
      assert.is_nil(cursor)
      assert.equal("connection", rerr.code)
      assert.equal(0, sub:position()) -- not past the batch in doubt
      P:down(false)
      for _ = 1, 5 do -- the loop goes on
        local rows = assert(sub:next(0))
        if #rows == 0 then break end
        ok, err = apply(rows)
        if ok then
          sub:committed()
        else
          assert.equal("conflict", err.code, tostring(err))
          assert(sub:rolled_back(err))
        end
      end
      local r = assert(db:query(("select count(*)::int as n, count(distinct position)::int as once from %s_applied")
        :format(name)))[1]
      assert.same({ n = 20, once = 20 }, r)
      assert.equal(20, cp:load(name))
      assert(db:exec(("drop table %s_applied"):format(name)))
      sub:close()
      cp:close()
      pdb:close()
      P:stop()
    end)
  end

  it("raises on misuse", function()
    assert.has_error(function() db:subscribe() end)
    assert.has_error(function() db:subscribe{ events = es } end)
    assert.has_error(function() db:subscribe{ name = "x", events = {} } end)
    assert.equal("invalid", select(2, db:subscribe{ name = "x", events = es, from = "middle" }).code)
    local sub = assert(db:subscribe{ name = name, events = es })
    assert.has_error(function() sub:next("soon") end)
    sub:close()
    assert.has_error(function() sub:next(0) end, "attempt to use a closed subscription")
  end)

  it("delivers 100,000 events from 8 writers exactly once across two LISTEN terminations", function()
    local total, writers = 100000, 8
    local per = total / writers
    local procs = {}
    for w = 1, writers do
      procs[w] = T.spawn(([[
        local es = assert(db:events{ table = %q, notify = %q })
        local w = tonumber(arg[1])
        for b = 1, %d do
          local batch = {}
          for i = 1, 50 do batch[i] = { type = "E", data = { w = w, n = (b - 1) * 50 + i } } end
          assert(es:append("w" .. w .. "-" .. (b %% 20), batch))
        end
        print("done")
      ]]):format(name, name, per / 50), w)
    end
    local sub = assert(db:subscribe{ name = name, events = es, batch = 2000, poll = 0.5 })
    local seen, count, kills, last_pid = {}, 0, 0, nil
    local deadline = core.now() + 120
    while count < total and core.now() < deadline do
      local rows = assert(sub:next(1))
      for _, e in ipairs(rows) do
        local key = e.data.w * 1e6 + e.data.n
        assert.is_nil(seen[key], "delivered twice: writer " .. e.data.w .. " event " .. e.data.n)
        seen[key] = true
        count = count + 1
      end
      if #rows > 0 then assert(sub:ack(rows[#rows].position)) end
      -- Terminate the listener's backend at 30k and again at 65k events,
      -- each time once it is connected again (it reconnects inside next()).
      local st = sub.listener:stats()
      if ((kills == 0 and count >= 30000) or (kills == 1 and count >= 65000))
         and st.connected and st.pid ~= last_pid then
        assert.is_true(T.admin():query("select pg_terminate_backend($1) as ok", st.pid)[1].ok)
        last_pid = st.pid
        kills = kills + 1
      end
    end
    for w = 1, writers do assert.matches("done", (T.wait(procs[w], 60))) end
    assert.equal(2, kills)
    assert.equal(total, count)
    assert.truthy(sub.reconnects >= 1, "the subscriber never saw its listener reconnect")
    sub:close()
  end)
end)
