-- SPDX-License-Identifier: MIT
-- tty — runs a program on a pseudo-terminal for specs, through tmux on a
-- private server (its own socket; other tmux users are not touched):
-- type into it, read its screen, wait (bounded) for text, get its exit
-- status. Sessions stay after their program exits (remain-on-exit) so the
-- status can be read; close() each one, stop() the server at the end.
local T = require "testenv"
local core = require "pgstore.core"

local _M = {}

local dir, counter = nil, 0

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function tmux(args)
  return T.sh(("tmux -u -S %s %s"):format(q(dir .. "/sock"), args))
end

local function server()
  if dir then return end
  dir = T.tmpdir("tty")
  local f = assert(io.open(dir .. "/tmux.conf", "w"))
  f:write("set -s exit-empty off\nset -g remain-on-exit on\nset -g status off\nset -g history-limit 5000\n")
  f:close()
end

local Session = {}
Session.__index = Session

-- start(command_line, { env = { K = V }, width = 80, height = 30 })
-- The program runs under a small sh that records its exit status (tmux's
-- own #{pane_dead_status} can miss it); the sh traps INT so that Ctrl-C
-- reaches only the program.
function _M.start(cmd, opts)
  opts = opts or {}
  server()
  counter = counter + 1
  local name = "s" .. counter
  local env = { "LANG=C.UTF-8", "TERM=screen" }
  for k, v in pairs(opts.env or {}) do env[#env + 1] = k .. "=" .. q(v) end
  table.sort(env)
  local script = ("%s/%s.sh"):format(dir, name)
  local f = assert(io.open(script, "w"))
  f:write("trap : INT QUIT\n", "env ", table.concat(env, " "), " ", cmd, "\n",
    ("echo $? >%s\n"):format(q(("%s/%s.status"):format(dir, name))))
  f:close()
  local out, rc = T.sh(("tmux -u -S %s -f %s new-session -d -s %s -x %d -y %d %s"):format(
    q(dir .. "/sock"), q(dir .. "/tmux.conf"), name, opts.width or 80, opts.height or 30, q("sh " .. script)))
  assert(rc == 0, "tmux new-session failed: " .. out)
  return setmetatable({ name = name, status_file = ("%s/%s.status"):format(dir, name) }, Session)
end

-- Types text as it is (no key names).
function Session:send(text)
  tmux(("send-keys -t %s -l %s"):format(self.name, q(text)))
  return self
end

-- Presses keys by tmux name: "Enter", "Tab", "Up", "C-c", "C-d", "C-u" …
function Session:keys(...)
  local names = {}
  for i, k in ipairs{ ... } do names[i] = q(k) end
  tmux(("send-keys -t %s %s"):format(self.name, table.concat(names, " ")))
  return self
end

-- Pastes text as a terminal does: all at once, newlines as Enter; with
-- `bracketed`, wrapped in the bracketed-paste marks when the program
-- asked for them (tmux paste-buffer -p).
function Session:paste(text, bracketed)
  local buffer = self.name .. "_paste"
  tmux(("set-buffer -b %s %s"):format(buffer, q(text)))
  tmux(("paste-buffer -d %s -b %s -t %s"):format(bracketed and "-p" or "", buffer, self.name))
  return self
end

-- The screen and its scrollback, wrapped lines joined, the blank lines
-- below the cursor cut (the last line keeps its spaces: "pgstore> ").
function Session:screen()
  local out = tmux(("capture-pane -p -J -S - -t %s"):format(self.name))
  local n
  repeat out, n = out:gsub("\n[ \t]*$", "") until n == 0
  return out
end

-- Waits (bounded) until `text` is on the screen `count` times (default
-- once); returns the screen, or fails showing it.
function Session:wait_for(text, timeout, count)
  local deadline = core.now() + (timeout or 5)
  local screen
  repeat
    screen = self:screen()
    local n, from = 0, 1
    while true do
      local s, e = screen:find(text, from, true)
      if not s then break end
      n, from = n + 1, e + 1
    end
    if n >= (count or 1) then return screen end
    core.sleep(0.03)
  until core.now() > deadline
  error(("timed out waiting for %q on the terminal:\n%s"):format(text, screen), 2)
end

-- The last line of the screen (where the prompt is).
function Session:last_line()
  return self:screen():match("([^\n]*)$")
end

-- The program's exit status once it has ended (nil before); 128 + N
-- when signal N killed it.
function Session:status()
  local f = io.open(self.status_file)
  if not f then return nil end
  local status = tonumber(f:read("*l"))
  f:close()
  return status
end

function Session:wait_exit(timeout)
  local deadline = core.now() + (timeout or 5)
  repeat
    local s = self:status()
    if s then return s end
    core.sleep(0.03)
  until core.now() > deadline
  error("timed out waiting for the program to exit:\n" .. self:screen(), 2)
end

function Session:close()
  tmux("kill-session -t " .. self.name)
end

function _M.stop()
  if not dir then return end
  tmux("kill-server")
  T.sh("rm -rf " .. q(dir))
  dir = nil
end

_M.quote = q
return _M
