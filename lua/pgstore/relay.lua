-- SPDX-License-Identifier: MIT
-- pgstore.relay — fans changes out across servers (processes) through one
-- NOTIFY channel:
--
--   local relay = assert(db:relay("cache-invalidation"))
--   relay:broadcast{ kind = "product", id = 42 }  -- true | nil, err
--   local change, origin = relay:next(1.0)        -- origin: "local" or the sender's backend pid
--
-- broadcast encodes the change as JSON (at most 7999 bytes, else "invalid"
-- and nothing is sent), delivers it to this relay's own next() at once, and
-- sends a NOTIFY on the relay's connection, waiting at most `timeout`
-- seconds (default 2) for the server. When the database is unreachable the
-- broadcast is dropped and reported — nil, err ("connection" or "timeout")
-- and stats().dropped — never queued. Received changes wait in a queue of
-- at most `max_queue` (default 1000); beyond that the oldest are dropped
-- and counted in stats().overflow.
--
-- next(timeout) → change, origin | nil, err. err.code is "timeout" when
-- nothing came; after the relay's connection was re-established it is
-- "connection" with err.reconnected = true, once: changes other servers
-- sent meanwhile are lost, so re-read whatever the relay keeps fresh.
-- A change is a table (JSON object or array); a NOTIFY on the channel that
-- is anything else is skipped (counted in stats().invalid).
local core = require "pgstore.core"
local cjson = require "cjson"
local errors = require "pgstore.errors"
local options = require "pgstore.options"
local listen = require "pgstore.listen"

-- debug.getmetatable: handles hide their metatables from getmetatable (__metatable)
local type, pcall, setmetatable, getmetatable = type, pcall, setmetatable, debug.getmetatable
local pairs, error, tostring = pairs, error, tostring
local now = core.now
local format = string.format

local _M = { _VERSION = core._VERSION, PAYLOAD_MAX = core.limits.notify_payload }
local Relay = {}
local mt = { __index = Relay, __name = "pgstore.relay", __metatable = false }

local OPTIONS = { timeout = "number", max_queue = "number" }
for k, v in pairs(listen.OPTIONS) do
  if k ~= "ignore_self" and k ~= "max_queue" then OPTIONS[k] = v end
end

local RECONNECTED = {} -- queue entry standing for a reconnect

-- db:relay(channel[, opts]) → relay | nil, err
function _M.new(db, channel, opts)
  options.arg(channel, 1, "relay", "string")
  local bad
  opts, bad = listen.check_options(opts, OPTIONS, 2, "relay")
  if not opts then return nil, bad end
  local lopts = {}
  for k, v in pairs(opts) do
    if listen.OPTIONS[k] then lopts[k] = v end
  end
  local max_queue = opts.max_queue or 1000
  lopts.max_queue = max_queue
  lopts.ignore_self = true -- our own broadcasts are delivered locally
  local l, err = core.listener(listen.connection_options(db, lopts), { channel })
  if not l then return nil, err end
  return setmetatable({
    l = l, db = db, channel = channel, timeout = opts.timeout or 2, max_queue = max_queue,
    queue = {}, head = 1, tail = 0,
    counts = { sent = 0, received = 0, dropped = 0, overflow = 0, invalid = 0 },
  }, mt)
end

local function check(self, fname)
  if getmetatable(self) ~= mt then
    options.argerror(1, fname, format("pgstore.relay expected; use relay:%s()", fname))
  end
  if not self.l then options.raise("attempt to use a closed relay") end
end

local function push(self, entry)
  if self.tail - self.head + 1 >= self.max_queue then
    self.queue[self.head] = nil
    self.head = self.head + 1
    self.counts.overflow = self.counts.overflow + 1
  end
  self.tail = self.tail + 1
  self.queue[self.tail] = entry
end

local function accept(self, n)
  if n.channel == "*" then
    if n.reconnected then push(self, RECONNECTED) end
    return -- an overflow marker: the listener counted the loss
  end
  local ok, change = pcall(cjson.decode, n.payload)
  if not ok or type(change) ~= "table" then
    self.counts.invalid = self.counts.invalid + 1
    return
  end
  self.counts.received = self.counts.received + 1
  push(self, { change = change, origin = n.pid })
end

-- relay:broadcast(change) → true | nil, err
function Relay:broadcast(change)
  check(self, "broadcast")
  options.arg(change, 1, "broadcast", "table")
  local ok, json = pcall(cjson.encode, change)
  if not ok then
    self.counts.dropped = self.counts.dropped + 1
    return errors.fail("invalid", "the change cannot be encoded as JSON: " .. tostring(json))
  end
  if #json > _M.PAYLOAD_MAX then
    self.counts.dropped = self.counts.dropped + 1
    return errors.fail("invalid", format(
      "the change is %d bytes as JSON, over the NOTIFY limit of %d bytes", #json, _M.PAYLOAD_MAX))
  end
  -- Locally the same shape other servers will see: decoded from the JSON.
  push(self, { change = cjson.decode(json), origin = "local" })
  local sent, err = self.l:notify(self.channel, json, self.timeout)
  if not sent then
    self.counts.dropped = self.counts.dropped + 1
    return nil, err
  end
  self.counts.sent = self.counts.sent + 1
  return true
end

-- relay:next([timeout]) → change, origin | nil, err
function Relay:next(timeout)
  check(self, "next")
  options.arg(timeout, 1, "next", "number|nil")
  local bad = options.seconds(timeout, "timeout")
  if bad then return nil, bad end
  local deadline = timeout and now() + timeout
  while true do
    -- Take in whatever has arrived, so remote changes queue up in order
    -- with local ones.
    while true do
      local n = self.l:wait(0)
      if not n then break end
      accept(self, n)
    end
    if self.head <= self.tail then
      local e = self.queue[self.head]
      self.queue[self.head] = nil
      self.head = self.head + 1
      if e == RECONNECTED then
        return errors.fail("connection",
          "the relay reconnected: changes sent meanwhile by other servers are lost",
          { reconnected = true })
      end
      return e.change, e.origin
    end
    local left = deadline and deadline - now()
    if left and left <= 0 then
      return errors.fail("timeout", "no change arrived in time")
    end
    local n, err = self.l:wait(left)
    if not n then return nil, err end
    accept(self, n)
  end
end

-- relay:stats() → { sent, received, dropped, overflow, invalid, queued,
-- connected, reconnects }
function Relay:stats()
  check(self, "stats")
  local s = self.l:stats()
  local c = self.counts
  return {
    sent = c.sent, received = c.received, dropped = c.dropped, invalid = c.invalid,
    overflow = c.overflow + s.dropped, queued = self.tail - self.head + 1,
    connected = s.connected, reconnects = s.reconnects,
  }
end

-- For event loops, as pgstore.listen: the socket to watch (nil while
-- reconnecting), and the seconds until next(0) must run anyway (0 while
-- changes are queued).
function Relay:fd()
  check(self, "fd")
  return self.l:fd()
end

function Relay:due()
  check(self, "due")
  return self.head <= self.tail and 0 or self.l:due()
end

-- Closes the relay's connection (and the db when it owns it, see
-- pgstore.open_relay); twice is harmless.
function Relay:close()
  if self.l then self.l:close() end
  self.l = nil
  if self.owns_db and self.db then self.db:close() end
  self.db = nil
end

mt.__tostring = function(self)
  return self.l and ("pgstore.relay (%s)"):format(self.channel) or "pgstore.relay (closed)"
end

return _M
