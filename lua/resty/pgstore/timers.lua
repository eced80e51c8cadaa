-- SPDX-License-Identifier: MIT
-- resty.pgstore.timers — background work of a worker process, on
-- ngx.timer.at loops:
--
--   every(name, interval, fn, { dict = "shared dict", ttl = s })
--       runs fn() every `interval` seconds in this worker; with `dict`, in
--       one worker of the whole nginx at a time (see elect()).
--   reaper(cfg)        gives back parked handles whose time is up
--   notify(db, channel, position)
--                      a coalesced NOTIFY after appends (one per 5 ms per
--                      channel and worker, and always one after the last)
--
-- Every loop ends when its timer is premature or ngx.worker.exiting() says
-- the worker is shutting down, so `nginx -s quit` is never held up.
local call_mod = require "resty.pgstore.call"

local ngx = ngx
local timer_at, now, log = ngx.timer.at, ngx.now, ngx.log
local sleep = call_mod.sleep
local exiting = ngx.worker.exiting
local WARN, ERR = ngx.WARN, ngx.ERR
local pcall, tostring = pcall, tostring
local format = string.format

local _M = {}

local NAP = 0.5 -- the longest sleep of a loop between looks at exiting()

-- ---- one worker per nginx ----------------------------------------------------------

-- Holds the election `key` in the shared dict for ttl seconds: the worker
-- that adds the key holds it and renews it each round; when it dies or
-- stops renewing, the key expires and another worker's next add wins.
-- Between the holder's get and its renewing set another worker cannot
-- win (the key exists throughout) unless the holder was already late by
-- a whole ttl; jobs run this way should be safe to overlap in that rare
-- case (KV cleanup, lease renewal are).
local function elect(dict, key, ttl)
  local me = ngx.worker.pid()
  local ok, err = dict:add(key, me, ttl)
  if ok then return true end
  if err ~= "exists" then
    log(WARN, "resty.pgstore: election for ", key, " failed: ", err)
    return false
  end
  if dict:get(key) == me then
    dict:set(key, me, ttl)
    return true
  end
  return false
end
_M.elect = elect

local function resign(dict, key)
  if dict and dict:get(key) == ngx.worker.pid() then dict:delete(key) end
end

local running = {} -- name → true while its loop runs in this worker
local stopping = {} -- name → true: end the loop at its next look

-- Ends the loop `name` (at its next look, within NAP seconds).
function _M.stop(name)
  if running[name] then stopping[name] = true end
end

-- every(name, interval, fn[, opts]) → true | nil, err. A second call with
-- a name already running in this worker does nothing. fn's errors are
-- logged (warn) and the loop goes on. opts.dict: the lua_shared_dict that
-- elects one worker; opts.ttl: the election's lifetime (3 × interval).
-- opts.stop(): called once when the loop ends.
function _M.every(name, interval, fn, opts)
  if running[name] then return true end
  opts = opts or {}
  local dict
  if opts.dict then
    dict = ngx.shared[opts.dict]
    if not dict then
      call_mod.raise(format("resty.pgstore: lua_shared_dict '%s' is not defined in nginx.conf", opts.dict))
    end
  end
  local ttl = opts.ttl or math.max(interval * 3, 1)
  local key = "resty.pgstore:" .. name
  local function loop(premature)
    while not premature and not exiting() and not stopping[name] do
      if not dict or elect(dict, key, ttl) then
        local ok, err = pcall(fn)
        if not ok then log(WARN, "resty.pgstore: ", name, ": ", tostring(err)) end
      end
      -- Short naps, so a shutting-down worker is never kept waiting.
      local wake = now() + interval
      while not exiting() and not stopping[name] do
        local left = wake - now()
        if left <= 0 then break end
        sleep(left < NAP and left or NAP)
      end
    end
    running[name], stopping[name] = nil, nil
    resign(dict, key)
    if opts.stop then pcall(opts.stop) end
  end
  local ok, err = timer_at(0, loop)
  if not ok then return nil, err end
  running[name] = true
  return true
end

-- ---- the reaper -----------------------------------------------------------------------

local REAP_INTERVAL = 0.25

local core = require "pgstore.core"

-- Starts (once per worker and thread pool) the loop that rolls back and
-- gives back parked handles whose deadline has passed or whose owner was
-- garbage-collected. It looks at the registry four times a second (no
-- I/O) and only calls a thread when something is due; before, it collects
-- garbage when a held connection sits idle (resty.pgstore.call), so one
-- abandoned by ngx.exit is back within about a second.
function _M.reaper(cfg)
  local name = "reaper:" .. cfg.lane.name
  if running[name] then return end
  local ok, err = _M.every(name, REAP_INTERVAL, function()
    call_mod.check_unreceived()
    call_mod.collect_abandoned()
    if core.park_stats().expired > 0 then
      local ids, rerr = call_mod.unslotted(cfg, "reap")
      if not ids then
        log(WARN, "resty.pgstore: reaper: ", tostring(rerr))
      else
        for i = 1, #ids do call_mod.free_held(ids[i]) end
      end
    end
  end)
  if not ok then log(ERR, "resty.pgstore: cannot start the reaper: ", err) end
end

-- ---- coalesced NOTIFY after appends ---------------------------------------------

local NOTIFY_INTERVAL = 0.005
local pending = {} -- db key .. channel → { db, channel, position }
local sent_at = {} -- db key .. channel → when its last NOTIFY left

local function flush(premature, k)
  local p = pending[k]
  pending[k] = nil
  if not p or premature then return end
  sent_at[k] = ngx.now()
  local ok, err = call_mod.call(p.db.cfg.bg, "notify", p.db.spec, p.channel, format("%d", p.position))
  if not ok then
    -- A hint only: readers catch up from stored positions anyway.
    log(WARN, "resty.pgstore: NOTIFY ", p.channel, " failed: ", tostring(err))
  end
end

-- After a committed append: NOTIFY channel with the position. The first
-- after a quiet spell leaves at once; within `interval` seconds (0.005) of
-- the last one they are coalesced into one, sent when the interval ends.
function _M.notify(db, channel, position, interval)
  local k = db.key .. "\0" .. channel
  local p = pending[k]
  if p then
    if position > p.position then p.position = position end
    return
  end
  pending[k] = { db = db, channel = channel, position = position }
  local wait = (sent_at[k] or 0) + (interval or NOTIFY_INTERVAL) - ngx.now()
  local ok, err = timer_at(wait > 0 and wait or 0, flush, k)
  if not ok then
    pending[k] = nil
    log(WARN, "resty.pgstore: cannot schedule NOTIFY: ", err)
  end
end

return _M
