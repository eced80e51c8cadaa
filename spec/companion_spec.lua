-- SPDX-License-Identifier: MIT
-- The companion stores' JSON: lua-cjson where it is exact, the exact
-- encoder where cjson 2.1.0 would round a number to 14 digits, and the
-- same refusals as cjson for what JSON cannot hold. Table-driven.
local cjson = require "cjson"
local pgstore = require "pgstore"
local C = require "pgstore.companion"

describe("companion JSON", function()
  -- values that must come back equal after encode → cjson.decode
  local round_trips = {
    { "2^53", { n = 2 ^ 53 } },
    { "2^53 - 1 in an array", { 2 ^ 53 - 1, 1, -(2 ^ 53 - 1) } },
    { "0.1 + 0.2", { 0.1 + 0.2 } },
    { "15 digits", { 123456789012345 } },
    { "tiny", { -1e-300, 5e-324 } },
    { "large float", { 1.7976931348623157e308 } },
    { "number keys", { [1.5] = "a", [2 ^ 53] = "b" } },
    { "nested", { a = { b = { c = { 1, 2, { d = 2 ^ 60 } } } } } },
    { "holes filled with null", { 1, nil, 3 }, { 1, pgstore.null, 3 } },
    { "strings with escapes", { "quote \" backslash \\ newline \n tab \t bell \7 del \127", "é 世界 🙂" } },
    { "null", { x = pgstore.null, y = { pgstore.null } } },
    { "booleans", { t = true, f = false } },
    { "a bare number", 2 ^ 53 + 2 },
  }
  for _, case in ipairs(round_trips) do
    it("round-trips " .. case[1] .. " through either encoder", function()
      local expect = case[3] or case[2]
      if case[1]:match("number keys") then
        -- JSON object keys are strings
        expect = {}
        for k, v in pairs(case[2]) do expect[C.encode_exact(k)] = v end
      end
      assert.same(expect, cjson.decode((assert(C.encode(case[2], "value")))))
      assert.same(expect, cjson.decode(C.encode_exact(case[2])))
    end)
  end

  it("uses cjson when every number fits in 14 digits", function()
    local v = { a = 1, b = 0.5, c = "x" }
    assert.equal(cjson.encode(v), C.encode(v, "value"))
  end)

  -- values JSON cannot hold: nil, err with code 'invalid', from either encoder
  local refused = {
    { "a function", { f = print } },
    { "NaN", { 0 / 0 } },
    { "infinity with an unsafe number beside it", { math.huge, 2 ^ 53 } },
    { "a boolean key", { [true] = 1 } },
    { "an excessively sparse array", { [1] = 1, [1000] = 2 } },
    { "a sparse array with an unsafe number", { [1] = 2 ^ 53, [1000] = 2 } },
    { "a cycle", (function() local t = {}; t.self = t; return t end)() },
    { "a cycle holding an unsafe number", (function() local t = { n = 2 ^ 53 }; t.self = t; return t end)() },
  }
  for _, case in ipairs(refused) do
    it("refuses " .. case[1], function()
      local json, err = C.encode(case[2], "state")
      assert.is_nil(json)
      assert.equal("invalid", err.code)
      assert.matches("^state cannot be encoded as JSON", err.message)
    end)
  end

  it("reports undecodable stored text as 'invalid'", function()
    local v, err = C.decode("{not json", "state")
    assert.is_nil(v)
    assert.equal("invalid", err.code)
  end)
end)
