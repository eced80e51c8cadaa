-- SPDX-License-Identifier: MIT
-- A store is a table, not a spelling. A writer process holds an append
-- open (its position taken, not committed) while this process commits a
-- later one and reads read_all:
--   * through another spelling of the same table (`t` vs `public.t`) the
--     horizon must stop below the open append, and deliver it once it
--     commits — never step over it;
--   * through a different store (the same name in another schema, found by
--     search_path; a name whose old 16-bit tag collided) nothing may wait
--     for it.
-- And the sequence the order argument rests on is checked: es:migrate()
-- sets CACHE 1 / NO CYCLE back, or refuses clearly when it may not.
local bit = require "bit"
local T = require "testenv"

-- Opens `table` (through a connection with `dsn_extra` appended to the DSN
-- when given), appends one event in a transaction, writes its position to
-- DIR/held and commits only once DIR/go exists.
local HOLDER = [[
local pgstore, core = require "pgstore", require "pgstore.core"
local tbl, dir, dsn, extra = arg[1], arg[2], arg[3], arg[4]
local d = extra ~= "" and assert(pgstore.connect{ dsn = dsn .. " " .. extra }) or db
local es = assert(d:events{ table = tbl, notify = false })
local function exists(p) local f = io.open(p) if f then f:close() end return f ~= nil end
local ok, err = d:transaction(function(tx)
  local r = assert(es:append("held", { { type = "Held" } }, { tx = tx }))
  local f = assert(io.open(dir .. "/held.tmp", "w"))
  f:write(r.first_position) f:close()
  os.rename(dir .. "/held.tmp", dir .. "/held")
  local deadline = core.now() + 60
  while not exists(dir .. "/go") and core.now() < deadline do core.sleep(0.01) end
  return true
end)
print("committed", tostring(ok), tostring(err))
]]

-- The 16-bit tag schema version 2 hashed from the quoted name as spelled.
local function old_tag(quoted)
  local h = 2166136261
  for i = 1, #quoted do
    h = bit.tobit(bit.bxor(h, quoted:byte(i)))
    local hi, lo = math.floor((h % 4294967296) / 65536), h % 65536
    h = ((hi * 16777619) % 65536 * 65536 + lo * 16777619) % 4294967296
  end
  return bit.band(bit.bxor(h, bit.rshift(h, 16)), 0xffff)
end

