-- SPDX-License-Identifier: MIT
-- resty.pgstore under production-like traffic in a real nginx (one worker,
-- the example of scripts/nginx/ plus a thread pool of 4 threads for the
-- routes of spec/helpers/nginx_load_app.lua): clients that give up while
-- their statement runs in a thread, more concurrent transactions than
-- connections, one hot stream, wrk runs cut off with requests in flight,
-- and transactions ended by ngx.exit or an error. After each, a healthy
-- request answers at once, the adapter's counts and pg_stat_activity are
-- back where they started, and `nginx -s quit` is prompt.
local cjson = require "cjson.safe"
local T = require "testenv"
local http = require "http"
local nginx = require "nginx"

local APP = "pgstore-nginx-load" -- the routes' application_name
local THREADS = 4                -- of the "load" thread pool
-- A wider one, where pool_size 8 is accepted: 7 appends can wait for a row
-- lock in threads while the holder's COMMIT still finds one.
local WIDE_THREADS = 12

local LOCATIONS = [[
set $pgstore_dsn '@DSN@';
location /load/ {
    content_by_lua_block { require("nginx_load_app").route() }
}
]]
local MAIN = "thread_pool load threads=" .. THREADS .. " max_queue=1024;\n"
  .. "thread_pool wide threads=" .. WIDE_THREADS .. " max_queue=1024;"

local admin

local function get(srv, path, timeout)
  return http.request(srv.port, "GET", path, srv.auth, nil, timeout or 5)
end

local function show(v)
  if type(v) ~= "table" then return tostring(v) end
  local parts = {}
  for k, x in pairs(v) do parts[#parts + 1] = tostring(k) .. "=" .. show(x) end
  table.sort(parts)
  return "{" .. table.concat(parts, " ") .. "}"
end

-- Backends of the routes' pools: all of them, and those not idle (running a
-- statement, or idle in a transaction).
local function backends()
  local r = assert(admin:query([[select count(*)::int as n, count(*) filter (where state <> 'idle')::int as busy,
      count(*) filter (where state = 'active' and query like 'select pg_sleep%')::int as sleeping
    from pg_stat_activity where application_name = $1 and datname = current_database()]], APP))[1]
  return r
end

-- What the spec compares with its baseline: connections borrowed from the
-- pool and handles parked (pgstore.stats), backends not idle.
local function counts(srv, pool)
  local res, err = get(srv, "/load/stats?pool=" .. pool, 2)
  assert(res and res.status == 200, "/load/stats: " .. tostring(res and res.body or err))
  local s = cjson.decode(res.body)
  local b = backends()
  return { borrowed = s.pool.borrowed, parked = s.parked.parked, busy = b.busy, backends = b.n }
end

-- Sends every request at once, each on its own connection, then collects
-- the answers (bounded by `timeout`), calling between() meanwhile.
-- → list of { res = response } | { err = why }
local function concurrently(srv, paths, timeout, between)
  local conns, out, left = {}, {}, #paths
  for i, path in ipairs(paths) do
    conns[i] = assert(http.connect(srv.port))
    assert(conns[i]:send("GET", path, srv.auth))
  end
  local deadline = http.now() + timeout
  while left > 0 and http.now() < deadline do
    for i, c in ipairs(conns) do
      if not out[i] then
        local res, err = c:receive(0.002)
        if res or err ~= "timeout" then
          out[i], left = { res = res, err = err }, left - 1
        end
      end
    end
    if between then between() end
  end
  for i, c in ipairs(conns) do
    out[i] = out[i] or { err = ("no answer within %g s"):format(timeout) }
    c:close()
  end
  return out
end

-- Counts equal to the baseline within `bound` seconds (2 unless given).
local function assert_baseline(srv, pool, base, what, bound)
  local last
  local ok = T.eventually(function()
    last = counts(srv, pool)
    -- pool_size connections for callers, one for the adapter's loops.
    return last.borrowed == base.borrowed and last.parked == base.parked and last.busy == 0
      and last.backends <= pool + 1
  end, bound or 2)
  assert.truthy(ok, ("%s: counts not back to the baseline within %g s: %s (baseline %s)")
    :format(what, bound or 2, show(last), show(base)))
