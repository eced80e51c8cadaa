-- SPDX-License-Identifier: MIT
-- Aggregates: loading (snapshot + newer events, handlers, unknown types,
-- gaps left by retention, stale snapshots), executing commands (expected
-- version, refusals, conflicts and bounded retries, idempotency keys,
-- guards, snapshots by count and by policy), and several processes
-- executing on one stream at once: every command applied exactly once,
-- no lost update.
local pgstore = require "pgstore"
local S = require "stores"
local T = require "testenv"

local function counter(es, ss, extra)
  local opts = {
    events = es, snapshots = ss,
    initial = function() return { n = 0, sum = 0 } end,
    apply = {
      Added = function(s, e) s.n = s.n + 1; s.sum = s.sum + e.data.amount; s.last_time = e.time end,
      Reset = function(_, e) return { n = 0, sum = 0, reset_at = e.version } end,
    },
  }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return pgstore.aggregate(opts)
end

local function add(amount) return { type = "Added", data = { amount = amount } } end

describe("aggregate", function()
  local db, es, ss
  setup(function()
    db = T.connect{ pool_size = 3 }
    es = assert(db:events{ table = "agg_spec", notify = false })
    ss = assert(db:snapshots{ table = "agg_spec_snap" })
  end)
  before_each(function()
    es.guard = nil
    es:upcast(nil)
    assert(es:truncate())
    assert(ss:invalidate_all())
  end)
  teardown(function()
    es:close()
    ss:close()
    db:close()
    T.assert_no_leaks()
  end)

  describe("creating", function()
    local bad = {
      { "no options", nil, "options table expected" },
      { "no events", { initial = print, apply = {} }, "option 'events' must be an event store" },
      { "no initial", { apply = {} }, "option 'initial'" },
      { "no apply", { initial = print }, "option 'apply'" },
      { "a handler that is not a function", { initial = print, apply = { A = 1 } }, "must map event types to functions %(A = number%)" },
      { "snapshot_every without a store", { initial = print, apply = {}, snapshot_every = 5 }, "needs a snapshot store" },
      { "an unknown option", { initial = print, apply = {}, retry = 3 }, "unknown option 'retry'" },
      { "a policy that is not a set", { initial = print, apply = {}, policy = {} }, "option 'policy'" },
    }
    it("refuses a bad retries with 'invalid'", function()
      local agg, err = pgstore.aggregate{ events = es, initial = print, apply = {}, retries = -1 }
      assert.is_nil(agg)
      assert.equal("invalid", err.code)
      assert.matches("retries", err.message)
    end)
    for _, c in ipairs(bad) do
      it("raises for " .. c[1], function()
        local opts = c[2]
        if opts and c[1] ~= "no events" then opts.events = es end
        local ok, err = pcall(pgstore.aggregate, opts)
        assert.is_false(ok)
        assert.matches("bad argument #1 to 'aggregate'", err)
        assert.matches(c[3], err)
      end)
    end
  end)

  describe("load", function()
    it("gives initial() and version 0 for a new stream", function()
      local s, v = counter(es):load("acct-0")
      assert.same({ n = 0, sum = 0 }, s)
      assert.equal(0, v)
    end)

    it("folds the events through the handlers, mutating or returning the state", function()
      assert(es:append("acct-1", { add(5), add(7), { type = "Reset" }, add(1) }))
      local s, v = counter(es):load("acct-1")
      assert.equal(4, v)
      assert.same({ n = 1, sum = 1, reset_at = 3, last_time = s.last_time }, s)
      assert.matches("^%d%d%d%d%-", s.last_time)
    end)

    it("reads long streams page by page", function()
      local evs = {}
      for i = 1, 25 do evs[i] = add(i) end
      assert(es:append("acct-long", evs))
      local s, v = counter(es, nil, { page = 4 }):load("acct-long")
      assert.equal(25, v)
      assert.equal(325, s.sum)
    end)

    it("refuses an event type without a handler, unless told to ignore it", function()
      assert(es:append("acct-2", { add(1), { type = "Renamed" }, add(2) }))
      local s, err = counter(es):load("acct-2")
      assert.is_nil(s)
      assert.equal("invalid", err.code)
      assert.equal("acct-2: no apply handler for event type 'Renamed' (version 2); add one or set ignore_unknown = true",
        err.message)
      local v
      s, v = counter(es, nil, { ignore_unknown = true }):load("acct-2")
      assert.equal(3, v)
      assert.equal(3, s.sum)
    end)

    it("starts from the latest snapshot and reads only the newer events", function()
      assert(es:append("acct-3", { add(1), add(2), add(3) }))
      -- a snapshot that replay could not produce proves it was used
      assert(ss:save("acct-3", 2, { n = 100, sum = 1000 }))
      local s, v = counter(es, ss):load("acct-3")
      assert.equal(3, v)
      assert.same({ n = 101, sum = 1003 }, { n = s.n, sum = s.sum })
    end)

    it("ignores a snapshot of another schema_version", function()
      assert(es:append("acct-4", { add(1), add(2) }))
      assert(ss:save("acct-4", 2, { n = 100, sum = 1000 }, { schema_version = 1 }))
      local s = counter(es, ss, { schema_version = 2 }):load("acct-4")
      assert.same({ 2, 3 }, { s.n, s.sum })
    end)

    it("reports events removed by retention that no snapshot covers", function()
      assert(es:append("acct-5", { add(1), add(2), add(3), add(4) }))
      assert(pgstore.policy{ streams = "acct-5", max_count = 2 }:apply(es))
      local s, err = counter(es, ss):load("acct-5")
      assert.is_nil(s)
      assert.equal("not_found", err.code)
      assert.matches("cannot load acct%-5: expected version 1, found 3", err.message)
      -- with a snapshot at version 2 it loads
      assert(ss:save("acct-5", 2, { n = 2, sum = 3 }))
      local v
      s, v = counter(es, ss):load("acct-5")
      assert.equal(4, v)
      assert.equal(10, s.sum)
    end)

    it("propagates handler errors and store errors", function()
      assert(es:append("acct-6", { add(1) }))
      local agg = pgstore.aggregate{ events = es, initial = function() return {} end,
                                     apply = { Added = function() error("handler broke") end } }
      assert.has_error(function() agg:load("acct-6") end)
      assert(es:tombstone("acct-6"))
      local s, err = counter(es):load("acct-6")
      assert.is_nil(s)
      assert.equal("deleted", err.code)
      assert.has_error(function() counter(es):load(42) end, "bad argument #1 to 'load' (stream name (string) expected, got number)")
    end)
  end)

  describe("execute", function()
    it("appends what the command returns with the version it saw", function()
      local agg = counter(es)
      local calls = {}
      local s, v, res = agg:execute("acct-10", function(state, version)
        calls[#calls + 1] = { state.n, version }
        return { add(5), add(6) }
      end)
      assert.equal(2, v)
      assert.equal(11, s.sum)
      assert.matches("^%d%d%d%d%-", s.last_time) -- the events as stored
      assert.equal(1, res.first_version)
      assert.equal(2, res.last_version)
      assert.equal(1, res.attempts)
      assert.same({ { 0, 0 } }, calls)
      s, v = agg:execute("acct-10", function() return add(1) end) -- one event
      assert.equal(3, v)
      assert.same(s, (agg:load("acct-10")))
    end)

    it("does nothing for a command that returns nothing", function()
      local agg = counter(es)
      assert(es:append("acct-11", { add(2) }))
      local s, v, res = agg:execute("acct-11", function() end)
      assert.equal(1, v)
      assert.equal(2, s.sum)
      assert.is_nil(res)
      s, v, res = agg:execute("acct-11", function() return {} end)
      assert.equal(1, v)
      assert.is_nil(res)
      assert.equal(1, es:version("acct-11"))
    end)

    it("refuses with the command's reason, and passes error tables on", function()
      local agg = counter(es)
      local s, err = agg:execute("acct-12", function(state)
        if state.sum < 10 then return nil, "insufficient funds" end
      end)
      assert.is_nil(s)
      assert.equal("rejected", err.code)
      assert.equal("insufficient funds", tostring(err))
      assert.equal("insufficient funds", err.reason)
      local mine = pgstore.errors.new("invalid", "amount must be positive")
      s, err = agg:execute("acct-12", function() return nil, mine end)
      assert.equal(mine, err)
      s, err = agg:execute("acct-12", function() return "oops" end)
      assert.equal("invalid", err.code)
      assert.matches("must return a list of events", err.message)
      s, err = agg:execute("acct-12", function() return { add(1), { type = "Unheard" } } end)
      assert.equal("invalid", err.code)
      assert.equal("acct-12: the command returned an event of type 'Unheard', which has no apply handler; nothing was appended",
        err.message)
      s, err = agg:execute("acct-12", function() return { { data = {} } } end)
      assert.equal("invalid", err.code)
      assert.matches("needs a type", err.message)
      assert.equal(0, es:version("acct-12"))
    end)

    it("re-runs the command on fresh state after a conflict", function()
      local agg = counter(es)
      local seen = {}
      local s, v, res = agg:execute("acct-13", function(state, version)
        seen[#seen + 1] = { n = state.n, version = version }
        if #seen == 1 then assert(es:append("acct-13", { add(100) })) end -- another writer gets in first
        return { add(1) }
      end)
      assert.same({ { n = 0, version = 0 }, { n = 1, version = 1 } }, seen)
      assert.equal(2, v)
      assert.equal(101, s.sum)
      assert.equal(2, res.attempts)
    end)

    it("gives up after the retries with the conflict", function()
      local agg = counter(es, nil, { retries = 2 })
      local calls = 0
      local s, err = agg:execute("acct-14", function()
        calls = calls + 1
        assert(es:append("acct-14", { add(1) }))
        return { add(1) }
      end)
      assert.is_nil(s)
      assert.equal("conflict", err.code)
      assert.equal(3, calls)
      assert.equal(3, err.attempts)
      assert.matches("gave up after 3 attempts", err.message)
      calls = 0
      s, err = agg:execute("acct-14", function()
        calls = calls + 1
        assert(es:append("acct-14", { add(1) }))
        return { add(1) }
      end, { retries = 0 })
      assert.equal("conflict", err.code)
      assert.equal(1, calls)
    end)

    it("answers a repeated idempotency key with the stream as it is", function()
      local agg = counter(es)
      local _, v1, r1 = agg:execute("acct-15", function() return { add(3) } end, { idempotency_key = "cmd-1" })
      assert.equal(1, v1)
      assert.is_false(r1.replayed)
      assert(es:append("acct-15", { add(4) }))
      local s, v, r2 = agg:execute("acct-15", function() return { add(3) } end, { idempotency_key = "cmd-1" })
      assert.is_true(r2.replayed)
      assert.equal(2, v)
      assert.equal(7, s.sum)
      assert.equal(2, es:version("acct-15"))
    end)

    it("returns a guard's rejection without retrying", function()
      pgstore.policy{ streams = "acct-*", guard = function(_, events)
        if events[1].data.amount > 100 then return nil, "amount over limit" end
        return true
      end }:install(es)
      local calls = 0
      local s, err = counter(es):execute("acct-16", function() calls = calls + 1; return { add(500) } end)
      assert.is_nil(s)
      assert.equal("rejected", err.code)
      assert.equal("amount over limit", err.reason)
      assert.equal(1, calls)
    end)

    it("saves a snapshot every snapshot_every events and loads from it", function()
      local agg = counter(es, ss, { snapshot_every = 3 })
      local saved = {}
      for i = 1, 8 do
        local _, _, res = assert(agg:execute("acct-17", function() return { add(i) } end))
        if res.snapshot then saved[#saved + 1] = res.snapshot end
      end
      assert.same({ 3, 6 }, saved)
      local snap = assert(ss:load("acct-17"))
      assert.equal(6, snap.version)
      assert.equal(21, snap.state.sum)
      -- a batch that crosses the mark saves too
      local _, v, res = agg:execute("acct-17", function() return { add(1), add(1), add(1) } end)
      assert.equal(11, v)
      assert.equal(11, res.snapshot)
      local s = agg:load("acct-17")
      local replay = counter(es):load("acct-17")
      assert.same(replay, s)
    end)

    it("reports a snapshot it could not save beside the committed result", function()
      local agg = counter(es, ss, { snapshot_every = 1 })
      local s, v, res = agg:execute("acct-21", function()
        return { { type = "Added", data = { amount = 1 } } }
      end)
      assert.equal(1, res.snapshot)
      -- a state JSON cannot hold
      local bad = pgstore.aggregate{ events = es, snapshots = ss, snapshot_every = 1,
        initial = function() return {} end, apply = { Added = function(st) st.fn = print end } }
      s, v, res = bad:execute("acct-21", function() return { add(1) } end)
      assert.equal(2, v)
      assert.is_nil(res.snapshot)
      assert.equal("invalid", res.snapshot_error.code)
      assert.equal(2, es:version("acct-21"))
      assert.equal(1, ss:load("acct-21").version)
    end)

    it("follows the policy's snapshot_every when it has none of its own", function()
      local set = pgstore.policies{ { streams = "acct-vip-*", snapshot_every = 2 }, { streams = "*" } }
      local agg = counter(es, ss, { policy = set })
      for i = 1, 4 do assert(agg:execute("acct-vip-1", function() return { add(i) } end)) end
      for i = 1, 4 do assert(agg:execute("acct-18", function() return { add(i) } end)) end
      assert.equal(4, ss:load("acct-vip-1").version)
      assert.is_nil(ss:load("acct-18"))
    end)

    it("replaces a snapshot of a stream that was deleted and begun again", function()
      local agg = counter(es, ss, { snapshot_every = 1 })
      for i = 1, 3 do assert(agg:execute("acct-19", function() return { add(i) } end)) end
      assert.equal(3, ss:load("acct-19").version)
      assert(es:delete("acct-19"))
      assert(es:append("acct-19", { add(50) }))
      local s, v = agg:execute("acct-19", function() return { add(1) } end)
      assert.equal(2, v)
      assert.equal(51, s.sum)
      assert.equal(2, ss:load("acct-19").version)
    end)

    it("applies upcasters to the events it appends and reads", function()
      es:upcast(pgstore.upcasters{ { type = "Added", from = 1, to = 2, upcast = function(d)
        d.amount = d.cents / 100
        return d
      end } })
      assert(es:append("acct-20", { { type = "Added", data = { cents = 250 }, schema_version = 1 } }))
      local s, v = counter(es):execute("acct-20", function() return { add(1) } end)
      assert.equal(2, v)
      assert.equal(3.5, s.sum)
      assert.equal(2, db:query("select schema_version from agg_spec where stream = 'acct-20' and version = 2")[1].schema_version)
    end)
  end)

  describe("several processes on one stream", function()
    local N, M = 6, 12
    local barrier
    setup(function()
      barrier = S.make_barrier(db)
    end)
    teardown(function()
      assert(db:exec("drop table if exists " .. barrier))
    end)

    it("apply every command exactly once, with no lost update", function()
      local es_par = assert(db:events{ table = "agg_par", notify = false })
      local ss_par = assert(db:snapshots{ table = "agg_par_snap" })
      assert(es_par:truncate())
      assert(ss_par:invalidate_all())
      local results = T.run_parallel(N, S.BARRIER .. ([[
        local es = assert(db:events{ table = "agg_par", notify = false })
        local ss = assert(db:snapshots{ table = "agg_par_snap" })
        local agg = pgstore.aggregate{
          events = es, snapshots = ss, snapshot_every = 5, retries = 200,
          initial = function() return { balance = 0, cmds = 0 } end,
          apply = { Deposited = function(s, e) s.balance = s.balance + e.data.amount; s.cmds = s.cmds + 1 end },
        }
        barrier(%q, %d)
        local attempts = 0
        for i = 1, %d do
          local cmd = arg[1] .. "-" .. i
          local state, version, res = agg:execute("acct-par", function(s, v)
            -- the new balance is computed from the state seen: a lost update would show
            return { { type = "Deposited", data = { amount = 1, cmd = cmd, balance = s.balance + 1, seen = v } } }
          end)
          assert(state, version)
          assert(state.balance == version, "state and version disagree")
          attempts = attempts + res.attempts
        end
        print("attempts " .. attempts)
      ]]):format(barrier, N, M))
      local retried = 0
      for i, r in ipairs(results) do
        assert.equal(0, r.rc, ("process %d: %s"):format(i, r.out))
        retried = retried + tonumber(r.out:match("attempts (%d+)")) - M
      end
      assert.is_true(retried > 0, "the processes never conflicted: the test did not race")

      local evs = assert(es_par:read("acct-par"))
      assert.equal(N * M, #evs)
      local cmds = {}
      for _, e in ipairs(evs) do
        assert.is_nil(cmds[e.data.cmd], "command applied twice: " .. e.data.cmd)
        cmds[e.data.cmd] = true
        assert.equal(e.version, e.data.balance) -- each command saw the state right before it
        assert.equal(e.version - 1, e.data.seen)
      end
      for p = 1, N do
        for i = 1, M do assert.is_true(cmds[p .. "-" .. i], "command lost: " .. p .. "-" .. i) end
      end
      local agg = pgstore.aggregate{ events = es_par, snapshots = ss_par,
        initial = function() return { balance = 0, cmds = 0 } end,
        apply = { Deposited = function(s, e) s.balance = s.balance + e.data.amount; s.cmds = s.cmds + 1 end } }
      local s, v = agg:load("acct-par")
      assert.equal(N * M, v)
      assert.same({ balance = N * M, cmds = N * M }, s)
      assert.is_true(ss_par:load("acct-par").version >= N * M - 5)
      es_par:close()
      ss_par:close()
    end)
  end)
end)
