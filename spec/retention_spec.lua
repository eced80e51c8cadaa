-- SPDX-License-Identifier: MIT
-- Enforcing store policies (policies:apply, pgstore.retention): max_count,
-- max_age, truncate_before, archiving in place and to another store, the
-- first-match rule in SQL, dry runs, bounded batches, appends racing a run,
-- and the proof that removing events never breaks a follower's cursor.
local pgstore = require "pgstore"
local T = require "testenv"

local DAY = 86400

describe("retention", function()
  local db, es, arch
  setup(function()
    db = T.connect{ pool_size = 3 }
    es = assert(db:events{ table = "ret_spec", notify = false })
    arch = assert(db:events{ table = "ret_spec_archive", notify = false })
  end)
  before_each(function()
    assert(es:truncate())
    assert(arch:truncate())
  end)
  teardown(function()
    es:close()
    arch:close()
    db:close()
    T.assert_no_leaks()
  end)

  local function fill(stream, n, opts)
    local evs = {}
    for i = 1, n do evs[i] = { type = "E", data = { i = i } } end
    return assert(es:append(stream, evs, opts))
  end

  local function versions(stream, store)
    local out = {}
    for _, e in ipairs(assert((store or es):read(stream))) do out[#out + 1] = e.version end
    return out
  end

  local function range(a, b)
    local out = {}
    for v = a, b do out[#out + 1] = v end
    return out
  end

  local function total()
    return db:query("select count(*) as n from ret_spec")[1].n
  end

  describe("removing events", function()
    it("keeps the newest max_count events of each matching stream, and the head", function()
      fill("cart-1", 12)
      fill("cart-2", 3)
      fill("order-1", 12)
      local res = assert(pgstore.policy{ streams = "cart-*", max_count = 5 }:apply(es))
      assert.equal(7, res.removed)
      assert.equal(7, res.remove)
      assert.equal(1, res.streams)
      assert.same(range(8, 12), versions("cart-1"))
      assert.same(range(1, 3), versions("cart-2"))
      assert.same(range(1, 12), versions("order-1"))
      -- the head keeps its version: appends continue after it
      assert.equal(12, es:version("cart-1"))
      local r = assert(es:append("cart-1", { { type = "E" } }, { expected = 12 }))
      assert.equal(13, r.first_version)
      local _, err = es:append("cart-1", { { type = "E" } }, { expected = 5 })
      assert.equal("conflict", err.code)
      assert.same(range(8, 13), versions("cart-1"))
    end)

    it("removes versions before truncate_before", function()
      fill("log-1", 10)
      fill("log-2", 2)
      local res = assert(pgstore.policy{ streams = "log-?", truncate_before = 4 }:apply(es))
      assert.equal(3 + 2, res.removed)
      assert.same(range(4, 10), versions("log-1"))
      assert.same({}, versions("log-2"))
      assert.equal(2, es:version("log-2"))
      assert.equal("active", es:status("log-2"))
    end)

    it("removes events older than max_age by their time", function()
      local now = os.time()
      fill("s-1", 3, { time = now - 40 * DAY })
      fill("s-1", 2, { time = now - 10 * DAY })
      fill("s-1", 1)
      local res = assert(pgstore.policy{ streams = "s-*", max_age = "30d" }:apply(es))
      assert.equal(3, res.removed)
      assert.same(range(4, 6), versions("s-1"))
      res = assert(pgstore.policy{ streams = "s-*", max_age = "1w" }:apply(es))
      assert.equal(2, res.removed)
      assert.same({ 6 }, versions("s-1"))
    end)

    it("removes the union of a policy's rules", function()
      local now = os.time()
      fill("u-1", 4, { time = now - 5 * DAY })
      fill("u-1", 16)
      local res = assert(pgstore.policy{ streams = "u-*", max_count = 10, truncate_before = 3, max_age = "2d" }:apply(es))
      assert.equal(10, res.removed)
      assert.same(range(11, 20), versions("u-1"))
    end)

    it("lets the first matching policy govern: an earlier policy without rules exempts streams", function()
      fill("cart-vip-1", 10)
      fill("cart-1", 10)
      fill("cart-gold-1", 10)
      local set = pgstore.policies{
        { name = "vip", streams = { "cart-vip-*", "cart-gold-*" } },
        { name = "carts", streams = "cart-*", max_count = 2 },
      }
      local res = assert(set:apply(es))
      assert.equal(8, res.removed)
      assert.equal(0, res.policies[1].streams)
      assert.equal(8, res.policies[2].removed)
      assert.equal(10, #versions("cart-vip-1"))
      assert.equal(10, #versions("cart-gold-1"))
      assert.same({ 9, 10 }, versions("cart-1"))
    end)

    it("matches LIKE's special characters literally", function()
      for _, s in ipairs{ "a%b-1", "a_b-1", "axb-1", "a\\b-1", "a\\xb-1" } do fill(s, 3) end
      local function run(pattern)
        local got = {}
        assert(pgstore.policy{ streams = pattern, max_count = 1 }:plan(es, { on_stream = function(item)
          got[#got + 1] = item.stream
        end }))
        table.sort(got)
        return got
      end
      assert.same({ "a%b-1" }, run("a%b-*"))
      assert.same({ "a_b-1" }, run("a_b-*"))
      assert.same({ "a\\b-1" }, run("a\\\\b-*"))
      assert.same({ "a%b-1", "a\\b-1", "a_b-1", "axb-1" }, run("a?b-*"))
      assert.same({ "a%b-1", "a_b-1" }, run("a[%_]b-*"))
    end)

    it("changes nothing in a dry run and plans what a run then does", function()
      for i = 1, 5 do fill("d-" .. i, 4 + i) end
      local items = {}
      local set = pgstore.policy{ streams = "d-*", max_count = 3 }
      local plan = assert(set:plan(es, { on_stream = function(item) items[#items + 1] = item end }))
      assert.is_true(plan.dry_run)
      assert.equal(0, plan.removed)
      assert.equal(2 + 3 + 4 + 5 + 6, plan.remove)
      assert.equal(5, plan.streams)
      assert.equal(35, total())
      assert.same({ policy = plan.policies[1].name, stream = "d-1", version = 5, status = "active", remove = 2,
                    upto = 2, archive = false }, items[1])
      local res = assert(set:apply(es))
      assert.equal(plan.remove, res.removed)
      assert.equal(15, total())
    end)

    it("removes in batches of at most `batch` rows, across pages of streams", function()
      for i = 1, 7 do fill(("b-%02d"):format(i), 10) end
      local deltas, last = {}, 0
      local seen = 0
      local res = assert(pgstore.policy{ streams = "b-*", max_count = 1 }:apply(es, {
        batch = 4, page = 3,
        on_stream = function() seen = seen + 1 end,
        on_progress = function(s)
          deltas[#deltas + 1] = s.removed - last
          last = s.removed
        end,
      }))
      assert.equal(63, res.removed)
      assert.equal(7, seen)
      for _, d in ipairs(deltas) do assert.is_true(d <= 4, "a batch removed " .. d) end
      -- pages of 3, 3 and 1 streams: 27, 27 and 9 rows in batches of 4
      assert.equal(7 + 7 + 3, #deltas)
      for i = 1, 7 do assert.same({ 10 }, versions(("b-%02d"):format(i))) end
    end)

    it("pages through streams it does not govern without losing those it does", function()
      for i = 1, 20 do fill(("m-%02d"):format(i), 3) end
      local set = pgstore.policies{ { name = "skip", streams = "m-1?" }, { name = "fives", streams = "m-?5", max_count = 1 } }
      local got = {}
      local res = assert(set:apply(es, { page = 3, on_stream = function(item) got[#got + 1] = item.stream end }))
      assert.same({ "m-05" }, got)                  -- m-15 belongs to the first policy
      assert.equal(2, res.removed)
      assert.equal(3, #versions("m-15"))
    end)

    it("never removes events appended while the run is under way", function()
      fill("race-1", 10)
      local res = assert(pgstore.policy{ streams = "race-*", max_count = 2 }:apply(es, {
        on_stream = function(item)
          -- appended after the plan of this page, before its removal
          fill(item.stream, 5)
        end,
      }))
      assert.equal(8, res.removed)
      assert.same(range(9, 15), versions("race-1"))
    end)

    it("raises on misuse and fails cleanly on a missing table", function()
      local set = pgstore.policy{ streams = "*", max_count = 1 }
      assert.has_error(function() set:apply({}) end)
      assert.equal("invalid", select(2, set:apply(es, { batch = 0 })).code)
      assert.has_error(function() set:apply(es, { bogus = true }) end)
      -- a store opened without migrations names its missing table at once
      local missing, err = db:events{ table = "ret_spec_missing", notify = false, migrate = false }
      assert.is_nil(missing)
      assert.equal("not_found", err.code)
      assert.matches('"ret_spec_missing"', err.message, 1, true)
      assert.equal(1, db:query("select 1 as one")[1].one)
    end)
  end)

  describe("archiving", function()
    it("archives streams whose last event is older than archive_after", function()
      local now = os.time()
      fill("idle-1", 3, { time = now - 100 * DAY })
      fill("idle-2", 3, { time = now - 100 * DAY })
      fill("idle-2", 1)                               -- woke up: not idle
      fill("idle-3", 3, { time = now - 100 * DAY })
      assert(es:tombstone("idle-3", "gone"))          -- tombstoned streams stay so
      fill("busy-1", 3, { time = now - 100 * DAY })   -- not governed
      local res = assert(pgstore.policy{ streams = "idle-*", archive_after = "90d" }:apply(es))
      assert.equal(1, res.archived)
      assert.equal("archived", es:status("idle-1"))
      assert.equal("active", es:status("idle-2"))
      assert.equal("tombstoned", es:status("idle-3"))
      assert.equal("active", es:status("busy-1"))
      local _, err = es:append("idle-1", { { type = "E" } })
      assert.equal("archived", err.code)
      assert.equal(3, #versions("idle-1"))            -- reads still work
      res = assert(pgstore.policy{ streams = "idle-*", archive_after = "90d" }:apply(es))
      assert.equal(0, res.archive)                    -- done once
    end)

    it("moves idle streams to the archive store, and finishes an interrupted move", function()
      local now = os.time()
      fill("old-1", 4, { time = now - 100 * DAY })
      fill("old-2", 2, { time = now - 100 * DAY })
      assert(es:archive("old-2"))                     -- as if a run stopped after flagging it
      fill("old-3", 2)
      local set = pgstore.policy{ streams = "old-*", archive_after = "90d", archive_to = "ret_spec_archive" }
      local items = {}
      local plan = assert(set:plan(es, { on_stream = function(item) items[item.stream] = item end }))
      assert.equal(2, plan.archive)
      assert.equal("ret_spec_archive", items["old-1"].archive_to)
      assert.equal("archived", items["old-2"].status)
      local res = assert(set:apply(es))
      assert.equal(2, res.archived)
      assert.equal("archived", es:status("old-1"))
      local _, err = es:read("old-1")
      assert.equal("archived", err.code)
      assert.matches("archived to another store", err.message)
      assert.equal(0, db:query("select count(*) as n from ret_spec where stream like 'old-_' and stream <> 'old-3'")[1].n)
      assert.same(range(1, 4), versions("old-1", arch))
      assert.same(range(1, 2), versions("old-2", arch))
      assert.same(range(1, 2), versions("old-3"))
      assert.equal(0, assert(set:plan(es)).archive)
      -- and back again
      assert.equal(4, assert(es:restore_from("old-1", arch)))
      assert.same(range(1, 4), versions("old-1"))
    end)

    it("leaves a stream alone that got an event after it was planned", function()
      local now = os.time()
      fill("wake-1", 2, { time = now - 100 * DAY })
      local res = assert(pgstore.policy{ streams = "wake-*", archive_after = "90d" }:apply(es, {
        on_stream = function(item) fill(item.stream, 1) end,
      }))
      assert.equal(1, res.archive)
      assert.equal(0, res.archived)
      assert.equal("active", es:status("wake-1"))
    end)

    it("refuses to archive a store into itself", function()
      fill("self-1", 1, { time = os.time() - 100 * DAY })
      for _, name in ipairs{ "ret_spec", "public.ret_spec" } do
        local res, err = pgstore.policy{ streams = "self-*", archive_after = "1d", archive_to = name }:apply(es)
        assert.is_nil(res)
        assert.equal("invalid", err.code)
        assert.matches("archive_to names this same store", err.message)
        assert.is_table(err.summary)
      end
      assert.equal(1, #versions("self-1"))
    end)

    it("re-raises an error from a callback", function()
      fill("cb-1", 2, { time = os.time() - 100 * DAY })
      local set = pgstore.policy{ streams = "cb-*", archive_after = "1d", archive_to = "ret_spec_archive" }
      assert.has_error(function()
        set:apply(es, { on_stream = function() error("callback failed") end })
      end)
      assert.equal("active", es:status("cb-1"))
    end)
  end)

  describe("followers", function()
    -- A follower stores its cursor (a checkpoint), retention removes events
    -- before and after that cursor, and the follower carries on from the
    -- stored cursor: it receives exactly the surviving events after it, in
    -- order, then new ones — nothing skipped, nothing repeated, no error.
    it("keep reading correctly after retention removed events before and after their cursor", function()
      local cp = assert(db:checkpoints{ table = "ret_spec_cp" })
      assert(cp:save("follower", 0))
      for round = 1, 10 do
        for s = 1, 4 do fill(("f-%d"):format(s), 3) end
        fill("keep-" .. round % 2, 1)
      end
      -- the follower reads the first 50 events and stores its cursor
      local got = {}
      local cursor = cp:load("follower")
      local batch
      batch, cursor = assert(es:read_all{ after = cursor, limit = 50 })
      for _, e in ipairs(batch) do got[#got + 1] = e.position end
      assert(cp:save("follower", cursor))
      assert.equal(50, #got)

      -- retention: every f- stream keeps only its newest 4 events
      local removed_positions = {}
      for _, r in ipairs(db:query("select position from ret_spec where stream like 'f-%' and version <= 26")) do
        removed_positions[#removed_positions + 1] = r.position
      end
      local before, after = 0, 0
      for _, p in ipairs(removed_positions) do
        if p <= cursor then before = before + 1 else after = after + 1 end
      end
      assert.is_true(before > 0 and after > 0, "retention must remove events on both sides of the cursor")
      local res = assert(pgstore.policy{ streams = "f-*", max_count = 4 }:apply(es, { batch = 7 }))
      assert.equal(#removed_positions, res.removed)

      -- new appends after retention
      fill("f-1", 2)
      fill("keep-0", 1)

      -- the follower resumes from its stored cursor
      cursor = cp:load("follower")
      local rest = {}
      repeat
        batch, cursor = assert(es:read_all{ after = cursor, limit = 7 })
        for _, e in ipairs(batch) do rest[#rest + 1] = e.position end
        assert(cp:save("follower", cursor))
      until #batch == 0
      local expected = {}
      for _, r in ipairs(db:query("select position from ret_spec where position > $1 order by position", got[#got])) do
        expected[#expected + 1] = r.position
      end
      assert.same(expected, rest)
      -- strictly increasing, all after the old cursor, including the new appends
      for i = 2, #rest do assert.is_true(rest[i] > rest[i - 1]) end
      assert.is_true(rest[1] > got[#got])
      assert.equal(es:latest_position(), rest[#rest])
      assert(db:exec("drop table ret_spec_cp"))
      cp:close()
    end)

    it("keep following live through a subscription while retention runs", function()
      local sub = assert(db:subscribe{ name = "ret-sub", events = es, from = "start", batch = 5, poll = 0.05,
                                       listen = false, checkpoints = assert(db:checkpoints{ table = "ret_spec_cp2" }) })
      for s = 1, 3 do fill("g-" .. s, 6) end
      local seen = {}
      local b = assert(sub:next(1))
      for _, e in ipairs(b) do seen[#seen + 1] = e.position end
      assert(sub:ack(b[#b].position))
      assert(pgstore.policy{ streams = "g-*", max_count = 2 }:apply(es))
      fill("g-1", 1)
      local deadline = os.time() + 10
      while os.time() < deadline do
        b = assert(sub:next(0.2))
        if #b == 0 then break end
        for _, e in ipairs(b) do seen[#seen + 1] = e.position end
        assert(sub:ack(b[#b].position))
      end
      local expected = {}
      for _, p in ipairs(seen) do if p <= 5 then expected[#expected + 1] = p end end
      for _, r in ipairs(db:query("select position from ret_spec where position > 5 order by position")) do
        expected[#expected + 1] = r.position
      end
      assert.same(expected, seen)
      sub:close()
      assert(db:exec("drop table ret_spec_cp2"))
    end)
  end)
end)
