-- SPDX-License-Identifier: MIT
-- pgstore.repl.complete — what Tab offers in the REPL: globals and keywords,
-- the keys of a table reached by a dotted path (`pgstore.con`), and methods
-- after a colon (`db:ev`, `es:rea`), following metatables' __index tables.
-- It only reads: rawget and __index tables, never a function, so a Tab
-- cannot run code or touch the database.
local pretty = require "pgstore.pretty"

-- debug.getmetatable: handles hide their metatables from getmetatable (__metatable)
local type, rawget, getmetatable, next, pairs = type, rawget, debug.getmetatable, next, pairs
local sort = table.sort

local _M = {}

local MAX_CHAIN = 16 -- __index hops, against loops

-- The __index table behind v, if any (strings have the string library).
local function index_of(v)
  local t = type(v)
  if t ~= "table" and t ~= "userdata" and t ~= "string" then return nil end
  local mt = getmetatable(v)
  if type(mt) ~= "table" then return nil end
  local idx = rawget(mt, "__index")
  return type(idx) == "table" and idx or nil
end

-- v[k] without running any metamethod function.
local function field(v, k)
  for _ = 1, MAX_CHAIN do
    if v == nil then return nil end
    if type(v) == "table" then
      local r = rawget(v, k)
      if r ~= nil then return r end
    end
    v = index_of(v)
  end
  return nil
end
_M.field = field

-- Every string key reachable from v (its own, then its __index chain's),
-- with the value each resolves to.
local function keys_of(v)
  local found, seen = {}, {}
  for _ = 1, MAX_CHAIN do
    if v == nil or seen[v] then break end
    seen[v] = true
    if type(v) == "table" then
      for k, val in next, v do
        if type(k) == "string" and found[k] == nil then found[k] = val end
      end
    end
    v = index_of(v)
  end
  return found
end

-- Is the end of `line` inside a string literal or a comment? Then Tab
-- completes nothing.
function _M.in_string_or_comment(line)
  local i, n = 1, #line
  while i <= n do
    local c = line:sub(i, i)
    if c == '"' or c == "'" then
      local j = i + 1
      while j <= n do
        local d = line:sub(j, j)
        if d == "\\" then j = j + 1
        elseif d == c then break end
        j = j + 1
      end
      if j > n then return true end
      i = j + 1
    elseif c == "[" and line:match("^%[=*%[", i) then
      local eq = line:match("^%[(=*)%[", i)
      local close = line:find("]" .. eq .. "]", i + #eq + 2, true)
      if not close then return true end
      i = close + #eq + 2
    elseif c == "-" and line:sub(i, i + 1) == "--" then
      local eq = line:match("^%-%-%[(=*)%[", i)
      if not eq then return true end
      local close = line:find("]" .. eq .. "]", i + #eq + 4, true)
      if not close then return true end
      i = close + #eq + 2
    else
      i = i + 1
    end
  end
  return false
end

local function identifier(k)
  return k:match("^[%a_][%w_]*$") and not pretty.KEYWORDS[k]
end

local function sorted(set)
  local out = {}
  for k in pairs(set) do out[#out + 1] = k end
  sort(out)
  return out
end

-- candidates(env, word, line, commands) → a sorted list of whole
-- replacement words for `word` (the text before the cursor back to the
-- last separator); `line` is everything before the cursor. A single
-- function candidate comes with its "(" already typed.
function _M.candidates(env, word, line, commands)
  line = line or word
  if _M.in_string_or_comment(line) then return {} end

  -- REPL commands, at the start of the line.
  if commands and line == word and word:match("^[:\\]") then
    local set = {}
    for _, name in ipairs(commands) do
      for _, p in ipairs{ ":", "\\" } do
        if word:sub(1, 1) == p and (p .. name):sub(1, #word) == word then set[p .. name] = true end
      end
    end
    return sorted(set)
  end

  local path, sep, partial = word:match("^(.-)([.:])([%w_]*)$")
  local set, values = {}, {}
  if not path then
    if not word:match("^[%a_][%w_]*$") and word ~= "" then return {} end
    for k, v in pairs(keys_of(env)) do
      if k:sub(1, #word) == word and identifier(k) then set[k], values[k] = true, v end
    end
    for k in pairs(pretty.KEYWORDS) do
      if k:sub(1, #word) == word then set[k] = true end
    end
  else
    -- Only plain dotted paths: `a.b.c:` or `a.b.`; no calls, no indexing.
    if not (path:match("^[%a_][%w_]*$") or path:match("^[%a_][%w_]*[%.%w_]*[%w_]$"))
      or path:find("..", 1, true) then return {} end
    local v = env
    for name in path:gmatch("[^.]+") do
      v = field(v, name)
      if v == nil then return {} end
    end
    local private = partial:sub(1, 1) == "_"
    for k, val in pairs(keys_of(v)) do
      if k:sub(1, #partial) == partial and identifier(k)
        and (private or k:sub(1, 1) ~= "_")
        and (sep == "." or type(val) == "function") then
        local full = path .. sep .. k
        set[full], values[full] = true, val
      end
    end
  end
  local out = sorted(set)
  if #out == 1 and type(values[out[1]]) == "function" then out[1] = out[1] .. "(" end
  return out
end

return _M
