-- SPDX-License-Identifier: MIT
-- pgstore.pretty: scalars, strings as Lua literals, tables to a depth with
-- keys in a stable order, cut with a count, cycles, pgstore.null and
-- pgstore errors, layout on one line or several. Table-driven.
local pretty = require "pgstore.pretty"
local pgstore = require "pgstore"

local function range(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

local cyclic = { name = "loop" }
cyclic.self = cyclic

local CASES = {
  -- scalars
  { "nil", nil, "nil" },
  { "booleans", true, "true" },
  { "an integer", 42, "42" },
  { "a negative integer", -3, "-3" },
  { "a fraction", 1.5, "1.5" },
  { "a big whole number in full", 2 ^ 53 + 2, "9007199254740994" },
  { "a huge number", 1e300, "1e+300" },
  { "not a number", 0 / 0, "nan" },
  { "infinity", math.huge, "inf" },
  { "minus infinity", -math.huge, "-inf" },
  { "SQL NULL", pgstore.null, "null" },
  { "a C function", print, "function: builtin" },
  -- strings
  { "a string, quoted", "hi", '"hi"' },
  { "quotes, backslashes and newlines escaped", 'a"b\\c\nd\te', '"a\\"b\\\\c\\nd\\te"' },
  { "control bytes as decimal escapes", "\0\1\127", '"\\000\\001\\127"' },
  { "UTF-8 kept", "héllo 中文", '"héllo 中文"' },
  { "bytes that are not UTF-8 in hex", "a\255\128", '"a\\xFF\\x80"' },
  { "a long string given directly prints whole", ("x"):rep(500), '"' .. ("x"):rep(500) .. '"' },
  { "a long string in a table is cut", { ("x"):rep(10) }, '{ "xxxx"… (10 bytes) }', { string_length = 4 } },
  { "a cut never splits a character", { "ééé" }, '{ "é"… (6 bytes) }', { string_length = 3 } },
  -- tables
  { "an empty table", {}, "{}" },
  { "an array", { 1, 2, 3 }, "{ 1, 2, 3 }" },
  { "a record, keys sorted", { b = 1, a = "x", c = false }, '{ a = "x", b = 1, c = false }' },
  { "array part first, then numbers, strings, booleans",
    { "one", "two", [10] = "ten", [-1] = "minus", z = 1, [true] = "t", [false] = "f" },
    '{ "one", "two", [-1] = "minus", [10] = "ten", z = 1, [false] = "f", [true] = "t" }', { width = 90 } },
  { "keys that are not names in brackets",
    { ["a b"] = 1, ["end"] = 2, [1.5] = 3, ["1x"] = 4 },
    '{ [1.5] = 3, ["1x"] = 4, ["a b"] = 1, ["end"] = 2 }' },
  { "a hole ends the array part", { 1, nil, 3 }, "{ 1, [3] = 3 }" },
  { "nested to depth 3 by default", { a = { b = { c = { d = 1 } } } }, "{ a = { b = { c = {…} } } }" },
  { "an empty table at the depth limit", { a = { b = { c = {} } } }, "{ a = { b = { c = {} } } }" },
  { "depth 1", { a = { 1 }, b = 2 }, "{ a = {…}, b = 2 }", { depth = 1 } },
  { "a cycle", cyclic, '{ name = "loop", self = {<cycle>} }' },
  { "a long array cut with a count", range(1000),
    "{\n  1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,\n  … 980 more\n}" },
  { "items counts keys too", { 1, 2, a = 1, b = 2, c = 3 }, "{ 1, 2, a = 1, … 2 more }", { items = 3 } },
  { "too wide: one entry per line",
    { name = "a rather long name", list = { 1, 2 }, nested = { deeper = "value value value value" } },
    '{\n  list = { 1, 2 },\n  name = "a rather long name",\n  nested = { deeper = "value value value value" }\n}' },
  { "rows fit one per line", { { id = 1, name = "ann" }, { id = 2, name = "bob" } },
    '{ { id = 1, name = "ann" }, { id = 2, name = "bob" } }' },
  { "narrow: nested tables break too", { outer = { inner = { 1, 2, 3 }, other = "xxxxxxxx" } },
    '{\n  outer = {\n    inner = { 1, 2, 3 },\n    other = "xxxxxxxx"\n  }\n}', { width = 30 } },
  -- objects
  { "a pgstore error", pgstore.errors.new("conflict", "expected version 3, got 5"),
    "error(conflict): expected version 3, got 5" },
  { "an error's message on one line", pgstore.errors.new("sql", "bad\nDETAIL: worse"),
    "error(sql): bad DETAIL: worse" },
  { "an error with the server's detail", pgstore.errors.new("sql", "duplicate key", { detail = "Key (id)=(1)\nexists." }),
    "error(sql): duplicate key (Key (id)=(1) exists.)" },
  { "an error inside a table", { nil, pgstore.errors.new("timeout", "slow") }, "{ [2] = error(timeout): slow }" },
  { "a table with __tostring", setmetatable({ x = 1 }, { __tostring = function() return "<thing>" end }), "<thing>" },
  { "a failing __tostring", setmetatable({}, { __tostring = function() error("no") end }), "table (__tostring failed)" },
  { "a table with __name", setmetatable({ x = 1 }, { __name = "pgstore.thing" }), "pgstore.thing { x = 1 }" },
}

describe("pretty.format", function()
  for _, c in ipairs(CASES) do
    it(c[1], function()
      assert.equal(c[3], pretty.format(c[2], c[4]))
    end)
  end

  it("shows a Lua function's source and line", function()
    assert.matches("^function: .*pretty_spec%.lua:%d+$", pretty.format(function() end))
  end)
end)

describe("pretty.values", function()
  local VALUES = {
    { "nothing", { n = 0 }, "" },
    { "tab-separated when each fits on a line", { n = 3, 1, nil, "a" }, '1\tnil\t"a"' },
    { "trailing nils kept", { n = 2, nil, nil }, "nil\tnil" },
    { "nil, err", { n = 2, nil, pgstore.errors.new("not_found", "no such stream") },
      "nil\terror(not_found): no such stream" },
    { "one per line when one spans lines", { n = 2, 1, range(30) },
      "1\n{\n  1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,\n  … 10 more\n}" },
  }
  for _, c in ipairs(VALUES) do
    it(c[1], function()
      assert.equal(c[3], pretty.values(nil, c[2].n, unpack(c[2], 1, c[2].n)))
    end)
  end
end)

describe("pretty.quote", function()
  it("gives a literal Lua reads back", function()
    for _, s in ipairs{ "plain", 'q"q', "back\\slash", "nl\nnl", "\0\1\2\r\t\127", "\255\254", "é" } do
      assert.equal(s, loadstring("return " .. pretty.quote(s))())
    end
  end)
end)
