-- SPDX-License-Identifier: MIT
-- resty.pgstore.hub — LISTEN in nginx: one listener connection per worker
-- and db, shared by everything in the worker that wants notifications
-- (db:listen, db:relay, the change feed), driven by a timer loop.
--
-- The loop never calls libpq on the event loop. The listener (pgstore's,
-- pulled) is parked in the process-wide registry, and the loop keeps one
-- call in a worker thread (thread.lua's listener_wait) that blocks in
-- poll(2) on the listener's socket and on the hub's eventfd: it returns
-- as soon as a notification arrives, having drained what else came with
-- it, so a commit reaches the subscribers in one thread wake-up, with no
-- sleeping or polling on the event loop. Heartbeats and reconnects (the
-- listener reconnects by itself with backoff and reports it with a "*"
-- marker) happen inside that wait. So this waiting call occupies one
-- thread of the pool for as long as the hub runs: count one thread per
-- hub (per worker and db) when sizing `threads`.
--
-- Only the loop uses the listener. Whoever needs it — a new channel to
-- LISTEN (before db:listen returns), a relay's NOTIFY — queues an ask
-- (Hub:ask) and writes to the eventfd, which ends the wait at once; the
-- loop answers every ask before it waits again. So a request that goes
-- away while it waits holds nothing the loop needs. At worker exit (nginx -s quit
-- or reload) a pending timer, fired early by nginx, writes to the eventfd
-- of every hub, so no thread stays blocked and the worker exits promptly.
--
-- Notifications fan out to the subscribers of their channel through
-- ngx.semaphore; a marker ({ channel = "*", reconnected = true }) goes to
-- all of them. The listener is opened with ignore_self, so a relay's own
-- broadcasts (sent on this connection) come back only through local
-- delivery, once.
local ffi = require "ffi"
local cjson = require "cjson.safe"
local errors = require "pgstore.errors"
local core = require "pgstore.core"
local options = require "pgstore.options"
local relay_queue = require "pgstore.relay_queue"
local relay_table = require "pgstore.relay_table"
local semaphore = require "ngx.semaphore"
local call_mod = require "resty.pgstore.call"

local ngx = ngx
local now, log, timer_at, exiting = ngx.now, ngx.log, ngx.timer.at, ngx.worker.exiting
local WARN, INFO = ngx.WARN, ngx.INFO
-- debug.getmetatable: handles hide their metatables from getmetatable (__metatable)
local type, pairs, ipairs, tostring, setmetatable, getmetatable, pcall =
      type, pairs, ipairs, tostring, setmetatable, debug.getmetatable, pcall
local format = string.format
local select, unpack = select, unpack
-- The listener has its own connection: its calls take no slot (the rule
-- counts one thread per pool for them).
local call, raise, argerr, check_arg = call_mod.unslotted, call_mod.raise, call_mod.arg, call_mod.check
local sema_wait = call_mod.wait

local _M = {}

-- The longest a waiting call lasts when nothing happens at all; everything
-- that needs the listener sooner wakes it through the eventfd.
local WAIT_MAX = 5
local DRAIN_MAX = 1000
-- The exit watcher's timer: re-armed while the worker runs (nginx's timers
-- must stay well below 2^31 ms), fired early when it exits.
local EXIT_WATCH = 3600
local PAYLOAD_MAX, check_channel = core.limits.notify_payload, core.check_channel

-- ---- the wake descriptor ------------------------------------------------------------

-- An eventfd per hub, owned by the event loop (created and closed here;
-- the thread only polls and drains it). Declared under names of our own
-- (asm redirects), so no other module's declarations can clash.
local c = {}
do
  -- Declared once per VM; a second load finds them declared already.
  pcall(ffi.cdef, [[
    int pgstore_eventfd(unsigned int initval, int flags) asm("eventfd");
    long pgstore_write(int fd, const void *buf, unsigned long count) asm("write");
    int pgstore_close(int fd) asm("close");
  ]])
  pcall(function()
    c.eventfd, c.write, c.close = ffi.C.pgstore_eventfd, ffi.C.pgstore_write, ffi.C.pgstore_close
  end)
