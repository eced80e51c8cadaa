-- SPDX-License-Identifier: MIT
-- resty.pgstore — pgstore inside nginx (lua-nginx-module), without ever
-- blocking the event loop:
--
--   local pgstore = require "resty.pgstore"
--   local db = pgstore.connect{ dsn = "host=127.0.0.1 dbname=app", pool_size = 8 }
--   local rows, err = db:query("select $1::int as n", 1)
--   local es = db:events()
--   local res, err = es:append("order-1", { { type = "Placed", data = { total = 10 } } })
--
-- The API is pgstore's (README, "Lua API"); what differs is said in the
-- README section "nginx / OpenResty". Every libpq call runs in a worker
-- thread (ngx.run_worker_thread, resty.pgstore.call) against a pool that
-- all thread VMs of the worker process share (pgstore.core's registry of
-- shared pools); live delivery (LISTEN, the change feed, relays, leases,
-- KV cleanup) runs in ngx.timer loops of each worker.
--
-- connect() does no I/O: it may run at module level of init_worker_by_lua
-- or in any request. It refuses init_by_lua: the master forks the workers
-- after it, and connections must belong to the worker that uses them.
local core = require "pgstore.core"
local errors = require "pgstore.errors"
local options = require "pgstore.options"
local call_mod = require "resty.pgstore.call"
local Db = require "resty.pgstore.db"
local timers = require "resty.pgstore.timers"

local type, pairs, tostring, setmetatable = type, pairs, tostring, setmetatable
local sort, concat = table.sort, table.concat
local format = string.format
local raise, argerr = call_mod.raise, call_mod.arg

if not ngx or not ngx.run_worker_thread then
  error("resty.pgstore runs inside nginx with lua-nginx-module >= 0.10.23 built with threads; "
    .. "outside nginx use pgstore", 2)
end

local _M = {
  _VERSION = core._VERSION,
  null = core.null, -- SQL NULL; equal to ngx.null and cjson.null
  errors = errors,
}

-- pgstore.connect's options, and resty.pgstore's own.
local OPTIONS = {
  dsn = "string", pool_size = "number", read_dsn = "string|table",
  connect_timeout = "number", acquire_timeout = "number",
  statement_timeout = "number", lock_timeout = "number", application_name = "string",
  replica_max_lag = "number", pooler = "string", listen_dsn = "string",
  -- resty.pgstore
  thread_pool = "string",   -- the nginx thread_pool to run in ("pgstore")
  queue_timeout = "number", -- seconds a call waits for a connection slot (5)
  shared_dict = "string",   -- lua_shared_dict electing one worker per nginx (none)
  key = "string",           -- the shared pool's key (derived from the options)
}

local POOL_OPTIONS = { "dsn", "pool_size", "read_dsn", "connect_timeout",
                       "statement_timeout", "lock_timeout", "application_name", "replica_max_lag",
                       "pooler", "listen_dsn" }

-- Appends and lock calls made from nginx wait at most this long (ms) for a
-- row or advisory lock: a holder that never commits costs a `timeout`,
-- not a frozen worker.
local LOCK_TIMEOUT = 5000

-- The C pool's acquire is a safety net: a caller holds a slot, so a
-- connection is free (resty.pgstore.call). Should that ever not hold, a
-- thread gives up at once instead of waiting.
local ACQUIRE_NOW = 0.1

