-- SPDX-License-Identifier: MIT
-- pgstore.repl.complete: what Tab offers — globals, keywords, dotted keys,
-- methods through metatables' __index tables, REPL commands — and what it
-- must not do (run an __index function, complete inside strings).
-- Table-driven over a small environment shaped like the REPL's.
local complete = require "pgstore.repl.complete"
local Repl = require "pgstore.repl"

local function fn() end

local Store = { read = fn, read_all = fn, version = fn, _check = fn, kind = "events" }
local Base = { close = fn }
setmetatable(Store, { __index = Base })

local env = setmetatable({
  db = setmetatable({ pool = {} }, { __index = { events = fn, query = fn, exec = fn } }),
  es = setmetatable({ table_name = "events" }, { __index = Store }),
  pgstore = { connect = fn, null = false, errors = { new = fn, fail = fn } },
  word = "abc",
  lazy = setmetatable({}, { __index = function() error("an __index function must not run") end }),
  loop = setmetatable({}, {}),
}, { __index = _G })
getmetatable(env.loop).__index = env.loop

-- { word, line before the cursor (nil: the word alone), expected }
local CASES = {
  { "pgstore.con", nil, { "pgstore.connect(" } },
  { "pgstore.", nil, { "pgstore.connect", "pgstore.errors", "pgstore.null" } },
  { "pgstore.errors.f", nil, { "pgstore.errors.fail(" } },
  { "es:rea", nil, { "es:read", "es:read_all" } },
  { "es:ver", nil, { "es:version(" } },
  { "es:cl", nil, { "es:close(" } },            -- two __index hops
  { "es:", nil, { "es:close", "es:read", "es:read_all", "es:version" } }, -- methods only, no _private
  { "es:_", nil, { "es:_check(" } },            -- private ones when asked for
  { "es.k", nil, { "es.kind" } },
  { "es.t", nil, { "es.table_name" } },
  { "db:ev", nil, { "db:events(" } },
  { "db:q", "local rows = db:q", { "db:query(" } },
  { "word:up", nil, { "word:upper(" } },        -- strings have the string library
  { "pri", nil, { "print(" } },
  { "ret", nil, { "return" } },
  { "pgst", "x = pgst", { "pgstore" } },
  { "nothing.x", nil, {} },
  { "lazy.x", nil, {} },
  { "loop.x", nil, {} },
  { ":rea", "db:events():rea", {} },            -- no calls are made to complete
  { "a..b", nil, {} },
  { "pri", 'x = "pri', {} },                     -- inside a string
  { "pri", "x = [[ pri", {} },
  { "pri", "x = 1 -- pri", {} },
  { "pri", 'x = "done" .. pri', { "print(" } },
  { ":he", nil, { ":help" } },
  { "\\li", nil, { "\\listen" } },
  { ":", nil, { ":consumers", ":events", ":help", ":listen", ":parked", ":quit", ":set", ":stores", ":streams",
                ":table", ":trace", ":unlisten" } },
  { ":q", "x = y :q", {} },                      -- commands only start a line
}

describe("repl completion", function()
  for _, c in ipairs(CASES) do
    it(("%q after %q"):format(c[1], c[2] or c[1]), function()
      assert.same(c[3], complete.candidates(env, c[1], c[2], Repl.COMMANDS))
    end)
  end

  it("tells strings and comments apart from code", function()
    local CODE = { "x = 1", 'x = "a" .. y', "x = 'it''s'", "x = [[a]] ..", "f() --[[c]] g", 'x = "\\"" ..' }
    local TEXT = { 'x = "a', "x = 'a", "x = [==[ a ]] b", "-- c", "x --[[ c", 'x = "\\"' }
    for _, l in ipairs(CODE) do assert.is_false(complete.in_string_or_comment(l), l) end
    for _, l in ipairs(TEXT) do assert.is_true(complete.in_string_or_comment(l), l) end
  end)
end)
