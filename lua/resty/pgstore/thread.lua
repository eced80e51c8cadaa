-- SPDX-License-Identifier: MIT
-- resty.pgstore.thread — what runs inside ngx.run_worker_thread. Every
-- libpq call resty.pgstore makes happens here, on a thread of nginx's pool,
-- through the plain pgstore modules; the nginx event loop only sends
-- arguments and receives results (plain data: nil, booleans, numbers,
-- strings, lightuserdata and tables of those).
--
-- A thread VM lives for the whole worker process and serves many calls, one
-- at a time. It keeps what is worth keeping between calls: a pgstore db per
-- shared pool key (the pools themselves are process-wide, see core.pool's
-- `shared`) and each store it has opened (opening migrates). Handles that
-- outlive a call — a transaction's pinned connection, a held lock, a lease,
-- the worker's listener — are parked in the process-wide registry of
-- pgstore.core (core.park) and found again by id, by whichever VM runs the
-- next call. Thread VMs are not garbage-collected between calls by nginx
-- 0.10.23, so nothing here relies on __gc to give a connection back: every
-- borrowed handle is released or parked again before returning, and the
-- heap is collected once it has grown (collect()).
--
-- No ngx.* here: thread VMs have no ngx API in lua-nginx-module 0.10.23.
local pgstore = require "pgstore"
local core = require "pgstore.core"
local Tx = require "pgstore.tx"

local type, pairs, pcall, unpack, error, tostring = type, pairs, pcall, unpack, error, tostring
local collectgarbage = collectgarbage

local _M = {}

-- ---- the heap ---------------------------------------------------------------

local COLLECT_MIN_KB = 8192
local collect_at = COLLECT_MIN_KB

-- A full collection costs ~0.3 ms on a small heap, ten times a call, so it
-- runs only after the heap has doubled since the last one.
local function collect()
  if collectgarbage("count") > collect_at then
    collectgarbage()
    local live = collectgarbage("count")
    collect_at = live * 2 > COLLECT_MIN_KB and live * 2 or COLLECT_MIN_KB
  end
end

-- Returns its arguments after collect(), for `return done(f(...))`.
local function done(...)
  collect()
  return ...
end

-- A plain copy of an error (run_worker_thread drops metatables anyway).
local function plain(err)
  if type(err) ~= "table" then return err end
  local out = {}
  for k, v in pairs(err) do
    if type(v) ~= "table" and type(v) ~= "function" and type(v) ~= "userdata" then out[k] = v end
  end
  return out
end

local function fail(code, message)
  return nil, { code = code, message = message }
end

-- ---- dbs and stores -----------------------------------------------------------

local dbs = {}    -- shared key → pgstore db
local stores = {} -- shared key .. "|" .. store key → store

-- spec: pgstore.connect options with `shared` = the pool key.
local function db_for(spec)
  local db = dbs[spec.shared]
  if db then return db end
  local err
  db, err = pgstore.connect(spec)
  if not db then return nil, err end
  dbs[spec.shared] = db
  return db
end
_M.db_for = db_for

-- A store of `kind` opened with sopts on the db of spec, cached under skey.
local function store_for(spec, kind, skey, sopts)
  local k = spec.shared .. "|" .. skey
  local s = stores[k]
  if s then return s end
  local db, err = db_for(spec)
  if not db then return nil, err end
  s, err = db[kind](db, sopts)
  if not s then return nil, err end
  stores[k] = s
  return s
end

-- ---- queries ----------------------------------------------------------------------

function _M.query(spec, sql, ...)
  local db, err = db_for(spec)
  if not db then return done(nil, plain(err)) end
  return done(db:query(sql, ...))
end

function _M.exec(spec, sql, ...)
  local db, err = db_for(spec)
  if not db then return done(nil, plain(err)) end
  return done(db:exec(sql, ...))
end

function _M.notify(spec, channel, payload)
  local db, err = db_for(spec)
  if not db then return done(nil, plain(err)) end
  return done(db:notify(channel, payload))
end

function _M.causal_token(spec)
  local db, err = db_for(spec)
  if not db then return done(nil, plain(err)) end
  return done(db:causal_token())
end

