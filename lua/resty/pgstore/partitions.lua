-- SPDX-License-Identifier: MIT
-- resty.pgstore.partitions — pgstore's partition leases in nginx: each
-- worker process is one competing member (owner "hostname:pid"), and a
-- timer loop of the worker renews its leases every `renew` seconds in a
-- worker thread. The lease handle is parked in pgstore.core's registry
-- between calls. pm:owned(), pm:token(p) and pm:owns(p) answer from what
-- the last tick reported (no I/O), and count nothing as held once the
-- last successful tick is older than the lease; pm:changes() hands out
-- what the renewals changed. pm:guard(tx, p) runs inside a
-- resty.pgstore transaction. When the worker exits, its leases are
-- released so others take over at their next tick.
local call_mod = require "resty.pgstore.call"
local timers = require "resty.pgstore.timers"
local core = require "pgstore.core"
local errors = require "pgstore.errors"
local options = require "pgstore.options"
local timing = require("pgstore.partitions").timing

local ngx = ngx
local log, WARN, INFO = ngx.log, ngx.WARN, ngx.INFO
-- debug.getmetatable: handles hide their metatables from getmetatable (__metatable)
local type, pairs, ipairs, tostring, setmetatable, getmetatable, pcall =
      type, pairs, ipairs, tostring, setmetatable, debug.getmetatable, pcall
local format = string.format
local call, raise, argerr, check_arg = call_mod.call, call_mod.raise, call_mod.arg, call_mod.check

local _M = {}
local Partitions = {}
local mt = { __index = Partitions, __name = "resty.pgstore.partitions", __metatable = false }

local OPTIONS = {
  name = "string", count = "number", lease = "number", renew = "number",
  owner = "string", table = "string", skip_schema_init = "boolean",
}

local function check(self, fname)
  if getmetatable(self) ~= mt then
    raise(format("bad argument #1 to '%s' (resty.pgstore.partitions expected; use pm:%s())", fname, fname))
  end
  if not self.id then raise("attempt to use a closed partition set") end
end

-- A partition number: not a number raises, out of range is an invalid error.
local function check_partition(self, p, n, fname)
  check_arg(p, n, fname, "number")
  return options.int(p, "partition", 0, self.count - 1)
end

