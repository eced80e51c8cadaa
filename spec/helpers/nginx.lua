-- SPDX-License-Identifier: MIT
-- nginx — starts Debian's nginx with the example configuration
-- (scripts/nginx/nginx.conf) in a temporary prefix, against a given DSN,
-- and stops it with `nginx -s quit`, checking that it exits cleanly.
--
--   local srv = nginx.start{ dsn = T.dsn(), workers = 1,
--                            locations = "location = /x { … }",  -- server.d/
--                            main = "thread_pool tiny threads=1;" } -- main.d/
--   (@DSN@, @PORT@, @PREFIX@, @ROOT@, @BUILD@, @TOKEN_FILE@ and @USER@ are
--   filled in those too; @USER@ is `user` or "nobody nogroup", nginx's
--   default)
--   srv.port, srv.prefix, srv:log(), srv:workers()
--   srv.token, srv.auth   -- the bearer token (random, in srv.token_file, 0600,
--                         -- in the prefix) and { Authorization = "Bearer …" }
--   local ok, why = srv:stop()
--   local exited, seconds = srv:quit(5)  -- the same, without looking at the log
--
-- A machine without nginx fails here (tools/deps.sh installs it): the
-- nginx specs must not pass by skipping.
local http = require "http"

local _M = {}

local function sh(cmd)
  local f = io.popen("unset LD_PRELOAD; " .. cmd .. " 2>&1; echo \"__rc=$?\"")
  local out = f:read("*a")
  f:close()
  local rc = tonumber(out:match("__rc=(%d+)%s*$"))
  return (out:gsub("__rc=%d+%s*$", "")), rc
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function read(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write(path, s)
  local f = assert(io.open(path, "w"))
  f:write(s)
  f:close()
end

local function abs(path)
  if path:sub(1, 1) == "/" then return path end
  return (sh("cd " .. q(path) .. " && pwd")):gsub("%s+$", "")
end

function _M.root()
  return abs(os.getenv("PGSTORE_ROOT") or ".")
end

-- The build directory whose lua/pgstore/core.so nginx loads.
function _M.build_dir()
  return abs(os.getenv("PGSTORE_BUILD_DIR") or (_M.root() .. "/build"))
end

function _M.binary()
  for _, p in ipairs{ "/usr/sbin/nginx", "/usr/bin/nginx" } do
    if read(p) then return p end
  end
  local out, rc = sh("command -v nginx")
  assert(rc == 0, "nginx is not installed: run tools/deps.sh (Debian's nginx and "
    .. "libnginx-mod-http-lua)")
  return (out:gsub("%s+$", ""))
end

-- The DSN inside a Lua long string [==[ … ]==] in the template.
local function fill(template, vars)
  return (template:gsub("@([%u_]+)@", function(k)
    local v = vars[k]
    assert(v ~= nil, "template variable @" .. k .. "@ has no value")
    return tostring(v)
  end))
end

-- A fresh token: 32 random bytes, hex.
local function random_token()
  local f = assert(io.open("/dev/urandom", "rb"))
  local bytes = f:read(32)
  f:close()
  return (bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

-- With the sanitizer build, a program that loads pgstore/core.so but is
-- not ours (nginx, luajit) needs the same runtime preloaded: the prefix for
-- its command line ("" otherwise).
local function preload()
  local p = os.getenv("LD_PRELOAD")
  if p and p:find("libasan", 1, true) then
    return "LD_PRELOAD=" .. q(p) .. " ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 "
  end
  return ""
end
_M.preload = preload

local Server = {}
local mt = { __index = Server }

-- A port from /dev/urandom: specs started in the same second would draw
-- the same math.random sequence and race for one port.
local function random_port()
  local f = assert(io.open("/dev/urandom", "rb"))
  local b1, b2 = f:read(2):byte(1, 2)
  f:close()
  return 20000 + (b1 * 256 + b2) % 40000
end

-- nginx.start{ dsn, workers = 1, locations, main, lua_path, template, user,
--              token = random | token_file = path (used as it is) } → server
function _M.start(o)
  local nginx = _M.binary()
  local prefix = (sh("mktemp -d /tmp/pgstore-nginx.XXXXXX")):gsub("%s+$", "")
  for _, d in ipairs{ "tmp", "server.d", "main.d" } do assert(sh("mkdir -p " .. q(prefix .. "/" .. d))) end
  local token, token_file = o.token, o.token_file
  if not token_file then
    token = token or random_token()
    token_file = prefix .. "/token"
    write(token_file, token .. "\n")
    assert(sh("chmod 600 " .. q(token_file)))
  end
  local template = assert(read(o.template or (_M.root() .. "/scripts/nginx/nginx.conf")))
  if o.lua_path then
    template = template:gsub('lua_package_path "', 'lua_package_path "' .. o.lua_path .. ";", 1)
  end
  if o.main then
    -- Main-context additions (thread pools) go beside the example's own.
    template = template:gsub("\nevents {", "\ninclude " .. prefix .. "/main.d/*.conf;\n\nevents {", 1)
  end
  assert(not o.dsn:find("]==]", 1, true), "the DSN cannot contain ]==]")
  local last
  for _ = 1, 5 do
    local port = random_port()
    local vars = {
      ROOT = _M.root(), BUILD = _M.build_dir(), PREFIX = prefix, PORT = port,
      WORKERS = o.workers or 1, DSN = o.dsn, TOKEN_FILE = token_file,
      USER = o.user or "nobody nogroup",
    }
    write(prefix .. "/nginx.conf", fill(template, vars))
    if o.locations then write(prefix .. "/server.d/spec.conf", fill(o.locations, vars)) end
    if o.main then write(prefix .. "/main.d/spec.conf", fill(o.main, vars)) end
    write(prefix .. "/error.log", "")
    local out, rc = sh(preload() .. q(nginx) .. " -p " .. q(prefix) .. " -c " .. q(prefix .. "/nginx.conf")
      .. " -e " .. q(prefix .. "/error.log"))
    if rc == 0 then
      local self = setmetatable({ port = port, prefix = prefix, nginx = nginx, token = token,
                                  token_file = token_file,
                                  auth = token and { Authorization = "Bearer " .. token } }, mt)
      self.pid = tonumber(read(prefix .. "/nginx.pid") or "")
      local deadline = http.now() + 15
      repeat
        local res = http.request(port, "GET", "/ping", nil, nil, 2)
        if res and res.status == 200 then
          self.started_workers = self:workers()
          return self
        end
        sh("sleep 0.05")
      until http.now() > deadline
      self:stop()
      error("nginx started but /ping did not answer:\n" .. (self:log() or ""))
    end
    last = out .. (read(prefix .. "/error.log") or "")
    if not last:find("Address already in use", 1, true) then break end
  end
  sh("rm -rf " .. q(prefix))
  error("nginx did not start:\n" .. tostring(last))
end

function Server:log()
  return read(self.prefix .. "/error.log") or ""
end

-- Lines of the error log at level error or worse ([error], [crit], [alert], [emerg]).
function Server:errors(since)
  local out = {}
  local text = self:log():sub((since or 0) + 1)
  for line in text:gmatch("[^\n]+") do
    if line:find("%[error%]") or line:find("%[crit%]") or line:find("%[alert%]") or line:find("%[emerg%]") then
      out[#out + 1] = line
    end
  end
  return out
end

-- The worker processes' pids.
function Server:workers()
  local out = sh("ps -o pid= --ppid " .. self.pid)
  local pids = {}
  for pid in out:gmatch("%d+") do pids[#pids + 1] = tonumber(pid) end
  return pids
end

local function alive(pid)
  local _, rc = sh("kill -0 " .. pid)
  return rc == 0
end

-- nginx -s quit, then waits (bounded) for the master to exit; past the
-- bound, kills the master and its workers. → true, seconds | false, why
function Server:quit(timeout)
  if self.stopped then return true, 0 end
  self.stopped = true
  local t0 = http.now()
  local out, rc = sh(q(self.nginx) .. " -p " .. q(self.prefix) .. " -c " .. q(self.prefix .. "/nginx.conf")
    .. " -s quit")
  if rc ~= 0 then return false, "nginx -s quit failed: " .. out end
  local deadline = t0 + (timeout or 20)
  local workers = self:workers()
  for _, pid in ipairs(self.started_workers or {}) do workers[#workers + 1] = pid end
  while self.pid and alive(self.pid) do
    if http.now() > deadline then
      sh("kill -9 " .. self.pid)
      for _, pid in ipairs(workers) do sh("kill -9 " .. pid) end
      return false, "nginx did not exit within " .. (timeout or 20) .. " s of -s quit"
    end
    sh("sleep 0.05")
  end
  return true, http.now() - t0
end

-- quit(timeout), then the log must be clean.
-- → true | false, why (with the log's bad lines)
function Server:stop(timeout)
  if self.stopped then return true end
  local ok, why = self:quit(timeout)
  if not ok then return false, why end
  local bad = self:errors()
  if #bad > 0 then return false, "nginx logged errors:\n" .. table.concat(bad, "\n") end
  return true
end

-- Removes the prefix (after stop) — unless srv.keep was set, for a look
-- at what went wrong.
function Server:cleanup()
  if not self.stopped then self:stop() end
  if self.keep then
    io.stderr:write("nginx prefix kept: ", self.prefix, "\n")
    return
  end
  sh("rm -rf " .. q(self.prefix))
end

return _M
