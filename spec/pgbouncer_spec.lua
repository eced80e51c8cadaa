-- SPDX-License-Identifier: MIT
-- pgstore behind a real PgBouncer in transaction pooling mode, with two
-- server connections shared by every client: appends and reads from
-- concurrent writer processes, read_all order, pgstore's session settings,
-- subscriptions listening on a direct listen_dsn, leases and partitions,
-- and the session features refused with a clear error.
local T = require "testenv"
local B = require "pgbouncer"
local core = require "pgstore.core"
local pgstore = require "pgstore"

describe("pgstore behind PgBouncer (pool_mode = transaction)", function()
  local bouncer, db

  local function connect(opts)
    opts = opts or {}
    opts.dsn = bouncer.dsn
    opts.pooler = opts.pooler or "transaction"
    opts.application_name = opts.application_name or "pgstore-spec"
    return assert(pgstore.connect(opts))
  end

  -- A host process running code against PgBouncer (PGSTORE_POOLER), with
  -- LISTEN going straight to the server (PGSTORE_LISTEN_DSN).
  local function spawn(code, ...)
    local dir = T.tmpdir("bouncer")
    T.write(dir .. "/script.lua", code)
    local args = {}
    for i, a in ipairs{ ... } do args[i] = ("%q"):format(tostring(a)) end
    local out = T.sh(("PGSTORE_POOLER=transaction PGSTORE_LISTEN_DSN=%q %s --dsn %q run %s/script.lua %s >%s/out 2>&1 & echo $!")
      :format(T.dsn(), T.host(), bouncer.dsn, dir, table.concat(args, " "), dir))
    return { pid = tonumber(out:match("(%d+)")), dir = dir, out = dir .. "/out" }
  end

  local function finish(proc)
    local out, ended = T.wait(proc, 30)
    T.sh("rm -rf " .. proc.dir)
    return out, ended
  end

  setup(function()
    bouncer = B.start(T.dsn(), { pool_size = 2 })
    db = connect{ pool_size = 4, listen_dsn = T.dsn() }
  end)

  teardown(function()
    if db then db:close() end
    if bouncer then bouncer:stop() end
    T.assert_no_leaks()
  end)

  it("runs appends, reads and read_all from concurrent writer processes in order", function()
    local name = T.unique("bnc_ev")
    local es = assert(db:events{ table = name, notify = false })
    local writers, per = 4, 40
    local procs = {}
    for w = 1, writers do
      procs[w] = spawn(([[
        local es = assert(db:events{ table = %q, notify = false })
        local w, per = tonumber(arg[1]), tonumber(arg[2])
        for i = 1, per do
          -- one stream of its own (exact versions) and one shared by all (any)
          assert(es:append("w" .. w, { { type = "e", data = { w = w, i = i } } }, { expected = i - 1 }))
          assert(es:append("shared", { { type = "s", data = { w = w, i = i } } }, { expected = "any" }))
          assert(es:read("w" .. w, { from = i })[1].data.i == i)
        end
        print("done " .. w)]]):format(name), w, per)
    end
    -- Follow read_all while they write: every event once, in position order.
    local seen, cursor, last, dup = {}, 0, 0, 0
    local want = writers * per * 2
    local deadline = core.now() + 30
    local count = 0
    while count < want and core.now() < deadline do
      local events, c = assert(es:read_all{ after = cursor, limit = 100 })
      for _, e in ipairs(events) do
        assert.is_true(e.position > last)
        last = e.position
        local key = e.stream .. ":" .. e.data.w .. ":" .. e.data.i
        if seen[key] then dup = dup + 1 end
        seen[key] = true
        count = count + 1
      end
      cursor = c
      if #events == 0 then core.sleep(0.02) end
    end
    for w = 1, writers do
      local out = finish(procs[w])
      assert.matches("done " .. w, out)
    end
    assert.equal(0, dup)
    assert.equal(want, count)
    for w = 1, writers do
      local rows = assert(es:read("w" .. w))
      assert.equal(per, #rows)
      assert.equal(per, assert(es:version("w" .. w)))
    end
    assert.equal(writers * per, #assert(es:read("shared")))
    -- PgBouncer held the server side to its pool: clients really shared it.
    assert.is_nil(bouncer:log():match("prepared statement"))
  end)

  it("keeps pgstore's settings per client and its timeouts per transaction", function()
    local other = connect{ pool_size = 2 }
    local timed = connect{ pool_size = 2, statement_timeout = 300, lock_timeout = 200 }
    -- A stranger's session SET, on a server session shared with us.
    assert(other:exec("SET TimeZone = 'Asia/Tokyo'"))
    assert(other:exec("SET DateStyle = 'SQL, DMY'"))
    for _ = 1, 10 do
      local r = assert(timed:query("select now()::text as t, current_setting('DateStyle') as ds"))
      assert.matches("%+00$", r[1].t)
      assert.equal("ISO, MDY", r[1].ds)
    end
    local ok, err = timed:transaction(function(tx)
      return tx:query("select pg_sleep(2)")
    end)
    assert.is_nil(ok)
    assert.equal("57014", err.sqlstate)
    local r = assert(timed:transaction(function(tx)
      return tx:query("select current_setting('lock_timeout') as lt")
    end))
    assert.equal("200ms", r[1].lt)
    -- nothing of it leaks to the next transaction of another client
    r = assert(db:query("select current_setting('statement_timeout') as st"))
    assert.equal("0", r[1].st)
    other:close()
    timed:close()
  end)

  it("sends bytea parameters binary with unnamed statements", function()
    local kv = assert(db:kv{ table = T.unique("bnc_kv"), cleanup_interval = 3600 })
    local bytes = "\0\1\255 \\x00 '\0"
    for i = 1, 20 do assert(kv:set("k" .. i, bytes .. i)) end
    for i = 1, 20 do assert.equal(bytes .. i, kv:get("k" .. i)) end
    kv:close()
  end)

  it("delivers live events to a subscription listening on listen_dsn", function()
    local name = T.unique("bnc_sub")
    local es = assert(db:events{ table = name })
    local sub = assert(db:subscribe{ name = "c1", events = es, from = "start", poll = 30 })
    assert.is_not_nil(sub.listener) -- LISTEN went to the server, not through PgBouncer
    assert.same({}, assert(sub:next(0.2)))
    local writer = spawn(([[
      local es = assert(db:events{ table = %q })
      for i = 1, 5 do assert(es:append("s", { { type = "e", data = { i = i } } })); require("pgstore.core").sleep(0.1) end
      print("done")]]):format(name))
    local got, deadline = {}, core.now() + 10
    while #got < 5 and core.now() < deadline do
      -- poll is 30 s: only the NOTIFY heard on listen_dsn wakes it in time
      for _, e in ipairs(assert(sub:next(3))) do got[#got + 1] = e.data.i end
    end
    assert.matches("done", (finish(writer)))
    assert.same({ 1, 2, 3, 4, 5 }, got)
    sub:close()
  end)

  it("refuses what needs a session of its own, naming the option", function()
    local lock, err = db:lock(T.unique("k"))
    assert.is_nil(lock)
    assert.equal("invalid", err.code)
    assert.matches('pooler = "transaction"', err.message, 1, true)
    assert.matches('mode = "table"', err.message, 1, true)
    local nolisten = connect{ pool_size = 1 }
    local l
    l, err = nolisten:listen("some_channel")
    assert.is_nil(l)
    assert.equal("invalid", err.code)
    assert.matches("listen_dsn", err.message, 1, true)
    nolisten:close()
    local bad
    bad, err = pgstore.connect{ dsn = bouncer.dsn, pooler = "statement" }
    assert.is_nil(bad)
    assert.equal("invalid", err.code)
    assert.matches("pooler", err.message)
    -- table-mode locks and transaction locks work through the pooler
    local key = T.unique("tk")
    lock = assert(db:lock(key, { mode = "table", ttl = 5 }))
    assert.is_true(lock:held())
    assert.is_nil(db:try_lock(key, { mode = "table" }))
    lock:release()
    assert(db:transaction(function(tx) return tx:lock(key) end))
  end)

  it("names pooler = \"transaction\" when connected without it", function()
    -- PgBouncer refuses the options pgstore sends at startup
    local plain = assert(pgstore.connect{ dsn = bouncer.dsn, application_name = "pgstore-spec" })
    local bad, err = plain:query("select 1")
    plain:close()
    assert.is_nil(bad)
    assert.equal("connection", err.code)
    assert.matches("unsupported startup parameter: options", err.message, 1, true)
    assert.matches('pooler = "transaction"', err.hint, 1, true)
    assert.matches('pooler = "transaction"', err.message, 1, true)
    -- told to ignore them, it hands one client's prepared statements to
    -- another's session: one server connection, two clients
    local lax = B.start(T.dsn(), { pool_size = 1, ignore = "options" })
    local a = assert(pgstore.connect{ dsn = lax.dsn, pool_size = 1, application_name = "pgstore-spec" })
    local b = assert(pgstore.connect{ dsn = lax.dsn, pool_size = 1, application_name = "pgstore-spec" })
    assert(a:query("select $1::int as n", 1))
    local rows
    rows, err = b:query("select $1::text as t", "x")
    lax:stop()
    a:close()
    b:close()
    assert.is_nil(rows)
    assert.equal("42P05", err.sqlstate)
    assert.matches('pooler = "transaction"', err.hint, 1, true)
    assert.matches('pooler = "transaction"', err.message, 1, true)
  end)

  it("shares partitions between worker processes with fenced writes", function()
    local set, out = T.unique("bnc_parts"), T.unique("bnc_work")
    assert(db:exec(("create table %s (p int, token bigint, worker int)"):format(out)))
    local code = ([[
      local core = require "pgstore.core"
      local pm = assert(db:partitions{ name = %q, count = 4, lease = 3, renew = 0.3 })
      local deadline, writes = core.now() + 3, 0
      while core.now() < deadline do
        assert(pm:tick())
        for p, token in pairs(pm:owned()) do
          local ok, err = db:transaction(function(tx)
            assert(tx:exec("insert into %s values ($1, $2, $3)", p, token, tonumber(arg[1])))
            return pm:guard(tx, p, token)
          end)
          if ok then writes = writes + 1 elseif err.code ~= "lease_lost" then error(tostring(err)) end
        end
        core.sleep(0.1)
      end
      print("writes " .. writes)
      pm:close()]]):format(set, out)
    local a, b = spawn(code, 1), spawn(code, 2)
    local oa, ob = finish(a), finish(b)
    local wa, wb = oa:match("writes (%d+)"), ob:match("writes (%d+)")
    assert(wa and wb, oa .. ob)
    assert.is_true(tonumber(wa) > 0 and tonumber(wb) > 0) -- both worked
    -- One tenure (token) of a partition wrote for one worker only.
    local rows = assert(db:query(("select p, token, count(distinct worker) as n from %s group by p, token"):format(out)))
    assert.is_true(#rows > 0)
    for _, r in ipairs(rows) do assert.equal(1, r.n) end
    -- and every partition was worked
    rows = assert(db:query(("select count(distinct p) as n from %s"):format(out)))
    assert.equal(4, rows[1].n)
  end)
end)
