-- SPDX-License-Identifier: MIT
-- resty.pgstore.feed — committed events, live, for many requests at once:
-- one reader per worker and event store, fanned out in memory.
--
--   local feed = db:feed{ events = es }                  -- the worker's feed for es
--   local events, cursor = feed:next(cursor, 15, 100)    -- waits up to 15 s
--
-- A timer loop per worker reads the store's global order (read_all, which
-- never skips an event that commits late) from where it last stopped, when
-- the store's NOTIFY channel says something was appended (through the
-- worker's LISTEN hub), and at the latest every `poll` seconds — NOTIFY is
-- only a hint — but never more often than every `interval` seconds, so a
-- flood of appends costs at most 1/interval reads per second and worker. The events read are kept in a ring of the last `buffer`
-- events, which covers every committed event with a position in
-- (ring_base, cursor]: read_all's cursor means "everything up to here has
-- been seen". feed:next(c) serves a caller whose cursor c is inside that
-- range from the ring, with no query; a caller further behind reads
-- read_all from c itself (in a thread) until it is inside. So every
-- caller sees every event exactly once, in global order, whatever its
-- cursor — the property the SSE example's Last-Event-ID resume rests on.
--
-- Rows are raw (data and metadata as JSON text) and shared between
-- requests: do not change them (es:decode(rows) makes decoded copies).
--
-- db:subscribe{ … } (pgstore's catch-up-then-live subscription with a
-- stored checkpoint) is built on the same feed.
local errors = require "pgstore.errors"
local state = require "pgstore.subscription_state"
local options = require "pgstore.options"
local semaphore = require "ngx.semaphore"
local call_mod = require "resty.pgstore.call"
local hub_mod = require "resty.pgstore.hub"

local ngx = ngx
local now, log, timer_at, exiting = ngx.now, ngx.log, ngx.timer.at, ngx.worker.exiting
local WARN = ngx.WARN
-- debug.getmetatable: handles hide their metatables from getmetatable (__metatable)
local type, pairs, ipairs, tostring, setmetatable, getmetatable, pcall, tonumber =
      type, pairs, ipairs, tostring, setmetatable, debug.getmetatable, pcall, tonumber
local floor = math.floor
local format = string.format
local raise, argerr, check_arg, wait = call_mod.raise, call_mod.arg, call_mod.check, call_mod.wait

local _M = {}
local Feed = {}
local feed_mt = { __index = Feed, __name = "resty.pgstore.feed", __metatable = false }

local feeds = {} -- db key | store key → feed

-- ---- the reader loop ------------------------------------------------------------------

-- Wakes every request waiting in feed:next.
local function publish(self)
  local waiting = -self.news:count()
  if waiting > 0 then self.news:post(waiting) end
end

-- From the hub: the store's channel (or a reconnect marker).
function Feed:push()
  self.dirty = true
  if self.wake:count() < 1 then self.wake:post(1) end
end

-- Reads what was committed after the cursor into the ring. → rows read | nil, err
local function read(self)
  local rows, cursor = self.loop_es:read_all{ after = self.cursor, limit = self.batch, raw = true }
  if not rows then return nil, cursor end
  local ring = self.ring
  for i = 1, #rows do
    self.tail = self.tail + 1
    ring[self.tail] = rows[i]
  end
  while self.tail - self.head + 1 > self.size do
    self.base = ring[self.head].position
    ring[self.head] = nil
    self.head = self.head + 1
  end
  self.cursor = cursor
  return #rows
end

local function start(self)
  local head, err = self.loop_es:latest_position()
  if not head then return nil, err end
  -- Any position will do as a base: the ring then holds exactly what
  -- read_all returns after it.
  self.base, self.cursor = head, head
  return true
end

local function loop(premature, self)
  local failures = 0
  local next_poll = 0
  while not premature and not exiting() do
    local ok, n, err
    if not self.started then
      ok, n, err = pcall(start, self)
      if ok and n then self.started = true; self.dirty = true end
    else
      if self.dirty or now() >= next_poll then
        -- At most one read per `interval`: under a stream of appends every
        -- NOTIFY would otherwise cost a read.
        local gap = self.last_read + self.interval - now()
        if gap > 0 then call_mod.sleep(gap) end
        self.last_read = now()
        self.dirty = false
        next_poll = now() + self.poll
        ok, n, err = pcall(read, self)
        if ok and n then
          if n >= self.batch then self.dirty = true end -- more to come
          publish(self)
        end
      else
        ok, n = true, 0
      end
    end
    if not ok or not n then
      failures = failures + 1
      self.last_error = tostring(ok and err or n)
      if failures == 1 or failures % 50 == 0 then
        log(WARN, "resty.pgstore: feed of ", self.es.table_name, ": ", self.last_error)
      end
      self.dirty = true
      wait(self.wake, math.min(0.05 * 2 ^ math.min(failures, 6), self.poll))
    else
      failures = 0
      if not self.dirty then
        local left = next_poll - now()
        if left > 0 then wait(self.wake, left) end
      end
    end
  end
  self.running = false
  publish(self)
end

