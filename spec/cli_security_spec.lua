-- SPDX-License-Identifier: MIT
-- The host's edges toward other local users, the terminal and the
-- database: a password given in --dsn is overwritten in /proc/PID/cmdline
-- (and the host says so), --dsn-file and libpq's PGPASSWORD / passfile
-- keep it out of the arguments; nothing stored reaches the terminal as a
-- control character (tail, status, the pretty printer, the REPL, every
-- host line); a role with only SELECT/INSERT/UPDATE/DELETE on existing
-- tables runs tail, status, project and db:subscribe without any DDL or
-- any right on the position sequence (appending takes USAGE on it); and
-- `pgstore project` warns once when it connects as a superuser.
local pgstore = require "pgstore"
local T = require "testenv"

local SECRET = os.getenv("PGSTORE_TEST_SECRET_PASSWORD")
local USER = os.getenv("PGSTORE_TEST_SECRET_USER")
local PORT = os.getenv("PGSTORE_TEST_PORT")

local function shq(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function base_dsn(user)
  return ("host=127.0.0.1 port=%s dbname=%s user=%s"):format(PORT, T.dbname(), user)
end

-- Where a terminal would act on the text: a C0 control other than the
-- tab and newline that separate fields and lines, DEL, a C1 control, a
-- bidirectional override or a line separator, or bytes that are not UTF-8.
local function acting(s)
  local at = s:find("[%z\1-\8\11-\31\127]") or s:find("\194[\128-\159]") or s:find("\226\128[\168-\174]")
    or s:find("\226\129[\166-\169]")
  if at then return at end
  for pos, run in s:gmatch("()([\128-\255][\128-\191]*)") do
    if not (run:match("^[\194-\223][\128-\191]$") or run:match("^[\224-\239][\128-\191][\128-\191]$")
            or run:match("^[\240-\244][\128-\191][\128-\191][\128-\191]$")) then
      return pos
    end
  end
  return nil
end

local function lines(s)
  local n = 0
  for _ in s:gmatch("[^\n]*\n") do n = n + 1 end
  return n
end

describe("a password for the host", function()
  local admin, dir, tname
  setup(function()
    admin = T.connect()
    dir = T.tmpdir("clisec")
    tname = T.unique("clisec_pw")
    local es = assert(admin:events{ table = tname, notify = false })
    assert(es:append("acct-1", { { type = "Opened", data = {} } }))
    es:close()
    assert(admin:exec(("grant select on all tables in schema public to %s"):format(USER)))
  end)
  teardown(function()
    T.sh("rm -rf " .. dir)
    admin:close()
    T.assert_no_leaks()
  end)

  -- Starts `pgstore <global> tail --follow`, waits until it printed the
  -- event (so it connected with the password), then reads what every
  -- local user can: its /proc/PID/cmdline.
  local function cmdline_of(global)
    local out_f, err_f, pid_f = dir .. "/out", dir .. "/err", dir .. "/pid"
    T.sh(("rm -f %s %s %s"):format(out_f, err_f, pid_f))
    T.write(dir .. "/run.sh", ("echo $$ > %s; exec %s %s tail --all --follow --table %s\n")
      :format(pid_f, T.host(), global, tname))
    T.sh(("sh %s/run.sh >%s 2>%s </dev/null &"):format(dir, out_f, err_f))
    assert(T.eventually(function() return T.read(out_f):find("acct%-1") end, 10), T.read(err_f))
    local pid = assert(tonumber(T.read(pid_f):match("%d+")))
    local cmdline = T.read("/proc/" .. pid .. "/cmdline")
    T.sh("kill -TERM " .. pid)
    assert(T.eventually(function() return T.read("/proc/" .. pid .. "/cmdline") == "" end, 5))
    return cmdline, T.read(err_f)
  end

  it("is overwritten in the process arguments, with a warning, as --dsn VALUE and --dsn=URI", function()
    local uri = ("postgresql://%s:%s@127.0.0.1:%s/%s"):format(USER, SECRET, PORT, T.dbname())
    -- libpq decodes a URI's parameter names too: p%61ssword is a password
    local encoded = ("postgresql://127.0.0.1:%s/%s?user=%s&p%%61ssword=%s"):format(PORT, T.dbname(), USER, SECRET)
    for _, global in ipairs{ "--dsn " .. shq(base_dsn(USER) .. " password=" .. SECRET), "--dsn=" .. shq(uri),
                             "--dsn " .. shq(encoded), "--no-migrate --dsn=" .. shq(encoded) } do
      local cmdline, err = cmdline_of(global)
      assert.truthy(cmdline:find("\0tail\0--all\0", 1, true), "not the pgstore process")
      assert.is_nil(cmdline:find(SECRET, 1, true), "the password shows in /proc/PID/cmdline")
      assert.truthy(cmdline:find("--dsn", 1, true))
      assert.matches("--dsn carries a password", err, 1, true)
      assert.matches("--dsn-file", err, 1, true)
      assert.is_nil(err:find(SECRET, 1, true))
    end
    -- a DSN without one is left as it is, without a warning
    local cmdline, err = cmdline_of("--dsn " .. shq(T.dsn()))
    assert.truthy(cmdline:find(T.dsn(), 1, true))
    assert.is_nil(err:find("password", 1, true))
  end)

  -- Reads /proc/PID/cmdline in a tight loop from the moment the host is
  -- spawned (posix_spawn: no shell in between) until it ends. Each round
  -- reads /proc/PID/maps first: once pgstore.core is mapped, the host has
  -- loaded LuaJIT's libraries and its modules. Returns how many reads
  -- showed the password, and how many of those came after that point.
  local function watch_cmdline(argv)
    local ffi = require "ffi"
    pcall(ffi.cdef, [[
      int posix_spawn(int *pid, const char *path, const void *file_actions, const void *attrp,
                      char *const argv[], char *const envp[]);
      int posix_spawn_file_actions_init(void *actions);
      int posix_spawn_file_actions_addopen(void *actions, int fd, const char *path, int flags, int mode);
      int posix_spawn_file_actions_destroy(void *actions);
      int waitpid(int pid, int *status, int options);
      extern char **environ;]])
    local c_argv, keep = ffi.new("char *[?]", #argv + 1), {}
    for i, a in ipairs(argv) do
      keep[i] = ffi.new("char[?]", #a + 1, a)
      c_argv[i - 1] = keep[i]
    end
    -- its output goes to /dev/null (the struct is 80 bytes in glibc)
    local actions = ffi.new("uint64_t[32]")
    assert(ffi.C.posix_spawn_file_actions_init(actions) == 0)
    for fd = 1, 2 do assert(ffi.C.posix_spawn_file_actions_addopen(actions, fd, "/dev/null", 1, 0) == 0) end
    local pid, status = ffi.new("int[1]"), ffi.new("int[1]")
    local rc = ffi.C.posix_spawn(pid, argv[1], actions, nil, c_argv, ffi.C.environ)
    ffi.C.posix_spawn_file_actions_destroy(actions)
    assert(rc == 0)
    local proc = "/proc/" .. pid[0]
    local shown, shown_loaded, reads, loaded = 0, 0, 0, false
    while ffi.C.waitpid(pid[0], status, 1) == 0 do -- WNOHANG
      loaded = loaded or T.read(proc .. "/maps"):find("pgstore/core.so", 1, true) ~= nil
      local cmdline = T.read(proc .. "/cmdline")
      reads = reads + 1
      if cmdline:find(SECRET, 1, true) then
        shown = shown + 1
        if loaded then shown_loaded = shown_loaded + 1 end
      end
    end
    return shown, shown_loaded, reads, loaded
  end

  it("is hidden before the host loads anything (read in a tight loop from the spawn)", function()
    local argv = { T.host(), "--dsn", base_dsn(USER) .. " password=" .. SECRET, "status", "--table", tname }
    -- The only window left is the dynamic loader's, before main() runs;
    -- hiding it in Lua left the password there until the modules had loaded.
    for _ = 1, 5 do
      local _, shown_loaded, reads, loaded = watch_cmdline(argv)
      assert.is_true(loaded, "pgstore.core never showed in /proc/PID/maps")
      assert.truthy(reads > 10)
      assert.equal(0, shown_loaded, "the password showed after the modules had loaded")
    end
  end)

  it("comes from --dsn-file, PGPASSWORD or a passfile instead", function()
    local host = T.host()
    local file = T.write(dir .. "/dsn", base_dsn(USER) .. " password=" .. SECRET .. "\n")
    T.sh("chmod 600 " .. file)
    local out, rc = T.sh(("%s --dsn-file %s status --table %s"):format(host, file, tname))
    assert.equal(0, rc, out)
    assert.matches("as " .. USER, out, 1, true)
    assert.is_nil(out:find("carries a password", 1, true))
    assert.is_nil(out:find("other users", 1, true))
    T.sh("chmod 640 " .. file)
    out, rc = T.sh(("%s --dsn-file %s status --table %s"):format(host, file, tname))
    assert.equal(0, rc, out)
    assert.matches("can be read by other users (mode 640); chmod 600 it", out, 1, true)
    out, rc = T.sh(("%s --dsn-file %s/none status"):format(host, dir))
    assert.equal(1, rc)
    assert.matches("--dsn-file: ", out, 1, true)
    out, rc = T.sh(("%s --dsn-file"):format(host))
    assert.equal(2, rc)

    -- the role needs its password: without one it cannot log in
    local plain = shq(base_dsn(USER))
    out, rc = T.sh(("PGPASSFILE=%s/none %s --dsn %s status"):format(dir, host, plain))
    assert.equal(1, rc, out)
    local passfile = T.write(dir .. "/pgpass", ("127.0.0.1:%s:*:%s:%s\n"):format(PORT, USER, SECRET))
    T.sh("chmod 600 " .. passfile)
    out, rc = T.sh(("PGPASSFILE=%s %s --dsn %s status --table %s"):format(passfile, host, plain, tname))
    assert.equal(0, rc, out)
    assert.matches("as " .. USER, out, 1, true)
    local secret_file = T.write(dir .. "/secret", SECRET)
    out, rc = T.sh(("PGPASSFILE=%s/none PGPASSWORD=$(cat %s) %s --dsn %s tail --all --table %s")
      :format(dir, secret_file, host, plain, tname))
    assert.equal(0, rc, out)
    assert.matches("acct%-1", out)
  end)
end)

describe("what reaches the terminal", function()
  local admin, tname, pm
  local STREAM = "evil\27[2J\rforged\tline"
  local TYPE = "Ty\27]0;title\7pe"
  local CONSUMER = "consumer\27[31m\r"
  local OWNER = "own\rer\27[K"
  setup(function()
    admin = T.connect()
    tname = T.unique("clisec_tty")
    local es = assert(admin:events{ table = tname, notify = false })
    assert(es:append(STREAM, { { type = TYPE, data = { csi = "\194\155" .. "31m", bidi = "a\226\128\174b" } } }))
    -- named with the four characters an escaped ESC is shown as, and with a real ESC
    assert(es:append("amb\\027[2J", { { type = "Lookalike" } }))
    assert(es:append("amb\27[2J", { { type = "Lookalike" } }))
    local cp = assert(admin:checkpoints{ store = es })
    assert(cp:save(CONSUMER, 1))
    cp:close()
    es:close()
    pm = assert(admin:partitions{ name = "lease\27[1m" .. tname, count = 1, owner = OWNER })
    assert(pm:tick())
  end)
  teardown(function()
    pm:close()
    admin:close()
    T.assert_no_leaks()
  end)

  local function pg(args)
    return T.sh(("%s --dsn %s %s"):format(T.host(), shq(T.dsn()), args))
  end

  it("tail escapes stream names, types and data; one event stays one line", function()
    local out, rc = pg("tail --all --table " .. tname .. " --limit 1")
    assert.equal(0, rc, out)
    assert.is_nil(acting(out), out)
    assert.equal(1, lines(out))
    assert.matches("evil\\027[2J\\013forged\\009line\t1\tTy\\027]0;title\\007pe\t", out, 1, true)
    -- the data column is JSON still: the server's text, with \uXXXX escapes
    assert.matches("\\u009B31m", out, 1, true)
    assert.matches("a\\u202Eb", out, 1, true)
    out = pg(("tail --table %s %s"):format(tname, shq(STREAM)))
    assert.is_nil(acting(out), out)
    assert.equal(1, lines(out))
  end)

  it("tail tells a stream named with a backslash from one with the control it spells", function()
    local out, rc = pg(("tail --all --table %s --types Lookalike"):format(tname))
    assert.equal(0, rc, out)
    assert.is_nil(acting(out), out)
    local a, b = out:match("^%d+\t(%S+)\t.-\n%d+\t(%S+)\t.-\n$")
    assert.equal("amb\\\\027[2J", a)
    assert.equal("amb\\027[2J", b)
    assert.equal("a\\\\b", require("pgstore.printable").escape("a\\b"))
  end)

  it("a sandboxed script's print escapes each value and keeps its tabs", function()
    local dir = T.tmpdir("clisec_print")
    T.write(dir .. "/proj.lua", [[
      return { name = "printer", handlers = {
        ["Ty\27]0;title\7pe"] = function(e) print(e.stream, "\27]0;pwned\7", 42, nil) end } }]])
    local out, rc = pg(("project --once --table %s %s/proj.lua"):format(tname, dir))
    T.sh("rm -rf " .. dir)
    assert.equal(0, rc, out)
    assert.is_nil(acting(out), out)
    assert.matches("evil\\027[2J\\013forged\\009line\t\\027]0;pwned\\007\t42\tnil\n", out, 1, true)
  end)

  it("status escapes consumer names and lease owners", function()
    local out, rc = pg("status --table " .. tname)
    assert.equal(0, rc, out)
    assert.is_nil(acting(out), out)
    assert.matches("consumer\\027[31m\\013", out, 1, true)
    assert.matches("lease\\027[1m" .. tname, out, 1, true)
    assert.matches("own\\013er\\027[K", out, 1, true)
  end)

  it("every host line: usage errors and failures", function()
    local out, rc = pg(shq("bad\27[2Jcommand"))
    assert.equal(2, rc)
    assert.is_nil(acting(out), out)
    assert.matches("bad\\027[2Jcommand", out, 1, true)
    out, rc = pg("tail --all --table " .. tname .. " " .. shq("--x\27]0;t\7"))
    assert.equal(2, rc)
    assert.is_nil(acting(out), out)
    out, rc = pg(("append --table %s s1 E '{\"a\": 1}' --expected %s"):format(tname, shq("1\27[2J")))
    assert.equal(2, rc) -- a usage error, told before connecting
    assert.is_nil(acting(out), out)
  end)

  it("the REPL prints values, errors and events escaped", function()
    local dir = T.tmpdir("clisec_repl")
    T.write(dir .. "/in", table.concat({
      [["a\27[2Jb\r"]],
      ([[(db:events{ table = %q, migrate = false }):read_all{ raw = true }]]):format(tname),
      [[error("boom\27[2J\rforged")]],
      ":trace",
      [[db:query("select 'x' || chr(27) || '[2J' as v")]],
      "\\unlisten ch\27]0;pwned\7",
    }, "\n") .. "\n")
    local out = T.sh(("%s --dsn %s repl <%s/in"):format(T.host(), shq(T.dsn()), dir))
    T.sh("rm -rf " .. dir)
    assert.is_nil(acting(out), out)
    assert.matches([["a\027[2Jb\r"]], out, 1, true)
    assert.matches([[evil\027[2J\rforged\tline]], out, 1, true)
    assert.matches([[boom\027[2J\013forged]], out, 1, true)
    assert.matches([[x\027[2J]], out, 1, true)
    assert.matches([[not listening on ch\027]0;pwned\007]], out, 1, true)
  end)

  it("pretty and printable: C0, DEL, C1, bidi and bytes that are not UTF-8", function()
    local pretty, printable = require "pgstore.pretty", require "pgstore.printable"
    assert.equal('"a\\u{009B}b\\u{202E}c\\xFF"', pretty.format("a\194\155b\226\128\174c\255"))
    for _, s in ipairs{ "\194\155", "\226\128\174", "\192\175", "\237\160\128", "\226\128", "x\128y", "é中😀" } do
      assert.equal(s, loadstring("return " .. pretty.quote(s))())
      assert.is_nil(acting(pretty.quote(s)), pretty.quote(s))
    end
    assert.equal("é中😀 plain", printable.escape("é中😀 plain"))
    assert.equal("\\xC0\\xAF|\\xED\\xA0\\x80|\\xE2\\x80|\\x80", printable.escape("\192\175|\237\160\128|\226\128|\128"))
    assert.equal("a\\027[2J\\013\\009\\010\\127", printable.escape("a\27[2J\r\t\n\127"))
    assert.equal("a\\\\027", printable.escape("a\\027"))
    local err = require("pgstore.errors").new("sql", "stream \27[2Jx\r")
    err.detail = "d\27]0;t\7"
    assert.equal("error(sql): stream \\027[2Jx\\013 (d\\027]0;t\\007)", pretty.error(err))
    local named = setmetatable({ 1 }, { __name = "n\27[2J" })
    assert.equal("n\\027[2J { 1 }", pretty.format(named))
    local shown = setmetatable({}, { __tostring = function() return "t\27[2J" end })
    assert.equal("t\\027[2J", pretty.format(shown))
  end)
end)

describe("least privilege", function()
  local admin, tname, role, dir
  setup(function()
    admin = T.connect()
    tname = T.unique("clisec_lp")
    role = T.unique("pgs_dml")
    dir = T.tmpdir("clisec_lp")
    local out, rc = T.sh(("%s --dsn %s migrate --table %s"):format(T.host(), shq(T.dsn()), tname))
    assert(rc == 0, out)
    local es = assert(admin:events{ table = tname, notify = tname })
    assert(es:append("acct-1", { { type = "Opened", data = { n = 1 } }, { type = "Opened", data = { n = 2 } } }))
    es:close()
    assert(admin:exec(("create table %s_rm (stream text primary key, n int not null)"):format(tname)))
    assert(admin:exec(("create role %s login"):format(role)))
    -- Rows only: no right on any sequence (read_all learns how far it may
    -- read through the store's <table>_seq_last()).
    assert(admin:exec(("grant select, insert, update, delete on all tables in schema public to %s")
      :format(role)))
    -- Any DDL the role runs fails loudly, even an idempotent one.
    assert(admin:exec(([[create function %s_no_ddl() returns event_trigger language plpgsql as $$
      begin
        if current_user = '%s' then raise exception 'DDL by a read/write role: %%', tg_tag; end if;
      end $$]]):format(role, role)))
    assert(admin:exec(("create event trigger %s_no_ddl on ddl_command_start execute function %s_no_ddl()")
      :format(role, role)))
  end)
  teardown(function()
    admin:exec(("drop event trigger if exists %s_no_ddl"):format(role))
    admin:exec(("drop function if exists %s_no_ddl()"):format(role))
    admin:exec(("drop owned by %s"):format(role))
    admin:exec(("drop role if exists %s"):format(role))
    T.sh("rm -rf " .. dir)
    admin:close()
    T.assert_no_leaks()
  end)

  local function as_role(args, global)
    return T.sh(("%s --dsn %s %s %s 2>&1"):format(T.host(), shq(base_dsn(role)), global or "", args))
  end

  it("the role has no DDL rights and no right on the position sequence", function()
    local db = assert(pgstore.connect{ dsn = base_dsn(role), application_name = "pgstore-spec" })
    local ok, err = db:exec("create table if not exists " .. tname .. "_rm (a int)")
    assert.is_nil(ok)
    assert.equal("sql", err.code)
    local rights = assert(db:query(("select has_sequence_privilege('%s_position_seq', 'select') as s,"
      .. " has_sequence_privilege('%s_position_seq', 'usage') as u"):format(tname, tname)))[1]
    assert.same({ s = false, u = false }, rights)
    db:close()
  end)

  it("read_all and the end need no right on the position sequence", function()
    local db = assert(pgstore.connect{ dsn = base_dsn(role), application_name = "pgstore-spec" })
    local es = assert(db:events{ table = tname, notify = false, migrate = false })
    local rows, cursor = es:read_all{ after = 0 }
    assert.is_table(rows, tostring(cursor))
    assert.equal(2, #rows)
    assert.equal(2, cursor)
    assert.equal(2, assert(es:latest_position()))
    es:close()
    db:close()
  end)

  it("tail and status run without --no-migrate and without DDL", function()
    local out, rc = as_role("tail --all --table " .. tname)
    assert.equal(0, rc, out)
    assert.equal(2, lines(out))
    assert.matches("^1\tacct%-1\t1\tOpened\t", out)
    out, rc = as_role("status --table " .. tname)
    assert.equal(0, rc, out)
    assert.matches("as " .. role, out, 1, true)
    assert.matches("head position 2", out, 1, true)
  end)

  it("pgstore project --no-migrate runs projections, with no superuser warning", function()
    T.write(dir .. "/proj.lua", ([[
      return { name = "lp_totals", handlers = {
        Opened = function(e, tx)
          assert(tx:exec("insert into %s_rm (stream, n) values ($1, $2)"
            .. " on conflict (stream) do update set n = %s_rm.n + excluded.n", e.stream, e.data.n))
        end } }]]):format(tname, tname))
    local out, rc = as_role(("project --once --table %s %s/proj.lua"):format(tname, dir), "--no-migrate")
    assert.equal(0, rc, out)
    assert.is_nil(out:find("superuser", 1, true))
    assert.equal(3, admin:query(("select n from %s_rm where stream = 'acct-1'"):format(tname))[1].n)
    local cp = assert(admin:checkpoints{ store = tname })
    assert.equal(2, cp:load("projection:lp_totals"))
    cp:close()
  end)

  it("db:subscribe{ migrate = false } reads and acks", function()
    local db = assert(pgstore.connect{ dsn = base_dsn(role), application_name = "pgstore-spec" })
    local es = assert(db:events{ table = tname, notify = tname, migrate = false })
    local sub = assert(db:subscribe{ name = "lp-sub", events = es, migrate = false })
    local batch = assert(sub:next(1))
    assert.equal(2, #batch)
    assert(sub:ack(batch[#batch].position))
    sub:close()
    es:close()
    db:close()
    local cp = assert(admin:checkpoints{ store = tname })
    assert.equal(2, cp:load("lp-sub"))
    cp:close()
  end)

  it("appends with USAGE on the position sequence, without SELECT on it", function()
    local db = assert(pgstore.connect{ dsn = base_dsn(role), application_name = "pgstore-spec" })
    local es = assert(db:events{ table = tname, notify = false, migrate = false })
    local ok, err = es:append("acct-2", { { type = "Opened", data = { n = 3 } } })
    assert.is_nil(ok)
    assert.matches("permission denied for sequence", err.message, 1, true)
    -- nextval is what needs it
    assert(admin:exec(("grant usage on sequence %s_position_seq to %s"):format(tname, role)))
    local res = assert(es:append("acct-2", { { type = "Opened", data = { n = 3 } } }))
    assert.equal(3, res.last_position)
    local rows = assert(es:read_all{ after = 2 })
    assert.equal(1, #rows)
    assert.equal("acct-2", rows[1].stream)
    es:close()
    db:close()
    assert(admin:exec(("revoke usage on sequence %s_position_seq from %s"):format(tname, role)))
  end)

  it("pgstore project warns once on stderr when it connects as a superuser", function()
    local out, rc = T.sh(("(%s --dsn %s project --once --table %s %s/proj.lua 2>&1 >/dev/null)")
      :format(T.host(), shq(T.dsn()), tname, dir))
    assert.equal(0, rc, out)
    local _, n = out:gsub("a superuser", "")
    assert.equal(1, n, out)
  end)
end)

describe("JSON on the terminal, and escaping once", function()
  local admin, tname, dir
  local cjson = require "cjson"
  local printable = require "pgstore.printable"
  local INVISIBLE = { "\194\173", "\226\128\139", "\226\128\140", "\226\128\141", "\226\128\142", "\226\128\143",
                      "\226\129\160", "\226\129\161", "\226\129\164", "\239\187\191" }
  setup(function()
    admin = T.connect()
    dir = T.tmpdir("clisec_json")
    tname = T.unique("clisec_json")
    local es = assert(admin:events{ table = tname, notify = false })
    es:close()
  end)
  teardown(function()
    T.sh("rm -rf " .. dir)
    admin:close()
    T.assert_no_leaks()
  end)

  local function pg(args)
    return T.sh(("%s --dsn %s %s"):format(T.host(), shq(T.dsn()), args))
  end

  it("append prints JSON that decodes to the stream it names", function()
    for _, name in ipairs{ "back\\slash", "line\226\128\168sep", "bidi\226\128\174x", "zw\226\128\139",
                           "q\"uote/\127del" } do
      local out, rc = pg(("append --table %s %s T '{}'"):format(tname, shq(name)))
      assert.equal(0, rc, out)
      assert.is_nil(acting(out), out)
      assert.equal(1, lines(out))
      assert.is_nil(out:find("\\u{", 1, true), out)
      assert.equal(name, cjson.decode(out).stream)
    end
  end)

  it("tail's data column is JSON, one event one line", function()
    local es = assert(admin:events{ table = tname, notify = false })
    local data = { s = "a\\b\"c\226\128\168d\194\155e\226\128\139f\127", n = "x\ny" }
    assert(es:append("json-1", { { type = "J", data = data } }))
    es:close()
    local out, rc = pg(("tail --table %s json-1"):format(tname))
    assert.equal(0, rc, out)
    assert.is_nil(acting(out), out)
    assert.equal(1, lines(out))
    local column = out:match("^%d+\tjson%-1\t1\tJ\t(.-)\n$")
    assert.same(data, cjson.decode(column))
  end)

  it("printable.json keeps JSON and its escapes; bytes that are not UTF-8 become U+FFFD", function()
    for _, s in ipairs{ "plain", "é中😀", "a\\b", "\27[2J\r\n\t", "\194\155\226\128\174\226\128\168", "\127",
                        table.concat(INVISIBLE, "|") } do
      local text = printable.json(cjson.encode{ s })
      assert.is_nil(acting(text), text)
      assert.is_nil(text:find("[\n\r\t]"), text)
      assert.same({ s }, cjson.decode(text))
    end
    assert.equal('"\\u200B\\u00AD\\uFEFF"', printable.json('"\226\128\139\194\173\239\187\191"'))
    assert.equal('"a\\uFFFDb\\uFFFD\\uFFFD"', printable.json('"a\255b\226\128"'))
  end)

  it("zero-width and invisible characters are escaped: s1 and s1 with U+200B look different", function()
    for _, c in ipairs(INVISIBLE) do
      local shown = printable.escape("s1" .. c)
      assert.matches("^s1\\u{%x%x%x%x}$", shown)
      assert.equal("s1" .. c, loadstring("return \"" .. shown .. "\"")())
    end
    local es = assert(admin:events{ table = tname, notify = false })
    assert(es:append("s1", { { type = "Z" } }))
    assert(es:append("s1\226\128\139", { { type = "Z" } }))
    es:close()
    local out, rc = pg(("tail --all --types Z --table %s"):format(tname))
    assert.equal(0, rc, out)
    local a, b = out:match("^%d+\t(%S+)\t.-\n%d+\t(%S+)\t.-\n$")
    assert.equal("s1", a)
    assert.equal("s1\\u{200B}", b)
  end)

  it("policy apply escapes a stream name once, as tail does", function()
    local name = "evil\226\128\174x\27[2J\\y"
    local es = assert(admin:events{ table = tname, notify = false })
    assert(es:append(name, { { type = "E" }, { type = "E" } }))
    es:close()
    T.write(dir .. "/p.lua", [[return { name = "trim", streams = "evil*", max_count = 1 }]])
    local out, rc = pg(("policy apply %s/p.lua --dry-run --table %s"):format(dir, tname))
    assert.equal(0, rc, out)
    assert.is_nil(acting(out), out)
    local tailed = pg(("tail --table %s %s"):format(tname, shq(name))):match("^%d+\t(%S+)\t")
    assert.equal("evil\\u{202E}x\\027[2J\\\\y", tailed)
    assert.matches("\n  " .. tailed .. ": remove 1 event", out, 1, true)
  end)
end)
