-- SPDX-License-Identifier: MIT
-- Store policies: glob patterns (the Lua matcher and the SQL filter agree on
-- one table of names), durations, what a policy file may say, which policy
-- governs a stream, snapshot rules, and append guards on a real store.
-- Retention and archiving: spec/retention_spec.lua.
local pgstore = require "pgstore"
local glob = require "pgstore.glob"
local policy = require "pgstore.policy"
local T = require "testenv"

local tmp
local function write(name, text) return T.write(tmp .. "/" .. name, text) end

-- { glob, name, matches }
local GLOBS = {
  { "cart-*", "cart-1", true }, { "cart-*", "cart-", true }, { "cart-*", "cart", false },
  { "cart-*", "xcart-1", false }, { "cart-*", "Cart-1", false }, { "*", "", true }, { "*", "anything at all", true },
  { "*-log", "a-log", true }, { "*-log", "a-log-b", false }, { "a*b*c", "abc", true }, { "a*b*c", "a-b-x-c", true },
  { "a*b*c", "acb", false },
  { "cart-?", "cart-1", true }, { "cart-?", "cart-12", false }, { "cart-?", "cart-", false },
  { "cart-?", "cart-é", true }, { "??", "é", false }, { "?", "日", true }, { "?x", "日x", true },
  { "order-[abc]", "order-a", true }, { "order-[abc]", "order-d", false }, { "order-[abc]", "order-ab", false },
  { "v[0-9][0-9]", "v42", true }, { "v[0-9][0-9]", "v4x", false },
  { "[!a]*", "b1", true }, { "[!a]*", "a1", false }, { "[!a]*", "é1", true }, { "[^a-c]", "d", true }, { "[^a-c]", "b", false },
  { "x[]]y", "x]y", true }, { "x[!]]y", "x]y", false }, { "x[!]]y", "xzy", true },
  { "x[-a]y", "x-y", true }, { "x[a-]y", "x-y", true }, { "x[a-]y", "xby", false },
  { "[%_]", "%", true }, { "[%_]", "_", true }, { "[%_]", "a", false },
  { "100%", "100%", true }, { "100%", "1000", false }, { "a_b", "a_b", true }, { "a_b", "axb", false },
  { "back\\\\slash", "back\\slash", true }, { "back\\\\slash", "backslash", false },
  { "a\\*", "a*", true }, { "a\\*", "ab", false }, { "a\\?", "a?", true }, { "a\\?", "ab", false },
  { "a\\[b]", "a[b]", true }, { "a\\[b]", "ab", false },
  { "dots.in.name", "dots.in.name", true }, { "dots.in.name", "dotsxinxname", false },
  { "re(gex)+$^", "re(gex)+$^", true }, { "re(gex)+$^", "regex", false },
  { "sp ace*", "sp ace 1", true }, { "ünï-*", "ünï-1", true }, { "ünï-*", "uni-1", false },
  { "[.]x", ".x", true }, { "[.]x", "ax", false }, { "[\\]]", "]", true }, { "[a\\-z]", "-", true }, { "[a\\-z]", "m", false },
  { "exact", "exact", true }, { "exact", "exactly", false },
}

local BAD_GLOBS = {
  { "", "must not be empty" }, { "[abc", "unclosed '%['" }, { "abc\\", "a trailing '\\' escapes nothing" },
  { "[é]", "only ASCII" }, { "[z-a]", "range 'z%-a' is reversed" }, { "a\0b", "NUL" }, { "\255*", "valid UTF%-8" },
}

