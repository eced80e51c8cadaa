-- SPDX-License-Identifier: MIT
-- The REPL on a terminal (tmux) when the user interrupts or pastes:
-- Ctrl-C cancels a running statement on the server (a cancel request, as
-- psql sends) or stops a pure-Lua loop, and the session goes on; a second
-- Ctrl-C never leaves the backend running; a pasted block arrives whole,
-- bracketed or not.
local T = require "testenv"
local tty = require "tty"
local core = require "pgstore.core"

describe("pgstore repl interrupted", function()
  local dir, s

  local function start()
    s = tty.start(("%s --dsn %s repl"):format(T.host(), tty.quote(T.dsn())),
      { env = { PGSTORE_HISTORY = "" } })
    s:wait_for("pgstore> ", 15)
    return s
  end

  local function line(text) s:send(text):keys("Enter") end

  -- The REPL's backends still running the statement marked `marker`.
  local function running(marker)
    local rows = assert(T.admin():query([[select pid from pg_stat_activity
      where state = 'active' and strpos(query, $1) > 0 and pid <> pg_backend_pid()]], marker))
    return #rows
  end

  local function wait_running(marker)
    assert.truthy(T.eventually(function() return running(marker) == 1 end, 10))
  end

  setup(function() dir = T.tmpdir("repl_int") end)
  after_each(function()
    if s then s:close() end
    s = nil
  end)
  teardown(function()
    tty.stop()
    T.sh("rm -rf " .. dir)
    T.assert_no_leaks("pgstore")
  end)

  it("cancels a running statement on the server and keeps the session", function()
    start()
    local marker = T.unique("sleeper")
    line(("db:query(\"select pg_sleep(20), '%s'\")"):format(marker))
    wait_running(marker)
    local t0 = core.now()
    s:keys("C-c")
    s:wait_for("interrupted (the running statement was cancelled)", 3)
    assert.truthy(core.now() - t0 < 3)
    assert.equal(0, running(marker))
    line("6 * 7")
    s:wait_for("\n42\n")
    assert.is_nil(s:status())
  end)

  it("stops a pure-Lua loop and keeps the session", function()
    start()
    line("print('spinning') while true do end")
    s:wait_for("\nspinning")
    core.sleep(0.3)
    s:keys("C-c")
    s:wait_for("interrupted", 3)
    line("x = 0 for i = 1, 1e15 do x = i end")
    core.sleep(0.3)
    s:keys("C-c")
    s:wait_for("interrupted", 3, 2)
    line("6 * 7")
    s:wait_for("\n42\n")
    assert.is_nil(s:status())
  end)

  it("never leaves the backend running after a second Ctrl-C", function()
    start()
    local marker = T.unique("twice")
    line(("db:query(\"select pg_sleep(20), '%s'\")"):format(marker))
    wait_running(marker)
    s:keys("C-c")
    s:keys("C-c")
    assert.truthy(T.eventually(function() return running(marker) == 0 end, 3))
  end)

  for _, bracketed in ipairs{ true, false } do
    it(("keeps every line of a %s paste"):format(bracketed and "bracketed" or "plain"), function()
      start()
      s:paste('for i = 1, 2 do\n  print("line" .. i)\nend\n', bracketed)
      local screen = s:wait_for("line2", 5)
      assert.matches("\nline1\nline2", screen)
      line("6 * 7")
      s:wait_for("\n42\n")
    end)
  end
end)
