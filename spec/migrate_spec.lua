-- SPDX-License-Identifier: MIT
-- The one migration runner (core/migrate.c) over every store: a fresh
-- database gets every store's files (core/sql), re-runs change nothing,
-- racing processes all succeed, a store opened without migrations names
-- the missing table, a dropped table is noticed, and a database made by
-- pgstore 0.1 (spec/fixtures/schema_v0_1.sql) upgrades in place with
-- `pgstore migrate` and keeps its data.
local T = require "testenv"
local S = require "stores"
local core = require "pgstore.core"
local pgstore = require "pgstore"

-- The version a series' files take a store to: the highest N of
-- core/sql/<series>--N.sql and <series>--M--N.sql.
local function latest(series)
  local out = T.sh(("ls %s/core/sql"):format(T.root()))
  local v = 0
  for f in out:gmatch("%S+") do
    local n = f:match("^" .. series .. "%-%-(%d+)%.sql$") or f:match("^" .. series .. "%-%-%d+%-%-(%d+)%.sql$")
    if n and tonumber(n) > v then v = tonumber(n) end
  end
  return v
end
local EV = latest("events")

-- Every store of a database with the default names, as `pgstore migrate`
-- makes them, and the version each is recorded at.
local ROWS = {
  ["events:public.events"] = latest("events"),
  ["snapshots:public.pgstore_snapshots"] = latest("snapshots"),
  ["checkpoints:public.pgstore_checkpoints"] = latest("checkpoints"),
  ["exec_checkpoints:public.pgstore_exec_checkpoints"] = latest("exec_checkpoints"),
  ["sessions:public.pgstore_sessions"] = latest("sessions"),
  ["kv:public.pgstore_kv"] = latest("kv"),
  ["leases:public.pgstore_leases"] = latest("leases"),
  ["locks:public.pgstore_locks"] = latest("locks"),
  ["parked:public.pgstore_parked"] = latest("parked"),
  ["relay:public.pgstore_relay"] = latest("relay"),
}

local admin
local dbs = {}

