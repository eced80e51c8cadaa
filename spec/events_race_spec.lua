-- SPDX-License-Identifier: MIT
-- Racing writers and retries with real processes: 32 processes appending
-- to one stream with expected versions get exactly one success per
-- version; an append whose connection is killed reports 'connection' with
-- its idempotency key, and retrying with that key writes the events once.
local T = require "testenv"

describe("concurrent appends", function()
  local db, es
  setup(function()
    db = T.connect()
    es = assert(db:events{ table = "ev_race", notify = false })
    assert(es:truncate())
  end)
  teardown(function()
    es:close()
    db:close()
    T.assert_no_leaks()
  end)

  it("gives exactly one success per version to 32 racing processes", function()
    local results = T.run_parallel(32, [[
      local es = assert(db:events{ table = "ev_race", notify = false })
      local won, lost = {}, 0
      for i = 1, 15 do
        local v = assert(es:version("hot"))
        local r, err = es:append("hot", { { type = "E", data = { by = arg[1] } } }, { expected = v })
        if r then
          won[#won + 1] = r.first_version
        else
          assert(err.code == "conflict", tostring(err))
          lost = lost + 1
        end
      end
      print("won " .. table.concat(won, ",") .. " lost " .. lost)
    ]])
    local versions, total_won, total_lost = {}, 0, 0
    for i, r in ipairs(results) do
      assert.equal(0, r.rc, "process " .. i .. ": " .. r.out)
      local won, lost = r.out:match("won ([%d,]*) lost (%d+)")
      for v in won:gmatch("%d+") do
        v = tonumber(v)
        assert.is_nil(versions[v], "version " .. v .. " won twice")
        versions[v] = true
        total_won = total_won + 1
      end
      total_lost = total_lost + tonumber(lost)
    end
    assert.equal(32 * 15, total_won + total_lost)
    assert.truthy(total_lost > 0, "no conflict happened: the race did not race")
    local rows = db:query("select version from ev_race where stream = 'hot' order by version")
    assert.equal(total_won, #rows)
    for i, r in ipairs(rows) do assert.equal(i, r.version) end -- no gaps
    assert.equal(total_won, es:version("hot"))
  end)

  it("reports a connection killed mid-append as 'connection' and retries safely with the key", function()
    -- Hold the stream's head row so the append waits, then kill its backend.
    assert(es:append("retry", { { type = "First" } }))
    local blocker = assert(db:acquire())
    assert(blocker:begin())
    assert(blocker:query("select * from ev_race_heads where stream = 'retry' for update"))
    local victim = T.spawn([[
      local es = assert(db:events{ table = "ev_race", notify = false })
      local r, err = es:append("retry", { { type = "Once" } }, { idempotency_key = "key-42" })
      print(r and "ok" or (err.code .. " " .. tostring(err.idempotency_key)))
    ]])
    local pid = T.eventually(function()
      local rows = T.admin():query([[select pid from pg_stat_activity
        where datname = current_database() and wait_event_type = 'Lock' and query like '%ev_race_append%']])
      return rows[1] and rows[1].pid
    end, 10)
    assert.truthy(pid, "the append never blocked")
    assert(T.admin():query("select pg_terminate_backend($1)", pid))
    local out = T.wait(victim, 10)
    assert.matches("connection key%-42", out)
    blocker:rollback()
    blocker:release()
    assert.equal(1, es:version("retry"))
    local r = assert(es:append("retry", { { type = "Once" } }, { idempotency_key = "key-42" }))
    assert.is_false(r.replayed)
    local again = assert(es:append("retry", { { type = "Once" } }, { idempotency_key = "key-42" }))
    assert.is_true(again.replayed)
    assert.equal(r.first_position, again.first_position)
    assert.equal(2, es:version("retry"))
  end)

  it("returns the original result when the first attempt committed but its client died", function()
    local first = T.spawn([[
      local es = assert(db:events{ table = "ev_race", notify = false })
      assert(es:append("lost-ack", { { type = "A" }, { type = "B" } }, { idempotency_key = "key-7" }))
      os.exit(9) -- the client dies before it can report anything
    ]])
    T.wait(first, 10)
    local r = assert(es:append("lost-ack", { { type = "A" }, { type = "B" } }, { idempotency_key = "key-7" }))
    assert.is_true(r.replayed)
    assert.equal(1, r.first_version)
    assert.equal(2, r.last_version)
    assert.equal(2, db:query("select count(*) as n from ev_race where stream = 'lost-ack'")[1].n)
  end)
end)