describe("policies", function()
  setup(function() tmp = T.tmpdir("pol") end)
  teardown(function() T.sh("rm -rf " .. tmp) end)

  describe("globs", function()
    local db
    T.block_db(setup, teardown, function(d) db = d end, { pool_size = 1 })

    for _, case in ipairs(GLOBS) do
      it(("'%s' %s '%s' in Lua and in SQL"):format(case[1], case[3] and "matches" or "does not match", case[2]), function()
        local c = assert(glob.compile(case[1]))
        assert.equal(case[3], glob.match(c, case[2]))
        local row = assert(db:query([[select $1::text collate "C" like $2 and ($3::text is null or $1::text collate "C" ~ $3)
            and ($4::text is null or $1::text collate "C" >= $4) and ($5::text is null or $1::text collate "C" < $5) as m]],
          case[2], c.like, c.regex, c.prefix ~= "" and c.prefix or nil, c.upper))[1]
        assert.equal(case[3], row.m)
      end)
    end

    for _, case in ipairs(BAD_GLOBS) do
      it(("refuses the pattern %q"):format(case[1]), function()
        local c, err = glob.compile(case[1])
        assert.is_nil(c)
        assert.matches(case[2], err)
      end)
    end

    it("turns the literal prefix into a key range", function()
      local cases = { { "cart-", "cart." }, { "a~", "a\127" }, { "a\127", "a\194\128" }, { "é", "ê" },
                      { "a\237\159\191", "a\238\128\128" }, { "\244\143\191\191", nil }, { "x\244\143\191\191", "y" } }
      for _, c in ipairs(cases) do assert.equal(c[2], glob.next_prefix(c[1])) end
      assert.equal("cart-", glob.compile("cart-*").prefix)
      assert.equal("", glob.compile("*-cart").prefix)
      assert.equal("order-", glob.compile("order-[ab]*").prefix)
      assert.equal("a*b", glob.compile("a\\*b?").prefix)
      assert.equal("ca", glob.common_prefix{ "cart-", "cat-" })
      assert.equal("", glob.common_prefix{ "é", "è" })
    end)
  end)

  describe("durations", function()
    local ok = { { "45s", 45 }, { "15m", 900 }, { "12h", 43200 }, { "30d", 2592000 }, { "2w", 1209600 },
                 { "1h30m", 5400 }, { "1d 12h", 129600 }, { " 10s ", 10 }, { "1.5h", 5400 }, { 90, 90 }, { 0.5, 0.5 } }
    for _, c in ipairs(ok) do
      it(("reads %q as %s seconds"):format(tostring(c[1]), c[2]), function()
        assert.equal(c[2], policy.duration(c[1]))
      end)
    end
    local bad = { { "30", "use a number and a unit" }, { "30x", "unknown unit 'x'" }, { "", "empty" },
                  { "0d", "longer than zero" }, { -5, "positive" }, { 0, "positive" }, { "d", "use a number" },
                  { "5 days", "unknown unit 'days'" }, { true, "got boolean" }, { 0 / 0, "positive" },
                  { math.huge, "up to" }, { 1e308, "up to" }, { "999999999999w", "at most" } }
    for _, c in ipairs(bad) do
      it(("refuses %q"):format(tostring(c[1])), function()
        local v, err = policy.duration(c[1])
        assert.is_nil(v)
        assert.matches(c[2], err)
      end)
    end
  end)

  describe("loading", function()
    local refused = {
      { "no streams", { name = "p" }, "field 'streams' must be a pattern" },
      { "an empty streams list", { streams = {} }, "field 'streams' must be a pattern" },
      { "a bad pattern", { name = "p", streams = { "ok-*", "[x" } }, "policy 'p'%): streams%[2%]: bad pattern '%[x': unclosed" },
      { "a typo in a field", { streams = "*", max_cuont = 3 }, "unknown field 'max_cuont'" },
      { "a bad max_age", { streams = "*", max_age = "30 days" }, "field 'max_age': bad duration '30 days'" },
      { "a bad archive_after", { streams = "*", archive_after = "soon" }, "field 'archive_after'" },
      { "a zero max_count", { streams = "*", max_count = 0 }, "field 'max_count' must be a whole number >= 1, got 0" },
      { "a fractional truncate_before", { streams = "*", truncate_before = 2.5 }, "field 'truncate_before'" },
      { "a string snapshot_every", { streams = "*", snapshot_every = "50" }, "field 'snapshot_every'" },
      { "a guard that is no function", { streams = "*", guard = true }, "field 'guard' must be a function" },
      { "a bad archive_to name", { streams = "*", archive_after = "1d", archive_to = "no such;table" }, "invalid table name" },
      { "archive_to without archive_after", { streams = "*", archive_to = "arch" }, "needs 'archive_after'" },
      { "snapshots rarer than the retained events", { streams = "*", max_count = 10, snapshot_every = 50 },
        "snapshot_every %(50%) is larger than max_count %(10%)" },
      { "an empty name", { name = "", streams = "*" }, "field 'name' must be a non%-empty string" },
    }
    for _, case in ipairs(refused) do
      it("refuses " .. case[1], function()
        local line, ok, err = debug.getinfo(1, "l").currentline, pcall(pgstore.policy, case[2])
        assert.is_false(ok)
        -- at the caller's line, a bad argument to pgstore.policy
        assert.equal(("%s:%d: bad argument #1 to 'policy' (policy: "):format(debug.getinfo(1, "S").short_src, line),
          err:match("^.-%(policy: "))
        assert.matches(case[3], err)
      end)
    end

    it("refuses two policies with one name, and an empty set", function()
      local ok, err = pcall(pgstore.policies, { { name = "a", streams = "x*" }, { name = "a", streams = "y*" } })
      assert.is_false(ok)
      assert.matches("two policies are named 'a' %(entry 1 and entry 2%)", err)
      ok, err = pcall(pgstore.policies, {})
      assert.is_false(ok)
      assert.matches("no policies given", err)
    end)

    it("normalises durations and keeps the rules", function()
      local set = pgstore.policy{ name = "carts", streams = "cart-*", max_age = "30d", max_count = 1000,
                                  archive_after = "90d", snapshot_every = 50 }
      local p = set:list()[1]
      assert.equal("carts", p.name)
      assert.equal(30 * 86400, p.max_age)
      assert.equal("30d", p.max_age_text)
      assert.equal(90 * 86400, p.archive_after)
      assert.equal(1000, p.max_count)
      assert.is_true(p.retention)
      assert.equal("streams cart-*: max_count 1000, max_age 30d, archive_after 90d, snapshot_every 50",
        policy.describe(p))
    end)

    it("loads policy files in the sandbox: one policy or a list; the file names unnamed ones", function()
      local one = write("carts.lua", [[
        local LIMIT = 3
        return { name = "carts", streams = "cart-*", max_count = 100,
                 guard = function(stream, events) if #events > LIMIT then return nil, "too many" end return true end }
      ]])
      local list = write("more.lua", [[return { { streams = "audit-*", max_age = "400d" }, { name = "rest", streams = "*" } }]])
      local set = pgstore.policies{ one, list }
      local names = {}
      for _, p in ipairs(set:list()) do names[#names + 1] = p.name end
      assert.same({ "carts", tmp .. "/more.lua (policy 1)", "rest" }, names)
    end)

    it("reports a broken file with file:line", function()
      local g = write("global.lua", "return {\n  streams = '*',\n  max_age = thirty_days,\n}\n")
      local ok, err = pcall(pgstore.policy, g)
      assert.is_false(ok)
      assert.matches("global%.lua:3: unknown global 'thirty_days'", err)
      local missing = tmp .. "/missing.lua"
      ok, err = pcall(pgstore.policy, missing)
      assert.is_false(ok)
      assert.matches("missing%.lua", err)
    end)
  end)

  describe("matching and snapshots", function()
    local set
    setup(function()
      set = pgstore.policies{
        { name = "vip", streams = { "cart-vip-*", "cart-gold-*" }, snapshot_every = 10 },
        { name = "carts", streams = "cart-*", snapshot_every = 100, max_count = 1000 },
        { name = "exempt", streams = "audit-*" },
      }
    end)

    it("lets the first matching policy govern a stream", function()
      local cases = { { "cart-vip-1", "vip" }, { "cart-gold-2", "vip" }, { "cart-3", "carts" }, { "audit-1", "exempt" },
                      { "order-1", nil }, { "cart", nil } }
      for _, c in ipairs(cases) do
        local p = set:match(c[1])
        assert.equal(c[2], p and p.name, c[1])
      end
    end)

    it("says when a snapshot is due", function()
      local cases = {
        { "cart-vip-1", 9, nil, false }, { "cart-vip-1", 10, nil, true }, { "cart-vip-1", 25, 10, true },
        { "cart-vip-1", 19, 10, false }, { "cart-1", 99, 0, false }, { "cart-1", 100, 0, true },
        { "cart-1", 250, 200, false }, { "audit-1", 5000, 0, false }, { "order-1", 5000, 0, false },
      }
      for _, c in ipairs(cases) do
        assert.equal(c[4], set:snapshot_due(c[1], c[2], c[3]), ("%s v%d since %s"):format(c[1], c[2], tostring(c[3])))
      end
      assert.equal(10, set:snapshot_every("cart-gold-1"))
      assert.is_nil(set:snapshot_every("audit-1"))
    end)

    it("raises on misuse", function()
      assert.has_error(function() set:match(42) end, "bad argument #1 to 'match' (stream name (string) expected, got number)")
      assert.has_error(function() set.match({}, "x") end)
      assert.has_error(function() set:snapshot_due("x", "1") end)
    end)
  end)

  describe("guards", function()
    local db, es, seen
    setup(function()
      db = T.connect{ pool_size = 2 }
      es = assert(db:events{ table = "pol_spec", notify = false })
      local g = write("guard.lua", [[
        return {
          name = "strict",
          streams = "strict-*",
          guard = function(stream, events, ctx)
            if events[1].type == "Boom" then error("guard exploded") end
            if events[1].type == "Falsy" then return false end
            if #events > 2 then return nil, "too many events (" .. #events .. ")" end
            return true
          end,
        }
      ]])
      pgstore.policies{
        g,
        { name = "ctx", streams = "ctx-*", guard = function(stream, events, ctx)
            seen = { stream = stream, n = #events, policy = ctx.policy, expected = ctx.expected,
                     key = ctx.idempotency_key, batch = ctx.batch, version = ctx.version() }
            return true
          end },
        { name = "free", streams = "*" },
      }:install(es)
    end)
    before_each(function() assert(es:truncate()) end)
    teardown(function()
      es:close()
      db:close()
      T.assert_no_leaks()
    end)

    local function count()
      return db:query("select count(*) as n from pol_spec")[1].n
    end

    it("lets allowed appends through", function()
      assert(es:append("strict-1", { { type = "A" }, { type = "B" } }))
      assert(es:append("other", { { type = "A" }, { type = "B" }, { type = "C" } }))
      assert.equal(5, count())
    end)

    it("rejects with the reason and writes nothing", function()
      local res, err = es:append("strict-1", { { type = "A" }, { type = "B" }, { type = "C" } })
      assert.is_nil(res)
      assert.equal("rejected", err.code)
      assert.equal("too many events (3)", err.reason)
      assert.equal("strict", err.policy)
      assert.equal("strict-1", err.stream)
      assert.equal("policy 'strict' rejected the append to strict-1: too many events (3)", tostring(err))
      assert.equal(0, count())
      assert.equal(0, es:version("strict-1"))
    end)

    it("rejects when the guard returns false without a reason", function()
      local _, err = es:append("strict-2", { { type = "Falsy" } })
      assert.equal("rejected", err.code)
      assert.matches("the guard returned false", err.message)
    end)

    it("turns a guard that raises into a rejection naming file:line", function()
      local _, err = es:append("strict-3", { { type = "Boom" } })
      assert.equal("rejected", err.code)
      assert.matches("guard%.lua:5: guard exploded", err.reason)
      assert.equal(0, count())
      assert(es:append("strict-3", { { type = "Fine" } })) -- the store still works
    end)

    it("rejects an append_many batch and writes none of the batches", function()
      local res, err = es:append_many{
        { stream = "other", events = { { type = "A" } } },
        { stream = "strict-4", events = { { type = "A" }, { type = "B" }, { type = "C" } } },
      }
      assert.is_nil(res)
      assert.equal("rejected", err.code)
      assert.equal(0, count())
    end)

    it("gives the guard a context", function()
      assert(es:append("ctx-1", { { type = "A" } }))
      assert(es:append("ctx-1", { { type = "A" }, { type = "B" } }, { expected = 1, idempotency_key = "k1" }))
      assert.same({ stream = "ctx-1", n = 2, policy = "ctx", expected = 1, key = "k1", version = 1 }, seen)
      assert(es:append_many{ { stream = "x", events = { { type = "A" } } }, { stream = "ctx-2", events = { { type = "A" } } } })
      assert.equal(2, seen.batch)
      assert.equal(0, seen.version)
    end)

    it("is removed by installing a set without guards", function()
      local other = assert(db:events{ table = "pol_spec", notify = false })
      pgstore.policy{ streams = "strict-*" }:install(other)
      assert.is_nil(other.guard)
      assert(other:append("strict-9", { { type = "A" }, { type = "B" }, { type = "C" } }))
      other:close()
    end)
  end)
end)

describe("a policy's archive_to", function()
  local db, es, dir
  local FORGED = [[setmetatable({}, { __name = "pgstore.events",
    __index = function(_, k) if k == "table_name" then return "pgstore_events" end end })]]
  T.block_db(setup, teardown, function(d) db = d end, { pool_size = 1 })
  setup(function()
    dir = T.tmpdir("pol_forge")
    es = assert(db:events{ table = T.unique("pol_forge"), notify = false })
  end)
  teardown(function()
    es:close()
    T.sh("rm -rf " .. dir)
  end)

  it("is an event store by its real metatable, not by a __name a table can carry", function()
    local forged = assert(loadstring("return " .. FORGED))()
    local ok, err = pcall(pgstore.policy, { name = "forge", streams = { "victim-*" }, archive_after = "1s",
                                            archive_to = forged })
    assert.is_false(ok)
    assert.matches("field 'archive_to' must be an events table name or an event store, got table", err, 1, true)
    local file = T.write(dir .. "/forge.lua", ([[return { name = "forge", streams = { "victim-*" },
      archive_after = "1s", archive_to = %s }]]):format(FORGED))
    ok, err = pcall(pgstore.policies, { file })
    assert.is_false(ok)
    assert.matches("field 'archive_to' must be an events table name or an event store", err, 1, true)
  end)

  it("is checked before a stream is flagged archived: a closed store leaves it active", function()
    assert(es:append("victim-1", { { type = "E" } }, { time = os.time() - 86400 }))
    local other = assert(db:events{ table = T.unique("pol_forge_to"), notify = false })
    local set = pgstore.policy{ name = "closed", streams = "victim-*", archive_after = "1s", archive_to = other }
    other:close()
    local res, err = set:apply(es)
    assert.is_nil(res)
    assert.equal("invalid", err.code)
    assert.matches("archive_to is not an open event store", err.message, 1, true)
    assert.equal("active", es:status("victim-1"))
    assert.equal(1, #assert(es:read("victim-1")))
  end)
end)
