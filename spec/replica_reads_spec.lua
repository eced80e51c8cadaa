-- SPDX-License-Identifier: MIT
-- Reads on replicas, against a private primary + streaming replica (the
-- replica is paused, stopped, frozen with SIGSTOP and promoted here):
-- consistent reads see every write committed before they began, whoever
-- made it; version and status answer from the primary; a sick replica is
-- skipped within a bound and reads go on.
local pgstore = require "pgstore"
local core = require "pgstore.core"
local T = require "testenv"
local R = require "privatereplica"

local APP = "pgstore-replica-reads"

describe("causal tokens", function()
  local replicas = require "pgstore.replicas"
  for _, c in ipairs{
    { "0/0", 0 }, { "0/3000060", 0x3000060 }, { "16/B374D848", 0x16 * 2 ^ 32 + 0xB374D848 },
    { "FFFF/FFFFFFFF", 0xFFFF * 2 ^ 32 + 0xFFFFFFFF },
    { "", nil }, { "0/", nil }, { "x/1", nil }, { "1/123456789", nil }, { " 0/1", nil }, { 5, nil },
  } do
    it(("reads %q as %s"):format(tostring(c[1]), tostring(c[2])), function()
      assert.equal(c[2], replicas.lsn_number(c[1]))
    end)
  end

  it("refuses a malformed after_lsn with no replica too", function()
    local db = T.connect{ application_name = APP }
    local es = assert(db:events{ table = "rr_tok", notify = false })
    local rows, err = es:read("s", { after_lsn = "0/ZZ" })
    assert.is_nil(rows)
    assert.equal("invalid", err.code)
    assert.same({}, assert(es:read("s", { after_lsn = "0/1" })))
    es:close()
    db:close()
    T.assert_no_leaks(APP)
  end)
end)

