-- SPDX-License-Identifier: MIT
-- proxy — drives tests/proxy/pgs_proxy (built with the project) from a
-- spec: a loopback TCP proxy in front of the test cluster that cuts
-- connections around commits at random, cuts everything on demand, stalls
-- all traffic, or refuses connections. It ends by itself after `lifetime`
-- seconds even if the spec dies.
--
--   local P = proxy.start{ patterns = { "_append(" }, probability = 0.3 }
--   local db = T.connect{ dsn = P.dsn }
--   P:cut_all(); P:stall(true); P:down(true); P:cuts(); P:stop()
local T = require "testenv"

local _M = {}
local Proxy = {}
Proxy.__index = Proxy

local function binary()
  local dir = os.getenv("PGSTORE_BUILD_DIR") or (T.root() .. "/build")
  return dir .. "/tests/proxy/pgs_proxy"
end

-- opts: patterns (SQL substrings whose commit may be cut; none: never cut
-- by itself), probability (0.3), seed, lifetime (seconds, 600)
function _M.start(opts)
  opts = opts or {}
  local dir = T.tmpdir("proxy")
  local args = { "-t", os.getenv("PGSTORE_TEST_PORT"), "-o", dir .. "/port",
                 "-r", tostring(opts.probability or 0.3), "-l", tostring(opts.lifetime or 600) }
  if opts.seed then args[#args + 1] = "-s"; args[#args + 1] = tostring(opts.seed) end
  for _, p in ipairs(opts.patterns or {}) do
    args[#args + 1] = "-m"
    args[#args + 1] = "'" .. p:gsub("'", "'\\''") .. "'"
  end
  local out = T.sh(("%s %s >%s/log 2>&1 & echo $!"):format(binary(), table.concat(args, " "), dir))
  local self = setmetatable({ pid = assert(tonumber(out:match("(%d+)")), out), dir = dir }, Proxy)
  local port = T.eventually(function()
    return tonumber(T.read(dir .. "/port"):match("%d+"))
  end, 5)
  assert(port, "the proxy did not start: " .. T.read(dir .. "/log"))
  self.port = port
  self.dsn = T.dsn():gsub("port=%d+", "port=" .. port)
  return self
end

function Proxy:signal(sig) T.sh(("kill -%s %d"):format(sig, self.pid)) end
function Proxy:cut_all() self:signal("USR1") end

local function toggle(self, field, sig, on, word)
  if (self[field] or false) ~= on then
    local line = word .. " " .. (on and "on" or "off") .. "\n"
    local function seen()
      local n = 0
      for _ in self:log():gmatch(line:gsub("%p", "%%%0")) do n = n + 1 end
      return n
    end
    local before = seen()
    self[field] = on
    self:signal(sig)
    -- wait until the proxy has acted on it
    assert(T.eventually(function() return seen() > before end, 5), "the proxy did not switch " .. line)
  end
end

-- No byte moves and no connection is accepted while stalled.
function Proxy:stall(on) toggle(self, "stalled", "USR2", on, "stall") end
-- Everything cut, and new connections refused, while down.
function Proxy:down(on) toggle(self, "is_down", "HUP", on, "down") end

function Proxy:log() return T.read(self.dir .. "/log") end

-- { after = n, before = n, all = n (signalled cuts of every connection) }
function Proxy:cuts()
  local log = self:log()
  local c = { after = 0, before = 0, all = 0 }
  for when in log:gmatch("cut %d+ (%a+)") do c[when] = (c[when] or 0) + 1 end
  for _ in log:gmatch("cut%-all %d+") do c.all = c.all + 1 end
  return c
end

function Proxy:stop()
  if self.pid then
    T.sh(("grep -q pgs_proxy /proc/%d/cmdline 2>/dev/null && kill %d"):format(self.pid, self.pid))
    self.pid = nil
  end
  T.sh("rm -rf " .. self.dir)
end

return _M