-- ---- readers ------------------------------------------------------------------------------

-- The ring index of the first event with a position after c.
local function first_after(self, c)
  local ring, lo, hi = self.ring, self.head, self.tail + 1
  while lo < hi do
    local mid = floor((lo + hi) / 2)
    if ring[mid].position > c then hi = mid else lo = mid + 1 end
  end
  return lo
end

local function fcheck(self, fname)
  if getmetatable(self) ~= feed_mt then
    raise(format("bad argument #1 to '%s' (resty.pgstore.feed expected; use feed:%s())", fname, fname))
  end
end

local function check_cursor(c, n, fname)
  if type(c) == "string" and c:match("^%d+$") then c = tonumber(c) end
  if type(c) ~= "number" or c < 0 or c % 1 ~= 0 or c > 2 ^ 53 then
    argerr(n, fname, "cursor must be a position (a whole number >= 0), got " .. tostring(c))
  end
  return c
end

-- feed:next(cursor[, timeout = 0[, limit = 1000]]) → events, cursor | nil, err
-- Events committed after `cursor` in global order (raw, shared rows), at
-- most `limit`, waiting up to `timeout` seconds for the first; an empty
-- array when none came. Pass the returned cursor to the next call.
function Feed:next(cursor, timeout, limit)
  fcheck(self, "next")
  cursor = check_cursor(cursor, 1, "next")
  check_arg(timeout, 2, "next", "number|nil")
  check_arg(limit, 3, "next", "number|nil")
  limit = limit or 1000
  if not (limit >= 1) then argerr(3, "next", "limit must be at least 1") end
  local deadline = now() + (timeout or 0)
  while true do
    if self.started and cursor >= self.base then
      local i = first_after(self, cursor)
      if i <= self.tail then
        local out, n = {}, 0
        while i <= self.tail and n < limit do
          n = n + 1
          out[n] = self.ring[i]
          i = i + 1
        end
        return out, i <= self.tail and out[n].position or self.cursor
      end
      if cursor < self.cursor then return {}, self.cursor end
    elseif self.started then
      -- Behind the ring: catch up from the store itself.
      local rows, c = self.es:read_all{ after = cursor, limit = limit, raw = true }
      if not rows then return nil, c end
      if #rows > 0 or c > cursor then return rows, c end
    end
    local left = deadline - now()
    if left <= 0 then return {}, cursor end
    if not self.running then
      return nil, errors.new("closed", "the feed stopped: the worker is shutting down")
    end
    wait(self.news, left)
  end
end

-- feed:position([timeout]) → the cursor the feed has read up to; nil
-- while it has not read yet (waiting up to timeout seconds for that).
-- feed:stats() → { cursor, base, buffered, last_error, running }
function Feed:position(timeout)
  fcheck(self, "position")
  check_arg(timeout, 1, "position", "number|nil")
  local deadline = now() + (timeout or 0)
  while not self.started and self.running do
    local left = deadline - now()
    if left <= 0 then break end
    wait(self.news, left)
  end
  return self.started and self.cursor or nil
end

function Feed:stats()
  fcheck(self, "stats")
  return { cursor = self.cursor, base = self.base, buffered = self.tail - self.head + 1,
           last_error = self.last_error, running = self.running }
end

feed_mt.__tostring = function(self)
  return format("resty.pgstore.feed (%s)", self.es.table_name)
end

local FEED_OPTIONS = { events = "table", buffer = "number", batch = "number", poll = "number",
                       interval = "number" }

-- db:feed{ events = es, buffer = 1000, batch = 500, poll = 1, interval = 0.002 } → feed | nil, err
-- The worker's feed for that store (the first call's options stand).
local function new_feed(db, opts)
  check_arg(opts, 1, "feed", "table")
  options.check(opts, FEED_OPTIONS, 1, "feed")
  local bad = options.int(opts.buffer, "buffer", 1, 2 ^ 31) or options.int(opts.batch, "batch", 1, 2 ^ 31)
    or options.seconds(opts.poll, "poll", true) or options.seconds(opts.interval, "interval")
  if bad then return nil, bad end
  local es = opts.events
  if not (es and es.skey and es.read_all) then argerr(1, "feed", "option 'events' must be an event store (db:events())") end
  local key = db.key .. "|" .. es.skey
  local self = feeds[key]
  if not self then
    local size, batch, poll, interval = opts.buffer or 1000, opts.batch or 500, opts.poll or 1,
                                        opts.interval or 0.002
    self = setmetatable({
      db = db, es = es, loop_es = es:_background(), size = size, batch = batch, poll = poll, interval = interval, last_read = 0,
      ring = {}, head = 1, tail = 0, base = 0, cursor = 0, started = false,
      wake = semaphore.new(0), news = semaphore.new(0),
    }, feed_mt)
    feeds[key] = self
  end
  if not self.running then
    -- Marked running before anything yields, so two requests arriving
    -- together cannot start two readers (which would fill the ring twice).
    local ok, err = timer_at(0, loop, self)
    if not ok then return nil, errors.new("invalid", "resty.pgstore: cannot start the feed: " .. tostring(err)) end
    self.running = true
    if es.channel then
      local hub
      hub, err = hub_mod.get(db)
      -- Without LISTEN (yet) the feed still reads every `poll` seconds; the
      -- hub keeps trying to connect, with this channel in its set.
      if hub then
        local _, serr = hub:subscribe(self, { es.channel })
        err = serr
      end
      if err then log(WARN, "resty.pgstore: feed of ", es.table_name, ": ", tostring(err)) end
    end
  end
  return self
