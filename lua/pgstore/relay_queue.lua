-- SPDX-License-Identifier: MIT
-- pgstore.relay_queue — the bounded queue of a relay's received changes,
-- where a loss is never silent: when the queue is full the oldest change
-- goes and a marker takes its place at the head, so the consumer learns of
-- the loss before any change that came after it. Shared by pgstore.relay
-- and resty.pgstore's relay.
local cjson = require "cjson"
local errors = require "pgstore.errors"
local relay_table = require "pgstore.relay_table"

local pcall, type, tostring = pcall, type, tostring

local format = string.format

local _M = {}
local Queue = {}
local mt = { __index = Queue }

-- The marker for a reconnect: changes other servers sent meanwhile are lost.
_M.RECONNECTED = setmetatable({}, { __tostring = function() return "relay reconnect marker" end })
local RECONNECTED = _M.RECONNECTED

-- A marker for dropped changes: { lost = n | nil, reason = "overflow" |
-- "unreadable", why = text | nil }.
function _M.lost(n, reason, why) return { lost = n, reason = reason, why = why } end

local function is_marker(e) return e == RECONNECTED or e.reason ~= nil end
_M.is_marker = is_marker

-- Two markers as one: a reconnect says all; counts add up when both known.
local function merge(a, b)
  if a == RECONNECTED or b == RECONNECTED then return RECONNECTED end
  return { lost = a.lost and b.lost and a.lost + b.lost or nil, reason = a.reason, why = a.why or b.why }
end

-- relay_queue.new(max) → queue; queue.overflow counts changes it dropped.
function _M.new(max)
  return setmetatable({ max = max, items = {}, head = 1, tail = 0, overflow = 0 }, mt)
end

function Queue:size() return self.tail - self.head + 1 end

-- Appends a change or a marker, dropping the oldest change when full.
function Queue:push(entry)
  if self:size() >= self.max then
    local q = self.items
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
      self.overflow = self.overflow + 1
      dropped = _M.lost(1, "overflow")
    end
    if marker and dropped then marker = merge(marker, dropped) else marker = marker or dropped end
    self.head = self.head - 1
    q[self.head] = marker
  end
  self.tail = self.tail + 1
  self.items[self.tail] = entry
end

-- A notification from the relay's channel into the queue: a change, a
-- large change's reference (read back when taken, in order), or a loss the
-- listener reported ("*" notes). → true when something was queued; a
-- payload that is not a JSON table is counted in counts.invalid.
function Queue:accept(n, counts)
  if n.channel == "*" then
    if n.reconnected then
      self:push(RECONNECTED)
    elseif n.overflow then
      self:push(_M.lost(n.lost, "overflow")) -- the listener's count (nil: not known)
    else
      return false
    end
    return true
  end
  local id = relay_table.id_of(n.payload)
  if id then
    self:push({ ref = id, channel = n.channel, origin = n.pid })
    return true
  end
  local change = _M.decode(n.payload)
  if not change then
    counts.invalid = counts.invalid + 1
    return false
  end
  counts.received = counts.received + 1
  self:push({ change = change, origin = n.pid })
  return true
end

-- → the oldest entry (a change or a marker), or nil when empty.
function Queue:take()
  if self.head > self.tail then return nil end
  local e = self.items[self.head]
  self.items[self.head] = nil
  self.head = self.head + 1
  return e
end

-- A marker as relay:next reports it → nil, err ("connection" with
-- err.reconnected, or "lost" with err.lost and err.reason).
function _M.failure(marker)
  if marker == RECONNECTED then
    return errors.fail("connection", "the relay reconnected: changes sent meanwhile by other servers are lost",
      { reconnected = true })
  end
  return errors.fail("lost", format("%s change%s lost (%s)%s", marker.lost or "some",
    marker.lost == 1 and " was" or "s were", marker.reason == "overflow" and "the queue overflowed"
    or "a large change could not be read back", marker.why and ": " .. tostring(marker.why) or ""),
    { lost = marker.lost, reason = marker.reason })
end

-- A change's JSON → the change (a table) | nil when it is not one.
function _M.decode(json)
  local ok, change = pcall(cjson.decode, json)
  if ok and type(change) == "table" then return change end
end

-- The next thing relay:next returns → change, origin | nil, err | nothing
-- when the queue is empty. A large change's reference is read back here,
-- through fetch(id, channel) → json | false, why | nil, err: when it is
-- gone (false) the loss is reported in its place; when it cannot be read now, it stays at
-- the head and the error is returned (the next call tries again). A stored
-- change that is not a table is skipped, counted in counts.invalid.
function Queue:next(fetch, counts)
  while true do
    local e = self:take()
    if not e then return end
    if is_marker(e) then return _M.failure(e) end
    if not e.ref then return e.change, e.origin end
    local json, err = fetch(e.ref, e.channel)
    if json then
      local change = _M.decode(json)
      if change then
        counts.received = counts.received + 1
        return change, e.origin
      end
      counts.invalid = counts.invalid + 1
    elseif json == false then
      return _M.failure(_M.lost(1, "unreadable", err))
    else
      self.head = self.head - 1
      self.items[self.head] = e
      return nil, err
    end
  end
end

return _M
