-- SPDX-License-Identifier: MIT
-- pgstore.companion — what the companion stores (snapshots, checkpoints,
-- exec_checkpoints, sessions, kv) share on the Lua side: the store class
-- (constructor, migrate, close, methods that take a key), option checking,
-- the caller's transaction, and JSON. Each store's module keeps only what
-- is its own: its options and its save/load.
--
-- JSON goes through lua-cjson, except that lua-cjson 2.1.0 writes numbers
-- with at most 14 significant digits (2^53 would come back as
-- 9.007199254741e+15). A value holding a number that 14 digits cannot
-- carry is written by the exact encoder below instead; the result is
-- stored as JSONB, so the two encoders' spelling differences vanish.
local core = require "pgstore.core"
local errors = require "pgstore.errors"
local options = require "pgstore.options"
local cjson = require("cjson").new()

-- debug.getmetatable: handles hide their metatables from getmetatable (__metatable)
local type, pairs, error, pcall, tostring, tonumber, getmetatable, setmetatable =
      type, pairs, error, pcall, tostring, tonumber, debug.getmetatable, setmetatable
local format, gsub, byte, concat = string.format, string.gsub, string.byte, table.concat
local huge = math.huge
local null = core.null

local _M = {}

-- ---- misuse: pgstore.options -----------------------------------------------------

local argerror = options.argerror
_M.bad = argerror
_M.arg = options.arg
_M.options = options.check

-- A size option (max_value_size): a whole number of bytes, 1 .. 1 GiB
-- (PostgreSQL's own limit for one value); an invalid error or nil.
function _M.size(v, name)
  return options.int(v, name, 1, 1073741824)
end

-- ---- the store object ---------------------------------------------------------

-- Wraps a core store userdata. The object keeps `db`, so the pool outlives
-- the store; `owns_db` (set by pgstore.open_<kind>) makes close() close it.
function _M.store(mt, db, ud, fields)
  local self = fields or {}
  self.db, self.core, self.owns_db = db, ud, false
  return setmetatable(self, mt)
end

-- Checks `self` before a method runs: the right kind, not closed, and its
-- db not closed.
function _M.check(self, mt, fname)
  if getmetatable(self) ~= mt then
    argerror(1, fname, format("%s expected; use store:%s()", mt.__name, fname))
  end
  if not self.core or self.db:is_closed() then
    options.raise("attempt to use a closed connection")
  end
end

function _M.close(self, mt)
  if getmetatable(self) ~= mt then argerror(1, "close", mt.__name .. " expected; use store:close()") end
  local ud = self.core
  self.core = nil
  if ud then ud:close() end
  if self.owns_db and not self.db:is_closed() then self.db:close() end
end

function _M.tostring(self)
  local name = getmetatable(self).__name
  return self.core and name or name .. " (closed)"
end

-- class(name, spec) → the module of a store, and its metatable. `name` is
-- its pgstore.core constructor and db method ("sessions"), `spec` the
-- constructor's options (as for options.check). The module comes with
--   new(db, opts) → store | nil, err   (an invalid max_value_size or a
--                                       NUL in the table name: nil, err)
--   store:migrate() → true | nil, err  (creates the table when missing)
--   store:close()                      (closes the db too when the store
--                                       owns it; twice is harmless)
-- and the store's file adds its own methods (see keyed and whole below).
function _M.class(name, spec)
  local M = { _VERSION = core._VERSION }
  local mt = { __index = M, __name = "pgstore." .. name, __tostring = _M.tostring, __metatable = false }
  function M.new(db, opts)
    opts = options.check(opts, spec, 1, name)
    local bad = _M.size(opts.max_value_size, "max_value_size") or errors.nul(opts, "table")
    if bad then return nil, bad end
    local ud, err = core[name](db.pool, opts)
    if not ud then return nil, err end
    return _M.store(mt, db, ud)
  end
  function M:migrate()
    _M.check(self, mt, "migrate")
    return self.core:migrate()
  end
  function M:close()
    _M.close(self, mt)
  end
  return M, mt
end

-- keyed(mt, fname) → the method store:fname(key [, { tx = tx }]): what the
-- core store's method of the same name returns for key, run on the
-- caller's transaction when one is given. With removes = true it returns
-- true instead of the count of rows removed (an absent key is not an error).
function _M.keyed(mt, fname, removes)
  return function(self, key, opts)
    _M.check(self, mt, fname)
    options.arg(key, 1, fname, "string")
    local _, conn, tx = _M.call_opts(opts, nil, 2, fname)
    local res, err = _M.note(tx, self.core[fname](self.core, key, conn))
    if removes and res then return true end
    return res, err
  end
end

-- whole(mt, fname) → the method store:fname([{ tx = tx }]) over the whole
-- table (list, invalidate_all, cleanup): what the core method returns.
function _M.whole(mt, fname)
  return function(self, opts)
    _M.check(self, mt, fname)
    local _, conn, tx = _M.call_opts(opts, nil, 1, fname)
    return _M.note(tx, self.core[fname](self.core, conn))
  end
end

-- ---- per-call options and the caller's transaction ------------------------------

local tx_conn = require("pgstore.tx").conn_of

-- Checks a method's trailing options table (spec as for options.check, `tx`
-- always allowed). Returns the options (never nil), the transaction's
-- connection (or nil) and the tx object.
local TX = { tx = "table" }
local with_tx = setmetatable({}, { __mode = "k" })
function _M.call_opts(opts, spec, n, fname)
  if opts == nil then return TX, nil, nil end
  spec = spec or TX
  local full = with_tx[spec]
  if not full then
    full = options.merge(spec, TX)
    with_tx[spec] = full
  end
  options.check(opts, full, n, fname)
  if opts.tx == nil then return opts, nil, nil end
  return opts, tx_conn(opts.tx, n, fname), opts.tx
