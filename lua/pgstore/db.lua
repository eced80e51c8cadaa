-- SPDX-License-Identifier: MIT
-- pgstore.db — a database handle: a pool on the primary (all writes and
-- db:query), optional pools on read replicas, and transactions with retry.
-- Stores made from a db share its pools (see the store modules).
local core = require "pgstore.core"
local errors = require "pgstore.errors"
local options = require "pgstore.options"
local replicas = require "pgstore.replicas"
local Tx = require "pgstore.tx"

local type, pcall, unpack, select = type, pcall, unpack, select
-- debug.getmetatable: handles hide their metatables from getmetatable (__metatable)
local getmetatable = debug.getmetatable
local maxn = table.maxn

local Db = {}
local mt = { __index = Db, __name = "pgstore.db", __metatable = false }

local ISOLATION = { ["read committed"] = true, ["repeatable read"] = true, serializable = true }
local TRANSACTION_OPTIONS = { isolation = "string", retries = "number" }

-- Connection strings may hold a password: they stay out of the db table,
-- where a REPL, a pretty-printer or a debugger would show them. Listeners
-- read them back with Db._dsn(db).
local dsns = setmetatable({}, { __mode = "k" })

local function pool_opts(base, dsn, shared)
  return {
    dsn = dsn,
    shared = shared,
    pool_size = base.pool_size,
    connect_timeout = base.connect_timeout,
    acquire_timeout = base.acquire_timeout,
    statement_timeout = base.statement_timeout,
    lock_timeout = base.lock_timeout,
    query_timeout = base.query_timeout,
    application_name = base.application_name,
    pooler = base.pooler,
  }
end

-- opts: { dsn, pool_size, read_dsn (string or list), connect_timeout,
-- acquire_timeout, statement_timeout (ms), lock_timeout (ms), query_timeout (seconds the
-- client waits for any statement before it cancels it and gives the
-- connection up: "timeout"; also when the network is what hangs),
-- application_name, shared, replica_max_lag (seconds), pooler ("none" |
-- "transaction"), listen_dsn (for LISTEN connections) }
function Db.new(opts)
  local shared = opts.shared
  local pool, err = core.pool(pool_opts(opts, opts.dsn, shared))
  if not pool then return nil, err end
  local public = {}
  for k, v in pairs(opts) do
    if k ~= "dsn" and k ~= "read_dsn" and k ~= "listen_dsn" then public[k] = v end
  end
  local self = setmetatable({ pool = pool, readers = {}, opts = public }, mt)
  dsns[self] = { dsn = opts.dsn, listen = opts.listen_dsn }
  local read = opts.read_dsn
  if type(read) == "string" then read = { read } end
  for i, dsn in ipairs(read or {}) do
    local ro = pool_opts(opts, dsn, shared and (shared .. "#read" .. i))
    -- A frozen replica answers nothing: its statements give up after the
    -- connect timeout, and the read goes elsewhere (pgstore.replicas).
    ro.query_timeout = ro.query_timeout or ro.connect_timeout or 5
    local rp, rerr = core.pool(ro)
    if not rp then
      self:close()
      return nil, rerr
    end
    self.readers[i] = rp
  end
  self.replicas = replicas.new(self.readers, opts.replica_max_lag)
  return self
end

function Db._dsn(self)
  return dsns[self] and dsns[self].dsn
end

-- The DSN LISTEN connections use: listen_dsn, else dsn — unless dsn goes
-- through a transaction pooler, which cannot keep a LISTEN (the session is
-- shared): then listen_dsn is required. → dsn | nil, err "invalid"
function Db._listen_dsn(self)
  local d = dsns[self]
  if d and d.listen then return d.listen end
  if self.opts.pooler == "transaction" then
    return nil, errors.new("invalid", "LISTEN needs a session of its own, which a transaction pooler"
      .. " (pooler = \"transaction\") cannot give: connect with listen_dsn, a direct connection string")
  end
  return d and d.dsn
end

local function check(self, fname)
  if getmetatable(self) ~= mt then
    options.argerror(1, fname, ("pgstore.db expected; use db:%s()"):format(fname))
  end
  if not self.pool then errors.closed() end
end
Db._check = check

function Db:query(sql, ...)
  check(self, "query")
  options.arg(sql, 1, "query", "string")
  options.params(2, "query", ...)
  return self.pool:query(sql, ...)
end