describe("reads on replicas", function()
  local rep, admin, radmin
  local function connect(extra)
    local o = { dsn = rep.primary.dsn, read_dsn = rep.dsn, application_name = APP, connect_timeout = 2 }
    for k, v in pairs(extra or {}) do o[k] = v end
    return assert(pgstore.connect(o))
  end
  -- Waits until the replica has replayed everything the primary has now.
  local function caught_up()
    radmin:query("select pg_wal_replay_resume()") -- a test that failed may have left it paused
    local lsn = admin:query("select pg_current_wal_insert_lsn()::text as l")[1].l
    assert(T.eventually(function()
      local r = radmin:query("select pg_last_wal_replay_lsn() >= $1::pg_lsn as ok", lsn)
      return r and r[1].ok == true
    end, 20), "the replica never caught up")
  end
  local function pause_replay() assert(radmin:query("select pg_wal_replay_pause()")) end
  local function resume_replay() assert(radmin:query("select pg_wal_replay_resume()")) end
  -- Appends from another process (the host), which exits before we read.
  local function append_elsewhere(stream, n, dsn)
    local dir = T.tmpdir("rr")
    T.write(dir .. "/w.lua", ([[
      local es = assert(db:events{ table = "rr", notify = false, migrate = false })
      for i = 1, %d do assert(es:append(%q, { { type = "W", data = { i = i } } })) end
      print("appended, token " .. assert(db:causal_token()))]]):format(n, stream))
    local out, rc = T.sh(("%s --dsn %q run %s/w.lua"):format(T.host(), dsn or rep.primary.dsn, dir))
    T.sh("rm -rf " .. dir)
    assert(rc == 0 and out:match("appended"), out)
    return out:match("token (%S+)")
  end
  local function timed(fn)
    local t0 = core.now()
    local a, b = fn()
    return core.now() - t0, a, b
  end

  setup(function()
    rep = R.start("replica-reads")
    admin = assert(pgstore.connect{ dsn = rep.primary.dsn, application_name = "rr-admin" })
    radmin = assert(pgstore.connect{ dsn = rep.dsn, application_name = "rr-admin", query_timeout = 30 })
    local boot = assert(admin:events{ table = "rr", notify = false })
    boot:close()
    caught_up()
  end)
  teardown(function()
    if admin then admin:close() end
    if radmin then radmin:close() end
    if rep then rep:stop() end
  end)

  describe("consistent = true", function()
    it("sees a write another process committed before the read began", function()
      pause_replay()
      local db = connect{ }
      local es = assert(db:events{ table = "rr", notify = false, migrate = false })
      append_elsewhere("other", 1)
      local took, rows = timed(function() return es:read("other", { consistent = true, consistent_timeout = 0.3 }) end)
      resume_replay()
      assert.equal(1, #assert(rows), "a consistent read missed another process's committed write")
      assert.truthy(took < 2, ("took %.2fs"):format(took))
      es:close()
      db:close()
    end)

    it("sees every own write with synchronous_commit = off", function()
      caught_up()
      local db = connect{ dsn = rep.primary.dsn .. " options='-c synchronous_commit=off'" }
      local es = assert(db:events{ table = "rr", notify = false, migrate = false })
      local seen = 0
      for i = 1, 20 do
        local r = assert(es:append("async", { { type = "E", data = { i = i } } }))
        local rows = assert(es:read("async", { consistent = true, from = r.first_version }))
        if #rows == 1 and rows[1].data.i == i then seen = seen + 1 end
      end
      assert.equal(20, seen)
      es:close()
      db:close()
    end)

    it("waits on a replica for a causal token another process took after its writes", function()
      caught_up()
      pause_replay()
      local db = connect{ }
      local es = assert(db:events{ table = "rr", notify = false, migrate = false })
      local token = append_elsewhere("tok", 1) -- the writer hands its token on
      assert.is_string(token)
      -- replay paused: the token is not reached, so the read goes to the primary
      local rows = assert(es:read("tok", { after_lsn = token, consistent_timeout = 0.3 }))
      assert.equal(1, #rows)
      resume_replay()
      rows = assert(es:read("tok", { after_lsn = token }))
      assert.equal(1, #rows)
      local _, err = es:read("tok", { after_lsn = "nonsense" })
      assert.equal("invalid", err.code)
      es:close()
      db:close()
    end)
  end)

  it("answers version and status from the primary", function()
    caught_up()
    pause_replay()
    local db = connect{ }
    local es = assert(db:events{ table = "rr", notify = false, migrate = false })
    local v0 = assert(es:version("vs"))
    assert(es:append("vs", { { type = "A" } }, { expected = v0 == 0 and "no_stream" or v0 }))
    local v = es:version("vs")
    local st = es:status("vs")
    -- read the version, then append with it: no conflict with one's own write
    local ok, err = es:append("vs", { { type = "B" } }, { expected = v })
    resume_replay()
    assert.equal(v0 + 1, v)
    assert.equal("active", st)
    assert.truthy(ok, err and tostring(err))
    es:close()
    db:close()
  end)

  describe("a sick replica", function()
    local function reads_survive(db, n, bound)
      local es = assert(db:events{ table = "rr", notify = false, migrate = false })
      local worst, failed = 0, 0
      for _ = 1, n do
        local took, rows, err = timed(function() return es:read("health") end)
        if not rows then failed = failed + 1; print(err) end
        if took > worst then worst = took end
      end
      es:close()
      return failed, worst
    end

    it("down: plain reads go on, none fails, each within the connect timeout", function()
      assert(admin:events{ table = "rr", notify = false, migrate = false }):append("health", { { type = "H" } })
      caught_up()
      local db = connect{ }
      assert(db:events{ table = "rr", notify = false, migrate = false }):read("health") -- a pooled replica connection
      rep:down()
      local failed, worst = reads_survive(db, 10)
      rep:up()
      db:close()
      assert.equal(0, failed)
      assert.truthy(worst < 3, ("a read took %.2fs"):format(worst))
    end)

    it("frozen (SIGSTOP): reads go on within the bound, never until SIGCONT", function()
      caught_up()
      local db = connect{ }
      assert(db:events{ table = "rr", notify = false, migrate = false }):read("health")
      rep:freeze()
      local t0 = core.now()
      local ok, failed, worst = pcall(reads_survive, db, 10)
      local total = core.now() - t0
      rep:thaw()
      assert(ok, failed)
      db:close()
      assert.equal(0, failed)
      assert.truthy(worst < 3.5, ("a read took %.2fs"):format(worst))
      -- skipped after the first failure: not 10 times the bound
      assert.truthy(total < 6, ("10 reads took %.2fs"):format(total))
    end)

    it("frozen: a consistent read answers within consistent_timeout or the connect timeout", function()
      caught_up()
      local db = connect{ }
      local es = assert(db:events{ table = "rr", notify = false, migrate = false })
      assert(es:read("health"))
      rep:freeze()
      assert(es:append("health", { { type = "H2" } }))
      local took, rows = timed(function() return es:read("health", { consistent = true, consistent_timeout = 0.5 }) end)
      rep:thaw()
      es:close()
      db:close()
      assert.equal(2, #assert(rows))
      assert.truthy(took < 3.5, ("took %.2fs"):format(took))
    end)

    it("lagging past replica_max_lag: plain reads go elsewhere", function()
      caught_up()
      local db = connect{ replica_max_lag = 0.5 }
      local es = assert(db:events{ table = "rr", notify = false, migrate = false })
      assert(es:read("lag"))
      pause_replay()
      assert(es:append("lag", { { type = "L" } }))
      local rows = T.eventually(function()
        local r = assert(es:read("lag"))
        return #r == 1 and r
      end, 4)
      resume_replay()
      es:close()
      db:close()
      assert.truthy(rows, "plain reads kept going to a replica that stopped replaying")
    end)

    it("promoted: no longer treated as a replica", function()
      caught_up()
      local db = connect{ }
      local es = assert(db:events{ table = "rr", notify = false, migrate = false })
      assert(es:read("promo"))
      assert(radmin:query("select pg_promote(true, 30)"))
      assert(es:append("promo", { { type = "P" } }))
      local took, rows = timed(function() return es:read("promo", { consistent = true, consistent_timeout = 3 }) end)
      assert.equal(1, #assert(rows))
      assert.truthy(took < 1.5, ("a consistent read waited %.2fs on a promoted replica"):format(took))
      rows = T.eventually(function()
        local r = assert(es:read("promo"))
        return #r == 1 and r
      end, 3)
      assert.truthy(rows, "plain reads kept going to a promoted replica")
      es:close()
      db:close()
    end)
  end)

end)
