-- SPDX-License-Identifier: MIT
-- The subscription state machine (lua/pgstore/subscription_state.lua) on
-- its own: a checkpoint kept in a Lua table stands for the store, with
-- compare-and-set saves that can end each way a real one does (ok,
-- conflict, connection lost before or after the write). The same machine
-- runs against PostgreSQL in spec/subscribe_spec.lua, spec/fault_cut_spec.lua
-- and, inside nginx, spec/nginx_spec.lua.
local state = require "pgstore.subscription_state"

-- A checkpoint with the save contract of cp:save(name, cursor, { expected }):
-- expected = a cursor or false (none stored). s.next_outcomes lists how the
-- next saves end: "ok" (as the compare-and-set says), "lost_before" (the
-- write never arrived), "lost_after" (it was applied, the answer was lost).
-- report_actual = false: a conflict does not say what is stored (the
-- state machine must read it).
local function checkpoint(value, report_actual)
  local s = { value = value, next_outcomes = {}, loads = 0, saves = 0 }
  function s.load()
    s.loads = s.loads + 1
    if s.load_fails then return nil, { code = "connection", message = "load: connection lost" } end
    return s.value
  end
  function s.save(cursor, expected, tx)
    s.saves = s.saves + 1
    s.last_tx = tx
    local outcome = table.remove(s.next_outcomes, 1) or "ok"
    local applies
    if expected == false then applies = s.value == nil else applies = s.value == expected end
    if outcome == "lost_before" then
      return nil, { code = "connection", message = "connection lost, outcome unknown" }
    end
    if applies then s.value = cursor end
    if outcome == "lost_after" then
      return nil, { code = "connection", message = "connection lost, outcome unknown" }
    end
    if not applies then
      local err = { code = "conflict", message = "checkpoint moved" }
      if report_actual and expected and s.value then err.expected, err.actual = expected, s.value end
      return nil, err
    end
    return true
  end
  return s
end

local function open(cp, from)
  return assert(state.open{ load = cp.load, save = cp.save, from = from,
                            latest = function() return 99 end })
end

