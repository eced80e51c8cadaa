-- SPDX-License-Identifier: MIT
-- A subscriber that has to recover by itself, three times: its LISTEN
-- backend terminated, the cluster restarted, and the network to the server
-- stalled (the proxy holds every byte) for longer than its heartbeat and
-- query timeout. 4 writer processes append 16,000 events throughout; the
-- subscriber — one process, connected through the proxy — must deliver
-- each of them exactly once, in order.
local core = require "pgstore.core"
local proxy = require "proxy"
local T = require "testenv"

local function lines(path)
  local f = io.open(path)
  if not f then return {} end
  local out = {}
  for l in f:lines() do out[#out + 1] = l end
  f:close()
  return out
end

describe("a subscriber under faults", function()
  local db, P
  setup(function() db = T.connect() end)
  teardown(function()
    if P then P:stop() end
    db:close()
    T.assert_no_leaks()
    T.assert_no_leaks("pgstore-fault-sub")
  end)

  it("gives up a statement a stalled network holds, after query_timeout, and recovers", function()
    local Q = proxy.start{ lifetime = 60 }
    local pdb = T.connect{ dsn = Q.dsn, pool_size = 1, query_timeout = 1, connect_timeout = 2,
                           application_name = "pgstore-fault-sub" }
    assert.same({ { one = 1 } }, pdb:query("select 1 as one"))
    -- the reset sent when that query gave its connection back is answered
    -- at the next acquire: take that answer now, before the stall
    assert(pdb:acquire()):release()
    Q:stall(true)
    local t0 = core.now()
    local rows, err = pdb:query("select 2 as two")
    local took = core.now() - t0
    Q:stall(false)
    assert.is_nil(rows)
    assert.equal("timeout", err.code)
    assert.matches("query_timeout", err.message)
    assert.truthy(took >= 0.9 and took < 3, ("gave up after %.2fs"):format(took))
    assert.same({ { two = 2 } }, pdb:query("select 2 as two")) -- on a new connection
    -- a slow statement rather than a slow network: cancelled on the server too
    t0 = core.now()
    rows, err = pdb:query("select pg_sleep(5)")
    assert.equal("timeout", err.code)
    assert.truthy(core.now() - t0 < 3)
    assert.same({ { three = 3 } }, pdb:query("select 3 as three"))
    pdb:close()
    Q:stop()
    T.assert_no_leaks("pgstore-fault-sub")
  end)

  it("recovers by itself from a killed LISTEN backend, a restart and a stall, delivering everything once", function()
    local name, writers, per = "fault_listen", 4, 4000
    local total = writers * per
    local es = assert(db:events{ table = name, notify = name })
    assert(es:truncate())
    local cp = assert(db:checkpoints{ store = es }) -- made here if no spec made it before
    assert(cp:delete(name))
    cp:close()
    P = proxy.start{ lifetime = 300 }
    local dir = T.tmpdir("flisten")
    local delivered = dir .. "/delivered"

    local sub = T.spawn(([[
      local core = require "pgstore.core"
      local pgstore = require "pgstore"
      io.stdout:setvbuf("line")
      local pdb = assert(pgstore.connect{ dsn = arg[1], pool_size = 2, query_timeout = 2,
        connect_timeout = 2, application_name = "pgstore-fault-sub" })
      local es = assert(pdb:events{ table = %q, notify = %q, migrate = false })
      local sub = assert(pdb:subscribe{ name = %q, events = es, batch = 500, poll = 0.5,
        listen = { heartbeat = 1, heartbeat_timeout = 1, reconnect_max = 1 } })
      local out = assert(io.open(%q, "w"))
      local count, errors, pid, reconnects = 0, {}, nil, 0
      local deadline = core.now() + 150
      while count < %d and core.now() < deadline do
        local rows, err = sub:next(0.5)
        if rows then
          for _, e in ipairs(rows) do out:write(e.position, " ", e.data.w, " ", e.data.n, "\n") end
          out:flush()
          count = count + #rows
          if #rows > 0 then
            local ok, aerr = sub:ack(rows[#rows].position)
            if not ok then errors[#errors + 1] = "ack:" .. aerr.code end
          end
        else
          errors[#errors + 1] = err.code
          core.sleep(0.1)
        end
        local st = sub.listener:stats()
        if st.connected and st.pid ~= pid then pid = st.pid; print("LISTENPID " .. pid) end
        if sub.reconnects ~= reconnects then reconnects = sub.reconnects; print("RECONNECTS " .. reconnects) end
      end
      out:close()
      print(("DELIVERED %%d RECONNECTS %%d ERRORS %%s"):format(count, sub.reconnects, table.concat(errors, ",")))
      sub:close()
      es:close()
      pdb:close()
    ]]):format(name, name, name, delivered, total), P.dsn)

    local procs = {}
    for w = 1, writers do
      procs[w] = T.spawn(([[
        local core = require "pgstore.core"
        local w = tonumber(arg[1])
        local es = assert(db:events{ table = %q, notify = %q, migrate = false })
        for b = 1, %d do
          local batch = {}
          for i = 1, 20 do batch[i] = { type = "E", data = { w = w, n = (b - 1) * 20 + i } } end
          local key = ("w%%d-b%%d"):format(w, b)
          for attempt = 1, 400 do
            local r, err = es:append("w" .. w .. "-" .. (b %% 10), batch, { idempotency_key = key })
            if r then break end
            assert(attempt < 400, tostring(err))
            core.sleep(0.05)
          end
          core.sleep(0.1)
        end
        print("WROTE")
      ]]):format(name, name, per / 20), w)
    end

    local function count() return #lines(delivered) end
    local function reconnects() return tonumber(T.output(sub):match(".*RECONNECTS (%d+)") or 0) end
    local function wait_more(n, why)
      local from = count()
      assert(T.eventually(function() return count() >= math.min(from + n, total) end, 40),
        ("no progress after %s: %d delivered; subscriber says: %s"):format(why, count(), T.output(sub)))
    end

    wait_more(1500, "the start")
    -- 1. the LISTEN backend is terminated
    local pid = tonumber(T.output(sub):match(".*LISTENPID (%d+)"))
    assert.truthy(pid, T.output(sub))
    assert.is_true(T.admin():query("select pg_terminate_backend($1) as ok", pid)[1].ok)
    assert(T.eventually(function() return reconnects() >= 1 end, 15), "no reconnect after the kill")
    wait_more(1500, "the LISTEN backend was terminated")
    -- 2. the cluster is restarted
    local before = reconnects()
    T.testdb("restart")
    assert(T.eventually(function() return reconnects() > before end, 20), "no reconnect after the restart")
    wait_more(1500, "the restart")
    -- 3. the network stalls past the heartbeat (1 s + 1 s) and the query timeout (2 s)
    before = reconnects()
    P:stall(true)
    local at = count()
    core.sleep(6)
    local during = count() - at
    P:stall(false)
    assert(T.eventually(function() return reconnects() > before end, 20), "no reconnect after the stall")
    wait_more(1000, "the stall")

    for w = 1, writers do assert.matches("WROTE", (T.wait(procs[w], 90))) end
    local out, ended = T.wait(sub, 60)
    assert.is_true(ended, "the subscriber did not finish: " .. out)
    local n, recon, errs = out:match("DELIVERED (%d+) RECONNECTS (%d+) ERRORS (%S*)")
    assert.truthy(n, out)

    local seen, last, dup = {}, 0, 0
    for _, l in ipairs(lines(delivered)) do
      local pos, w, k = l:match("(%d+) (%d+) (%d+)")
      pos = tonumber(pos)
      assert.truthy(pos > last, "out of order at position " .. pos)
      last = pos
      local key = w .. ":" .. k
      if seen[key] then dup = dup + 1 end
      seen[key] = true
    end
    local distinct = 0
    for _ in pairs(seen) do distinct = distinct + 1 end
    local errcount = {}
    for e in (errs or ""):gmatch("[^,]+") do errcount[e] = (errcount[e] or 0) + 1 end
    local errlist = {}
    for e, c in pairs(errcount) do errlist[#errlist + 1] = e .. " " .. c end
    print(("\n  3 faults (LISTEN backend killed, restart, %0.fs stall: %d delivered during it);"
      .. " %d reconnects; transient errors: %s; %d events checked, lost %d, duplicated %d")
      :format(6, during, tonumber(recon), table.concat(errlist, ", "), total, total - distinct, dup))
    assert.equal(0, dup)
    assert.equal(total, distinct)
    assert.equal(total, db:query(("select count(*) as n from %s"):format(name))[1].n)
    assert.truthy(tonumber(recon) >= 3)
    es:close()
    T.sh("rm -rf " .. dir)
  end)
end)
