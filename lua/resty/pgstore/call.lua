-- SPDX-License-Identifier: MIT
-- resty.pgstore.call — how work reaches nginx's worker threads, built so
-- that a worker can never starve, lose a permit or hang.
--
-- Why it cannot deadlock:
-- 1. Connection slots, on the event loop. Each pool has, per worker,
--    pool_size slots for callers and one more for the adapter's own loops
--    (feed reads, KV cleanup, lease renewal, NOTIFY after commit): an
--    ngx.semaphore each, waited on with queue_timeout. A call takes a slot
--    before it asks for a thread; a transaction, a db:acquire connection
--    and an advisory lock keep theirs until they end. The C pool has
--    exactly as many connections as there are slots, so a thread never
--    waits for a connection (its acquire is a safety net that gives up at
--    once).
-- 2. Threads. Every thread task holds a slot, runs on a handle that holds
--    one, or is one of the adapter's slotless tasks: the LISTEN wait (one
--    per pool) and the reaper (one). A slot runs one statement at a time.
--    So at most need = Σ (pool_size + 2) + 1 tasks are ever in flight on a
--    thread pool, and connect refuses a `thread_pool` whose threads or
--    max_queue are fewer (read from the running nginx: threadpool.lua).
--    Every task therefore finds a thread at once — the COMMIT of a
--    transaction that others wait for, the reaper, the feed — and the
--    queue never fills (a full queue crashes 0.10.23's workers). Lock waits
--    are bounded as well: connect's lock_timeout.
-- 3. Permits outlive their requests. A request never posts a thread task
--    itself: it hands the job to a runner — a long-lived timer of this
--    worker — and sleeps on a semaphore of its own. The runner posts the
--    task, waits for it, settles the slot and wakes the request. A client
--    abort, ngx.exit or an error kills only the request's coroutine: the
--    runner still finishes, and when nobody is left to wake it rolls back
--    the transaction whose statement it ran, or gives back the handle
--    nobody received. A transaction abandoned between two statements is
--    handed to the reaper when its tx object is collected (the reaper
--    collects garbage while such a handle sits idle) or its timeout ends.
--
-- Misuse raises through pgstore.options at the user's line; runtime
-- failures come back as nil, err.
local core = require "pgstore.core"
local errors = require "pgstore.errors"
local options = require "pgstore.options"
local semaphore = require "ngx.semaphore"
local threadpool = require "resty.pgstore.threadpool"

local ngx = ngx
local type, error, select, setmetatable, getmetatable, tostring, pcall, pairs =
      type, error, select, setmetatable, getmetatable, tostring, pcall, pairs
local collectgarbage = collectgarbage
local unpack = unpack
local run = ngx.run_worker_thread
local get_phase = ngx.get_phase
local sleep, now, timer_at, exiting = ngx.sleep, ngx.now, ngx.timer.at, ngx.worker.exiting
local log, WARN = ngx.log, ngx.WARN
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
local wait = _M.wait

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

local function pack(...)
  return { n = select("#", ...), ... }
end

-- ---- lanes: a thread pool as this worker uses it -------------------------------------

local lanes = {} -- thread pool name → lane

local function not_found(name)
  raise(format("resty.pgstore: thread pool '%s' not found: add `thread_pool %s threads=8 "
    .. "max_queue=1024;` to the main context of nginx.conf", name, name))
end

-- The lane of thread pool `name`: its job queue, its runners, and what the
-- pools using it need (the reaper's thread to begin with).
local function lane_for(name)
  local lane = lanes[name]
  if lane then return lane end
  local info = threadpool.read(name)
  if info == false then not_found(name) end
  lane = { name = name, info = info, need = 1, parts = { "1 for the reaper" },
           queue = {}, head = 1, tail = 0, jobs = semaphore.new(0),
           runners = 0, idle = 0, starting = 0 }
  lanes[name] = lane
  return lane
end

-- The rule, for a lane that is about to need `more` threads:
-- → nil | an "invalid" error naming the setting.
local function check_rule(lane, more, part)
  local need = lane.need + more
  local info = lane.info
  if info then
    local short
    if info.threads < need then
      short = format("threads=%d", info.threads)
    elseif info.max_queue < need then
      short = format("max_queue=%d", info.max_queue)
    end
    if short then
      local parts = { part }
      for i = 1, #lane.parts do parts[#parts + 1] = lane.parts[i] end
      return errors.new("invalid", format("resty.pgstore: `thread_pool %s` has %s, and this worker "
        .. "needs %d threads and queue places on it (%s): a call could then wait for a thread held "
        .. "by another that waits for it. Raise it to at least %d, or lower pool_size",
        lane.name, short, need, table.concat(parts, " + "), need))
    end
  end
  lane.need = need
  table.insert(lane.parts, 1, part)
end

-- ---- routes: a pool's slots ------------------------------------------------------------

local pools = {} -- pool key → { fg = route, bg = route }

-- The routes of the pool `key` on thread pool `thread_pool`, made once per
-- worker: fg (pool_size slots, for callers) and bg (one slot, for the
-- adapter's loops). → { fg, bg } | nil, err (the rule is broken)
function _M.routes(thread_pool, key, pool_size, queue_timeout)
  local lane = lane_for(thread_pool)
  local p = pools[key]
  if p then
    if p.fg.lane ~= lane then
      raise(format("resty.pgstore: the pool '%s' runs on thread pool '%s' already, not '%s' "
        .. "(a key names one pool: its first connect's options stand)", key, p.fg.lane.name, thread_pool))
    end
    return p
  end
  local err = check_rule(lane, pool_size + 2, format("%d for pool_size %d, its loops and its "
    .. "LISTEN", pool_size + 2, pool_size))
  if err then return nil, err end
  p = {
    fg = { lane = lane, slots = semaphore.new(pool_size), size = pool_size,
           queue_timeout = queue_timeout, what = "pool_size" },
    bg = { lane = lane, slots = semaphore.new(1), size = 1,
           queue_timeout = queue_timeout, what = "the background slot" },
  }
  p.fg.bg = p.bg
  p.bg.bg = p.bg
  pools[key] = p
  return p
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

local function timeout(message)
  return setmetatable({ code = "timeout", message = message }, error_mt)
end

-- Misuse found in a runner is raised by the request, at the user's line:
-- execute returns MISUSE, message.
local MISUSE = {}

-- What run_worker_thread's failure (returned or raised) means:
-- → MISUSE, message | nil, err.
local function failure(lane, msg, fname)
  msg = tostring(msg)
  if msg:find("^thread pool .* not found") or msg == "thread_pool not found" then
    return MISUSE, format("resty.pgstore: thread pool '%s' not found: add `thread_pool %s "
      .. "threads=8 max_queue=1024;` to the main context of nginx.conf", lane.name, lane.name)
  elseif msg:find("unsupported Lua type", 1, true) or msg:find("^unsupported %a+ %a+$") then
    return MISUSE, format("resty.pgstore: %s: %s (only nil, booleans, numbers, strings and tables "
      .. "of those cross into a worker thread; functions and userdata do not)", fname, msg)
  elseif msg == "ngx_thread_task_post failed" then
    -- The queue was full: other code shares this thread pool.
    return nil, timeout(format("resty.pgstore: thread pool '%s''s queue is full; nothing ran "
      .. "(is it shared with other code?)", lane.name))
  end
  return MISUSE, bare(msg)
end

-- Runs the job's thread function; retries while every thread VM of the
-- worker is taken (other code's calls, or lua_worker_thread_vm_pool_size
-- below the rule's need), up to the route's queue_timeout.
-- → the thread function's results | nil, err | MISUSE, message.
local function execute(job)
  local lane, route = job.route.lane, job.route
  local start, delay = now(), 0.001
  local args = job.args
  while true do
    local r = pack(pcall(run, lane.name, MODULE, job.fname, unpack(args, 1, args.n)))
    if not r[1] then return failure(lane, r[2], job.fname) end
    if r[2] then
      job.returned = true -- the thread function ran to its end (not a raise)
      if r[3] == nil and r.n >= 4 then return nil, fix_error(r[4]) end
      return unpack(r, 3, r.n)
    end
    if r[3] ~= "no available Lua vm" then return failure(lane, r[3], job.fname) end
    if now() - start >= route.queue_timeout then
      return nil, timeout(format("resty.pgstore: no thread VM became free within %gs: raise "
        .. "lua_worker_thread_vm_pool_size to at least %d (the threads of thread pool '%s')",
        route.queue_timeout, lane.need, lane.name))
    end
    sleep(delay)
    delay = delay < 0.02 and delay * 2 or delay
  end
end

-- ---- held handles --------------------------------------------------------------------

-- Parked handles that keep a slot (a transaction's or db:acquire's
-- connection, an advisory lock's): id → { slots, kind, born, busy, last }.
local held = {}

local function hold(id, slots, kind)
  local t = now()
  held[id] = { slots = slots, kind = kind, born = t, last = t, busy = 0 }
end

-- id → when a collection last found the idle handle alive (collect_abandoned).
local examined = {}

-- Gives the slot of handle id back (once, whoever comes first).
local function free(id)
  local h = held[id]
  if h then
    held[id] = nil
    examined[id] = nil
    h.slots:post(1)
  end
end
_M.free_held = free

-- ---- runners --------------------------------------------------------------------------

local RUNNER_WAIT = 1       -- seconds a runner waits for work before it looks around
local RUNNER_IDLE_EXIT = 60 -- a runner beyond the first leaves after this long without work

local submit

-- Results of new handles handed to a request, for the reaper to see
-- whether the request received them (check_unreceived): fresh ones, and
-- those a whole reaper round old.
local unwatched, aging = {}, {}


-- Runs one job: the thread call, then the slot, then whoever waits.
local function run_job(job)
  local res = pack(pcall(execute, job))
  if job.settle then pcall(job.settle, res) end
  local done = job.done
  if not done then return end
  job.res = res
  done:post(1)
  if not job.orphan then return end
  -- The request sleeps on `done`: when the post finds nobody, it is gone.
  -- It can also die after the post took it off the queue and before it
  -- resumed (within this pass of the event loop): for a new handle, which
  -- nobody else knows of (watch), the reaper — a timer already running,
  -- which a full lua_max_running_timers cannot drop — looks a round later
  -- whether the request received it. (A transaction's statement
  -- needs no watch: its tx object's collection finds an owner that died.)
  if done:count() > 0 then
    pcall(job.orphan, res)
  elseif job.watch then
    unwatched[#unwatched + 1] = job
  end
end

-- Called by the reaper: cleans up after results nobody received. A result
-- is judged a round after it was handed over — the reaper's timer can run
-- in the same pass of the event loop as the post, before the request it
-- wakes has resumed — so every living request has received its own.
function _M.check_unreceived()
  local jobs = aging
  aging, unwatched = unwatched, {}
  for i = 1, #jobs do
    local job = jobs[i]
    if not job.received then pcall(job.orphan, job.res) end
  end
end

-- A runner serves until the worker exits and no job is left (a premature
-- start — the worker shutting down — still serves: a queued job belongs to
-- a request still being answered); one beyond the first also leaves after
-- a minute without work.
local function runner(_, lane)
  if lane.starting > 0 then lane.starting = lane.starting - 1 end
  lane.runners = lane.runners + 1
  local last = now()
  while true do
    lane.idle = lane.idle + 1
    local ok = lane.jobs:wait(RUNNER_WAIT)
    lane.idle = lane.idle - 1
    if ok then
      local job = lane.queue[lane.head]
      lane.queue[lane.head] = nil
      lane.head = lane.head + 1
      if not job.cancelled then
        job.started = true
        run_job(job)
      end
      last = now()
    elseif lane.head > lane.tail
        and (exiting() or (lane.runners > 1 and now() - last > RUNNER_IDLE_EXIT)) then
      break
    end
  end
  lane.runners = lane.runners - 1
end

-- Queues job on its lane, starting a runner when none is free for it.
-- → true | nil, why (no runner, and none can start)
function submit(job)
  local lane = job.route.lane
  local queued = lane.tail - lane.head + 2
  if queued > lane.idle + lane.starting then
    local ok, err = timer_at(0, runner, lane)
    if ok then
      lane.starting = lane.starting + 1
    elseif lane.runners + lane.starting == 0 then
      return nil, err
    end
  end
  lane.tail = lane.tail + 1
  lane.queue[lane.tail] = job
  lane.jobs:post(1)
  return true
end

-- What settle sees for a job that never ran.
local function not_run(err)
  return pack(true, nil, err)
end

-- Hands the job to a runner and sleeps until it is done. → its results.
-- A job no runner took within queue_timeout (no timer could run one:
-- lua_max_running_timers) is taken back: its slot is given back, and the
-- caller gets `timeout`. Once a runner has it, the call waits for it.
local FOREVER = 86400 * 7
local function await(job)
  job.done = semaphore.new(0)
  local route = job.route
  local ok, err = submit(job)
  if not ok then
    local e = timeout("resty.pgstore: no runner timer can start (" .. tostring(err)
      .. "): raise lua_max_pending_timers")
    if job.settle then job.settle(not_run(e)) end
    return nil, e
  end
  ok, err = wait(job.done, route.queue_timeout)
  if not ok and err == "timeout" and not job.started then
    job.cancelled = true
    route.lane.starting = 0 -- the runners counted as starting never ran
    local e = timeout(format("resty.pgstore: no runner took the call within %gs: raise "
      .. "lua_max_running_timers (runners are timers of the worker)", route.queue_timeout))
    if job.settle then job.settle(not_run(e)) end
    return nil, e
  end
  while not ok and err == "timeout" do ok, err = job.done:wait(FOREVER) end
  if not ok then raise("resty.pgstore: " .. tostring(err)) end
  local res = job.res
  job.received = true
  if not res[1] then error(res[2], 0) end
  if res[2] == MISUSE then raise(res[3]) end
  return unpack(res, 2, res.n)
end

-- A job nobody waits for (cleaning up after an orphan).
local function detach(route, fname, settle, ...)
  local job = { route = route, fname = fname, args = pack(...), settle = settle }
  if not submit(job) then run_job(job) end
end

-- ---- taking slots ------------------------------------------------------------------------

local function overloaded(route, seconds)
  local free_now = route.slots:count()
  return nil, timeout(format("resty.pgstore: no connection became free within %gs (%d of "
    .. "%s %d in use by this worker): raise pool_size, or make transactions shorter",
    seconds, route.size - (free_now > 0 and free_now or 0), route.what, route.size))
end

-- Waits for a slot of route on the event loop. → true | nil, err
local function take(route, seconds)
  seconds = seconds or route.queue_timeout
  local ok, err = wait(route.slots, seconds)
  if ok then return true end
  if err == "timeout" then return overloaded(route, seconds) end
  raise("resty.pgstore: " .. tostring(err))
end

local function release_slot(slots)
  return function() slots:post(1) end
end

-- ---- the calls ----------------------------------------------------------------------------

-- call(route, fname, ...) → thread.fname(...)'s results | nil, err
-- with one of the route's slots for the time of the call.
function _M.call(route, fname, ...)
  _M.check_phase(fname)
  local ok, err = take(route)
  if not ok then return nil, err end
  return await({ route = route, fname = fname, args = pack(...), settle = release_slot(route.slots) })
end

-- call2(route_a, route_b, fname, ...): with a slot of each (two
-- connections; the routes may be one pool's).
function _M.call2(a, b, fname, ...)
  _M.check_phase(fname)
  local ok, err = take(a)
  if not ok then return nil, err end
  ok, err = take(b)
  if not ok then
    a.slots:post(1)
    return nil, err
  end
  return await({ route = a, fname = fname, args = pack(...),
                 settle = function() a.slots:post(1); b.slots:post(1) end })
end

-- What gives back a handle that nobody received or that was abandoned:
-- by kind, the thread function and its arguments.
local RELEASE = {
  tx = { "unpin", false }, conn = { "unpin", nil }, lock = { "lock_call", "release" },
}

local function release_handle(route, id, kind)
  local how = RELEASE[kind]
  detach(route, how[1], function() free(id) end, id, how[2])
end

-- pin(route, kind, fname, ...) → id, ... | nil, err: fname makes a parked
-- handle (a pinned connection, a lock) and returns its id first; the
-- slot stays with the handle (kind "tx", "conn" or "lock") until
-- unpin(). keep(res) decides, when given, whether the handle holds a
-- connection at all (a table-mode lock does not).
function _M.pin(route, kind, fname, timeout_s, keep, ...)
  _M.check_phase(fname)
  local ok, err = take(route, timeout_s)
  if not ok then return nil, err end
  local slots = route.slots
  return await({
    route = route, fname = fname, args = pack(...), watch = true,
    settle = function(res)
      local id = res[1] and type(res[2]) == "number" and res[2]
      if id and (not keep or keep(res)) then
        hold(id, slots, kind)
      else
        slots:post(1)
      end
    end,
    orphan = function(res)
      -- A handle without a connection (a table-mode lock) ends with its TTL.
      local id = res[1] and type(res[2]) == "number" and res[2]
      if id and held[id] then release_handle(route, id, kind) end
    end,
  })
end

-- on(route, id, fname, ...) → results: a call on held handle id, whose
-- slot covers it. A transaction whose request is gone mid-statement is
-- rolled back and given back at once.
function _M.on(route, id, fname, ...)
  _M.check_phase(fname)
  local h = held[id]
  if h then h.busy = h.busy + 1 end
  return await({
    route = route, fname = fname, args = pack(...),
    settle = function()
      if h then h.busy, h.last = h.busy - 1, now() end
    end,
    orphan = function()
      if h and held[id] == h and h.kind == "tx" then release_handle(route, id, "tx") end
    end,
  })
end

-- unpin(route, id, fname, ...) → results: the last call on handle id
-- (COMMIT, ROLLBACK, release); its slot is free afterwards. When the
-- thread function did not run to its end (no thread VM; the handle busy
-- with another statement of the same transaction), the handle is still
-- parked or out: it is marked for the reaper, which gives the slot back
-- once the handle is idle again.
function _M.unpin(route, id, fname, ...)
  _M.check_phase(fname)
  local job = { route = route, fname = fname, args = pack(...) }
  job.settle = function()
    if job.returned then free(id) else core.park_expire(id) end
  end
  return await(job)
end

-- unslotted(route, fname, ...) → results: the adapter's slotless tasks
-- (the LISTEN connection's calls, the reaper), counted in the rule.
function _M.unslotted(route, fname, ...)
  _M.check_phase(fname)
  return await({ route = route, fname = fname, args = pack(...) })
end

-- ---- the reaper's view ------------------------------------------------------------------

-- Finding abandoned handles by collection. A handle idle for IDLE_GC
-- seconds that no collection has looked at since it went idle is a new
-- candidate: its owner may be gone (ngx.exit in fn, a client abort while
-- fn or a lock holder waited on something else), and collecting its tx or
-- lock object would hand it to the reaper. Candidates a collection already
-- found alive are looked at again after a pause that doubles up to
-- RECHECK_MAX while collections find nothing; a handle's later statements
-- do not make it new again. On a small heap the collection is full (about
-- 10 ms at FULL_GC_KB); past it, one incremental step, so a big heap never
-- stalls the event loop — there an abandoned transaction may wait for the
-- normal collector or its timeout.
local IDLE_GC, RECHECK_MIN, RECHECK_MAX = 0.5, 1, 60
local FULL_GC_KB, STEP_KB = 8 * 1024, 1024
local last_gc, recheck = 0, RECHECK_MIN

function _M.collect_abandoned()
  local t = now()
  if t - last_gc < IDLE_GC then return end
  local any, new = false, false
  for id, h in pairs(held) do
    if h.busy == 0 and t - h.last >= IDLE_GC then
      any = true
      if not examined[id] then new = true end
    end
  end
  if not any or (not new and t - last_gc < recheck) then return end
  last_gc = t
  if collectgarbage("count") < FULL_GC_KB then
    collectgarbage()
  else
    collectgarbage("step", STEP_KB)
  end
  if core.park_stats().expired > 0 then
    recheck = RECHECK_MIN
  elseif not new then
    recheck = math.min(recheck * 2, RECHECK_MAX)
  end
  for id, h in pairs(held) do
    if h.busy == 0 and t - h.last >= IDLE_GC then examined[id] = t end
  end
end

-- stats() → { held, runners, idle, need, threads, max_queue } per lane name.
function _M.stats()
  local n = 0
  for _ in pairs(held) do n = n + 1 end
  local out = { held = n, lanes = {} }
  for name, lane in pairs(lanes) do
    out.lanes[name] = { runners = lane.runners, idle = lane.idle, queued = lane.tail - lane.head + 1,
                        need = lane.need, threads = lane.info and lane.info.threads,
                        max_queue = lane.info and lane.info.max_queue }
  end
  return out
end

-- slots(route) → free slots of the route's pool (callers' and background).
function _M.slots(route)
  return { free = route.slots:count(), size = route.size,
           background_free = route.bg.slots:count() }
end

return _M
