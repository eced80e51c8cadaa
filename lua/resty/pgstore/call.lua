-- SPDX-License-Identifier: MIT
-- resty.pgstore.call — how the event loop hands work to a worker thread.
--
-- call(cfg, fname, ...) runs resty.pgstore.thread's fname(...) through
-- ngx.run_worker_thread on cfg.thread_pool and returns what it returned,
-- with error tables given back their metatable. Around it:
--
-- * Admission. At most cfg.max_pending calls of this worker are in flight
--   per thread pool (an ngx.semaphore); the others wait up to
--   cfg.queue_timeout seconds, then get nil, err with code "timeout".
--   lua-nginx-module 0.10.23 crashes the worker ("free(): invalid
--   pointer") when a task is posted to a thread pool whose queue is full,
--   so the queue must never fill: every task holds one of the worker's
--   thread VMs until its result is back, so a pool with
--   max_queue >= lua_worker_thread_vm_pool_size can never overflow, and
--   max_pending <= lua_worker_thread_vm_pool_size keeps our own calls
--   waiting here instead of failing. When the VMs are all taken anyway
--   ("no available Lua vm": other code uses them too), the call retries
--   until queue_timeout, then fails with "timeout".
-- * Phases. Only where the request may yield: rewrite, access, content and
--   ngx.timer callbacks. Elsewhere it raises at once, naming the phase.
-- * Errors. A thread function that raises (misuse: a bad argument) raises
--   here with the same message; runtime failures come back as nil, err.
--   Misuse is reported at the user's line (pgstore.options).
local core = require "pgstore.core"
local options = require "pgstore.options"
local semaphore = require "ngx.semaphore"

local ngx = ngx
local type, error, select, setmetatable, getmetatable, tostring, pcall =
      type, error, select, setmetatable, getmetatable, tostring, pcall
local unpack = unpack
local run = ngx.run_worker_thread
local get_phase = ngx.get_phase
local sleep, now = ngx.sleep, ngx.now
local format = string.format

local _M = {}

local MODULE = "resty.pgstore.thread"
local error_mt = core.error_mt

local YIELDABLE = { rewrite = true, access = true, content = true, timer = true }

local REFUSED = {
  init = "is not available in init_by_lua: the master process forks the workers afterwards, "
    .. "so connections must be opened in the workers (from init_worker_by_lua with ngx.timer.at, "
    .. "or in a request)",
  init_worker = "cannot run in init_worker_by_lua itself: start an ngx.timer.at(0, …) there "
    .. "and call it from the timer",
}

-- ---- misuse -------------------------------------------------------------------------

-- Misuse raises through pgstore.options, at the innermost caller outside
-- pgstore and resty.pgstore: raise(msg), arg(n, fname, msg) ("bad argument
-- #n to 'fname' (msg)"), check(value, n, fname, "string|nil").
_M.raise = options.raise
_M.arg = options.argerror
_M.check = options.arg
local raise = _M.raise

-- Waits never shorter than a millisecond. Both round down to whole
-- milliseconds, and at 0 a semaphore returns at once without yielding,
-- while ngx.sleep(0) — without OpenResty's delayed-events patch, which
-- Debian's nginx lacks — adds a timer that expires again and again inside
-- one pass over the timers. Either way ngx.now() stops advancing, a loop
-- timing itself with it never ends, and the worker hangs.
local MIN_WAIT = 0.001

-- sema:wait(seconds), at least a millisecond.
function _M.wait(sema, seconds)
  return sema:wait(seconds > MIN_WAIT and seconds or MIN_WAIT)
end

-- ngx.sleep(seconds), at least a millisecond.
function _M.sleep(seconds)
  return sleep(seconds > MIN_WAIT and seconds or MIN_WAIT)
end

-- True where a worker thread may be used now.
function _M.yieldable()
  return YIELDABLE[get_phase()] == true
end

-- Raises unless the current phase may run a worker thread.
function _M.check_phase(fname)
  local phase = get_phase()
  if YIELDABLE[phase] then return end
  local why = REFUSED[phase] or format("cannot run in the %s phase (it cannot yield): use "
    .. "rewrite, access or content, or an ngx.timer", phase)
  raise(format("resty.pgstore: %s %s", fname, why))
end

-- ---- configuration per thread pool ----------------------------------------------

local configs = {} -- thread pool name → cfg (per worker process)

-- The shared settings of a thread pool: the first caller's values stand.
function _M.config(pool, max_pending, queue_timeout)
  local cfg = configs[pool]
  if cfg then return cfg end
  local sema = assert(semaphore.new(max_pending))
  cfg = { thread_pool = pool, max_pending = max_pending, queue_timeout = queue_timeout,
          sema = sema }
  configs[pool] = cfg
  return cfg
end

-- ---- results ------------------------------------------------------------------------

local function fix_error(err)
  if type(err) == "table" and getmetatable(err) == nil and err.code then
    setmetatable(err, error_mt)
  end
  return err
end

-- Strips "…/resty/pgstore/thread.lua:12: " and the like: the message is
-- re-raised at the caller's line.
local function bare(msg)
  msg = tostring(msg)
  return (msg:gsub("^[^\n]-%.lua:%d+: ", "", 1))
end

local function overloaded(cfg, what)
  return nil, setmetatable({
    code = "timeout",
    message = format("resty.pgstore: %s within %gs (thread pool '%s', %d calls in flight in "
      .. "this worker): raise max_pending, lua_worker_thread_vm_pool_size or the pool's threads",
      what, cfg.queue_timeout, cfg.thread_pool, cfg.max_pending - math.max(cfg.sema:count(), 0)),
  }, error_mt)
end

-- What run_worker_thread's failure (returned or raised) means.
local function failure(cfg, msg, fname)
  msg = tostring(msg)
  if msg:find("^thread pool .* not found") or msg == "thread_pool not found" then
    raise(format("resty.pgstore: thread pool '%s' not found: add `thread_pool %s threads=4 "
      .. "max_queue=1024;` to the main context of nginx.conf", cfg.thread_pool, cfg.thread_pool))
  elseif msg:find("unsupported Lua type", 1, true) or msg:find("^unsupported %a+ %a+$") then
    raise(format("resty.pgstore: %s: %s (only nil, booleans, numbers, strings and tables of "
      .. "those cross into a worker thread; functions and userdata do not)", fname, msg))
  elseif msg == "ngx_thread_task_post failed" then
    -- The queue was full (0.10.23 has usually crashed the worker by now).
    return overloaded(cfg, "the thread pool's queue is full; nothing ran")
  end
  raise(bare(msg))
end

local function pack(...)
  return { n = select("#", ...), ... }
end

-- call(cfg, fname, ...) → the thread function's results | nil, err
function _M.call(cfg, fname, ...)
  _M.check_phase(fname)
  local start = now()
  local ok, err = cfg.sema:wait(cfg.queue_timeout)
  if not ok then
    if err == "timeout" then return overloaded(cfg, "no worker thread became free") end
    raise("resty.pgstore: " .. tostring(err))
  end
  local delay = 0.001
  while true do
    local r = pack(pcall(run, cfg.thread_pool, MODULE, fname, ...))
    if not r[1] then
      cfg.sema:post(1)
      return failure(cfg, r[2], fname)
    end
    if r[2] then
      cfg.sema:post(1)
      if r[3] == nil and r.n >= 4 then return nil, fix_error(r[4]) end
      return unpack(r, 3, r.n)
    end
    local msg = r[3]
    if msg ~= "no available Lua vm" then
      cfg.sema:post(1)
      return failure(cfg, msg, fname)
    end
    -- Every thread VM of this worker is busy (with other code's calls too).
    if now() - start >= cfg.queue_timeout then
      cfg.sema:post(1)
      return overloaded(cfg, "no thread VM became free (lua_worker_thread_vm_pool_size)")
    end
    sleep(delay)
    delay = delay < 0.02 and delay * 2 or delay
  end
end

return _M
