-- SPDX-License-Identifier: MIT
-- resty.pgstore.stores — the companion stores (snapshots, checkpoints,
-- exec_checkpoints, sessions, kv) of resty.pgstore: each method is the
-- pgstore store's method, run in a worker thread on a store that thread VM
-- opened once (opening runs the schema migration unless skip_schema_init).
-- `{ tx = tx }` takes a resty.pgstore transaction. Values cross into the
-- thread as plain data: kv values are strings, JSON documents are tables.
--
-- Differences from pgstore: nothing is opened until the first call (so the
-- constructors do no I/O and may run in init_worker_by_lua); kv's
-- phase_hook (a function) cannot cross into a thread and is refused; kv's
-- background cleanup is not a C thread per store but a timer loop per
-- worker — with the db's shared_dict, in one worker of the nginx at a time.
local call_mod = require "resty.pgstore.call"
local options = require "pgstore.options"
local timers = require "resty.pgstore.timers"

-- debug.getmetatable: handles hide their metatables from getmetatable (__metatable)
local type, pairs, tostring, setmetatable, getmetatable, select, unpack =
      type, pairs, tostring, setmetatable, debug.getmetatable, select, unpack
local sort, concat, maxn = table.sort, table.concat, table.maxn
local format = string.format
local call, raise, argerr = call_mod.call, call_mod.raise, call_mod.arg

local _M = {}

-- Options per kind (as the pgstore modules take them).
local OPTIONS = {
  snapshots = { table = "string", skip_schema_init = "boolean", max_value_size = "number" },
  checkpoints = { table = "string", skip_schema_init = "boolean", store = "string|table" },
  exec_checkpoints = { table = "string", skip_schema_init = "boolean", max_value_size = "number" },
  sessions = { table = "string", skip_schema_init = "boolean", max_value_size = "number" },
  kv = { table = "string", skip_schema_init = "boolean", cleanup_interval = "number",
         lock_timeout = "number", max_value_size = "number" },
}

-- Methods per kind: the position of the trailing options table (where
-- { tx = tx } goes), 0 when it takes none.
local METHODS = {
  snapshots = { migrate = 0, save = 4, load = 2, invalidate = 2, invalidate_all = 1 },
  checkpoints = { migrate = 0, load = 2, save = 3, delete = 2, list = 1 },
  exec_checkpoints = { migrate = 0, save = 3, load = 2, list = 1, delete = 2 },
  sessions = { migrate = 0, load = 2, save = 3, delete = 2 },
  kv = { migrate = 0, set = 4, get = 2, delete = 2, delete_prefix = 2, cleanup = 1 },
}

local DEFAULT_CLEANUP_INTERVAL = 300

