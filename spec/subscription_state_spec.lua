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
-- state machine must read it). A save inside tx (a table) is seen by that
-- tx only, until s.commit(tx).
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
    local seen = s.value
    if tx and tx.written then seen = tx.value end
    local applies
    if expected == false then applies = seen == nil else applies = seen == expected end
    if outcome == "lost_before" then
      return nil, { code = "connection", message = "connection lost, outcome unknown" }
    end
    if applies then
      if tx then tx.written, tx.value = true, cursor else s.value = cursor end
      seen = cursor
    end
    if outcome == "lost_after" then
      return nil, { code = "connection", message = "connection lost, outcome unknown" }
    end
    if not applies then
      local err = { code = "conflict", message = "checkpoint moved" }
      if report_actual and expected and seen then err.expected, err.actual = expected, seen end
      return nil, err
    end
    return true
  end
  function s.commit(tx)
    if tx.written then s.value = tx.value end
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

    it("stores the end at once, so a restart before the first ack starts there too", function()
      local cp = checkpoint(nil)
      local st = open(cp, "end")
      assert.equal(99, st.cursor)
      assert.is_true(st.stored)
      assert.equal(99, cp.value)
      -- someone stored one first: theirs wins
      local other = checkpoint(nil)
      other.next_outcomes = {}
      local save = other.save
      other.save = function(c, e, tx) other.value = 50 return save(c, e, tx) end
      st = open(other, "end")
      assert.equal(50, st.cursor)
      assert.is_true(st.stored)
    end)

    it("refuses a `from` cursor that is no position with `invalid`, before reading anything", function()
      for _, from in ipairs{ -7, 1.5, 0 / 0, math.huge, 1e300, 2 ^ 53 + 2, "17" } do
        local cp = checkpoint(3)
        local st, err = state.open{ load = cp.load, save = cp.save, from = from }
        assert.is_nil(st)
        assert.equal("invalid", err.code, tostring(from))
        assert.equal(0, cp.loads)
      end
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
      st:delivered(10)
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
            st:delivered(40)
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
    st:delivered(50)
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
    st:delivered(50)
    cp.next_outcomes = { outcome }
    assert.equal("connection", select(2, st:ack(20)).code)
    return cp, st
  end

  it("adopts an unknown ack that landed late, after the checkpoint was read back", function()
    local cp, st = after_unknown_ack(false, "lost_before")
    assert.equal(10, st:rewind())  -- the write has not landed yet
    cp.value = 20                  -- now it does
    st:delivered(30)
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
      st:delivered(20)
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

    it("compares a later ack in the same transaction with the earlier one, not the committed checkpoint", function()
      local cp = checkpoint(10, true)
      local st = open(cp)
      st:delivered(30)
      local tx = {}
      assert(st:ack(20, tx))
      assert(st:ack(25, tx))
      assert(st:ack(30, tx))
      assert(st:ack(30, tx)) -- the same cursor again
      assert.equal(10, cp.value)
      cp.commit(tx)
      st:committed()
      assert.equal(30, cp.value)
      assert.equal(30, st.acked)
      assert.is_false(st:unacked())
    end)

    it("refuses an ack behind an earlier one of the same transaction", function()
      local cp = checkpoint(10, true)
      local st = open(cp)
      st:delivered(30)
      local tx = {}
      assert(st:ack(30, tx))
      local saves = cp.saves
      local ok, err = st:ack(20, tx)
      assert.is_nil(ok)
      assert.equal("invalid", err.code)
      assert.equal(saves, cp.saves)
    end)

    it("compares an ack in a new transaction with the committed checkpoint", function()
      local cp = checkpoint(10, true)
      local st = open(cp)
      st:delivered(20)
      assert(st:ack(20, {}))   -- that transaction rolled back, unreported
      local tx = {}
      assert(st:ack(20, tx))   -- its retry
      cp.commit(tx)
      st:committed()
      assert.equal(20, cp.value)
    end)

    -- ack(20, tx), the COMMIT's outcome is unknown, and rolled_back cannot
    -- read the checkpoint. `committed`: whether the COMMIT had landed.
    local function doubtful_commit(committed)
      local cp = checkpoint(10, true)
      local st = open(cp)
      st:delivered(20)
      local tx = {}
      assert(st:ack(20, tx))
      if committed then cp.commit(tx) end
      cp.load_fails = true
      local cursor, err = st:rolled_back({ code = "connection", message = "COMMIT: connection lost" })
      assert.is_nil(cursor)
      assert.equal("connection", err.code)
      assert.equal(10, st.cursor) -- never past the stored checkpoint
      assert.is_true(st:unacked() == false)
      return cp, st
    end

    it("rolled_back that cannot read the checkpoint leaves the cursor at the last acked one", function()
      local cp, st = doubtful_commit(false)
      cp.load_fails = false
      st:delivered(20)            -- the same batch, delivered again
      local tx = {}
      assert(st:ack(20, tx))
      cp.commit(tx)
      st:committed()
      assert.equal(20, cp.value)
    end)

    it("the next ack reads the checkpoint first: it cannot pass while it cannot be read", function()
      local cp, st = doubtful_commit(true)
      st:delivered(20)
      local saves = cp.saves
      local ok, err = st:ack(20, {})
      assert.is_nil(ok)
      assert.equal("connection", err.code)
      assert.equal(saves, cp.saves)
    end)

    it("the next ack finds that the doubtful transaction committed: conflict, and on from there", function()
      local cp, st = doubtful_commit(true)
      cp.load_fails = false
      st:delivered(20)            -- delivered again, already applied by the commit that landed
      local saves = cp.saves
      local ok, err = st:ack(20, {})
      assert.is_nil(ok)
      assert.equal("conflict", err.code)
      assert.equal(saves, cp.saves)
      assert.equal(20, st.cursor)
      assert.equal(20, st:rolled_back(err))
      st:delivered(30)
      assert(st:ack(30))
      assert.equal(30, cp.value)
    end)
  end)

  describe("refuses an ack it cannot cover with `invalid`, writing nothing", function()
    local function refused(st, cp, cursor, stored)
      local saves = cp.saves
      local ok, err = st:ack(cursor)
      assert.is_nil(ok)
      assert.equal("invalid", err.code, tostring(cursor))
      assert.equal(saves, cp.saves)
      assert.equal(stored, cp.value)
    end

    it("a cursor beyond what was delivered", function()
      local cp = checkpoint(0, true)
      local st = open(cp)
      st:delivered(10)
      refused(st, cp, 25, 0)
      assert(st:ack(10))
    end)

    it("a cursor behind the last ack", function()
      local cp = checkpoint(0, true)
      local st = open(cp)
      st:delivered(30)
      assert(st:ack(30))
      refused(st, cp, 5, 30)
      assert(st:ack(30)) -- the same again is fine
    end)

    it("a value that is no position", function()
      local cp = checkpoint(0, true)
      local st = open(cp)
      st:delivered(10)
      for _, v in ipairs{ -1, 1.5, 0 / 0, math.huge } do refused(st, cp, v, 0) end
    end)

    it("yet acks again after an explicit rewind to a checkpoint moved back", function()
      local cp = checkpoint(0, true)
      local st = open(cp)
      st:delivered(30)
      assert(st:ack(30))
      cp.value = 10 -- reset by hand
      assert.equal(10, st:rewind())
      st:delivered(20)
      assert(st:ack(20))
      assert.equal(20, cp.value)
    end)

    it("an ack below what an unknown ack turned out to store", function()
      local cp = checkpoint(10, true)
      local st = open(cp)
      st:delivered(30)
      cp.next_outcomes = { "lost_after" }
      assert.equal("connection", select(2, st:ack(30)).code) -- landed: 30
      local ok, err = st:ack(20)
      assert.is_nil(ok)
      assert.equal("invalid", err.code)
      assert.equal(30, cp.value)
    end)
  end)

  -- The decision the module's header explains: outside a transaction an
  -- unknown ack cannot be told from another process storing the same cursor.
  it("takes another consumer's checkpoint at the cursor of its own unknown ack as its own", function()
    local cp, st = checkpoint(10, true), nil
    st = open(cp)
    st:delivered(20)
    cp.next_outcomes = { "lost_before" }
    assert.equal("connection", select(2, st:ack(20)).code)
    cp.value = 20 -- the other process, which was delivered 11..20 as well
    st:delivered(30)
    assert(st:ack(30))
    assert.equal(30, cp.value)
  end)

  it("rewinds the delivery cursor to the stored checkpoint, read back", function()
    local cp = checkpoint(10, true)
    local st = open(cp)
    st:delivered(50)
    cp.value = 30
    assert.equal(30, st:rewind())
    assert.equal(30, st.cursor)
    st:delivered(40)
    assert(st:ack(40))
  end)

  it("measures lag from the stored checkpoint", function()
    local st = open(checkpoint(10))
    assert.equal(5, st:lag(15))
    assert.equal(0, st:lag(3))
  end)
end)
