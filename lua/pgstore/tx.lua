-- SPDX-License-Identifier: MIT
-- pgstore.tx — the handle a transaction function receives: query/exec on
-- the transaction's pinned connection, savepoints, and nothing after the
-- transaction has ended. It records retryable failures (40001, 40P01) so
-- db:transaction can re-run the whole function even when the function
-- swallowed or raised the error itself.
local core = require "pgstore.core"
local options = require "pgstore.options"

local type = type
-- debug.getmetatable: handles hide their metatables from getmetatable (__metatable)
local getmetatable = debug.getmetatable

local Tx = {}
local mt = { __index = Tx, __name = "pgstore.tx", __metatable = false }

function Tx.new(conn)
  return setmetatable({ conn = conn, active = true, retryable = nil }, mt)
end

local function check(self)
  if getmetatable(self) ~= mt then
    options.raise("bad argument #1 (pgstore.tx expected; use tx:method())")
  end
  if not self.active then options.raise("attempt to use a finished transaction") end
end

-- Tx.conn_of(tx, n, fname[, what]) → the connection of a `tx` option: the one
-- check of every method that takes { tx = tx }. Anything but the
-- transaction handed out by db:transaction raises, at the caller's line:
-- a look-alike table would let the write commit outside the transaction.
-- `what` names the value when it is an argument of its own ("tx").
function Tx.conn_of(tx, n, fname, what)
  if getmetatable(tx) ~= mt then
    options.argerror(n, fname, (what or "option 'tx'") .. " must be the transaction given by db:transaction, got "
      .. type(tx))
  end
  if not tx.active then options.raise("attempt to use a finished transaction") end
  return tx.conn
end

local function note(self, res, err)
  if res == nil and type(err) == "table"
     and (err.sqlstate == "40001" or err.sqlstate == "40P01") then
    self.retryable = err
  end
  return res, err
end

function Tx:query(sql, ...)
  check(self)
  options.arg(sql, 1, "query", "string")
  options.params(2, "query", ...)
  return note(self, self.conn:query(sql, ...))
end

function Tx:exec(sql, ...)
  check(self)
  options.arg(sql, 1, "exec", "string")
  options.params(2, "exec", ...)
  return note(self, self.conn:exec(sql, ...))
end

function Tx:savepoint(name)
  check(self)
  options.arg(name, 1, "savepoint", "string")
  return self.conn:savepoint(name)
end

function Tx:rollback_to(name)
  check(self)
  options.arg(name, 1, "rollback_to", "string")
  return self.conn:rollback_to(name)
end

function Tx:release(name)
  check(self)
  options.arg(name, 1, "release", "string")
  return self.conn:release_savepoint(name)
end

-- Runs fn(tx) inside a savepoint: rolled back to it when fn returns nil, err
-- or raises (then re-raised), released otherwise.
function Tx:nested(fn)
  check(self)
  options.arg(fn, 1, "nested", "function")
  self.depth = (self.depth or 0) + 1
  local name = "pgs_sp_" .. self.depth
  local ok, err = self.conn:savepoint(name)
  if not ok then self.depth = self.depth - 1; return nil, err end
  local res = { pcall(fn, self) }
  self.depth = self.depth - 1
  if not res[1] then
    self.conn:rollback_to(name)
    error(res[2], 0)
  end
  if res[2] == nil and res[3] ~= nil then
    self.conn:rollback_to(name)
    return nil, res[3]
  end
  self.conn:release_savepoint(name)
  return unpack(res, 2, table.maxn(res))
end

local LOCK_OPTIONS = { timeout = "number" }

-- A transaction-scoped advisory lock on `key` (hashed as for db:lock),
-- released at commit or rollback. opts.timeout (seconds) bounds the wait;
-- running out is "timeout" and, like any failed statement, aborts the
-- transaction. Without it the wait is as long as lock_timeout allows.
function Tx:lock(key, opts)
  check(self)
  options.arg(key, 1, "lock", "string")
  local timeout = options.check(opts, LOCK_OPTIONS, 2, "lock").timeout
  local bad = options.seconds(timeout, "timeout")
  if bad then return nil, bad end
  return note(self, core.xact_lock(self.conn, key, timeout))
end

-- tx:try_lock(key) → true | false (held elsewhere) | nil, err
function Tx:try_lock(key)
  check(self)
  options.arg(key, 1, "try_lock", "string")
  return note(self, core.xact_try_lock(self.conn, key))
end

-- tx:notify(channel, payload) → true | nil, err; delivered at commit, not
-- at all on rollback (see pgstore.listen for the limits).
function Tx:notify(channel, payload)
  check(self)
  options.arg(channel, 1, "notify", "string")
  options.arg(payload, 2, "notify", "string|nil")
  return core.notify(nil, self.conn, channel, payload or "")
end

return Tx
