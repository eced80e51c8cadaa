-- SPDX-License-Identifier: MIT
-- Routes for spec/nginx_load_spec.lua, run inside nginx under /load/:
-- slow statements, transactions, appends to one hot stream, transactions
-- left by ngx.exit or an error, and the adapter's counts. Every route
-- takes ?pool=<pool_size> and runs on one of the spec's own thread pools
-- ("load" unless /load/use?tp= chose another for this nginx), so the spec
-- decides how connections relate to threads.
local pgstore = require "resty.pgstore"
local cjson = require "cjson.safe"

local ngx = ngx
local tonumber, tostring, pcall, type = tonumber, tostring, pcall, type

local _M = {}

local APP = "pgstore-nginx-load"
local thread_pool = "load" -- the worker's choice (each case runs its own nginx, one worker)

-- The db of this request's pool size; equal options share one pool.
-- → db | nil, err (a refused setting comes back as err, raised or returned)
local function connect()
  local ok, db, err = pcall(pgstore.connect, {
    dsn = ngx.var.pgstore_dsn, application_name = APP, thread_pool = thread_pool,
    pool_size = tonumber(ngx.var.arg_pool) or 4,
    -- Short, so a call that cannot get going says so within the spec's bounds.
    queue_timeout = tonumber(ngx.var.arg_wait) or 1,
  })
  if not ok then return nil, { code = "invalid", message = tostring(db) } end
  return db, err
end

local function reply(status, v)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(v))
  return ngx.exit(ngx.OK)
end

-- An error as the spec reads it: 503 for `timeout`, 500 for anything else.
local function fail(err)
  local code = type(err) == "table" and err.code or "error"
  return reply(code == "timeout" and 503 or 500, { error = code, message = tostring(err and err.message or err) })
end

local function events(db)
  return db:events{ table = ngx.var.arg_table, notify = false }
end

local ROUTES = {}

-- Whether this pool size is accepted on the thread pool: connect, one statement.
-- Chooses the thread pool of every later route.
function ROUTES.use()
  thread_pool = ngx.var.arg_tp
  return reply(200, { ok = true })
end

function ROUTES.probe()
  local db, err = connect()
  if db then
    local rows
    rows, err = db:query("select 1 as one")
    if rows then return reply(200, { ok = true }) end
  end
  return reply(200, { ok = false, error = err and err.code, message = tostring(err and err.message or err) })
end

function ROUTES.q(db)
  local rows, err = db:query("select 1 as one")
  if not rows then return fail(err) end
  return reply(200, { one = rows[1].one })
end

function ROUTES.sleep(db)
  local rows, err = db:query("select pg_sleep($1::float8)::text as slept", tonumber(ngx.var.arg_s) or 0.2)
  if not rows then return fail(err) end
  return reply(200, { slept = true })
end

-- A transaction of two statements with a pause between them on the event loop.
function ROUTES.tx(db)
  local t, pause = ngx.var.arg_table, (tonumber(ngx.var.arg_ms) or 20) / 1000
  local n, err = db:transaction(function(tx)
    local ok, e = tx:exec("insert into " .. t .. " (v) values (1)")
    if not ok then return nil, e end
    ngx.sleep(pause)
    local rows
    rows, e = tx:query("select count(*)::int as n from " .. t)
    if not rows then return nil, e end
    return rows[1].n
  end)
  if not n then return fail(err) end
  return reply(200, { seen = n })
end

-- Appends to one stream inside a transaction that keeps the stream's row
-- lock for ?s= seconds after the append.
function ROUTES.hot(db)
  local es = events(db)
  local res, err = db:transaction(function(tx)
    local r, e = es:append(ngx.var.arg_stream, { { type = "Hot" } }, { tx = tx })
    if not r then return nil, e end
    local rows
    rows, e = tx:query("select pg_sleep($1::float8)::text as slept", tonumber(ngx.var.arg_s) or 0.05)
    if not rows then return nil, e end
    return r
  end)
  if not res then return fail(err) end
  return reply(200, { version = res.last_version })
end

-- An append, after ?s= seconds of other work in a thread (none by default).
function ROUTES.append(db)
  local s = tonumber(ngx.var.arg_s)
  if s then
    local rows, err = db:query("select pg_sleep($1::float8)::text as slept", s)
    if not rows then return fail(err) end
  end
  local res, err = events(db):append(ngx.var.arg_stream, { { type = "Loaded", data = { n = 1 } } })
  if not res then return fail(err) end
  return reply(201, { version = res.last_version })
