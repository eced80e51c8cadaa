-- SPDX-License-Identifier: MIT
-- The event store: appends in every expected-version mode, batches,
-- idempotency, reads, the global read and its cursor, codecs, the upcast
-- hook, stream lifecycle, and bad input answered with clear codes.
local pgstore = require "pgstore"
local cjson = require "cjson"
local T = require "testenv"

describe("events", function()
  local db, es
  setup(function()
    db = T.connect{ pool_size = 3 }
    es = assert(db:events{ table = "ev_spec", notify = false })
  end)
  before_each(function() assert(es:truncate()) end)
  teardown(function()
    es:close()
    db:close()
    T.assert_no_leaks()
  end)

  local function count(stream)
    return db:query("select count(*) as n from ev_spec where stream = $1", stream)[1].n
  end

  describe("append", function()
    it("appends with an exact expected version and reports versions and positions", function()
      local r = assert(es:append("order-1", { { type = "Placed", data = { total = 10 } } }, { expected = 0 }))
      assert.same({ stream = "order-1", first_version = 1, last_version = 1, first_position = 1,
                    last_position = 1, count = 1, replayed = false }, r)
      r = assert(es:append("order-1", { { type = "Paid" }, { type = "Shipped" } }, { expected = 1 }))
      assert.equal(2, r.first_version)
      assert.equal(3, r.last_version)
      assert.equal(3, r.last_position)
      assert.equal(3, es:version("order-1"))
    end)

    it("supports any, no_stream and exists", function()
      assert(es:append("s", { { type = "A" } }))                              -- any
      assert(es:append("s", { { type = "A" } }, { expected = "any" }))
      local _, err = es:append("s", { { type = "A" } }, { expected = "no_stream" })
      assert.equal("conflict", err.code)
      assert.equal("no_stream", err.expected)
      assert.equal(2, err.actual)
      assert(es:append("s", { { type = "A" } }, { expected = "exists" }))
      _, err = es:append("new", { { type = "A" } }, { expected = "exists" })
      assert.equal("conflict", err.code)
      assert.equal("exists", err.expected)
      assert.equal(0, err.actual)
      assert(es:append("new", { { type = "A" } }, { expected = "no_stream" }))
    end)

    it("writes nothing on a version conflict and says what it expected", function()
      assert(es:append("c", { { type = "A" } }))
      local res, err = es:append("c", { { type = "B" }, { type = "C" } }, { expected = 5 })
      assert.is_nil(res)
      assert.equal("conflict", err.code)
      assert.equal(5, err.expected)
      assert.equal(1, err.actual)
      assert.matches("expected 5, actual 1", tostring(err))
      assert.equal(1, count("c"))
      assert.equal(1, es:version("c"))
    end)

    it("stores data, metadata, ids, schema versions and custom times", function()
      local id = "0b7e4b6e-7a0b-4c6a-9d6e-1f2a3b4c5d6e"
      assert(es:append("m", { { type = "A", data = { n = 1, list = { 1, 2 } }, metadata = { user = "ada" },
                                id = id, schema_version = 3 } }, { time = 1700000000.5 }))
      local e = assert(es:read("m"))[1]
      assert.equal(id, e.id)
      assert.same({ n = 1, list = { 1, 2 } }, e.data)
      assert.same({ user = "ada" }, e.metadata)
      assert.equal(3, e.schema_version)
      assert.equal("2023-11-14T22:13:20.5+00:00", e.time)
      assert.equal("m", e.stream)
    end)

    it("returns the original result for a repeated idempotency key and writes nothing", function()
      local first = assert(es:append("i", { { type = "A" }, { type = "B" } }, { idempotency_key = "k-1" }))
      assert(es:append("i", { { type = "C" } }))
      local again = assert(es:append("i", { { type = "A" }, { type = "B" } }, { idempotency_key = "k-1" }))
      assert.is_true(again.replayed)
      first.replayed = true
      assert.same(first, again)
      assert.equal(3, count("i"))
      local _, err = es:append("other", { { type = "A" } }, { idempotency_key = "k-1" })
      assert.equal("duplicate", err.code)
      assert.equal(0, count("other"))
    end)

    it("treats the same event ids as the same append", function()
      local ids = { "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222" }
      local events = { { type = "A", id = ids[1] }, { type = "B", id = ids[2] } }
      local first = assert(es:append("d", events))
      local again = assert(es:append("d", events))
      assert.is_true(again.replayed)
      assert.equal(first.first_position, again.first_position)
      assert.equal(2, count("d"))
      -- an id reused in a different batch is refused, nothing written
      local _, err = es:append("d", { { type = "X", id = ids[2] }, { type = "Y", id = "33333333-3333-4333-8333-333333333333" } })
      assert.equal("duplicate", err.code)
      assert.equal(2, count("d"))
    end)

    it("appends to several streams all or nothing", function()
      local res = assert(es:append_many{
        { stream = "a", events = { { type = "A" } }, expected = "no_stream" },
        { stream = "b", events = { { type = "B" }, { type = "B" } } },
      })
      assert.equal(2, #res)
      assert.equal("b", res[2].stream)
      assert.equal(2, res[2].last_version)
      local _, err = es:append_many{
        { stream = "a", events = { { type = "A2" } }, expected = 1 },
        { stream = "b", events = { { type = "B3" } }, expected = 7 },
      }
      assert.equal("conflict", err.code)
      assert.equal(2, err.batch)
      assert.equal(1, count("a"))
      assert.equal(2, count("b"))
    end)
  end)

  describe("read", function()
    before_each(function()
      local evs = {}
      for i = 1, 10 do evs[i] = { type = i % 2 == 0 and "Even" or "Odd", data = { i = i } } end
      assert(es:append("r", evs))
    end)

    it("reads in order, by range, with a limit, by type and backward", function()
      local function is(rows) local o = {} for k, e in ipairs(rows) do o[k] = e.data.i end return o end
      assert.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, is(es:read("r")))
      assert.same({ 3, 4, 5 }, is(es:read("r", { from = 3, to = 5 })))
      assert.same({ 4, 5 }, is(es:read("r", { from = 4, limit = 2 })))
      assert.same({ 2, 4, 6, 8, 10 }, is(es:read("r", { types = { "Even" } })))
      assert.same({ 10, 9, 8 }, is(es:read("r", { backward = true, limit = 3 })))
      assert.same({}, es:read("r", { from = 11 }))
      assert.same({}, es:read("unknown"))
    end)

    it("leaves data undecoded with raw = true", function()
      local e = es:read("r", { limit = 1, raw = true })[1]
      assert.equal('{"i": 1}', e.data)
    end)

    it("applies the upcast hook on decoded reads only", function()
      es:upcast(function(e) e.data.up = true; return e end)
      assert.is_true(es:read("r", { limit = 1 })[1].data.up)
      assert.is_true(es:read_all{ limit = 1 }[1].data.up)
      assert.equal('{"i": 1}', es:read("r", { limit = 1, raw = true })[1].data)
      es:upcast(nil)
      assert.is_nil(es:read("r", { limit = 1 })[1].data.up)
    end)
  end)

  describe("read_all", function()
    it("pages through every stream in position order and resumes at the cursor", function()
      for i = 1, 25 do assert(es:append("s" .. (i % 3), { { type = "E", data = { i = i } } })) end
      local seen, cursor = {}, nil
      repeat
        local page
        page, cursor = assert(es:read_all{ after = cursor, limit = 10 })
        for _, e in ipairs(page) do seen[#seen + 1] = e.data.i end
      until #page == 0
      local want = {}
      for i = 1, 25 do want[i] = i end
      assert.same(want, seen)
      assert.equal(25, cursor)
      -- a stored string cursor resumes too
      local rest = assert(es:read_all{ after = "20" })
      assert.equal(5, #rest)
      assert.equal(21, rest[1].position)
    end)

    it("filters by type and by a literal stream prefix", function()
      assert(es:append("cart-1", { { type = "Added" }, { type = "Removed" } }))
      assert(es:append("cart_x", { { type = "Added" } }))
      assert(es:append("cartoon", { { type = "Added" } }))
      local rows = assert(es:read_all{ types = { "Removed" } })
      assert.equal(1, #rows)
      rows = assert(es:read_all{ prefix = "cart-" })
      assert.equal(2, #rows)
      rows = assert(es:read_all{ prefix = "cart_" }) -- '_' is not a wildcard
      assert.equal(1, #rows)
      assert.equal("cart_x", rows[1].stream)
      -- a filtered page still moves the cursor past what it scanned
      local _, cursor = es:read_all{ types = { "Nothing" } }
      assert.equal(4, cursor)
    end)

    it("rejects garbage cursors with 'invalid'", function()
      for _, bad in ipairs{ "abc", "-1", "1e5", -5, 1.5, 0 / 0 } do
        local rows, err = es:read_all{ after = bad }
        assert.is_nil(rows)
        assert.equal("invalid", err.code)
      end
    end)
  end)

  describe("lifecycle", function()
    it("tombstones: appends and reads fail with 'deleted', read_all still delivers", function()
      assert(es:append("t", { { type = "A" } }))
      assert(es:tombstone("t", "gdpr request"))
      assert.equal("tombstoned", es:status("t"))
      local _, err = es:append("t", { { type = "B" } })
      assert.equal("deleted", err.code)
      _, err = es:read("t")
      assert.equal("deleted", err.code)
      assert.equal(1, #es:read_all())
      assert.equal("gdpr request", db:query("select reason from ev_spec_heads where stream = 't'")[1].reason)
      _, err = es:restore("t")
      assert.equal("deleted", err.code)
    end)

    it("archives and restores in place", function()
      assert(es:append("a", { { type = "A" } }))
      assert(es:archive("a"))
      assert.equal("archived", es:status("a"))
      local _, err = es:append("a", { { type = "B" } })
      assert.equal("archived", err.code)
      assert.equal(1, #es:read("a"))
      assert(es:restore("a"))
      assert.equal("active", es:status("a"))
      assert(es:append("a", { { type = "B" } }, { expected = 1 }))
      _, err = es:archive("missing")
      assert.equal("not_found", err.code)
    end)

    it("hard-deletes a stream, not_found when absent", function()
      assert(es:append("h", { { type = "A" }, { type = "B" } }))
      assert(es:delete("h"))
      assert.equal("none", es:status("h"))
      assert.equal(0, count("h"))
      local _, err = es:delete("h")
      assert.equal("not_found", err.code)
      assert(es:append("h", { { type = "A" } }, { expected = "no_stream" }))
    end)

    it("moves a stream to another store and back", function()
      local cold = assert(db:events{ table = "ev_spec_cold", notify = false })
      assert(cold:truncate())
      assert(es:append("mv", { { type = "A", data = { n = 1 } }, { type = "B", data = { n = 2 } } }))
      local before = es:read("mv")
      assert.equal(2, es:archive_to("mv", cold))
      assert.equal("archived", es:status("mv"))
      local _, err = es:read("mv")
      assert.equal("archived", err.code)
      local moved = assert(cold:read("mv"))
      assert.equal(2, #moved)
      assert.equal(before[2].id, moved[2].id)
      assert.equal(before[2].time, moved[2].time)
      assert.equal(2, cold:version("mv"))
      assert.equal(2, es:restore_from("mv", cold))
      assert.equal("active", es:status("mv"))
      assert.same({ 1, 2 }, { es:read("mv")[1].data.n, es:read("mv")[2].data.n })
      assert.equal("none", cold:status("mv"))
      assert(es:append("mv", { { type = "C" } }, { expected = 2 }))
      cold:close()
    end)

    it("refuses to move a stream into the same table under another name", function()
      assert(es:append("self", { { type = "A" } }))
      local same = assert(db:events{ table = "public.ev_spec", notify = false })
      local _, err = es:archive_to("self", same)
      assert.equal("invalid", err.code)
      assert.equal(1, count("self"))
      same:close()
    end)
  end)

  describe("codecs", function()
    it("raw takes JSON text and refuses text that is not JSON, writing nothing", function()
      local raw = assert(db:events{ table = "ev_spec", codec = "raw", notify = false })
      assert(raw:append("j", { { type = "A", data = '{"x": [1, 2]}' } }))
      assert.equal('{"x": [1, 2]}', raw:read("j")[1].data)
      local _, err = raw:append("j", { { type = "B", data = "{not json" } })
      assert.equal("invalid", err.code)
      _, err = raw:append("j", { { type = "B", data = { 1 } } })
      assert.equal("invalid", err.code)
      assert.equal(1, count("j"))
      raw:close()
    end)

    it("uses a custom codec both ways", function()
      local c = assert(db:events{ table = "ev_spec", notify = false, codec = {
        encode = function(v) return cjson.encode({ wrapped = v }) end,
        decode = function(s) return cjson.decode(s).wrapped end,
      } })
      assert(c:append("cc", { { type = "A", data = "hello" } }))
      assert.equal("hello", c:read("cc")[1].data)
      assert.same({ wrapped = "hello" }, es:read("cc")[1].data)
      c:close()
    end)
  end)

  describe("bad input", function()
    it("rejects invalid table names before touching the server", function()
      for _, name in ipairs{ "x; drop table y", ("a"):rep(64), "a\"b", "", "1x", "ev.spec.x" } do
        local store, err = db:events{ table = name }
        assert.is_nil(store)
        assert.equal("invalid", err.code)
      end
      -- a name that is fine alone but too long with its companions' suffixes
      local _, err = db:events{ table = ("a"):rep(60) }
      assert.equal("invalid", err.code)
    end)

    it("answers bad events with 'invalid' and writes nothing", function()
      local bad = {
        { {} },                                            -- missing type
        { { type = "" } },
        { { type = "A\0B" } },                             -- NUL in type
        { { type = "A", data = "bad utf8 \xff\xfe" } },   -- invalid UTF-8
        { { type = "A", data = { s = "nul \0 inside" } } },
        { { type = "A", data = ("x"):rep(10 * 1024 * 1024) } }, -- 10 MB
        { { type = "A", id = "not-a-uuid" } },
        { { type = "A", schema_version = 0 } },
        { { type = "A", data = { f = function() end } } },
        { "not a table" },
      }
      for i, events in ipairs(bad) do
        local res, err = es:append("bad", events)
        assert.is_nil(res, "case " .. i)
        assert.equal("invalid", err.code, "case " .. i .. ": " .. tostring(err))
      end
      local _, err = es:append("bad", {})
      assert.equal("invalid", err.code)
      assert.equal(0, count("bad"))
      assert.equal(0, es:latest_position())
      assert(es:append("bad", { { type = "Fine" } }))
    end)

    it("answers bad expected versions with 'invalid'", function()
      for _, v in ipairs{ -1, -7, 1.5, 2 ^ 53 + 2, 0 / 0, math.huge, "sometimes" } do
        local res, err = es:append("v", { { type = "A" } }, { expected = v })
        assert.is_nil(res)
        assert.equal("invalid", err.code, tostring(v))
      end
      assert.equal(0, count("v"))
    end)

    it("raises on arguments of the wrong Lua type", function()
      assert.has_error(function() es:append(42, { { type = "A" } }) end,
        "bad argument #1 to 'append' (stream name (string) expected, got number)")
      assert.has_error(function() es:append("s", { { type = "A" } }, { bogus = 1 }) end,
        "bad argument #3 to 'append' (unknown option 'bogus')")
      assert.has_error(function() es:append("s", { { type = "A" } }, { expected = {} }) end)
      assert.has_error(function() es:read("s", { limit = "ten" }) end)
      assert.has_error(function() es.read("s") end)
      assert.has_error(function() db:events{ codec = 1 } end)
      assert.equal("invalid", select(2, db:events{ codec = "yaml" }).code) -- a string, but no codec
      assert.same({}, es:read("s"))
    end)
  end)

  describe("schema", function()
    it("skips schema init with migrate = false and runs it with es:migrate()", function()
      local name = T.unique("ev_lazy")
      -- a missing table is named when the store opens, not on every call
      local missing, err = db:events{ table = name, migrate = false, notify = false }
      assert.is_nil(missing)
      assert.equal("not_found", err.code)
      assert.matches('"' .. name .. '"', err.message, 1, true)
      assert(db:events{ table = name, notify = false }):close()
      local lazy = assert(db:events{ table = name, migrate = false, notify = false })
      assert(lazy:migrate())
      assert(lazy:migrate()) -- idempotent
      assert(lazy:append("x", { { type = "A" } }))
      lazy:close()
      assert(db:exec(("drop table %s, %s_heads, %s_idempotency; drop sequence %s_position_seq")
        :format(name, name, name, name)))
    end)

    it("accepts a schema-qualified table name", function()
      assert(db:exec("create schema if not exists evs"))
      local q = assert(db:events{ table = "evs.ledger", notify = false })
      assert(q:truncate())
      assert(q:append("x", { { type = "A" } }))
      assert.equal(1, db:query("select count(*) as n from evs.ledger")[1].n)
      q:close()
    end)

    it("migrates from 8 processes at once", function()
      local name = T.unique("ev_race")
      local results = T.run_parallel(8, ([[
        local es = assert(db:events{ table = %q, notify = false })
        assert(es:append("p" .. arg[1], { { type = "A" } }))
        print("ok")
      ]]):format(name))
      for i, r in ipairs(results) do assert.equal(0, r.rc, "process " .. i .. ": " .. r.out) end
      assert.equal(8, db:query(("select count(*) as n from %s"):format(name))[1].n)
    end)
  end)

  it("closes: a closed store raises, the db stays open", function()
    local other = assert(db:events{ table = "ev_spec", notify = false })
    other:close()
    other:close()
    assert.equal("pgstore.events (closed)", tostring(other))
    assert.has_error(function() other:read("x") end, "attempt to use a closed event store")
    assert.same({ { one = 1 } }, db:query("select 1 as one"))
    local owned = assert(pgstore.open_events({ dsn = T.dsn(), application_name = "pgstore-spec" },
      { table = "ev_spec", notify = false }))
    assert(owned:read_all())
    owned:close()
    owned:close()
  end)
end)