end

-- A plain statement, answered at once.
local function assert_healthy(srv, pool, what)
  local res, err = get(srv, "/load/q?pool=" .. pool, 3)
  assert.truthy(res, what .. ": no answer to a healthy request within 3 s: " .. tostring(err))
  assert.are.equal(200, res.status, what .. ": a healthy request: " .. res.body)
  assert.is_true(res.time < 0.1, ("%s: a healthy request took %.0f ms"):format(what, res.time * 1000))
end

-- 32 plain statements at once, all answered: a worker that lost its
-- permits answers them with `timeout`.
local function assert_capacity(srv, pool, what)
  local bodies = {}
  local stats = http.load{ port = srv.port, connections = 32, requests = 1, timeout = 5,
    make = function() return "GET", "/load/q?pool=" .. pool, srv.auth end,
    on_response = function(_, r) if r.status ~= 200 then bodies[#bodies + 1] = r.body end end }
  assert.are.same({ [200] = 32 }, stats.statuses,
    what .. ": 32 concurrent statements: " .. show(stats.errors) .. " " .. (bodies[1] or ""))
end

-- `pool` statements of 0.3 s at once end together: every connection slot
-- is there to run one.
local function assert_parallel(srv, pool, what)
  local paths = {}
  for i = 1, pool do paths[i] = "/load/sleep?pool=" .. pool .. "&s=0.3" end
  local t0 = http.now()
  local out = concurrently(srv, paths, 5)
  local elapsed = http.now() - t0
  for i, r in ipairs(out) do
    assert.truthy(r.res and r.res.status == 200, ("%s: sleeper #%d: %s"):format(what, i,
      r.res and (r.res.status .. " " .. r.res.body) or r.err))
  end
  assert.is_true(elapsed < 0.55, ("%s: %d statements of 0.3 s at once took %.2f s"):format(what, pool, elapsed))
end

-- `nginx -s quit` within 5 s, every connection of nginx closed, and a
-- clean error log (but for `expected` patterns).
local function assert_quit(srv, what, expected)
  local exited, secs = srv:quit(5)
  assert.is_true(exited, what .. ": " .. tostring(secs))
  assert.is_true(secs < 5, ("%s: nginx -s quit took %.1f s"):format(what, secs))
  assert.truthy(T.eventually(function() return backends().n == 0 end, 5),
    what .. ": connections of nginx left after it quit")
  local bad = {}
  for _, line in ipairs(srv:errors()) do
    local known = false
    for _, p in ipairs(expected or {}) do known = known or line:find(p, 1, true) ~= nil end
    if not known then bad[#bad + 1] = line end
  end
  assert.are.same({}, bad, what .. ": the error log")
end

-- Runs fn(srv) against a fresh nginx of one worker; stops it (killing it
-- when -s quit does not end it within 5 s) and removes its prefix, also
-- when fn fails, and then shows what nginx and the server were doing.
local function with_nginx(fn)
  local srv = nginx.start{ dsn = T.dsn(), workers = 1, locations = LOCATIONS, main = MAIN,
                           lua_path = nginx.root() .. "/spec/helpers/?.lua" }
  local ok, err = pcall(fn, srv)
  if not ok then
    local rows = admin:query([[select pid, state, wait_event_type || ':' || wait_event as waiting,
        left(query, 80) as query from pg_stat_activity
      where application_name = $1 and datname = current_database() order by pid]], APP) or {}
    for _, r in ipairs(rows) do
      print(("    backend %d %s %s %s"):format(r.pid, tostring(r.state), tostring(r.waiting), r.query))
    end
  end
  if not srv.stopped then srv:quit(5) end
  if not ok then print("    nginx log (tail): " .. srv:log():sub(-1500)) end
  srv:cleanup()
  if not ok then error(err, 0) end
end

-- The largest pool_size up to `want` that connect accepts on the "load"
-- thread pool. A setting that can deadlock may be refused, naming it; the
-- case then runs at the largest one accepted.
local function pool_size(srv, want)
  local refused
  for p = want, 1, -1 do
    local res = assert(get(srv, "/load/probe?pool=" .. p))
    local body = cjson.decode(res.body) or {}
    if body.ok then
      if refused then
        assert.truthy(refused:find("pool_size", 1, true) or refused:find("threads", 1, true),
          "a refused setting is named: " .. refused)
      end
      return p
    end
    refused = refused or tostring(body.message or res.body)
  end
  error("no pool_size was accepted on " .. THREADS .. " threads: " .. tostring(refused))
end

-- /ping, polled during a run: every answer 200, none slower than 500 ms (a
-- worker whose event loop waited for a thread would stall for seconds; the
-- bound leaves room for a loaded machine).
local function pinger(srv)
  local p = { n = 0, worst = 0, bad = {} }
  function p.poll()
    local res, err = http.request(srv.port, "GET", "/ping", nil, nil, 1)
    p.n = p.n + 1
    if not res or res.status ~= 200 then
      p.bad[#p.bad + 1] = tostring(res and res.status or err)
    elseif res.time > p.worst then
      p.worst = res.time
    end
  end
  function p.check(what)
    assert.is_true(p.n > 0, what .. ": /ping was polled")
    assert.are.same({}, p.bad, what .. ": /ping failed")
    assert.is_true(p.worst < 0.5, ("%s: slowest /ping %.0f ms"):format(what, p.worst * 1000))
  end
  return p
end

local function create_table()
  local t = T.unique("load_t")
  assert(admin:exec("create table " .. t .. " (id bigserial primary key, v int)"))
  return t
end

local function rows_in(t, where, ...)
  return assert(admin:query("select count(*)::int as n from " .. t .. (where or ""), ...))[1].n
end

describe("resty.pgstore under load, one nginx worker", function()
  setup(function()
    admin = T.admin()
  end)

  it("stays whole after 44 clients gave up while their statements ran in threads", function()
    with_nginx(function(srv)
      local pool = pool_size(srv, THREADS)
      assert_healthy(srv, pool, "before")
      local base = counts(srv, pool)
      -- Batches of `pool` requests: each is closed by its client once its
      -- statement runs (lua_check_client_abort on, as in the example, ends
      -- the request then), and the next batch starts when they are done.
      local aborted, running = 0, 0
      while aborted < 44 do
        local conns = {}
        for i = 1, pool do
          conns[i] = assert(http.connect(srv.port))
          assert(conns[i]:send("GET", "/load/sleep?pool=" .. pool .. "&s=0.2", srv.auth))
        end
        local n = T.eventually(function()
          local s = backends().sleeping
          return s >= pool and s
        end, 1) or backends().sleeping
        for _, c in ipairs(conns) do c:close() end
        aborted, running = aborted + #conns, running + n
        if n == 0 then break end -- none got going: the checks below say why
        T.eventually(function() return backends().sleeping == 0 end, 2)
      end
      local what = ("after %d aborted requests (%d of them with their statement running)")
        :format(aborted, running)
      T.eventually(function() return backends().busy == 0 end, 2)
      assert_healthy(srv, pool, what)
      assert_capacity(srv, pool, what)
      assert_parallel(srv, pool, what)
      assert_baseline(srv, pool, base, what)
      assert_quit(srv, what)
    end)
  end)

  it("completes 3 × pool_size concurrent transactions, then quits promptly", function()
    with_nginx(function(srv)
      -- 12 clients on 4 connections: on 4 threads only pool_size 1 would be
      -- accepted, so on the wide thread pool.
      assert.are.equal(200, assert(get(srv, "/load/use?tp=wide")).status)
      local pool = pool_size(srv, 4)
      assert.are.equal(4, pool, "pool_size 4 is accepted on " .. WIDE_THREADS .. " threads")
      local t = create_table()
      assert_healthy(srv, pool, "before")
      local base = counts(srv, pool)
      local paths = {}
      for i = 1, 3 * pool do paths[i] = ("/load/tx?pool=%d&table=%s&ms=20"):format(pool, t) end
      local pings = pinger(srv)
      local t0 = http.now()
      local out = concurrently(srv, paths, 8, pings.poll)
      local elapsed = http.now() - t0
      local failed = {}
      for i, r in ipairs(out) do
        if not (r.res and r.res.status == 200) then
          failed[#failed + 1] = ("#%d: %s"):format(i, r.res and (r.res.status .. " " .. r.res.body) or r.err)
        end
      end
      local what = ("%d concurrent transactions on %d connections"):format(#paths, pool)
      assert.are.same({}, failed, what)
      assert.is_true(elapsed < 3, ("%s took %.1f s"):format(what, elapsed))
      assert.are.equal(#paths, rows_in(t), what .. ": rows committed")
      pings.check(what)
      assert_healthy(srv, pool, what)
      assert_baseline(srv, pool, base, what)
      assert_quit(srv, what)
    end)
  end)

  for _, tp in ipairs{ { "load", THREADS }, { "wide", WIDE_THREADS } } do
    it(("lets 8 transactions on one hot stream commit or time out, /ping answering throughout (%d threads)")
         :format(tp[2]), function()
      with_nginx(function(srv)
        -- The issue's setting: 8 connections on 4 threads, unless refused
        -- (then 1); on the wide pool, 8 connections on 12 threads.
        assert.are.equal(200, assert(get(srv, "/load/use?tp=" .. tp[1])).status)
        local pool = pool_size(srv, 8)
        if tp[1] == "wide" then assert.are.equal(8, pool, "pool_size 8 on " .. tp[2] .. " threads") end
        local es = T.unique("load_hot")
        local stream = "hot"
        -- The stream exists: each append waits for its head row's lock.
        local res = assert(get(srv, ("/load/append?pool=%d&table=%s&stream=%s"):format(pool, es, stream)))
        assert.are.equal(201, res.status, res.body)
        assert_healthy(srv, pool, "before")
        local base = counts(srv, pool)
        local paths = {}
        for i = 1, 8 do paths[i] = ("/load/hot?pool=%d&table=%s&stream=%s&s=0.05"):format(pool, es, stream) end
        local pings = pinger(srv)
        local out = concurrently(srv, paths, 8, pings.poll)
        local committed, bad = 0, {}
        for i, r in ipairs(out) do
          local body = r.res and cjson.decode(r.res.body) or {}
          if r.res and r.res.status == 200 then
            committed = committed + 1
          elseif not (r.res and r.res.status == 503 and body.error == "timeout")
              or tostring(body.message):find("given back", 1, true) then
            -- A lock or slot wait may time out; a live transaction must
            -- never lose its connection.
            bad[#bad + 1] = ("#%d: %s"):format(i, r.res and (r.res.status .. " " .. r.res.body) or r.err)
          else
            print("\n    timed out: " .. tostring(body.message))
          end
        end
        local what = ("8 transactions on one stream, %d connections on %d threads"):format(pool, tp[2])
        assert.are.same({}, bad, what .. ": each commits or gets `timeout`")
        assert.are.equal(1 + committed, rows_in(es, " where stream = $1", stream),
          what .. ": the stream holds exactly the committed appends")
      -- Each holds the lock for 50 ms, well inside lock_timeout: on a
      -- quiet machine all commit; a loaded one may time one out.
      assert.is_true(committed >= 4, what .. ": " .. committed .. " committed")
      print(("\n    %s: %d committed, %d timed out"):format(what, committed, 8 - committed))
        pings.check(what)
        assert_healthy(srv, pool, what)
        assert_baseline(srv, pool, base, what)
        assert_quit(srv, what)
      end)
    end)
  end

  it("comes back whole after wrk runs that end with requests in flight", function()
    with_nginx(function(srv)
      -- 8 connections on 12 threads: 8 statements run while 24 requests
      -- wait for a slot when wrk leaves.
      assert.are.equal(200, assert(get(srv, "/load/use?tp=wide")).status)
      local pool = pool_size(srv, 8)
      assert.are.equal(8, pool, "pool_size 8 is accepted on " .. WIDE_THREADS .. " threads")
      local es = T.unique("load_wrk")
      -- Appends after 20 ms of other work: 32 connections keep ~200 ms of
      -- work queued, so wrk leaves with requests in flight.
      local path = ("/load/append?pool=%d&table=%s&s=0.02&stream=w"):format(pool, es)
      local res = assert(get(srv, path .. "0"))
      assert.are.equal(201, res.status, res.body)
      assert_healthy(srv, pool, "before")
      local base = counts(srv, pool)
      -- wrk's script reads the token from its file (argv is public) and
      -- spreads the appends over 16 streams.
      local script = T.write(srv.prefix .. "/wrk.lua", [[
        local f = assert(io.open(os.getenv("PGSTORE_TOKEN_FILE")))
        wrk.headers["Authorization"] = "Bearer " .. f:read("*l")
        f:close()
        local path, n = os.getenv("PGSTORE_WRK_PATH"), 0
        function request()
          n = n + 1
          return wrk.format("GET", path .. (n % 16))
        end
      ]])
      -- Three runs: whatever one run leaves behind adds up.
      for run = 1, 3 do
        -- wrk stops after 2 s and exits, closing its 32 connections with
        -- requests in flight; `timeout` kills it should it not.
        local out, rc = T.sh(("PGSTORE_TOKEN_FILE=%q PGSTORE_WRK_PATH=%q timeout -k 1 10 wrk -t2 -c32 -d2s "
          .. "--timeout 2s -s %q http://127.0.0.1:%d/"):format(srv.token_file, path, script, srv.port))
        local in_flight = backends().busy
        assert.are.equal(0, rc, out)
        local n = tonumber(out:match("(%d+) requests in"))
        assert.truthy(n and n > 50, "wrk ran: " .. out)
        assert.is_nil(out:find("Non-2xx", 1, true), out)
        print(("\n    wrk run %d: %d appends in 2 s over 32 connections, %d statements running as it left")
          :format(run, n, in_flight))
        local what = ("after wrk run %d, cut off with requests in flight"):format(run)
        T.eventually(function() return backends().busy == 0 end, 2)
        assert_healthy(srv, pool, what)
        assert_capacity(srv, pool, what)
        assert_parallel(srv, pool, what)
        assert_baseline(srv, pool, base, what)
      end
      assert_quit(srv, "after the wrk runs")
    end)
  end)

  it("gives a transaction's connection back when fn ends the request with ngx.exit or raises", function()
    with_nginx(function(srv)
      local pool = pool_size(srv, THREADS)
      local t = create_table()
      assert_healthy(srv, pool, "before")
      local base = counts(srv, pool)
      local cases = {
        { "/load/exit?status=200", 200, "ngx.exit after the response, inside fn" },
        { "/load/exit?status=409", 409, "ngx.exit(409) inside fn" },
        { "/load/raise?caught=1", 200, "an error raised in fn, caught by the handler" },
        { "/load/raise?caught=0", 500, "an error raised in fn, left to nginx" },
      }
      for _, c in ipairs(cases) do
        local path, status, what = c[1], c[2], c[3]
        local res = assert(get(srv, ("%s&pool=%d&table=%s"):format(path, pool, t)))
        assert.are.equal(status, res.status, what .. ": " .. res.body)
        -- The bound: 2 s. The request is over, so its connection is owed
        -- back at once; 2 s leaves room for a reaper that looks once a
        -- second, never for the transaction's own 30 s timeout nor for a
        -- garbage collection that may not come.
        assert_baseline(srv, pool, base, what, 2)
        assert.are.equal(0, rows_in(t), what .. ": nothing committed")
      end
      assert_healthy(srv, pool, "after the exits")
      assert_parallel(srv, pool, "after the exits")
      assert_quit(srv, "after the exits", { "raised inside the transaction on purpose" })
    end)
  end)

  it("loses no slot when light threads taking connections and locks are killed at any moment", function()
    with_nginx(function(srv)
      local pool = pool_size(srv, THREADS)
      local base = counts(srv, pool)
      local res = assert(get(srv, "/load/killrace?pool=" .. pool .. "&s=2", 10))
      assert.are.equal(200, res.status, res.body)
      local what = ("after %d killed light threads"):format(cjson.decode(res.body).rounds)
      assert_baseline(srv, pool, base, what)
      assert_parallel(srv, pool, what)
      local locks = assert(admin:query([[select count(*)::int as n from pg_locks l join pg_stat_activity a
        using (pid) where l.locktype = 'advisory' and a.application_name = $1]], APP))[1].n
      assert.are.equal(0, locks, what .. ": advisory locks left")
      assert_quit(srv, what)
    end)
  end)

  it("keeps LISTEN working after relay broadcasts were killed while they waited", function()
    with_nginx(function(srv)
      local pool = pool_size(srv, THREADS)
      local res = assert(get(srv, "/load/relaykill?pool=" .. pool .. "&c=load_after_kill", 10))
      assert.are.equal(200, res.status, res.body)
      local body = cjson.decode(res.body)
      assert.are.equal("hello", body.payload, tostring(body.error))
      assert.is_true(body.took < 1, "delivered in " .. body.took .. " s")
      assert_quit(srv, "after killed broadcasts")
    end)
  end)

  it("gives back a transaction's connection when two of its statements ran at once", function()
    with_nginx(function(srv)
      local pool = pool_size(srv, THREADS)
      local base = counts(srv, pool)
      for _ = 1, 2 do
        local res = assert(get(srv, "/load/spawnkill?pool=" .. pool, 10))
        assert.are.equal(200, res.status, res.body)
      end
      assert_baseline(srv, pool, base, "after concurrent statements on one transaction")
      assert_parallel(srv, pool, "after concurrent statements on one transaction")
      assert_quit(srv, "after concurrent statements")
    end)
  end)

  it("releases a lock whose holder's client went away", function()
    with_nginx(function(srv)
      assert.are.equal(200, assert(get(srv, "/load/use?tp=wide")).status)
      local pool = pool_size(srv, 8)
      local key = T.unique("load_lock")
      local c = assert(http.connect(srv.port))
      assert(c:send("GET", ("/load/holdlock?pool=%d&k=%s&s=30"):format(pool, key), srv.auth))
      assert.truthy(T.eventually(function()
        local r = cjson.decode(assert(get(srv, ("/load/trylock?pool=%d&k=%s"):format(pool, key))).body)
        return r.taken == false
      end, 2), "the holder took the lock")
      c:close()
      local t0 = http.now()
      assert.truthy(T.eventually(function()
        local r = cjson.decode(assert(get(srv, ("/load/trylock?pool=%d&k=%s"):format(pool, key))).body)
        return r.taken
      end, 3), "the lock is free again within 3 s of the abort")
      print(("\n    a lock abandoned by an aborted request was free after %.2f s"):format(http.now() - t0))
      assert_quit(srv, "after the abandoned lock")
    end)
  end)

  it("quits promptly while a request waits on a listener without a timeout", function()
    with_nginx(function(srv)
      local pool = pool_size(srv, THREADS)
      local c = assert(http.connect(srv.port))
      assert(c:send("GET", "/load/listenwait?pool=" .. pool .. "&c=load_wait_forever", srv.auth))
      assert.truthy(T.eventually(function()
        return (admin:query([[select count(*)::int as n from pg_listening_channels()]]) ~= nil)
      end, 1))
      http.request(srv.port, "GET", "/ping")
      assert_quit(srv, "with a request in l:wait()")
      c:close()
    end)
  end)
end)