describe("subscription state", function()
  describe("open", function()
    it("starts at the stored checkpoint, whatever `from` says", function()
      local st = open(checkpoint(7), "end")
      assert.equal(7, st.cursor)
      assert.is_true(st.stored)
    end)

    it("starts at `from` when nothing is stored: start, end (the latest position) or a cursor", function()
      assert.equal(0, open(checkpoint(nil), "start").cursor)
      assert.equal(99, open(checkpoint(nil), "end").cursor)
      assert.equal(42, open(checkpoint(nil), 42).cursor)
      assert.is_false(open(checkpoint(nil), 42).stored)
    end)

    it("returns the load's error", function()
      local cp = checkpoint(3)
      cp.load_fails = true
      local st, err = state.open{ load = cp.load, save = cp.save }
      assert.is_nil(st)
      assert.equal("connection", err.code)
    end)

    it("expects no checkpoint on the first ack when none was stored", function()
      local cp = checkpoint(nil)
      local st = open(cp, 5)
      cp.value = 8 -- another consumer stored one meanwhile
      local ok, err = st:ack(10)
      assert.is_nil(ok)
      assert.equal("conflict", err.code)
      assert.equal(8, cp.value)
    end)
  end)

  -- Each case: stored checkpoint 10; `before` may move it as another
  -- consumer would; ack(20) ends as `first` says; `between` may move it;
  -- then ack(30). What each ack returns, and where the checkpoint ends.
  local CASES = {
    { name = "ok", first = "ok", first_err = nil, second_err = nil, stored = 30 },
    { name = "conflict", before = 15, first = "ok", first_err = "conflict",
      second_err = "conflict", stored = 15 },
    { name = "unknown outcome, it committed", first = "lost_after", first_err = "connection",
      second_err = nil, stored = 30 },
    { name = "unknown outcome, it did not commit", first = "lost_before", first_err = "connection",
      second_err = nil, stored = 30 },
    { name = "unknown outcome, someone else moved it", first = "lost_before", between = 25,
      first_err = "connection", second_err = "conflict", stored = 25 },
    { name = "unknown outcome, it committed, then someone else moved it", first = "lost_after",
      between = 25, first_err = "connection", second_err = "conflict", stored = 25 },
  }

  for _, report_actual in ipairs{ true, false } do
    local how = report_actual and "the conflict says what is stored" or "the checkpoint is read back"
    describe("ack (" .. how .. ")", function()
      for _, c in ipairs(CASES) do
        it(c.name, function()
          local cp = checkpoint(10, report_actual)
          local st = open(cp)
          st:delivered(20)
          if c.before then cp.value = c.before end
          cp.next_outcomes = { c.first }
          local ok, err = st:ack(20)
          assert.equal(c.first_err == nil, ok == true)
          assert.equal(c.first_err, err and err.code)
          if c.between then cp.value = c.between end
          st:delivered(30)
          ok, err = st:ack(30)
          assert.equal(c.second_err == nil, ok == true, err and err.message)
          assert.equal(c.second_err, err and err.code)
          assert.equal(c.stored, cp.value)
          if not c.second_err then
            assert.equal(30, st.acked)
            assert.is_false(st:unacked())
            -- and the machine goes on from there
            assert(st:ack(40))
            assert.equal(40, cp.value)
          end
        end)
      end
    end)
  end

  it("settles several unknown outcomes in a row: the last that landed counts", function()
    local cp = checkpoint(10, true)
    local st = open(cp)
    cp.next_outcomes = { "lost_after", "ok", "lost_after", "lost_before" }
    assert.equal("connection", select(2, st:ack(20)).code) -- landed: 20
    assert.equal("connection", select(2, st:ack(30)).code) -- conflict at 20, adopted, landed: 30
    assert.equal("connection", select(2, st:ack(40)).code) -- never arrived
    assert(st:ack(50))
    assert.equal(50, cp.value)
  end)

  -- Checkpoint 10, then ack(20) ends with `outcome` (connection lost).
  local function after_unknown_ack(report_actual, outcome)
    local cp = checkpoint(10, report_actual)
    local st = open(cp)
    cp.next_outcomes = { outcome }
    assert.equal("connection", select(2, st:ack(20)).code)
    return cp, st
  end

  it("adopts an unknown ack that landed late, after the checkpoint was read back", function()
    local cp, st = after_unknown_ack(false, "lost_before")
    assert.equal(10, st:rewind())  -- the write has not landed yet
    cp.value = 20                  -- now it does
    assert(st:ack(30))
    assert.equal(30, cp.value)
  end)

  it("keeps an unknown outcome unsettled while the checkpoint cannot be read", function()
    local cp, st = after_unknown_ack(false, "lost_after")
    cp.load_fails = true
    local ok, err = st:ack(30)
    assert.is_nil(ok)
    assert.equal("connection", err.code)
    cp.load_fails = false
    assert(st:ack(30))
    assert.equal(30, cp.value)
  end)

  it("does not take another consumer's checkpoint for an ack of its own once an ack succeeded", function()
    local cp, st = after_unknown_ack(true, "lost_before")
    assert(st:ack(30))
    cp.value = 20 -- another consumer, at the cursor of the old unknown ack
    local ok, err = st:ack(40)
    assert.is_nil(ok)
    assert.equal("conflict", err.code)
  end)

  describe("inside a transaction", function()
    it("counts the checkpoint as stored only after committed()", function()
      local cp = checkpoint(10, true)
      local st = open(cp)
      local tx = {}
      st:delivered(20)
      assert(st:ack(20, tx))
      assert.equal(tx, cp.last_tx)
      assert.equal(10, st.acked)
      assert.is_true(st:unacked())
      st:committed()
      assert.equal(20, st.acked)
      assert.is_false(st:unacked())
    end)

    it("a lost connection is a rollback, not an unknown outcome", function()
      local cp = checkpoint(10, true)
      local st = open(cp)
      cp.next_outcomes = { "lost_before" }
      assert.equal("connection", select(2, st:ack(20, {})).code)
      assert.is_nil(st.unsure)
    end)

    -- rolled_back(err): what the transaction's failure means for the cursor
    local ROLLBACKS = {
      { name = "another consumer moved the checkpoint", code = "conflict", stored = 15, goes_on = 15 },
      { name = "the commit's outcome is unknown and it committed", code = "connection", stored = 20,
        goes_on = 20 },
      { name = "the commit's outcome is unknown and it did not commit", code = "connection", stored = 10,
        goes_on = 10 },
      { name = "a timeout", code = "timeout", stored = 10, goes_on = nil },
      { name = "a handler failed", code = "invalid", stored = 10, goes_on = nil },
    }
    for _, c in ipairs(ROLLBACKS) do
      it("rolled_back: " .. c.name, function()
        local cp = checkpoint(10, true)
        local st = open(cp)
        st:delivered(20)
        assert(st:ack(20, {}))
        cp.value = c.stored
        local cursor, err = st:rolled_back({ code = c.code })
        assert.equal(c.goes_on, cursor)
        if c.goes_on then
          assert.equal(c.goes_on, st.cursor)
          assert.equal(c.goes_on, st.acked)
        else
          assert.equal(c.code, err.code)
          assert.equal(10, st.cursor) -- rewound all the same
        end
        st:committed() -- a stale pending ack is gone
        assert.equal(c.goes_on or 10, st.acked)
      end)
    end

    it("rolled_back: a checkpoint that cannot be read is the read's error", function()
      local cp = checkpoint(10, true)
      local st = open(cp)
      cp.load_fails = true
      local cursor, err = st:rolled_back({ code = "connection" })
      assert.is_nil(cursor)
      assert.equal("load: connection lost", err.message)
    end)
  end)

  it("rewinds the delivery cursor to the stored checkpoint, read back", function()
    local cp = checkpoint(10, true)
    local st = open(cp)
    st:delivered(50)
    cp.value = 30
    assert.equal(30, st:rewind())
    assert.equal(30, st.cursor)
    assert(st:ack(40))
  end)

  it("measures lag from the stored checkpoint", function()
    local st = open(checkpoint(10))
    assert.equal(5, st:lag(15))
    assert.equal(0, st:lag(3))
  end)
end)
