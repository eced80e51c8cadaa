-- SPDX-License-Identifier: MIT
-- The REPL: how it cuts input into chunks (table-driven), then the real
-- `pgstore` binary on a pseudo-terminal (tmux) against the test cluster —
-- multi-line input, pretty printing, completion, history across restarts,
-- a notification printed while idle without disturbing the line being
-- typed, commands, errors, Ctrl-C and Ctrl-D — and reading from a pipe.
local T = require "testenv"
local tty = require "tty"
local Repl = require "pgstore.repl"

describe("repl chunks", function()
  -- { input, "expression" | "statement" | "incomplete" | "error" }
  local CASES = {
    { "1 + 1", "expression" },
    { "f()", "expression" },
    { "a, b", "expression" },
    { "=x", "expression" },
    { "x = 1", "statement" },
    { "local t = {} return t", "statement" },
    { "for i = 1, 3 do end", "statement" },
    { "function f(x)", "incomplete" },
    { "if x then", "incomplete" },
    { "t = {", "incomplete" },
    { "return 1 +", "incomplete" },
    { "f(", "incomplete" },
    { "x = [[long", "incomplete" },
    { "{", "incomplete" },
    { "1 +", "incomplete" },
    { "{ a = 1,", "incomplete" },
    { 'f "a string', "error" },
    { "1 + + 2", "error" },
    { "--[[ a comment", "incomplete" },
    { 'x = "a string\\', "incomplete" },
    { 'x = "a string', "error" },
    { "local = 3", "error" },
    { "end", "error" },
    { "function f(x)\n  return x * 2\nend", "statement" },
  }
  for _, c in ipairs(CASES) do
    it(("%q is %s"):format(c[1], c[2]), function()
      local fn, how = Repl.compile(c[1])
      local got = fn and (how and "expression" or "statement") or how == "incomplete" and "incomplete" or "error"
      assert.equal(c[2], got, tostring(how))
    end)
  end

  it("keeps the position of an error raised by the expression itself", function()
    local fn = Repl.compile('error("boom")')
    local ok, err = pcall(fn, function(...) return ... end)
    assert.is_false(ok)
    assert.equal("repl:1: boom", err)
  end)

  it("recognises commands only as : or \\ and a name", function()
    assert.same({ "help", "" }, { Repl.command(":help") })
    assert.same({ "listen", "orders" }, { Repl.command("  \\listen  orders ") })
    assert.is_nil(Repl.command("::label::"))
    assert.is_nil(Repl.command("x = 1"))
  end)

  it("describes notifications on one line", function()
    assert.equal("notify ch: hello (pid 42)", Repl.notification_text{ channel = "ch", payload = "hello", pid = 42 })
    assert.equal("notify ch (pid 42)", Repl.notification_text{ channel = "ch", payload = "", pid = 42 })
    assert.equal("notify ch: a\\027[2Jb", Repl.notification_text{ channel = "ch", payload = "a\27[2Jb" })
    assert.matches("reconnected", Repl.notification_text{ channel = "*", reconnected = true })
  end)
end)