local function merge(self, changes)
  local acc = self.pending
  for _, kind in ipairs{ "acquired", "released", "lost" } do
    for _, p in ipairs(changes[kind] or {}) do acc[kind][#acc[kind] + 1] = p end
  end
  for p, from in pairs(changes.taken or {}) do acc.taken[p] = from end
end

-- One line per change a renewal made, as the host logs them.
local function tell(self, changes)
  local function list(kind)
    local ps = changes[kind]
    return ps and #ps > 0 and table.concat(ps, ",")
  end
  local acquired, lost = list("acquired"), list("lost")
  if acquired then log(INFO, "resty.pgstore: partitions ", self.name, ": acquired ", acquired) end
  for p, from in pairs(changes.taken or {}) do
    log(INFO, "resty.pgstore: partitions ", self.name, ": took ", p, " over from ", from)
  end
  if lost then log(WARN, "resty.pgstore: partitions ", self.name, ": lost ", lost) end
end

-- One claim/renew round in a thread. → changes | nil, err
local function tick(self)
  local before = self.info_cache and self.info_cache.failures or 0
  local changes, state = call(self.db.cfg.bg, "lease_call", self.id, "tick")
  if not changes then return nil, state end
  merge(self, changes)
  tell(self, changes)
  self.owned_tokens = state.owned or {}
  self.info_cache = state.info
  if (state.info and state.info.failures or 0) == before then self.last_ok = core.now() end
  return changes
end

-- db:partitions{ name, count = 8, lease = 10, renew = lease / 3, owner, table } → pm | nil, err
-- (the timing rules are pgstore's: pgstore.partitions.timing)
-- Opens (migrating the table) in a thread and starts the worker's renewal
-- loop, whose first round runs at once.
function _M.new(db, _, opts)
  check_arg(opts, 1, "partitions", "table")
  if opts.background ~= nil then
    argerr(1, "partitions", "option 'background' is not used in resty.pgstore: a timer of the worker renews")
  end
  options.check(opts, OPTIONS, 1, "partitions")
  options.required(opts, "name", 1, "partitions")
  local count, lease, renew = timing(opts)
  if not count then return nil, lease end
  local id, state = call(db.cfg, "lease_open", db.spec, {
    name = opts.name, count = count, lease = lease, renew = renew, owner = opts.owner, table = opts.table,
    skip_schema_init = opts.skip_schema_init,
  })
  if not id then return nil, state end
  local self = setmetatable({
    db = db, id = id, name = state.info.name, owner = state.info.owner, table = state.info.table,
    instance = state.info.instance,
    count = count, lease = lease, renew = renew, owned_tokens = {}, info_cache = state.info,
    pending = { acquired = {}, released = {}, lost = {}, taken = {} }, last_ok = 0,
  }, mt)
  self.loop_name = "partitions:" .. db.key .. ":" .. self.name .. ":" .. id
  timers.every(self.loop_name, renew, function()
    if not self.id then return end
    local ok, err = tick(self)
    if not ok then log(WARN, "resty.pgstore: lease renewal of ", self.name, ": ", tostring(err)) end
  end, {
    stop = function()
      -- The worker is exiting (or pm:close ran): give the partitions up.
      if self.id then
        local id = self.id
        self.id = nil
        pcall(call, db.cfg.bg, "lease_call", id, "close")
      end
    end,
  })
  return self
end

-- pm:tick() → { acquired, released, lost } | nil, err — a round now.
function Partitions:tick()
  check(self, "tick")
  return tick(self)
end

-- pm:changes() → { acquired = {p…}, released = {p…}, lost = {p…} } since the last call.
function Partitions:changes()
  check(self, "changes")
  local out = self.pending
  self.pending = { acquired = {}, released = {}, lost = {}, taken = {} }
  return out
end

local function fresh(self)
  return core.now() - self.last_ok < self.lease
end

-- pm:owned() → { [p] = token }
function Partitions:owned()
  check(self, "owned")
  if not fresh(self) then return {} end
  local out = {}
  for p, t in pairs(self.owned_tokens) do out[p] = t end
  return out
end

function Partitions:token(p)
  check(self, "token")
  local bad = check_partition(self, p, 1, "token")
  if bad then return nil, bad end
  if not fresh(self) then return nil end
  return self.owned_tokens[p]
end

function Partitions:owns(p)
  check(self, "owns")
  local bad = check_partition(self, p, 1, "owns")
  if bad then return nil, bad end
  return fresh(self) and self.owned_tokens[p] ~= nil
end

function Partitions:partition_for(stream)
  check(self, "partition_for")
  check_arg(stream, 1, "partition_for", "string")
  return core.partition_for(stream, self.count)
end

-- pm:guard(tx, p[, token]) → true | nil, err ("lease_lost"), inside a
-- resty.pgstore transaction.
function Partitions:guard(tx, p, token)
  check(self, "guard")
  if type(tx) ~= "table" or getmetatable(tx) ~= self.db.tx_mt then
    argerr(1, "guard", "resty.pgstore tx expected, got " .. type(tx))
  end
  if not tx.active then raise("attempt to use a finished transaction") end
  check_arg(token, 3, "guard", "number|nil")
  local bad = check_partition(self, p, 2, "guard") or options.int(token, "token", 1, 2 ^ 53)
  if bad then return nil, bad end
  local ok, err = call_mod.on(self.db.cfg, tx.id, "lease_guard", self.id, tx.id, p, token)
  if not ok then tx._note(tx, ok, err) end
  return ok, err
end

-- pm:release() → changes | nil, err: gives up every partition now.
function Partitions:release()
  check(self, "release")
  local changes, state = call(self.db.cfg, "lease_call", self.id, "release")
  if not changes then return nil, state end
  merge(self, changes)
  self.owned_tokens = state.owned or {}
  return changes
end

function Partitions:info()
  check(self, "info")
  local i = {}
  for k, v in pairs(self.info_cache or {}) do i[k] = v end
  return i
end

-- pm:close(): stops renewing and releases everything (in a thread); twice is harmless.
function Partitions:close()
  if not self.id then return end
  local id = self.id
  self.id = nil
  timers.stop(self.loop_name)
  return call(self.db.cfg, "lease_call", id, "close")
end

mt.__tostring = function(self)
  return self.id and format("resty.pgstore.partitions (%s as %s)", self.name, self.owner)
    or "resty.pgstore.partitions (closed)"
end

return _M
