-- SPDX-License-Identifier: MIT
-- pgstore — the Lua API: connect to PostgreSQL and get a db whose stores
-- (events, snapshots, checkpoints, sessions, kv …) share its pool.
-- Runtime failures return nil, err; misuse raises (README, "Errors").
local core = require "pgstore.core"
local errors = require "pgstore.errors"
local options = require "pgstore.options"
local Db = require "pgstore.db"
require "pgstore.listen" -- adds db:notify
require "pgstore.locks"  -- adds db:lock, db:try_lock, db:with_lock

local type = type

local _M = {
  _VERSION = core._VERSION,
  null = core.null,     -- SQL NULL; equal to cjson.null and ngx.null
  errors = errors,
}

local OPTION_TYPES = {
  dsn = "string", pool_size = "number", read_dsn = "string|table",
  connect_timeout = "number", acquire_timeout = "number",
  statement_timeout = "number", lock_timeout = "number", query_timeout = "number", application_name = "string",
  shared = "string", replica_max_lag = "number", pooler = "string", listen_dsn = "string",
}
local POOLERS = { none = true, transaction = true }

-- pgstore.connect(dsn) or pgstore.connect{ dsn = …, pool_size = 4, … } → db | nil, err
-- With no dsn, libpq's PG* environment variables apply. pooler =
-- "transaction" when dsn reaches the server through a transaction pooler
-- (PgBouncer's pool_mode = transaction): no session state is relied on, and
-- LISTEN goes through listen_dsn, a direct connection string. shared = key takes
-- the pools from the process-wide registry under that key (created with
-- these options by the first caller; closing the db only drops its
-- reference): how resty.pgstore's worker-thread VMs share connections.
function _M.connect(opts)
  if opts == nil or type(opts) == "string" then
    opts = { dsn = opts }
  elseif type(opts) ~= "table" then
    options.argerror(1, "connect", "string or table expected, got " .. type(opts))
  end
  options.check(opts, OPTION_TYPES, 1, "connect")
  options.list(opts, "read_dsn", "string", 1, "connect")
  local bad = options.int(opts.pool_size, "pool_size", 1, 10000)
    or options.seconds(opts.connect_timeout, "connect_timeout") or options.seconds(opts.acquire_timeout, "acquire_timeout")
    or options.int(opts.statement_timeout, "statement_timeout", 0, 2147483647) -- ms, as the server's
    or options.int(opts.lock_timeout, "lock_timeout", 0, 2147483647)
    or options.seconds(opts.query_timeout, "query_timeout")
    or options.seconds(opts.replica_max_lag, "replica_max_lag", true)
    or options.one_of(opts.pooler, "pooler", POOLERS)
  if bad then return nil, bad end
  return Db.new(opts)
end

-- Scripts' building blocks (each module loads on first use):
-- pgstore.upcasters{ … } → registry (pgstore.upcasters)
-- pgstore.policy(table | path) / pgstore.policies{ … } → policy set (pgstore.policy)
-- pgstore.aggregate{ … } → aggregate (pgstore.aggregate)
function _M.upcasters(list) return require("pgstore.upcasters").new(list) end
function _M.policy(p) return require("pgstore.policy").one(p) end
function _M.policies(list) return require("pgstore.policy").new(list) end
function _M.aggregate(opts) return require("pgstore.aggregate").new(opts) end

-- pgstore.open_<kind>(dsn_or_opts, store_opts) → a store that owns its own
-- pool: store:close() closes it (twice is harmless). E.g. open_kv(dsn, { table = … }).
for _, kind in ipairs(Db.KINDS) do
  _M["open_" .. kind] = function(conn_opts, store_opts)
    local db, err = _M.connect(conn_opts)
    if not db then return nil, err end
    local store
    store, err = db[kind](db, store_opts)
    if not store then
      db:close()
      return nil, err
    end
    store.owns_db = true
    return store
  end
end

return _M
