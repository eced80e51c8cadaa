-- SPDX-License-Identifier: MIT
-- resty.pgstore in a real nginx (Debian's, with libnginx-mod-http-lua):
-- the example of scripts/nginx/ started in a temporary prefix against the
-- test cluster, driven over loopback HTTP. Appends and reads, 409 and 400
-- with nothing written, an event loop that stays free while a query runs,
-- Server-Sent Events exactly once (also across a reconnect with
-- Last-Event-ID and a terminated LISTEN connection), the API inside nginx
-- case by case, a subscriber whose checkpoint writes the proxy cuts around
-- their commit, a saturated thread pool's clear error, refused phases, a
-- bounded load with a clean error log, and a clean `nginx -s quit`. Every
-- request but /ping carries the example's bearer token (the token itself:
-- spec/nginx_auth_spec.lua).
local cjson = require "cjson"
local T = require "testenv"
local http = require "http"
local nginx = require "nginx"
local proxy = require "proxy"

local APP = "pgstore-nginx"

local LOCATIONS = [[
set $pgstore_dsn '@DSN@';
location /t/ {
    content_by_lua_block { require("nginx_app").route() }
}
location = /t/logphase {
    content_by_lua_block { ngx.say("ok") }
    log_by_lua_block {
        local db = require("resty.pgstore").connect{ dsn = ngx.var.pgstore_dsn }
        local ok, err = pcall(db.query, db, "select 1")
        ngx.shared.pgstore:set("logphase", tostring(err))
    }
}
location = /t/phases {
    rewrite_by_lua_block {
        local db = require("resty.pgstore").connect{ dsn = ngx.var.pgstore_dsn }
        ngx.ctx.rewrite = assert(db:query("select 'rewrite' as p"))[1].p
    }
    access_by_lua_block {
        local db = require("resty.pgstore").connect{ dsn = ngx.var.pgstore_dsn }
        ngx.ctx.access = assert(db:query("select 'access' as p"))[1].p
    }
    content_by_lua_block { ngx.say(ngx.ctx.rewrite, " ", ngx.ctx.access) }
}
location = /t/shared {
    content_by_lua_block { ngx.say(ngx.shared.pgstore:get(ngx.var.arg_key) or "") }
}
location = /t/gc {
    content_by_lua_block { collectgarbage(); collectgarbage(); ngx.say("collected") }
}
]]

-- A pool of one thread whose queue holds as many tasks as there are
-- thread VMs (lua_worker_thread_vm_pool_size 64), so it can never overflow.
local MAIN = "thread_pool tiny threads=1 max_queue=64;"

local srv, admin, old

local function run_id()
  return ("%d%04d"):format(os.time() % 100000, math.random(0, 9999))
end

-- The request's headers with the example's bearer token.
local function authed(headers)
  local h = { Authorization = srv.auth.Authorization }
  for k, v in pairs(headers or {}) do h[k] = v end
  return h
end

local function post(c, stream, body, headers)
  return assert(c:request("POST", "/streams/" .. stream, authed(headers), body, 10))
end

local function stream_count(stream)
  return assert(admin:query("select count(*)::int as n from events where stream = $1", stream))[1].n
end

