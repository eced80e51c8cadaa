-- SPDX-License-Identifier: MIT
-- pgstore.subscribe — catch-up, then live. A subscription reads the event
-- store's global order (read_all, which never skips) from its consumer's
-- stored checkpoint, and between reads sleeps on the store's NOTIFY
-- channel, waking at once when an append commits and at the latest every
-- `poll` seconds. NOTIFY is only a hint: a lost notification or a dropped
-- listener costs at most `poll` seconds, never an event, because every
-- read starts from the cursor.
--
--   local sub = db:subscribe{ name = "mailer", events = es, from = "start" }
--   while true do
--     local batch = assert(sub:next(5))
--     for _, e in ipairs(batch) do … end
--     if #batch > 0 then assert(sub:ack(batch[#batch].position)) end
--   end
--
-- Delivery is at least once across restarts (events after the last ack are
-- delivered again); exactly once for effects written to PostgreSQL with
-- sub:ack(cursor, tx) in the same transaction. A server restart or
-- failover is ridden through: sub:next waits for the server, and an ack
-- lost with the connection is covered by the next one.
local core = require "pgstore.core"
local errors = require "pgstore.errors"
local options = require "pgstore.options"
local events = require "pgstore.events"
local outage = require "pgstore.outage"
local state = require "pgstore.subscription_state"
local checkpoints = require "pgstore.checkpoints"
local Tx = require "pgstore.tx"

-- debug.getmetatable: handles hide their metatables from getmetatable (__metatable)
local type, getmetatable, setmetatable = type, debug.getmetatable, setmetatable
local now, min = core.now, math.min

local _M = {}
local Sub = {}
local mt = { __index = Sub, __name = "pgstore.subscription", __metatable = false }

local OPTIONS = {
  name = "string", events = "table", from = "string|number", types = "table", prefix = "string",
  batch = "number", poll = "number", checkpoints = "table", listen = "boolean|table", migrate = "boolean",
  say = "function", wait_for_server = "boolean",
}

