-- SPDX-License-Identifier: MIT
-- Stream lifecycle against appends in flight, with real processes: this
-- process holds an append open in a transaction while tombstone, archive,
-- restore, delete or a move runs in another process and blocks on the
-- stream's head; after the commit, the outcome is that of the append first,
-- then the operation. Also: hard delete forgets the stream's idempotency
-- keys, and moves never revive a tombstoned stream nor invent metadata.
local T = require "testenv"

local TABLE, COLD = "ev_life", "ev_life_cold"

-- Runs one lifecycle call in a host process: `OP` is replaced by a Lua
-- expression over `es`, `cold` and `stream` (arg[1]); prints "ok <result>"
-- or "err <code>".
local SCRIPT = [[
  local es = assert(db:events{ table = "ev_life", notify = false })
  local cold = assert(db:events{ table = "ev_life_cold", notify = false })
  local stream = arg[1]
  local res, err = OP
  print(res ~= nil and ("ok " .. tostring(res)) or ("err " .. tostring(err and err.code)))
]]

describe("stream lifecycle racing appends", function()
  local db, es, cold
  setup(function()
    db = T.connect()
    es = assert(db:events{ table = TABLE, notify = false })
    cold = assert(db:events{ table = COLD, notify = false })
  end)
  before_each(function()
    assert(es:truncate())
    assert(cold:truncate())
  end)
  teardown(function()
    es:close()
    cold:close()
    db:close()
    T.assert_no_leaks()
  end)

  local function count(store, stream)
    return db:query(("select count(*) as n from %s where stream = $1"):format(store), stream)[1].n
  end

  -- Backends of this spec's database waiting for a lock.
  local function waiting()
    return assert(T.admin():query([[select count(*) as n from pg_stat_activity
      where datname = current_database() and wait_event_type = 'Lock']]))[1].n
  end

  -- Appends `events` to `stream` in a transaction of this process and, while
  -- it is open, starts each of `ops` in a process of its own, one after the
  -- other, each once the one before it blocks; then commits. Returns the
  -- append's result, whether every op blocked, and the ops' outputs.
  local function race(stream, events, ops, opts)
    local procs, blocked = {}, true
    local res = assert(db:transaction(function(tx)
      local o = { tx = tx }
      for k, v in pairs(opts or {}) do o[k] = v end
      local r = assert(es:append(stream, events, o))
      for i, op in ipairs(ops) do
        procs[i] = T.spawn((SCRIPT:gsub("OP", op)), stream)
        blocked = T.eventually(function() return waiting() >= i end, 5) and blocked
      end
      return r
    end))
    local outs = {}
    for i, p in ipairs(procs) do outs[i] = (T.wait(p, 20)) end
    return res, blocked, outs
  end

  describe("delete", function()
    it("leaves no orphan of an append in flight: the stream is empty and starts again at 1", function()
      assert(es:append("d", { { type = "A" }, { type = "B" } }))
      local r, blocked, outs = race("d", { { type = "InFlight" } }, { "es:delete(stream)" })
      assert.equal(3, r.first_version)
      assert.matches("^ok true", outs[1])
      assert.is_true(blocked, "delete did not wait for the append")
      assert.equal(0, es:version("d"))
      assert.equal("none", es:status("d"))
      assert.equal(0, count(TABLE, "d"))
      assert.same({}, assert(es:read_all()))
      local again = assert(es:append("d", { { type = "A" } }, { expected = "no_stream" }))
      assert.equal(1, again.first_version)
      assert(es:append("d", { { type = "B" } }, { expected = 1 }))
      assert(es:append("d", { { type = "C" } }, { expected = 2 })) -- version 3 is free
    end)

    it("waits for the append that creates the stream, and deletes it", function()
      local _, blocked, outs = race("new", { { type = "First" } }, { "es:delete(stream)" })
      assert.is_true(blocked, "delete did not wait for the append")
      assert.matches("^ok true", outs[1])
      assert.equal("none", es:status("new"))
      assert.equal(0, count(TABLE, "new"))
      assert.equal(1, assert(es:append("new", { { type = "A" } })).first_version)
    end)

    it("forgets the stream's idempotency keys, also of an append in flight", function()
      assert(es:append("k", { { type = "A" } }, { idempotency_key = "k-1" }))
      local _, blocked, outs = race("k", { { type = "B" } }, { "es:delete(stream)" }, { idempotency_key = "k-2" })
      assert.is_true(blocked)
      assert.matches("^ok true", outs[1])
      assert.equal(0, db:query("select count(*) as n from ev_life_idempotency")[1].n)
      for _, key in ipairs{ "k-1", "k-2" } do
        local r = assert(es:append("k", { { type = "Again" } }, { idempotency_key = key }))
        assert.is_false(r.replayed, key .. " replayed a deleted stream's result")
      end
      assert.equal(2, es:version("k"))
      assert.equal(2, count(TABLE, "k"))
    end)

    it("keeps the keys of other streams", function()
      assert(es:append("gone", { { type = "A" } }, { idempotency_key = "g-1" }))
      assert(es:append("kept", { { type = "A" } }, { idempotency_key = "g-2" }))
      assert(es:delete("gone"))
      assert.is_true(assert(es:append("kept", { { type = "A" } }, { idempotency_key = "g-2" })).replayed)
      local _, err = es:delete("gone")
      assert.equal("not_found", err.code)
    end)
  end)

  describe("tombstone, archive and restore", function()
    it("tombstone waits for an append in flight and keeps it", function()
      assert(es:append("t", { { type = "A" } }))
      local _, blocked, outs = race("t", { { type = "InFlight" } }, { "es:tombstone(stream, 'gdpr')" })
      assert.is_true(blocked, "tombstone did not wait for the append")
      assert.matches("^ok true", outs[1])
      assert.equal("tombstoned", es:status("t"))
      assert.equal(2, es:version("t"))
      assert.equal(2, count(TABLE, "t"))
      local _, err = es:append("t", { { type = "After" } })
      assert.equal("deleted", err.code)
      assert.equal("gdpr", db:query("select reason from ev_life_heads where stream = 't'")[1].reason)
    end)

    it("archive waits for an append in flight and keeps it", function()
      assert(es:append("a", { { type = "A" } }))
      local _, blocked, outs = race("a", { { type = "InFlight" } }, { "es:archive(stream)" })
      assert.is_true(blocked, "archive did not wait for the append")
      assert.matches("^ok true", outs[1])
      assert.equal("archived", es:status("a"))
      assert.equal(2, #assert(es:read("a")))
      local _, err = es:append("a", { { type = "After" } })
      assert.equal("archived", err.code)
    end)

    it("restore waits for an append in flight and keeps it", function()
      assert(es:append("r", { { type = "A" } }))
      local _, blocked, outs = race("r", { { type = "InFlight" } }, { "es:restore(stream)" })
      assert.is_true(blocked, "restore did not wait for the append")
      assert.matches("^ok true", outs[1])
      assert.equal("active", es:status("r"))
      assert(es:append("r", { { type = "After" } }, { expected = 2 }))
    end)

    it("archive and restore of a stream whose first append is in flight wait for it", function()
      local _, blocked, outs = race("fresh", { { type = "First" } }, { "es:archive(stream)" })
      assert.is_true(blocked)
      assert.matches("^ok true", outs[1])
      assert.equal("archived", es:status("fresh"))
      assert(es:restore("fresh"))
      assert.equal(1, es:version("fresh"))
    end)

    it("archive, restore and delete of an absent stream are not_found and write nothing", function()
      for _, op in ipairs{ "archive", "restore", "delete" } do
        local _, err = es[op](es, "absent")
        assert.equal("not_found", err.code, op)
      end
      assert.equal(0, db:query("select count(*) as n from ev_life_heads")[1].n)
    end)
  end)

  describe("moves", function()
    it("archive_to waits for an append in flight and moves it too", function()
      assert(es:append("m", { { type = "A" } }))
      local _, blocked, outs = race("m", { { type = "InFlight" } }, { "es:archive_to(stream, cold)" })
      assert.is_true(blocked, "archive_to did not wait for the append")
      assert.matches("^ok 2", outs[1])
      assert.equal("archived", es:status("m"))
      assert.equal(0, count(TABLE, "m"))
      assert.equal(2, cold:version("m"))
      assert.same({ "A", "InFlight" }, { cold:read("m")[1].type, cold:read("m")[2].type })
    end)

    it("restore_from waits for an append in flight in the archive and moves it too", function()
      assert(es:append("back", { { type = "A" } }))
      assert.equal(1, es:archive_to("back", cold))
      -- the append is held open on the archive store this time
      local procs, blocked = {}, nil
      assert(db:transaction(function(tx)
        assert(cold:append("back", { { type = "InFlight" } }, { tx = tx }))
        procs[1] = T.spawn((SCRIPT:gsub("OP", "es:restore_from(stream, cold)")), "back")
        blocked = T.eventually(function() return waiting() >= 1 end, 5)
        return true
      end))
      local out = T.wait(procs[1], 20)
      assert.truthy(blocked, "restore_from did not wait for the append")
      assert.matches("^ok 2", out)
      assert.equal("active", es:status("back"))
      assert.equal(2, es:version("back"))
      assert.equal("none", cold:status("back"))
    end)

    it("never undoes a tombstone that a racing archive_to queued behind", function()
      assert(es:append("tm", { { type = "A" } }))
      local _, blocked, outs = race("tm", { { type = "InFlight" } },
        { "es:tombstone(stream, 'gone')", "es:archive_to(stream, cold)" })
      assert.is_true(blocked)
      assert.matches("^ok true", outs[1])
      -- Either order is a serialization; the tombstone always survives.
      assert.equal("tombstoned", es:status("tm"))
      if outs[2]:match("^err deleted") then -- tombstone first: the move refused
        assert.equal(2, count(TABLE, "tm"))
        assert.equal("none", cold:status("tm"))
      else -- the move first, then the tombstone
        assert.matches("^ok 2", outs[2])
        assert.equal(0, count(TABLE, "tm"))
        assert.equal(2, count(COLD, "tm"))
      end
    end)

    local function refuses_tombstoned_target(target_db)
      local target = assert(target_db:events{ table = COLD, notify = false })
      assert(es:append("x", { { type = "A" }, { type = "B" } }))
      assert(target:tombstone("x", "erased"))
      local _, err = es:archive_to("x", target)
      assert.equal("deleted", err and err.code)
      -- nothing written in either store
      assert.equal("active", es:status("x"))
      assert.equal(2, count(TABLE, "x"))
      assert.equal("tombstoned", target:status("x"))
      assert.equal(0, count(COLD, "x"))
      assert.equal("erased", db:query("select reason from ev_life_cold_heads where stream = 'x'")[1].reason)
      -- and back: restore_from refuses a stream tombstoned here
      assert(es:tombstone("y", "erased"))
      assert(target:append("y", { { type = "Archived" } }))
      _, err = es:restore_from("y", target)
      assert.equal("deleted", err and err.code)
      assert.equal("tombstoned", es:status("y"))
      assert.equal(0, count(TABLE, "y"))
      assert.equal(1, count(COLD, "y"))
      target:close()
    end

    it("refuses with 'deleted' to move into a tombstoned stream, writing nothing (one pool)", function()
      refuses_tombstoned_target(db)
    end)

    it("refuses with 'deleted' to move into a tombstoned stream, writing nothing (two pools)", function()
      local other = T.connect()
      refuses_tombstoned_target(other)
      other:close()
    end)

    it("refuses to move a tombstoned or absent stream", function()
      assert(es:append("ts", { { type = "A" } }))
      assert(es:tombstone("ts"))
      local _, err = es:archive_to("ts", cold)
      assert.equal("deleted", err.code)
      _, err = es:archive_to("nothing", cold)
      assert.equal("not_found", err.code)
      _, err = es:restore_from("nothing", cold)
      assert.equal("not_found", err.code)
      assert.equal(0, db:query("select count(*) as n from ev_life_cold_heads")[1].n)
      assert.equal("none", es:status("nothing"))
    end)

    it("never hangs two movers moving one stream opposite ways over two pools each", function()
      assert(es:append("pp", { { type = "A" } }))
      -- each process: the hot store and the cold one on pools of their own,
      -- so a lock cycle would run through the process, out of the server's sight
      local MOVER = [[
        local pgstore, core = require "pgstore", require "pgstore.core"
        local dsn, dir = arg[1], arg[2]
        local d1 = assert(pgstore.connect{ dsn = dsn, pool_size = 1, application_name = "pgstore-spec" })
        local d2 = assert(pgstore.connect{ dsn = dsn, pool_size = 1, application_name = "pgstore-spec" })
        local hot = assert(d1:events{ table = "ev_life", notify = false })
        local cold = assert(d2:events{ table = "ev_life_cold", notify = false })
        local moves, codes, deadline = 0, {}, core.now() + 4
        while core.now() < deadline do
          local n, err
          if dir == "out" then n, err = hot:archive_to("pp", cold) else n, err = hot:restore_from("pp", cold) end
          if n then moves = moves + 1 else codes[err.code] = (codes[err.code] or 0) + 1 end
        end
        local c = {}
        for k, v in pairs(codes) do c[#c + 1] = k .. "=" .. v end
        print("DONE " .. moves .. " " .. table.concat(c, ","))
      ]]
      local a = T.spawn(MOVER, T.dsn(), "out")
      local b = T.spawn(MOVER, T.dsn(), "in")
      local outa, enda = T.wait(a, 30)
      local outb, endb = T.wait(b, 30)
      if not enda then T.signal(a, "KILL") end
      if not endb then T.signal(b, "KILL") end
      assert.is_true(enda and endb, "a mover hung: " .. outa .. " / " .. outb)
      local ma, mb = tonumber(outa:match("DONE (%d+)")), tonumber(outb:match("DONE (%d+)"))
      assert.truthy(ma and mb, outa .. " / " .. outb)
      assert.truthy(ma + mb > 0, "no move succeeded")
      -- the stream is whole in exactly one store
      assert.equal(1, count(TABLE, "pp") + count(COLD, "pp"))
    end)

    it("refuses a move that would lose an event whose id the target holds as another", function()
      local X = "11111111-2222-4333-8444-555555555555"
      assert(es:append("ida", { { type = "A1", id = X } }))
      assert.equal(1, es:archive_to("ida", cold))
      -- the id is free again here: another stream takes it
      assert(es:append("idb", { { type = "B1", id = X }, { type = "B2", id = "11111111-2222-4333-8444-666666666666" } }))
      local n, err = es:archive_to("idb", cold)
      assert.is_nil(n)
      assert.equal("duplicate", err.code)
      assert.truthy(err.message:match("already here as another event"), err.message)
      assert.equal(2, count(TABLE, "idb"))
      assert.equal(0, count(COLD, "idb"))
      assert.equal("active", es:status("idb"))
      -- nor land on a version the target has as another event
      assert(es:append("idv", { { type = "Here" } }))
      assert(cold:append("idv", { { type = "There" } }))
      n, err = es:archive_to("idv", cold)
      assert.is_nil(n)
      assert.equal("duplicate", err.code)
      assert.truthy(err.message:match("already has version 1"), err.message)
      assert.equal(1, count(COLD, "idv"))
      assert.equal(1, count(TABLE, "idv"))
    end)

    it("raises on an argument past a lifecycle call's last, { tx = … } above all", function()
      assert(es:append("txs", { { type = "A" } }))
      assert.has_error(function() es:delete("txs", {}) end)
      assert.has_error(function() es:archive("txs", {}) end)
      assert.has_error(function() es:tombstone("txs", "why", {}) end)
      assert.has_error(function() es:archive_to("txs", cold, {}) end)
      assert.equal(1, count(TABLE, "txs"))
      assert.equal("active", es:status("txs"))
    end)

    it("refuses a stream name longer than appends accept, writing nothing", function()
      local long = ("x"):rep(2000)
      for _, op in ipairs{ "tombstone", "archive", "restore", "delete" } do
        local ok, err = es[op](es, long)
        assert.is_nil(ok, op)
        assert.equal("invalid", err.code, op)
      end
      local _, err = es:archive_to(long, cold)
      assert.equal("invalid", err.code)
      assert.equal(0, db:query("select count(*) as n from ev_life_heads")[1].n)
    end)

    it("lets an archiving policy go on past a stream the archive refuses", function()
      local old = os.time() - 86400 * 10
      for _, st in ipairs{ "p-a", "p-b", "p-c" } do assert(es:append(st, { { type = "A" } }, { time = old })) end
      assert(cold:tombstone("p-a", "erased in the archive"))
      local set = require("pgstore").policies{ { name = "arch", streams = "p-*", archive_after = "1d",
                                                 archive_to = cold } }
      local summary = assert(set:apply(es))
      assert.equal(2, summary.archived)
      assert.equal(1, #summary.skipped)
      assert.equal("p-a", summary.skipped[1].stream)
      assert.equal("deleted", summary.skipped[1].code)
      assert.equal(1, count(COLD, "p-b"))
      assert.equal(1, count(COLD, "p-c"))
      assert.equal(1, count(TABLE, "p-a"))
      assert.equal("tombstoned", cold:status("p-a"))
      -- the next run skips it again and fails nothing
      summary = assert(set:apply(es))
      assert.equal(1, #summary.skipped)
    end)

    it("keeps metadata nil (and metadata given) across a move and back", function()
      assert(es:append("md", { { type = "Bare", data = { n = 1 } },
                               { type = "Meta", data = { n = 2 }, metadata = { by = "me" } } }))
      assert.equal(2, es:archive_to("md", cold))
      local moved = assert(cold:read("md"))
      assert.is_nil(moved[1].metadata)
      assert.same({ by = "me" }, moved[2].metadata)
      assert.equal(1, db:query("select count(*) as n from ev_life_cold where stream = 'md' and metadata is null")[1].n)
      assert.equal(2, es:restore_from("md", cold))
      local back = assert(es:read("md"))
      assert.is_nil(back[1].metadata)
      assert.same({ by = "me" }, back[2].metadata)
      assert.same({ n = 1 }, back[1].data)
      assert.equal(1, db:query("select count(*) as n from ev_life where stream = 'md' and metadata is null")[1].n)
    end)
  end)
end)
