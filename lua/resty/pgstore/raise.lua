-- SPDX-License-Identifier: MIT
-- resty.pgstore.raise — how db:transaction, tx:nested and db:with_lock pass
-- on what their function raised. lua-nginx-module 0.10.23 logs a handler's
-- error only when it is a string ("runtime error: unknown reason" for
-- anything else), and `assert(tx:exec(...))` raises pgstore's error table:
-- so a pgstore error goes on as text that keeps its code, SQLSTATE and
-- message. Anything else (strings, the caller's own values) goes on as it is.
local core = require "pgstore.core"

-- debug.getmetatable: the error metatable is hidden from getmetatable (__metatable)
local type, error, tostring, getmetatable = type, error, tostring, debug.getmetatable
local format = string.format

local _M = {}

local error_mt = core.error_mt

-- The value to raise for `err`: "pgstore error <code>[ (SQLSTATE <s>)]:
-- <message>" for a pgstore error table, `err` itself otherwise.
function _M.printable(err)
  if type(err) ~= "table" or getmetatable(err) ~= error_mt then return err end
  local state = err.sqlstate and format(" (SQLSTATE %s)", tostring(err.sqlstate)) or ""
  return format("pgstore error %s%s: %s", tostring(err.code), state, tostring(err.message or err.code))
end

-- Raises err again (at level 0: it carries its own position, if any), printable.
function _M.again(err)
  error(_M.printable(err), 0)
end

return _M
