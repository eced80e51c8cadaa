-- SPDX-License-Identifier: MIT
-- Live changes in a real nginx (the example of scripts/nginx/): an event
-- committed after an idle spell reaches a /changes client at once — the
-- LISTEN hub's thread wakes on the notification itself, nothing polls —
-- and the thread that waits there never holds up a reload or
-- `nginx -s quit`. A correctness bound, not a benchmark (bench/live_bench.lua).
local cjson = require "cjson"
local core = require "pgstore.core"
local T = require "testenv"
local http = require "http"
local nginx = require "nginx"

local IDLE = 2       -- seconds of silence before each append
local BOUND = 0.05    -- seconds from the commit to the SSE frame
local TYPICAL = 0.015 -- the median of the appends made by another client
                      -- (a loop that slept between looks took 20-110 ms)

describe("live changes in nginx", function()
  local srv, admin, es

  setup(function()
    admin = T.admin()
    es = assert(admin:events())
    srv = nginx.start{ dsn = T.dsn(), workers = 1 }
  end)

  teardown(function()
    if srv then srv:cleanup() end
    if es then es:close() end
  end)

  local function run_id()
    return ("%d%04d"):format(os.time() % 100000, math.random(0, 9999))
  end

  -- Reads frames until one of `stream` comes (bounded). → the event, or nil
  local function frame_of(s, stream, timeout)
    local deadline = http.now() + timeout
    while http.now() < deadline do
      local ev = s:next(deadline - http.now())
      if not ev then return nil end
      local e = cjson.decode(ev.data)
      if e.stream == stream then return e end
    end
  end

  local function nginx_cmd(signal)
    return T.sh(("%s -p '%s' -c '%s/nginx.conf' -s %s"):format(srv.nginx, srv.prefix, srv.prefix, signal))
  end

  it("delivers an append that follows a 2 s idle spell within 50 ms of its commit", function()
    local stream = "idle-" .. run_id()
    local s = assert(http.sse(srv.port, "/changes", srv.auth))
    -- The feed is live once one event has come through; nginx's append
    -- path (thread VMs loading their modules, their first connections)
    -- is warm after one more.
    assert(es:append(stream, { { type = "Warm" } }))
    assert.truthy(frame_of(s, stream, 10), "the first event arrived")
    local c = assert(http.connect(srv.port))
    assert.are.equal(201, assert(c:request("POST", "/streams/" .. stream, srv.auth, '{"type":"Warm"}', 10)).status)
    assert.truthy(frame_of(s, stream, 10), "the first event over HTTP arrived")
    local version = 2
    -- → seconds from the commit (the append's return) to the frame
    local function after_idle(append)
      core.sleep(IDLE)
      append()
      local committed = http.now()
      version = version + 1
      local e = frame_of(s, stream, 5)
      assert.are.equal(version, e and e.version)
      return http.now() - committed
    end
    -- Appended by another client of the database (the host library)...
    local direct = {}
    for i = 1, 3 do
      direct[i] = after_idle(function() assert(es:append(stream, { { type = "AfterIdle" } })) end)
    end
    -- ...and over HTTP, through nginx's own append path (the better of two:
    -- a single sample on a shared machine may meet a scheduling spike).
    local over_http = {}
    for i = 1, 2 do
      over_http[i] = after_idle(function()
        local res = assert(c:request("POST", "/streams/" .. stream, srv.auth, '{"type":"OverHttp"}', 10))
        assert.are.equal(201, res.status, res.body)
      end)
    end
    c:close()
    s:close()
    local function ms(xs)
      local out = {}
      for i, x in ipairs(xs) do out[i] = ("%.1f"):format(x * 1000) end
      return table.concat(out, ", ")
    end
    print(("\n    commit → SSE frame after %g s idle, ms: %s; over HTTP: %s"):format(IDLE, ms(direct), ms(over_http)))
    table.sort(direct)
    table.sort(over_http)
    assert.is_true(direct[2] < TYPICAL, ("median %.1f ms"):format(direct[2] * 1000))
    assert.is_true(direct[2] < BOUND and over_http[1] < BOUND,
      ("median %.1f ms, over HTTP %.1f ms"):format(direct[2] * 1000, over_http[1] * 1000))
  end)

  it("reloads promptly: the old worker exits within 5 s, the new one delivers at once", function()
    local stream = "reload-" .. run_id()
    local old = srv:workers()
    local s = assert(http.sse(srv.port, "/changes", srv.auth))
    assert(es:append(stream, { { type = "Before" } }))
    assert.truthy(frame_of(s, stream, 10), "delivered before the reload")
    local t0 = http.now()
    local out, rc = nginx_cmd("reload")
    assert.are.equal(0, rc, out)
    local gone = T.eventually(function()
      for _, pid in ipairs(old) do
        local _, alive = T.sh("kill -0 " .. pid)
        if alive == 0 then return false end
      end
      return true
    end, 10)
    local took = http.now() - t0
    s:close()
    print(("\n    the old worker exited %.2f s after nginx -s reload"):format(took))
    assert.truthy(gone, "the old worker exited")
    assert.is_true(took < 5, ("the old worker took %.1f s to exit"):format(took))
    -- The new worker's hub: its first subscriber LISTENs, then waits in a thread.
    local s2 = assert(http.sse(srv.port, "/changes", srv.auth))
    assert(es:append(stream, { { type = "After" } }))
    local e = frame_of(s2, stream, 10)
    assert.are.equal("After", e and e.type)
    s2:close()
  end)

  it("quits within 5 s with a client on /changes and the hub's thread waiting", function()
    local stream = "quit-" .. run_id()
    local s = assert(http.sse(srv.port, "/changes", srv.auth))
    assert(es:append(stream, { { type = "Before" } }))
    assert.truthy(frame_of(s, stream, 10), "delivered")
    core.sleep(0.5) -- the hub is back in its waiting call
    local t0 = http.now()
    local ok, why = srv:stop(10)
    local took = http.now() - t0
    s:close()
    print(("\n    nginx -s quit took %.2f s"):format(took))
    assert.is_true(ok, why)
    assert.is_true(took < 5, ("nginx -s quit took %.1f s"):format(took))
    local left = T.eventually(function()
      return assert(admin:query("select count(*)::int as n from pg_stat_activity where application_name like $1",
        "pgstore-nginx%"))[1].n == 0
    end, 10)
    assert.truthy(left, "every connection of nginx is gone")
  end)
end)