-- A stable text for a plain options table (the thread VMs' cache key).
local function serialize(opts)
  local parts = {}
  for k, v in pairs(opts) do parts[#parts + 1] = tostring(k) .. "=" .. tostring(v) end
  sort(parts)
  return concat(parts, ",")
end
_M.serialize = serialize

-- → a copy of opts (checked by pgstore.options); phase_hook gets a message
-- of its own.
local function check_options(opts, spec, fname)
  if type(opts) == "table" and opts.phase_hook ~= nil and not spec.phase_hook then
    argerr(1, fname, "option 'phase_hook' is not available in resty.pgstore (a function "
      .. "cannot run in a worker thread's VM): migrate with pgstore from a script instead")
  end
  local out = {}
  for k, v in pairs(options.check(opts, spec, 1, fname)) do out[k] = v end
  return out
end
_M.check_options = check_options

-- The transaction's parked id, for an options table { tx = tx, … }; the
-- table sent on is a copy without tx.
local function split_tx(db, opts, n, fname)
  if type(opts) ~= "table" or opts.tx == nil then return opts, nil end
  local tx = opts.tx
  if getmetatable(tx) ~= db.tx_mt then
    argerr(n, fname, "option 'tx' must be the transaction given by db:transaction, got " .. type(tx))
  end
  if not tx.active then raise("attempt to use a finished transaction") end
  local copy = {}
  for k, v in pairs(opts) do
    if k ~= "tx" then copy[k] = v end
  end
  return copy, tx
end
_M.split_tx = split_tx

-- Shared by every kind.
local Store = {}

-- store:close(): closes this handle (the thread VMs keep their store open
-- for other handles of the worker) and stops its KV cleanup; twice is
-- harmless.
function Store:close()
  self.closed = true
  if self.cleanup_name then timers.stop(self.cleanup_name) end
end

-- kv:cleaner_stats() → { interval, runs, removed, failures, last_error? }
-- for this worker's cleanup loop.
function Store:cleaner_stats()
  local c = self.cleaner
  if not c then return { interval = 0, runs = 0, removed = 0, failures = 0 } end
  return { interval = c.interval, runs = c.runs, removed = c.removed, failures = c.failures,
           last_error = c.last_error }
end

-- The method `name` of `kind`, whose options table is argument number pos.
local function method(kind, name, pos, mt)
  return function(self, ...)
    if getmetatable(self) ~= mt then
      argerr(1, name, format("resty.pgstore.%s expected; use store:%s()", kind, name))
    end
    if self.closed or self.db.closed then raise("attempt to use a closed connection") end
    local n = select("#", ...)
    local args = { ... }
    local tx
    if pos > 0 and n >= pos then
      args[pos], tx = split_tx(self.db, args[pos], pos, name)
    end
    local db = self.db
    local res
    if tx then
      res = { call_mod.on(db.cfg, tx.id, "store", db.spec, kind, self.skey, self.sopts, name,
                          tx.id, pos, n, unpack(args, 1, n)) }
    else
      res = { call(db.cfg, "store", db.spec, kind, self.skey, self.sopts, name, nil, pos, n,
                   unpack(args, 1, n)) }
    end
    if tx and res[1] == nil then tx._note(tx, res[1], res[2]) end
    return unpack(res, 1, maxn(res))
  end
end

local MTS = {} -- kind → metatable
for kind, methods in pairs(METHODS) do
  local index = setmetatable({}, { __index = Store })
  local mt = { __index = index, __name = "resty.pgstore." .. kind, __metatable = false }
  for name, pos in pairs(methods) do index[name] = method(kind, name, pos, mt) end
  mt.__tostring = function(self)
    return format("resty.pgstore.%s%s", kind, self.closed and " (closed)" or "")
  end
  MTS[kind] = mt
end

-- db:<kind>(opts) → store (no I/O until the first call)
function _M.new(db, kind, opts)
  local spec = OPTIONS[kind]
  opts = check_options(opts, spec, kind)
  local bad = options.int(opts.max_value_size, "max_value_size", 1, 1073741824)
    or options.seconds(opts.cleanup_interval, "cleanup_interval")
  if bad then return nil, bad end
  if kind == "checkpoints" and type(opts.store) == "table" then
    -- an event store: its table's name crosses into the thread, which
    -- resolves it as the event store does
    if type(opts.store.table_name) ~= "string" then
      argerr(1, kind, "option 'store' must be an event table's name or an event store (db:events())")
    end
    opts.store = opts.store.table_name
  end
  local self = setmetatable({ db = db, kind = kind }, MTS[kind])
  if kind == "kv" then
    local interval = opts.cleanup_interval
    if interval == nil then interval = DEFAULT_CLEANUP_INTERVAL end
    opts.cleanup_interval = 0 -- no C cleaner thread per thread VM: see below
    self.sopts = opts
    self.skey = "kv:" .. serialize(opts)
    if interval > 0 then _M.start_cleanup(self, interval) end
  else
    self.sopts = opts
    self.skey = kind .. ":" .. serialize(opts)
  end
  return self
end

-- KV cleanup on a timer: every `interval` seconds in each worker, or — with
-- the db's shared_dict — in one worker of the whole nginx.
function _M.start_cleanup(kv, interval)
  local db = kv.db
  local name = "kv-cleanup:" .. db.key .. ":" .. (kv.sopts.table or "pgstore_kv")
  local c = { interval = interval, runs = 0, removed = 0, failures = 0 }
  kv.cleaner, kv.cleanup_name = c, name
  timers.every(name, interval, function()
    c.elected = true
    local n, err = call(db.cfg.bg, "store", db.spec, "kv", kv.skey, kv.sopts, "cleanup", nil, 0, 0)
    c.runs = c.runs + 1
    if n then
      c.removed = c.removed + n
    else
      c.failures = c.failures + 1
      c.last_error = tostring(err)
    end
  end, { dict = db.shared_dict })
end

return _M