describe("a store is a table", function()
  local db
  T.block_db(setup, teardown, function(d) db = d end)

  -- Starts the holder on `tbl`; returns its handle, dir and held position.
  local function hold(tbl, extra)
    local dir = T.tmpdir("hold")
    local proc = T.spawn(HOLDER, tbl, dir, T.dsn(), extra or "")
    assert(T.eventually(function() return T.read(dir .. "/held") ~= "" end, 30),
      "the holder did not append: " .. tostring(T.output(proc)))
    return proc, dir, tonumber(T.read(dir .. "/held"))
  end
  local function release(proc, dir)
    T.write(dir .. "/go", "")
    local out, ended = T.wait(proc, 30)
    assert.is_true(ended, "the holder did not end")
    assert.truthy(out:match("committed%s+true"), out)
  end

  it("is one order horizon whether named t or public.t", function()
    local plain = assert(db:events{ table = "store_sp", notify = false })
    assert(plain:truncate())
    local proc, dir, held = hold("public.store_sp")
    local later = assert(plain:append("later", { { type = "Later" } }))
    assert.truthy(later.first_position > held)
    local rows, cursor = assert(plain:read_all{ after = 0 })
    assert.equal(0, #rows, "read_all stepped over the open append at " .. held)
    assert.truthy(cursor < held, ("the cursor %d passed the open append at %d"):format(cursor, held))
    release(proc, dir)
    rows = assert(plain:read_all{ after = cursor })
    assert.equal(2, #rows)
    assert.equal(held, rows[1].position)
    assert.equal(later.first_position, rows[2].position)
    plain:close()
  end)

  it("does not hold back the same table name in another schema", function()
    for _, s in ipairs{ "store_tenant_a", "store_tenant_b" } do
      assert(db:exec(("create schema if not exists %s"):format(s)))
      local es = assert(db:events{ table = s .. ".ten", notify = false })
      assert(es:truncate())
      es:close()
    end
    local b = assert(require("pgstore").connect{ dsn = T.dsn() .. " options='-csearch_path=store_tenant_b'",
      application_name = "pgstore-spec" })
    local es_b = assert(b:events{ table = "ten", notify = false })
    local proc, dir = hold("ten", "options='-csearch_path=store_tenant_a'")
    local r = assert(es_b:append("b", { { type = "B" } }))
    local rows = assert(es_b:read_all{ after = 0 })
    release(proc, dir)
    assert.equal(1, #rows, "tenant b's follower waited for tenant a's open append")
    assert.equal(r.first_position, rows[1].position)
    local a = assert(db:query("select count(*) as n from store_tenant_a.ten"))
    assert.equal(1, a[1].n)
    es_b:close()
    b:close()
  end)

  it("does not hold back a table whose old tag collides", function()
    local seen, x, y = {}, nil, nil
    for i = 1, 100000 do
      local name = "store_c" .. i
      local tag = old_tag('"' .. name .. '"')
      if seen[tag] then x, y = seen[tag], name break end
      seen[tag] = name
    end
    assert.truthy(x, "no two names with the same old tag")
    local ex = assert(db:events{ table = x, notify = false })
    local ey = assert(db:events{ table = y, notify = false })
    assert(ex:truncate())
    assert(ey:truncate())
    local proc, dir = hold(x)
    local r = assert(ey:append("y", { { type = "Y" } }))
    local rows = assert(ey:read_all{ after = 0 })
    release(proc, dir)
    assert.equal(1, #rows, ("%s's follower waited for an open append to %s"):format(y, x))
    assert.equal(r.first_position, rows[1].position)
    ex:close()
    ey:close()
  end)

  it("keeps the horizon across the 2^32 boundary of positions", function()
    local es = assert(db:events{ table = "store_big", notify = false })
    assert(es:truncate())
    assert(db:query("select setval('store_big_position_seq', 4294967290)"))
    local proc, dir, held = hold("store_big")
    assert.truthy(held > 4294967290)
    for i = 1, 8 do assert(es:append("later", { { type = "Later", data = { i = i } } })) end
    local rows, cursor = assert(es:read_all{ after = 0 })
    assert.equal(0, #rows, "read_all stepped over the open append at " .. held)
    release(proc, dir)
    rows = assert(es:read_all{ after = cursor })
    assert.equal(9, #rows)
    assert.equal(held, rows[1].position)
    assert.truthy(rows[9].position > 4294967296)
    es:close()
  end)

  it("honours the order lock of schema version 2 (an appender that began before the upgrade)", function()
    local es = assert(db:events{ table = "store_v2", notify = false })
    assert(es:truncate())
    -- what a version-2 append body does: the lock (tag, L), then nextval
    local OLD = ([[
      local core = require "pgstore.core"
      local dir = arg[1]
      local function exists(p) local f = io.open(p) if f then f:close() end return f ~= nil end
      assert(db:transaction(function(tx)
        local l = assert(tx:query("select case when is_called then last_value else last_value - 1 end as l from store_v2_position_seq"))[1].l
        assert(tx:query("select pg_advisory_xact_lock_shared(((%d::bigint << 16) | (($1::bigint >> 32) & 65535))::bit(32)::int, ($1::bigint & 4294967295)::bit(32)::int)", l))
        local r = assert(tx:query([=[insert into store_v2 (position, stream, version, id, type, data)
          values (nextval('store_v2_position_seq'), 'old', 1, gen_random_uuid(), 'Old', '{}') returning position]=]))[1]
        local f = assert(io.open(dir .. "/held", "w")) f:write(r.position) f:close()
        local deadline = core.now() + 60
        while not exists(dir .. "/go") and core.now() < deadline do core.sleep(0.01) end
        return true
      end))
      print("committed true")
    ]]):format(old_tag('"store_v2"'))
    local dir = T.tmpdir("v2")
    local proc = T.spawn(OLD, dir)
    assert(T.eventually(function() return T.read(dir .. "/held") ~= "" end, 30), T.output(proc))
    local held = tonumber(T.read(dir .. "/held"))
    assert(es:append("later", { { type = "Later" } }))
    local rows, cursor = assert(es:read_all{ after = 0 })
    assert.equal(0, #rows, "read_all stepped over a version-2 append in flight at " .. held)
    release(proc, dir)
    rows = assert(es:read_all{ after = cursor })
    assert.equal(2, #rows)
    assert.equal(held, rows[1].position)
    es:close()
  end)

  it("takes one order lock pair per transaction, however many appends", function()
    local es = assert(db:events{ table = "store_many", notify = false })
    local n
    assert(db:transaction(function(tx)
      for i = 1, 200 do assert(es:append("s" .. i % 7, { { type = "E" } }, { tx = tx })) end
      n = assert(tx:query([[select count(*) as n from pg_locks where locktype = 'advisory'
        and pid = pg_backend_pid() and classid = 'store_many'::regclass::oid]]))[1].n
      return true
    end))
    assert.equal(2, n)
    local rows = assert(es:read_all{ after = 0, limit = 1000 })
    assert.equal(200, #rows)
    es:close()
  end)
end)

describe("the position sequence", function()
  local db
  T.block_db(setup, teardown, function(d) db = d end)

  it("is set back to CACHE 1 NO CYCLE by es:migrate()", function()
    local es = assert(db:events{ table = "store_seq", notify = false })
    assert(db:exec("alter sequence store_seq_position_seq cache 20 cycle"))
    assert(es:migrate())
    local s = assert(db:query([[select seqcache, seqcycle from pg_sequence
      where seqrelid = 'store_seq_position_seq'::regclass]]))[1]
    assert.equal(1, s.seqcache)
    assert.is_false(s.seqcycle)
    es:close()
  end)

  it("is set forward by es:migrate() when moved behind the positions, and read_all refuses meanwhile", function()
    local es = assert(db:events{ table = "store_back", notify = false })
    for i = 1, 5 do assert(es:append("s", { { type = "E", data = { i = i } } })) end
    local rows, cursor = assert(es:read_all{ after = 0 })
    assert.equal(5, cursor)
    assert(db:exec("alter sequence store_back_position_seq restart"))
    local none, err = es:read_all{ after = cursor }
    assert.is_nil(none)
    assert.equal("invalid", err.code)
    assert.truthy(err.message:match("behind"), err.message)
    assert(es:migrate())
    local r = assert(es:append("s", { { type = "After" } }))
    assert.truthy(r.first_position > cursor, "position " .. r.first_position .. " handed out again")
    rows = assert(es:read_all{ after = cursor })
    assert.equal(1, #rows)
    es:close()
  end)

  it("is made LOGGED again, and read_all refuses an unlogged one", function()
    local es = assert(db:events{ table = "store_unlogged", notify = false })
    assert(db:exec("alter sequence store_unlogged_position_seq set unlogged"))
    local none, err = es:read_all{ after = 0 }
    assert.is_nil(none)
    assert.truthy(err.message:match("UNLOGGED"), err.message)
    assert(es:migrate())
    local p = assert(db:query([[select relpersistence from pg_class
      where oid = 'store_unlogged_position_seq'::regclass]]))[1]
    assert.equal("p", p.relpersistence)
    assert(es:read_all{ after = 0 })
    es:close()
  end)

  it("changed under a process opened without migrations stops its followers, not skips", function()
    local es = assert(db:events{ table = "store_cache", notify = false })
    es:close()
    es = assert(db:events{ table = "store_cache", notify = false, migrate = false })
    assert(db:exec("alter sequence store_cache_position_seq cache 20"))
    local none, err = es:read_all{ after = 0 }
    assert.is_nil(none)
    assert.equal("invalid", err.code)
    assert.truthy(err.message:match("CACHE 20"), err.message)
    assert(db:exec("alter sequence store_cache_position_seq cache 1"))
    assert(es:read_all{ after = 0 })
    es:close()
  end)

  it("is refused clearly when the role may not fix it", function()
    local es = assert(db:events{ table = "store_seq2", notify = false })
    es:close()
    assert(db:exec("alter sequence store_seq2_position_seq cache 50"))
    assert(db:exec("do $$ begin create role store_user login; exception when duplicate_object then null; end $$"))
    assert(db:exec("grant usage on schema public to store_user"))
    assert(db:exec("grant select, insert, update on all tables in schema public to store_user"))
    assert(db:exec("grant usage, select on all sequences in schema public to store_user"))
    local u = T.connect{ dsn = T.dsn() .. " user=store_user", pool_size = 2 }
    local opened, err = u:events{ table = "store_seq2", notify = false }
    assert.is_nil(opened)
    assert.equal("invalid", err.code)
    assert.truthy(err.message:match("CACHE 1"), err.message)
    assert.truthy(err.message:match("CACHE 50"), err.message)
    assert.truthy(err.hint and err.hint:match("owns the sequence"), tostring(err.hint))
    -- opened as it is, es:migrate() says the same
    local plain = assert(u:events{ table = "store_seq2", notify = false, migrate = false })
    local ok, merr = plain:migrate()
    assert.is_nil(ok)
    assert.equal("invalid", merr.code)
    assert.truthy(merr.message:match("CACHE 50"), merr.message)
    plain:close()
    u:close()
    local s = assert(db:query([[select seqcache from pg_sequence
      where seqrelid = 'store_seq2_position_seq'::regclass]]))[1]
    assert.equal(50, s.seqcache)
  end)
end)
