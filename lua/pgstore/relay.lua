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

-- debug.getmetatable: handles hide their metatables from getmetatable (__metatable)
local type, pcall, setmetatable, getmetatable = type, pcall, setmetatable, debug.getmetatable
local pairs, error, tostring = pairs, error, tostring
local now = core.now
local format = string.format

local _M = { _VERSION = core._VERSION, PAYLOAD_MAX = core.limits.notify_payload }
local Relay = {}
local mt = { __index = Relay, __name = "pgstore.relay", __metatable = false }

-- max_change is a byte count: "number|nil" keeps listen.check_options from
-- reading it as seconds.
local OPTIONS = { timeout = "number", max_queue = "number", table = "string", max_change = "number|nil",
  keep = "number" }
local MAX_CHANGE, KEEP = 1024 * 1024, 60
local CHANGE_LIMIT = 256 * 1024 * 1024 -- the largest max_change accepted
for k, v in pairs(listen.OPTIONS) do
  if k ~= "ignore_self" and k ~= "max_queue" then OPTIONS[k] = v end
end

local RECONNECTED = {} -- queue entry standing for a reconnect
-- A queue entry standing for dropped changes is { lost = n|nil, reason = … }.

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
  bad = options.int(opts.max_change, "max_change", 1, CHANGE_LIMIT) or options.seconds(opts.keep, "keep")
    or errors.nul(opts, "table")
  if bad then return nil, bad end
  local qtable, err = core.quote_ident(opts.table or "pgstore_relay")
  if not qtable then return nil, err end
  local max_queue = opts.max_queue or 1000
  lopts.max_queue = max_queue
  lopts.ignore_self = true -- our own broadcasts are delivered locally
  local copts
  copts, err = listen.connection_options(db, lopts)
  if not copts then return nil, err end
  local l
  l, err = core.listener(copts, { channel })
  if not l then return nil, err end
  return setmetatable({
    l = l, db = db, channel = channel, timeout = opts.timeout or 2, max_queue = max_queue,
    table = opts.table, max_change = opts.max_change or MAX_CHANGE, keep = opts.keep or KEEP,
    store_sql = ("WITH gone AS (DELETE FROM %s WHERE id IN (SELECT id FROM %s ORDER BY id LIMIT 100)"
      .. " AND created_at < clock_timestamp() - $3::float8 * interval '1 second')"
      .. " INSERT INTO %s (channel, change) VALUES ($1, $2) RETURNING id"):format(qtable, qtable, qtable),
    fetch_sql = ("SELECT change FROM %s WHERE id = $1::bigint AND channel = $2"):format(qtable),
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

local function is_marker(e) return e == RECONNECTED or e.reason ~= nil end

-- Two markers as one: a reconnect says all; counts add up when both known.
local function merge(a, b)
  if a == RECONNECTED or b == RECONNECTED then return RECONNECTED end
  return { lost = a.lost and b.lost and a.lost + b.lost or nil, reason = a.reason, why = a.why or b.why }
end

-- Appends to the queue. When it is full the oldest change goes, and the
-- loss stays in the queue as a marker at its head (merged with a marker
-- already there): the consumer learns of it before any later change.
local function push(self, entry)
  if self.tail - self.head + 1 >= self.max_queue then
    local q = self.queue
    local marker = q[self.head]
    q[self.head] = nil
    self.head = self.head + 1
    local dropped = marker
    if is_marker(marker) then
      dropped = q[self.head] -- keep the marker, drop what follows it
      if dropped then
        q[self.head] = nil
        self.head = self.head + 1
      end
    else
      marker = nil
    end
    if dropped and not is_marker(dropped) then
      self.counts.overflow = self.counts.overflow + 1
      dropped = { lost = 1, reason = "overflow" }
    end
    if marker and dropped then marker = merge(marker, dropped) else marker = marker or dropped end
    self.head = self.head - 1
    q[self.head] = marker
  end
  self.tail = self.tail + 1
  self.queue[self.tail] = entry
end

-- A large change's JSON, read back from the relay table → json | nil, why.
local function fetch(self, id, channel)
  local rows, err = self.db:query(self.fetch_sql, id, channel)
  if not rows then return nil, tostring(err) end
  if not rows[1] then
    return nil, "it is no longer in the relay table (its sender keeps large changes `keep` seconds)"
  end
  return rows[1].change
end

local function accept(self, n)
  if n.channel == "*" then
    if n.reconnected then
      push(self, RECONNECTED)
    elseif n.overflow then -- the listener's queue overflowed
      push(self, { reason = "overflow" })
    end
    return
  end
  local payload, id = n.payload, n.payload:match("^@(%d+)$")
  if id then
    local why
    payload, why = fetch(self, id, n.channel)
    if not payload then
      push(self, { lost = 1, reason = "unreadable", why = why })
      return
    end
  end
  local ok, change = pcall(cjson.decode, payload)
  if not ok or type(change) ~= "table" then
    self.counts.invalid = self.counts.invalid + 1
    return
  end
  self.counts.received = self.counts.received + 1
  push(self, { change = change, origin = n.pid })
end

-- A large change into the relay table (made on first use), deleting rows
-- older than `keep` seconds on the way → its id | nil, err.
local function store(self, json)
  if not self.migrated then
    local ok, err = core.relay_migrate(self.db.pool, self.table, true)
    if not ok then return nil, err end
    self.migrated = true
  end
  local rows, err = self.db:query(self.store_sql, self.channel, json, self.keep)
  if not rows then return nil, err end
  return rows[1].id
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
  if #json > self.max_change then
    self.counts.dropped = self.counts.dropped + 1
    return errors.fail("invalid", format(
      "the change is %d bytes as JSON, over the relay's max_change of %d bytes", #json, self.max_change))
  end
  local payload = json
  if #json > _M.PAYLOAD_MAX then
    local id, err = store(self, json)
    if not id then
      self.counts.dropped = self.counts.dropped + 1
      return nil, err
    end
    payload = "@" .. id
  end
  -- Locally the same shape other servers will see: decoded from the JSON.
  push(self, { change = cjson.decode(json), origin = "local" })
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
      elseif e.reason then
        return errors.fail("lost", format("%s change%s lost (%s)%s", e.lost or "some",
          e.lost == 1 and " was" or "s were", e.reason == "overflow" and "the queue overflowed"
          or "a large change could not be read back", e.why and ": " .. e.why or ""),
          { lost = e.lost, reason = e.reason })
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
