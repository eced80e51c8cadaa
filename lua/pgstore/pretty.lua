-- SPDX-License-Identifier: MIT
-- pgstore.pretty — values as a person wants to read them: tables nested to a
-- depth, keys in a stable order, long tables cut with a count, strings
-- quoted (as Lua literals), pgstore.null as `null`, pgstore errors as
-- `error(code): message`. The REPL prints with it; so can anything else.
--
--   pretty.format(value, opts) → string
--   pretty.values(opts, n, ...) → the n values, tab-separated when each fits
--                                 on one line, else one per line
-- opts (all optional): depth (3), items (20, per table), width (80),
-- string_length (400: longer strings inside tables are cut; a value
-- given directly prints whole).
local core = require "pgstore.core"
local escape = require("pgstore.printable").escape

-- debug.getmetatable: handles hide their metatables from getmetatable (__metatable)
local type, tostring, pairs, next, rawget, getmetatable, pcall =
  type, tostring, pairs, next, rawget, debug.getmetatable, pcall
local concat, sort = table.concat, table.sort
local format, rep = string.format, string.rep
local huge, floor = math.huge, math.floor

local null, error_mt = core.null, core.error_mt

local _M = { defaults = { depth = 3, items = 20, width = 80, string_length = 400 } }

local KEYWORDS = {}
for w in ("and break do else elseif end false for function goto if in local nil not or repeat return then true until while")
  :gmatch("%a+") do KEYWORDS[w] = true end
_M.KEYWORDS = KEYWORDS

-- ---- scalars --------------------------------------------------------------

-- The printable form of Lua's own escapes; every other control character
-- is escaped by pgstore.printable (the one place that decides what may
-- reach a terminal).
local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
                  ["\a"] = "\\a", ["\b"] = "\\b", ["\f"] = "\\f", ["\v"] = "\\v" }

-- A double-quoted Lua literal for s; cut after `limit` bytes (on a
-- character boundary) with a note of the full size.
function _M.quote(s, limit)
  local cut
  if limit and #s > limit then
    local stop = limit
    while stop > 0 and s:byte(stop + 1) and s:byte(stop + 1) >= 0x80 and s:byte(stop + 1) <= 0xBF do
      stop = stop - 1
    end
    cut = #s
    s = s:sub(1, stop)
  end
  local body = escape(s, ESCAPES)
  if cut then return format('"%s"… (%d bytes)', body, cut) end
  return '"' .. body .. '"'
end

local function number(v)
  if v ~= v then return "nan" end
  if v == huge then return "inf" end
  if v == -huge then return "-inf" end
  -- Whole numbers in full (a bigint id, a position), others as Lua prints them.
  if v == floor(v) and v > -2 ^ 63 and v < 2 ^ 63 then return format("%d", v) end
  return tostring(v)
end

local function is_error(v)
  return getmetatable(v) == error_mt
end

-- Messages may quote what a client stored (a stream name, a payload):
-- on one line, with control characters escaped.
local function one_line(s)
  return escape((tostring(s):gsub("%s*\n%s*", " ")))
end

-- `error(code): message` for a pgstore error, on one line, followed by the
-- server's DETAIL when it sent one (a field of its own: README, "Errors").
function _M.error(err)
  if is_error(err) then
    local text = format("error(%s): %s", tostring(err.code), one_line(err.message))
    if type(err.detail) == "string" then text = text .. " (" .. one_line(err.detail) .. ")" end
    return text
  end
  return "error: " .. one_line(tostring(err))
end

local function func(f)
  local ok, info = pcall(debug.getinfo, f, "S")
  if ok and info and info.what ~= "C" and info.short_src then
    return format("function: %s:%d", escape(info.short_src), info.linedefined or 0)
  end
  return "function: builtin"
end

-- tostring through __tostring, which may itself fail.
local function safe_tostring(v)
  local ok, s = pcall(tostring, v)
  if ok and type(s) == "string" then return escape(s) end
  return format("%s (__tostring failed)", type(v))
end

local function scalar(v, limit)
  local t = type(v)
  if t == "string" then return _M.quote(v, limit) end
  if t == "number" then return number(v) end
  if t == "function" then return func(v) end
  if v == null then return "null" end
  return safe_tostring(v)
