-- SPDX-License-Identifier: MIT
-- resty.pgstore.db — the db handle of resty.pgstore: pgstore's db API with
-- every statement run in a worker thread (resty.pgstore.call) on the
-- worker's shared pool.
--
-- Transactions: a Lua function cannot cross into a thread VM, so
-- db:transaction(fn) runs fn in the request's own coroutine, as pgstore
-- does, and pins a connection for it: BEGIN runs in a thread on a pooled
-- connection, which is then parked in pgstore.core's process-wide registry
-- under an id; each tx:query / tx:exec / store call with { tx = tx } is a
-- worker-thread call that takes the connection out by id, runs one
-- statement and parks it again; COMMIT or ROLLBACK gives it back to the
-- pool. Between statements the event loop is free, and the connection is
-- pinned to this transaction only. A transaction that is never finished —
-- the request was aborted, fn called ngx.exit, the coroutine was killed —
-- is rolled back by the worker's reaper when its `timeout` (default 30 s)
-- runs out, or sooner, once its tx object has been garbage-collected.
local core = require "pgstore.core"
local options = require "pgstore.options"
local call_mod = require "resty.pgstore.call"
local timers = require "resty.pgstore.timers"
local reraise = require("resty.pgstore.raise").again

-- debug.getmetatable: handles hide their metatables from getmetatable (__metatable)
local type, pcall, error, select, unpack, setmetatable, getmetatable, tostring, pairs =
      type, pcall, error, select, unpack, setmetatable, debug.getmetatable, tostring, pairs
local maxn = table.maxn
local newproxy = newproxy
local format = string.format
local ngx_now = ngx.now
local call, on, pin, unpin = call_mod.call, call_mod.on, call_mod.pin, call_mod.unpin
local raise, argerr, check_arg = call_mod.raise, call_mod.arg, call_mod.check
local park_expire = core.park_expire

local Db = {}
local mt = { __index = Db, __name = "resty.pgstore.db", __metatable = false }
Db.mt = mt

local ISOLATION = { ["read committed"] = true, ["repeatable read"] = true, serializable = true }

local function check(self, fname)
  if getmetatable(self) ~= mt then
    raise(format("bad argument #1 to '%s' (resty.pgstore.db expected; use db:%s())", fname, fname))
  end
  if self.closed then raise("attempt to use a closed connection") end
end
Db._check = check

-- A userdata whose collection marks parked handle `id` due for the reaper:
-- whatever owned it (a transaction, a lock) was dropped without finishing.
local function sentinel(id)
  local p = newproxy(true)
  getmetatable(p).__gc = function() park_expire(id) end
  return p
end
Db._sentinel = sentinel

-- Starts this worker's reaper (once) for parked handles of this db.
local function reaper(self)
  timers.reaper(self.cfg)
end
Db._reaper = reaper

-- ---- queries -------------------------------------------------------------------

-- db:query(sql, ...) → rows | nil, err
function Db:query(sql, ...)
  check(self, "query")
  check_arg(sql, 1, "query", "string")
  return call(self.cfg, "query", self.spec, sql, ...)
end

-- db:exec(sql, ...) → rows affected | nil, err
function Db:exec(sql, ...)
  check(self, "exec")
  check_arg(sql, 1, "exec", "string")
  return call(self.cfg, "exec", self.spec, sql, ...)
end

-- db:notify(channel, payload) → true | nil, err (on a pooled connection)
function Db:notify(channel, payload)
  check(self, "notify")
  check_arg(channel, 1, "notify", "string")
  check_arg(payload, 2, "notify", "string|nil")
  return call(self.cfg, "notify", self.spec, channel, payload or "")
end

