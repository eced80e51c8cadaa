-- SPDX-License-Identifier: MIT
-- pgstore.partitions — N partitions of a named set, shared by competing
-- workers through leases with fencing tokens:
--
--   local pm = assert(db:partitions{ name = "projector" })  -- 8 partitions, 10 s lease, renew every 3.3 s
--   every pm.renew seconds:  local changes = pm:tick()      -- { acquired = {…}, released = {…}, lost = {…}, taken = {…} }
--   for p, token in pairs(pm:owned()) do … end              -- partitions are 0 .. count-1
--   db:transaction(function(tx)
--     … work for partition p …
--     return pm:guard(tx, p)   -- fails the transaction with "lease_lost" if p moved on
--   end)
--
-- Options: name (required), count = 8, lease = 10 (or 3 × renew when
-- that is longer), renew = lease / 3 (seconds, renew < lease), owner = "hostname:pid" (a readable name; every
-- handle is also an instance with a random id, pm.instance, so two
-- processes given one owner are two workers), table =
-- "pgstore_leases", background = false (a C thread ticks every `renew`
-- seconds; collect its changes with pm:changes()), skip_schema_init = false
-- (true: create nothing; missing tables are a "not_found" error). All
-- workers of a set must use the same count. Nothing is held until the
-- first tick.
--
-- Balancing: with W live workers each ends up with ⌊P/W⌋ or ⌈P/W⌉
-- partitions (the first P mod W workers by (owner, instance), in byte
-- order, take one more). A worker that stops ticking loses its partitions
-- when its lease expires; the others take them over at their next tick
-- (changes.taken[p] = the owner it was taken from). pm:close() releases
-- everything at once.
--
-- Why a 10 s lease: a crashed worker's partitions stand idle for up to one
-- lease plus one renew interval, so the lease is what a crash costs; it
-- must still outlast what a healthy worker can meet between two ticks (a
-- slow statement, a GC pause, a short server restart). 10 s with a tick
-- every 3.3 s leaves two retries before expiry and caps the idle time of a
-- crash at ~13 s (30 s before). A clean exit (pm:close) hands over at once.
--
-- Fencing: every change of owner increases the partition's token.
-- pm:guard(tx, p[, token]) fails with "lease_lost" — and aborts the
-- transaction — unless this instance still holds p with that token
-- (default: the one held now); it locks the lease row until the transaction
-- ends, so no takeover commits first. From the guard on, a statement or an
-- idle pause longer than the lease ends the session (so a holder frozen
-- after its guard cannot keep the partition). Call it last, just before commit, under read
-- committed; first under repeatable read / serializable. Pass the token your
-- work started under when the work spans ticks.
--
-- pm:partition_for(stream) = jump_consistent_hash(fnv1a64(stream), count):
-- FNV-1a 64 over the stream's bytes (offset basis 14695981039346656037,
-- prime 1099511628211), then Lamping & Veach's jump consistent hash
-- (arXiv:1406.2294) — the same in every process, host and release; growing
-- count from n to n+1 moves only 1/(n+1) of the streams.
local core = require "pgstore.core"
local errors = require "pgstore.errors"
local options = require "pgstore.options"
local listen = require "pgstore.listen"

-- debug.getmetatable: handles hide their metatables from getmetatable (__metatable)
local type, error, setmetatable, getmetatable = type, error, setmetatable, debug.getmetatable
local pairs, tostring = pairs, tostring
local format = string.format

local _M = { _VERSION = core._VERSION }
local Partitions = {}
local mt = { __index = Partitions, __name = "pgstore.partitions", __metatable = false }

local OPTIONS = {
  name = "string", count = "number", lease = "number", renew = "number",
  owner = "string", table = "string", background = "boolean", skip_schema_init = "boolean",
}

-- The count and timing a partition set's options ask for (also
-- resty.pgstore's): → count, lease, renew | nil, err. The defaults follow
-- what was given: a lease 3 renews long.
function _M.timing(opts)
  local count = opts.count or 8
  local lease = opts.lease or (type(opts.renew) == "number" and math.max(10, 3 * opts.renew)) or 10
  local renew = opts.renew or lease / 3
  local bad = (opts.name == "" and errors.new("invalid", "name must not be empty"))
    or options.int(count, "count", 1, 65536)
    -- a given renew first: the default lease derives from it
    or (opts.renew ~= nil and options.seconds(renew, "renew", true))
    or options.seconds(lease, "lease", true) or options.seconds(renew, "renew", true)
    or (renew >= lease and errors.new("invalid",
          format("renew (%g s) must be shorter than lease (%g s)", renew, lease)))
    or errors.nul(opts, "name", "owner", "table")
  if bad then return nil, bad end
  return count, lease, renew
