-- SPDX-License-Identifier: MIT
-- pgstore.outage — riding through a lost connection to the server: what
-- the projection runner, `pgstore tail --follow` and subscriptions share.
-- A step that fails with `connection` (libpq lost the server; SQLSTATE
-- class 08, 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot
-- connect now: core/error.c) is tried again after a backoff, for as long
-- as it takes; any other error is the caller's, as before. The outage is
-- told twice at most: when it begins, and when the server answers again,
-- with its duration.
--
--   local ride = outage.new{ what = "tail", say = host.say }
--   local rows, err = ride:call(read, { stopping = sys.interrupted })
--
-- Backoff: 0.1 s, doubling to a cap of 5 s, each wait drawn between half
-- and all of it (jitter, so that many hosts do not come back in
-- lockstep). A restart or a failover takes seconds; past the cap a host
-- retries every 2.5–5 s, which costs a down server nothing and brings the
-- host back at most 5 s after the server. No give-up: a host exists to
-- follow the store, and a supervisor would only start it again.
local core = require "pgstore.core"

local type, tostring, floor, min, format = type, tostring, math.floor, math.min, string.format
local now, sleep = core.now, core.sleep

local _M = { FIRST = 0.1, CAP = 5 }

local Ride = {}
local mt = { __index = Ride, __name = "pgstore.outage", __metatable = false }

-- Whether err means the connection to the server is gone.
function _M.lost(err)
  return type(err) == "table" and err.code == "connection"
end

-- A seed of its own per process (LuaJIT's math.random starts the same
-- everywhere): the clock's fraction and the address of a fresh table.
local seed = floor((now() % 1) * 1e6 + tonumber(tostring({}):match("0x(%x+)") or "1", 16) % 2147483) % 2147483646 + 1

-- A number in [0, 1) (Park–Miller; exact in doubles).
local function random()
  seed = seed * 16807 % 2147483647
  return (seed - 1) / 2147483646
end

-- outage.new{ what = "name in the lines", say = fn(msg)|nil, first, cap }
function _M.new(opts)
  opts = opts or {}
  return setmetatable({ what = opts.what or "pgstore", say = opts.say, first = opts.first or _M.FIRST,
                        cap = opts.cap or _M.CAP, since = nil, attempts = 0 }, mt)
end

local function tell(self, msg)
  if self.say then self.say(format("%s: %s", self.what, msg)) end
end

-- Seconds to wait before the next attempt.
function Ride:delay()
  local d = min(self.cap, self.first * 2 ^ min(self.attempts - 1, 30))
  return d / 2 + random() * d / 2
end

-- An attempt failed with err (a lost connection): said once per outage.
function Ride:lost(err)
  if not self.since then
    self.since, self.attempts = now(), 0
    tell(self, format("connection to the server lost (%s); reconnecting with backoff",
      tostring(err and err.message or err)))
  end
  self.attempts = self.attempts + 1
end

-- An attempt succeeded: ends the outage, if there was one.
function Ride:back()
  if not self.since then return end
  tell(self, format("connection back after %.1f s (%d failed attempt%s)", now() - self.since, self.attempts,
    self.attempts == 1 and "" or "s"))
  self.since, self.attempts = nil, 0
end

-- Whether an outage is going on (since when).
function Ride:down()
  return self.since
end

-- Waits out the backoff in slices, so that a signal (stopping()) or the
-- caller's deadline ends it early. → true to try again | false to stop
function Ride:pause(stopping, deadline)
  local until_ = now() + self:delay()
  if deadline and deadline < until_ then until_ = deadline end
  while true do
    if stopping and stopping() then return false end
    local left = until_ - now()
    if left <= 0 then break end
    sleep(min(left, 0.1))
  end
  return not (deadline and now() >= deadline)
end

-- ride:call(fn, { stopping = fn → bool, deadline = core.now()-based }) →
-- fn's results; fn() returning nil, err with a lost connection is called
-- again after the backoff until it answers, stopping() holds or the
-- deadline passed (then nil, err: the last lost connection).
function Ride:call(fn, o)
  local stopping, deadline = o and o.stopping, o and o.deadline
  while true do
    local res, err = fn()
    if res ~= nil or not _M.lost(err) then
      if res ~= nil then self:back() end
      return res, err
    end
    self:lost(err)
    if not self:pause(stopping, deadline) then return nil, err end
  end
end

return _M