-- db:causal_token() → the primary's WAL position covering every write
-- committed so far (pgstore's db:causal_token) | nil, err
function Db:causal_token()
  check(self, "causal_token")
  return call(self.cfg, "causal_token", self.spec)
end

-- db:run(module, fname, ...) → require(module)[fname](db, ...)'s results,
-- run in a worker thread with a plain pgstore db on the same pool: for work
-- with many statements and logic between them, in one trip. Arguments and
-- results must be plain data; a raise there raises here.
function Db:run(module, fname, ...)
  check(self, "run")
  check_arg(module, 1, "run", "string")
  check_arg(fname, 2, "run", "string")
  return call(self.cfg, "run", self.spec, module, fname, ...)
end

-- db:pool_stats() → { max_size, open, idle, borrowed, waiting } of this
-- worker's pool (no I/O).
function Db:pool_stats()
  check(self, "pool_stats")
  return self.pool:stats()
end

-- ---- pinned connections ----------------------------------------------------------

local Conn = {}
local conn_mt = { __index = Conn, __name = "resty.pgstore.conn", __metatable = false }

local function conn_check(self, fname)
  if getmetatable(self) ~= conn_mt then
    raise(format("bad argument #1 to '%s' (resty.pgstore.conn expected; use conn:%s())", fname, fname))
  end
  if not self.id then raise("attempt to use a closed connection") end
end

-- db:acquire([timeout[, { hold = seconds }]]) → conn | nil, err: a pooled
-- connection pinned until conn:release(); `hold` bounds how long (after
-- it the reaper rolls back and gives it back).
function Db:acquire(timeout, opts)
  check(self, "acquire")
  check_arg(timeout, 1, "acquire", "number|nil")
  check_arg(opts, 2, "acquire", "table|nil")
  local hold = opts and opts.hold
  check_arg(hold, 2, "acquire", "number|nil")
  local id, err = pin(self.cfg, "conn", "pin", timeout, nil, self.spec, nil,
                      hold and core.now() + hold or 0)
  if not id then return nil, err end
  reaper(self)
  return setmetatable({ db = self, id = id, sentinel = sentinel(id) }, conn_mt)
end

for _, m in ipairs{ "query", "exec" } do
  Conn[m] = function(self, sql, ...)
    conn_check(self, m)
    check_arg(sql, 1, m, "string")
    return on(self.db.cfg, self.id, "conn", self.id, m, sql, ...)
  end
end

for _, m in ipairs{ "begin", "commit", "rollback", "savepoint", "rollback_to",
                    "release_savepoint", "tx_status", "backend_pid" } do
  Conn[m] = function(self, ...)
    conn_check(self, m)
    return on(self.db.cfg, self.id, "conn", self.id, m, ...)
  end
end

-- conn:release(): back to the pool (rolled back if a transaction is open);
-- twice is harmless.
function Conn:release()
  if getmetatable(self) ~= conn_mt then raise("bad argument #1 to 'release' (resty.pgstore.conn expected)") end
  local id = self.id
  if not id then return true end
  self.id = nil
  return unpin(self.db.cfg, id, "unpin", id, nil)
end

conn_mt.__tostring = function(self)
  return self.id and format("resty.pgstore.conn (%d)", self.id) or "resty.pgstore.conn (closed)"
end

-- ---- transactions ------------------------------------------------------------------

local Tx = {}
local tx_mt = { __index = Tx, __name = "resty.pgstore.tx", __metatable = false }
Db.tx_mt = tx_mt

local function tx_check(self, fname)
  if getmetatable(self) ~= tx_mt then
    raise(format("bad argument #1 to '%s' (resty.pgstore.tx expected; use tx:%s())", fname, fname))
  end
  if not self.active then raise("attempt to use a finished transaction") end
end

-- Records a serialization failure or deadlock: db:transaction re-runs fn.
local function note(self, res, err, ...)
  if res == nil and type(err) == "table" and (err.sqlstate == "40001" or err.sqlstate == "40P01") then
    self.retryable = err
  end
  return res, err, ...
end
Tx._note = note

function Tx:query(sql, ...)
  tx_check(self, "query")
  check_arg(sql, 1, "query", "string")
  return note(self, on(self.db.cfg, self.id, "conn", self.id, "query", sql, ...))
end

function Tx:exec(sql, ...)
  tx_check(self, "exec")
  check_arg(sql, 1, "exec", "string")
  return note(self, on(self.db.cfg, self.id, "conn", self.id, "exec", sql, ...))
end

local SAVEPOINT_OPS = { savepoint = "savepoint", rollback_to = "rollback_to", release = "release_savepoint" }
for name, op in pairs(SAVEPOINT_OPS) do
  Tx[name] = function(self, sp)
    tx_check(self, name)
    check_arg(sp, 1, name, "string")
    return on(self.db.cfg, self.id, "conn", self.id, op, sp)
  end
end

-- tx:nested(fn) → fn's results, inside a savepoint (as pgstore.tx).
function Tx:nested(fn)
  tx_check(self, "nested")
  check_arg(fn, 1, "nested", "function")
  self.depth = (self.depth or 0) + 1
  local name = "pgs_sp_" .. self.depth
  local ok, err = on(self.db.cfg, self.id, "conn", self.id, "savepoint", name)
  if not ok then self.depth = self.depth - 1; return nil, err end
  local res = { pcall(fn, self) }
  self.depth = self.depth - 1
  if not res[1] then
    on(self.db.cfg, self.id, "conn", self.id, "rollback_to", name)
    reraise(res[2])
  end
  if res[2] == nil and res[3] ~= nil then
    on(self.db.cfg, self.id, "conn", self.id, "rollback_to", name)
    return nil, res[3]
  end
  on(self.db.cfg, self.id, "conn", self.id, "release_savepoint", name)
  return unpack(res, 2, maxn(res))
end

-- tx:lock(key[, { timeout = s }]) → true | nil, err;  tx:try_lock(key) → boolean | nil, err
function Tx:lock(key, opts)
  tx_check(self, "lock")
  check_arg(key, 1, "lock", "string")
  check_arg(opts, 2, "lock", "table|nil")
  local timeout = opts and opts.timeout
  if timeout ~= nil and (type(timeout) ~= "number" or not (timeout >= 0)) then
    argerr(2, "lock", "timeout must be a non-negative number")
  end
  if timeout == nil then timeout = self.db.lock_wait end
  return note(self, on(self.db.cfg, self.id, "tx_lock", self.id, key, timeout, false))
end

function Tx:try_lock(key)
  tx_check(self, "try_lock")
  check_arg(key, 1, "try_lock", "string")
  return note(self, on(self.db.cfg, self.id, "tx_lock", self.id, key, nil, true))
end

-- tx:notify(channel, payload) → true | nil, err: delivered at commit.
function Tx:notify(channel, payload)
  tx_check(self, "notify")
  check_arg(channel, 1, "notify", "string")
  check_arg(payload, 2, "notify", "string|nil")
  return on(self.db.cfg, self.id, "tx_notify", self.id, channel, payload or "")
end

tx_mt.__tostring = function(self)
  return self.active and "resty.pgstore.tx" or "resty.pgstore.tx (finished)"
end

local function retryable(err)
  return type(err) == "table" and (err.sqlstate == "40001" or err.sqlstate == "40P01")
end

local TRANSACTION_OPTIONS = { isolation = "string", retries = "number", timeout = "number" }

-- db:transaction(fn[, { isolation = "read committed", retries = 3, timeout = 30 }])
--   → fn's results | nil, err
-- fn(tx) runs in the calling coroutine; each statement runs in a worker
-- thread on the transaction's pinned connection. Commits when fn returns
-- normally; rolls back and returns nil, err when fn returns nil, err; rolls
-- back and re-raises when fn raises; re-runs fn after serialization
-- failures and deadlocks (up to `retries`). `timeout`: seconds the
-- transaction may stay open before the reaper rolls it back (its next
-- statement then fails with "timeout").
function Db:transaction(fn, opts)
  check(self, "transaction")
  check_arg(fn, 1, "transaction", "function")
  opts = options.check(opts, TRANSACTION_OPTIONS, 2, "transaction")
  local iso = opts.isolation or "read committed"
  local retries = opts.retries or 3
  local timeout = opts.timeout or 30
  local bad = options.one_of(iso, "isolation", ISOLATION) or options.int(retries, "retries", 0, 1000)
    or options.seconds(timeout, "timeout", true)
  if bad then return nil, bad end
  local cfg = self.cfg
  reaper(self)
  for attempt = 0, retries do
    local id, err = pin(cfg, "tx", "pin", nil, nil, self.spec, iso, core.now() + timeout)
    if not id then return nil, err end
    local tx = setmetatable({ db = self, id = id, active = true, sentinel = sentinel(id) }, tx_mt)
    local res = { pcall(fn, tx) }
    tx.active = false
    local again = tx.retryable ~= nil and attempt < retries
    if not res[1] then
      unpin(cfg, id, "unpin", id, false)
      if not again then reraise(res[2]) end
    elseif res[2] == nil and res[3] ~= nil then
      unpin(cfg, id, "unpin", id, false)
      if not again then return nil, res[3] end
    elseif tx.retryable then
      unpin(cfg, id, "unpin", id, false)
      if not again then return nil, tx.retryable end
    else
      local ok
      ok, err = unpin(cfg, id, "unpin", id, true)
      if ok then
        if tx.appended then
          for channel, pos in pairs(tx.appended) do timers.notify(self, channel, pos) end
        end
        return unpack(res, 2, maxn(res))
      end
      if not (retryable(err) and attempt < retries) then return nil, err end
    end
    call_mod.sleep(math.min(0.005 * 2 ^ attempt, 0.2) * (0.5 + math.random()))
  end
end

-- ---- locks ------------------------------------------------------------------------------

local Lock = {}
local lock_mt = { __index = Lock, __name = "resty.pgstore.lock", __metatable = false }

local LOCK_OPTIONS = {
  timeout = "number", mode = "string", ttl = "number", table = "string", hold = "number",
  skip_schema_init = "boolean",
}

local function lock_options(opts, n, fname)
  if opts == nil then return nil, nil end
  options.check(opts, LOCK_OPTIONS, n, fname)
  local out = {}
  for k, v in pairs(opts) do
    if k ~= "hold" then out[k] = v end
  end
  return out, opts.hold
end

-- An advisory lock keeps its connection (and slot) while held.
local function pinned(res) return res[4] == true end

local function take_lock(self, key, opts, try, fname)
  local o, hold = lock_options(opts, 2, fname)
  if not try and (o == nil or o.timeout == nil) then
    -- From nginx a wait is always bounded: connect's lock_timeout.
    o = o or {}
    o.timeout = self.lock_wait
  end
  local id, token, kept = pin(self.cfg, "lock", "lock", nil, pinned, self.spec, key, o, try,
                              hold and core.now() + hold or 0)
  if not id then
    if id == false then return nil end -- try: held elsewhere
    return nil, token
  end
  reaper(self)
  return setmetatable({ db = self, id = id, name = key, tok = token, pinned = kept,
                        opts = o and (o.mode or o.table) and { mode = o.mode, table = o.table } or nil,
                        sentinel = sentinel(id) }, lock_mt)
end

-- db:lock(key[, { timeout, mode = "advisory"|"table", ttl, table, hold }]) → lock | nil, err
-- As pgstore's db:lock; `hold` bounds how long the lock may be held before
-- the reaper releases it (default: until released, or its lock object is
-- garbage-collected).
function Db:lock(key, opts)
  check(self, "lock")
  check_arg(key, 1, "lock", "string")
  return take_lock(self, key, opts, false, "lock")
end

-- db:try_lock(key[, opts]) → lock | nil (held elsewhere) | nil, err
function Db:try_lock(key, opts)
  check(self, "try_lock")
  check_arg(key, 1, "try_lock", "string")
  return take_lock(self, key, opts, true, "try_lock")
end

-- db:with_lock(key, fn[, opts]) → fn(lock)'s results | nil, err
function Db:with_lock(key, fn, opts)
  check(self, "with_lock")
  check_arg(key, 1, "with_lock", "string")
  check_arg(fn, 2, "with_lock", "function")
  local lock, err = take_lock(self, key, opts, false, "with_lock")
  if not lock then return nil, err end
  local res = { pcall(fn, lock) }
  local released, rerr = lock:release()
  if not res[1] then reraise(res[2]) end
  if not released then return nil, rerr end
  return unpack(res, 2, maxn(res))
end

-- lock:release() / lock() → true | nil, err ("lease_lost" when it had been lost)
function Lock:release()
  if getmetatable(self) ~= lock_mt then raise("bad argument #1 to 'release' (resty.pgstore.lock expected)") end
  local id = self.id
  if not id then return true end
  self.id = nil
  if self.pinned then return unpin(self.db.cfg, id, "lock_call", id, "release") end
  return call(self.db.cfg, "lock_call", id, "release")
end
lock_mt.__call = Lock.release

function Lock:renew()
  if not self.id then raise("attempt to use a released lock") end
  if self.pinned then return on(self.db.cfg, self.id, "lock_call", self.id, "renew") end
  return call(self.db.cfg, "lock_call", self.id, "renew")
end

function Lock:key() return self.name end
function Lock:token() return self.tok end

-- lock:held() → boolean | false, err: asks the server (one thread call),
-- as pgstore's: false once the lock's session is gone or its TTL ran out.
function Lock:held()
  if not self.id then return false end
  if self.pinned then return on(self.db.cfg, self.id, "lock_call", self.id, "held") end
  return call(self.db.cfg, "lock_call", self.id, "held")
end

local GUARD_OPTIONS = { mode = "string", table = "string" }

local function guard_in(db, tx, key, token, opts, fname)
  if getmetatable(tx) ~= tx_mt then argerr(1, fname, "resty.pgstore tx expected, got " .. type(tx)) end
  if not tx.active then raise("attempt to use a finished transaction") end
  return Tx._note(tx, on(db.cfg, tx.id, "lock_guard", tx.id, key, token, opts))
end

-- lock:guard(tx) → true | nil, err ("lease_lost"): the work of tx commits
-- only while this lock's token is current (pgstore's fencing).
function Lock:guard(tx)
  if getmetatable(self) ~= lock_mt then raise("bad argument #1 to 'guard' (resty.pgstore.lock expected)") end
  return guard_in(self.db, tx, self.name, self.tok, self.opts, "guard")