-- db:subscribe{ name, events = es, from = "start" | "end" | cursor, types, prefix,
--               batch = 500, poll = 1.0, checkpoints = cp, listen = true, migrate = true,
--               say = fn(msg) } → sub | nil, err
-- migrate = false: the checkpoint table exists (a role without DDL rights).
-- say: where the outage lines go (lost, back after N s); none by default.
-- wait_for_server = false: a lost connection is sub:next's nil, err
-- (`connection`), for a caller that waits for the server itself (the
-- projection runner: one wait, told once, for all its subscriptions).
-- listen: false polls only; a table is the listener's options (heartbeat,
-- heartbeat_timeout, reconnect_min, reconnect_max: see pgstore.listen).
function _M.new(db, opts)
  options.arg(opts, 1, "subscribe", "table", "options table")
  options.check(opts, OPTIONS, 1, "subscribe")
  options.required(opts, "name", 1, "subscribe")
  options.required(opts, "events", 1, "subscribe")
  local es = opts.events
  if type(es.read_all) ~= "function" then
    options.argerror(1, "subscribe", "option 'events' must be an event store (db:events())")
  end
  local from = opts.from or "start"
  local batch = opts.batch or 500
  local bad = (opts.name == "" and errors.new("invalid", "name (the consumer) must not be empty"))
    or (type(from) == "string" and options.one_of(from, "from", { start = true, ["end"] = true }))
    or (type(from) == "number" and options.int(from, "from (a cursor)", 0, 2 ^ 53))
    or options.int(batch, "batch", 1, 2 ^ 31) or options.seconds(opts.poll, "poll")
  if bad then return nil, bad end

  -- The checkpoint belongs to (es's store, name): `checkpoints` chooses
  -- the table, the event store chooses the store.
  local store = checkpoints.store_name(es, 1, "subscribe")
  local cp, owns_cp, err
  if opts.checkpoints then
    cp, owns_cp = checkpoints.for_store(opts.checkpoints, store)
  else
    cp, owns_cp = db:checkpoints{ store = store, skip_schema_init = opts.migrate == false }, true
  end
  if not cp then return nil, owns_cp end
  local st
  st, err = state.for_consumer(cp, opts.name, es, from)
  if not st then
    if owns_cp then cp:close() end
    return nil, err
  end
  local self = setmetatable({
    db = db, es = es, name = opts.name, cp = cp, owns_cp = owns_cp, state = st,
    types = opts.types, prefix = opts.prefix,
    batch = batch, poll = opts.poll or 1.0, listener = nil, reconnects = 0,
    ride = opts.wait_for_server ~= false and outage.new{ what = "subscription " .. opts.name, say = opts.say },
  }, mt)
  if opts.listen ~= false and es.channel then
    -- Without a listener (none available, or the server refuses LISTEN,
    -- as some Postgres-compatible servers do) the subscription polls.
    local lopts = type(opts.listen) == "table" and opts.listen or nil
    if lopts then
      self.listener = db:listen(es.channel, lopts) -- bad options raise
    else
      local ok, l = pcall(db.listen, db, es.channel)
      if ok and l then self.listener = l end
    end
  end
  return self
end

local function check(self, fname)
  if getmetatable(self) ~= mt then
    error(("bad argument #1 to '%s' (pgstore.subscription expected; use sub:%s())"):format(fname, fname), 3)
  end
  if self.closed then error("attempt to use a closed subscription", 3) end
end

-- Sleeps until a notification, the poll interval, or the deadline.
local function wait(self, seconds)
  if seconds <= 0 then return end
  local l = self.listener
  if not l then
    core.sleep(seconds)
    return
  end
  local note, err = l:wait(seconds)
  if note and note.reconnected then self.reconnects = self.reconnects + 1 end
  if not note and err and err.code ~= "timeout" then
    core.sleep(min(seconds, 0.05)) -- the listener reconnects by itself
  end
end

-- Takes what the listener has queued without waiting: notifications are
-- hints the read below covers anyway, and servicing the listener while the
-- subscription is busy catching up keeps its heartbeat and reconnects going.
local function drain(self)
  local l = self.listener
  if not l then return end
  for _ = 1, 1000 do
    local note = l:wait(0)
    if not note then return end
    if note.reconnected then self.reconnects = self.reconnects + 1 end
  end
end

-- sub:next(timeout) → array of events after the cursor, in read_all order
-- (empty when nothing arrived within timeout seconds) | nil, err. A lost
-- connection is waited out with backoff (pgstore.outage) until the
-- deadline: then the batch is empty, and the next call goes on waiting
-- from the same cursor — nothing is skipped or delivered twice.
function Sub:next(timeout)
  check(self, "next")
  errors.check(timeout, 1, "next", "number|nil")
  local bad = options.seconds(timeout, "timeout")
  if bad then return nil, bad end
  local deadline = now() + (timeout or 0)
  drain(self)
  local read = function()
    return self.es:read_all{ after = self.state.cursor, limit = self.batch, types = self.types,
                             prefix = self.prefix }
  end
  while true do
    local rows, cursor
    if self.ride then
      rows, cursor = self.ride:call(read, { deadline = deadline })
      if not rows and outage.lost(cursor) then return {} end -- the server is still away
    else
      rows, cursor = read()
    end
    if not rows then return nil, cursor end
    self.state:delivered(cursor)
    if #rows > 0 then return rows end
    local left = deadline - now()
    if left <= 0 then return rows end
    wait(self, min(left, self.poll))
  end
end

-- sub:delivered(cursor): a reader shared by several subscriptions (the
-- projection runner reads once for all its partitions) delivered this
-- subscription's events up to cursor; sub:ack may now store it.
function Sub:delivered(cursor)
  check(self, "delivered")
  errors.check(cursor, 1, "delivered", "number")
  if cursor < self.state.cursor then
    error(("bad argument #1 to 'delivered' (cursor %d is behind this subscription's %d)")
      :format(cursor, self.state.cursor), 2)
  end
  self.state:delivered(cursor)
end

-- sub:ack(cursor[, tx]) → true | nil, err: stores the checkpoint, inside tx
-- when given (commit it with your read-model writes for exactly-once). The
-- save is conditional on the checkpoint this subscription last stored, so
-- a second process running the same consumer gets `conflict` (and its
-- transaction rolls back) instead of applying the same events twice. An
-- ack that fails with `connection` or `timeout` may have landed; the next
-- ack finds out (see pgstore.subscription_state).
function Sub:ack(cursor, tx)
  check(self, "ack")
  errors.check(cursor, 1, "ack", "number")
  if tx ~= nil then Tx.conn_of(tx, 2, "ack", "tx") end
  return self.state:ack(cursor, tx)
end

-- After the transaction holding sub:ack(cursor, tx) committed.
function Sub:committed()
  check(self, "committed")
  self.state:committed()
end

-- sub:rolled_back(err) → cursor | nil, err: the transaction holding
-- sub:ack(cursor, tx) failed with err. Rewinds to the stored checkpoint and
-- returns it when the subscription can go on from there (another process
-- moved the checkpoint, or the commit's outcome was unknown); else err.
function Sub:rolled_back(err)
  check(self, "rolled_back")
  return self.state:rolled_back(err)
end

-- sub:lag() → positions between the last acknowledged event and the head
function Sub:lag()
  check(self, "lag")
  local head, err = self.es:latest_position()
  if not head then return nil, err end
  return self.state:lag(head)
end

-- sub:position() → where the next sub:next() continues (delivered, maybe not acked)
function Sub:position()
  check(self, "position")
  return self.state.cursor
end

-- sub:unacked() → true when sub:next() has moved past the stored checkpoint
-- (events delivered, or skipped by types/prefix) and an ack would move it.
function Sub:unacked()
  check(self, "unacked")
  return self.state:unacked()
end

-- Moves the delivery cursor back to the stored checkpoint (e.g. after a
-- failed batch that was not acknowledged).
function Sub:rewind()
  check(self, "rewind")
  return self.state:rewind()
end

function Sub:fd()
  check(self, "fd")
  return self.listener and self.listener:fd() or nil
end

function Sub:close()
  if self.closed then return end
  self.closed = true
  if self.listener then self.listener:close() end
  if self.owns_cp and self.cp.close then self.cp:close() end
end

mt.__tostring = function(self)
  return ("pgstore.subscription (%s%s)"):format(self.name, self.closed and ", closed" or "")
end

return _M
