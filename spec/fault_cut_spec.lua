-- SPDX-License-Identifier: MIT
-- Connections cut around the commit, at random, by the project's proxy
-- (tests/proxy): sometimes the commit never reaches the server, sometimes
-- its answer never reaches the client. Either way the client cannot know
-- the outcome, and must say so: code `connection`, with the append's
-- idempotency key; retrying with that key returns the original result
-- (replayed) or writes once — never twice. For single appends, appends
-- inside a caller's transaction (COMMIT cut), and append_many; a
-- subscription whose acks are cut and a projection whose batch commits are
-- cut go on from the stored checkpoint, delivering and applying once.
local proxy = require "proxy"
local T = require "testenv"

describe("a connection cut around the commit", function()
  local db, es, P, pdb, pes
  local TABLE = "fault_cut"

  setup(function()
    db = T.connect()
    es = assert(db:events{ table = TABLE, notify = false })
    assert(es:truncate())
    P = proxy.start{ patterns = { [[_append_rows"(]], "COMMIT" }, probability = 0.25, lifetime = 300 }
    pdb = T.connect{ dsn = P.dsn, pool_size = 2 }
    pes = assert(pdb:events{ table = TABLE, notify = false, migrate = false })
  end)

  teardown(function()
    pes:close()
    pdb:close()
    P:stop()
    es:close()
    db:close()
    T.assert_no_leaks()
  end)

  local function batch(key, n)
    local b = {}
    for i = 1, n do b[i] = { type = "E", data = { k = key, i = i } } end
    return b
  end

  -- Every key's events are there once: as many rows as the append had, at
  -- the positions its (final) result gave.
  local function check_once(results)
    local per_key = {}
    for _, r in ipairs(assert(db:query(("select data->>'k' as k, count(*) as n, min(position) as fp,"
      .. " max(position) as lp from %s group by 1"):format(TABLE)))) do
      per_key[r.k] = r
    end
    for key, res in pairs(results) do
      local row = per_key[key]
      assert.truthy(row, key .. " is missing")
      assert.equal(res.count, row.n, key .. " is there " .. tostring(row and row.n) .. " times over")
      assert.equal(res.first_position, row.fp)
      assert.equal(res.last_position, row.lp)
    end
    for _, r in ipairs(assert(db:query(("select stream, count(*) as n, max(version) as hi from %s group by 1")
      :format(TABLE)))) do
      assert.equal(r.n, r.hi, "stream " .. r.stream .. " has a version gap")
    end
  end

  local function keyed(prefix, results)
    local n = 0
    for k in pairs(results) do if k:sub(1, #prefix) == prefix then n = n + 1 end end
    return n
  end

  it("reports `connection` with the key, and the retry returns the original result", function()
    local results, ambiguous, replayed = {}, 0, 0
    for i = 1, 300 do
      local key, stream = "single-" .. i, "s" .. (i % 10)
      local n = i % 3 + 1
      for attempt = 1, 40 do
        local r, err = pes:append(stream, batch(key, n), { idempotency_key = key })
        if r then
          results[key] = r
          if r.replayed then replayed = replayed + 1 end
          break
        end
        assert.equal("connection", err.code, tostring(err))
        assert.equal(key, err.idempotency_key)
        assert.matches("outcome unknown", err.message)
        ambiguous = ambiguous + 1
        assert.truthy(attempt < 40, "40 attempts cut in a row")
      end
    end
    assert.equal(300, keyed("single-", results))
    check_once(results)
    local c = P:cuts()
    print(("\n  %d cuts (%d after the commit was sent, %d before); %d ambiguous outcomes, %d retries"
      .. " answered from the original (replayed); 300 appends checked, lost 0, duplicated 0")
      :format(c.after + c.before, c.after, c.before, ambiguous, replayed))
    assert.truthy(c.after > 0 and c.before > 0, "the proxy cut too little to test both cases")
    assert.truthy(replayed > 0, "no retry was answered from the original")
    assert.equal(c.after + c.before, ambiguous)
  end)

  it("inside a transaction: a cut COMMIT is `connection`, and re-running it with the key writes once", function()
    local results, ambiguous = {}, 0
    local before = P:cuts()
    for i = 1, 150 do
      local key, stream = "tx-" .. i, "t" .. (i % 5)
      for attempt = 1, 40 do
        local r, err = pdb:transaction(function(tx)
          return pes:append(stream, batch(key, 2), { idempotency_key = key, tx = tx })
        end)
        if r then
          results[key] = r
          break
        end
        assert.equal("connection", err.code, tostring(err))
        ambiguous = ambiguous + 1
        assert.truthy(attempt < 40, "40 attempts cut in a row")
      end
    end
    assert.equal(150, keyed("tx-", results))
    check_once(results)
    local c = P:cuts()
    print(("\n  %d cuts inside transactions, %d ambiguous outcomes; 150 transactions checked, lost 0, duplicated 0")
      :format(c.after + c.before - before.after - before.before, ambiguous))
    assert.truthy(ambiguous > 0)
  end)

  it("append_many: a cut is `connection` with every batch's key, and the retry returns all of them", function()
    local results, ambiguous, replayed = {}, 0, 0
    for i = 1, 100 do
      local batches = {}
      for j = 1, 3 do
        local key = ("many-%d-%d"):format(i, j)
        batches[j] = { stream = "m" .. ((i + j) % 7), events = batch(key, j), idempotency_key = key }
      end
      for attempt = 1, 40 do
        local rs, err = pes:append_many(batches)
        if rs then
          assert.equal(rs[1].replayed, rs[3].replayed) -- all or nothing
          for j, r in ipairs(rs) do results[batches[j].idempotency_key] = r end
          if rs[1].replayed then replayed = replayed + 1 end
          break
        end
        assert.equal("connection", err.code, tostring(err))
        assert.same({ batches[1].idempotency_key, batches[2].idempotency_key, batches[3].idempotency_key },
          err.idempotency_keys)
        ambiguous = ambiguous + 1
        assert.truthy(attempt < 40, "40 attempts cut in a row")
      end
    end
    assert.equal(300, keyed("many-", results))
    check_once(results)
    print(("\n  append_many: %d ambiguous outcomes, %d answered from the original; 100 calls checked")
      :format(ambiguous, replayed))
    assert.truthy(ambiguous > 0)
  end)

  it("a subscription whose ack had an unknown outcome keeps going, without a conflict", function()
    -- A proxy of its own that cuts only checkpoint writes, half of the time.
    local CP = proxy.start{ patterns = { [[SET position = $3::bigint]] }, probability = 0.5, lifetime = 120 }
    local cdb = T.connect{ dsn = CP.dsn, pool_size = 2 }
    local name = T.unique("fault_cut_sub")
    local aes = assert(db:events{ table = "fault_cut_acks", notify = false })
    assert(aes:truncate())
    for i = 1, 40 do
      local b = {}
      for j = 1, 5 do b[j] = { type = "A", data = { i = i, j = j } } end
      assert(aes:append("acks", b))
    end
    local ces = assert(cdb:events{ table = "fault_cut_acks", notify = false, migrate = false })
    local sub = assert(cdb:subscribe{ name = name, events = ces, batch = 1, listen = false })
    local delivered, unknown = 0, 0
    local total = 200
    for _ = 1, total + 10 do
      local rows = assert(sub:next(0))
      if #rows == 0 then break end
      delivered = delivered + 1
      local ok, err = sub:ack(rows[1].position)
      if not ok then
        assert.equal("connection", err.code, tostring(err))
        unknown = unknown + 1
      end
    end
    assert.equal(total, delivered)
    assert.truthy(unknown > 0, "no ack was cut")
    -- whatever the cuts did, the stored checkpoint is the last ack that succeeded or later
    local ok = T.eventually(function() return sub:ack(sub:position()) end, 5)
    assert.truthy(ok)
    local cp = assert(db:checkpoints{ store = ces })
    assert.equal(sub:position(), cp:load(name))
    print(("\n  subscription: %d acks cut (%d cuts), none wedged it"):format(unknown, CP:cuts().after + CP:cuts().before))
    cp:close()
    sub:close()
    ces:close()
    aes:close()
    cdb:close()
    CP:stop()
  end)

  it("a projection whose batch COMMIT had an unknown outcome goes on from the stored checkpoint, once", function()
    -- Cuts around the projection's transactions (BEGIN … READ COMMITTED matches too).
    local CP = proxy.start{ patterns = { "COMMIT" }, probability = 0.3, lifetime = 120 }
    local cdb = T.connect{ dsn = CP.dsn, pool_size = 2 }
    local name = T.unique("fault_cut_proj")
    local pes = assert(db:events{ table = "fault_cut_proj", notify = false })
    assert(pes:truncate())
    local total = 300
    for i = 1, total / 10 do
      local b = {}
      for j = 1, 10 do b[j] = { type = "P", data = { i = i, j = j } } end
      assert(pes:append("p" .. i % 4, b))
    end
    assert(db:exec(("create table %s (position bigint primary key, applied int not null)"):format(name)))
    local upsert = ("insert into %s as t values ($1, 1) on conflict (position) do update set applied = t.applied + 1")
      :format(name)
    local def = { name = name, types = { "P" }, batch = 10, on_error = "stop", partitions = 8,
                  handlers = { P = function(e, tx) assert(tx:exec(upsert, e.position)) end } }
    local said = {}
    local runner, err
    for _ = 1, 20 do -- its schema steps run in transactions the proxy may cut too
      runner, err = require("pgstore.projection").runner(cdb, { def },
        { events = pes, once = true, poll = 0.05, say = function(m) said[#said + 1] = m end })
      if runner then break end
      assert.equal("connection", err.code, tostring(err))
    end
    assert.truthy(runner, "20 cuts in a row")
    local res
    res, err = runner:run()
    runner:close()
    assert.truthy(res, tostring(err))
    local rows = assert(db:query(("select count(*)::int as n, max(applied) as most, min(applied) as least from %s")
      :format(name)))[1]
    assert.same({ n = total, most = 1, least = 1 }, rows, "every event applied exactly once")
    local cp = assert(db:checkpoints{ store = pes })
    assert.equal(pes:latest_position(), cp:load("projection:" .. name))
    cp:close()
    local unknown = 0
    for _, m in ipairs(said) do if m:find("commit outcome unknown", 1, true) then unknown = unknown + 1 end end
    local c = CP:cuts()
    print(("\n  projection: %d batches with an unknown outcome (%d cuts after the commit was sent, %d before);"
      .. " %d events applied once"):format(unknown, c.after, c.before, total))
    assert.truthy(unknown > 0 and c.after > 0, "no batch commit was cut")
    assert(db:exec("drop table " .. name))
    pes:close()
    cdb:close()
    CP:stop()
  end)

  it("leaves the pool usable and nothing borrowed", function()
    assert.same({ { one = 1 } }, pdb:query("select 1 as one"))
    local st = pdb:pool_stats()
    assert.equal(0, st.borrowed)
    assert.truthy(st.open <= 2)
  end)
end)
