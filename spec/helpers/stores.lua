-- SPDX-License-Identifier: MIT
-- stores — what the companion store specs share: dropping a store's table
-- and its migration record, counting rows behind the API's back, a
-- barrier for parallel processes, and the behaviours every store has
-- (lifetime and ownership of the db, table names, options), written once
-- and run inside each store's spec.
local pgstore = require "pgstore"
local assert = require "luassert" -- busted's assert; specs get it as a global
local T = require "testenv"

local S = {}

-- Drops store tables and forgets their migrations.
function S.drop(db, ...)
  for _, name in ipairs({ ... }) do
    assert(db:exec("drop table if exists " .. name))
  end
  local has = db:query("select to_regclass('pgstore_migrations') is not null as has")[1].has
  if has then
    for _, name in ipairs({ ... }) do
      -- keys are "<series>:<schema>.<table>" (0.1 wrote "<kind>:<table>")
      assert(db:exec("delete from pgstore_migrations where right(target, length($1) + 1) in (':' || $1, '.' || $1)", name))
    end
  end
end

-- Rows in a table, read with plain SQL (expired KV rows included).
function S.count(db, tbl, where)
  return assert(db:query(("select count(*) as n from %s %s"):format(tbl, where or "")))[1].n
end

function S.exists(db, name)
  return db:query("select to_regclass($1) is not null as e", name)[1].e
end

-- Lua source for run_parallel scripts: barrier(tbl, n) blocks until n
-- processes have arrived, so the work after it really overlaps.
S.BARRIER = [[
local core = require "pgstore.core"
local function barrier(tbl, n)
  assert(db:exec(("insert into %s values ($1)"):format(tbl), tonumber(arg[1])))
  local deadline = core.now() + 20
  while db:query(("select count(*) as n from %s"):format(tbl))[1].n < n do
    assert(core.now() < deadline, "barrier timed out")
    core.sleep(0.002)
  end
end
]]

function S.make_barrier(db)
  local name = T.unique("barrier")
  assert(db:exec(("create table %s (i int)"):format(name)))
  return name
end

-- Asserts a failure: nil, err with this code (and SQLSTATE when given).
function S.fails(code, sqlstate, res, err)
  assert.is_nil(res)
  assert.is_table(err, "expected an error table, got " .. tostring(err))
  assert.equal(code, err.code, tostring(err))
  if sqlstate then assert.equal(sqlstate, err.sqlstate, tostring(err)) end
  return err
end

-- The db still answers.
function S.alive(db)
  assert.same({ { one = 1 } }, db:query("select 1 as one"))
end

-- One store on a table of its own for a whole describe block, given
-- busted's setup and teardown: setup connects (options `o.connect`), opens
-- db:<kind>{ table = <unique name from o.prefix>, <o.opts> } and hands db,
-- the store and the table name to `bind`; teardown closes the store, drops
-- its table, closes db and checks that no connection leaked.
function S.fixture(setup, teardown, kind, o, bind)
  local db, store, t
  setup(function()
    db = T.connect(o.connect)
    t = T.unique(o.prefix or kind)
    local opts = { table = t }
    for k, v in pairs(o.opts or {}) do opts[k] = v end
    store = assert(db[kind](db, opts))
    bind(db, store, t)
  end)
  teardown(function()
    store:close()
    S.drop(db, t)
    db:close()
    T.assert_no_leaks()
  end)
end

-- Lifetime and ownership, as busted `it`s on tables of their own (dropped
-- in `teardown`): `kind` as in db:<kind>(opts); `probe(store)` is a cheap
-- read.
function S.lifetime(it, teardown, kind, probe)
  local tables = {}
  local function opts()
    tables[#tables + 1] = T.unique(kind .. "_life")
    return { table = tables[#tables] }
  end
  teardown(function()
    local db = T.connect()
    S.drop(db, unpack(tables))
    db:close()
    T.assert_no_leaks()
  end)

  it("closes twice harmlessly and says so in tostring", function()
    local db = T.connect()
    local store = assert(db[kind](db, opts()))
    assert.equal("pgstore." .. kind, tostring(store))
    store:close()
    store:close()
    assert.equal("pgstore." .. kind .. " (closed)", tostring(store))
    assert.has_error(function() probe(store) end, "attempt to use a closed connection")
    -- a store made from db leaves db open
    S.alive(db)
    db:close()
  end)

  it("raises when its db has been closed", function()
    local db = T.connect()
    local store = assert(db[kind](db, opts()))
    db:close()
    assert.has_error(function() probe(store) end, "attempt to use a closed connection")
    store:close()
  end)

  it("owns its db when opened with pgstore.open_" .. kind, function()
    local o = opts()
    local store = assert(pgstore["open_" .. kind]({ dsn = T.dsn(), application_name = "pgstore-spec" }, o))
    assert.is_true(store.owns_db)
    assert.is_nil(select(2, probe(store)))
    local db = store.db
    store:close()
    assert.is_true(db:is_closed())
    store:close() -- twice: harmless
  end)

  it("keeps its db reachable while it lives", function()
    local store
    do
      local db = T.connect()
      store = assert(db[kind](db, opts()))
    end
    collectgarbage()
    collectgarbage()
    local _, err = probe(store)
    assert.is_nil(err)
    store.db:close()
  end)

  it("refuses unknown options and wrong option types with the argument number", function()
    local db = T.connect()
    assert.has_error(function() db[kind](db, { bogus = 1 }) end,
      "bad argument #1 to '" .. kind .. "' (unknown option 'bogus')")
    assert.has_error(function() db[kind](db, { table = 42 }) end,
      "bad argument #1 to '" .. kind .. "' (option 'table' must be string, got number)")
    assert.has_error(function() db[kind](db, { skip_schema_init = "yes" }) end,
      "bad argument #1 to '" .. kind .. "' (option 'skip_schema_init' must be boolean, got string)")
    assert.has_error(function() db[kind](db, "t") end,
      "bad argument #1 to '" .. kind .. "' (table expected, got string)")
    S.alive(db)
    db:close()
  end)
end

-- Table names: validated and quoted, nothing created for a bad one.
function S.table_names(it, kind, probe)
  it("rejects 'x; drop table' with 'invalid' and creates nothing", function()
    local db = T.connect()
    local before = db:query("select count(*) as n from pg_class")[1].n
    local store, err = db[kind](db, { table = "x; drop table pg_class" })
    S.fails("invalid", nil, store, err)
    assert.matches("invalid table name", err.message)
    assert.equal(before, db:query("select count(*) as n from pg_class")[1].n)
    S.alive(db)
    db:close()
  end)

  it("rejects a name longer than 63 bytes with 'invalid'", function()
    local db = T.connect()
    local store, err = db[kind](db, { table = ("t"):rep(64) })
    S.fails("invalid", nil, store, err)
    S.alive(db)
    db:close()
  end)

  it("accepts schema.table and a mixed-case name, quoted", function()
    local db = T.connect()
    local name = T.unique("Mixed")
    assert(db:exec("create schema if not exists pgs_spec"))
    local store = assert(db[kind](db, { table = "pgs_spec." .. name }))
    assert.is_true(S.exists(db, ('pgs_spec."%s"'):format(name)))
    assert.is_nil(select(2, probe(store)))
    store:close()
    S.drop(db, ('pgs_spec."%s"'):format(name))
    if S.exists(db, "pgstore_migrations") then
      assert(db:exec("delete from pgstore_migrations where target = $1", kind .. ":pgs_spec." .. name))
    end
    db:close()
  end)
end

return S