-- The pool key: the connection options, so equal options share one pool.
local function derive_key(spec)
  local parts = {}
  for _, k in ipairs(POOL_OPTIONS) do
    local v = spec[k]
    if type(v) == "table" then v = concat(v, "\1") end
    if v ~= nil then parts[#parts + 1] = k .. "=" .. tostring(v) end
  end
  sort(parts)
  return "resty.pgstore\2" .. concat(parts, "\2")
end

-- pgstore.connect(dsn | { dsn, pool_size = 4, read_dsn, connect_timeout = 5,
--   statement_timeout, lock_timeout = 5000, application_name = "pgstore",
--   pooler = "none" | "transaction", listen_dsn (pgstore.connect's),
--   thread_pool = "pgstore", queue_timeout = 5, shared_dict, key })
--   → db | nil, err (also "invalid" when the thread pool is too small for
--   pool_size: resty.pgstore.call's rule)
function _M.connect(opts)
  if ngx.get_phase() == "init" then
    raise("resty.pgstore: connect is not available in init_by_lua: the master process forks "
      .. "the workers afterwards, so connections must be opened in the workers (call connect "
      .. "in init_worker_by_lua or in a request)")
  end
  if opts == nil or type(opts) == "string" then
    opts = { dsn = opts }
  elseif type(opts) ~= "table" then
    argerr(1, "connect", "string or table expected, got " .. type(opts))
  end
  options.check(opts, OPTIONS, 1, "connect")
  local queue_timeout = opts.queue_timeout or 5
  local bad = options.int(opts.pool_size, "pool_size", 1, 10000)
    or options.seconds(queue_timeout, "queue_timeout")
    or options.seconds(opts.connect_timeout, "connect_timeout") or options.seconds(opts.acquire_timeout, "acquire_timeout")
    or options.int(opts.statement_timeout, "statement_timeout", 0, 2147483647) -- ms, as the server's
    or options.int(opts.lock_timeout, "lock_timeout", 0, 2147483647)
    or options.one_of(opts.pooler, "pooler", { none = true, transaction = true })
  if bad then return nil, bad end
  if opts.shared_dict and not ngx.shared[opts.shared_dict] then
    argerr(1, "connect", format("lua_shared_dict '%s' is not defined in nginx.conf", opts.shared_dict))
  end

  local spec = {}
  for _, k in ipairs(POOL_OPTIONS) do spec[k] = opts[k] end
  if spec.application_name == nil then spec.application_name = "pgstore" end
  if spec.lock_timeout == nil then spec.lock_timeout = LOCK_TIMEOUT end
  local pool_size = spec.pool_size or 4
  local thread_pool = opts.thread_pool or "pgstore"
  -- A pool belongs to one thread pool: its slots count in that one's rule.
  local key = opts.key or (derive_key(spec) .. "\2thread_pool=" .. thread_pool)
  local routes, rerr = call_mod.routes(thread_pool, key, pool_size, queue_timeout)
  if not routes then return nil, rerr end
  -- Every thread VM opens the same pool by key: one connection per slot
  -- (pool_size for callers, one for the adapter's loops).
  spec.shared = key
  spec.pool_size = routes.fg.size + 1
  spec.acquire_timeout = ACQUIRE_NOW
  -- The pool itself, from the main VM: no connection opens here (they open
  -- lazily, in threads); it checks the DSN and serves pool_stats().
  local pool, err = core.pool{
    dsn = spec.dsn, pool_size = spec.pool_size, connect_timeout = spec.connect_timeout,
    acquire_timeout = spec.acquire_timeout, statement_timeout = spec.statement_timeout,
    lock_timeout = spec.lock_timeout, application_name = spec.application_name, shared = key,
    pooler = spec.pooler,
  }
  if not pool then return nil, err end
  -- The reaper runs from the start: it also cleans up after results
  -- nobody received, which a first call may leave.
  timers.reaper(routes.fg)
  return setmetatable({
    spec = spec, key = key, pool = pool, cfg = routes.fg,
    lock_wait = spec.lock_timeout > 0 and spec.lock_timeout / 1000 or nil,
    shared_dict = opts.shared_dict,
  }, Db.mt)
end

-- pgstore.every(name, interval, fn[, { shared_dict = name, ttl = s }]) → true | nil, err
-- Runs fn() every `interval` seconds in a timer of this worker (from
-- init_worker_by_lua, or anywhere timers may be created); with
-- shared_dict, in one worker of the whole nginx at a time, chosen by a
-- lock with a TTL in that dict. fn may use db calls (they run in threads).
function _M.every(name, interval, fn, opts)
  call_mod.check(name, 1, "every", "string")
  call_mod.check(interval, 2, "every", "number")
  call_mod.check(fn, 3, "every", "function")
  call_mod.check(opts, 4, "every", "table|nil")
  if not (interval > 0) then argerr(2, "every", "interval must be positive") end
  return timers.every("user:" .. name, interval, fn,
    { dict = opts and opts.shared_dict, ttl = opts and opts.ttl })
end

-- pgstore.stats(db) → { parked = { parked, busy, expired }, pool = {…},
-- slots = { free, size, background_free }, threads = { held, lanes } }
-- for status pages; no I/O.
function _M.stats(db)
  Db._check(db, "stats")
  return { parked = core.park_stats(), pool = db.pool:stats(), slots = call_mod.slots(db.cfg),
           threads = call_mod.stats() }
end

return _M
