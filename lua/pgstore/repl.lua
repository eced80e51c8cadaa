-- SPDX-License-Identifier: MIT
-- pgstore.repl — the interactive prompt of `pgstore` (and `pgstore repl`):
-- Lua with `db`, `es` and `pgstore` ready, expressions printed without `=`
-- (pgstore.pretty), chunks continued over lines, commands (:help, :quit,
-- \listen …), and NOTIFY messages printed above the prompt while it waits.
--
-- On a terminal it reads through pgstore.readline (the host's libedit
-- module) in callback mode: one poll() covers stdin and the listener's
-- socket, so a notification is printed above the line being typed, which
-- is then redrawn as it was. Without a terminal it reads lines from stdin,
-- prints no prompt, and exits 1 at the end if any chunk failed.
local core = require "pgstore.core"
local pretty = require "pgstore.pretty"
local complete = require "pgstore.repl.complete"
local history = require "pgstore.repl.history"
local grid = require "pgstore.repl.grid"
local look = require "pgstore.repl.look"
local cjson = require("cjson.safe").new()

local type, tostring, select, pcall, xpcall = type, tostring, select, pcall, xpcall
local concat, unpack = table.concat, unpack
local format = string.format

local _M = {}
local Repl = {}
local mt = { __index = Repl, __metatable = false }

local PROMPT, CONTINUE = "pgstore> ", ">> "
local MAX_DRAIN = 1000 -- notifications printed per wake-up, so typing stays responsive
local LISTEN_RETRY = 1  -- seconds between l:wait() calls after it failed (or while no fd)

-- ---- chunks ---------------------------------------------------------------