end
local EFD_NONBLOCK_CLOEXEC = 0x800 + 0x80000 -- O_NONBLOCK | O_CLOEXEC (Linux)
local ONE = ffi.new("uint64_t[1]", 1)

-- → fd | nil (no eventfd here: the waiting call then lasts at most 50 ms)
local function wake_open()
  if not c.eventfd then return nil end
  local ok, fd = pcall(c.eventfd, 0, EFD_NONBLOCK_CLOEXEC)
  if ok and fd >= 0 then return fd end
end

-- ---- the hub ----------------------------------------------------------------------------------

local hubs = {} -- db key → hub

-- Subscribers are held weakly: a listener or relay whose request went away
-- without closing it (a client abort) is collected, not fed for ever.
local WEAK = { __mode = "k" }

-- A waiting l:wait() or relay:next() looks at ngx.worker.exiting() this
-- often, so a quit or reload never waits for its client.
local EXIT_LOOK = 0.5

local Hub = {}
local hub_mt = { __index = Hub, __metatable = false }

-- The core's rule (no I/O, safe on the event loop).
local function channel_error(ch)
  if type(ch) ~= "string" then return nil end
  local ok, err = check_channel(ch)
  if not ok then return err end
end
_M.channel_error = channel_error

-- Delivers a notification to the subscribers of its channel, a marker to all.
function Hub:dispatch(note)
  if note.channel == "*" then
    for sub in pairs(self.all) do sub:push(note) end
    return
  end
  local subs = self.subs[note.channel]
  if subs then
    for sub in pairs(subs) do sub:push(note) end
  end
end

local function listener_options(db)
  local s = db.spec
  return {
    dsn = s.listen_dsn or s.dsn, connect_timeout = s.connect_timeout, ignore_self = true,
    application_name = ((s.application_name or "pgstore") .. ":listen"):sub(1, 63),
  }
end