end

-- Ends the request inside db:transaction's fn, after an insert: with a
-- response (?status=200) or with nginx's own error page (?status=409).
function ROUTES.exit(db)
  local t, status = ngx.var.arg_table, tonumber(ngx.var.arg_status) or 200
  db:transaction(function(tx)
    assert(tx:exec("insert into " .. t .. " (v) values (1)"))
    if status == 200 then return reply(200, { exited = true }) end
    return ngx.exit(status)
  end)
  return reply(500, { error = "not reached" })
end

-- Raises inside db:transaction's fn, after an insert: caught here
-- (?caught=1, answered 200) or left to nginx (a 500).
function ROUTES.raise(db)
  local t = ngx.var.arg_table
  local function body(tx)
    assert(tx:exec("insert into " .. t .. " (v) values (1)"))
    error("raised inside the transaction on purpose")
  end
  if ngx.var.arg_caught == "1" then
    local ok, err = pcall(db.transaction, db, body)
    return reply(200, { raised = not ok, message = tostring(err) })
  end
  db:transaction(body)
  return reply(500, { error = "not reached" })
end

-- Light threads killed at random moments while they take and give back
-- pinned connections and advisory locks, for ?s= seconds.
function ROUTES.killrace(db)
  local s, t0, n = tonumber(ngx.var.arg_s) or 2, ngx.now(), 0
  while ngx.now() - t0 < s do
    n = n + 1
    local k = n
    local th = ngx.thread.spawn(function()
      if k % 2 == 0 then
        local c = db:acquire()
        if c then c:query("select 1"); c:release() end
      else
        local l = db:lock("load-killrace:" .. k)
        if l then l:release() end
      end
    end)
    ngx.sleep(0.001 * (k % 4 + 1))
    ngx.thread.kill(th)
    ngx.update_time()
  end
  return reply(200, { rounds = n })
end

-- Relay broadcasts in light threads killed while they wait for the
-- listener, then a LISTEN on a new channel (?c=) that must still work.
function ROUTES.relaykill(db)
  local r = assert(db:relay("load-relay"))
  for i = 1, 40 do
    local th = ngx.thread.spawn(function() r:broadcast({ i = i }) end)
    ngx.sleep(0.001 * (i % 3 + 1))
    ngx.thread.kill(th)
  end
  local ch = ngx.var.arg_c
  local l = assert(db:listen(ch))
  local t0 = ngx.now()
  assert(db:notify(ch, "hello"))
  local note, err = l:wait(3)
  l:close()
  ngx.update_time()
  return reply(200, { payload = note and note.payload, error = err and tostring(err), took = ngx.now() - t0 })
end

-- Two statements of one transaction at once: a light thread's statement
-- is killed while it runs, and fn goes on with another (misuse: the handle
-- is busy). The transaction's connection must still go back.
function ROUTES.spawnkill(db)
  local ok, err = pcall(db.transaction, db, function(tx)
    local th = ngx.thread.spawn(function() return tx:query("select pg_sleep(0.3)") end)
    ngx.sleep(0.05)
    ngx.thread.kill(th)
    return tx:query("select 1 as x")
  end)
  return reply(200, { raised = not ok, message = tostring(err) })
end

-- Holds advisory lock ?k= for ?s= seconds (the spec's client goes away).
function ROUTES.holdlock(db)
  db:with_lock(ngx.var.arg_k, function() ngx.sleep(tonumber(ngx.var.arg_s) or 2) end)
  return reply(200, { held = true })
end

-- Whether advisory lock ?k= can be taken now.
function ROUTES.trylock(db)
  local l, err = db:try_lock(ngx.var.arg_k)
  if l then l:release() end
  return reply(200, { taken = l ~= nil, error = err and tostring(err) })
end

-- Waits on a listener with no timeout (a client that stays, like an
-- EventSource): a quit must not wait for it.
function ROUTES.listenwait(db)
  local l = assert(db:listen(ngx.var.arg_c))
  local note, err = l:wait()
  return reply(200, { payload = note and note.payload, error = err and err.code })
end

function ROUTES.stats(db)
  return reply(200, pgstore.stats(db))
end

function _M.route()
  local name = ngx.var.uri:match("^/load/(.+)$")
  local f = ROUTES[name]
  if not f then return reply(404, { error = "no such route" }) end
  if name == "probe" or name == "use" then return f() end
  local db, err = connect()
  if not db then return fail(err) end
  return f(db)
end

return _M