-- compile(chunk) → fn, is_expression | nil, "incomplete" | nil, message
-- An expression is tried first: fn(pack) then returns pack(<chunk>), so
-- every value arrives (nils too) and a function raising inside it is not a
-- tail call that would lose the "repl:1:" position. A chunk the parser ran
-- out of (its error ends in '<eof>', as luajit's own REPL checks) is
-- incomplete; a plain string cannot continue on the next line unless the
-- line ends in a backslash, so that one is an error at once.
local function ran_out(err, chunk)
  return err:match("'<eof>'$") and not (err:match("unfinished string near '<eof>'$") and not chunk:match("\\$"))
end

-- An unfinished expression (`{`, `1 +`) continues too, as in Lua 5.3's
-- `lua`: the statement parser fails on it before the end, the same text
-- after `return` runs out. `name` is the chunk's name in messages and
-- `first` the number of its first line (errors name the line as typed).
function _M.compile(chunk, name, first)
  name = "=" .. (name or "repl")
  local pad = ("\n"):rep((first or 1) - 1)
  chunk = chunk:gsub("^%s*=", "", 1) -- Lua 5.1's `=expr`
  local fn = loadstring("local __values = ... return __values(" .. pad .. chunk .. "\n)", name)
  if fn then return fn, true end
  local err
  fn, err = loadstring(pad .. chunk, name)
  if fn then return fn, false end
  if ran_out(err, chunk) then return nil, "incomplete" end
  local _, experr = loadstring("return " .. chunk, name)
  if experr and ran_out(experr, chunk) then return nil, "incomplete" end
  return nil, err
end

-- ":name args" or "\name args" at the start of a line → name, args
function _M.command(line)
  local name, args = line:match("^%s*[:\\](%a[%w_]*)%s*(.-)%s*$")
  return name, args
end

-- ---- output ---------------------------------------------------------------

local safe_text = require("pgstore.printable").escape

function Repl:say(text)
  io.stdout:write(text, "\n")
  io.stdout:flush()
end

function Repl:warn(text)
  io.stdout:flush()
  io.stderr:write(text, "\n")
end

function Repl:report(err)
  self.failed = true
  self:warn(pretty.error(err))
end

local FORMATS = { table = true, lua = true, json = true }

-- JSON of one value (SQL NULL is null); what JSON cannot say is printed
-- as Lua, with the reason.
local function json_text(v)
  local s, err = cjson.encode(v)
  if s then return s end
  return pretty.format(v) .. "  -- not JSON: " .. tostring(err)
end

function Repl:show(n, ...)
  if n == 0 then return end
  self.env._ = (...)
  local opts = self.settings
  opts.width = self.columns and self.columns() or 80
  if opts.format == "json" then
    local out = {}
    for i = 1, n do out[i] = json_text((select(i, ...))) end
    return self:say(concat(out, "\n"))
  end
  if opts.format == "table" and n == 1 and grid.is_rows((...)) then
    return self:say(grid.format((...), opts.width))
  end
  self:say(pretty.values(opts, n, ...))
end

-- ---- running code ---------------------------------------------------------

local function pack(...) return { n = select("#", ...), ... } end

function Repl:execute(fn, expression)
  setfenv(fn, self.env)
  -- Interpreted, with the functions it defines: the Ctrl-C hook never
  -- runs inside a compiled trace, so a typed loop could not be stopped.
  if jit then jit.off(fn, true) end
  local trace
  local function handler(e)
    trace = debug.traceback(type(e) == "string" and e or pretty.error(e), 2)
    return e
  end
  local rl = self.rl
  if rl then rl.interruptible(true) end
  local res = pack(xpcall(fn, handler, pack))
  -- The terminal echoed ^C where the cursor was: the error goes below it.
  if rl and rl.interruptible(false) then io.stdout:write("\n") end
  if not res[1] then
    self.last_trace = trace
    self:report(res[2])
    return
  end
  local v = expression and res[2] or { n = res.n - 1, unpack(res, 2, res.n) }
  -- `nil, err` at the top level is a failure too (the exit status says so)
  if v.n >= 2 and v[1] == nil and v[2] ~= nil then self.failed = true end
  self:show(v.n, unpack(v, 1, v.n))
end

-- Takes one line; returns "more" while a chunk is unfinished, "quit" to
-- leave, nil otherwise.
function Repl:feed(line)
  self.line_no = self.line_no + 1
  if not self.pending then
    local name, args = _M.command(line)
    if name then
      local res = self:run_command(name, args)
      if res ~= "quit" then self:remember(line) end
      return res
    end
    if not line:find("%S") then return nil end
    self.pending = { line }
    self.pending_from = self.line_no
  else
    self.pending[#self.pending + 1] = line
  end
  local chunk = concat(self.pending, "\n")
  local fn, how = _M.compile(chunk, self.chunk_name, self.chunk_name and self.pending_from)
  if how == "incomplete" then return "more" end
  self.pending = nil
  self:remember(chunk)
  if not fn then
    self:report(how)
    return nil
  end
  self:execute(fn, how)
  return nil
end

function Repl:remember(entry)
  if not self.rl or not history.wanted(entry, self.last_entry) then return end
  self.last_entry = entry
  self.rl.add_history(entry)
  if self.history_path then
    local ok, err = history.append(self.history_path, entry, self.rl.write_file)
    if not ok and not self.history_warned then
      self.history_warned = true
      self:warn("pgstore: history not saved: " .. tostring(err))
    end
  end
end

-- ---- commands -------------------------------------------------------------

local HELP = [[
commands (`:` or `\` in front):
  :help                  this list
  :quit                  leave (also Ctrl-D)
  :set [depth|items N]   how deep tables print (now %d) and how many
                         entries of each (now %d)
  :set format F          table (rows as columns, the default), lua or json
  :trace                 the traceback of the last error
  \listen CHANNEL        print NOTIFY messages on CHANNEL while the prompt
                         waits; without CHANNEL, list the channels
  \unlisten [CHANNEL]    stop listening to CHANNEL (to all without one)
  \stores                the event stores in this database
  \streams [PREFIX] [N]  es's streams with their event counts and versions
  \events STREAM [N]     a stream's newest N events (20)
  \consumers             es's consumers, their positions and lag
  \parked [PROJECTION]   events projections parked, with their errors
  :table [NAME]          which store es is; NAME switches to it

Lua: an expression prints its values (no `=` needed), a statement runs, an
unfinished chunk continues on the next line (>>). db, es (= db:events())
and pgstore are ready; _ is the last value printed. `local` lasts one
chunk: assign globals to keep values.
keys: Tab completes names, table keys and methods; Up/Down and Ctrl-R
search the history; Ctrl-C cancels the line or interrupts running code.]]

local COMMANDS = { "help", "quit", "set", "trace", "listen", "unlisten",
                   "stores", "streams", "events", "consumers", "parked", "table" }
local ALIASES = { h = "help", ["?"] = "help", q = "quit", exit = "quit" }
_M.COMMANDS = COMMANDS

local handlers = {}
for _, name in ipairs(look.NAMES) do handlers[name] = look[name] end

function handlers.help(self)
  self:say(HELP:format(self.settings.depth, self.settings.items))
end

function handlers.quit() return "quit" end

function handlers.set(self, args)
  local what, n = args:match("^(%a+)%s+(%d+)$")
  local how = args:match("^format%s+(%a+)$")
  if args == "" then
    self:say(format("depth %d\nitems %d\nformat %s", self.settings.depth, self.settings.items, self.settings.format))
  elseif (what == "depth" or what == "items") and tonumber(n) >= 1 then
    self.settings[what] = tonumber(n)
  elseif how and FORMATS[how] then
    self.settings.format = how
  else
    self:warn("usage: :set depth N | :set items N (N ≥ 1) | :set format table|lua|json")
  end
end

function handlers.trace(self)
  -- the message may quote stored text; the traceback's own lines and tabs stay
  self:say(self.last_trace and (self.last_trace:gsub("[^\n\t]+", safe_text)) or "no error yet")
end

function handlers.listen(self, args)
  if args == "" then
    self:say(#self.channels > 0 and "listening on " .. safe_text(concat(self.channels, ", ")) or "not listening")
    return
  end
  self:listen(args)
end

function handlers.unlisten(self, args)
  self:unlisten(args ~= "" and args or nil)
end

function Repl:run_command(name, args)
  local h = handlers[ALIASES[name] or name]
  if not h then
    self:warn(format("unknown command '%s' (:help lists them)", name))
    self.failed = true -- piped input exits 1 for it, as for a failed chunk
    return nil
  end
  local ok, res = pcall(h, self, args)
  if not ok then
    self:report(res)
    return nil
  end
  return res
end

-- ---- notifications --------------------------------------------------------
-- Through db:listen(channel) → l with l:add(ch), l:wait(seconds) →
-- { channel, payload, pid } | nil, err (code "timeout" when none), l:fd()
-- (readable when something is pending; nil while reconnecting) and
-- l:close(); after a reconnect l:wait() yields { channel = "*",
-- reconnected = true }.

local function first_line(err)
  local s = type(err) == "table" and pretty.error(err) or "error: " .. tostring(err)
  return (s:match("^[^\n]*"))
end

function Repl:open_listener(channels)
  local ok, l, err = pcall(self.db.listen, self.db, channels[1])
  if not ok then return nil, l end
  if not l then return nil, err end
  for i = 2, #channels do
    local added, aerr = l:add(channels[i])
    if added == nil and aerr ~= nil then
      pcall(l.close, l)
      return nil, aerr
    end
  end
  return l
end

function Repl:listen(channel)
  for _, c in ipairs(self.channels) do
    if c == channel then return self:say("already listening on " .. safe_text(channel)) end
  end
  if self.listener then
    local added, err = self.listener:add(channel)
    if added == nil and err ~= nil then return self:warn("\\listen: " .. first_line(err)) end
  else
    local l, err = self:open_listener{ channel }
    if not l then return self:warn("\\listen: " .. first_line(err)) end
    self.listener = l
  end
  self.channels[#self.channels + 1] = channel
  self:say("listening on " .. safe_text(channel))
end

function Repl:close_listener()
  if self.listener then pcall(self.listener.close, self.listener) end
  self.listener = nil
end

-- There is no l:remove(): the listener is reopened on the channels left.
function Repl:unlisten(channel)
  if not channel then
    self:close_listener()
    self.channels = {}
    return self:say("not listening")
  end
  local left, found = {}, false
  for _, c in ipairs(self.channels) do
    if c == channel then found = true else left[#left + 1] = c end
  end
  -- the name as typed, which may be anything
  if not found then return self:say("not listening on " .. safe_text(channel)) end
  self:close_listener()
  self.channels = left
  if #left > 0 then
    local l, err = self:open_listener(left)
    if not l then
      self.channels = {}
      return self:warn("\\unlisten: " .. first_line(err) .. " (not listening now)")
    end
    self.listener = l
  end
  self:say("stopped listening on " .. safe_text(channel))
end

function _M.notification_text(n)
  if n.reconnected then return "notify: reconnected (notifications sent meanwhile were missed)" end
  local s = "notify " .. safe_text(n.channel)
  if n.payload and n.payload ~= "" then s = s .. ": " .. safe_text(n.payload) end
  if n.pid then s = s .. format(" (pid %s)", tostring(n.pid)) end
  return s
end

-- Prints what the listener has pending, each line through `out`. After a
-- failure the listener is left alone for a while (its socket may stay
-- readable), and failures are not printed again until it works again.
function Repl:drain(out)
  local l = self.listener
  if not l then return end
  for _ = 1, MAX_DRAIN do
    local n, err = l:wait(0)
    if not n then
      if type(err) == "table" and err.code == "timeout" or err == nil then
        self.listen_failure = nil
      else
        if not self.listen_failure then out("notify: " .. first_line(err)) end
        self.listen_failure = true
        self.listen_retry_at = core.now() + LISTEN_RETRY
      end
      return
    end
    self.listen_failure = nil
    out(_M.notification_text(n))
  end
end

-- What to poll besides stdin, and for how long: the listener's socket, or,
-- while it has none or is resting after a failure, a timeout to try again.
function Repl:listen_poll()
  local l = self.listener
  if not l then return nil, nil end
  local wait = self.listen_retry_at and self.listen_retry_at - core.now()
  if wait and wait > 0 then return nil, wait end
  self.listen_retry_at = nil
  local fd = l:fd()
  if fd then return fd, nil end
  return nil, LISTEN_RETRY
end

-- ---- the loops ------------------------------------------------------------

-- One line from the terminal, printing notifications while it is typed.
-- → line | false (Ctrl-D) | nil, "terminate"|"hangup", signal
function Repl:read_line()
  local rl = self.rl
  self:drain(rl.print_above)
  rl.install(self.pending and CONTINUE or PROMPT)
  while true do
    local fds, lfd, timeout = { 0 }, self:listen_poll()
    if lfd then fds[2] = lfd end
    local ready, why, sig = rl.poll(fds, timeout)
    if not ready then
      if why ~= "interrupt" then
        rl.finish()
        return nil, why, sig
      end
      rl.cancel()
      self.pending = nil
      rl.install(PROMPT)
    else
      if ready[0] then
        local line = rl.read_char()
        if line ~= nil then return line end
      end
      if self.listener and (ready[lfd] or not ready[0] and next(ready) == nil) then
        self:drain(rl.print_above)
      end
    end
  end
end

function Repl:run_terminal()
  local rl = self.rl
  rl.init{
    name = "pgstore",
    complete = function(word, line) return complete.candidates(self.env, word, line, COMMANDS) end,
    cancel = core.interrupt,
  }
  self.columns = rl.columns
  rl.stifle_history(history.size)
  self.history_path = history.path()
  for _, entry in ipairs(history.load(self.history_path, history.size, rl.write_file)) do
    rl.add_history(entry)
    self.last_entry = entry
  end
  if self.banner then self:say(self.banner) end
  while true do
    local line, why, sig = self:read_line()
    if line == false then
      io.stdout:write("\n")
      return 0
    elseif line == nil then
      io.stdout:write("\n")
      return why == "hangup" and 129 or 128 + (sig or 15)
    end
    if self:feed(line) == "quit" then return 0 end
  end
end

function Repl:run_plain(input)
  local function out(s) self:say(s) end
  self.chunk_name = "stdin" -- and errors name the input's own lines
  for line in input:lines() do
    if self:feed(line) == "quit" then break end
    self:drain(out)
  end
  if self.pending then
    self:report("unfinished chunk at the end of the input")
  end
  return self.failed and 1 or 0
end

function Repl:close()
  self:close_listener()
  if self.es then pcall(self.es.close, self.es) end
  if self.db then pcall(self.db.close, self.db) end
end

-- _M.new{ db = …, es = …, rl = pgstore.readline or nil, banner = "…" }
function _M.new(opts)
  local env = setmetatable({ db = opts.db, es = opts.es, pgstore = require "pgstore" }, { __index = _G })
  return setmetatable({
    db = opts.db, es = opts.es, env = env, rl = opts.rl, banner = opts.banner,
    settings = { depth = pretty.defaults.depth, items = pretty.defaults.items, format = "table" },
    channels = {}, listener = nil, pending = nil, failed = false, line_no = 0,
  }, mt)
end

-- Runs the REPL to its end; returns the exit code. The terminal is put
-- back in cooked mode whatever happens.
function Repl:run(input)
  if not self.rl then return self:run_plain(input or io.stdin) end
  local res = pack(xpcall(function() return self:run_terminal() end, debug.traceback))
  self.rl.finish()
  if not res[1] then error(res[2], 0) end
  return res[2]
end

return _M