-- Opens the listener in a thread (LISTENing to every channel wanted).
-- Called in the loop. → true | nil, err
function Hub:open()
  local list = {}
  for ch in pairs(self.channels) do list[#list + 1] = ch end
  local id, err, _, pid
  if self.db.spec.pooler == "transaction" and not self.db.spec.listen_dsn then
    -- LISTEN on a session the pooler hands to other clients hears nothing
    err = errors.new("invalid", "LISTEN needs a session of its own, which a transaction pooler"
      .. " (pooler = \"transaction\") cannot give: connect with listen_dsn, a direct connection string")
  else
    id, err, _, pid = call(self.db.cfg, "listener_open", listener_options(self.db), list)
  end
  if not id then
    self.failures = self.failures + 1
    if self.failures == 1 or self.failures % 50 == 0 then
      log(WARN, "resty.pgstore: LISTEN connection failed (", self.failures, " times): ", tostring(err))
    end
    self.last_error = tostring(err)
    return nil, err
  end
  self.id, self.pid = id, pid
  self.listening = {}
  for _, ch in ipairs(list) do self.listening[ch] = true end
  if self.opened then
    -- A new connection: whatever was sent meanwhile is lost.
    self.reconnects = self.reconnects + 1
    self:dispatch({ channel = "*", reconnected = true })
  end
  self.opened, self.failures = true, 0
  return true
end

-- LISTEN / UNLISTEN what changed. Called in the loop. A channel nobody
-- listens to any more (closed, or collected with its request) is dropped.
function Hub:sync()
  for ch in pairs(self.channels) do
    local subs = self.subs[ch]
    if not subs or next(subs) == nil then
      self.channels[ch], self.subs[ch] = nil, nil
    end
  end
  for ch in pairs(self.channels) do
    if not self.listening[ch] then
      local ok, err = call(self.db.cfg, "listener_call", self.id, "add", ch)
      if not ok then return nil, err end
      self.listening[ch] = true
    end
  end
  for ch in pairs(self.listening) do
    if not self.channels[ch] then
      call(self.db.cfg, "listener_call", self.id, "remove", ch)
      self.listening[ch] = nil
    end
  end
  return true
end

-- Ends the waiting call now (it returns what it has), if there is one;
-- at worker exit (force) also the loop's nap.
function Hub:interrupt(force)
  if self.wake_fd and (force or self.waiting) then c.write(self.wake_fd, ONE, 8) end
  if force and self.wake:count() < 0 then self.wake:post(1) end
end

-- The waiting call (see the header). → notifications taken | nil, err
function Hub:wait()
  self.waiting = true
  -- → notifications, fd, due, pid, connected | nil, err
  local notes, err, _, pid, connected = call(self.db.cfg, "listener_wait", self.id, DRAIN_MAX,
    self.wake_fd and WAIT_MAX or 0.05, self.wake_fd)
  self.waiting = false
  if not notes then
    if type(err) == "table" and err.code == "closed" then self.id = nil end
    return nil, err
  end
  self.pid, self.connected = pid, connected
  for i = 1, #notes do
    local n = notes[i]
    if n.channel == "*" and n.reconnected then self.reconnects = self.reconnects + 1 end
    self:dispatch(n)
  end
  return #notes
end

-- Runs fn(self, ...) with the listener, in the hub's own loop (the
-- waiting call is ended first), and waits up to 30 s for its results.
-- Only the loop ever uses the listener, so a request that goes away while
-- it waits here (a client abort, a killed light thread) leaves nothing
-- held: its LISTEN or NOTIFY is still made, its answer dropped.
local ASK_WAIT = 30
function Hub:ask(fn, ...)
  local a = { fn = fn, args = { n = select("#", ...), ... }, done = semaphore.new(0) }
  self.asks[#self.asks + 1] = a
  self:interrupt()
  if self.wake:count() < 0 then self.wake:post(1) end
  local ok, err = self.done_wait(a.done, ASK_WAIT)
  if not ok then
    return nil, errors.new("timeout", "resty.pgstore: the listener stayed busy: " .. tostring(err))
  end
  if not a.res[1] then error(a.res[2], 0) end
  return a.res[2], a.res[3]
end

-- Answers every ask queued so far (in the loop).
local function answer(self, why)
  local asks = self.asks
  if #asks == 0 then return end
  self.asks = {}
  for i = 1, #asks do
    local a = asks[i]
    if why then
      a.res = { true, nil, errors.new("closed", why) }
    else
      a.res = { pcall(a.fn, self, unpack(a.args, 1, a.args.n)) }
    end
    a.done:post(1)
  end
end

-- One round of the loop. → true when it waited in a thread (or someone
-- asked for the listener meanwhile), false when the loop should nap (down,
-- or the call failed).
local function round(self)
  answer(self)
  if not self.id then
    if now() < self.retry_at then return false end
    if not self:open() then
      self.retry_at = now() + math.min(0.1 * 2 ^ math.min(self.failures, 6), 5)
      return false
    end
  end
  if self.dirty then
    self.dirty = false
    local ok, err = self:sync()
    if not ok then
      self.dirty = true
      log(INFO, "resty.pgstore: LISTEN change deferred: ", tostring(err))
    end
  end
  -- Someone asked for the listener (a new channel, a relay's NOTIFY):
  -- answered at the top of the next round.
  if #self.asks > 0 or exiting() then return true end
  return self:wait() ~= nil
end

local function loop(premature, self)
  while not premature and not exiting() do
    local ok, waited = pcall(round, self)
    if not ok then
      log(WARN, "resty.pgstore: LISTEN loop: ", tostring(waited))
      waited = false
    end
    if not waited and not exiting() then
      -- Down, or no thread to be had: until the next retry, at most a
      -- second, or until a subscriber comes.
      local nap = self.id and 0.05 or self.retry_at - now()
      sema_wait(self.wake, nap < 1 and nap or 1)
    end
  end
  self.running = false
  answer(self, "resty.pgstore: the worker is exiting")
  if self.id then
    -- Shutting down: close it here if no thread can be had any more.
    local ok = pcall(call, self.db.cfg, "listener_close", self.id)
    if not ok then
      local l = require("pgstore.core").unpark(self.id)
      if l then l:close() end
    end
    self.id = nil
  end
  if self.wake_fd then
    c.close(self.wake_fd)
    self.wake_fd = nil
  end
end

-- Fired early by nginx when the worker exits: wakes every hub's waiting
-- call, so no thread of the pool stays blocked on a listener.
local watching = false
local function watch_exit(premature)
  if premature or exiting() then
    watching = false
    for _, hub in pairs(hubs) do hub:interrupt(true) end
    return
  end
  watching = timer_at(EXIT_WATCH, watch_exit) and true or false
end

-- The worker's hub for db, started on first use.
function _M.get(db)
  local self = hubs[db.key]
  if not self then
    self = setmetatable({
      db = db, channels = {}, listening = {}, subs = {}, all = setmetatable({}, WEAK),
      asks = {}, wake = semaphore.new(0), done_wait = sema_wait,
      failures = 0, reconnects = 0, retry_at = 0, opened = false,
    }, hub_mt)
    hubs[db.key] = self
  end
  if not self.running then
    if not watching then
      local ok, err = timer_at(EXIT_WATCH, watch_exit)
      if not ok then return nil, errors.new("invalid", "resty.pgstore: cannot start the LISTEN loop: " .. tostring(err)) end
      watching = true
    end
    self.wake_fd = self.wake_fd or wake_open()
    local ok, err = timer_at(0, loop, self)
    if not ok then return nil, errors.new("invalid", "resty.pgstore: cannot start the LISTEN loop: " .. tostring(err)) end
    self.running = true
  end
  return self
end

-- Subscribes sub (with a push(note) method) to channels; LISTENs to new
-- ones now when possible (in a thread), else at the loop's next round.
function Hub:subscribe(sub, channels)
  self.all[sub] = true
  local new = false
  for _, ch in ipairs(channels) do
    self.subs[ch] = self.subs[ch] or setmetatable({}, WEAK)
    self.subs[ch][sub] = true
    if not self.channels[ch] then
      self.channels[ch] = true
      new = true
    end
  end
  if new then
    self.dirty = true
    if call_mod.yieldable() then
      -- Listening before returning, so nothing sent afterwards is missed.
      local ok, err = self:ask(function(h)
        if not h.id then
          local opened, oerr = h:open()
          if not opened then return nil, oerr end
        end
        h.dirty = false
        return h:sync()
      end)
      if not ok then
        self.dirty = true
        return nil, err
      end
    end
    self.wake:post(1)
  end
  return true
end

function Hub:unsubscribe(sub, channels)
  self.all[sub] = nil
  for _, ch in ipairs(channels or {}) do
    local subs = self.subs[ch]
    if subs then
      subs[sub] = nil
      if next(subs) == nil then
        -- UNLISTENed at the loop's next sync (unless someone comes back).
        self.dirty = true
      end
    end
  end
end

-- Sends a NOTIFY on the listener's own connection (relays).
function Hub:send(channel, payload, timeout)
  if not self.id then
    return nil, errors.new("connection", "resty.pgstore: the LISTEN connection is not open"
      .. (self.last_error and (": " .. self.last_error) or ""))
  end
  return self:ask(function(h)
    if not h.id then return nil, errors.new("connection", "resty.pgstore: the LISTEN connection is not open") end
    return call(h.db.cfg, "listener_call", h.id, "notify", channel, payload, timeout)
  end)
end

function Hub:stats()
  local n = 0
  for _ in pairs(self.channels) do n = n + 1 end
  return { connected = self.id ~= nil and self.connected ~= false, pid = self.pid,
           reconnects = self.reconnects, channels = n, last_error = self.last_error }
end

-- ---- db:listen ---------------------------------------------------------------------------

local Listener = {}
local listener_mt = { __index = Listener, __name = "resty.pgstore.listener", __metatable = false }

function Listener:push(note)
  if self.closed then return end
  local q = self.queue
  if note.channel == "*" then
    local last = self.tail >= self.head and q[self.tail]
    if last and last.channel == "*" then
      last.reconnected = last.reconnected or note.reconnected
      last.overflow = last.overflow or note.overflow
      if note.lost then last.lost = (last.lost or 0) + note.lost end
      return
    end
  elseif self.tail - self.head + 1 >= self.max_queue then
    -- One marker for what goes, saying what the markers among it said;
    -- only notifications count as dropped.
    local lost, reconnected = 0, nil
    for i = self.head, self.tail do
      local e = q[i]
      if e.channel == "*" then
        lost, reconnected = lost + (e.lost or 0), reconnected or e.reconnected
      else
        lost, self.dropped = lost + 1, self.dropped + 1
      end
    end
    self.queue, self.head, self.tail = {}, 1, 0
    q = self.queue
    self.tail = 1
    q[1] = { channel = "*", overflow = lost > 0 or nil, lost = lost > 0 and lost or nil, reconnected = reconnected }
  end
  self.tail = self.tail + 1
  q[self.tail] = note
  if self.sema:count() < 1 then self.sema:post(1) end
end

local function lcheck(self, fname)
  if getmetatable(self) ~= listener_mt then
    raise(format("bad argument #1 to '%s' (resty.pgstore.listener expected; use l:%s())", fname, fname))
  end
  if self.closed then raise("attempt to use a closed listener") end
end

-- l:wait([timeout]) → { channel, payload, pid } | { channel = "*", reconnected | overflow }
-- | nil, err (code "timeout"). Without timeout: until one comes.
function Listener:wait(timeout)
  lcheck(self, "wait")
  check_arg(timeout, 1, "wait", "number|nil")
  local deadline = timeout and now() + timeout
  while true do
    if self.head <= self.tail then
      local n = self.queue[self.head]
      self.queue[self.head] = nil
      self.head = self.head + 1
      return n
    end
    local left = deadline and deadline - now() or EXIT_LOOK
    if left <= 0 then return nil, errors.new("timeout", "nothing arrived in time") end
    sema_wait(self.sema, left < EXIT_LOOK and left or EXIT_LOOK)
    if self.closed then return nil, errors.new("closed", "the listener was closed") end
    if exiting() then return nil, errors.new("closed", "the worker is exiting") end
  end
end

-- l:add(channel) / l:remove(channel) → true | nil, err
function Listener:add(channel)
  lcheck(self, "add")
  check_arg(channel, 1, "add", "string")
  local err = channel_error(channel)
  if err then return nil, err end
  if self.set[channel] then return true end
  self.set[channel] = true
  return self.hub:subscribe(self, { channel })
end

function Listener:remove(channel)
  lcheck(self, "remove")
  check_arg(channel, 1, "remove", "string")
  local err = channel_error(channel)
  if err then return nil, err end
  if not self.set[channel] then return true end
  self.set[channel] = nil
  self.hub:unsubscribe(self, { channel })
  self.hub.all[self] = true
  local q, kept = self.queue, {}
  for i = self.head, self.tail do
    if q[i].channel ~= channel then kept[#kept + 1] = q[i] end
  end
  self.queue, self.head, self.tail = kept, 1, #kept
  return true
end

function Listener:channels()
  lcheck(self, "channels")
  local out = {}
  for ch in pairs(self.set) do out[#out + 1] = ch end
  table.sort(out)
  return out
end

-- l:notify(channel, payload) → true | nil, err (on a pooled connection)
function Listener:notify(channel, payload)
  lcheck(self, "notify")
  return self.db:notify(channel, payload)
end

-- l:stats() → { connected, pid, reconnects, dropped, queued, channels }
function Listener:stats()
  lcheck(self, "stats")
  local s = self.hub:stats()
  s.dropped, s.queued, s.channels = self.dropped, self.tail - self.head + 1, #self:channels()
  return s
end

function Listener:close()
  if self.closed then return end
  self.closed = true
  local chs = {}
  for ch in pairs(self.set) do chs[#chs + 1] = ch end
  self.hub:unsubscribe(self, chs)
  self.sema:post(1)
end

listener_mt.__tostring = function(self)
  return self.closed and "resty.pgstore.listener (closed)" or "resty.pgstore.listener"
end

-- The options of db:listen and db:relay: the LISTEN connection is the
-- worker's, so its heartbeat and reconnect settings are pgstore's defaults.
local LISTEN_OPTIONS = { max_queue = "number" }
local RELAY_OPTIONS = { max_queue = "number", timeout = "number", table = "string", max_change = "number|nil",
  keep = "number" }

-- → opts (never nil), or nil and an invalid error for a number not positive.
local function check_listen_options(opts, allowed, fname)
  check_arg(opts, 2, fname, "table|nil")
  for k in pairs(opts or {}) do
    if not allowed[k] then
      argerr(2, fname, format("unknown option '%s' (the LISTEN connection is the worker's: its "
        .. "heartbeat and reconnect settings are pgstore's defaults)", tostring(k)))
    end
  end
  opts = options.check(opts, allowed, 2, fname)
  local bad = options.int(opts.max_queue, "max_queue", 1, 2147483647) or options.seconds(opts.timeout, "timeout", true)
  if bad then return nil, bad end
  return opts
end

-- db:listen(channel_or_list[, { max_queue = 10000 }]) → listener | nil, err
local function new_listener(db, channels, opts)
  if type(channels) == "string" then channels = { channels } end
  if type(channels) ~= "table" then
    argerr(1, "listen", "string or table expected, got " .. type(channels))
  end
  local bad
  opts, bad = check_listen_options(opts, LISTEN_OPTIONS, "listen")
  if not opts then return nil, bad end
  local set = {}
  for i, ch in ipairs(channels) do
    if type(ch) ~= "string" then argerr(1, "listen", format("channel %d must be a string, got %s", i, type(ch))) end
    local err = channel_error(ch)
    if err then return nil, err end
    set[ch] = true
  end
  local hub, err = _M.get(db)
  if not hub then return nil, err end
  local self = setmetatable({
    db = db, hub = hub, set = set, queue = {}, head = 1, tail = 0,
    max_queue = opts.max_queue or 10000, dropped = 0, sema = semaphore.new(0),
  }, listener_mt)
  local ok
  ok, err = hub:subscribe(self, channels)
  if not ok then
    self:close()
    return nil, err
  end
  return self
end

-- ---- db:relay --------------------------------------------------------------------------------

local Relay = {}
local relay_mt = { __index = Relay, __name = "resty.pgstore.relay", __metatable = false }

-- From the hub: another server's broadcast, or a loss.
function Relay:push(note)
  if not self.closed and self.q:accept(note, self.counts) and self.sema:count() < 1 then self.sema:post(1) end
end

local function rcheck(self, fname)
  if getmetatable(self) ~= relay_mt then
    raise(format("bad argument #1 to '%s' (resty.pgstore.relay expected; use relay:%s())", fname, fname))
  end
  if self.closed then raise("attempt to use a closed relay") end
end

-- relay:broadcast(change) → true | nil, err. Delivered at once to every
-- relay and listener of the channel in this worker, then sent as a NOTIFY
-- on the worker's LISTEN connection for everyone else.
function Relay:broadcast(change)
  rcheck(self, "broadcast")
  check_arg(change, 1, "broadcast", "table")
  local json, bad = relay_table.encode(change, self.max_change, self.channel)
  if not json then
    self.counts.dropped = self.counts.dropped + 1
    return nil, bad
  end
  local payload = json
  if #json > PAYLOAD_MAX then
    local id, err = self.db:run("pgstore.relay_table", "store", self.table, self.channel, json, self.keep)
    if not id then
      self.counts.dropped = self.counts.dropped + 1
      return nil, err
    end
    payload = relay_table.ref(id)
  end
  local hub = self.hub
  local subs = hub.subs[self.channel]
  if subs then
    for sub in pairs(subs) do
      if getmetatable(sub) == relay_mt then
        if not sub.closed then
          sub.q:push({ change = cjson.decode(json), origin = "local" })
          if sub.sema:count() < 1 then sub.sema:post(1) end
        end
      else
        sub:push({ channel = self.channel, payload = payload, pid = hub.pid or 0 })
      end
    end
  end
  local ok, err = hub:send(self.channel, payload, self.timeout)
  if not ok then
    self.counts.dropped = self.counts.dropped + 1
    return nil, err
  end
  self.counts.sent = self.counts.sent + 1
  return true
end

-- relay:next([timeout]) → change, origin ("local" or the sender's backend
-- pid) | nil, err ("timeout"; "lost" with err.lost and err.reason after
-- changes were dropped; "connection" with err.reconnected once after the
-- LISTEN connection was re-established; "closed")
function Relay:next(timeout)
  rcheck(self, "next")
  check_arg(timeout, 1, "next", "number|nil")
  local deadline = timeout and now() + timeout
  while true do
    if self.q:size() > 0 then
      local change, origin = self.q:next(self.fetch, self.counts)
      if change or origin then return change, origin end
    end
    local left = deadline and deadline - now() or EXIT_LOOK
    if left <= 0 then return nil, errors.new("timeout", "no change arrived in time") end
    sema_wait(self.sema, left < EXIT_LOOK and left or EXIT_LOOK)
    if self.closed then return nil, errors.new("closed", "the relay was closed") end
    if exiting() then return nil, errors.new("closed", "the worker is exiting") end
  end
end

function Relay:stats()
  rcheck(self, "stats")
  local c, s = self.counts, self.hub:stats()
  return { sent = c.sent, received = c.received, dropped = c.dropped, invalid = c.invalid,
           overflow = self.q.overflow, queued = self.q:size(),
           connected = s.connected, reconnects = s.reconnects }
end

function Relay:close()
  if self.closed then return end
  self.closed = true
  self.hub:unsubscribe(self, { self.channel })
  self.sema:post(1)
end

relay_mt.__tostring = function(self)
  return self.closed and "resty.pgstore.relay (closed)" or format("resty.pgstore.relay (%s)", self.channel)
end

-- db:relay(channel[, { timeout = 2, max_queue = 1000, max_change = 1048576, keep = 60,
-- table = "pgstore_relay" }]) → relay | nil, err
local function new_relay(db, channel, opts)
  check_arg(channel, 1, "relay", "string")
  local bad
  opts, bad = check_listen_options(opts, RELAY_OPTIONS, "relay")
  if not opts then return nil, bad end
  local err = channel_error(channel) or relay_table.check_options(opts)
  if err then return nil, err end
  local hub
  hub, err = _M.get(db)
  if not hub then return nil, err end
  local tbl = opts.table
  local self = setmetatable({
    db = db, hub = hub, channel = channel, timeout = opts.timeout or 2, q = relay_queue.new(opts.max_queue or 1000),
    table = tbl, max_change = opts.max_change or relay_table.MAX_CHANGE, keep = opts.keep or relay_table.KEEP,
    sema = semaphore.new(0), counts = { sent = 0, received = 0, dropped = 0, invalid = 0 },
    fetch = function(id, ch) return db:run("pgstore.relay_table", "fetch", tbl, id, ch) end,
  }, relay_mt)
  local ok
  ok, err = hub:subscribe(self, { channel })
  if not ok then
    self:close()
    return nil, err
  end
  return self
end

function _M.new(db, kind, ...)
  if kind == "relay" then return new_relay(db, ...) end
  return new_listener(db, ...)
end

return _M
