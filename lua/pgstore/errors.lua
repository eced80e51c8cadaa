-- SPDX-License-Identifier: MIT
-- pgstore.errors — the error contract on the Lua side. Runtime failures are
-- `nil, err` with err = { code, message, and the structured fields that are
-- set: sqlstate, detail, hint, constraint, expected, actual, batch, phase, …
-- (README, "Errors") } with the metatable the C core uses, so tostring(err)
-- is the message; misuse raises with the argument number, at the caller.
local core = require "pgstore.core"

local type, error, setmetatable, select = type, error, setmetatable, select
local format = string.format

local _M = { mt = core.error_mt }

-- The closed set of codes (README, "Errors").
_M.codes = {
  sql = true, connection = true, timeout = true, invalid = true, conflict = true,
  duplicate = true, not_found = true, deleted = true, archived = true,
  lease_lost = true, rejected = true, closed = true, nomem = true, lost = true,
}

-- Builds an error value: errors.new("invalid", "events must not be empty", { field = … }).
function _M.new(code, message, fields)
  local err = {}
  if fields then
    for k, v in pairs(fields) do err[k] = v end
  end
  err.code, err.message = code, message
  return setmetatable(err, core.error_mt)
end

-- `return errors.fail("invalid", "…")` → nil, err
function _M.fail(code, message, fields)
  return nil, _M.new(code, message, fields)
end

function _M.is(err, code)
  return type(err) == "table" and err.code == code
end

-- Misuse raises through pgstore.options, at the user's line; these two
-- are its argerror and arg under their older names.
function _M.arg(n, fname, msg)
  require("pgstore.options").argerror(n, fname, msg)
end

function _M.check(value, n, fname, expected)
  return require("pgstore.options").arg(value, n, fname, expected)
end

-- For names and keys that reach C as strings: an `invalid` error when one
-- of the named fields of `t` holds a NUL byte (C would cut it there), else nil.
function _M.nul(t, ...)
  for i = 1, select("#", ...) do
    local k = select(i, ...)
    local v = t and t[k]
    if type(v) == "string" and v:find("\0", 1, true) then
      return _M.new("invalid", format("invalid %s: it contains a NUL byte", k))
    end
  end
end

function _M.closed()
  require("pgstore.options").raise("attempt to use a closed connection")
end

return _M
