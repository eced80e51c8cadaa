-- SPDX-License-Identifier: MIT
-- pgstore.script — loading the Lua files users write (projections,
-- upcasters, policies): each runs in its own environment where reading an
-- unknown global is an error (not a silent nil) and assigning one is too,
-- and every call into script code goes through xpcall with a traceback, so
-- failures read "file.lua:LINE: message".
--
-- The sandbox: scripts see the safe parts of the standard library (string,
-- table, math, os.time/clock/date, pairs, …), a `json` (cjson) and `null`.
-- Not io, os.execute/exit/remove, require, load*, dofile, debug or the raw
-- connection — unless the host is started with --unsafe-scripts. Nothing a
-- script gets is shared with the host: it loads as source text only
-- (LuaJIT bytecode is not verified, and crafted bytecode reads whatever
-- the host left in stack slots), its json is a cjson instance of its own,
-- os.getenv does not hand out the connection settings (PG*, PGSTORE_*),
-- getmetatable does not hand out strings' metatable (pgstore's own hide
-- themselves with __metatable), handlers get proxies, not handles, and
-- print escapes what it prints (pgstore.printable).
local cjson = require "cjson"
local core = require "pgstore.core"
local escape = require("pgstore.printable").escape

local type, setmetatable, setfenv, loadfile, xpcall, tostring = type, setmetatable, setfenv, loadfile, xpcall, tostring
local select, concat = select, table.concat

local _M = {}

local SAFE = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber", "tostring",
  "type", "unpack", "xpcall", "rawequal", "rawget", "rawlen", "rawset", "setmetatable",
  "getmetatable",
}

local function safe_getenv(name)
  if type(name) == "string" and (name:match("^PG") or name:match("^PGSTORE")) then return nil end
  return os.getenv(name)
end

-- print as Lua's (tostring, tabs between values, a newline), each value
-- escaped: a script prints what it read — stream names, payloads — and an
-- escape sequence in one would reach the operator's terminal.
local function safe_print(...)
  local parts = {}
  for i = 1, select("#", ...) do parts[i] = escape(tostring((select(i, ...)))) end
  io.stdout:write(concat(parts, "\t"), "\n")
end

-- A script can only set metatables on tables; any other value's metatable
-- (strings' above all) is the whole process's.
local function safe_getmetatable(v)
  if type(v) ~= "table" then return nil end
  return getmetatable(v)
end

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- A fresh environment for one script. `extra` adds names (e.g. db in unsafe mode).
function _M.env(name, extra, unsafe)
  local env = {}
  if unsafe then
    for k, v in pairs(_G) do env[k] = v end
  else
    for _, k in ipairs(SAFE) do env[k] = _G[k] end
    env.string, env.table, env.math = copy(string), copy(table), copy(math)
    env.os = { time = os.time, clock = os.clock, date = os.date, getenv = safe_getenv }
    env.getmetatable = safe_getmetatable
    env.print = safe_print
  end
  env.json, env.null = cjson.new(), core.null
  for k, v in pairs(extra or {}) do env[k] = v end
  env._G = env
  return setmetatable(env, {
    __index = function(_, k)
      error(("unknown global '%s' (in %s)"):format(tostring(k), name), 2)
    end,
    __newindex = function(_, k)
      error(("assignment to undeclared global '%s' (use local)"):format(tostring(k)), 2)
    end,
  })
end

-- Formats an error from script code: keeps "file:line: message", turns
-- error tables into their message, adds the traceback when asked.
function _M.traceback(e)
  local msg = type(e) == "table" and tostring(e) or tostring(e)
  return debug.traceback(msg, 2)
end

-- "file:line: " of the script code that raised, seen from an error
-- handler: the innermost frame in fn's own file (`assert` and `error`
-- are C, a library function it called is not the script's line).
local function raised_at(fn)
  if type(fn) ~= "function" then return "" end
  local source = debug.getinfo(fn, "S").source
  for level = 3, 40 do
    local info = debug.getinfo(level, "Sl")
    if not info then return "" end
    if info.source == source and info.currentline and info.currentline > 0 then
      return ("%s:%d: "):format(info.short_src, info.currentline)
    end
  end
  return ""
end

-- Calls fn(...) under xpcall: true, results… | false, "file:line: msg", traceback
-- An error value that is no string (`assert(tx:exec(…))` raises the
-- error table) gets the script's file and line in front of its message.
function _M.call(fn, ...)
  local args, n = { ... }, select("#", ...)
  local tb
  local res = { xpcall(function() return fn(unpack(args, 1, n)) end, function(e)
    local msg = type(e) == "string" and e or raised_at(fn) .. tostring(e)
    tb = debug.traceback(msg, 2)
    return msg
  end) }
  if not res[1] then return false, res[2], tb end
  return unpack(res, 1, table.maxn(res))
end

-- True when the file holds a bytecode dump: its mark (ESC, which every Lua
-- and LuaJIT dump starts with) first, or after what the loader skips — a
-- UTF-8 byte-order mark, then a first line starting with '#' ("#!…").
local function is_bytecode(path)
  local f = io.open(path, "rb")
  if not f then return false end
  local text = f:read("*a") or ""
  f:close()
  local at = text:sub(1, 3) == "\239\187\191" and 4 or 1
  if text:sub(at, at) == "#" then
    local eol = text:find("[\r\n]", at)
    if not eol then return false end
    -- one line end: \n, \r, \r\n or \n\r
    local pair = text:sub(eol, eol + 1)
    at = eol + ((pair == "\r\n" or pair == "\n\r") and 2 or 1)
  end
  return text:sub(at, at) == "\27"
end

-- A script file as a function: source text only, sandboxed or not.
-- chunk | nil, "path: message".
function _M.loadfile(path)
  local chunk, err = loadfile(path, "t")
  if chunk then return chunk end
  if is_bytecode(path) then
    return nil, ("%s: LuaJIT bytecode is refused; scripts load as source text only"):format(path)
  end
  if not tostring(err):find(path, 1, true) then err = ("%s: %s"):format(path, tostring(err)) end
  return nil, err
end

-- A table's own fields in a new table, each read once and raw: what a
-- script returned may carry a metatable whose __index answers differently
-- every time it is asked, so checks and copies read this instead.
function _M.fields(t)
  local out = {}
  for k, v in next, t do out[k] = v end
  return out
end

-- Loads a script file that returns a table: the table | nil, message.
function _M.load(path, extra, unsafe)
  local chunk, err = _M.loadfile(path)
  if not chunk then return nil, err end
  setfenv(chunk, _M.env(path, extra, unsafe))
  local ok, res = _M.call(chunk)
  if not ok then return nil, res end
  if type(res) ~= "table" then
    return nil, ("%s: the script must return a table, got %s"):format(path, type(res))
  end
  return res
end

return _M
