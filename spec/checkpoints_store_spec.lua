-- SPDX-License-Identifier: MIT
-- Checkpoints belong to a store: one consumer name on two event stores
-- keeps two checkpoints, every spelling of one table is one store, a
-- subscription and a projection (through the real host) start a second
-- store from its own checkpoint (and --rebuild forgets only that store's),
-- `pgstore status` shows each consumer's
-- lag behind its own store, and checkpoints saved before move to the
-- default event store of their schema.
local T = require "testenv"

describe("checkpoints belong to a store", function()
  local db, dir
  setup(function()
    db = T.connect{ pool_size = 3 }
    dir = T.tmpdir("cpstore")
  end)
  teardown(function()
    T.sh("rm -rf " .. dir)
    db:close()
    T.assert_no_leaks()
  end)

  local function fill(es, prefix, streams, per_stream)
    for s = 1, streams do
      local batch = {}
      for i = 1, per_stream do batch[i] = { type = "Added", data = { amount = i } } end
      assert(es:append(prefix .. s, batch))
    end
  end

  it("keeps one checkpoint per (store, consumer)", function()
    local t = T.unique("cps_tab")
    local a = assert(db:checkpoints{ table = t, store = "cps_a" })
    local b = assert(db:checkpoints{ table = t, store = "cps_b" })
    assert.equal("public.cps_a", a:store())
    assert(a:save("balances", 30))
    assert.is_nil(b:load("balances"))
    assert(b:save("balances", 7))
    assert.equal(30, a:load("balances"))
    assert.equal(7, b:load("balances"))
    -- a guarded save compares with its own store's checkpoint
    assert(b:save("balances", 8, { expected = 7 }))
    local _, err = b:save("balances", 9, { expected = 30 })
    assert.equal("conflict", err and err.code)
    assert.equal(8, err.actual)
    assert.same({ "balances" }, { assert(a:list())[1].consumer })
    assert.equal(30, assert(a:list())[1].cursor)
    assert.equal("public.cps_a", assert(a:list())[1].store)
    assert(b:delete("balances"))
    assert.equal(30, a:load("balances"))
    a:close()
    b:close()
    assert(db:exec("drop table " .. t))
  end)

  it("knows every spelling of one table as one store", function()
    local t = T.unique("cps_sp")
    local schema = T.unique("cps_tenant")
    assert(db:exec(("create schema %s"):format(schema)))
    local plain = assert(db:checkpoints{ table = t, store = "sp_events" })
    local qualified = assert(db:checkpoints{ table = t, store = "public.sp_events" })
    assert(plain:save("c", 11))
    assert.equal(11, qualified:load("c"))
    assert.equal(plain:store(), qualified:store())
    -- a name found through search_path is the table in that schema
    local tdb = T.connect{ dsn = T.dsn() .. (" options='-c search_path=%s,public'"):format(schema), pool_size = 1 }
    local found = assert(tdb:checkpoints{ table = "public." .. t, store = "sp_events" })
    assert.equal(schema .. ".sp_events", found:store())
    assert.is_nil(found:load("c"))
    assert(found:save("c", 4))
    local spelled = assert(db:checkpoints{ table = t, store = schema .. ".sp_events" })
    assert.equal(4, spelled:load("c"))
    assert.equal(11, plain:load("c"))
    -- the event store itself is a name for its store
    local es = assert(tdb:events{ table = "sp_events", notify = false })
    local by_es = assert(tdb:checkpoints{ table = "public." .. t, store = es })
    assert.equal(4, by_es:load("c"))
    for _, h in ipairs{ plain, qualified, found, spelled, by_es, es } do h:close() end
    tdb:close()
    assert(db:exec(("drop schema %s cascade"):format(schema)))
    assert(db:exec("drop table " .. t))
  end)

  it("starts a subscription on a second store from that store's own checkpoint", function()
    local name = T.unique("cps_sub")
    local events_a = assert(db:events{ table = name .. "_a", notify = false })
    local events_b = assert(db:events{ table = name .. "_b", notify = false })
    fill(events_a, "a-", 6, 5) -- positions 1..30
    fill(events_b, "b-", 4, 5) -- positions 1..20
    local sub = assert(db:subscribe{ name = "balances", events = events_a, listen = false })
    local seen = 0
    repeat
      local batch = assert(sub:next(0.2))
      seen = seen + #batch
      if #batch > 0 then assert(sub:ack(batch[#batch].position)) end
    until #batch == 0
    assert.equal(30, seen)
    sub:close()
    local sub_b = assert(db:subscribe{ name = "balances", events = events_b, listen = false })
    local got = assert(sub_b:next(0.2))
    assert.equal(20, #got)
    assert.equal(1, got[1].position)
    assert(sub_b:ack(got[#got].position))
    sub_b:close()
    -- each store's checkpoint stayed its own
    local cp_a = assert(db:checkpoints{ store = events_a })
    local cp_b = assert(db:checkpoints{ store = name .. "_b" })
    assert.equal(30, cp_a:load("balances"))
    assert.equal(20, cp_b:load("balances"))
    cp_a:close()
    cp_b:close()
    -- a checkpoint table given for another store still keys by the subscription's store
    local t = T.unique("cps_given")
    local given = assert(db:checkpoints{ table = t })
    local sub_c = assert(db:subscribe{ name = "balances", events = events_b, listen = false, checkpoints = given })
    assert.equal(20, #assert(sub_c:next(0.2)))
    assert(sub_c:ack(20))
    sub_c:close()
    assert.is_nil(given:load("balances"))
    local given_b = assert(db:checkpoints{ table = t, store = events_b })
    assert.equal(20, given_b:load("balances"))
    given:close()
    given_b:close()
    events_a:close()
    events_b:close()
  end)

  it("runs a projection against --table big from big's own checkpoint", function()
    local name = T.unique("cps_proj")
    local small, big = name .. "_events", name .. "_big"
    local es_small = assert(db:events{ table = small, notify = false })
    local es_big = assert(db:events{ table = big, notify = false })
    fill(es_small, "s-", 10, 10) -- positions 1..100
    fill(es_big, "b-", 6, 10)    -- positions 1..60: all below the first store's checkpoint
    local path = ("%s/%s.lua"):format(dir, name)
    T.write(path, ([[
return {
  name = "balances",
  setup = "create table if not exists %s (stream text primary key, n int not null)",
  handlers = {
    Added = function(e, tx)
      assert(tx:exec("insert into %s as t values ($1, 1) on conflict (stream) do update set n = t.n + 1", e.stream))
    end,
  },
}
]]):format(name, name))
    local function project(table_name)
      return T.sh(("%s --dsn %q project --table %s %s --once"):format(T.host(), T.dsn(), table_name, path))
    end
    local out, rc = project(small)
    assert.equal(0, rc, out)
    out, rc = project(big)
    assert.equal(0, rc, out)
    local rows = assert(db:query(("select left(stream, 2) as p, sum(n)::int as n from %s group by 1 order by 1"):format(name)))
    assert.same({ { p = "b-", n = 60 }, { p = "s-", n = 100 } }, rows)
    print(("\n  projection 'balances': %d/100 events of the first store, then %d/60 of the second from its own checkpoint")
      :format(rows[2].n, rows[1].n))
    -- running them again applies nothing twice
    assert.equal(0, select(2, project(small)))
    assert.equal(0, select(2, project(big)))
    rows = assert(db:query(("select sum(n)::int as n from %s"):format(name)))
    assert.equal(160, rows[1].n)
    -- --rebuild against one store forgets that store's checkpoint only
    local cp_small = assert(db:checkpoints{ store = small })
    local cp_big = assert(db:checkpoints{ store = es_big })
    assert(cp_big:save("projection:balances", 0))
    out, rc = T.sh(("%s --dsn %q project --table %s %s --once --rebuild"):format(T.host(), T.dsn(), big, path))
    assert.equal(0, rc, out)
    assert.equal(100, cp_small:load("projection:balances"))
    assert.equal(60, cp_big:load("projection:balances"))
    cp_small:close()
    cp_big:close()
    es_small:close()
    es_big:close()
    assert(db:exec("drop table " .. name))
  end)

  it("gives a partitioned projection its own leases on each store", function()
    local name = T.unique("cps_part")
    local sa, sb = name .. "_a", name .. "_b"
    local es_a = assert(db:events{ table = sa, notify = false })
    local es_b = assert(db:events{ table = sb, notify = false })
    fill(es_a, "a-", 8, 5)
    fill(es_b, "b-", 8, 5)
    local path = ("%s/%s.lua"):format(dir, name)
    T.write(path, ([[
return {
  name = "pbal", partitioned = true, partitions = 4,
  setup = "create table if not exists %s (position bigint, store text, primary key (store, position))",
  handlers = {
    Added = function(e, tx) assert(tx:exec("insert into %s values ($1, left($2, 1))", e.position, e.stream)) end,
  },
}
]]):format(name, name))
    -- a worker on store b holds every partition, and keeps them
    local worker = T.spawn(([[os.execute(%q)]]):format(("%s --dsn %q project --table %s --lease 30 %s")
      :format(T.host(), T.dsn(), sb, path)))
    local held = T.eventually(function()
      local r = db:query("select count(*) as n from pgstore_leases where name like $1 and owner is not null"
        .. " and expires_at > now()", "%pbal")
      return r and r[1].n == 4
    end, 20)
    -- meanwhile a run on store a gets a's partitions, not b's
    local out, rc = T.sh(("%s --dsn %q project --table %s --once %s"):format(T.host(), T.dsn(), sa, path))
    T.sh(("pkill -TERM -f %q"):format(sb .. " --lease 30"))
    T.wait(worker, 10)
    assert.is_true(held, "the worker on b never held its partitions: " .. T.output(worker))
    assert.equal(0, rc, out)
    assert.equal(40, db:query(("select count(*) as n from %s where store = 'a'"):format(name))[1].n)
    es_a:close()
    es_b:close()
    assert(db:exec("drop table " .. name))
  end)

  it("shows each consumer's lag against its own store in `pgstore status`", function()
    local name = T.unique("cps_status")
    local es_a = assert(db:events{ table = name .. "_a", notify = false })
    local es_b = assert(db:events{ table = name .. "_b", notify = false })
    fill(es_a, "a-", 3, 10) -- head 30
    fill(es_b, "b-", 2, 10) -- head 20
    local cp_a = assert(db:checkpoints{ store = es_a })
    local cp_b = assert(db:checkpoints{ store = es_b })
    assert(cp_a:save(name .. "-reader", 5))
    assert(cp_b:save(name .. "-reader", 5))
    local out, rc = T.sh(("%s --dsn %q status --table %s_a"):format(T.host(), T.dsn(), name))
    assert.equal(0, rc, out)
    local section_a = out:match("store public%." .. name .. "_a, head position 30\n(.-)\n")
    local section_b = out:match("store public%." .. name .. "_b, head position 20\n(.-)\n")
    assert.truthy(section_a, out)
    assert.truthy(section_b, out)
    assert.matches(name:gsub("%p", "%%%0") .. "%-reader%s+at 5%s+lag 25", section_a)
    assert.matches(name:gsub("%p", "%%%0") .. "%-reader%s+at 5%s+lag 15", section_b)
    cp_a:delete(name .. "-reader")
    cp_b:delete(name .. "-reader")
    for _, h in ipairs{ cp_a, cp_b, es_a, es_b } do h:close() end
  end)

  it("moves checkpoints saved before to the schema's one event store when it has no events table", function()
    local schema = T.unique("cps_one")
    assert(db:exec(("create schema %s"):format(schema)))
    local orders = assert(db:events{ table = schema .. ".orders", notify = false })
    orders:close()
    for _, stmt in ipairs{
      "create table %s.pgstore_checkpoints (consumer text primary key,"
        .. " position bigint not null check (position >= 0), updated_at timestamptz not null default now())",
      "insert into %s.pgstore_checkpoints (consumer, position) values ('projection:totals', 40)",
      "insert into %s.pgstore_migrations (target, version) values ('checkpoints:%s.pgstore_checkpoints', 1)",
    } do assert(db:exec(stmt:format(schema, schema))) end
    local cp = assert(db:checkpoints{ table = schema .. ".pgstore_checkpoints", store = schema .. ".orders" })
    assert.equal(40, cp:load("projection:totals"))
    cp:close()
  end)

  it("moves checkpoints saved before to the default event store of their schema", function()
    local schema = T.unique("cps_old")
    -- a checkpoint table at version 1, as checkpoints--1.sql made it
    for _, stmt in ipairs{
      "create schema %s",
      "create table %s.pgstore_checkpoints (consumer text primary key,"
        .. " position bigint not null check (position >= 0), updated_at timestamptz not null default now())",
      "create table %s.pgstore_migrations (target text primary key, version int not null,"
        .. " applied_at timestamptz not null default now())",
      "insert into %s.pgstore_checkpoints (consumer, position) values ('projection:totals', 12), ('mailer', 3)",
    } do assert(db:exec(stmt:format(schema, schema))) end
    assert(db:exec(("insert into %s.pgstore_migrations (target, version) values ($1, 1)"):format(schema),
      ("checkpoints:%s.pgstore_checkpoints"):format(schema)))
    local table_name = schema .. ".pgstore_checkpoints"
    local old = assert(db:checkpoints{ table = table_name, store = schema .. ".events" })
    assert.equal(12, old:load("projection:totals"))
    assert.equal(3, old:load("mailer"))
    local other = assert(db:checkpoints{ table = table_name, store = schema .. ".big" })
    assert.is_nil(other:load("mailer"))
    assert(other:save("mailer", 1))
    assert.equal(3, old:load("mailer"))
    local stores = assert(db:query(("select store, consumer, position from %s order by store, consumer"):format(table_name)))
    assert.same({
      { store = schema .. ".big", consumer = "mailer", position = 1 },
      { store = schema .. ".events", consumer = "mailer", position = 3 },
      { store = schema .. ".events", consumer = "projection:totals", position = 12 },
    }, stores)
    assert.equal(2, assert(db:query(("select version from %s.pgstore_migrations where target = $1"):format(schema),
      ("checkpoints:%s.pgstore_checkpoints"):format(schema)))[1].version)
    -- migrating again changes nothing
    assert(old:migrate())
    assert.equal(3, old:load("mailer"))
    old:close()
    other:close()
    assert(db:exec(("drop schema %s cascade"):format(schema)))
  end)
end)