end

-- db:partitions(opts) → pm | nil, err
function _M.new(db, opts)
  options.arg(opts, 1, "partitions", "table", "options table")
  options.check(opts, OPTIONS, 1, "partitions")
  options.required(opts, "name", 1, "partitions")
  local count, lease, renew = _M.timing(opts)
  if not count then return nil, lease end
  local lease_handle, err = core.lease(db.pool, {
    name = opts.name, count = count, lease = lease, renew = renew,
    owner = opts.owner, table = opts.table, skip_schema_init = opts.skip_schema_init,
  })
  if not lease_handle then return nil, err end
  if opts.background then
    local ok
    ok, err = lease_handle:start()
    if not ok then
      lease_handle:close()
      return nil, err
    end
  end
  local info = lease_handle:info()
  return setmetatable({
    core = lease_handle, db = db, name = info.name, owner = info.owner, instance = info.instance,
    table = info.table,
    count = count, lease = lease, renew = renew,
  }, mt)
end

local function check(self, fname)
  if getmetatable(self) ~= mt then
    options.argerror(1, fname, format("pgstore.partitions expected; use pm:%s()", fname))
  end
  if not self.core then options.raise("attempt to use a closed partition set") end
end

-- A partition number: not a number raises, out of range is an invalid error.
local function check_partition(self, p, n, fname)
  options.arg(p, n, fname, "number", "partition (number)")
  return options.int(p, "partition", 0, self.count - 1)
end

-- pm:tick() → { acquired = {p…}, released = {p…}, lost = {p…}, taken = { [p] = owner } } | nil, err
function Partitions:tick()
  check(self, "tick")
  return self.core:tick()
end

-- Changes made by the background renewer since they were last collected.
function Partitions:changes()
  check(self, "changes")
  return self.core:changes()
end

-- pm:owned() → { [partition] = token }
function Partitions:owned()
  check(self, "owned")
  return self.core:owned()
end

function Partitions:owns(p)
  check(self, "owns")
  local bad = check_partition(self, p, 1, "owns")
  if bad then return nil, bad end
  return self.core:token(p) ~= nil
end

-- pm:token(p) → the fencing token held for p | nil
function Partitions:token(p)
  check(self, "token")
  local bad = check_partition(self, p, 1, "token")
  if bad then return nil, bad end
  return self.core:token(p)
end

function Partitions:partition_for(stream)
  check(self, "partition_for")
  options.arg(stream, 1, "partition_for", "string")
  return core.partition_for(stream, self.count)
end

-- pm:guard(tx, p[, token]) → true | nil, err (code "lease_lost")
function Partitions:guard(tx, p, token)
  check(self, "guard")
  if type(tx) ~= "table" or not tx.conn then
    options.argerror(1, "guard", format("pgstore.tx expected, got %s", type(tx)))
  end
  if not tx.active then options.raise("attempt to use a finished transaction") end
  options.arg(token, 3, "guard", "number|nil")
  local bad = check_partition(self, p, 2, "guard") or options.int(token, "token", 1, 2 ^ 53)
  if bad then return nil, bad end
  local ok, err = self.core:guard(tx.conn, p, token)
  if not ok and (err.sqlstate == "40001" or err.sqlstate == "40P01") then
    tx.retryable = err -- db:transaction re-runs the function
  end
  return ok, err
end

-- Gives up every partition now (others take over at their next tick); the
-- next tick claims again. → changes | nil, err
function Partitions:release()
  check(self, "release")
  return self.core:release()
end

-- { name, owner, instance, table, count, lease, renew, ticks, failures, background, last_error }
function Partitions:info()
  check(self, "info")
  return self.core:info()
end

-- Stops the renewer and releases everything (and closes the db when it
-- owns it, see pgstore.open_partitions); twice is harmless.
function Partitions:close()
  if self.core then self.core:close() end
  self.core = nil
  if self.owns_db and self.db then self.db:close() end
  self.db = nil
end

mt.__tostring = function(self)
  return self.core and format("pgstore.partitions (%s as %s, instance %s)", self.name, self.owner, self.instance)
    or "pgstore.partitions (closed)"
end

-- partitions.partition_for(key, count): the same function without a set.
function _M.partition_for(key, count)
  options.arg(key, 1, "partition_for", "string")
  options.arg(count, 2, "partition_for", "number")
  return core.partition_for(key, count)
end

return _M
