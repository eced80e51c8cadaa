-- SPDX-License-Identifier: MIT
-- The nginx example's bearer token (scripts/nginx/pgstore_auth.lua), in a
-- real nginx: every data route — and a location added beside them —
-- answers 401 with a `WWW-Authenticate: Bearer` challenge to a missing or
-- wrong token (or two Authorization headers) and writes nothing; the right
-- token works; /ping stays open; the token shows in no response and no log
-- line; nginx refuses to start without a usable token file, and a reload
-- without one keeps the running token. Locations that answer in the
-- rewrite phase (rewrite_by_lua, `return`, a server-level `return`) need
-- it too; a fresh nginx holds the token in no process's memory; the
-- workers run as the template's user.
local cjson = require "cjson"
local T = require "testenv"
local http = require "http"
local nginx = require "nginx"

local EXTRA = [[
location = /t/extra {
    content_by_lua_block { ngx.say("data of a location added to the example") }
}
location = /t/rewrite {
    rewrite_by_lua_block { ngx.say("answered in the rewrite phase") return ngx.exit(200) }
}
location = /t/return {
    return 200 "answered by return\n";
}
if ($uri = /t/server-return) {
    return 200 "answered by a server-level return\n";
}
]]

-- Routes of EXTRA that answer before the access phase.
local REWRITE_ROUTES = { "/t/rewrite", "/t/return", "/t/server-return" }

local srv, admin

local function run_id()
  return ("%d%04d"):format(os.time() % 100000, math.random(0, 9999))
end

local function stream_count(stream)
  return assert(admin:query("select count(*)::int as n from events where stream = $1", stream))[1].n
end

-- Every request to a route holding data, with the given headers. → responses, the stream POSTed to
local function every_route(headers)
  local stream = "auth-" .. run_id()
  local out = {}
  local function h(extra)
    local all = {}
    for k, v in pairs(headers or {}) do all[k] = v end
    for k, v in pairs(extra or {}) do all[k] = v end
    return all
  end
  out["POST /streams"] = assert(http.request(srv.port, "POST", "/streams/" .. stream, h(),
    '{"type":"Opened","data":{"by":"anyone"}}'))
  out["POST /streams (If-None-Match)"] = assert(http.request(srv.port, "POST", "/streams/" .. stream,
    h{ ["If-None-Match"] = "*" }, '[{"type":"A"},{"type":"B"}]'))
  out["GET /streams"] = assert(http.request(srv.port, "GET", "/streams/" .. stream, h()))
  out["HEAD /streams"] = assert(http.request(srv.port, "HEAD", "/streams/" .. stream, h()))
  -- /changes streams (never ends) when it is served: read its head only.
  local sse, refused = http.sse(srv.port, "/changes?after=0", h())
  if sse then
    out["GET /changes"] = { status = sse.res.status, headers = sse.res.headers, body = "" }
    sse:close()
  else
    assert(type(refused) == "table", refused)
    out["GET /changes"] = assert(http.request(srv.port, "GET", "/changes?after=0", h()))
  end
  out["GET /t/extra"] = assert(http.request(srv.port, "GET", "/t/extra", h()))
  for _, path in ipairs(REWRITE_ROUTES) do
    out["GET " .. path] = assert(http.request(srv.port, "GET", path, h()))
  end
  return out, stream
end

-- Reads a process's memory through /proc/<pid>/mem (as its owner or root).
-- → whether `needle` occurs in a readable mapping, and the names of the
-- mappings read (so a scan that read nothing cannot pass).
-- tools/test.sh's second pass: nginx runs with the sanitizer runtime preloaded.
local SANITIZED = (os.getenv("LD_PRELOAD") or ""):find("libasan", 1, true) ~= nil