end

-- After a call inside a caller's transaction: a serialization failure or
-- deadlock marks it for db:transaction to re-run (as tx:query does).
function _M.note(tx, res, err, ...)
  if tx and res == nil and type(err) == "table"
     and (err.sqlstate == "40001" or err.sqlstate == "40P01") then
    tx.retryable = err
  end
  return res, err, ...
end

-- ---- values -------------------------------------------------------------------------

-- nil, err for a version/cursor that is not an integer in 0 .. 2^53.
function _M.count(v, what)
  if v ~= v or v < 0 or v % 1 ~= 0 or v > 9007199254740992 then
    return nil, errors.new("invalid", format("%s must be an integer from 0 to 2^53, got %s", what, tostring(v)))
  end
  return v
end

-- ---- JSON ----------------------------------------------------------------------------

-- True when cjson's "%.14g" gives n back exactly.
local function num_safe(n)
  if n % 1 == 0 and n > -1e14 and n < 1e14 then return true end
  if n ~= n or n == huge or n == -huge then return true end -- cjson refuses these itself
  return tonumber(format("%.14g", n)) == n
end

local function all_safe(v, depth)
  if depth > 1000 then return true end -- cjson reports the nesting
  for k, x in pairs(v) do
    if type(k) == "number" and not num_safe(k) then return false end
    local t = type(x)
    if t == "number" then
      if not num_safe(x) then return false end
    elseif t == "table" and not all_safe(x, depth + 1) then
      return false
    end
  end
  return true
end

local ESCAPES = { ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
                  ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }
local function escape(c) return ESCAPES[c] or format("\\u%04x", byte(c)) end
local function exact_string(s) return '"' .. gsub(s, '[%c"\\]', escape) .. '"' end

local function exact_number(n)
  if n ~= n or n == huge or n == -huge then error("Cannot serialise number: must not be NaN or Inf", 0) end
  if n % 1 == 0 and n > -2^63 and n < 2^63 then return format("%d", n) end
  for p = 15, 16 do
    local s = format("%." .. p .. "g", n)
    if tonumber(s) == n then return s end
  end
  return format("%.17g", n)
end

-- The same choices as cjson's defaults: an empty table is an object,
-- keys 1..n (holes allowed unless excessively sparse) make an array.
local function exact(v, buf, depth)
  local t = type(v)
  if t == "string" then
    buf[#buf + 1] = exact_string(v)
  elseif t == "number" then
    buf[#buf + 1] = exact_number(v)
  elseif t == "boolean" then
    buf[#buf + 1] = v and "true" or "false"
  elseif v == null then
    buf[#buf + 1] = "null"
  elseif t == "table" then
    if depth > 1000 then error("Cannot serialise, excessive nesting (1001)", 0) end
    local max, n, array = 0, 0, true
    for k in pairs(v) do
      if type(k) == "number" and k > 0 and k % 1 == 0 then
        if k > max then max = k end
        n = n + 1
      else
        array = false
        break
      end
    end
    if array and n > 0 then
      if max > n * 2 and max > 10 then error("Cannot serialise table: excessively sparse array", 0) end
      buf[#buf + 1] = "["
      for i = 1, max do
        if i > 1 then buf[#buf + 1] = "," end
        local x = v[i]
        exact(x == nil and null or x, buf, depth + 1)
      end
      buf[#buf + 1] = "]"
    else
      buf[#buf + 1] = "{"
      local first = true
      for k, x in pairs(v) do
        local tk = type(k)
        if tk == "number" then
          k = exact_number(k)
        elseif tk ~= "string" then
          error("Cannot serialise table: table key must be a number or string", 0)
        end
        if not first then buf[#buf + 1] = "," end
        first = false
        buf[#buf + 1] = exact_string(k)
        buf[#buf + 1] = ":"
        exact(x, buf, depth + 1)
      end
      buf[#buf + 1] = "}"
    end
  else
    error("Cannot serialise " .. t .. ": type not supported", 0)
  end
end

local function exact_encode(v)
  local buf = {}
  exact(v, buf, 1)
  return concat(buf)
end

-- value → JSON text | nil, err (code "invalid") for what JSON cannot hold.
function _M.encode(value, what)
  local ok, res
  if type(value) == "table" and not all_safe(value, 1) then
    ok, res = pcall(exact_encode, value)
  elseif type(value) == "number" and not num_safe(value) then
    ok, res = pcall(exact_encode, value)
  else
    ok, res = pcall(cjson.encode, value)
  end
  if not ok then
    return nil, errors.new("invalid", format("%s cannot be encoded as JSON: %s", what, tostring(res)))
  end
  return res
end

-- The exact encoder on its own (for tests and for callers who want it).
_M.encode_exact = exact_encode

-- JSON text → value | nil, err (code "invalid").
function _M.decode(text, what)
  local ok, res = pcall(cjson.decode, text)
  if not ok then
    return nil, errors.new("invalid", format("stored %s cannot be decoded: %s", what, tostring(res)))
  end
  return res
end

return _M
