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
local BOUND = 0.05   -- seconds from the commit to the SSE frame, each
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
    -- The feed is live once one event has come through.
    assert(es:append(stream, { { type = "Warm" } }))
    assert.truthy(frame_of(s, stream, 10), "the first event arrived")
    local worst, seen, direct = 0, {}, {}
    for i = 1, 3 do
      core.sleep(IDLE)
      -- Appended by another client of the database (the host library)...
      assert(es:append(stream, { { type = "AfterIdle", data = { i = i } } }))
      local committed = http.now()
      local e = frame_of(s, stream, 5)
      local lat = http.now() - committed
      assert.are.equal(i + 1, e and e.version)
      seen[#seen + 1] = ("%.1f"):format(lat * 1000)
      direct[i] = lat
      if lat > worst then worst = lat end
    end
    -- ...and over HTTP, through nginx's own append path.
    core.sleep(IDLE)
    local c = assert(http.connect(srv.port))
    local res = assert(c:request("POST", "/streams/" .. stream, srv.auth, '{"type":"OverHttp"}', 10))
    local committed = http.now()
    assert.are.equal(201, res.status, res.body)
    local e = frame_of(s, stream, 5)
    local lat = http.now() - committed
    assert.are.equal("OverHttp", e and e.type)
    seen[#seen + 1] = ("%.1f (over HTTP)"):format(lat * 1000)
    if lat > worst then worst = lat end
    c:close()
    s:close()
    print(("\n    commit → SSE frame after %g s idle, ms: %s"):format(IDLE, table.concat(seen, ", ")))
    assert.is_true(worst < BOUND, ("worst %.1f ms"):format(worst * 1000))
    table.sort(direct)
    assert.is_true(direct[2] < TYPICAL, ("median %.1f ms"):format(direct[2] * 1000))
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
    assert.is_true(ok, why)
    assert.is_true(took < 5, ("nginx -s quit took %.1f s"):format(took))
    local left = T.eventually(function()
      return assert(admin:query("select count(*)::int as n from pg_stat_activity where application_name like $1",
        "pgstore-nginx%"))[1].n == 0
    end, 10)
    assert.truthy(left, "every connection of nginx is gone")
  end)
end)