-- Reads SSE events of streams starting with prefix until `want` of them
-- came (bounded). → list of decoded events, the last id seen
local function collect(s, prefix, want, timeout, into)
  local got = into or {}
  local deadline = http.now() + (timeout or 30)
  local last_id
  while #got < want and http.now() < deadline do
    local ev = s:next(deadline - http.now())
    if not ev then break end
    local e = cjson.decode(ev.data)
    assert.are.equal(tostring(e.position), ev.id, "the id: line is the event's position")
    last_id = ev.id
    if e.stream:sub(1, #prefix) == prefix then got[#got + 1] = e end
  end
  return got, last_id
end

-- Every event exactly once, in global order, and every stream complete.
local function assert_exactly_once(events, streams, per_stream)
  local seen, last = {}, -1
  for _, e in ipairs(events) do
    assert.is_nil(seen[e.position], "position " .. e.position .. " delivered twice")
    seen[e.position] = true
    assert.is_true(e.position > last, "global order")
    last = e.position
  end
  local versions = {}
  for _, e in ipairs(events) do
    local v = versions[e.stream] or 0
    assert.are.equal(v + 1, e.version, "stream " .. e.stream .. " complete and in order")
    versions[e.stream] = e.version
  end
  for _, st in ipairs(streams) do assert.are.equal(per_stream, versions[st], st) end
end

-- n writer processes, each appending `per` events to its own stream over
-- HTTP (If-Match: the version it expects).
local function spawn_writers(prefix, n, per)
  local code = [[
    local http = require "http"
    local port, stream, n = tonumber(arg[1]), arg[2], tonumber(arg[3])
    local token = assert(io.open(arg[4])):read("*l") -- a file: argv is public
    local c = assert(http.connect(port))
    for i = 1, n do
      local res = assert(c:request("POST", "/streams/" .. stream,
        { ["If-Match"] = tostring(i - 1), Authorization = "Bearer " .. token },
        '{"type":"Written","data":{"i":' .. i .. '}}', 10))
      if res.status ~= 201 then print("status " .. res.status .. ": " .. res.body); os.exit(1) end
    end
    print("wrote " .. n)
  ]]
  local procs, streams = {}, {}
  for i = 1, n do
    streams[i] = prefix .. i
    procs[i] = T.spawn(code, srv.port, streams[i], per, srv.token_file)
  end
  return procs, streams
end

local function wait_writers(procs)
  for _, p in ipairs(procs) do
    local out = T.wait(p, 60)
    assert.truthy(out:find("wrote", 1, true), out)
  end
end

describe("nginx with resty.pgstore", function()
  setup(function()
    admin = T.admin()
    -- Events committed before nginx starts: behind every worker's feed.
    local es = assert(admin:events())
    old = { stream = "old-" .. run_id() }
    old.result = assert(es:append(old.stream, { { type = "A" }, { type = "B" } }))
    srv = nginx.start{ dsn = T.dsn(), workers = 1, locations = LOCATIONS, main = MAIN,
                       lua_path = nginx.root() .. "/spec/helpers/?.lua" }
  end)

  teardown(function()
    if srv then
      srv:stop()
      srv:cleanup()
    end
  end)

  describe("appends and reads over HTTP", function()
    it("appends JSON events and reads them back", function()
      local c = assert(http.connect(srv.port))
      local stream = "http-" .. run_id()
      local res = post(c, stream, '{"type":"Opened","data":{"owner":"ann","tags":["a","b"]}}')
      assert.are.equal(201, res.status)
      local r = cjson.decode(res.body)
      assert.are.same({ 1, 1, 1, false }, { r.first_version, r.last_version, r.count, r.replayed })
      assert.are.equal('"1"', res.headers.etag)
      res = post(c, stream, '[{"type":"Deposited","data":{"amount":10},"metadata":{"by":"teller"}},'
        .. '{"type":"Deposited","data":{"amount":5}}]', { ["If-Match"] = "1" })
      assert.are.equal(201, res.status)
      assert.are.equal(3, cjson.decode(res.body).last_version)
      res = assert(c:request("GET", "/streams/" .. stream, srv.auth))
      assert.are.equal(200, res.status)
      local evs = cjson.decode(res.body)
      assert.are.same({ "Opened", "Deposited", "Deposited" }, { evs[1].type, evs[2].type, evs[3].type })
      assert.are.same({ "a", "b" }, evs[1].data.tags)
      assert.are.equal("teller", evs[2].metadata.by)
      assert.are.equal(cjson.null, evs[3].metadata)
      assert.are.equal('"3"', res.headers.etag)
      res = assert(c:request("GET", "/streams/" .. stream .. "?from=2&limit=1", srv.auth))
      assert.are.equal(2, cjson.decode(res.body)[1].version)
      c:close()
    end)

    it("answers a version conflict with 409 and writes nothing", function()
      local c = assert(http.connect(srv.port))
      local stream = "conflict-" .. run_id()
      assert.are.equal(201, post(c, stream, '{"type":"A"}').status)
      local res = post(c, stream, '{"type":"B"}', { ["If-Match"] = "0" })
      assert.are.equal(409, res.status)
      local body = cjson.decode(res.body)
      assert.are.same({ "conflict", 0, 1 }, { body.error, body.expected, body.actual })
      res = post(c, stream, '{"type":"B"}', { ["If-None-Match"] = "*" })
      assert.are.equal(409, res.status)
      assert.are.equal(1, stream_count(stream))
      assert.are.equal(201, post(c, stream, '{"type":"B"}', { ["If-Match"] = '"1"' }).status)
      assert.are.equal(2, stream_count(stream))
      c:close()
    end)

    it("answers bad JSON and bad events with 400 and writes nothing", function()
      local c = assert(http.connect(srv.port))
      local stream = "bad-" .. run_id()
      local cases = {
        { body = '{"type":"A",' },                       -- not JSON
        { body = '"just a string"' },                    -- not an event
        { body = '[{"data":{"no":"type"}}]' },           -- no type
        { body = '[{"type":"A"},{"type":""}]' },         -- one bad event spoils the batch
        { body = '[]' },                                 -- nothing to append
        { body = '{"type":"A","id":"not-a-uuid"}' },     -- refused by the server
        { body = '{"type":"A"}', headers = { ["If-Match"] = "soon" } },
      }
      for _, case in ipairs(cases) do
        local res = post(c, stream, case.body, case.headers)
        assert.are.equal(400, res.status, case.body .. " → " .. res.body)
        assert.are.equal("invalid", cjson.decode(res.body).error)
      end
      assert.are.equal(0, stream_count(stream))
      assert.are.equal(201, post(c, stream, '{"type":"A"}').status, "the stream still takes good events")
      c:close()
    end)
  end)

  it("keeps the event loop free while a query runs in a thread", function()
    local slow = assert(http.connect(srv.port))
    local t0 = http.now()
    assert(slow:send("GET", "/t/sleep?s=1", srv.auth))
    http.request(srv.port, "GET", "/ping") -- the sleeper is in its thread by now
    local c = assert(http.connect(srv.port))
    local worst = 0
    for _ = 1, 100 do
      local res = assert(c:request("GET", "/ping", nil, nil, 2))
      assert.are.equal(200, res.status)
      if res.time > worst then worst = res.time end
    end
    local pings_done = http.now() - t0
    local res = assert(slow:receive(5))
    assert.are.equal(200, res.status)
    assert.is_true(http.now() - t0 >= 1, "the query slept")
    assert.is_true(pings_done < 1, "the pings were answered while it slept")
    assert.is_true(worst < 0.05, ("slowest /ping: %.1f ms"):format(worst * 1000))
    c:close()
    slow:close()
  end)

  describe("Server-Sent Events on /changes", function()
    it("delivers every event of 4 concurrent HTTP writers exactly once, in order", function()
      local prefix = "sse-" .. run_id() .. "-"
      local s = assert(http.sse(srv.port, "/changes", srv.auth))
      local procs, streams = spawn_writers(prefix, 4, 250)
      local got = collect(s, prefix, 1000, 60)
      s:close()
      wait_writers(procs)
      assert.are.equal(1000, #got)
      assert_exactly_once(got, streams, 250)
      local stored = assert(admin:query(
        "select count(*)::int as n from events where stream like $1", prefix .. "%"))[1].n
      assert.are.equal(1000, stored)
    end)

    it("resumes after Last-Event-ID without missing or repeating anything", function()
      local prefix = "resume-" .. run_id() .. "-"
      local first = assert(http.sse(srv.port, "/changes", srv.auth))
      local procs, streams = spawn_writers(prefix, 4, 250)
      local got, last_id = collect(first, prefix, 300, 60)
      first:close()
      assert.are.equal(300, #got)
      local second = assert(http.sse(srv.port, "/changes", authed{ ["Last-Event-ID"] = last_id }))
      local ev = assert(second:next(30))
      assert.is_true(tonumber(ev.id) > tonumber(last_id), "starts after the last id")
      local e = cjson.decode(ev.data)
      if e.stream:sub(1, #prefix) == prefix then got[#got + 1] = e end
      collect(second, prefix, 1000, 60, got)
      second:close()
      wait_writers(procs)
      assert.are.equal(1000, #got)
      assert_exactly_once(got, streams, 250)
    end)

    it("serves a cursor from before the feed started with ?after=, then live", function()
      local s = assert(http.sse(srv.port, "/changes?after=" .. (old.result.first_position - 1), srv.auth))
      local got = collect(s, old.stream, 2, 10)
      assert.are.same({ "A", "B" }, { got[1] and got[1].type, got[2] and got[2].type })
      local c = assert(http.connect(srv.port))
      assert.are.equal(201, post(c, old.stream, '{"type":"C"}', { ["If-Match"] = "2" }).status)
      c:close()
      collect(s, old.stream, 3, 10, got)
      s:close()
      assert.are.equal("C", got[3] and got[3].type)
      assert_exactly_once(got, { old.stream }, 3)
      local bad = http.sse(srv.port, "/changes?after=soon", srv.auth)
      assert.is_nil(bad)
    end)

    it("keeps flowing after the LISTEN connection is terminated", function()
      local listen_app = APP .. ":listen"
      local function listener_pids()
        local rows = assert(admin:query(
          "select pid from pg_stat_activity where application_name = $1", listen_app))
        local out = {}
        for i, r in ipairs(rows) do out[i] = r.pid end
        return out
      end
      local before = T.eventually(function() return #listener_pids() == 1 and listener_pids() end, 10)
      assert.truthy(before, "one LISTEN connection (one worker)")
      local prefix = "listen-" .. run_id()
      local s = assert(http.sse(srv.port, "/changes", srv.auth))
      local c = assert(http.connect(srv.port))
      assert.are.equal(201, post(c, prefix, '{"type":"Before"}').status)
      local got = collect(s, prefix, 1, 10)
      assert.are.equal(1, #got)
      assert(admin:query("select pg_terminate_backend($1)", before[1]))
      for i = 1, 5 do
        assert.are.equal(201, post(c, prefix, '{"type":"After"}', { ["If-Match"] = tostring(i) }).status)
      end
      collect(s, prefix, 6, 15, got)
      assert.are.equal(6, #got)
      assert_exactly_once(got, { prefix }, 6)
      local after = T.eventually(function()
        local p = listener_pids()
        return #p == 1 and p[1] ~= before[1] and p
      end, 15)
      assert.truthy(after, "the listener reconnected by itself")
      -- And notifications drive delivery again, not only the fallback poll.
      local t0 = http.now()
      assert.are.equal(201, post(c, prefix, '{"type":"Again"}', { ["If-Match"] = "6" }).status)
      assert.are.equal(1, #collect(s, prefix, 1, 10))
      assert.is_true(http.now() - t0 < 0.5, "delivered on NOTIFY")
      s:close()
      c:close()
    end)
  end)

  describe("the API inside nginx", function()
    for _, name in ipairs{ "query", "query_error", "misuse", "options", "run", "tx_commit", "tx_rollback",
                           "tx_retry", "tx_nested", "tx_timeout", "tx_stores", "acquire",
                           "events", "stores", "kv_cleanup", "locks", "listen", "relay", "partitions",
                           "subscribe" } do
      it(name, function()
        local res = assert(http.request(srv.port, "GET", "/t/case?name=" .. name, srv.auth, nil, 30))
        assert.are.equal(200, res.status, res.body)
        local r = cjson.decode(res.body)
        assert.is_true(r.ok, r.error)
      end)
    end

    it("keeps a subscriber delivering exactly once after acks whose outcome is unknown", function()
      -- The project's proxy cuts the connection around half of the
      -- checkpoint writes, before or after the COMMIT reached the server.
      local P = proxy.start{ patterns = { "SET position = $3::bigint" }, probability = 0.5, lifetime = 120 }
      local res = http.request(srv.port, "GET", "/t/case?name=subscribe_unknown_ack&port=" .. P.port,
        srv.auth, nil, 60)
      local cuts = P:cuts()
      P:stop()
      assert.truthy(res, "no answer from nginx")
      assert.are.equal(200, res.status, res.body)
      local r = cjson.decode(res.body)
      assert.is_true(r.ok, r.error)
      assert.truthy(cuts.after > 0, "no write was cut after its commit")
      assert.truthy(cuts.before > 0, "no write was cut before its commit")
      print(("\n  nginx subscription: %d acks with an unknown outcome (%d cut after the commit, %d before)")
        :format(r.result.unknown, cuts.after, cuts.before))
    end)

    it("rolls back a transaction whose request ended inside it", function()
      local t = "spec_abandon_" .. run_id()
      assert(admin:exec("create table " .. t .. " (id int primary key, v text)"))
      local function parked()
        return cjson.decode(assert(http.request(srv.port, "GET", "/t/stats", srv.auth)).body).parked.parked
      end
      local before = parked() -- the LISTEN connections stay parked
      local res = assert(http.request(srv.port, "GET", "/t/abandon?table=" .. t, srv.auth, nil, 10))
      assert.are.equal(200, res.status)
      assert.are.equal(before + 1, parked(), "the transaction's connection is parked")
      -- Its tx object is garbage now: collecting it hands the connection to
      -- the reaper, which rolls back within a second.
      assert(http.request(srv.port, "GET", "/t/gc", srv.auth))
      assert.truthy(T.eventually(function() return parked() == before end, 5), "reaped")
      assert(admin:exec("set lock_timeout = '2s'"))
      assert(admin:exec("insert into " .. t .. " values (1, 'after')"), "the row lock was released")
      assert.are.equal("after", assert(admin:query("select v from " .. t))[1].v)
      assert(admin:exec("drop table " .. t))
    end)
  end)

  describe("saturation and phases", function()
    it("answers with a timeout error, not a hang, when no connection is free", function()
      local pids = srv:workers()
      local blocker = assert(http.connect(srv.port))
      assert(blocker:send("GET", "/t/small?s=1", srv.auth))
      http.request(srv.port, "GET", "/ping")
      local res = assert(http.request(srv.port, "GET", "/t/small?s=0&wait=0.2", srv.auth, nil, 5))
      assert.are.equal(503, res.status)
      local body = cjson.decode(res.body)
      assert.are.equal("timeout", body.code)
      assert.truthy(body.message:find("pool_size", 1, true), body.message)
      assert.is_true(res.time >= 0.15 and res.time < 0.9, "waited queue_timeout: " .. res.time)
      assert.are.equal(200, assert(blocker:receive(5)).status)
      blocker:close()
      assert.are.same(pids, srv:workers(), "no worker died")
    end)

    it("refuses a thread pool with fewer threads than its pools can keep busy, naming it", function()
      local res = assert(http.request(srv.port, "GET", "/t/toosmall", srv.auth, nil, 5))
      assert.are.equal(200, res.status)
      local body = cjson.decode(res.body)
      assert.are.equal("invalid", body.code)
      assert.truthy(body.message:find("thread_pool tiny", 1, true), body.message)
      assert.truthy(body.message:find("threads=1", 1, true), body.message)
      assert.truthy(body.message:find("at least 4", 1, true), body.message)
    end)

    it("runs statements in the rewrite and access phases", function()
      local res = assert(http.request(srv.port, "GET", "/t/phases", srv.auth))
      assert.are.equal(200, res.status)
      assert.are.equal("rewrite access\n", res.body)
    end)

    it("refuses phases that cannot yield, with the phase's name", function()
      assert(http.request(srv.port, "GET", "/t/logphase", srv.auth))
      local msg = T.eventually(function()
        local r = http.request(srv.port, "GET", "/t/shared?key=logphase", srv.auth)
        return r and r.body:find("resty.pgstore", 1, true) and r.body
      end, 5)
      assert.truthy(msg and msg:find("cannot run in the log phase", 1, true), msg)
    end)
  end)

  it("takes 10 s of appends from 32 connections with no 5xx and a clean error log", function()
    local since = #srv:log()
    local prefix = "load-" .. run_id() .. "-"
    local stats = http.load{ port = srv.port, connections = 32, duration = 10, timeout = 10,
      make = function(i, n)
        return "POST", "/streams/" .. prefix .. (i % 64), srv.auth,
          '{"type":"Loaded","data":{"conn":' .. i .. ',"n":' .. n .. '}}'
      end }
    print(("\n    load: %d appends in %.1f s = %.0f/s over HTTP, slowest %.0f ms")
      :format(stats.requests, stats.elapsed, stats.requests / stats.elapsed, stats.max_time * 1000))
    if next(stats.errors) then
      -- What the server was doing: the backends of nginx and what blocks them.
      for _, r in ipairs(assert(admin:query([[
          select pid, application_name as app, state, wait_event_type || ':' || wait_event as waiting,
                 pg_blocking_pids(pid)::text as blocked_by, left(query, 120) as query
          from pg_stat_activity where backend_type = 'client backend' order by pid]]))) do
        print(("    %d %s %s %s %s %s"):format(r.pid, r.app, tostring(r.state), tostring(r.waiting),
          r.blocked_by, r.query))
      end
      print(srv:log():sub(-4000))
      srv.keep = true
    end
    assert.are.same({}, stats.errors)
    assert.are.same({ [201] = stats.requests }, stats.statuses)
    assert.is_true(stats.requests > 1000, "it ran")
    local stored = assert(admin:query(
      "select count(*)::int as n from events where stream like $1", prefix .. "%"))[1].n
    assert.are.equal(stats.requests, stored)
    assert.are.same({}, srv:errors(since))
  end)

  it("exits cleanly on nginx -s quit, with a client still on /changes", function()
    local s = assert(http.sse(srv.port, "/changes", srv.auth))
    local ok, why = srv:stop(15)
    assert.is_true(ok, why)
    -- ngx.sleep(0) without OpenResty's delayed-events patch can hang a
    -- worker; resty.pgstore never sleeps for less than a millisecond.
    assert.is_nil(srv:log():find("without delayed events patch", 1, true))
    local ev, err
    repeat ev, err = s:next(5) until not ev
    assert.are.equal("closed", err)
    s:close()
    local left = T.eventually(function()
      return assert(admin:query("select count(*)::int as n from pg_stat_activity where application_name like $1",
        APP .. "%"))[1].n == 0
    end, 10)
    assert.truthy(left, "every connection of nginx is gone")
  end)
end)

describe("resty.pgstore outside the request phases, and across workers", function()
  local s, prefix

  setup(function()
    prefix = T.tmpdir("nginx")
    local conf = [[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 2;
pid @PREFIX@/nginx.pid;
error_log @PREFIX@/error.log warn;
thread_pool pgstore threads=8 max_queue=64;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path @PREFIX@/tmp;
    proxy_temp_path @PREFIX@/tmp;
    fastcgi_temp_path @PREFIX@/tmp;
    uwsgi_temp_path @PREFIX@/tmp;
    scgi_temp_path @PREFIX@/tmp;
    lua_package_path "@ROOT@/lua/?.lua;@ROOT@/lua/?/init.lua;;";
    lua_package_cpath "@BUILD@/lua/?.so;;";
    lua_shared_dict pgstore 64k;
    init_by_lua_block {
        local pgstore = require "resty.pgstore"
        local ok, err = pcall(pgstore.connect, [==[@DSN@]==])
        INIT_ERROR = tostring(err)
    }
    init_worker_by_lua_block {
        local pgstore = require "resty.pgstore"
        local db = pgstore.connect[==[@DSN@]==]
        local ok, err = pcall(db.query, db, "select 1")
        ngx.shared.pgstore:set("init_worker", tostring(err))
        -- One worker of the two runs the job; another takes over when it dies.
        assert(pgstore.every("spec-job", 0.05, function()
            ngx.shared.pgstore:set("ran:" .. ngx.worker.pid(), ngx.now())
        end, { shared_dict = "pgstore", ttl = 0.5 }))
    }
    server {
        listen 127.0.0.1:@PORT@;
        location = /ping { content_by_lua_block { ngx.say("pong") } }
        location = /init { content_by_lua_block { ngx.say(INIT_ERROR) } }
        location = /init_worker { content_by_lua_block { ngx.say(ngx.shared.pgstore:get("init_worker")) } }
        location = /ran {
            content_by_lua_block {
                ngx.update_time()
                local recent, all = {}, {}
                for _, k in ipairs(ngx.shared.pgstore:get_keys(0)) do
                    local pid = k:match("^ran:(%d+)$")
                    if pid then
                        all[#all + 1] = pid
                        if ngx.now() - ngx.shared.pgstore:get(k) < 0.2 then recent[#recent + 1] = pid end
                    end
                end
                ngx.say(table.concat(recent, ","), " ", table.concat(all, ","))
            }
        }
    }
}
]]
    local f = assert(io.open(prefix .. "/phases.conf", "w"))
    f:write(conf)
    f:close()
    s = nginx.start{ dsn = T.dsn(), template = prefix .. "/phases.conf" }
  end)

  teardown(function()
    if s then s:cleanup() end
    T.sh("rm -rf " .. prefix)
  end)

  it("refuses init_by_lua and statements in init_worker_by_lua, saying why", function()
    local init = assert(http.request(s.port, "GET", "/init")).body
    local worker = assert(http.request(s.port, "GET", "/init_worker")).body
    assert.truthy(init:find("connect is not available in init_by_lua", 1, true), init)
    assert.truthy(worker:find("cannot run in init_worker_by_lua", 1, true), worker)
  end)

  it("runs a pgstore.every job with a shared_dict in one worker, and moves it when that one dies", function()
    local function ran()
      local body = assert(http.request(s.port, "GET", "/ran")).body
      local recent, all = body:match("^(%S*) (%S*)")
      local r, a = {}, {}
      for pid in recent:gmatch("%d+") do r[#r + 1] = tonumber(pid) end
      for pid in all:gmatch("%d+") do a[#a + 1] = tonumber(pid) end
      return r, a
    end
    assert.are.equal(2, #s:workers())
    T.eventually(function() return #select(2, ran()) > 0 end, 5)
    T.sh("sleep 1")
    local recent, all = ran()
    assert.are.equal(1, #all, "one worker ran it")
    assert.are.same(all, recent, "and still does")
    T.sh("kill -9 " .. all[1])
    local moved = T.eventually(function()
      local r = ran()
      return #r == 1 and r[1] ~= all[1]
    end, 10)
    assert.truthy(moved, "another worker took over")
    local ok, why = s:stop()
    if not ok then
      -- The killed worker is reported, as it should be; nothing else.
      for line in why:gmatch("[^\n]+") do
        if line:find("%[") then assert.truthy(line:find("exited on signal 9", 1, true), line) end
      end
    end
  end)
end)

describe("what nginx shows of resty.pgstore's results", function()
  local s

  -- Uncaught: a pgstore error raised through each of the three; and what
  -- the caller gets back when it catches them, or raises its own values.
  local RAISE = [[
location = /t/raise {
    content_by_lua_block {
        local db = require("resty.pgstore").connect{ dsn = [==[@DSN@]==] }
        local what = ngx.var.arg_what
        local sql = "select * from pgstore_no_such_" .. what
        if what == "tx" then
            db:transaction(function(tx) assert(tx:exec(sql)) end)
        elseif what == "nested" then
            db:transaction(function(tx)
                local ok, err = pcall(tx.nested, tx, function(t) assert(t:exec(sql)) end)
                error(type(err) == "string" and err or "tx:nested raised a " .. type(err))
            end)
        elseif what == "lock" then
            db:with_lock("pgstore-spec-raise", function() assert(db:exec(sql)) end)
        end
        ngx.say("not raised")
    }
}
location = /t/raise_values {
    content_by_lua_block {
        local db = require("resty.pgstore").connect{ dsn = [==[@DSN@]==] }
        local mine = { mine = true }
        local _, t1 = pcall(db.transaction, db, function() error(mine) end)
        local _, t2 = pcall(db.transaction, db, function() error("boom", 0) end)
        local _, t3 = pcall(db.with_lock, db, "pgstore-spec-raise", function() error(mine) end)
        local _, t4 = pcall(db.transaction, db, function(tx) return tx:nested(function() error(mine) end) end)
        ngx.say(require("cjson").encode{ t1 == mine, t2 == "boom", t3 == mine, t4 == mine })
    }
}
location = /t/feed_rows {
    content_by_lua_block {
        local db = require("resty.pgstore").connect{ dsn = [==[@DSN@]==] }
        local es = db:events()
        local feed = db:feed{ events = es }
        local cursor = feed:position(5) -- live only: what commits from here on
        local stream = "feed-rows-" .. ngx.var.arg_id
        local res = es:append(stream, { { type = "T", data = { n = 1 }, metadata = { m = 2 } } })
        local a, after = feed:next(cursor, 5, 10)
        local b = feed:next(cursor, 5, 10)
        local decoded = es:decode(a)
        ngx.say(require("cjson").encode{
            live_only = #a == 1 and a[1].stream == stream and after == res.last_position,
            raw = type(a[1].data) == "string" and a[1].data:find('"n"') ~= nil,
            shared = a[1] == b[1],
            decoded = decoded[1].data.n == 1 and decoded[1].metadata.m == 2 and decoded[1].stream == stream,
            untouched = type(a[1].data) == "string" and type(a[1].metadata) == "string",
        })
    }
}
]]

  setup(function()
    s = nginx.start{ dsn = T.dsn(), workers = 1, locations = RAISE }
  end)

  teardown(function()
    if s then s:cleanup() end
  end)

  it("reads a stream that does not exist as [], not {}", function()
    local res = assert(http.request(s.port, "GET", "/streams/missing-" .. run_id(), s.auth))
    assert.are.equal(200, res.status, res.body)
    assert.are.equal("[]\n", res.body)
    res = assert(http.request(s.port, "GET", "/streams/missing-" .. run_id() .. "?from=5&backward=1", s.auth))
    assert.are.equal("[]\n", res.body)
  end)

  it("logs a pgstore error raised through db:transaction, tx:nested or db:with_lock with its code and message", function()
    for _, what in ipairs{ "tx", "nested", "lock" } do
      local since = #s:log()
      local res = assert(http.request(s.port, "GET", "/t/raise?what=" .. what, s.auth))
      assert.are.equal(500, res.status, what)
      local line = T.eventually(function()
        local text = s:log():sub(since + 1)
        return text:match("[^\n]*runtime error: [^\n]*")
      end, 5)
      assert.truthy(line, "no runtime error logged for " .. what .. ":\n" .. s:log():sub(since + 1))
      assert.truthy(line:find('pgstore error sql (SQLSTATE 42P01): relation "pgstore_no_such_' .. what
        .. '" does not exist', 1, true), line)
      assert.is_nil(line:find("unknown reason", 1, true), line)
    end
  end)

  it("serves feed rows raw and shared, es:decode copies decoded, feed:position starts live only", function()
    local res = assert(http.request(s.port, "GET", "/t/feed_rows?id=" .. run_id(), s.auth, nil, 20))
    assert.are.equal(200, res.status, res.body)
    assert.are.same({ live_only = true, raw = true, shared = true, decoded = true, untouched = true },
      cjson.decode(res.body))
  end)

  it("passes on the caller's own raised values unchanged", function()
    local res = assert(http.request(s.port, "GET", "/t/raise_values", s.auth))
    assert.are.equal(200, res.status, res.body)
    assert.are.same({ true, true, true, true }, cjson.decode(res.body))
  end)

  it("quits cleanly, the runtime errors above its only [error] lines", function()
    local ok, why = s:stop(15)
    assert.truthy(ok or why:find("nginx logged errors", 1, true), why)
    for line in (why or ""):gmatch("[^\n]+") do
      if line:find("%[") then
        assert.truthy(line:find("runtime error: ", 1, true) and line:find("pgstore error sql (", 1, true), line)
      end
    end
  end)
end)
