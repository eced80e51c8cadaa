-- SPDX-License-Identifier: MIT
-- pgstore.kv — a key-value store with TTL: any Lua string as value
-- (BYTEA, NUL-safe) under a string key, optionally expiring. Expired
-- values are invisible to get() at once and removed by cleanup(), which a
-- background cleaner runs every cleanup_interval seconds. SQL, the
-- schema and the cleaner in core/kv.c.
--
-- The cleaner is a C thread per store, sleeping on a condition variable:
-- each run opens its own connection with the db's settings (never a slot
-- of the db's pool), deletes the expired rows, and closes it. kv:close()
-- wakes and joins it at once (a cleanup in flight is cancelled);
-- cleanup_interval = 0 means no thread at all. A process forked after the
-- store opened has no cleaner (closing its copy is safe): in nginx, open
-- kv stores in init_worker_by_lua, not in the master's init_by_lua.
--
-- Schema init runs in one transaction under pg_advisory_xact_lock with a
-- lock_timeout, creating the table and its expires_at index only when
-- missing, so many processes may initialise one table at once. It is a
-- sequence of C steps driven from here so that phase_hook(tag) runs in
-- Lua right before each step, in the real order: begin_tx,
-- set_lock_timeout, acquire_lock, lock_acquired, check_table,
-- [create_table], check_index, [create_index], commit, done (the bracketed
-- ones only when something is missing). A failing step returns nil, err
-- with err.phase naming it (and the transaction rolled back); a hook that
-- raises aborts the init, rolls back, and the error propagates.
--
--   local kv = db:kv{ table = "celeris_sessions", cleanup_interval = 300 }
--   kv:set("session:42", blob, 3600)
--   local blob = kv:get("session:42")      -- nil when absent or expired
local core = require "pgstore.core"
local C = require "pgstore.companion"
local options = require "pgstore.options"
local errors = require "pgstore.errors"

local pcall, error = pcall, error

local OPTIONS = {
  table = "string", cleanup_interval = "number", skip_schema_init = "boolean",
  phase_hook = "function", lock_timeout = "number", max_value_size = "number",
}
-- new and migrate are kv's own (below): schema init runs from here, with
-- the phase hook. close comes from pgstore.companion.
local _M, mt = C.class("kv", OPTIONS)

local DEFAULT_CLEANUP_INTERVAL = 300

-- Runs schema init step by step, calling hook(tag) before each step.
-- → true | nil, err (err.phase = the failing step). Raises what the hook raises.
local function init_schema(ud, hook)
  local it, err = ud:schema_init()
  if not it then return nil, err end
  while true do
    local phase = it:phase()
    if not phase then break end
    if hook then
      local ok, herr = pcall(hook, phase)
      if not ok then
        it:close() -- rolls back, gives the connection back
        error(herr, 0)
      end
    end
    local ok, serr = it:step()
    if not ok then
      it:close()
      return nil, serr -- serr.phase names the step
    end
  end
  it:close()
  return true
end

-- db:kv(opts) → kv | nil, err
-- opts: table ("pgstore_kv"), cleanup_interval (seconds, 300; 0 = no
-- cleaner), skip_schema_init (false), phase_hook (function(tag)),
-- lock_timeout (seconds schema init waits for locks, 10),
-- max_value_size (bytes per value, 1 MiB)
function _M.new(db, opts)
  opts = C.options(opts, OPTIONS, 1, "kv")
  local bad = options.seconds(opts.cleanup_interval, "cleanup_interval")
    or options.seconds(opts.lock_timeout, "lock_timeout", true)
    or C.size(opts.max_value_size, "max_value_size") or errors.nul(opts, "table")
  local interval = opts.cleanup_interval
  if interval == nil then interval = DEFAULT_CLEANUP_INTERVAL end
  if bad then return nil, bad end
  local function open(cleanup_interval, by_caller)
    return core.kv(db.pool, {
      table = opts.table, cleanup_interval = cleanup_interval, lock_timeout = opts.lock_timeout,
      max_value_size = opts.max_value_size, skip_schema_init = true, schema_init_by_caller = by_caller,
    })
  end
  local ud, err
  if opts.skip_schema_init then
    ud, err = open(interval, false) -- the table must be there
  else
    -- The schema is ours to init, with the hook, before any cleaner runs:
    -- on a handle without one, which then serves or gives way to one.
    ud, err = open(0, true)
    if not ud then return nil, err end
    local ok, res, ierr = pcall(init_schema, ud, opts.phase_hook)
    if not ok or not res or interval > 0 then ud:close() end
    if not ok then error(res, 0) end
    if not res then return nil, ierr end
    if interval > 0 then ud, err = open(interval, false) end
  end
  if not ud then return nil, err end
  return C.store(mt, db, ud, { phase_hook = opts.phase_hook })
end

-- kv:migrate() → true | nil, err: schema init now, with the phase hook.
function _M:migrate()
  C.check(self, mt, "migrate")
  return init_schema(self.core, self.phase_hook)
end

-- kv:set(key, value [, ttl [, { tx = tx }]]) → true | nil, err
-- ttl in seconds (fractions allowed) up to the latest time a timestamp
-- holds (options.TIME_MAX); nil or ≤ 0: never expires; NaN and the
-- infinities are `invalid`.
function _M:set(key, value, ttl, opts)
  C.check(self, mt, "set")
  C.arg(key, 1, "set", "string")
  C.arg(value, 2, "set", "string")
  C.arg(ttl, 3, "set", "number|nil")
  local _, conn, tx = C.call_opts(opts, nil, 4, "set")
  local bad = ttl and not (ttl <= 0 and ttl > -math.huge) and options.seconds(ttl, "ttl", true, options.TIME_MAX)
  if bad then return nil, bad end
  return C.note(tx, self.core:set(key, value, ttl, conn))
end

-- kv:get(key [, { tx = tx }]) → value | nil (absent or expired) | nil, err
_M.get = C.keyed(mt, "get")

-- kv:delete(key [, { tx = tx }]) → true | nil, err (absent: true)
_M.delete = C.keyed(mt, "delete", true)

-- kv:delete_prefix(prefix [, { tx = tx }]) → number removed | nil, err
-- The prefix is matched literally (%, _ and \ are not wildcards); ""
-- empties the table.
_M.delete_prefix = C.keyed(mt, "delete_prefix")

-- kv:cleanup([{ tx = tx }]) → number of expired rows removed | nil, err
_M.cleanup = C.whole(mt, "cleanup")

-- kv:cleaner_stats() → { interval, running, runs, removed, failures, last_error? }
function _M:cleaner_stats()
  C.check(self, mt, "cleaner_stats")
  return self.core:cleaner_stats()
end

-- kv:close() (pgstore.companion) also stops the cleaner: closing the core
-- store joins its thread.

return _M
