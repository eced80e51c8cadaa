-- SPDX-License-Identifier: MIT
-- pgstore.relay — fans changes out across servers (processes) through one
-- NOTIFY channel:
--
--   local relay = assert(db:relay("cache-invalidation"))
--   relay:broadcast{ kind = "product", id = 42 }  -- true | nil, err
--   local change, origin = relay:next(1.0)        -- origin: "local" or the sender's backend pid
--
-- broadcast encodes the change as JSON, delivers it to this relay's own
-- next() at once, and sends a NOTIFY on the relay's connection, waiting at
-- most `timeout` seconds (default 2) for the server. A change of up to 7999
-- bytes travels in the NOTIFY itself. A larger one, up to `max_change`
-- bytes (default 1 MiB, else "invalid" and nothing is sent), is first
-- written to the relay table (`table`, default "pgstore_relay", migrated
-- on first use through the db's pool) and the NOTIFY carries "@<id>";
-- receivers read the row back. Rows are kept `keep` seconds (default 60):
-- each large broadcast deletes older ones, so a receiver that reads a large
-- change more than `keep` seconds after it was sent finds it gone and
-- reports the loss. When the database is unreachable the broadcast is
-- dropped and reported — nil, err ("connection" or "timeout") and
-- stats().dropped — never queued. Received changes wait in a queue of at
-- most `max_queue` (default 1000); beyond that the oldest are dropped and
-- counted in stats().overflow.
--
-- next(timeout) → change, origin | nil, err. err.code is "timeout" when
-- nothing came. A loss is never silent, and is reported once, in order
-- (before the changes that came after it):
--   * after the relay's connection was re-established, "connection" with
--     err.reconnected = true: changes other servers sent meanwhile are lost;
--   * after changes were dropped — the queue overflowed (here or in the
--     listener), or a large change could not be read back — "lost" with
--     err.lost = the number dropped (nil when unknown) and err.reason
--     ("overflow" or "unreadable").
-- Either way, re-read whatever the relay keeps fresh.
-- A change is a table (JSON object or array); a NOTIFY on the channel that
-- is anything else is skipped (counted in stats().invalid).
local core = require "pgstore.core"
local cjson = require "cjson"
local errors = require "pgstore.errors"
local options = require "pgstore.options"
local listen = require "pgstore.listen"
local relay_queue = require "pgstore.relay_queue"
local relay_table = require "pgstore.relay_table"

-- debug.getmetatable: handles hide their metatables from getmetatable (__metatable)
local setmetatable, getmetatable = setmetatable, debug.getmetatable
local pairs, tostring = pairs, tostring
local now = core.now
local format = string.format

local _M = { _VERSION = core._VERSION, PAYLOAD_MAX = core.limits.notify_payload }
local Relay = {}
local mt = { __index = Relay, __name = "pgstore.relay", __metatable = false }

-- max_change is a byte count: "number|nil" keeps listen.check_options from
-- reading it as seconds.
local OPTIONS = { timeout = "number", max_queue = "number", table = "string", max_change = "number|nil",
  keep = "number" }
for k, v in pairs(listen.OPTIONS) do
  if k ~= "ignore_self" and k ~= "max_queue" then OPTIONS[k] = v end
end

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
  bad = relay_table.check_options(opts)
  if bad then return nil, bad end
  local max_queue = opts.max_queue or 1000
  lopts.max_queue = max_queue
  lopts.ignore_self = true -- our own broadcasts are delivered locally
  local copts, err = listen.connection_options(db, lopts)
  if not copts then return nil, err end
  local l
  l, err = core.listener(copts, { channel })
  if not l then return nil, err end
  return setmetatable({
    l = l, db = db, channel = channel, timeout = opts.timeout or 2, q = relay_queue.new(max_queue),
    table = opts.table, max_change = opts.max_change or relay_table.MAX_CHANGE, keep = opts.keep or relay_table.KEEP,
    counts = { sent = 0, received = 0, dropped = 0, invalid = 0 },
    fetch = function(id, ch) return relay_table.fetch(db, opts.table, id, ch) end,
  }, mt)
end

local function check(self, fname)
  if getmetatable(self) ~= mt then
    options.argerror(1, fname, format("pgstore.relay expected; use relay:%s()", fname))
  end
  if not self.l then options.raise("attempt to use a closed relay") end
end

-- relay:broadcast(change) → true | nil, err
function Relay:broadcast(change)
  check(self, "broadcast")
  options.arg(change, 1, "broadcast", "table")
  local json, bad = relay_table.encode(change, self.max_change, self.channel)
  if not json then
    self.counts.dropped = self.counts.dropped + 1
    return nil, bad
  end
  local payload = json
  if #json > _M.PAYLOAD_MAX then
    local id, err = relay_table.store(self.db, self.table, self.channel, json, self.keep)
    if not id then
      self.counts.dropped = self.counts.dropped + 1
      return nil, err
    end
    payload = relay_table.ref(id)
  end
  -- Locally the same shape other servers will see: decoded from the JSON.
  self.q:push({ change = cjson.decode(json), origin = "local" })
  local sent, err = self.l:notify(self.channel, payload, self.timeout)
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
      self.q:accept(n, self.counts)
    end
    if self.q:size() > 0 then
      local change, origin = self.q:next(self.fetch, self.counts)
      if change or origin then return change, origin end
    end
    local left = deadline and deadline - now()
    if left and left <= 0 then
      return errors.fail("timeout", "no change arrived in time")
    end
    local n, err = self.l:wait(left)
    if not n then return nil, err end
    self.q:accept(n, self.counts)
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
    overflow = self.q.overflow + s.dropped, queued = self.q:size(),
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
  return self.q:size() > 0 and 0 or self.l:due()
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