end

-- ---- tables ---------------------------------------------------------------

-- Numbers first (ascending), then strings, then booleans, then the rest.
local RANK = { number = 1, string = 2, boolean = 3 }
local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return (RANK[ta] or 4) < (RANK[tb] or 4) or
    (RANK[ta] or 4) == (RANK[tb] or 4) and ta < tb end
  if ta == "number" or ta == "string" then return a < b end
  if ta == "boolean" then return not a and b end
  return tostring(a) < tostring(b)
end

local function key_text(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") and not KEYWORDS[k] then return k end
  return "[" .. scalar(k, 60) .. "]"
end

-- Display width: bytes that do not continue a UTF-8 character.
local function width(s)
  local _, n = s:gsub("[^\128-\191]", "")
  return n
end

local fmt

local function fmt_table(t, opts, level, indent, seen)
  local mt = getmetatable(t)
  if is_error(t) then return _M.error(t) end
  if type(mt) == "table" and rawget(mt, "__tostring") then return safe_tostring(t) end
  local name = type(mt) == "table" and type(rawget(mt, "__name")) == "string" and rawget(mt, "__name")
  local prefix = name and escape(name) .. " " or ""
  if next(t) == nil then return prefix .. "{}" end
  if seen[t] then return prefix .. "{<cycle>}" end
  if level >= opts.depth then return prefix .. "{…}" end

  local n = 0
  while rawget(t, n + 1) ~= nil do n = n + 1 end
  local keys = {}
  for k in next, t do
    if not (type(k) == "number" and k >= 1 and k <= n and k == floor(k)) then keys[#keys + 1] = k end
  end
  sort(keys, key_less)

  seen[t] = true
  local parts, budget = {}, opts.items
  local inner = indent + 2
  local flat = #keys == 0 -- an array of scalars fills its lines
  for i = 1, n do
    if #parts >= budget then break end
    local v = rawget(t, i)
    flat = flat and type(v) ~= "table"
    parts[#parts + 1] = fmt(v, opts, level + 1, inner, seen)
  end
  for _, k in ipairs(keys) do
    if #parts >= budget then break end
    parts[#parts + 1] = key_text(k) .. " = " .. fmt(rawget(t, k), opts, level + 1, inner, seen)
  end
  seen[t] = nil
  local total = n + #keys
  if total > #parts then parts[#parts + 1] = format("… %d more", total - #parts) end

  local one = prefix .. "{ " .. concat(parts, ", ") .. " }"
  if not one:find("\n", 1, true) and indent + width(one) <= opts.width then return one end
  local pad = rep(" ", inner)
  if flat then
    local lines, cur = {}, nil
    for i, p in ipairs(parts) do
      local piece = i < #parts and p .. "," or p
      if cur and inner + width(cur) + 1 + width(piece) <= opts.width then
        cur = cur .. " " .. piece
      else
        if cur then lines[#lines + 1] = cur end
        cur = piece
      end
    end
    lines[#lines + 1] = cur
    return prefix .. "{\n" .. pad .. concat(lines, "\n" .. pad) .. "\n" .. rep(" ", indent) .. "}"
  end
  return prefix .. "{\n" .. pad .. concat(parts, ",\n" .. pad) .. "\n" .. rep(" ", indent) .. "}"
end

fmt = function(v, opts, level, indent, seen)
  if type(v) == "table" then return fmt_table(v, opts, level, indent, seen) end
  return scalar(v, level > 0 and opts.string_length or nil)
end

local function options(opts)
  local d = _M.defaults
  if not opts then return d end
  return {
    depth = opts.depth or d.depth, items = opts.items or d.items,
    width = opts.width or d.width, string_length = opts.string_length or d.string_length,
  }
end

function _M.format(v, opts)
  return fmt(v, options(opts), 0, 0, {})
end

function _M.values(opts, n, ...)
  opts = options(opts)
  local out, multi = {}, false
  for i = 1, n do
    out[i] = fmt((select(i, ...)), opts, 0, 0, {})
    multi = multi or out[i]:find("\n", 1, true) ~= nil
  end
  return concat(out, multi and "\n" or "\t")
end

return _M
