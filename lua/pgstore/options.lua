-- SPDX-License-Identifier: MIT
-- pgstore.options — the one argument and option checker of the Lua API
-- (in the spirit of lauxlib's luaL_checkoption / luaL_argerror). The rule
-- (README, "Errors"): an unknown option or a value of the wrong Lua type is
-- misuse and raises, positioned at the caller's line; a value of the right
-- type that is out of range or malformed is `nil, err` with code "invalid".
local errors = require "pgstore.errors"
local core = require "pgstore.core"
local null, limits = core.null, core.limits

local type, pairs, tostring, error, select = type, pairs, tostring, error, select
local getinfo = debug.getinfo
local format, sub, gsub, gmatch = string.format, string.sub, string.gsub, string.gmatch
local sort, concat = table.sort, table.concat

local _M = {}

-- ---- where the caller is ------------------------------------------------------

-- The library's own files: this file's directory (…/pgstore/) and
-- resty.pgstore (…/resty/pgstore.lua, …/resty/pgstore/), which nginx may
-- load from a directory of its own.
local here = getinfo(1, "S").source
local root = here:match("^@(.*)pgstore[/\\]options%.lua$") or ""
local LIBRARY = { "@" .. root .. "pgstore/", "@" .. root .. "resty/pgstore" }
local resty = package.searchpath and package.searchpath("resty.pgstore", package.path)
if resty then LIBRARY[3] = "@" .. resty:gsub("%.lua$", "") end

local function in_library(source)
  for i = 1, #LIBRARY do
    local p = LIBRARY[i]
    if sub(source, 1, #p) == p then return true end
  end
  return false
end

-- The error() level, for the function that calls level() and then error(),
-- of the first frame outside the library that has a line: the user's call.
-- C frames (pcall, a method called as pcall(es.append, es, …)) are passed
-- over. With no such frame (the library calling itself), the direct caller.
local function level()
  local l = 2
  while true do
    local info = getinfo(l + 1, "Sl")
    if not info then return 2 end
    if info.what ~= "C" and info.currentline and info.currentline > 0
       and not in_library(info.source) then
      return l
    end
    l = l + 1
  end
end

-- Raises msg (a string) at the user's line.
function _M.raise(msg)
  error(msg, level())
end

-- Raises "bad argument #n to 'fname' (msg)" at the user's line.
function _M.argerror(n, fname, msg)
  error(format("bad argument #%d to '%s' (%s)", n, fname, msg), level())
end
local argerror = _M.argerror

-- ---- types --------------------------------------------------------------------------

-- True when v's Lua type is one of "string|number|…".
local function type_ok(v, want)
  local t = type(v)
  for w in gmatch(want, "[^|]+") do
    if t == w then return true end
  end
  return false
end

local function spell(want)
  return (gsub(want, "|", " or "))
end

-- arg(value, n, fname, "string|nil") → value, or raises
-- "bad argument #n to 'fname' (string or nil expected, got number)".
-- `what` names the argument when its type alone says too little.
function _M.arg(value, n, fname, expected, what)
  if type_ok(value, expected) then return value end
  argerror(n, fname, format("%s expected, got %s", what or spell(expected), type(value)))
end

-- params(n, fname, …) raises, at the user's line, for a query parameter
-- that cannot be bound (a table, a function): "bad argument #n to 'fname'",
-- n counting from the first parameter. Checked before the binding borrows
-- a connection.
function _M.params(n, fname, ...)
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    local t = type(v)
    if t ~= "string" and t ~= "number" and t ~= "boolean" and t ~= "nil" and v ~= null then
      argerror(n + i - 1, fname, "string, number, boolean or null expected, got " .. t)
    end
  end
end

-- check(opts, spec, n, fname) → opts (an empty table for nil). spec maps
-- each option to its Lua types, { table = "string", notify = "string|boolean" };
-- unknown options and wrong types raise, naming the option.
function _M.check(opts, spec, n, fname)
  if opts == nil then return {} end
  if type(opts) ~= "table" then argerror(n, fname, "table expected, got " .. type(opts)) end
  for k, v in pairs(opts) do
    local want = spec[k]
    if not want then argerror(n, fname, "unknown option '" .. tostring(k) .. "'") end
    if not type_ok(v, want) then
      argerror(n, fname, format("option '%s' must be %s, got %s", k, spell(want), type(v)))
    end
  end
  return opts
end

-- list(opts, k, want, n, fname) raises unless every entry of the list
-- option opts[k] (a table, or nil) is of the Lua type `want`, naming it:
-- "option 'types' entry 1 must be string, got number".
function _M.list(opts, k, want, n, fname)
  local v = opts[k]
  if type(v) ~= "table" then return end
  for i, x in pairs(v) do
    if not type_ok(x, want) then
      argerror(n, fname, format("option '%s' entry %s must be %s, got %s", k, tostring(i), spell(want), type(x)))
    end
  end
end

-- required(opts, k, n, fname) → opts[k]: a missing option raises
-- "option 'k' is required" (check() has already checked its type).
function _M.required(opts, k, n, fname)
  local v = opts[k]
  if v == nil then argerror(n, fname, format("option '%s' is required", k)) end
  return v
end

-- merge(spec, …) → one spec holding every option of the given specs.
function _M.merge(...)
  local out = {}
  for i = 1, select("#", ...) do
    for k, v in pairs((select(i, ...))) do out[k] = v end
  end
  return out
end

-- problem(def, spec) → nil, or what is wrong with a definition table (a
-- projection, a policy, an upcaster) as text: "unknown field 'on_eror'",
-- "field 'batch' must be number, got string". Positional entries (def[1],
-- …) are allowed when spec[1] says their type; `true` allows any type (the
-- caller checks the value with a message of its own). `expected` ends the
-- unknown-field message with the fields there are.
function _M.problem(def, spec, expected)
  for k, v in pairs(def) do
    local want = spec[k]
    if want == nil and type(k) == "number" then want = spec[1] end
    if not want then
      return format("unknown field '%s'%s", tostring(k), expected and " (expected " .. expected .. ")" or "")
    end
    if want ~= true and not type_ok(v, want) then
      return format("field '%s' must be %s, got %s", tostring(k), spell(want), type(v))
    end
  end
end

-- ---- values of the right type that are out of range: nil, err --------------------

-- The checks below return an error value (code "invalid") or nil when the
-- option is absent or fine; chain them with `or` and return the first.
-- Every number option of the API goes through one of them, so NaN, the
-- infinities, negatives, fractions where a count is meant and values past
-- what the server holds are refused the same way everywhere, before
-- anything is sent. The bounds are the core's (core.limits, pgstore.h).

-- The longest timeout, TTL or interval in seconds (2^31 - 1 ms: the
-- server keeps its timeouts as int milliseconds), and the latest append
-- time (seconds since 1970 a timestamptz holds).
local SECONDS_MAX, TIME_MAX = limits.seconds, limits.time
_M.SECONDS_MAX, _M.TIME_MAX = SECONDS_MAX, TIME_MAX
-- The longest age (retention's max_age, archive_after) the server can
-- subtract from now: timestamps begin in 4713 BC, 2.1e11 seconds back.
_M.AGE_MAX = 1e11
-- Whole numbers beyond 2^53 are not all doubles: no count goes past it.
local WHOLE_MAX = 2 ^ 53

local function out_of_range(name, what, v)
  return errors.new("invalid", format("%s must be %s, got %s", name, what, tostring(v)))
end

-- A number of seconds (a timeout, TTL, interval): from 0 (positive = true:
-- above 0) to max (default SECONDS_MAX), fractions allowed.
function _M.seconds(v, name, positive, max)
  if v == nil then return nil end
  max = max or SECONDS_MAX
  if not (v >= 0 and v <= max) or (positive and v == 0) then
    return out_of_range(name, format(positive and "a positive number of seconds up to %.0f"
      or "a number of seconds from 0 to %.0f", max), v)
  end
end

-- A whole number in lo .. hi (hi at most 2^53).
function _M.int(v, name, lo, hi)
  if v == nil then return nil end
  if hi > WHOLE_MAX then hi = WHOLE_MAX end
  if not (v >= lo and v <= hi) or v % 1 ~= 0 then
    return out_of_range(name, format("a whole number from %.0f to %.0f", lo, hi), v)
  end
end

-- A point in time as unix seconds: above 0, up to what a timestamptz holds.
function _M.time(v, name)
  if v == nil then return nil end
  if not (v > 0 and v <= TIME_MAX) then
    return out_of_range(name, format("positive unix seconds up to %.0f", TIME_MAX), v)
  end
end

-- One of the strings in `set` ({ advisory = true, table = true }).
function _M.one_of(v, name, set)
  if v == nil or set[v] then return nil end
  local names = {}
  for k in pairs(set) do names[#names + 1] = "'" .. k .. "'" end
  sort(names)
  return errors.new("invalid", format("%s must be %s, got '%s'", name, concat(names, ", "), sub(tostring(v), 1, 40)))
end

return _M