describe("pgstore repl on a terminal", function()
  local dir, s

  -- The REPL with a private history file.
  local function start(extra_env, cmd)
    local env = { PGSTORE_HISTORY = dir .. "/history" }
    for k, v in pairs(extra_env or {}) do env[k] = v end
    s = tty.start(cmd or ("%s --dsn %s repl"):format(T.host(), tty.quote(T.dsn())), { env = env })
    s:wait_for("pgstore> ", 15) -- connecting and migrating `es` on a busy machine
    return s
  end

  -- A name no other run of this spec uses at the same time (channels are
  -- cluster-wide): T.unique plus the random part of this run's directory.
  local function unique(prefix)
    return T.unique(prefix) .. "_" .. dir:match("[%w]+$"):lower()
  end

  -- Types a line and presses Enter.
  local function line(text)
    s:send(text):keys("Enter")
  end

  setup(function()
    dir = T.tmpdir("repl")
  end)
  after_each(function()
    if s then s:close() end
    s = nil
  end)
  teardown(function()
    tty.stop()
    T.sh("rm -rf " .. dir)
    T.assert_no_leaks("pgstore") -- every REPL, however it ended, closed its connections
  end)

  it("says what is ready, evaluates expressions without = and continues unfinished chunks", function()
    start()
    local screen = s:wait_for("(:help)")
    assert.matches(T.dbname() .. " as ", screen)
    line("1 + 1")
    s:wait_for("\n2\n")
    line("function twice(x)")
    s:wait_for(">> ")
    line("  return x * 2")
    line("end")
    line("twice(21)")
    screen = s:wait_for("\n42\n")
    assert.matches(">>   return x %* 2\n>> end\npgstore> twice%(21%)\n42\n", screen)
  end)

  it("pretty-prints a nested table and cuts a long array with a count", function()
    start()
    line('{ a = { b = { c = { d = 1 } } }, list = { 1, 2 }, name = "x" }')
    s:wait_for('{ a = { b = { c = {…} } }, list = { 1, 2 }, name = "x" }')
    line("local t = {} for i = 1, 1000 do t[i] = i end return t")
    local screen = s:wait_for("… 980 more")
    assert.matches("{\n  1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,\n  … 980 more\n}", screen)
    line("pgstore.null, nil, 'q\"uote'")
    local screen2 = s:wait_for('"q\\"uote"')
    assert.matches('\nnull%s+nil%s+"q\\"uote"', screen2) -- the tabs are spaces on screen
  end)

  it("completes a table key, and methods through metatables", function()
    start()
    s:send("pgstore.con"):keys("Tab")
    s:wait_for("pgstore> pgstore.connect(")
    s:keys("C-u")
    s:send("es:rea"):keys("Tab")
    s:wait_for("pgstore> es:read")
    s:keys("Tab") -- a second Tab lists the candidates
    local screen = s:wait_for("es:read_all")
    assert.matches("es:read%s+es:read_all", screen)
    s:keys("C-u")
    s:send("db:ev"):keys("Tab")
    s:wait_for("pgstore> db:events(")
    s:keys("C-u")
    s:send("\\unl"):keys("Tab")
    s:wait_for("pgstore> \\unlisten")
  end)

  it("keeps history across restarts, in a file only its owner reads", function()
    local marker = unique("hist")
    start()
    line(("%q"):format(marker))
    s:wait_for('\n"' .. marker .. '"\n')
    line(":quit")
    assert.equal(0, s:wait_exit())
    s:close()
    local mode = T.sh("stat -c %a " .. dir .. "/history"):gsub("%s+$", "")
    assert.equal("600", mode)
    start()
    s:keys("Up")
    s:wait_for('pgstore> "' .. marker .. '"')
  end)

  it("prints a notification while idle, leaving the line being typed as it was", function()
    local channel = unique("repl_chan")
    start()
    line("\\listen " .. channel)
    s:wait_for("listening on " .. channel)
    s:send("40 +")
    s:wait_for("pgstore> 40 +")
    assert(T.admin():query("select pg_notify($1, $2)", channel, "hello there"))
    local screen = s:wait_for(")\npgstore> 40 +")
    assert.matches("notify " .. channel .. ": hello there %(pid %d+%)\npgstore> 40 %+$", screen)
    s:send(" 2"):keys("Enter")
    s:wait_for("\n42\n")
    -- After \unlisten nothing more is printed.
    line("\\unlisten " .. channel)
    s:wait_for("stopped listening on " .. channel)
    assert(T.admin():query("select pg_notify($1, $2)", channel, "unheard"))
    line('"after"')
    screen = s:wait_for('"after"\n"after"')
    assert.is_nil(screen:find("unheard", 1, true))
  end)

  it("says once that the listener's connection broke, and keeps the prompt", function()
    local channel = unique("repl_lost")
    start()
    line("\\listen " .. channel)
    s:wait_for("listening on " .. channel)
    local rows = assert(T.admin():query([[select pg_terminate_backend(pid) as gone from pg_stat_activity
      where datname = current_database() and query ilike '%listen %' and strpos(query, $1) > 0
        and pid <> pg_backend_pid()]], channel))
    assert.truthy(#rows >= 1)
    s:wait_for("notify: ") -- "error(connection): …", or "reconnected" from a listener that reconnects
    line("6 * 7")
    local screen = s:wait_for("\n42\n")
    local _, count = screen:gsub("notify: ", "")
    assert.equal(1, count)
  end)

  it("lists the commands with :help and exits 0 on :quit", function()
    start()
    line(":help")
    local screen = s:wait_for("Ctrl-C cancels")
    for _, cmd in ipairs{ ":help", ":quit", ":set", ":trace", "\\listen CHANNEL", "\\unlisten" } do
      assert.truthy(screen:find(cmd, 1, true), cmd)
    end
    line(":nonsense")
    s:wait_for("unknown command 'nonsense'")
    line(":quit")
    assert.equal(0, s:wait_exit())
  end)

  it("prints an error on one line and keeps going", function()
    start()
    line('error("boom")')
    local screen = s:wait_for("error: repl:1: boom")
    line('db:query("selec 1")')
    screen = s:wait_for('error(sql): syntax error at or near "selec"')
    assert.matches('\nnil%s+error%(sql%)', screen) -- nil, err: the tab is spaces on screen
    line("local = 1")
    screen = s:wait_for("error: repl:1: '<name>' expected near '='")
    line("1 + 1")
    screen = s:wait_for("\n2\n")
    assert.matches('pgstore> error%("boom"%)\nerror: repl:1: boom\npgstore> ', screen)
    line(":trace")
    s:wait_for("stack traceback:")
  end)

  it("cancels the line with Ctrl-C and interrupts running code", function()
    start()
    s:send("half a line")
    s:wait_for("pgstore> half a line") -- Ctrl-C also discards input not yet read
    s:keys("C-c")
    s:wait_for("half a line^C\npgstore> ")
    line("print('looping') while true do local t = os.time() end")
    s:wait_for("\nlooping")
    s:keys("C-c")
    s:wait_for("interrupted")
    line("3 * 3")
    s:wait_for("\n9\n")
  end)

  it("ends on a second Ctrl-C when code cannot be interrupted", function()
    start()
    -- A loop compiled on purpose never reaches the interpreter, where the
    -- hook runs (typed code otherwise runs with the JIT off).
    line("local function spin() for i = 1, 1e15 do end end jit.on(spin, true) print('spinning') spin()")
    s:wait_for("\nspinning")
    s:keys("C-c")
    -- Two signals sent together can merge into one: let the first land.
    require("pgstore.core").sleep(0.3)
    s:keys("C-c")
    assert.equal(130, s:wait_exit())
    s:wait_for("interrupted twice, quitting")
  end)

  it("exits 0 on Ctrl-D", function()
    start()
    s:keys("C-d")
    assert.equal(0, s:wait_exit())
  end)

  it("opens with no command on a terminal; without one it prints help and exits 2", function()
    start(nil, ("%s --dsn %s"):format(T.host(), tty.quote(T.dsn())))
    line("pgstore._VERSION")
    s:wait_for('"' .. require("pgstore")._VERSION .. '"')
    local out, rc = T.sh(T.host() .. " --dsn " .. tty.quote(T.dsn()) .. " </dev/null")
    assert.equal(2, rc)
    assert.matches("usage: pgstore", out)
    assert.matches("repl", out)
  end)
end)

describe("pgstore repl from a pipe", function()
  local function run(input)
    local f = os.tmpname()
    local h = assert(io.open(f, "w"))
    h:write(input)
    h:close()
    local out, rc = T.sh(("%s --dsn %s repl <%s"):format(T.host(), tty.quote(T.dsn()), f))
    os.remove(f)
    return out, rc
  end

  it("runs the lines without prompts and exits 0", function()
    local out, rc = run("x = 20\nfunction add(a)\n  return x + a\nend\nadd(22)\nes:latest_position() >= 0\n")
    assert.equal(0, rc, out)
    assert.equal("42\ntrue\n", out)
  end)

  it("exits 1 for an unknown meta command, going on after it", function()
    local out, rc = run(":bogus\n'after'\n")
    assert.equal(1, rc, out)
    assert.matches("unknown command 'bogus'", out, 1, true)
    assert.matches('"after"', out)
  end)

  it("exits 1 when a chunk returned nil, err at the top level", function()
    local out, rc = run("db:query('selec 1')\n'after'\n")
    assert.equal(1, rc, out)
    assert.matches("error%(sql%)", out)
    assert.matches('"after"', out)
    out, rc = run("nil, 'not an error'\n")
    assert.equal(1, rc, out)
    out, rc = run("nil\nfalse\n")
    assert.equal(0, rc, out)
  end)

  it("continues unfinished expressions and names the input's line in errors", function()
    local out, rc = run("t = {\n  1,\n  2 }\n#t\n1 +\n41\n\nfunction f()\n  error('deep')\nend\nf()\n")
    assert.equal(1, rc, out)
    assert.matches("^2\n42\n", out)
    assert.matches("stdin:9: deep", out)
  end)

  it("prints rows as a table, values cut, and as lua or json on :set format", function()
    local out, rc = run(table.concat({
      [[db:query("select 1 as n, 'x' as name union all select 22, repeat('y', 100)")]],
      ":set format json", [[db:query("select 1 as n")]],
      ":set format lua", [[db:query("select 1 as n")]],
      ":set format table", "{ 1, 2 }", [[db:query("select null::int as a, 2 as b")]],
      ":set format yaml", "",
    }, "\n"))
    assert.equal(0, rc, out)
    assert.matches("usage: :set depth N", out)
    assert.equal(table.concat({
      " n  | " .. (" "):rep(18) .. "name",
      "----+" .. ("-"):rep(42),
      "  1 | x",
      " 22 | " .. ("y"):rep(39) .. "…",
      "(2 rows)",
      '[{"n":1}]',
      "{ { n = 1 } }",
      "{ 1, 2 }",
      "  a   | b",
      "------+---",
      " null | 2",
      "(1 row)", "" }, "\n"), (out:gsub("usage: [^\n]*\n", "")))
  end)

  it("exits 1 when a chunk failed, after running the rest", function()
    local out, rc = run("error('first')\n'second'\n")
    assert.equal(1, rc)
    assert.matches("error: stdin:1: first", out)
    assert.matches('"second"', out)
  end)
end)
