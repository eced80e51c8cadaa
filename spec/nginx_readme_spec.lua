-- SPDX-License-Identifier: MIT
-- The README's nginx configuration ("nginx / OpenResty" → "Configuration")
-- is complete and works as written: the ```nginx block is taken from
-- README.md, `nginx -t` accepts it, and nginx started with it answers on
-- the location the block shows, with its workers running as `nobody`.
--
-- What changes, and nothing else (each must match exactly once, so a README
-- that changes shape fails here rather than being tested half):
--   * lua_package_path / lua_package_cpath → this checkout's lua/ and the
--     build directory's lua/ (where pgstore/core.so is);
--   * `listen 127.0.0.1:8080` → a free loopback port;
--   * the DSN string "host=/run/postgresql dbname=app" → the test cluster's;
--   * a temporary prefix: `-p`, the error log (`-e`), the pid file
--     (`-g "pid …;"`) and an `access_log` line after `http {`.
local T = require "testenv"
local http = require "http"
local nginx = require "nginx"

local README_DSN = '"host=/run/postgresql dbname=app"'

-- The first ```nginx block of the README's "### Configuration" in the
-- nginx section.
local function readme_block()
  local readme = T.read(nginx.root() .. "/README.md")
  local section = assert(readme:find("## nginx / OpenResty", 1, true), "no nginx section in README.md")
  local conf = assert(readme:find("### Configuration", section, true), "no Configuration in the nginx section")
  local block = readme:match("```nginx\n(.-)```", conf)
  return assert(block, "no ```nginx block under Configuration")
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- s with `pattern` (plain text) replaced by `repl`, asserting one match.
local function replace_once(s, pattern, repl, what)
  local i, j = s:find(pattern, 1, true)
  assert(i, "the README's block has no " .. what .. " (" .. pattern .. ")")
  assert(not s:find(pattern, j + 1, true), "the README's block has " .. what .. " twice")
  return s:sub(1, i - 1) .. repl .. s:sub(j + 1)
end

-- The block with only the local paths, the port and the DSN changed.
local function localize(block, prefix, port)
  local root, build = nginx.root(), nginx.build_dir()
  block = replace_once(block, block:match('lua_package_path%s+"[^"]*";'),
    ('lua_package_path "%s/lua/?.lua;%s/lua/?/init.lua;;";'):format(root, root), "lua_package_path")
  block = replace_once(block, block:match('lua_package_cpath%s+"[^"]*";'),
    ('lua_package_cpath "%s/lua/?.so;;";'):format(build), "lua_package_cpath")
  block = replace_once(block, "listen 127.0.0.1:8080;", ("listen 127.0.0.1:%d;"):format(port), "listen")
  assert(not T.dsn():find("]==]", 1, true))
  block = replace_once(block, README_DSN, "[==[" .. T.dsn() .. "]==]", "DSN")
  block = replace_once(block, "\nhttp {\n", ("\nhttp {\n    access_log %s/access.log;\n"):format(prefix), "http {")
  return block
end

describe("the README's nginx configuration", function()
  local prefix, port, master

  local function run(args)
    return T.sh(("%s%s -p %s -c %s -e %s -g %s %s"):format(nginx.preload(), q(nginx.binary()), q(prefix), q(prefix .. "/nginx.conf"),
      q(prefix .. "/error.log"), q("pid " .. prefix .. "/nginx.pid;"), args or ""))
  end

  local function errors()
    local bad = {}
    for line in T.read(prefix .. "/error.log"):gmatch("[^\n]+") do
      if line:find("%[error%]") or line:find("%[crit%]") or line:find("%[alert%]") or line:find("%[emerg%]") then
        bad[#bad + 1] = line
      end
    end
    return bad
  end

  setup(function()
    prefix = T.tmpdir("nginx-readme")
    local block = readme_block()
    -- A free loopback port: nginx says so when it is not.
    for _ = 1, 5 do
      port = math.random(20000, 60000)
      T.write(prefix .. "/nginx.conf", localize(block, prefix, port))
      T.write(prefix .. "/error.log", "")
      local out, rc = run()
      if rc == 0 then
        master = tonumber(T.read(prefix .. "/nginx.pid"))
        break
      end
      assert(out:find("Address already in use", 1, true), "nginx did not start:\n" .. out
        .. T.read(prefix .. "/error.log"))
    end
    assert(master, "no free port")
  end)

  teardown(function()
    if master and select(2, T.sh("kill -0 " .. master)) == 0 then
      run("-s quit")
      T.eventually(function() return select(2, T.sh("kill -0 " .. master)) ~= 0 end, 5)
      T.sh("kill -9 " .. master .. " 2>/dev/null")
    end
    T.sh("rm -rf " .. q(prefix))
  end)

  it("passes nginx -t", function()
    local out, rc = run("-t")
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("test is successful", 1, true), out)
  end)

  it("answers on its location through resty.pgstore, with the workers running as nobody", function()
    local res = T.eventually(function()
      local r = http.request(port, "GET", "/now", nil, nil, 5)
      return r and r.status == 200 and r
    end, 10)
    assert.truthy(res, "GET /now answered 200")
    assert.truthy(res.body:match("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d"), res.body)
    local users = T.sh("ps -o user= --ppid " .. master)
    assert.truthy(users:find("nobody", 1, true), users)
    for user in users:gmatch("%S+") do assert.are.equal("nobody", user) end
    assert.are.same({}, errors())
  end)

  it("quits within 5 s, leaving a clean error log", function()
    local out, rc = run("-s quit")
    assert.are.equal(0, rc, out)
    local gone = T.eventually(function() return select(2, T.sh("kill -0 " .. master)) ~= 0 end, 5)
    assert.truthy(gone, "nginx exited")
    assert.are.same({}, errors())
  end)
end)
