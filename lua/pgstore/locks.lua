-- SPDX-License-Identifier: MIT
-- pgstore.locks — named locks across processes, as db methods:
--
--   local release, err = db:lock("invoice:42", { timeout = 5 })  -- waits up to 5 s ("timeout")
--   … only one holder anywhere …
--   release()                                                    -- true | nil, err
--   local release = db:try_lock("invoice:42")                    -- release | nil (held elsewhere) | nil, err
--   db:with_lock("invoice:42", function(lock) … end, opts)      -- fn's results | nil, err
--   db:transaction(function(tx) assert(lock:guard(tx)) … end)  -- fenced work
--   db:lock_guard(tx, key, token[, opts])                         -- a token passed on
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
-- TTL ran out); lock:renew() → true | nil, err; lock:key(); lock:token();
-- lock:held(); lock:guard(tx).
--
-- lock:held() → true | false[, err] asks the server, one round trip: an
-- advisory lock is held while the session that took it still holds it (a
-- terminated backend, a restarted server or a broken connection make it
-- false); a table-mode lock while its row has its token unexpired. false
-- comes with err when the server could not be asked. It is a hint for the
-- moment it answers — a holder can be cut off right after — so work that
-- must not happen under a lost lock is fenced instead:
--
-- Fencing tokens (both modes). lock:token() is larger than the token of
-- every earlier hold of the key, in any process: table mode's row token, or
-- for advisory locks a counter per key in <table>_tokens (default
-- pgstore_locks_tokens, migrated on first use; skip_schema_init = true
-- makes a missing table "not_found"), raised while the lock is held.
-- Rows are never deleted; dropping that table would start the tokens over.
-- lock:guard(tx) → true | nil, err, inside db:transaction, checks that the
-- token is still the current hold's (advisory: and that its session still
-- holds the lock; table mode: that its TTL has not run out) and locks the
-- token's row FOR SHARE: the next holder's acquisition waits until tx ends,
-- so nothing commits under a token after a larger one was handed out. A
-- stale token is "lease_lost" and the transaction can no longer commit.
-- db:lock_guard(tx, key, token[, { mode, table }]) does the same for a
-- token passed on from elsewhere (a job carrying the token of the lock its
-- sender held). A single attempt (try_lock, timeout = 0) while a
-- transaction guarded by the previous token is still open finds the lock
-- not free yet.
local core = require "pgstore.core"
local errors = require "pgstore.errors"
local options = require "pgstore.options"
local Db = require "pgstore.db"
local Tx = require "pgstore.tx"

local type, pcall, error, pairs, tostring, unpack = type, pcall, error, pairs, tostring, unpack
local maxn = table.maxn

local _M = { _VERSION = core._VERSION, KEY_MAX = core.limits.lock_key }

local MODES = { advisory = true, table = true }
local OPTIONS = {
  timeout = "number", mode = "string", ttl = "number", table = "string", skip_schema_init = "boolean",
}

-- Checks an options table (misuse raises through pgstore.options) →
-- opts, or nil and an invalid error for a value out of range.
local function lock_options(opts, n, fname)
  if opts == nil then return nil end
  options.check(opts, OPTIONS, n, fname)
  local bad = options.one_of(opts.mode, "mode", MODES) or options.seconds(opts.timeout, "timeout")
    or options.seconds(opts.ttl, "ttl", true) or errors.nul(opts, "table")
  if bad then return nil, bad end
  return opts
end

-- db:lock(key[, opts]) → lock | nil, err
function Db:lock(key, opts)
  Db._check(self, "lock")
  options.arg(key, 1, "lock", "string")
  local bad
  opts, bad = lock_options(opts, 2, "lock")
  if bad then return nil, bad end
  return core.lock(self.pool, key, opts, false)
end

-- db:try_lock(key[, opts]) → lock | nil (held elsewhere) | nil, err
function Db:try_lock(key, opts)
  Db._check(self, "try_lock")
  options.arg(key, 1, "try_lock", "string")
  local bad
  opts, bad = lock_options(opts, 2, "try_lock")
  if bad then return nil, bad end
  return core.lock(self.pool, key, opts, true)
end

-- db:with_lock(key, fn[, opts]) → fn(lock)'s results | nil, err. The lock
-- is released however fn ends; fn raising is re-raised after the release.
-- When the lock turns out to have been lost before the release, the result
-- is nil, err ("lease_lost"): fn's work was not protected to the end.
function Db:with_lock(key, fn, opts)
  Db._check(self, "with_lock")
  options.arg(key, 1, "with_lock", "string")
  options.arg(fn, 2, "with_lock", "function")
  local bad
  opts, bad = lock_options(opts, 3, "with_lock")
  if bad then return nil, bad end
  local lock, err = core.lock(self.pool, key, opts, false)
  if not lock then return nil, err end
  local res = { pcall(fn, lock) }
  local released, rerr = lock:release()
  if not res[1] then error(res[2], 0) end
  if not released then return nil, rerr end
  return unpack(res, 2, maxn(res))
end

local GUARD_OPTIONS = { mode = "string", table = "string" }

-- db:lock_guard(tx, key, token[, opts]) → true | nil, err ("lease_lost")
function Db:lock_guard(tx, key, token, opts)
  Db._check(self, "lock_guard")
  local conn = Tx.conn_of(tx, 1, "lock_guard", "tx")
  options.arg(key, 2, "lock_guard", "string")
  options.arg(token, 3, "lock_guard", "number")
  if opts ~= nil then
    options.check(opts, GUARD_OPTIONS, 4, "lock_guard")
    local bad = options.one_of(opts.mode, "mode", MODES) or errors.nul(opts, "table")
    if bad then return nil, bad end
  end
  return core.lock_guard(conn, key, token, opts)
end

-- locks.key(key) → the advisory key as a decimal string.
function _M.key(key)
  options.arg(key, 1, "key", "string")
  return core.lock_key(key)
end

return _M