-- A fresh database; returns its DSN.
local function fresh_db()
  local name = T.unique("pgs_mig")
  assert(admin:exec("create database " .. name))
  dbs[#dbs + 1] = name
  return (T.dsn():gsub("dbname=%S+", "dbname=" .. name)), name
end

local function connect(dsn)
  return T.connect{ dsn = dsn, pool_size = 2 }
end

local function migrate_cli(dsn)
  return T.sh(("%s --dsn %q migrate"):format(T.host(), dsn))
end

local function rows(db)
  local out = {}
  for _, r in ipairs(assert(db:query("select target, version, applied_at::text as at from pgstore_migrations"))) do
    out[r.target] = { version = r.version, at = r.at }
  end
  return out
end

local function versions(db)
  local out = {}
  for k, v in pairs(rows(db)) do out[k] = v.version end
  return out
end

-- Opens every store (migrations on) and closes it again.
local function open_all(db)
  local function done(s) assert(s):close() end
  done(db:events{ notify = false })
  done(db:snapshots())
  done(db:checkpoints())
  done(db:exec_checkpoints())
  done(db:sessions())
  done(db:kv{ cleanup_interval = 0 })
  done(db:partitions{ name = "p", count = 2 })
  local release = assert(db:lock("k", { mode = "table" }))
  assert(release())
  assert(core.parked_migrate(db.pool, nil, true))
  assert(core.relay_migrate(db.pool, nil, true))
end

-- not_found, naming the missing table or function in the message and in
-- the error's schema and table fields.
local function not_found_in(schema, table_name, res, err)
  assert.is_nil(res)
  assert.equal("not_found", err and err.code, tostring(err))
  assert.matches('"' .. table_name .. '"', err.message, 1, true)
  assert.equal(table_name, err.table)
  assert.equal(schema, err.schema)
end

local function not_found(table_name, res, err)
  not_found_in("public", table_name, res, err)
end

-- The rows of one schema's book.
local function book(db, schema)
  local out = {}
  for _, r in ipairs(assert(db:query(("select target, version from %s.pgstore_migrations"):format(schema)))) do
    out[r.target] = r.version
  end
  return out
end

setup(function() admin = T.admin() end)
teardown(function()
  for _, name in ipairs(dbs) do
    admin:exec(("select pg_terminate_backend(pid) from pg_stat_activity where datname = '%s'"):format(name))
    admin:exec("drop database if exists " .. name)
  end
  T.assert_no_leaks()
end)

describe("migrate: a fresh database", function()
  it("creates every store, recorded under <series>:<schema>.<table>", function()
    local dsn = fresh_db()
    local db = connect(dsn)
    open_all(db)
    assert.same(ROWS, versions(db))
    for _, t in ipairs{ "events", "events_heads", "events_idempotency", "events_idem_stream", "pgstore_snapshots", "pgstore_kv",
                        "pgstore_kv_expires_idx", "pgstore_leases", "pgstore_leases_members", "pgstore_locks",
                        "pgstore_parked" } do
      assert.is_true(S.exists(db, t), t)
    end
    db:close()
  end)

  it("does nothing on a re-run: `pgstore migrate` twice writes no row", function()
    local dsn = fresh_db()
    local out, rc = migrate_cli(dsn)
    assert.equal(0, rc, out)
    local db = connect(dsn)
    local first = rows(db)
    local n = 0
    for k, v in pairs(first) do
      n = n + 1
      assert.equal(ROWS[k], v.version, k)
    end
    assert.equal(10, n)
    out, rc = migrate_cli(dsn)
    assert.equal(0, rc, out)
    assert.same(first, rows(db))
    open_all(db)
    assert.same(first, rows(db))
    db:close()
  end)

  it("keys a store by its resolved table: t and public.t share one row", function()
    local dsn = fresh_db()
    local db = connect(dsn)
    assert(db:snapshots{ table = "snap" }):close()
    assert(db:snapshots{ table = "public.snap" }):close()
    assert(db:exec("create schema other"))
    assert(db:snapshots{ table = "other.snap" }):close()
    -- each schema keeps its own book
    assert.same({ ["snapshots:public.snap"] = 1 }, versions(db))
    assert.same({ ["snapshots:other.snap"] = 1 }, book(db, "other"))
    db:close()
  end)

  it("opens stores for a role whose current schema falls outside the name rules", function()
    local dsn = fresh_db()
    local db = connect(dsn)
    local role = T.unique("app-user")
    assert(admin:exec(('create role "%s" login'):format(role)))
    assert(db:exec(('create schema "%s" authorization "%s"'):format(role, role)))
    local rdb = T.connect{ dsn = dsn .. " user=" .. role, pool_size = 2 }
    assert.same({ { s = role } }, rdb:query("select current_schema() as s"))
    local es = assert(rdb:events{ table = "t", notify = false })
    assert(es:append("s", { { type = "E", data = {} } }))
    assert.equal(1, es:version("s"))
    es:close()
    assert(rdb:kv{ cleanup_interval = 0 }):close()
    rdb:close()
    db:close()
  end)

  it("resolves an unqualified name once, to the table the search_path finds, else in current_schema()", function()
    local dsn, name = fresh_db()
    local db = connect(dsn)
    assert(db:exec("create schema s1"))
    local pub = assert(db:events{ table = "t", notify = false })
    assert(pub:append("pub", { { type = "P", data = {} } }))
    pub:close()
    -- a role whose search_path is s1, public: `t` is public.t, one store
    local role = T.unique("pgs_sp")
    assert(admin:exec(("create role %s login"):format(role)))
    assert(db:exec(("alter role %s in database %s set search_path = s1, public"):format(role, name)))
    assert(db:exec(("grant all on schema s1, public to %s"):format(role)))
    assert(db:exec(("grant all on all tables in schema public to %s"):format(role)))
    assert(db:exec(("grant all on all sequences in schema public to %s"):format(role)))
    local sdb = T.connect{ dsn = dsn .. " user=" .. role, pool_size = 2 }
    local es = assert(sdb:events{ table = "t", notify = false })
    assert.equal("public.t", es:store())
    assert(es:append("mine", { { type = "M", data = {} } }))
    assert.equal(2, S.count(db, "public.t"))
    assert.is_false(S.exists(db, "s1.t"))
    assert.same({ ["events:public.t"] = EV }, versions(db))
    -- once s1 has a t, the search_path finds that one first, as SQL does
    local s1 = assert(db:events{ table = "s1.t", notify = false })
    s1:close()
    assert(db:exec(("grant all on all tables in schema s1 to %s"):format(role)))
    assert(db:exec(("grant all on all sequences in schema s1 to %s"):format(role)))
    -- the store opened before keeps its table, and so do its consumers
    local sub = assert(sdb:subscribe{ name = "c1", events = es, from = "end" })
    assert(sub:next(0.1))
    sub:close()
    local pub_cp = assert(sdb:checkpoints{ store = "public.t" })
    local s1_cp = assert(sdb:checkpoints{ store = "s1.t" })
    assert.is_not_nil(pub_cp:load("c1"))
    assert.is_nil(s1_cp:load("c1"))
    pub_cp:close()
    s1_cp:close()
    es:close()
    es = assert(sdb:events{ table = "t", notify = false })
    assert.equal("s1.t", es:store())
    assert(es:append("mine", { { type = "M", data = {} } }))
    es:close()
    assert.equal(1, S.count(db, "s1.t"))
    assert.equal(2, S.count(db, "public.t"))
    -- names found nowhere go where CREATE TABLE would put them, and the
    -- book follows the store's schema: kv, locks and partitions
    assert(sdb:kv{ table = "k", cleanup_interval = 0 }):close()
    local release = assert(sdb:lock("x", { mode = "table", table = "l" }))
    assert(release())
    assert.same({ ["events:s1.t"] = EV, ["kv:s1.k"] = 1, ["locks:s1.l"] = latest("locks"),
                  ["checkpoints:s1.pgstore_checkpoints"] = latest("checkpoints") }, book(db, "s1"))
    sdb:close()
    db:close()
    admin:exec(("select pg_terminate_backend(pid) from pg_stat_activity where datname = '%s'"):format(name))
    assert(admin:exec(("drop database %s"):format(name)))
    assert(admin:exec(("drop role %s"):format(role)))
  end)

  it("re-creates a dropped store function, or names it when migrations are off", function()
    local dsn = fresh_db()
    local db = connect(dsn)
    assert(db:events{ table = "df", notify = false }):close()
    assert(db:exec('drop function "df_append"'))
    not_found("df_append", db:events{ table = "df", notify = false, migrate = false })
    local es = assert(db:events{ table = "df", notify = false })
    assert(es:append("s", { { type = "X", data = {} } }))
    es:close()
    assert(db:partitions{ name = "p", table = "dl" }):close()
    assert(db:exec('drop function "dl_guard"'))
    not_found("dl_guard", db:partitions{ name = "p", table = "dl", skip_schema_init = true })
    assert(db:partitions{ name = "p", table = "dl" }):close()
    db:close()
  end)

  it("takes the lock older code took for a store, so old and new processes serialize", function()
    local dsn = fresh_db()
    local db = connect(dsn)
    local holder = connect(dsn)
    -- a short statement_timeout: a run that waits for the lock is cancelled
    local quick = T.connect{ dsn = dsn, statement_timeout = 300, pool_size = 1 }
    local cases = {
      { "pgstore.migrate", 'events:"ol"', function() return quick:events{ table = "ol", notify = false } end },
      { "pgstore.migrate", "snapshots:ol_s", function() return quick:snapshots{ table = "ol_s" } end },
      { "pgstore.migrate", "pgstore.leases:ol_l", function() return quick:partitions{ name = "p", table = "ol_l" } end },
      { "pgstore.kv", '"ol_k"', function() return quick:kv{ table = "ol_k", cleanup_interval = 0 } end },
    }
    for _, c in ipairs(cases) do
      assert(holder:transaction(function(tx)
        assert(tx:query("select pg_advisory_xact_lock(hashtext($1), hashtext($2))", c[1], c[2]))
        local s, err = c[3]()
        assert.is_nil(s, c[2])
        assert.equal("57014", err and err.sqlstate, tostring(err))
        assert.equal("acquire_lock", err.phase)
        return true
      end))
      assert(c[3]()):close()
    end
    quick:close()
    holder:close()
    db:close()
  end)

  it("lets 6 processes migrate every store at once", function()
    local dsn = fresh_db()
    local code = [[
      local d = assert(pgstore.connect{ dsn = arg[2], pool_size = 2 })
      assert(d:events{ notify = false }):close()
      assert(d:snapshots()):close()
      assert(d:checkpoints()):close()
      assert(d:exec_checkpoints()):close()
      assert(d:sessions()):close()
      assert(d:kv{ cleanup_interval = 0 }):close()
      assert(d:partitions{ name = "p", count = 2 }):close()
      assert(assert(d:lock("k" .. arg[1], { mode = "table" }))())
      assert(require("pgstore.core").parked_migrate(d.pool, nil, true))
      assert(require("pgstore.core").relay_migrate(d.pool, nil, true))
      d:close()
      print("ok")
    ]]
    for _, r in ipairs(T.run_parallel(6, code, ("%q"):format(dsn))) do
      assert.equal(0, r.rc, r.out)
      assert.matches("ok", r.out)
    end
    local db = connect(dsn)
    assert.same(ROWS, versions(db))
    db:close()
  end)
end)

-- The text of core/sql/<file> with the placeholders of the events store
-- public.<t> filled as core/events.c fills them.
local function events_file(file, t)
  local text = T.read(("%s/core/sql/%s"):format(T.root(), file))
  local names = { events = ('"public"."%s"'):format(t), idem_stream = ('"%s_idem_stream"'):format(t) }
  for name, suffix in pairs{ heads = "_heads", idempotency = "_idempotency", seq = "_position_seq",
                             append = "_append", read_all = "_read_all", import = "_import", replay = "_replay",
                             order_lock = "_order_lock", check_order = "_check_order", ["end"] = "_end",
                             seq_last = "_seq_last" } do
    names[name] = ('"public"."%s%s"'):format(t, suffix)
  end
  text = text:gsub("@([%w_]+)@", names)
  assert.is_nil(text:match("@[%w_]+@"), "a placeholder left in " .. file)
  return text
end

describe("migrate: events version 5 to 6", function()
  it("lets a role with only row rights follow the store, and keeps the sequence its owner's", function()
    local dsn, name = fresh_db()
    local owner, reader = T.unique("pgs_owner"), T.unique("pgs_rows")
    assert(admin:exec(("create role %s login; create role %s login"):format(owner, reader)))
    local db = connect(dsn)
    assert(db:exec(("grant usage, create on schema public to %s"):format(owner)))
    -- the owner makes the store and takes it back to version 5: the
    -- functions of events--2--3.sql (3--4 and 4--5 make none), no
    -- <t>_seq_last, version 5 in the book
    local odb = T.connect{ dsn = dsn .. " user=" .. owner, pool_size = 2 }
    local es = assert(odb:events{ table = "up5", notify = false })
    assert(es:append("acct-1", { { type = "Opened" }, { type = "Deposited" } }))
    es:close()
    assert(odb:checkpoints{ store = "up5" }):close()
    assert(odb:exec(events_file("events--2--3.sql", "up5")))
    assert(odb:exec("drop function public.up5_seq_last()"))
    -- read_all with a partition filter (events--6--7.sql) is not there yet
    assert(odb:exec("drop function public.up5_read_all(bigint, int, text[], text, int, int, int[])"))
    assert(odb:exec("update pgstore_migrations set version = 5 where target = 'events:public.up5'"))
    assert(odb:exec(("grant usage on schema public to %s;"
      .. " grant select, insert, update, delete on all tables in schema public to %s"):format(reader, reader)))

    -- at version 5, read_all reads the sequence itself
    local rdb = T.connect{ dsn = dsn .. " user=" .. reader, pool_size = 2 }
    local res = assert(rdb:events{ table = "up5", notify = false, migrate = false })
    local rows, err = res:read_all{ after = 0 }
    assert.is_nil(rows)
    assert.matches("permission denied for sequence", err.message, 1, true)

    -- a superuser upgrades it; the new function is the sequence owner's
    local up = assert(db:events{ table = "up5", notify = false })
    up:close()
    assert.equal(EV, book(db, "public")["events:public.up5"])
    local fn = assert(db:query([[select proowner::regrole::text as owner, prosecdef as definer,
      array_to_string(proconfig, ',') as config from pg_proc where oid = 'public.up5_seq_last'::regproc]]))[1]
    assert.same({ owner = owner, definer = true, config = "search_path=pg_catalog, pg_temp" }, fn)
    for _, f in ipairs{ "up5_read_all", "up5_check_order", "up5_order_lock" } do
      local src = assert(db:query("select prosrc from pg_proc where oid = $1::regproc", "public." .. f))[1].prosrc
      assert.is_nil(src:lower():find('from "public"."up5_position_seq"', 1, true), f .. " reads the sequence itself")
      assert.truthy(src:find('"public"."up5_seq_last"()', 1, true), f)
    end
    local sec = assert(db:query("select prosecdef from pg_proc where oid = 'public.up5_read_all'::regproc"))[1]
    assert.is_false(sec.prosecdef, "read_all runs with its caller's rights")

    -- the same handle, opened before the upgrade, now follows
    rows, err = res:read_all{ after = 0 }
    assert.is_table(rows, tostring(err))
    assert.equal(2, #rows)
    assert.equal(2, assert(res:latest_position()))
    local sub = assert(rdb:subscribe{ name = "rows-only", events = res, migrate = false })
    assert.equal(2, #assert(sub:next(1)))
    sub:close()
    -- appending takes USAGE on the sequence, and no SELECT
    assert(odb:exec(("grant usage on sequence up5_position_seq to %s"):format(reader)))
    assert.equal(3, assert(res:append("acct-1", { { type = "Withdrawn" } }, { expected = 2 })).last_position)
    assert.same({ { s = false } }, rdb:query("select has_sequence_privilege('up5_position_seq', 'select') as s"))
    assert.equal(3, #assert(res:read_all{ after = 0 }))
    res:close()
    -- reading the events stays the caller's right
    assert(odb:exec(("revoke select on up5 from %s"):format(reader)))
    res = assert(rdb:events{ table = "up5", notify = false, migrate = false })
    rows, err = res:read_all{ after = 0 }
    assert.is_nil(rows)
    assert.matches("permission denied for table up5", err.message, 1, true)
    res:close()

    rdb:close()
    odb:close()
    db:close()
    admin:exec(("select pg_terminate_backend(pid) from pg_stat_activity where datname = '%s'"):format(name))
    assert(admin:exec(("drop database %s"):format(name)))
    assert(admin:exec(("drop role %s; drop role %s"):format(owner, reader)))
  end)
end)

describe("migrate: stores opened without migrations", function()
  it("fail with not_found naming the missing table, for every store", function()
    local dsn = fresh_db()
    local db = connect(dsn)
    not_found("events", db:events{ notify = false, migrate = false })
    not_found("pgstore_snapshots", db:snapshots{ skip_schema_init = true })
    not_found("pgstore_checkpoints", db:checkpoints{ skip_schema_init = true })
    not_found("pgstore_exec_checkpoints", db:exec_checkpoints{ skip_schema_init = true })
    not_found("pgstore_sessions", db:sessions{ skip_schema_init = true })
    not_found("pgstore_kv", db:kv{ cleanup_interval = 0, skip_schema_init = true })
    not_found("pgstore_leases", db:partitions{ name = "p", skip_schema_init = true })
    not_found("pgstore_locks", db:lock("k", { mode = "table", skip_schema_init = true }))
    not_found("pgstore_parked", core.parked_migrate(db.pool, nil, false))
    -- and created nothing, not even the bookkeeping table
    assert.is_false(S.exists(db, "pgstore_migrations"))
    db:close()
  end)

  it("notice a table dropped by hand: re-created with migrations, not_found without", function()
    local dsn = fresh_db()
    local db = connect(dsn)
    open_all(db)
    local before = versions(db)
    assert(db:exec("drop table events_heads, pgstore_snapshots, pgstore_kv, pgstore_leases_members, pgstore_locks"))
    not_found("events_heads", db:events{ notify = false, migrate = false })
    not_found("pgstore_snapshots", db:snapshots{ skip_schema_init = true })
    not_found("pgstore_kv", db:kv{ cleanup_interval = 0, skip_schema_init = true })
    not_found("pgstore_leases_members", db:partitions{ name = "p", skip_schema_init = true })
    not_found("pgstore_locks", db:lock("k", { mode = "table", skip_schema_init = true }))

    local es = assert(db:events{ notify = false })
    assert(es:append("s-1", { { type = "T", data = {} } }))
    assert.equal(1, #assert(es:read("s-1")))
    es:close()
    local ss = assert(db:snapshots())
    assert(ss:save("s-1", 1, { n = 1 }))
    ss:close()
    local kv = assert(db:kv{ cleanup_interval = 0 })
    assert(kv:set("a", "b"))
    kv:close()
    assert.is_true(S.exists(db, "pgstore_kv_expires_idx"))
    local pm = assert(db:partitions{ name = "p", count = 2 })
    assert(pm:tick())
    pm:close()
    local release = assert(db:lock("k", { mode = "table" }))
    assert(release())
    assert.same(before, versions(db))
    db:close()
  end)
end)

local function load_v0_1(dsn)
  local out, rc = T.sh(("%s/psql -X -q -v ON_ERROR_STOP=1 %q -f %s/spec/fixtures/schema_v0_1.sql")
    :format(os.getenv("PGSTORE_TEST_PGBIN") or "/usr/lib/postgresql/15/bin", dsn, T.root()))
  assert.equal(0, rc, out)
end

describe("migrate: a database made by pgstore 0.1", function()
  it("opens for a role without DDL rights before `pgstore migrate` ran (as it is, or says why not)", function()
    local dsn, name = fresh_db()
    load_v0_1(dsn)
    local role = T.unique("pgs_noddl")
    assert(admin:exec(("create role %s login"):format(role)))
    local db = connect(dsn)
    for _, stmt in ipairs{
      "revoke create on schema public from public",
      "grant usage on schema public, shop to %s",
      "grant select, insert, update, delete on all tables in schema public, shop to %s",
      "grant usage, select on all sequences in schema public, shop to %s",
    } do assert(db:exec(stmt:format(role))) end
    local rdb = T.connect{ dsn = dsn .. " user=" .. role, pool_size = 2 }
    -- the events store is behind this library: opening it to migrate says
    -- what to do; opening it as it is works
    local es, err = rdb:events{ notify = false }
    assert.is_nil(es)
    assert.equal("42501", err.sqlstate)
    assert.truthy(err.hint:match("pgstore migrate"), err.hint)
    assert.truthy(err.hint:match("version 2 and this library needs " .. EV), err.hint)
    es = assert(rdb:events{ notify = false, migrate = false })
    assert.equal(2, #assert(es:read("order-1")))
    es:close()
    assert(rdb:events{ table = "shop.events", notify = false, migrate = false }):close()
    assert(rdb:snapshots()):close()
    -- the checkpoints table is at version 1 (only its owner can add the
    -- store column every checkpoint is keyed by): opening it says so, and
    -- what to do, whether or not the handle may migrate
    local none, cerr = rdb:checkpoints()
    assert.is_nil(none)
    assert.equal("42501", cerr.sqlstate)
    assert.truthy(cerr.hint:match("pgstore migrate"), cerr.hint)
    none, cerr = rdb:checkpoints{ skip_schema_init = true }
    assert.is_nil(none)
    assert.equal("not_found", cerr.code)
    assert.truthy(cerr.message:match("version 1"), cerr.message)
    assert.truthy(cerr.hint:match("pgstore migrate"), cerr.hint)
    assert(rdb:exec_checkpoints()):close()
    assert(rdb:sessions()):close()
    local kv = assert(rdb:kv{ cleanup_interval = 0 })
    assert.equal("hello", kv:get("greeting"))
    kv:close()
    local pm
    pm, err = rdb:partitions{ name = "workers", count = 2 }
    assert.is_nil(pm)
    assert.truthy(err.hint:match("version 1 and this library needs " .. latest("leases")), err.hint)
    assert(rdb:partitions{ name = "workers", count = 2, skip_schema_init = true }):close()
    local release = assert(rdb:lock("nightly", { mode = "table" }))
    assert(release())
    rdb:close()
    -- nothing was created: no book in shop
    assert.is_false(S.exists(db, "shop.pgstore_migrations"))
    db:close()
    admin:exec(("select pg_terminate_backend(pid) from pg_stat_activity where datname = '%s'"):format(name))
    assert(admin:exec(("drop database %s"):format(name)))
    assert(admin:exec(("drop role %s"):format(role)))
  end)

  it("upgrades in place with `pgstore migrate` and keeps its data", function()
    local dsn = fresh_db()
    load_v0_1(dsn)
    local db = connect(dsn)
    -- what 0.1 recorded, under its keys
    assert.same({
      ['events:"events"'] = 2, ['events:"shop"."events"'] = 2,
      ["snapshots:pgstore_snapshots"] = 1, ["checkpoints:pgstore_checkpoints"] = 1,
      ["exec_checkpoints:pgstore_exec_checkpoints"] = 1, ["sessions:pgstore_sessions"] = 1,
      ["pgstore.leases:pgstore_leases"] = 1,
    }, versions(db))

    out, rc = migrate_cli(dsn)
    assert.equal(0, rc, out)
    -- old keys rewritten, kv/locks/parked adopted; "shop.events" is not a
    -- default name, so it keeps its 0.1 row until it is opened
    local want = { ['events:"shop"."events"'] = 2 }
    for k, v in pairs(ROWS) do want[k] = v end
    assert.same(want, versions(db))
    out, rc = migrate_cli(dsn)
    assert.equal(0, rc, out)
    -- 0.1's functions named their tables unqualified; now each names its own
    for _, fn in ipairs{ "events_append", "events_read_all", "events_import", "events_replay" } do
      local src = assert(db:query("select prosrc from pg_proc where oid = $1::regproc", "public." .. fn))[1].prosrc
      assert.truthy(src:find('"public"."events', 1, true), fn .. " names its tables unqualified")
    end
    local guard = assert(db:query("select prosrc from pg_proc where oid = 'public.pgstore_leases_guard'::regproc"))
    assert.truthy(guard[1].prosrc:find('"public"."pgstore_leases"', 1, true), "the lease guard names its table unqualified")

    local es = assert(db:events{ notify = false, migrate = false })
    local evs = assert(es:read("order-1"))
    assert.equal(2, #evs)
    assert.equal("Paid", evs[2].type)
    assert.equal(10, evs[2].data.amount)
    local res = assert(es:append("order-1", { { type = "Shipped", data = {} } }, { expected = 2 }))
    assert.equal(3, res.last_version)
    -- the idempotency key of 0.1's append still replays
    local again = assert(es:append("order-1", { { type = "Placed", data = { total = 10 } },
                                                { type = "Paid", data = { amount = 10 } } }, { idempotency_key = "k-1" }))
    assert.equal(2, again.last_version)
    local all = assert(es:read_all{ after = 0 })
    assert.equal(4, #all)
    es:close()
    -- the schema-qualified store upgrades when it opens
    local shop = assert(db:events{ table = "shop.events", notify = false })
    assert.equal(1, #assert(shop:read("cart-1")))
    assert(shop:append("cart-1", { { type = "Added", data = { sku = "b" } } }, { expected = 1 }))
    shop:close()
    assert.same({ ["events:shop.events"] = EV }, book(db, "shop"))
    assert.is_nil(versions(db)['events:"shop"."events"'])

    local ss = assert(db:snapshots{ skip_schema_init = true })
    assert.equal(2, assert(ss:load("order-1")).version)
    ss:close()
    local cp = assert(db:checkpoints{ skip_schema_init = true })
    assert.equal(3, cp:load("projection:totals"))
    cp:close()
    local xs = assert(db:exec_checkpoints{ skip_schema_init = true })
    assert.equal(4, assert(xs:load("exec-1")).step)
    xs:close()
    local sess = assert(db:sessions{ skip_schema_init = true })
    assert.equal("ann", assert(sess:load("sess-1")).state.user)
    sess:close()
    local kv = assert(db:kv{ cleanup_interval = 0, skip_schema_init = true })
    assert.equal("hello", kv:get("greeting"))
    kv:close()
    local pm = assert(db:partitions{ name = "workers", count = 2, owner = "w1", skip_schema_init = true })
    assert(pm:tick())
    assert.is_true(pm:owns(0))
    pm:close()
    local release = assert(db:lock("nightly", { mode = "table", skip_schema_init = true }))
    assert.equal(2, release:token())
    assert(release())
    assert(core.parked_migrate(db.pool, nil, false))
    db:close()
  end)
end)
