-- SPDX-License-Identifier: MIT
-- What a pooled connection carries from one borrower to the next: nothing.
-- SET, search_path, temporary tables, advisory locks, LISTEN, roles, cursors
-- and statements a borrower prepared are gone on release, pgstore's own
-- session settings are back, and pgstore's prepared statements stay. Also
-- the DSN's `options=` (any length, pgstore's settings kept, or `invalid`)
-- and error scrubbing with a password made of asterisks.
local T = require "testenv"
local pgstore = require "pgstore"

-- One connection, so the next borrower is on the same backend.
local function one_conn_db(opts)
  opts = opts or {}
  opts.pool_size = 1
  return T.connect(opts)
end

local function setting(db, name)
  return db:query("select current_setting($1, true) as v", name)[1].v
end

describe("a pooled connection given back", function()
  local db
  before_each(function() db = one_conn_db{ statement_timeout = 7000, lock_timeout = 3000 } end)
  after_each(function()
    db:close()
    T.assert_no_leaks()
  end)

  -- Runs fn(conn) as a borrower, then gives the connection back.
  local function borrow(fn)
    local c = assert(db:acquire())
    fn(c)
    c:release()
  end

  it("keeps a temp table from shadowing a store table for the next borrower", function()
    local t = T.unique("ps_cp")
    local cp = assert(db:checkpoints{ table = t })
    assert(cp:save("other", 42))
    borrow(function(c)
      assert(c:exec(("create temp table %s (like public.%s including all)"):format(t, t)))
    end)
    -- Another consumer opens the store afterwards: it must find the real table.
    local again = assert(db:checkpoints{ table = t })
    assert.equal(42, again:load("other"))
    assert.same({ { n = 0 } }, db:query("select count(*)::int as n from pg_class where relpersistence = 't'"))
  end)

  it("resets SET and search_path, and keeps pgstore's own session settings", function()
    local pid = db:query("select pg_backend_pid() as p")[1].p
    borrow(function(c)
      assert(c:exec("set search_path = pg_catalog"))
      assert(c:exec("set work_mem = '77MB'"))
      assert(c:exec("set TimeZone = 'Asia/Tokyo'"))
      assert(c:exec("set DateStyle = 'SQL, DMY'"))
      assert(c:exec("set lock_timeout = 0"))
      assert(c:exec("set application_name = 'someone-else'"))
      assert(c:exec("set default_transaction_read_only = on"))
      assert(c:exec("select set_config('pgstore.order_lock_1', 'held', false)"))
      assert(c:exec("set statement_timeout = 1500")) -- last: it holds for what follows (not 1 ms: the reset starts under it)
    end)
    assert.equal(pid, db:query("select pg_backend_pid() as p")[1].p)
    assert.equal('"$user", public', setting(db, "search_path"))
    assert.equal("4MB", setting(db, "work_mem"))
    assert.equal("UTC", setting(db, "TimeZone"))
    assert.equal("ISO, MDY", setting(db, "DateStyle"))
    assert.equal("7s", setting(db, "statement_timeout"))
    assert.equal("3s", setting(db, "lock_timeout"))
    assert.equal("pgstore-spec", setting(db, "application_name"))
    assert.equal("off", setting(db, "default_transaction_read_only"))
    assert.is_not.equal("held", setting(db, "pgstore.order_lock_1"))
  end)

  it("drops session advisory locks, LISTEN, cursors and a changed role", function()
    local role = T.unique("ps_role")
    assert(T.admin():exec(("create role %s"):format(role)))
    borrow(function(c)
      assert(c:query("select pg_advisory_lock(4242)"))
      assert(c:query("select pg_advisory_lock_shared(4243)"))
      assert(c:exec("listen ps_channel"))
      assert(c:exec("begin; declare ps_cur cursor with hold for select 1; commit"))
      assert(c:exec(("set role %s"):format(role)))
    end)
    -- The lock is free for anybody else.
    local other = T.connect{ pool_size = 1, application_name = "pgstore-spec" }
    assert.same({ { got = true } }, other:query("select pg_try_advisory_lock(4242) as got"))
    assert(other:query("select pg_advisory_unlock(4242)"))
    other:close()
    assert.same({ { n = 0 } }, db:query("select count(*)::int as n from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()"))
    assert.same({ { n = 0 } }, db:query("select count(*)::int as n from pg_listening_channels()"))
    assert.same({ { n = 0 } }, db:query("select count(*)::int as n from pg_cursors"))
    assert.equal("postgres", db:query("select current_user::text as u")[1].u)
    assert(T.admin():exec(("drop role %s"):format(role)))
  end)

  it("does not hand a notification meant for the last borrower to the next", function()
    borrow(function(c)
      assert(c:exec("listen ps_late"))
      assert(c:exec("notify ps_late, 'for the last borrower'"))
    end)
    assert.same({ { n = 0 } }, db:query("select count(*)::int as n from pg_listening_channels()"))
  end)

  it("keeps pgstore's prepared statements, and drops what a borrower prepared", function()
    local es = assert(db:events{ table = T.unique("ps_ev") })
    assert(es:append("s-1", { { type = "A", data = {} } }))
    local function ours()
      return db:query("select count(*)::int as n from pg_prepared_statements where not from_sql")[1].n
    end
    local before = ours()
    assert.truthy(before > 0)
    borrow(function(c) assert(c:exec("prepare mine as select 1")) end)
    assert.same({ { n = 0 } }, db:query("select count(*)::int as n from pg_prepared_statements where from_sql"))
    assert.equal(before, ours())
    assert(es:append("s-1", { { type = "A", data = {} } }))
    local r = assert(es:read("s-1"))
    assert.equal(2, #r)
  end)

  it("cleans after a borrower's own SQL, and costs nothing after pgstore's own statements", function()
    local pid = db:query("select pg_backend_pid() as p")[1].p
    local function last_query()
      return T.admin():query("select query from pg_stat_activity where pid = $1", pid)[1].query
    end
    assert(T.eventually(function() return last_query():match("^RESET ALL") end))
    local kv = assert(db:kv{ table = T.unique("ps_kv"), cleanup_interval = 0 })
    assert(kv:set("k", "v"))
    assert.equal("v", kv:get("k"))
    assert(T.eventually(function() return last_query():match("^SELECT value FROM") end))
    kv:close()
    assert(db:query("select 1"))
    assert(T.eventually(function() return last_query():match("^RESET ALL") end))
  end)

  it("does not run a statement a borrower put in place of pgstore's", function()
    local t = T.unique("ps_hijack")
    local cp = assert(db:checkpoints{ table = t })
    assert(cp:save("c", 42))
    assert.equal(42, cp:load("c"))
    borrow(function(c)
      -- Every statement pgstore prepared, swapped for one that answers 0.
      local names = assert(c:query("select name, parameter_types::text as p from pg_prepared_statements where not from_sql"))
      for _, row in ipairs(names) do
        local types = row.p:match("^{(.*)}$")
        assert(c:exec(('deallocate "%s"'):format(row.name)))
        assert(c:exec(('prepare "%s"%s as select 0::bigint as position'):format(row.name,
          types ~= "" and "(" .. types .. ")" or "")))
      end
    end)
    assert.equal(42, cp:load("c"))
  end)
end)

describe("a DSN's options=", function()
  after_each(function() T.assert_no_leaks() end)

  local function settings(dsn)
    local db, err = pgstore.connect{ dsn = dsn, application_name = "pgstore-spec", pool_size = 1,
                                     statement_timeout = 2500 }
    if not db then return nil, err end
    local rows, qerr = db:query([[select current_setting('TimeZone') as tz, current_setting('DateStyle') as ds,
      current_setting('statement_timeout') as st, current_setting('work_mem') as wm]])
    db:close()
    if not rows then return nil, qerr end
    return rows[1]
  end

  it("reaches the server beside pgstore's settings, however long", function()
    for _, reps in ipairs{ 1, 61, 62, 64, 300 } do
      local opts = ("-c work_mem=9MB "):rep(reps)
      local s = assert(settings(T.dsn() .. " options='" .. opts .. "'"))
      assert.same({ tz = "UTC", ds = "ISO, MDY", st = "2500ms", wm = "9MB" }, s)
    end
  end)

  it("keeps pgstore's settings when the options try to change them", function()
    local s = assert(settings(T.dsn() .. " options='-c TimeZone=Asia/Tokyo -c statement_timeout=1 -c work_mem=9MB'"))
    assert.same({ tz = "UTC", ds = "ISO, MDY", st = "2500ms", wm = "9MB" }, s)
  end)

  it("is refused with 'invalid' when it would swallow pgstore's settings or is too long", function()
    for _, opts in ipairs{ [[-c work_mem=9MB\\]], ("-c work_mem=9MB "):rep(2000) } do
      local db, err = pgstore.connect{ dsn = T.dsn() .. " options='" .. opts .. "'", pool_size = 1 }
      if db then db:close() end
      assert.is_nil(db)
      assert.equal("invalid", err.code)
      assert.matches("options", err.message)
    end
  end)

  it("keeps every keyword of a DSN that sets many", function()
    -- target_session_attrs=standby cannot be met by the primary: dropping
    -- it would connect anyway.
    local dsn = T.dsn() .. " sslmode=disable target_session_attrs=standby"
      .. " client_encoding=UTF8 fallback_application_name=x tcp_user_timeout=0 sslcompression=0"
      .. " sslcert=/nonexistent sslkey=/nonexistent sslrootcert=/nonexistent sslcrl=/nonexistent"
      .. " sslcrldir=/nonexistent sslpassword=x requirepeer='' krbsrvname=postgres passfile=/nonexistent"
      .. " channel_binding=disable ssl_min_protocol_version=TLSv1.2 ssl_max_protocol_version=TLSv1.3"
      .. " sslsni=1 keepalives=1 keepalives_idle=30 keepalives_interval=10 keepalives_count=3"
      .. " connect_timeout=5 hostaddr=127.0.0.1 options='-c work_mem=9MB'"
    local s, err = settings(dsn)
    assert.is_nil(s)
    assert.equal("connection", err.code)
    assert.matches("standby", err.message)
    s = assert(settings(dsn:gsub("standby", "any")))
    assert.same({ tz = "UTC", ds = "ISO, MDY", st = "2500ms", wm = "9MB" }, s)
  end)
end)

describe("error scrubbing", function()
  after_each(function() T.assert_no_leaks() end)

  it("ends for a password made of asterisks", function()
    -- The test cluster trusts loopback, so any password connects.
    for _, pw in ipairs{ "*", "**", "********", ("*"):rep(9), ("*"):rep(40) } do
      local db = T.connect{ dsn = T.dsn() .. " password='" .. pw .. "'", pool_size = 1 }
      local rows, err = db:query("select 1 " .. ("* "):rep(30) .. " 2")
      assert.is_nil(rows)
      assert.equal("sql", err.code)
      local _, e2 = db:query("select $1::int", ("*"):rep(80))
      assert.equal("sql", e2.code)
      db:close()
    end
  end)
end)