function Db:exec(sql, ...)
  check(self, "exec")
  options.arg(sql, 1, "exec", "string")
  options.params(2, "exec", ...)
  return self.pool:exec(sql, ...)
end

-- A pool for reads: the next usable replica in turn (pgstore.replicas),
-- else the primary.
function Db:reader()
  check(self, "reader")
  if #self.readers == 0 then return self.pool end
  return replicas.reader(self.replicas, self.pool)
end

-- Runs fn(pool) for a read on a usable replica, else on the primary; with
-- lsn, only on a replica that has replayed it (waiting up to timeout).
function Db:_read(fn, lsn, timeout)
  if #self.readers == 0 then return fn(self.pool) end
  return replicas.read(self.replicas, self.pool, fn, lsn, timeout)
end

-- A causal token: the primary's WAL position covering every write
-- committed so far, by any process. Another process passes it to
-- es:read(stream, { after_lsn = token }). → string | nil, err
function Db:causal_token()
  check(self, "causal_token")
  return replicas.token(self.pool)
end

-- Borrows a connection for a block of work; the caller must release() it.
function Db:acquire(timeout)
  check(self, "acquire")
  options.arg(timeout, 1, "acquire", "number|nil")
  local bad = options.seconds(timeout, "timeout")
  if bad then return nil, bad end
  return self.pool:acquire(timeout)
end

local function retryable(err)
  return type(err) == "table" and (err.sqlstate == "40001" or err.sqlstate == "40P01")
end

-- Runs fn(tx) in a transaction. Commits and returns fn's results when fn
-- returns normally; rolls back and returns nil, err when fn returns nil, err;
-- rolls back and re-raises when fn raises. Serialization failures and
-- deadlocks re-run fn (opts.retries, default 3) after a jittered backoff.
function Db:transaction(fn, opts)
  check(self, "transaction")
  options.arg(fn, 1, "transaction", "function")
  opts = options.check(opts, TRANSACTION_OPTIONS, 2, "transaction")
  local iso = opts.isolation or "read committed"
  local bad = options.one_of(iso, "isolation", ISOLATION) or options.int(opts.retries, "retries", 0, 1000)
  if bad then return nil, bad end
  local retries = opts.retries or 3
  for attempt = 0, retries do
    local conn, err = self.pool:acquire()
    if not conn then return nil, err end
    local ok
    ok, err = conn:begin(iso)
    if not ok then
      conn:release()
      return nil, err
    end
    local tx = Tx.new(conn)
    local res = { pcall(fn, tx) }
    tx.active = false
    local again = tx.retryable ~= nil and attempt < retries
    if not res[1] then
      conn:rollback()
      conn:release()
      if not again then error(res[2], 0) end
    elseif res[2] == nil and res[3] ~= nil then
      conn:rollback()
      conn:release()
      if not again then return nil, res[3] end
    elseif tx.retryable then
      -- fn swallowed a serialization failure: the transaction is void.
      conn:rollback()
      conn:release()
      if not again then return nil, tx.retryable end
    else
      ok, err = conn:commit()
      conn:release()
      if ok then return unpack(res, 2, maxn(res)) end
      if not (retryable(err) and attempt < retries) then return nil, err end
    end
    core.backoff(attempt + 1)
  end
end

-- Stores and live-delivery objects made from this db share its pools; each
-- lives in its own module (pgstore.<kind>) with a `new(db, opts)`.
-- Keep in the order of the README's sections.
Db.KINDS = { "events", "snapshots", "checkpoints", "exec_checkpoints", "sessions", "kv",
             "listen", "relay", "subscribe", "partitions" }
for _, kind in ipairs(Db.KINDS) do
  Db[kind] = function(self, ...)
    check(self, kind)
    return require("pgstore." .. kind).new(self, ...)
  end
end

function Db:pool_stats()
  check(self, "pool_stats")
  return self.pool:stats()
end

-- Closes the pools this db owns; closing twice is harmless.
function Db:close()
  if getmetatable(self) ~= mt then options.argerror(1, "close", "pgstore.db expected; use db:close()") end
  if self.pool then self.pool:close() end
  for _, rp in ipairs(self.readers) do rp:close() end
  self.pool, self.readers = nil, {}
end

function Db:is_closed()
  return self.pool == nil
end

mt.__tostring = function(self)
  return self.pool and "pgstore.db" or "pgstore.db (closed)"
end

return Db