end

-- ---- db:subscribe -------------------------------------------------------------------------

local Sub = {}
local sub_mt = { __index = Sub, __name = "resty.pgstore.subscription", __metatable = false }

local SUB_OPTIONS = {
  name = "string", events = "table", from = "string|number", types = "table", prefix = "string",
  batch = "number", poll = "number", checkpoints = "table", listen = "boolean",
}

-- db:subscribe{ name, events = es, from = "start" | "end" | cursor, types, prefix,
--               batch = 500, checkpoints = cp } → sub | nil, err
local function new_sub(db, opts)
  check_arg(opts, 1, "subscribe", "table")
  options.check(opts, SUB_OPTIONS, 1, "subscribe")
  options.required(opts, "name", 1, "subscribe")
  local from = opts.from or "start"
  local batch = opts.batch or 500
  local bad = (opts.name == "" and errors.new("invalid", "name (the consumer) must not be empty"))
    or (type(from) == "string" and options.one_of(from, "from", { start = true, ["end"] = true }))
    or options.int(batch, "batch", 1, 2 ^ 31)
  if bad then return nil, bad end
  local feed, err = new_feed(db, { events = opts.events })
  if not feed then return nil, err end
  -- The checkpoint belongs to (the event store, name): `checkpoints`
  -- chooses the table, the event store chooses the store.
  local cp, store = opts.checkpoints, opts.events.table_name
  if not cp then
    cp = db:checkpoints{ store = store }
  elseif cp.kind == "checkpoints" and cp.sopts and (cp.sopts.store or "events") ~= store then
    local o = {}
    for k, v in pairs(cp.sopts) do o[k] = v end
    o.store = store
    cp = db:checkpoints(o)
  end
  local st
  st, err = state.for_consumer(cp, opts.name, opts.events, from)
  if not st then return nil, err end
  local types
  if opts.types then
    types = {}
    for _, t in ipairs(opts.types) do types[t] = true end
  end
  return setmetatable({
    db = db, es = opts.events, feed = feed, cp = cp, name = opts.name, state = st,
    types = types, prefix = opts.prefix, batch = batch,
  }, sub_mt)
end

local function scheck(self, fname)
  if getmetatable(self) ~= sub_mt then
    raise(format("bad argument #1 to '%s' (resty.pgstore.subscription expected; use sub:%s())", fname, fname))
  end
  if self.closed then raise("attempt to use a closed subscription") end
end

-- sub:next([timeout]) → decoded events after the cursor (empty when none
-- came within timeout) | nil, err
function Sub:next(timeout)
  scheck(self, "next")
  check_arg(timeout, 1, "next", "number|nil")
  local deadline = now() + (timeout or 0)
  while true do
    local rows, cursor = self.feed:next(self.state.cursor, deadline - now(), self.batch)
    if not rows then return nil, cursor end
    self.state:delivered(cursor)
    local keep = rows
    if self.types or self.prefix then
      keep = {}
      for _, e in ipairs(rows) do
        if (not self.types or self.types[e.type])
           and (not self.prefix or e.stream:sub(1, #self.prefix) == self.prefix) then
          keep[#keep + 1] = e
        end
      end
    end
    if #keep > 0 then return self.es:decode(keep) end
    if now() >= deadline then return {} end
  end
end

-- sub:ack(cursor[, tx]), sub:committed(), sub:rolled_back(err), sub:lag(),
-- sub:position(), sub:unacked(), sub:rewind(): as pgstore's, the same
-- state machine (pgstore.subscription_state), acks of unknown outcome included.
function Sub:ack(cursor, tx)
  scheck(self, "ack")
  check_arg(cursor, 1, "ack", "number")
  return self.state:ack(cursor, tx)
end

function Sub:committed()
  scheck(self, "committed")
  self.state:committed()
end

function Sub:rolled_back(err)
  scheck(self, "rolled_back")
  return self.state:rolled_back(err)
end

function Sub:lag()
  scheck(self, "lag")
  local head, err = self.es:latest_position()
  if not head then return nil, err end
  return self.state:lag(head)
end

function Sub:position()
  scheck(self, "position")
  return self.state.cursor
end

function Sub:unacked()
  scheck(self, "unacked")
  return self.state:unacked()
end

function Sub:rewind()
  scheck(self, "rewind")
  return self.state:rewind()
end

function Sub:close()
  self.closed = true
end

sub_mt.__tostring = function(self)
  return format("resty.pgstore.subscription (%s%s)", self.name, self.closed and ", closed" or "")
end

function _M.new(db, kind, opts)
  if kind == "subscribe" then return new_sub(db, opts) end
  return new_feed(db, opts)
end

return _M
