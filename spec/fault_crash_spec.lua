-- SPDX-License-Identifier: MIT
-- The server crashing under load: 8 writer processes append with
-- idempotency keys while the cluster is stopped with `pg_ctl stop -m
-- immediate` and started again, twice; each writer retries a failed append
-- with the same key. Afterwards every append that returned success is
-- there once, every retried one too, no stream has a version gap, and a
-- read_all follower that ran throughout (reconnecting by itself through
-- its pool) delivered every event exactly once, in order. And the case a
-- crash makes possible: a sequence value taken by a rolled-back append and
-- not yet flushed is handed out again after the restart — the follower's
-- cursor must never have passed it, nor may it pass the appends of a
-- session that asked for synchronous_commit = off.
local core = require "pgstore.core"
local T = require "testenv"

local function lsns(db)
  return db:query([[select pg_current_wal_flush_lsn() < pg_current_wal_insert_lsn() as unflushed]])[1]
end

describe("a server crash", function()
  local db
  T.block_db(setup, teardown, function(d) db = d end)

  it("never lets read_all pass a position the restarted server hands out again", function()
    local name = "fault_crash_seq"
    local es = assert(db:events{ table = name, notify = false })
    assert(es:truncate())
    -- WAL the walwriter has not written yet is lost by an immediate stop:
    -- give it a 10 s cycle so the window is wide open.
    assert(db:exec("alter system set wal_writer_delay = '10s'"))
    assert(db:query("select pg_reload_conf()"))
    finally(function()
      db:exec("alter system reset wal_writer_delay")
      db:query("select pg_reload_conf()")
    end)
    local rollback = function(stream)
      local ok = db:transaction(function(tx)
        assert(es:append(stream, { { type = "Gone" } }, { tx = tx }))
        return nil, "rolled back on purpose"
      end)
      assert.is_nil(ok)
    end
    local cursor, taken, unflushed = 0, nil, false
    for _ = 1, 10 do
      rollback("wake") -- an abort wakes a hibernating walwriter, which then flushes
      core.sleep(0.3)
      -- Exhaust the sequence's logged range with committed appends, so the
      -- next value starts a new WAL record …
      for _ = 1, 40 do
        if db:query(("select log_cnt from %s_position_seq"):format(name))[1].log_cnt == 0 then break end
        assert(es:append("kept", { { type = "Kept" } }))
      end
      -- … which a rolled-back append writes and nothing flushes.
      rollback("gone")
      taken = db:query(("select last_value from %s_position_seq"):format(name))[1].last_value
      local rows
      rows, cursor = assert(es:read_all{ after = cursor })
      unflushed = lsns(db).unflushed
      if unflushed then break end
    end
    assert.is_true(unflushed, "could not leave the sequence's WAL record unflushed")
    T.testdb("stop-immediate")
    T.testdb("start-again")
    local r = assert(es:append("after", { { type = "AfterCrash" } }))
    local rows = assert(es:read_all{ after = cursor })
    print(("\n  crash took the sequence back: %s (position %d was taken before, %d handed out after);"
      .. " read_all's cursor stood at %d and delivers it"):format(
      tostring(r.first_position <= taken), taken, r.first_position, cursor))
    assert.truthy(r.first_position > cursor, ("position %d is at or below the cursor %d: skipped")
      :format(r.first_position, cursor))
    assert.equal(1, #rows)
    assert.equal(r.first_position, rows[1].position)
    es:close()
  end)

  it("under synchronous_commit = off, never hands out a position a follower has passed", function()
    local name = "fault_crash_async"
    local es = assert(db:events{ table = name, notify = false })
    assert(es:truncate())
    -- Commits the server does not flush at once, and a walwriter that
    -- waits 10 s: what an immediate stop loses is wide open.
    assert(db:exec("alter system set synchronous_commit = off"))
    assert(db:exec("alter system set wal_writer_delay = '10s'"))
    assert(db:query("select pg_reload_conf()"))
    finally(function()
      db:exec("alter system reset synchronous_commit")
      db:exec("alter system reset wal_writer_delay")
      db:query("select pg_reload_conf()")
    end)
    assert(T.eventually(function()
      return db:query("show synchronous_commit")[1].synchronous_commit == "off"
    end, 10))
    local kept = {}
    for i = 1, 5 do kept[i] = assert(es:append("async", { { type = "Kept", data = { i = i } } })).first_position end
    local rows, cursor = assert(es:read_all{ after = 0 })
    assert.equal(5, #rows)
    assert.equal(kept[5], cursor)
    T.testdb("stop-immediate")
    T.testdb("start-again")
    local r = assert(es:append("after", { { type = "AfterCrash" } }))
    local after = assert(es:read_all{ after = cursor })
    local left = assert(db:query(("select count(*) as n from %s where type = 'Kept'"):format(name)))[1].n
    print(("\n  async commit, immediate stop: %d of 5 events a follower read survived;"
      .. " the next append took position %d, the follower's cursor stood at %d"):format(left, r.first_position, cursor))
    assert.equal(5, left, "events a follower had read were lost by the crash")
    assert.truthy(r.first_position > cursor, ("position %d is at or below the cursor %d: skipped")
      :format(r.first_position, cursor))
    assert.equal(1, #after)
    assert.equal(r.first_position, after[1].position)
    es:close()
  end)

  it("loses and duplicates nothing when the cluster is killed twice under 8 writers", function()
    local name, writers = "fault_crash", 8
    local es = assert(db:events{ table = name, notify = false }) -- migrated before the writers start
    assert(es:truncate())
    local dir = T.tmpdir("crash")
    local stop, follow_stop = dir .. "/stop", dir .. "/follow_stop"
    local procs = {}
    for w = 1, writers do
      procs[w] = T.spawn(([[
        local core = require "pgstore.core"
        io.stdout:setvbuf("line")
        local w, stop = tonumber(arg[1]), %q
        local es, err
        for _ = 1, 100 do
          es, err = db:events{ table = %q, notify = %q, migrate = false }
          if es then break end
          core.sleep(0.1)
        end
        assert(es, tostring(err))
        local function stopped() local f = io.open(stop) if f then f:close() end return f ~= nil end
        local seq, deadline = 0, core.now() + 120
        while not stopped() and core.now() < deadline do
          seq = seq + 1
          local key, n = ("w%%d-%%d"):format(w, seq), seq %% 3 + 1
          local stream = ("w%%d-s%%d"):format(w, seq %% 5)
          local batch = {}
          for i = 1, n do batch[i] = { type = "E", data = { k = key, i = i } } end
          local attempts = 0
          while true do
            attempts = attempts + 1
            local r, e = es:append(stream, batch, { idempotency_key = key })
            if r then
              print(("OK %%s %%d %%d %%d %%s %%d"):format(key, n, r.first_position, r.last_position,
                tostring(r.replayed), attempts))
              break
            end
            if e.code == "connection" then assert(e.idempotency_key == key, "no key on " .. tostring(e)) end
            print(("RETRY %%s %%s"):format(key, e.code))
            assert(attempts < 1200, "gave up on " .. key .. ": " .. tostring(e))
            core.sleep(0.05)
          end
        end
        print("DONE " .. seq)
      ]]):format(stop, name, name), w)
    end
    local follower = T.spawn(([[
      local core = require "pgstore.core"
      io.stdout:setvbuf("line")
      local es = assert(db:events{ table = %q, notify = false, migrate = false })
      local out = assert(io.open(%q, "w"))
      local cursor, n, errors, deadline = 0, 0, 0, core.now() + 180
      while core.now() < deadline do
        local rows, c = es:read_all{ after = cursor, limit = 500, raw = true }
        if rows then
          for _, e in ipairs(rows) do out:write(e.position, "\n") end
          n, cursor = n + #rows, c
          if #rows == 0 then
            local f = io.open(%q)
            local head = f and tonumber(f:read("*a"))
            if f then f:close() end
            if head and cursor >= head then break end
            core.sleep(0.02)
          end
        else
          errors = errors + 1
          core.sleep(0.1)
        end
      end
      out:close()
      print(("FOLLOWED %%d ERRORS %%d"):format(n, errors))
    ]]):format(name, dir .. "/followed", follow_stop))

    local function progress()
      return db:query(("select count(*) as n from %s"):format(name))
    end
    local t0 = core.now()
    local crashes = 0
    for _ = 1, 2 do
      assert(T.eventually(function()
        local rows = progress()
        return rows and rows[1].n > 0 and core.now() - t0 > 2
      end, 30), "the writers made no progress")
      T.testdb("stop-immediate")
      crashes = crashes + 1
      core.sleep(1.5)
      T.testdb("start-again")
      t0 = core.now()
    end
    core.sleep(2)
    T.write(stop)
    local ok_lines, retries, replayed, codes = {}, 0, 0, {}
    for w = 1, writers do
      local out, ended = T.wait(procs[w], 90)
      assert.is_true(ended, "writer " .. w .. " did not stop")
      assert.truthy(out:match("DONE %d+"), "writer " .. w .. ": " .. out)
      for key, n, fp, lp, rep, attempts in out:gmatch("OK (%S+) (%d+) (%d+) (%d+) (%a+) (%d+)") do
        ok_lines[#ok_lines + 1] = { key = key, n = tonumber(n), fp = tonumber(fp), lp = tonumber(lp),
                                    replayed = rep == "true", attempts = tonumber(attempts) }
      end
      for _, code in out:gmatch("RETRY (%S+) (%S+)") do
        retries = retries + 1
        codes[code] = (codes[code] or 0) + 1
      end
    end
    local head = assert(es:latest_position())
    T.write(follow_stop, tostring(head))
    local fout, fended = T.wait(follower, 60)
    assert.is_true(fended, "the follower did not stop")
    local followed, ferrors = fout:match("FOLLOWED (%d+) ERRORS (%d+)")
    assert.truthy(followed, fout)

    -- every successful append is there exactly once, with its events
    local per_key = {}
    for _, r in ipairs(assert(db:query(("select data->>'k' as k, count(*) as n, min(position) as fp,"
      .. " max(position) as lp from %s group by 1"):format(name)))) do
      per_key[r.k] = r
    end
    local retried = 0
    for _, ok in ipairs(ok_lines) do
      local row = per_key[ok.key]
      assert.truthy(row, "append " .. ok.key .. " returned success but is not there")
      assert.equal(ok.n, row.n, "append " .. ok.key .. " is there " .. row.n .. " times over")
      assert.equal(ok.fp, row.fp)
      assert.equal(ok.lp, row.lp)
      if ok.attempts > 1 then retried = retried + 1 end
      if ok.replayed then replayed = replayed + 1 end
    end
    -- nothing is there that no writer was told about (a retry never writes twice)
    local keys = 0
    for _ in pairs(per_key) do keys = keys + 1 end
    assert.equal(#ok_lines, keys)
    local idem = db:query(("select count(*) as n from %s_idempotency"):format(name))[1].n
    assert.equal(#ok_lines, idem)
    -- no stream has a version gap
    for _, r in ipairs(assert(db:query(("select stream, count(*) as n, min(version) as lo, max(version) as hi"
      .. " from %s group by stream"):format(name)))) do
      assert.equal(1, r.lo, r.stream)
      assert.equal(r.n, r.hi, "stream " .. r.stream .. " has a version gap")
    end
    -- the follower saw every event once, in position order
    local positions = assert(db:query(("select position from %s order by position"):format(name)))
    local seen = {}
    for p in T.read(dir .. "/followed"):gmatch("%d+") do seen[#seen + 1] = tonumber(p) end
    assert.equal(#positions, #seen, "the follower delivered " .. #seen .. " of " .. #positions)
    for i, r in ipairs(positions) do
      assert.equal(r.position, seen[i], "follower's event " .. i)
    end
    local codelist = {}
    for c, n in pairs(codes) do codelist[#codelist + 1] = c .. " " .. n end
    print(("\n  %d crashes; %d appends acknowledged (%d retried, %d replayed), %d failed attempts (%s);"
      .. " %d events checked, lost 0, duplicated 0; follower delivered %d with %d failed reads")
      :format(crashes, #ok_lines, retried, replayed, retries, table.concat(codelist, ", "), #positions,
        #seen, tonumber(ferrors)))
    assert.truthy(retried > 0, "no append was retried: the crash did not hit the writers")
    es:close()
    T.sh("rm -rf " .. dir)
  end)
end)