local function memory_holds(pid, needle)
  local maps = assert(io.open("/proc/" .. pid .. "/maps"))
  local mem = assert(io.open("/proc/" .. pid .. "/mem", "rb"))
  mem:setvbuf("no") -- a read past a mapping's end would fail the whole read
  local found, read, present = false, {}, {}
  local CHUNK = 1024 * 1024
  for line in maps:lines() do
    local from, to, perms, name = line:match("^(%x+)%-(%x+) (%S+) %S+ %S+ %S+%s*(.*)$")
    from, to = tonumber(from, 16), tonumber(to, 16)
    present[name ~= "" and name or "anonymous"] = true
    if perms:sub(1, 1) == "r" and name ~= "[vvar]" and name ~= "[vsyscall]" then
      local at, tail = from, ""
      while at < to and not found do
        local n = math.min(CHUNK, to - at)
        local data = mem:seek("set", at) and mem:read(n)
        if not data then break end
        read[name ~= "" and name or "anonymous"] = true
        found = (tail .. data):find(needle, 1, true) ~= nil
        tail = data:sub(-#needle)
        at = at + n
      end
    end
  end
  maps:close()
  mem:close()
  return found, read, present
end

local function assert_refused(responses, challenge)
  for route, res in pairs(responses) do
    assert.are.equal(401, res.status, route .. ": " .. res.body)
    assert.are.equal(challenge, res.headers["www-authenticate"], route)
    if route:sub(1, 4) ~= "HEAD" then
      assert.are.equal("unauthorized", cjson.decode(res.body).error, route)
    end
  end
end

describe("the nginx example's bearer token", function()
  setup(function()
    admin = T.admin()
    assert(admin:events()) -- the table exists before nginx serves it
    srv = nginx.start{ dsn = T.dsn(), workers = 1, locations = EXTRA }
  end)

  teardown(function()
    if srv then
      local ok, why = srv:stop()
      srv:cleanup()
      assert.is_true(ok, why)
    end
  end)

  it("answers 401 with a Bearer challenge without a token, on every route with data", function()
    local responses, stream = every_route()
    assert_refused(responses, 'Bearer realm="pgstore"')
    assert.are.equal(0, stream_count(stream), "nothing was written")
  end)

  it("answers 401 to other schemes and to a token sent without its scheme", function()
    for _, value in ipairs{ "Basic " .. "dXNlcjpwYXNz", "Token " .. srv.token, srv.token, "Bearer",
                            "Bearer ", "Bearer" .. srv.token, "" } do
      local responses, stream = every_route{ Authorization = value }
      assert_refused(responses, 'Bearer realm="pgstore"')
      assert.are.equal(0, stream_count(stream), "nothing was written")
    end
  end)

  it("answers 401 with error=\"invalid_token\" to a wrong token, writing nothing", function()
    local t = srv.token
    local flipped = t:sub(1, -2) .. (t:sub(-1) == "0" and "1" or "0")
    for _, wrong in ipairs{ "wrong", flipped, t:sub(1, -2), t .. "0", t:upper(), t .. t,
                            ("0"):rep(#t), t:sub(1, 32) } do
      local responses, stream = every_route{ Authorization = "Bearer " .. wrong }
      assert_refused(responses, 'Bearer realm="pgstore", error="invalid_token"')
      assert.are.equal(0, stream_count(stream), "nothing was written")
    end
  end)

  it("serves every route to the right token", function()
    local responses, stream = every_route(srv.auth)
    assert.are.equal(201, responses["POST /streams"].status, responses["POST /streams"].body)
    assert.are.equal(409, responses["POST /streams (If-None-Match)"].status, "reached the handler")
    assert.are.equal(200, responses["GET /streams"].status)
    assert.are.equal("Opened", cjson.decode(responses["GET /streams"].body)[1].type)
    assert.are.equal(200, responses["HEAD /streams"].status)
    assert.are.equal(200, responses["GET /changes"].status)
    assert.are.equal(200, responses["GET /t/extra"].status)
    for _, path in ipairs(REWRITE_ROUTES) do
      assert.are.equal(200, responses["GET " .. path].status, path)
      assert.truthy(responses["GET " .. path].body:find("^answered"), path)
    end
    assert.are.equal(1, stream_count(stream))
    -- The scheme is case-insensitive (RFC 7235); /changes streams with the token.
    local s = assert(http.sse(srv.port, "/changes?after=0", { Authorization = "bearer " .. srv.token }))
    local seen
    repeat
      local ev = s:next(10)
      seen = ev and cjson.decode(ev.data).stream == stream
    until seen or not ev
    s:close()
    assert.is_true(seen, "the event came over /changes")
  end)

  it("refuses two Authorization headers, whichever holds the token", function()
    for _, headers in ipairs{ { Authorization = srv.auth.Authorization, authorization = "Bearer wrong" },
                              { Authorization = "Bearer wrong", authorization = srv.auth.Authorization } } do
      local res = assert(http.request(srv.port, "GET", "/t/extra", headers))
      assert.are.equal(400, res.status, "nginx takes one Authorization header only")
    end
  end)

  it("keeps /ping open", function()
    local res = assert(http.request(srv.port, "GET", "/ping"))
    assert.are.equal(200, res.status)
    assert.are.equal("pong\n", res.body)
  end)

  it("leaves the token in no process of a fresh nginx (read through /proc/<pid>/mem)", function()
    if SANITIZED then
      -- nginx then carries the ASan runtime, whose shadow mappings (terabytes)
      -- this scan cannot walk; the first pass, without it, runs the scan.
      pending("not under the sanitizer runtime: the first pass scans nginx's memory")
      return
    end
    local s = nginx.start{ dsn = T.dsn(), workers = 2 } -- served /ping only, without the token
    local ok, err = pcall(function()
      local pids = s:workers()
      assert.are.equal(2, #pids)
      table.insert(pids, 1, s.pid)
      for _, pid in ipairs(pids) do
        local holds, read, present = memory_holds(pid, s.token)
        assert.is_false(holds, "pid " .. pid .. (pid == s.pid and " (master)" or " (worker)")
          .. " holds the token")
        -- The scan read what it must: the heap, the stack, and the
        -- configuration (which names the token file).
        for _, region in ipairs{ "[heap]", "[stack]" } do
          assert.is_true(read[region] or not present[region], "pid " .. pid .. ": " .. region .. " read")
        end
        assert.is_true(read["[stack]"], "pid " .. pid .. ": stack read")
        assert.is_true((memory_holds(pid, s.token_file)), "pid " .. pid .. ": the scan finds the file's name")
      end
    end)
    s:stop()
    s:cleanup()
    assert(ok, err)
  end)

  it("runs the workers as the template's @USER@", function()
    local s = nginx.start{ dsn = T.dsn(), workers = 1, user = "daemon daemon" }
    local uids = {}
    for _, pid in ipairs(s:workers()) do
      uids[#uids + 1] = T.read("/proc/" .. pid .. "/status"):match("\nUid:%s+(%d+)")
    end
    local root = T.read("/proc/self/status"):match("\nUid:%s+(%d+)") == "0"
    s:stop()
    s:cleanup()
    assert.are.equal(1, #uids)
    -- Started as root, nginx switches its workers to the user; otherwise
    -- it cannot, and they run as whoever started it.
    assert.are.equal(root and "1" or T.read("/proc/self/status"):match("\nUid:%s+(%d+)"), uids[1])
  end)

  it("refuses a second server_rewrite_by_lua in the server (the check cannot be replaced)", function()
    local ok, err = pcall(nginx.start, { dsn = T.dsn(), workers = 1,
      locations = 'server_rewrite_by_lua_block { return }' })
    if ok then err:stop(); err:cleanup() end
    assert.is_false(ok, "nginx started")
    assert.truthy(tostring(err):find("is duplicate", 1, true), err)
  end)

  it("never shows a token, right or wrong, in a response or the error log", function()
    local wrong = "wrong-" .. srv.token:reverse()
    local texts = {}
    for _, headers in ipairs{ srv.auth, { Authorization = "Bearer " .. wrong } } do
      for route, res in pairs(every_route(headers)) do
        local head = {}
        for k, v in pairs(res.headers) do head[#head + 1] = k .. ": " .. v end
        texts[#texts + 1] = { route, table.concat(head, "\n") .. "\n" .. res.body }
      end
    end
    texts[#texts + 1] = { "error.log", srv:log() }
    for _, t in ipairs(texts) do
      assert.is_nil(t[2]:find(srv.token, 1, true), t[1] .. " shows the token")
      assert.is_nil(t[2]:find(wrong, 1, true), t[1] .. " shows the wrong token")
    end
    -- A wrong token is logged, by address only.
    assert.truthy(srv:log():find("wrong bearer token from 127.0.0.1", 1, true))
  end)

  describe("without a usable token file, nginx refuses to start", function()
    local dir
    setup(function() dir = T.tmpdir("nginx-auth") end)
    teardown(function() T.sh("rm -rf " .. dir) end)

    local function start_with(name, content)
      local path = dir .. "/" .. name
      if content then T.write(path, content) end
      local ok, err = pcall(nginx.start, { dsn = T.dsn(), workers = 1, token_file = path })
      if ok then err:stop(); err:cleanup() end
      assert.is_false(ok, name .. ": nginx started")
      assert.truthy(err:find("pgstore_auth:", 1, true), err)
      return err
    end

    it("keeps the running token when a reload finds none", function()
      local s = nginx.start{ dsn = T.dsn(), workers = 1, locations = EXTRA }
      local ok, err = pcall(function()
        T.write(s.token_file, "")
        local _, rc = T.sh(("%s -p %s -c %s/nginx.conf -s reload"):format(s.nginx, s.prefix, s.prefix))
        assert.are.equal(0, rc, "the signal was sent")
        local refused = T.eventually(function() return s:log():find("token file .* is empty") end, 10)
        assert.truthy(refused, "the reload was refused")
        assert.are.equal(200, assert(http.request(s.port, "GET", "/t/extra", s.auth)).status)
        assert.are.equal(401, assert(http.request(s.port, "GET", "/t/extra")).status)
      end)
      s:stop() -- its log holds the refused reload's [error]
      s:cleanup()
      assert(ok, err)
    end)

    it("refuses a missing file", function()
      local err = start_with("missing")
      assert.truthy(err:find("cannot read the token file", 1, true), err)
    end)

    it("refuses an empty file", function()
      assert.truthy(start_with("empty", "\n"):find("is empty", 1, true))
    end)

    it("refuses a short token, not showing it", function()
      local err = start_with("short", "sesame-open-7\n")
      assert.truthy(err:find("shorter than 32 characters", 1, true), err)
      assert.is_nil(err:find("sesame", 1, true), err)
    end)

    it("refuses more than one word, not showing them", function()
      local long = ("k"):rep(40)
      for i, content in ipairs{ long .. " " .. long, long .. "\n" .. long .. "\n", "Bearer " .. long,
                                long .. "\0" } do
        local err = start_with("words" .. i, content)
        assert.truthy(err:find("must hold one token", 1, true), err)
        assert.is_nil(err:find(long, 1, true), err)
      end
    end)
  end)
end)
