-- SPDX-License-Identifier: MIT
-- The event store, version 7 to 8 (core/sql/events--7--8.sql): appends
-- bind their events as typed arrays (<t>_append_rows), the order lock
-- reads the sequence without a SECURITY DEFINER call, and head rows leave
-- room for HOT updates. Upgraded on a store made by version 7's schema,
-- with version 7's function still answering old processes.
local T = require "testenv"

local admin
local dbs = {}

local function fresh_db()
  local name = T.unique("pgs_rows")
  assert(admin:exec("create database " .. name))
  dbs[#dbs + 1] = name
  return (T.dsn():gsub("dbname=%S+", "dbname=" .. name)), name
end

-- core/sql/<file> filled for the events store public.<t>.
local function events_file(file, t)
  local text = T.read(("%s/core/sql/%s"):format(T.root(), file))
  local names = { events = ('"public"."%s"'):format(t), idem_stream = ('"%s_idem_stream"'):format(t) }
  for name, suffix in pairs{ heads = "_heads", idempotency = "_idempotency", seq = "_position_seq",
                             append = "_append", read_all = "_read_all", import = "_import", replay = "_replay",
                             order_lock = "_order_lock", check_order = "_check_order", ["end"] = "_end",
                             seq_last = "_seq_last", append_rows = "_append_rows" } do
    names[name] = ('"public"."%s%s"'):format(t, suffix)
  end
  return (text:gsub("@([%w_]+)@", names))
end

local function versions(es, stream)
  local out = {}
  for i, e in ipairs(assert(es:read(stream))) do out[i] = e.version end
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

describe("events version 7 to 8", function()
  it("upgrades a version-7 store in place; old and new appends share heads, keys and order", function()
    local dsn = fresh_db()
    local db = T.connect{ dsn = dsn, pool_size = 2 }
    -- a store as version 7 left it: 5--6's order lock, no append_rows,
    -- heads without a fillfactor, version 7 in the book
    local es = assert(db:events{ table = "up7", notify = false })
    es:close()
    assert(db:exec(events_file("events--5--6.sql", "up7")))
    assert(db:exec("drop function public.up7_append_rows"))
    assert(db:exec("alter table up7_heads reset (fillfactor)"))
    assert(db:exec("update pgstore_migrations set version = 7 where target = 'events:public.up7'"))

    -- a process of version 7 appends through <t>_append, with a key and ids
    local old = [[select r_last_version as v, r_replayed as replayed from public.up7_append($1, $2::bigint,
      $3::jsonb, $4, null, 0, null)]]
    local id = "00000000-0000-4000-8000-000000000001"
    assert.same({ { v = 2, replayed = false } }, db:query(old, "acct", "-2",
      '[{"type":"Opened","data":{"n":1}},{"type":"Deposited","data":{"n":2},"metadata":{"by":"old"}}]', "k-old"))
    assert.same({ { v = 3, replayed = false } }, db:query(old, "acct", "2",
      ('[{"type":"Noted","data":null,"id":"%s"}]'):format(id), nil))

    -- opening with migrations takes it to 8
    es = assert(db:events{ table = "up7", notify = false })
    assert.same({ { version = 8 } }, db:query("select version from pgstore_migrations where target = 'events:public.up7'"))
    assert.same({ { o = "{fillfactor=80}" } }, db:query("select reloptions::text as o from pg_class where oid = 'up7_heads'::regclass"))
    local src = assert(db:query("select prosrc from pg_proc where oid = 'public.up7_order_lock'::regproc"))[1].prosrc
    assert.truthy(src:find("pg_sequence_last_value", 1, true))

    -- the new path continues the same stream, replays the old key and ids
    local r = assert(es:append("acct", { { type = "Withdrawn", data = { n = 4 }, metadata = { by = "new" } } }, { expected = 3 }))
    assert.same({ 4, 4, 4, false }, { r.first_version, r.last_version, r.first_position, r.replayed })
    r = assert(es:append("acct", { { type = "Opened" }, { type = "Deposited" } }, { idempotency_key = "k-old" }))
    assert.same({ 1, 2, true }, { r.first_version, r.last_version, r.replayed })
    r = assert(es:append("acct", { { type = "Noted", id = id } }))
    assert.same({ 3, true }, { r.last_version, r.replayed })
    local _, err = es:append("acct", { { type = "Late" } }, { expected = 3 })
    assert.equal("conflict", err.code)
    assert.same({ 3, 4 }, { err.expected, err.actual })
    -- and the old path still works after the upgrade, on the same head
    assert.same({ { v = 5, replayed = false } }, db:query(old, "acct", "4", '[{"type":"Closed"}]', nil))
    assert.same({ 1, 2, 3, 4, 5 }, versions(es, "acct"))
    local all = assert(es:read_all{ after = 0 })
    assert.equal(5, #all)
    assert.same({ by = "new" }, all[4].metadata)
    assert.same({ by = "old" }, all[2].metadata)
    assert.equal(require("pgstore").null, all[3].data)
    es:close()
    db:close()
  end)

  it("binds every value whole: quotes, backslashes and braces stay inside their event", function()
    local dsn = fresh_db()
    local db = T.connect{ dsn = dsn, pool_size = 2 }
    local raw = assert(db:events{ table = "arr", notify = false, codec = "raw" })
    local weird = [[{"s": "a\"b\\c}{,\"", "t": "NULL", "u": [1, {"}": ","}]}]]
    local r = assert(raw:append("w", {
      { type = 'Ty"pe\\{x}', data = weird, metadata = '"NULL"', schema_version = 3 },
      { type = "NULL", data = "null" },
      { type = "E", data = '"}"', metadata = '{"a":"\\\\"}' },
    }))
    assert.same({ 1, 3 }, { r.first_version, r.last_version })
    local got = assert(raw:read("w"))
    local cjson = require "cjson"
    assert.same({ 'Ty"pe\\{x}', "NULL", "E" }, { got[1].type, got[2].type, got[3].type })
    assert.same(cjson.decode(weird), cjson.decode(got[1].data))
    assert.same({ '"NULL"', 3, 1 }, { got[1].metadata, got[1].schema_version, got[2].schema_version })
    assert.same({ "null", '"}"', '{"a": "\\\\"}' }, { got[2].data, got[3].data, got[3].metadata })
    assert.is_nil(got[2].metadata)
    -- a value that is not exactly one JSON value is refused by the server
    local _, err = raw:append("w", { { type = "E", data = '1},{"type":"X"' } })
    assert.equal("invalid", err.code)
    -- arrays of unequal lengths, called directly, are refused
    local bad, berr = db:query([[select * from public.arr_append_rows('x', -1, '{A,B}', '{1}'::jsonb[],
      null, null, null, null, null, 0, null)]])
    assert.is_nil(bad)
    assert.matches("one type and one datum per event", berr.message, 1, true)
    assert.equal(3, #assert(raw:read_all{ after = 0 }))
    raw:close()
    db:close()
  end)

  it("takes the order lock from a fresh sequence and for a role with only USAGE on it", function()
    local dsn, name = fresh_db()
    local db = T.connect{ dsn = dsn, pool_size = 2 }
    local es = assert(db:events{ table = "fresh", notify = false })
    assert(es:truncate()) -- the sequence restarts: is_called false
    assert.equal(1, assert(es:append("a", { { type = "E" } })).last_position)
    local role = T.unique("pgs_app")
    assert(admin:exec(("create role %s login"):format(role)))
    assert(db:exec(("grant usage on schema public to %s; grant select, insert, update on fresh, fresh_heads to %s;"
      .. " grant usage on sequence fresh_position_seq to %s"):format(role, role, role)))
    local rdb = T.connect{ dsn = dsn .. " user=" .. role, pool_size = 2 }
    local res = assert(rdb:events{ table = "fresh", notify = false, migrate = false })
    assert.equal(2, assert(res:append("a", { { type = "E" } }, { expected = 1 })).last_position)
    assert.equal(2, #assert(res:read_all{ after = 0 }))
    res:close()
    rdb:close()
    es:close()
    db:close()
    admin:exec(("select pg_terminate_backend(pid) from pg_stat_activity where datname = '%s'"):format(name))
    assert(admin:exec(("drop database %s"):format(name)))
    table.remove(dbs)
    assert(admin:exec(("drop role %s"):format(role)))
  end)

  it("raises synchronous_commit off and local to on for the append's transaction", function()
    local db = T.connect{ pool_size = 1 }
    local es = assert(db:events{ table = T.unique("sync_ev"), notify = false })
    for _, level in ipairs{ "off", "local", "remote_write" } do
      local got = assert(db:transaction(function(tx)
        assert(tx:exec("set local synchronous_commit = " .. level))
        assert(es:append("s", { { type = "A" } }, { tx = tx }))
        return tx:query("select current_setting('synchronous_commit') as s")[1].s
      end))
      assert.equal(level == "remote_write" and "remote_write" or "on", got, level)
    end
    es:close()
    db:close()
  end)
end)