-- Runs require(module)[fname](db, ...) with a plain pgstore db: for work
-- that needs many statements and logic between them in one trip.
function _M.run(spec, module, fname, ...)
  local db, err = db_for(spec)
  if not db then return done(nil, plain(err)) end
  local mod = require(module)
  local f = type(mod) == "table" and mod[fname]
  if type(f) ~= "function" then
    error(("module '%s' has no function '%s'"):format(module, tostring(fname)), 0)
  end
  return done(f(db, ...))
end

-- ---- pinned connections (transactions, db:acquire) ---------------------------------

-- Borrows a connection, optionally BEGINs, and parks it until `deadline`
-- (core.now() seconds; 0: none). The caller holds a connection slot, so the
-- pool has one free (resty.pgstore.call): acquire never waits here.
-- → id | nil, err
function _M.pin(spec, iso, deadline)
  local db, err = db_for(spec)
  if not db then return done(nil, plain(err)) end
  local conn
  conn, err = db.pool:acquire()
  if not conn then return done(nil, plain(err)) end
  if iso then
    local ok
    ok, err = conn:begin(iso)
    if not ok then
      conn:release()
      return done(nil, plain(err))
    end
  end
  return done(core.park(conn, deadline))
end

local GONE = "the connection was given back: its transaction timed out, or it was released"

local CONN_METHODS = {
  query = true, exec = true, begin = true, commit = true, rollback = true, savepoint = true,
  rollback_to = true, release_savepoint = true, tx_status = true, backend_pid = true,
}

-- Runs one method of a parked connection and parks it again.
function _M.conn(id, method, ...)
  if not CONN_METHODS[method] then error("unknown connection method '" .. tostring(method) .. "'", 0) end
  local conn = core.unpark(id, true)
  if not conn then return done(fail("timeout", GONE)) end
  local res = { pcall(conn[method], conn, ...) }
  core.repark(id, conn)
  if not res[1] then error(res[2], 0) end
  return done(unpack(res, 2, table.maxn(res)))
end

-- A parked connection inside a transaction as a pgstore tx, for the
-- stores' { tx = tx } and for core.xact_lock.
function _M.tx_lock(id, key, timeout, try)
  local conn = core.unpark(id, true)
  if not conn then return done(fail("timeout", GONE)) end
  local res
  if try then
    res = { pcall(core.xact_try_lock, conn, key) }
  else
    res = { pcall(core.xact_lock, conn, key, timeout) }
  end
  core.repark(id, conn)
  if not res[1] then error(res[2], 0) end
  return done(res[2], plain(res[3]))
end

function _M.tx_notify(id, channel, payload)
  local conn = core.unpark(id, true)
  if not conn then return done(fail("timeout", GONE)) end
  local ok, res, err = pcall(core.notify, nil, conn, channel, payload)
  core.repark(id, conn)
  if not ok then error(res, 0) end
  return done(res, plain(err))
end

