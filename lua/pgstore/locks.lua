-- SPDX-License-Identifier: MIT
-- pgstore.locks — named locks across processes, as db methods:
--
--   local release, err = db:lock("invoice:42", { timeout = 5 })  -- waits up to 5 s ("timeout")
--   … only one holder anywhere …
--   release()                                                    -- true | nil, err
--   local release = db:try_lock("invoice:42")                    -- release | nil (held elsewhere) | nil, err
--   db:with_lock("invoice:42", function(lock) … end, opts)      -- fn's results | nil, err
--   tx:lock(key[, { timeout = s }]), tx:try_lock(key)             -- until commit/rollback (pgstore.tx)
--
-- Advisory mode (the default) takes a session-level pg_advisory_lock on a
-- pooled connection that stays pinned until release — count it against
-- pool_size. The lock goes when release() is called, when that connection
-- drops, or when the process dies; without a timeout db:lock waits as long
-- as it takes. A lock is not re-entrant across calls: a second db:lock of
-- the same key in the same process waits for the first.
--
-- The key is any string of 1..512 bytes of valid UTF-8 (else nil, err
-- "invalid"). The server-side key is FNV-1a 64 over its bytes (offset basis
-- 14695981039346656037, prime 1099511628211), read as a signed 64-bit
-- integer: pg_advisory_lock(<that bigint>). locks.key(key) returns it as a
-- decimal string, e.g. for pg_locks (classid = high 32 bits, objid = low 32
-- bits, objsubid = 1).
--
-- Table mode ({ mode = "table", ttl = 30, table = "pgstore_locks" }) is the
-- fallback for servers without advisory locks (CockroachDB): a row per key
-- taken by compare-and-set (INSERT … ON CONFLICT … WHERE expired), held for
-- `ttl` seconds; call lock:renew() more often than that. A dead holder's
-- lock frees itself when the TTL runs out. lock:token() grows with every
-- acquisition of the key (a fencing token). The table is migrated on first
-- use, unless skip_schema_init = true (then a missing table is "not_found").
--
-- The lock handle: lock() or lock:release() → true | nil, err (err
-- "lease_lost" when the lock had already been lost: connection dropped or
-- TTL ran out); lock:renew() → true | nil, err; lock:key(); lock:token()
-- (table mode); lock:held().
local core = require "pgstore.core"
local errors = require "pgstore.errors"
local Db = require "pgstore.db"

local type, pcall, error, pairs, tostring, unpack = type, pcall, error, pairs, tostring, unpack
local maxn = table.maxn
local format = string.format

local _M = { _VERSION = core._VERSION, KEY_MAX = core.limits.lock_key }

local MODES = { advisory = true, table = true }
local OPTIONS = {
  timeout = "number", mode = "string", ttl = "number", table = "string", skip_schema_init = "boolean",
}

-- Checks an options table; raises at the caller of the db method
-- (level 3: lock_options ← Db:lock ← caller).
local function lock_options(opts, n, fname)
  if opts == nil then return nil end
  if type(opts) ~= "table" then
    error(format("bad argument #%d to '%s' (table expected, got %s)", n, fname, type(opts)), 3)
  end
  for k, v in pairs(opts) do
    if not OPTIONS[k] then
      error(format("bad argument #%d to '%s' (unknown option '%s')", n, fname, tostring(k)), 3)
    end
    if type(v) ~= OPTIONS[k] then
      error(format("bad argument #%d to '%s' (option '%s' must be a %s, got %s)", n, fname, k,
        OPTIONS[k], type(v)), 3)
    end
  end
  if opts.mode and not MODES[opts.mode] then
    error(format("bad argument #%d to '%s' (mode must be 'advisory' or 'table')", n, fname), 3)
  end
  if opts.timeout and not (opts.timeout >= 0) then
    error(format("bad argument #%d to '%s' (timeout must not be negative)", n, fname), 3)
  end
  if opts.ttl and not (opts.ttl > 0) then
    error(format("bad argument #%d to '%s' (ttl must be positive)", n, fname), 3)
  end
  return opts
end

-- db:lock(key[, opts]) → lock | nil, err
function Db:lock(key, opts)
  Db._check(self, "lock")
  errors.check(key, 1, "lock", "string")
  opts = lock_options(opts, 2, "lock")
  local bad = errors.nul(opts, "table")
  if bad then return nil, bad end
  return core.lock(self.pool, key, opts, false)
end

-- db:try_lock(key[, opts]) → lock | nil (held elsewhere) | nil, err
function Db:try_lock(key, opts)
  Db._check(self, "try_lock")
  errors.check(key, 1, "try_lock", "string")
  opts = lock_options(opts, 2, "try_lock")
  local bad = errors.nul(opts, "table")
  if bad then return nil, bad end
  return core.lock(self.pool, key, opts, true)
end

-- db:with_lock(key, fn[, opts]) → fn(lock)'s results | nil, err. The lock
-- is released however fn ends; fn raising is re-raised after the release.
-- When the lock turns out to have been lost before the release, the result
-- is nil, err ("lease_lost"): fn's work was not protected to the end.
function Db:with_lock(key, fn, opts)
  Db._check(self, "with_lock")
  errors.check(key, 1, "with_lock", "string")
  errors.check(fn, 2, "with_lock", "function")
  opts = lock_options(opts, 3, "with_lock")
  local bad = errors.nul(opts, "table")
  if bad then return nil, bad end
  local lock, err = core.lock(self.pool, key, opts, false)
  if not lock then return nil, err end
  local res = { pcall(fn, lock) }
  local released, rerr = lock:release()
  if not res[1] then error(res[2], 0) end
  if not released then return nil, rerr end
  return unpack(res, 2, maxn(res))
end

-- locks.key(key) → the advisory key as a decimal string.
function _M.key(key)
  errors.check(key, 1, "key", "string")
  return core.lock_key(key)
end

return _M