end

-- db:lock_guard(tx, key, token[, { mode, table }]) → true | nil, err
function Db:lock_guard(tx, key, token, opts)
  check(self, "lock_guard")
  check_arg(key, 2, "lock_guard", "string")
  check_arg(token, 3, "lock_guard", "number")
  if opts ~= nil then options.check(opts, GUARD_OPTIONS, 4, "lock_guard") end
  return guard_in(self, tx, key, token, opts, "lock_guard")
end

lock_mt.__tostring = function(self)
  return self.id and format("resty.pgstore.lock (%s)", self.name) or "resty.pgstore.lock (closed)"
end

-- ---- stores and live delivery --------------------------------------------------------

-- db:<kind>(opts) for the stores and live objects; each lives in its module.
local KINDS = {
  events = "resty.pgstore.events", snapshots = "resty.pgstore.stores",
  checkpoints = "resty.pgstore.stores", exec_checkpoints = "resty.pgstore.stores",
  sessions = "resty.pgstore.stores", kv = "resty.pgstore.stores",
  listen = "resty.pgstore.hub", relay = "resty.pgstore.hub",
  feed = "resty.pgstore.feed", subscribe = "resty.pgstore.feed",
  partitions = "resty.pgstore.partitions",
}
for kind, module in pairs(KINDS) do
  Db[kind] = function(self, ...)
    check(self, kind)
    return require(module).new(self, kind, ...)
  end
end

-- Closes this handle (the worker's pools stay: they are shared by key);
-- twice is harmless.
function Db:close()
  if getmetatable(self) ~= mt then argerr(1, "close", "resty.pgstore.db expected; use db:close()") end
  self.closed = true
end

function Db:is_closed()
  return self.closed == true
end

-- The same db on its pool's background slot: for the adapter's own loops
-- (feed reads, KV cleanup, NOTIFY after commit), which so never wait behind
-- callers' transactions for a connection.
function Db:_background()
  local bg = self.background
  if bg then return bg end
  bg = {}
  for k, v in pairs(self) do bg[k] = v end
  bg.cfg = self.cfg.bg
  bg.background = bg
  self.background = setmetatable(bg, mt)
  return bg
end

mt.__tostring = function(self)
  return self.closed and "resty.pgstore.db (closed)" or "resty.pgstore.db"
end

return Db