-- Ends a pinned connection: commit (true), rollback (false) or neither
-- (nil, for db:acquire's release), then back to the pool.
function _M.unpin(id, commit)
  local conn = core.unpark(id)
  if not conn then
    if commit then return done(fail("timeout", GONE)) end
    return done(true)
  end
  local ok, err = true, nil
  if commit == true then
    ok, err = conn:commit()
  elseif commit == false then
    ok, err = conn:rollback()
  end
  conn:release()
  return done(ok, plain(err))
end

-- ---- stores ----------------------------------------------------------------------------

local STORE_METHODS = {
  events = { append = true, append_many = true, read = true, read_all = true, version = true,
             status = true, latest_position = true, hold_end = true, expire_idempotency_keys = true,
             tombstone = true, archive = true,
             restore = true, delete = true, truncate = true, migrate = true },
  snapshots = { migrate = true, save = true, load = true, invalidate = true, invalidate_all = true },
  checkpoints = { migrate = true, load = true, save = true, delete = true, list = true },
  exec_checkpoints = { migrate = true, save = true, load = true, list = true, delete = true },
  sessions = { migrate = true, load = true, save = true, delete = true },
  kv = { migrate = true, set = true, get = true, delete = true, delete_prefix = true, cleanup = true },
}

-- Opens (or finds) a store: → true | nil, err.
function _M.store_open(spec, kind, skey, sopts)
  local s, err = store_for(spec, kind, skey, sopts)
  if not s then return done(nil, plain(err)) end
  return done(true)
end

-- s:method(...) on the store; with txid, argument number txarg (an options
-- table) gets { tx = the pinned transaction }. nargs counts the arguments,
-- nils included.
function _M.store(spec, kind, skey, sopts, method, txid, txarg, nargs, ...)
  local methods = STORE_METHODS[kind]
  if not (methods and methods[method]) then
    error(("unknown %s method '%s'"):format(tostring(kind), tostring(method)), 0)
  end
  local s, err = store_for(spec, kind, skey, sopts)
  if not s then return done(nil, plain(err)) end
  local args = { ... }
  local conn
  if txid then
    conn = core.unpark(txid, true)
    if not conn then return done(fail("timeout", GONE)) end
    local o = args[txarg] or {}
    o.tx = Tx.new(conn)
    args[txarg] = o
    if txarg > nargs then nargs = txarg end
  end
  local res = { pcall(s[method], s, unpack(args, 1, nargs)) }
  if conn then core.repark(txid, conn) end
  if not res[1] then error(res[2], 0) end
  if res[2] == nil then return done(nil, plain(res[3])) end
  return done(unpack(res, 2, table.maxn(res)))
end

-- Moves a stream between two event stores (archive_to / restore_from):
-- src and dst are { spec, skey, sopts }.
function _M.events_move(src, dst, stream, method)
  local a, err = store_for(src[1], "events", src[2], src[3])
  if not a then return done(nil, plain(err)) end
  local b
  b, err = store_for(dst[1], "events", dst[2], dst[3])
  if not b then return done(nil, plain(err)) end
  local ok, n
  if method == "archive_to" then
    ok, n, err = pcall(a.archive_to, a, stream, b)
  else
    ok, n, err = pcall(b.restore_from, b, stream, a)
  end
  if not ok then error(n, 0) end
  return done(n, plain(err))
end

-- ---- locks ---------------------------------------------------------------------------------

-- db:lock / db:try_lock: → id, token, pinned (an advisory lock keeps its
-- connection) | false (try: held elsewhere) | nil, err
function _M.lock(spec, key, opts, try, deadline)
  local db, err = db_for(spec)
  if not db then return done(nil, plain(err)) end
  local lock
  if try then
    lock, err = db:try_lock(key, opts)
  else
    lock, err = db:lock(key, opts)
  end
  if not lock then
    if err == nil then return done(false) end
    return done(nil, plain(err))
  end
  local token = lock:token()
  local pinned = opts == nil or opts.mode == nil or opts.mode == "advisory"
  return done(core.park(lock, deadline), token, pinned)
end

-- lock:renew() / lock:release() on a parked lock.
function _M.lock_call(id, method)
  if method == "release" then
    local lock = core.unpark(id)
    if not lock then return done(true) end
    local ok, res, err = pcall(lock.release, lock)
    if not ok then error(res, 0) end
    return done(res, plain(err))
  end
  if method ~= "renew" and method ~= "held" then
    error("unknown lock method '" .. tostring(method) .. "'", 0)
  end
  local lock = core.unpark(id, true)
  if not lock then
    if method == "held" then return done(false) end
    return done(fail("lease_lost", "the lock was already released"))
  end
  local ok, res, err = pcall(lock[method], lock)
  core.repark(id, lock)
  if not ok then error(res, 0) end
  return done(res, plain(err))
end

-- lock_guard(txid, key, token, opts): core.lock_guard on the pinned
-- transaction: fails with lease_lost unless token is still current.
function _M.lock_guard(txid, key, token, opts)
  local conn = core.unpark(txid, true)
  if not conn then return done(fail("timeout", GONE)) end
  local ok, res, err = pcall(core.lock_guard, conn, key, token, opts)
  core.repark(txid, conn)
  if not ok then error(res, 0) end
  return done(res, plain(err))
end

-- ---- leases ---------------------------------------------------------------------------------

local function lease_state(lease)
  local info = lease:info()
  return { owned = lease:owned(), info = plain(info), last_error = plain(info.last_error) }
end

-- → id, state | nil, err
function _M.lease_open(spec, opts)
  local db, err = db_for(spec)
  if not db then return done(nil, plain(err)) end
  local lease
  lease, err = core.lease(db.pool, opts)
  if not lease then return done(nil, plain(err)) end
  local state = lease_state(lease)
  return done(core.park(lease), state)
end

-- tick / release / close: → changes, state | nil, err
function _M.lease_call(id, method)
  if method == "close" then
    local lease = core.unpark(id)
    if lease then lease:close() end
    return done(true)
  end
  local lease = core.unpark(id, true)
  if not lease then return done(fail("closed", "the partition set was closed")) end
  local ok, changes, err = pcall(lease[method], lease)
  local state = ok and lease_state(lease)
  core.repark(id, lease)
  if not ok then error(changes, 0) end
  if not changes then return done(nil, plain(err)) end
  return done(changes, state)
end

-- pm:guard(tx, p, token) inside the pinned transaction txid.
function _M.lease_guard(id, txid, p, token)
  local lease = core.unpark(id, true)
  if not lease then return done(fail("closed", "the partition set was closed")) end
  local conn = core.unpark(txid, true)
  if not conn then
    core.repark(id, lease)
    return done(fail("timeout", GONE))
  end
  local ok, res, err = pcall(lease.guard, lease, conn, p, token)
  core.repark(txid, conn)
  core.repark(id, lease)
  if not ok then error(res, 0) end
  return done(res, plain(err))
end

-- ---- the worker's listener -----------------------------------------------------------------

local function listener_state(l)
  local st = l:stats()
  return l:fd(), l:due(), st.pid, st.connected
end

-- → id, fd, due, pid, connected | nil, err
function _M.listener_open(opts, channels)
  local l, err = core.listener(opts, channels)
  if not l then return done(nil, plain(err)) end
  local fd, due, pid, connected = listener_state(l)
  return done(core.park(l), fd, due, pid, connected)
end

-- The hub's waiting call: blocks in poll(2) on the listener's socket and
-- on wake_fd (the hub's eventfd, written by the event loop when it needs
-- the listener back) for up to `timeout` seconds, heartbeats and
-- reconnects included; then takes up to max notifications without
-- waiting. So a commit reaches the event loop in one thread wake-up.
-- wake_fd nil: the same with a plain wait (returns on a notification or
-- the timeout). → notifications, fd, due, pid, connected | nil, err
function _M.listener_wait(id, max, timeout, wake_fd)
  local l = core.unpark(id, true)
  if not l then return done(fail("closed", "the listener was closed")) end
  local out, n = {}, 0
  local ok, err = pcall(function()
    local note = l:wait(timeout, wake_fd)
    while note do
      n = n + 1
      out[n] = note
      if n >= max then break end
      note = l:wait(0)
    end
  end)
  local fd, due, pid, connected = listener_state(l)
  core.repark(id, l)
  if not ok then error(err, 0) end
  return done(out, fd, due, pid, connected)
end

-- add / remove a channel, or notify(channel, payload, timeout) on the
-- listener's own connection (its echo is dropped: ignore_self).
function _M.listener_call(id, method, ...)
  if method ~= "add" and method ~= "remove" and method ~= "notify" then
    error("unknown listener method '" .. tostring(method) .. "'", 0)
  end
  local l = core.unpark(id, true)
  if not l then return done(fail("closed", "the listener was closed")) end
  local ok, res, err = pcall(l[method], l, ...)
  core.repark(id, l)
  if not ok then error(res, 0) end
  return done(res, plain(err))
end

function _M.listener_close(id)
  local l = core.unpark(id)
  if l then l:close() end
  return done(true)
end

-- ---- the reaper -------------------------------------------------------------------------------

-- Gives back every parked handle whose time is up (a transaction past its
-- timeout, a handle whose owner was garbage-collected): a connection is
-- rolled back and returned to its pool, a lock released, a lease or
-- listener closed. → the ids given back (their slots are free again)
function _M.reap()
  local ids, n = {}, 0
  while true do
    local h, id = core.unpark_expired()
    if not h then break end
    n = n + 1
    ids[n] = id
    local name = tostring(h)
    if name:find("^pgstore%.conn") then
      pcall(h.rollback, h)
      h:release()
    elseif name:find("^pgstore%.lock") then
      pcall(h.release, h)
    else
      pcall(h.close, h)
    end
  end
  return done(ids)
end

return _M
