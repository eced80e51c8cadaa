-- SPDX-License-Identifier: MIT
-- Values in and out: every mapped type round-trips through bound
-- parameters, including NULL, bytea with NUL bytes, multi-byte UTF-8 and
-- a 10 MB text.
local pgstore = require "pgstore"
local T = require "testenv"

describe("types", function()
  local db
  setup(function() db = T.connect() end)
  teardown(function() db:close(); T.assert_no_leaks() end)

  -- { sql type, value sent, value expected back }
  local cases = {
    { "int2", 12, 12 },
    { "int4", -2147483648, -2147483648 },
    { "int8", 9007199254740992, 9007199254740992 },   -- 2^53 exactly
    { "float8", 0.1, 0.1 },
    { "float8", 1e300, 1e300 },
    { "float4", 1.5, 1.5 },
    { "numeric", "12345678901234567890.123456789", "12345678901234567890.123456789" },
    { "bool", true, true },
    { "bool", false, false },
    { "text", "plain", "plain" },
    { "varchar", "grüße, 世界, 🙂", "grüße, 世界, 🙂" },
    { "json", '{"a": [1, 2]}', '{"a": [1, 2]}' },
    { "jsonb", '{"b":1, "a":2}', '{"a": 2, "b": 1}' },
    { "uuid", "5d5d2d0e-6b7b-4c1e-9a3b-0b8c7c3f8a11", "5d5d2d0e-6b7b-4c1e-9a3b-0b8c7c3f8a11" },
    { "timestamptz", "2026-11-21 03:04:05.678+00", "2026-11-21T03:04:05.678+00:00" },
    { "timestamptz", "2026-11-21T05:04:05+02:00", "2026-11-21T03:04:05+00:00" },
  }
  for _, c in ipairs(cases) do
    it(("round-trips %s %s"):format(c[1], tostring(c[2])), function()
      local rows = assert(db:query(("select $1::%s as v"):format(c[1]), c[2]))
      assert.equal(c[3], rows[1].v)
    end)
  end

  it("maps NULL both ways to pgstore.null", function()
    local rows = assert(db:query("select $1::text as a, $2::int as b, null::bytea as c", pgstore.null, nil))
    assert.equal(pgstore.null, rows[1].a)
    assert.equal(pgstore.null, rows[1].b)
    assert.equal(pgstore.null, rows[1].c)
  end)

  it("keeps bytea binary-safe, including NUL bytes and backslashes", function()
    local bytes = {}
    for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
    local all = table.concat(bytes) .. "\\x00\0\\\\"
    local rows = assert(db:query("select $1::bytea as b, length($1::bytea) as n", all))
    assert.equal(#all, rows[1].n)
    assert.equal(all, rows[1].b)
  end)

  it("refuses NUL in a text parameter with 'invalid', and still works after", function()
    local rows, err = db:query("select $1::text as t", "a\0b")
    assert.is_nil(rows)
    assert.equal("invalid", err.code)
    assert.matches("NUL", err.message)
    assert.same({ { ok = true } }, db:query("select true as ok"))
  end)

  it("round-trips a 10 MB text value", function()
    local big = ("0123456789abcdef"):rep(10 * 1024 * 1024 / 16)
    local rows = assert(db:query("select $1::text as t, length($1::text) as n", big))
    assert.equal(#big, rows[1].n)
    assert.equal(big, rows[1].t)
  end)

  it("formats integers exactly (no 14-digit rounding)", function()
    local rows = assert(db:query("select $1::int8 as v, $1::text as s", 123456789012345))
    assert.equal(123456789012345, rows[1].v)
    assert.equal("123456789012345", rows[1].s)
  end)

  it("returns an empty array for a command and counts rows with exec", function()
    -- one table for all four calls: a temporary one would end with each
    -- call's connection going back to the pool
    assert(db:exec("create table types_tt (a int)"))
    assert.same({}, db:query("insert into types_tt values (1)"))
    assert.equal(3, db:exec("insert into types_tt select generate_series(1, $1::int)", 3))
    assert.equal(4, db:exec("update types_tt set a = a + 1"))
    assert(db:exec("drop table types_tt"))
  end)

  it("rejects parameters of a type it cannot bind", function()
    assert.has_error(function() db:query("select $1", function() end) end)
    assert.has_error(function() db:query("select $1", {}) end,
      "bad argument #2 to 'query' (string, number, boolean or null expected, got table)")
  end)
end)
