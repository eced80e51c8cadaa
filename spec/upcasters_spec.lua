-- SPDX-License-Identifier: MIT
-- Upcaster registries: what loads and what is refused (table-driven), how
-- chains apply to events, script files in the sandbox, and reads through a
-- real store (events written as v1 come back as v3; new appends are
-- stamped with the newest version).
local pgstore = require "pgstore"
local T = require "testenv"

local function up(t, from, fn)
  return { type = t, from = from, to = from + 1, upcast = fn or function(d) return d end }
end

-- OrderPlaced: v1 { amount } → v2 { total } → v3 { total, currency }
local ORDER = {
  { type = "OrderPlaced", from = 1, to = 2, upcast = function(d) d.total, d.amount = d.amount, nil; return d end },
  { type = "OrderPlaced", from = 2, to = 3, upcast = function(d, m)
      d.currency = d.currency or "EUR"
      if m then m.upcast = true end
      return d, m
    end },
}

local tmp
local function write(name, text) return T.write(tmp .. "/" .. name, text) end

describe("upcasters", function()
  setup(function() tmp = T.tmpdir("up") end)
  teardown(function() T.sh("rm -rf " .. tmp) end)

  describe("loading", function()
    local refused = {
      { "a gap in the chain", { up("A", 1), up("A", 3) }, "the chain for A has a gap: no upcaster for 2→3" },
      { "two upcasters for one step", { up("A", 1), up("A", 2), up("A", 1) }, "two upcasters for A 1→2: entry 1 and entry 3" },
      { "a step that skips a version", { { type = "A", from = 1, to = 3, upcast = print } }, "each step must go to from %+ 1 = 2" },
      { "a step backwards", { { type = "A", from = 2, to = 1, upcast = print } }, "goes from 2 to 1" },
      { "no type", { { from = 1, to = 2, upcast = print } }, "entry 1: field 'type' must be a non%-empty string" },
      { "an empty type", { { type = "", from = 1, to = 2, upcast = print } }, "field 'type' must be a non%-empty string" },
      { "no from", { { type = "A", to = 2, upcast = print } }, "field 'from' must be a whole schema version >= 1, got nil" },
      { "from zero", { { type = "A", from = 0, to = 1, upcast = print } }, "field 'from' must be a whole schema version >= 1, got 0" },
      { "a fractional from", { { type = "A", from = 1.5, to = 2.5, upcast = print } }, "got 1.5" },
      { "no upcast", { { type = "A", from = 1, to = 2 } }, "field 'upcast' must be a function%(data, metadata%), got nil" },
      { "a typo in a field", { { type = "A", form = 1, from = 1, to = 2, upcast = print } }, "unknown field 'form'" },
      { "a number entry", { 42 }, "entry 1: expected an upcaster table or a script path, got number" },
      { "an empty table entry", { {} }, "neither an upcaster nor a list" },
      { "a missing file", { "/nonexistent/up.lua" }, "/nonexistent/up.lua" },
      { "a gap across entries of another type", { up("A", 1), up("B", 1), up("B", 3), up("A", 2) }, "chain for B has a gap" },
    }
    for _, case in ipairs(refused) do
      it("refuses " .. case[1], function()
        local line, ok, err = debug.getinfo(1, "l").currentline, pcall(pgstore.upcasters, case[2])
        assert.is_false(ok)
        -- at the caller's line, a bad argument to pgstore.upcasters
        assert.equal(("%s:%d: bad argument #1 to 'upcasters' (upcasters: "):format(debug.getinfo(1, "S").short_src, line),
          err:match("^.-%(upcasters: "))
        assert.matches(case[3], err)
      end)
    end

    it("raises a misuse error for a non-table argument", function()
      local ok, err = pcall(pgstore.upcasters, "file.lua")
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'upcasters'", err)
    end)

    it("accepts chains for several types in any order and reports the newest version", function()
      local reg = pgstore.upcasters{ up("B", 2), ORDER[2], up("B", 1), ORDER[1], up("C", 4) }
      assert.equal(3, reg:latest("OrderPlaced"))
      assert.equal(3, reg:latest("B"))
      assert.equal(5, reg:latest("C"))
      assert.equal(1, reg:latest("Unknown"))
      assert.same({ "B", "C", "OrderPlaced" }, reg.types)
      local steps = {}
      for _, u in ipairs(reg:list()) do steps[#steps + 1] = ("%s %d→%d"):format(u.type, u.from, u.to) end
      assert.same({ "B 1→2", "B 2→3", "C 4→5", "OrderPlaced 1→2", "OrderPlaced 2→3" }, steps)
      assert.matches("5 upcasters for 3 types", tostring(reg))
    end)

    it("accepts an empty registry", function()
      local reg = pgstore.upcasters{}
      local e = { type = "A", schema_version = 1, data = { x = 1 } }
      assert.equal(e, reg:apply(e))
    end)
  end)

  describe("applying", function()
    local reg
    setup(function() reg = pgstore.upcasters(ORDER) end)

    local cases = {
      { "v1 runs the whole chain", { type = "OrderPlaced", schema_version = 1, data = { amount = 5 } },
        { type = "OrderPlaced", schema_version = 3, data = { total = 5, currency = "EUR" } } },
      { "v2 runs the last step", { type = "OrderPlaced", schema_version = 2, data = { total = 7, currency = "SEK" } },
        { type = "OrderPlaced", schema_version = 3, data = { total = 7, currency = "SEK" } } },
      { "the newest version is untouched", { type = "OrderPlaced", schema_version = 3, data = { total = 1 } },
        { type = "OrderPlaced", schema_version = 3, data = { total = 1 } } },
      { "a version newer than the chain passes (written by newer code)",
        { type = "OrderPlaced", schema_version = 9, data = { z = 1 } },
        { type = "OrderPlaced", schema_version = 9, data = { z = 1 } } },
      { "other types pass", { type = "Other", schema_version = 1, data = { amount = 5 } },
        { type = "Other", schema_version = 1, data = { amount = 5 } } },
      { "a missing schema_version counts as 1", { type = "OrderPlaced", data = { amount = 2 } },
        { type = "OrderPlaced", schema_version = 3, data = { total = 2, currency = "EUR" } } },
      { "metadata returned by a step replaces it", { type = "OrderPlaced", schema_version = 2, data = {}, metadata = { a = 1 } },
        { type = "OrderPlaced", schema_version = 3, data = { currency = "EUR" }, metadata = { a = 1, upcast = true } } },
    }
    for _, case in ipairs(cases) do
      it(case[1], function()
        assert.same(case[3], reg:apply(case[2]))
      end)
    end

    it("raises naming the step when an upcaster fails, and leaves the event as it was", function()
      local bad = pgstore.upcasters{ up("A", 1), up("A", 2, function() error("no price") end) }
      local e = { type = "A", schema_version = 1, data = { x = 1 } }
      local ok, err = pcall(bad.apply, bad, e)
      assert.is_false(ok)
      assert.matches("A v2→v3 %(entry 2%): .*no price", err)
      assert.equal(1, e.schema_version)
    end)

    it("raises when a step returns nothing", function()
      local bad = pgstore.upcasters{ up("A", 1, function(d) d.x = 2 end) }
      local ok, err = pcall(bad.apply, bad, { type = "A", schema_version = 1, data = {} })
      assert.is_false(ok)
      assert.matches("A v1→v2 %(entry 1%): upcast returned nothing; it must return the data", err)
    end)

    it("raises for a version older than the chain's first step", function()
      local r = pgstore.upcasters{ up("A", 2) }
      local ok, err = pcall(r.apply, r, { type = "A", schema_version = 1, data = {} })
      assert.is_false(ok)
      assert.matches("A v1 is older than the first upcaster %(2→3%)", err)
    end)

    it("upcasts bare values", function()
      local d, m, v = reg:upcast("OrderPlaced", 1, { amount = 3 }, nil)
      assert.same({ total = 3, currency = "EUR" }, d)
      assert.is_nil(m)
      assert.equal(3, v)
    end)
  end)

  describe("script files", function()
    it("loads one upcaster or a list per file, in the sandbox", function()
      local one = write("one.lua", [[
        return { type = "Paid", from = 1, to = 2, upcast = function(d) d.cents = math.floor(d.amount * 100); d.amount = nil; return d end }
      ]])
      local list = write("list.lua", [[
        return {
          { type = "Paid", from = 2, to = 3, upcast = function(d) d.v3 = string.upper("yes"); return d end },
          { type = "Shipped", from = 1, to = 2, upcast = function(d) d.carrier = d.carrier or "post"; return d end },
        }
      ]])
      local reg = pgstore.upcasters{ one, list, up("Shipped", 2) }
      assert.equal(3, reg:latest("Paid"))
      assert.same({ cents = 150, v3 = "YES" }, reg:apply({ type = "Paid", schema_version = 1, data = { amount = 1.5 } }).data)
      assert.equal(3, reg:latest("Shipped"))
    end)

    it("names the file when a file's upcaster is invalid or duplicates another", function()
      local bad = write("bad.lua", [[return { type = "X", from = 1, to = 2 }]])
      local ok, err = pcall(pgstore.upcasters, { bad })
      assert.is_false(ok)
      assert.matches("bad%.lua: field 'upcast' must be a function", err)
      local dup = write("dup.lua", [[return { { type = "X", from = 1, to = 2, upcast = function(d) return d end } }]])
      ok, err = pcall(pgstore.upcasters, { up("X", 1), dup })
      assert.is_false(ok)
      assert.matches("two upcasters for X 1→2: entry 1 and .*dup%.lua %(upcaster 1%)", err)
    end)

    it("reports unknown globals, syntax errors and runtime errors with file:line", function()
      local g = write("global.lua", "local x = 1\nreturn { type = 'X', from = 1, to = 2, upcast = function(d) return d end, description = undefined_name }\n")
      local ok, err = pcall(pgstore.upcasters, { g })
      assert.is_false(ok)
      assert.matches("global%.lua:2: unknown global 'undefined_name'", err)
      local s = write("syntax.lua", "return {\n type = \n")
      ok, err = pcall(pgstore.upcasters, { s })
      assert.is_false(ok)
      assert.matches("syntax%.lua:%d+:", err)
      local n = write("number.lua", "return 42\n")
      ok, err = pcall(pgstore.upcasters, { n })
      assert.is_false(ok)
      assert.matches("number%.lua: the script must return a table, got number", err)
      local sandboxed = write("io.lua", "return { type = 'X', from = 1, to = 2, upcast = function(d) io.write('x'); return d end }\n")
      local reg = pgstore.upcasters{ sandboxed }
      ok, err = pcall(reg.apply, reg, { type = "X", schema_version = 1, data = {} })
      assert.is_false(ok)
      assert.matches("io%.lua:1: unknown global 'io'", err)
    end)
  end)

  describe("reading through a store", function()
    local db, es, reg
    setup(function()
      db = T.connect{ pool_size = 2 }
      es = assert(db:events{ table = "up_spec", notify = false })
      reg = pgstore.upcasters(ORDER)
    end)
    before_each(function()
      es:upcast(nil)
      assert(es:truncate())
    end)
    teardown(function()
      es:close()
      db:close()
      T.assert_no_leaks()
    end)

    it("reads events written as v1 and v2 in the v3 shape", function()
      assert(es:append("order-1", {
        { type = "OrderPlaced", data = { amount = 10 } },
        { type = "OrderPlaced", data = { total = 20, currency = "USD" }, schema_version = 2 },
        { type = "OrderShipped", data = { amount = 99 } },
      }))
      es:upcast(reg)
      local evs = assert(es:read("order-1"))
      assert.same({ total = 10, currency = "EUR" }, evs[1].data)
      assert.equal(3, evs[1].schema_version)
      assert.same({ total = 20, currency = "USD" }, evs[2].data)
      assert.same({ amount = 99 }, evs[3].data)
      assert.equal(1, evs[3].schema_version)
      local all = assert(es:read_all{})
      assert.same(evs[1].data, all[1].data)
      assert.equal(3, all[2].schema_version)
      -- raw reads and the stored rows stay as written
      local raw = assert(es:read("order-1", { raw = true }))
      assert.equal('{"amount": 10}', raw[1].data)
      assert.equal(1, db:query("select schema_version from up_spec where version = 1 and stream = 'order-1'")[1].schema_version)
    end)

    it("stamps new appends with the newest version so they are not upcast again", function()
      es:upcast(reg)
      assert(es:append("order-2", {
        { type = "OrderPlaced", data = { total = 5, currency = "NOK" } },
        { type = "OrderPlaced", data = { amount = 6 }, schema_version = 1 },
        { type = "Other", data = {} },
      }))
      local rows = db:query("select version, schema_version from up_spec where stream = 'order-2' order by version")
      assert.same({ 3, 1, 1 }, { rows[1].schema_version, rows[2].schema_version, rows[3].schema_version })
      local evs = assert(es:read("order-2"))
      assert.same({ total = 5, currency = "NOK" }, evs[1].data)
      assert.same({ total = 6, currency = "EUR" }, evs[2].data)
      -- a plain function upcaster stamps nothing
      es:upcast(function(e) return e end)
      assert(es:append("order-2", { { type = "OrderPlaced", data = {} } }))
      assert.equal(1, db:query("select schema_version from up_spec where stream = 'order-2' and version = 4")[1].schema_version)
    end)

    it("fails a read whose upcaster raises with an invalid error naming the event", function()
      assert(es:append("order-3", { { type = "OrderPlaced", data = { amount = 1 } } }))
      es:upcast(pgstore.upcasters{ up("OrderPlaced", 1, function() error("cannot convert") end) })
      local evs, err = es:read("order-3")
      assert.is_nil(evs)
      assert.equal("invalid", err.code)
      assert.matches("upcasting OrderPlaced v1 at position 1 failed: OrderPlaced v1→v2 %(entry 1%): .*cannot convert", err.message)
      -- the store still works
      es:upcast(nil)
      assert.equal(1, #assert(es:read("order-3")))
    end)
  end)
end)
