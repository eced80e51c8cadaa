-- SPDX-License-Identifier: MIT
-- pgstore.listen — LISTEN/NOTIFY, pulled. `db:listen(channels, opts)` opens
-- a listener on a connection of its own (not from the pool) and returns it:
--
--   local l = assert(db:listen{ "orders", "payments" })
--   local n, err = l:wait(1.0)   -- { channel =, payload =, pid = } | nil, err (code "timeout")
--   l:add("refunds"); l:remove("payments"); l:close()
--
-- When its connection drops, the listener reconnects with backoff, LISTENs
-- again and delivers { channel = "*", reconnected = true }: notifications
-- sent meanwhile are lost (NOTIFY is a hint), so catch up from stored state.
-- { channel = "*", overflow = true, lost = n } says the same after more
-- than `max_queue` notifications piled up unread and n were dropped.
--
-- For event loops: l:fd() is the socket to watch for readability (nil while
-- reconnecting; it changes on reconnect), l:due() the seconds until
-- l:wait(0) must run anyway (heartbeat, reconnect). Drain with l:wait(0)
-- until it returns nil before watching the fd again.
--
-- Channel names and payloads follow the core's rules (core.check_channel,
-- core.check_notify; the limits are core.limits.channel and
-- core.limits.notify_payload): a bad one is nil, err "invalid", found
-- before anything is sent.
--
-- This module also adds db:notify(channel, payload) → true | nil, err.
local core = require "pgstore.core"
local options = require "pgstore.options"
local errors = require "pgstore.errors"
local Db = require "pgstore.db"

local type, ipairs, pairs, error, tostring = type, ipairs, pairs, error, tostring
-- debug.getmetatable: handles hide their metatables from getmetatable (__metatable)
local setmetatable, getmetatable = setmetatable, debug.getmetatable
local format = string.format

local _M = {
  _VERSION = core._VERSION,
  CHANNEL_MAX = core.limits.channel,
  PAYLOAD_MAX = core.limits.notify_payload,
}

-- Options a listener takes (all optional), besides the db's connection
-- settings: seconds unless said otherwise.
_M.OPTIONS = {
  heartbeat = "number",          -- silence before a probe (10)
  heartbeat_timeout = "number",  -- how long a probe may take (5)
  reconnect_min = "number",      -- first backoff (0.1)
  reconnect_max = "number",      -- backoff cap (10)
  max_queue = "number",          -- notifications held unread (10000)
  ignore_self = "boolean",       -- drop what l:notify sent itself (false)
}

-- Checks a listener's options (misuse raises through pgstore.options) →
-- opts, or nil and an invalid error for a number out of range: every
-- number but max_queue is seconds, above 0.
function _M.check_options(opts, spec, n, fname)
  opts = options.check(opts, spec, n, fname)
  for k, v in pairs(opts) do
    local bad = spec[k] == "number" and k ~= "max_queue" and options.seconds(v, k, true)
    if bad then return nil, bad end
  end
  local bad = options.int(opts.max_queue, "max_queue", 1, 2147483647)
  if bad then return nil, bad end
  local lo, hi = opts.reconnect_min or 0.1, opts.reconnect_max or 10
  if lo > hi then
    return nil, errors.new("invalid", format("reconnect_min (%s s) must not be over reconnect_max (%s s)",
      tostring(lo), tostring(hi)))
  end
  return opts
end

-- The listener's own connection uses the db's settings and its listen_dsn
-- (Db._listen_dsn). → options | nil, err
function _M.connection_options(db, opts)
  local dsn, err = Db._listen_dsn(db)
  if not dsn and err then return nil, err end
  local o = {
    dsn = dsn,
    application_name = db.opts.application_name,
    connect_timeout = db.opts.connect_timeout,
  }
  for k, v in pairs(opts) do o[k] = v end
  return o
end

local Listener = {}
local mt = { __index = Listener, __name = "pgstore.listener", __metatable = false }

local function check(self)
  if getmetatable(self) ~= mt then
    options.raise("bad argument #1 (pgstore.listener expected; use l:method())")
  end
  if not self.core then options.raise("attempt to use a closed listener") end
  return self.core
end

-- l:wait([timeout]) → notification | nil, err. Without timeout: until one comes.
-- A negative or NaN timeout is nil, err "invalid".
function Listener:wait(timeout)
  local l = check(self)
  options.arg(timeout, 1, "wait", "number|nil")
  local bad = options.seconds(timeout, "timeout")
  if bad then return nil, bad end
  return l:wait(timeout)
end
-- l:add(channel), l:remove(channel) → true | nil, err
function Listener:add(channel)
  local l = check(self)
  options.arg(channel, 1, "add", "string")
  return l:add(channel)
end
function Listener:remove(channel)
  local l = check(self)
  options.arg(channel, 1, "remove", "string")
  return l:remove(channel)
end
-- l:notify(channel, payload[, timeout]) → true | nil, err: on the listener's
-- own connection, confirmed by the server within timeout (default: the
-- connect timeout) — what pgstore.relay broadcasts with.
function Listener:notify(channel, payload, timeout)
  local l = check(self)
  options.arg(timeout, 3, "notify", "number|nil")
  local bad = options.seconds(timeout, "timeout")
  if bad then return nil, bad end
  return l:notify(channel, payload, timeout)
end
-- l:fd() → socket | nil;  l:due() → seconds until l:wait(0) must run anyway
function Listener:fd() return check(self):fd() end
function Listener:due() return check(self):due() end
-- l:stats() → { connected, pid, reconnects, dropped, queued, channels, last_error }
function Listener:stats() return check(self):stats() end
function Listener:channels() return check(self):channels() end

-- Closes the listener's connection (and the db when it owns it, see
-- pgstore.open_listen); twice is harmless.
function Listener:close()
  if self.core then self.core:close() end
  self.core = nil
  if self.owns_db and self.db then self.db:close() end
  self.db = nil
end

mt.__tostring = function(self)
  return self.core and tostring(self.core) or "pgstore.listener (closed)"
end

-- db:listen(channel_or_list[, opts]) → listener | nil, err
function _M.new(db, channels, opts)
  if type(channels) == "string" then
    channels = { channels }
  else
    options.arg(channels, 1, "listen", "table", "string or table")
  end
  for i, ch in ipairs(channels) do
    if type(ch) ~= "string" then
      options.argerror(1, "listen", format("channel %d must be a string, got %s", i, type(ch)))
    end
  end
  local bad
  opts, bad = _M.check_options(opts, _M.OPTIONS, 2, "listen")
  if not opts then return nil, bad end
  local copts, err = _M.connection_options(db, opts)
  if not copts then return nil, err end
  local l
  l, err = core.listener(copts, channels)
  if not l then return nil, err end
  return setmetatable({ core = l, db = db }, mt)
end

-- db:notify(channel, payload) → true | nil, err. Sent on a pooled
-- connection at once; inside a transaction use tx:notify (sent at commit).
function Db:notify(channel, payload)
  Db._check(self, "notify")
  options.arg(channel, 1, "notify", "string")
  options.arg(payload, 2, "notify", "string|nil")
  return core.notify(self.pool, nil, channel, payload or "")
end

return _M
