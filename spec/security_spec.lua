-- SPDX-License-Identifier: MIT
-- Security: the DSN's password never shows (errors, listener stats, host
-- output, the REPL, `pgstore status`, tracebacks); TLS with a self-signed
-- CA (sslmode=verify-full accepts the right CA and host name, refuses a
-- wrong one of either); least privilege (a role without DDL rights works
-- on tables made beforehand with schema init off, and a role without
-- rights gets `sql` 42501 with nothing half-written); and the script
-- sandbox, both ways (--unsafe-scripts). tools/test.sh also fails the run
-- when the test password appears anywhere in the suite's output.
local pgstore = require "pgstore"
local T = require "testenv"

local SECRET = os.getenv("PGSTORE_TEST_SECRET_PASSWORD")
local USER = os.getenv("PGSTORE_TEST_SECRET_USER")
local PORT = os.getenv("PGSTORE_TEST_PORT")

local function secret_dsn(extra)
  return ("host=127.0.0.1 port=%s dbname=%s user=%s password=%s %s")
    :format(PORT, T.dbname(), USER, SECRET, extra or "")
end

local function shq(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Asserts that none of the texts holds the password; returns how many were checked.
local function clean(texts)
  local n = 0
  for label, text in pairs(texts) do
    n = n + 1
    assert.is_nil(tostring(text):find(SECRET, 1, true), label .. " shows the password")
  end
  return n
end

describe("the password", function()
  it("never appears in an error", function()
    local texts = {}
    local function try(label, dsn, fn)
      local db, err = pgstore.connect{ dsn = dsn, connect_timeout = 2, application_name = "pgstore-spec" }
      if not db then
        texts[label .. " (connect)"] = err
        return
      end
      local ok, res, e = pcall(fn or function(d) return d:query("select 1") end, db)
      texts[label] = ok and tostring(e) or tostring(res)
      db:close()
    end
    try("a database that does not exist", secret_dsn():gsub("dbname=[%w_]+", "dbname=nope"))
    try("a port nobody listens on", secret_dsn():gsub("port=%d+", "port=1"))
    try("a wrong user", secret_dsn():gsub("user=%S+", "user=nobody_here"))
    try("an unknown option", secret_dsn("bogus=1"))
    try("a stray word", secret_dsn("bogus"))
    try("an unterminated quote", secret_dsn("application_name='x"))
    try("a malformed URI", ("postgresql://%s:%s%%ZZ@127.0.0.1:%s/%s"):format(USER, SECRET, PORT, T.dbname()))
    try("an unclosed IPv6 URI", ("postgresql://%s:%s@[::1/%s"):format(USER, SECRET, T.dbname()))
    try("a URI with a bad parameter", ("postgresql://%s:%s@127.0.0.1:%s/%s?bogus=1"):format(USER, SECRET, PORT, T.dbname()))
    try("a SQL error", secret_dsn(), function(db) return db:query("select * from nowhere_at_all") end)
    try("a privilege error", secret_dsn(), function(db) return db:exec("create table pgs_not_allowed (a int)") end)
    try("a listener that cannot connect", secret_dsn():gsub("port=%d+", "port=1"), function(db)
      return db:listen("x")
    end)
    try("a listener's stats", secret_dsn(), function(db)
      local l = assert(db:listen("pgs_secret_ch"))
      local pid = l:stats().pid
      T.admin():query("select pg_terminate_backend($1)", pid)
      require("pgstore.core").sleep(0.3)
      l:wait(0.5)
      local st = l:stats()
      l:close()
      return nil, st.last_error
    end)
    assert.truthy(clean(texts) >= 12)
  end)

  it("never appears in the host's output: status, run, tail, append, errors, tracebacks, the REPL", function()
    local dir = T.tmpdir("secret")
    local f = assert(io.open(dir .. "/fail.lua", "w"))
    f:write([[print(db, db.opts, db.pool); print(require("pgstore.host").dsn); error("script failed on purpose")]])
    f:close()
    f = assert(io.open(dir .. "/proj.lua", "w"))
    f:write([[return { name = "secret_proj", handlers = { E = function() error("handler failed") end } }]])
    f:close()
    local good, bad = shq(secret_dsn()), shq(secret_dsn():gsub("dbname=[%w_]+", "dbname=nope"))
    local host = T.host()
    local outputs = {}
    for label, cmd in pairs{
      ["status"] = ("%s --dsn %s status"):format(host, good),
      ["status (no connection)"] = ("%s --dsn %s status"):format(host, bad),
      ["status from PGSTORE_DSN"] = ("PGSTORE_DSN=%s %s status"):format(bad, host),
      ["run, failing"] = ("PGSTORE_TRACEBACK=1 %s --dsn %s run %s/fail.lua"):format(host, good, dir),
      ["run (no connection)"] = ("%s --dsn %s run %s/fail.lua"):format(host, bad, dir),
      ["tail of a missing table"] = ("%s --dsn %s tail --all --table pgs_no_such"):format(host, good),
      ["append, refused"] = ("%s --dsn %s append s E '{'"):format(host, good),
      ["migrate, refused"] = ("%s --dsn %s migrate"):format(host, good),
      ["project, failing"] = ("%s --dsn %s project --once %s/proj.lua"):format(host, good, dir),
      ["the REPL"] = ("printf '%%s\\n' db '=db' 'db.opts' 'require(\"pgstore.host\")' 'error(\"boom\")' " ..
        "'db:query(\"select nope\")' | %s --dsn %s repl"):format(host, good),
      ["the REPL (no connection)"] = ("printf 'db\\n' | %s --dsn %s repl"):format(host, bad),
    } do
      outputs[label] = T.sh(cmd)
    end
    T.sh("rm -rf " .. dir)
    assert.equal(11, clean(outputs))
    -- and the commands did run (the secret role can log in)
    assert.matches("as " .. USER, outputs["status"])
    assert.matches("script failed on purpose", outputs["run, failing"])
  end)
end)

-- Passwords as libpq sees them: percent-encoded keywords, quotes, blanks,
-- a message cut in the middle of one, and the ones libpq finds itself
-- (passfile, service file). The role logs in without a password (trust),
-- so any password can be given; the server echoes it back in an error.
describe("the password, however it is given", function()
  local core = require "pgstore.core"
  local dir
  setup(function() dir = T.tmpdir("secret_forms") end)
  teardown(function()
    T.sh("rm -rf " .. dir)
    T.assert_no_leaks()
  end)

  -- The error of a statement that quotes `text` back, on a db opened with dsn.
  local function echoed(dsn, text)
    local db = assert(pgstore.connect{ dsn = dsn, application_name = "pgstore-spec" })
    local rows, err = db:query("select $1::int", text)
    db:close()
    assert.is_nil(rows)
    return err
  end

  local function with_password(pw)
    return T.dsn() .. " password='" .. pw:gsub("[\\']", "\\%0") .. "'"
  end

  it("is masked in a URI's percent-encoded keyword, and libpq's quoted fragments never show", function()
    local base = ("postgresql://127.0.0.1:%s/%s"):format(PORT, T.dbname())
    for label, dsn in pairs{
      ["p%61ssword, bad escape"] = base .. "?user=pgs_secret&p%61ssword=TopSecret%zz",
      ["a quote in user info"] = 'postgresql://u:ab"TopSecret%zz@127.0.0.1/x',
      ["a quote, then more quotes"] = 'postgresql://u:"TopSecret"x"%zz@127.0.0.1/x',
      ["unterminated value"] = "host=127.0.0.1 password='TopSecret",
      ["bad escape in the password"] = "postgresql://u:TopSecret%g1@127.0.0.1/x",
    } do
      local db, err = pgstore.connect{ dsn = dsn, application_name = "pgstore-spec" }
      assert.is_nil(db, label)
      assert.equal("invalid", err.code, label)
      assert.is_nil(tostring(err):find("Secret", 1, true), label .. ": " .. tostring(err))
      assert.matches("invalid connection string", tostring(err), 1, true)
    end
    -- what libpq decodes is what is used: the percent-encoded keyword logs in
    local db = assert(pgstore.connect{ application_name = "pgstore-spec",
      dsn = ("%s?user=%s&p%%61ssword=%s"):format(base, USER, SECRET) })
    assert.equal(USER, db:query("select current_user as u")[1].u)
    db:close()
    -- and a string without a password still says where libpq stopped
    local _, err = pgstore.connect{ dsn = "host=127.0.0.1 bogus_keyword=1" }
    assert.matches('"bogus_keyword"', tostring(err), 1, true)
  end)

  it("is found the way libpq parses the DSN (core.dsn_has_password)", function()
    local yes = { "host=x password=p", "postgresql://u:p@h/db", "postgresql://h/db?user=u&p%61ssword=p",
      "postgresql://h/db?password=p", "host=x password = 'a b'",
      -- not parsable: judged from the text
      "postgresql://h/db?p%61ssword=x%zz", 'postgresql://u:a"b%zz@h/x', "host=x pass" }
    for _, dsn in ipairs(yes) do assert.is_true(core.dsn_has_password(dsn), dsn) end
    local no = { T.dsn(), "postgresql://u@h/db", "postgresql://h/db?user=u", "host=x password=", "" }
    for _, dsn in ipairs(no) do assert.is_false(core.dsn_has_password(dsn), dsn) end
  end)

  it("with blanks in it (runs of spaces, a tab, a trailing newline) is masked as written", function()
    for _, pw in ipairs{ "Top  Secret", "Tab\tSecret", "Trail Secret\n", "  Lead Secret" } do
      local err = echoed(with_password(pw), pw)
      assert.equal("sql", err.code)
      assert.is_nil(tostring(err):find("Secret", 1, true), ("%q: %s"):format(pw, tostring(err)))
      assert.matches("*", err.message, 1, true)
    end
  end)

  it("straddling the cut of a long message does not show in part", function()
    local pw = "TopSecretX"
    local dsn = with_password(pw)
    local prefix = 'invalid input syntax for type integer: "'
    for k = 1, #pw - 1 do
      -- the message is cut at 1,023 bytes, after k bytes of the password
      local text = ("a"):rep(1023 - #prefix - k) .. pw
      local err = echoed(dsn, text)
      assert.is_nil(err.message:find(pw:sub(1, 3), 1, true), ("cut after %d: %s"):format(k, err.message:sub(-20)))
      assert.is_nil(err.message:find("a" .. pw:sub(1, 1), 1, true), k)
      assert.truthy(#err.message > 1000, #err.message)
    end
  end)

  it("from a passfile or a service file is masked too", function()
    local pw = "FileSecret-5531"
    local passfile = T.write(dir .. "/pgpass", ("127.0.0.1:%s:*:*:%s\n"):format(PORT, pw))
    T.sh("chmod 600 " .. passfile)
    local err = echoed(T.dsn() .. " passfile=" .. passfile, "x " .. pw .. " y")
    assert.equal("sql", err.code)
    assert.is_nil(tostring(err):find(pw, 1, true), tostring(err))
    assert.matches("x *", err.message, 1, true)
    -- a service file, through the host; and PGPASSFILE
    local spw = "ServiceSecret-8812"
    local services = T.write(dir .. "/services", ("[pgs_spec]\nhost=127.0.0.1\nport=%s\ndbname=%s\nuser=postgres\npassword=%s\n")
      :format(PORT, T.dbname(), spw))
    local script = T.write(dir .. "/echo.lua", [[
      local pw = os.getenv("ECHO_PW")
      local rows, err = db:query("select $1::int", "x " .. pw .. " y")
      print(rows, err)]])
    for label, env in pairs{
      service = ("PGSERVICEFILE=%s ECHO_PW=%s"):format(services, spw),
      passfile = ("PGPASSFILE=%s ECHO_PW=%s"):format(passfile, pw),
    } do
      local dsn = label == "service" and "service=pgs_spec" or T.dsn()
      local out = T.sh(("%s %s --dsn %s run %s"):format(env, T.host(), shq(dsn), script))
      assert.matches("x *", out, 1, true)
      assert.is_nil(out:find(label == "service" and spw or pw, 1, true), label .. ": " .. out)
    end
  end)
end)

describe("TLS", function()
  local dir, admin
  local PGDATA, OWNER = os.getenv("PGSTORE_TEST_PGDATA"), os.getenv("PGSTORE_TEST_USER")

  setup(function()
    admin = T.connect{ application_name = "pgstore-spec" }
    dir = T.tmpdir("tls")
    local out, rc = T.sh(([[
      exec 2>&1; set -e; cd %s
      openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=pgstore test CA" -keyout ca.key -out ca.crt
      openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=someone else" -keyout other.key -out other.crt
      openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
      printf 'subjectAltName=DNS:localhost\n' > san.ext
      openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out server.crt
      cp server.crt %s/pgs_tls.crt; cp server.key %s/pgs_tls.key
      chown %s %s/pgs_tls.crt %s/pgs_tls.key; chmod 600 %s/pgs_tls.key
    ]]):format(dir, PGDATA, PGDATA, OWNER, PGDATA, PGDATA, PGDATA))
    assert(rc == 0, out)
    assert(admin:exec("alter system set ssl = on"))
    assert(admin:exec("alter system set ssl_cert_file = 'pgs_tls.crt'"))
    assert(admin:exec("alter system set ssl_key_file = 'pgs_tls.key'"))
    assert(admin:query("select pg_reload_conf()"))
    assert(T.eventually(function()
      local db = pgstore.connect{ dsn = T.dsn() .. " sslmode=require", application_name = "pgstore-spec" }
      local rows = db and db:query("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
      if db then db:close() end
      return rows and rows[1].ssl
    end, 10), "the server did not turn TLS on")
  end)

  teardown(function()
    assert(admin:exec("alter system reset ssl"))
    assert(admin:exec("alter system reset ssl_cert_file"))
    assert(admin:exec("alter system reset ssl_key_file"))
    assert(admin:query("select pg_reload_conf()"))
    T.sh(("rm -rf %s %s/pgs_tls.crt %s/pgs_tls.key"):format(dir, PGDATA, PGDATA))
    admin:close()
    T.assert_no_leaks()
  end)

  local function dsn(host, ca)
    return ("host=%s port=%s dbname=%s user=postgres sslmode=verify-full sslrootcert=%s/%s")
      :format(host, PORT, T.dbname(), dir, ca)
  end

  it("sslmode=verify-full connects with the right CA and host name", function()
    local db = T.connect{ dsn = dsn("localhost", "ca.crt") }
    assert.same({ { ssl = true } }, db:query("select ssl from pg_stat_ssl where pid = pg_backend_pid()"))
    -- the listener's own connection too
    local l = assert(db:listen("tls_ch"))
    assert(db:notify("tls_ch", "over TLS"))
    assert.equal("over TLS", assert(l:wait(5)).payload)
    l:close()
    db:close()
  end)

  it("refuses a server whose name does not match, and a certificate from another CA", function()
    for label, d in pairs{ ["wrong host name"] = dsn("127.0.0.1", "ca.crt"), ["wrong CA"] = dsn("localhost", "other.crt") } do
      local db = T.connect{ dsn = d, connect_timeout = 2 }
      local rows, err = db:query("select 1")
      assert.is_nil(rows, label)
      assert.equal("connection", err.code, label)
      assert.matches(label == "wrong CA" and "certificate verify failed" or "does not match", err.message)
      db:close()
    end
  end)
end)

describe("least privilege", function()
  local admin, db
  local TABLES = { events = "lp_events", kv = "lp_kv", snapshots = "lp_snapshots", checkpoints = "lp_checkpoints",
                   exec_checkpoints = "lp_exec", sessions = "lp_sessions" }

  local function make(prefix, grant)
    for kind, name in pairs(TABLES) do
      local store = assert(admin[kind](admin, { table = prefix .. name, cleanup_interval = kind == "kv" and 0 or nil }))
      store:close()
      local tables = { prefix .. name }
      if kind == "events" then
        tables = { prefix .. name, prefix .. name .. "_heads", prefix .. name .. "_idempotency" }
      end
      if grant then
        for _, t in ipairs(tables) do
          assert(admin:exec(("grant select, insert, update, delete on %s to %s"):format(t, USER)))
        end
        if kind == "events" then
          assert(admin:exec(("grant usage on sequence %s%s_position_seq to %s"):format(prefix, name, USER)))
        end
      end
    end
  end

  local function drop(prefix)
    for kind, name in pairs(TABLES) do
      local t = prefix .. name
      if kind == "events" then
        assert(admin:exec(("drop table if exists %s, %s_heads, %s_idempotency cascade; drop sequence if exists %s_position_seq")
          :format(t, t, t, t)))
        assert(admin:exec("delete from pgstore_migrations where target = $1", "events:\"" .. t .. "\""))
      else
        assert(admin:exec("drop table if exists " .. t))
        assert(admin:exec("delete from pgstore_migrations where target like $1", "%:" .. t))
      end
    end
  end

  setup(function()
    admin = T.connect()
    make("", true)
    make("nor_", false)
    db = T.connect{ dsn = secret_dsn() }
    -- this role cannot create anything
    local ok, err = db:exec("create table lp_nope (a int)")
    assert.is_nil(ok)
    assert.equal("42501", err.sqlstate)
  end)

  teardown(function()
    db:close()
    drop("")
    drop("nor_")
    admin:close()
    T.assert_no_leaks()
  end)

  it("a role without DDL rights works on tables made beforehand, schema init off", function()
    local es = assert(db:events{ table = "lp_events", migrate = false, notify = false })
    local r = assert(es:append("s", { { type = "E", data = { n = 1 } } }, { idempotency_key = "lp-1" }))
    assert.is_true(assert(es:append("s", { { type = "E", data = { n = 1 } } }, { idempotency_key = "lp-1" })).replayed)
    assert.equal(1, #assert(es:read("s")))
    assert.equal(r.first_position, assert(es:read_all())[1].position)
    es:close()
    local kv = assert(db:kv{ table = "lp_kv", skip_schema_init = true, cleanup_interval = 0 })
    assert(kv:set("k", "v", 60))
    assert.equal("v", kv:get("k"))
    assert.equal(1, kv:delete_prefix("k"))
    assert(kv:cleanup())
    kv:close()
    local ss = assert(db:snapshots{ table = "lp_snapshots", skip_schema_init = true })
    assert(ss:save("s", 1, { a = 1 }))
    assert.same({ a = 1 }, ss:load("s").state)
    ss:close()
    local cp = assert(db:checkpoints{ table = "lp_checkpoints", skip_schema_init = true })
    assert(cp:save("c", 5))
    assert.equal(5, cp:load("c"))
    cp:close()
    local xs = assert(db:exec_checkpoints{ table = "lp_exec", skip_schema_init = true })
    assert(xs:save("x", { step = 1 }))
    xs:close()
    local sess = assert(db:sessions{ table = "lp_sessions", skip_schema_init = true })
    assert(sess:save("id", { version = 1, state = { a = 1 } }))
    sess:close()
    -- with schema init on, the same role is told why it cannot
    local es2, err = db:events{ table = "lp_events_new" }
    assert.is_nil(es2)
    assert.equal("sql", err.code)
    assert.equal("42501", err.sqlstate)
  end)

  it("a role without rights on a store's tables gets sql 42501, and nothing is half-written", function()
    local es = assert(db:events{ table = "nor_lp_events", migrate = false, notify = false })
    local function denied(res, err)
      assert.is_nil(res)
      assert.equal("sql", err.code, tostring(err))
      assert.equal("42501", err.sqlstate)
    end
    denied(es:append("s", { { type = "E" } }))
    denied(es:read("s"))
    denied(es:read_all())
    es:close()
    denied(db:kv{ table = "nor_lp_kv", skip_schema_init = true, cleanup_interval = 0 }:set("k", "v"))
    denied(db:snapshots{ table = "nor_lp_snapshots", skip_schema_init = true }:save("s", 1, {}))
    denied(db:checkpoints{ table = "nor_lp_checkpoints", skip_schema_init = true }:save("c", 1))
    denied(db:exec_checkpoints{ table = "nor_lp_exec", skip_schema_init = true }:save("x", { a = 1 }))
    denied(db:sessions{ table = "nor_lp_sessions", skip_schema_init = true }:save("i", { version = 1, state = {} }))
    -- rights on the events and the heads, but only to read the idempotency
    -- keys: the append fails at its last step, and nothing of it stays
    assert(admin:exec(("grant select, insert, update, delete on nor_lp_events, nor_lp_events_heads to %s"):format(USER)))
    assert(admin:exec(("grant usage on sequence nor_lp_events_position_seq to %s"):format(USER)))
    assert(admin:exec(("grant select on nor_lp_events_idempotency to %s"):format(USER)))
    es = assert(db:events{ table = "nor_lp_events", migrate = false, notify = false })
    assert(es:append("half", { { type = "E" } }))
    denied(es:append("half", { { type = "E" }, { type = "F" } }, { idempotency_key = "k" }))
    assert.equal(1, admin:query("select count(*) as n from nor_lp_events where stream = 'half'")[1].n)
    assert.equal(1, admin:query("select version from nor_lp_events_heads where stream = 'half'")[1].version)
    es:close()
    collectgarbage()
    assert.same({ { one = 1 } }, db:query("select 1 as one"))
  end)
end)

describe("the script sandbox", function()
  local PROBES = [=[
local results = {}
local function probe(name, fn)
  local ok, res = pcall(fn)
  results[#results + 1] = ("PROBE %s %s"):format(name, (ok and res ~= nil) and "reachable" or "blocked")
end
probe("os.execute", function() return os.execute("true") end)
probe("io.popen", function() local f = io.popen("echo hi"); local s = f:read("*a"); f:close(); return s end)
probe("io.open", function() return io.open("/etc/hostname") end)
probe("require", function() return require("pgstore.core") end)
probe("load", function() return loadstring("return 1") end)
probe("debug", function() return debug.getinfo(1) end)
probe("getfenv", function() return getfenv(0) end)
probe("the DSN", function() return os.getenv("PGSTORE_DSN") end)
probe("the string metatable", function() return getmetatable("").__index end)
probe("db", function() return db end)
for _, r in ipairs(results) do print(r) end
return {
  name = "sandbox_probe",
  types = { "Probe" },
  handlers = {
    Probe = function(e, tx)
      local got, conn = pcall(rawget, tx, "conn")
      print(("PROBE tx.conn %s"):format((tx.conn or (got and conn)) and "reachable" or "blocked"))
      print(("PROBE tx metatable %s"):format(getmetatable(tx) and "reachable" or "blocked"))
      local ok, err = pcall(function() return tx:query("select 1") end)
      print(("PROBE tx:query %s"):format(ok and "works" or tostring(err)))
    end,
  },
}
]=]

  local function run(unsafe)
    local dir = T.tmpdir("sandbox")
    local f = assert(io.open(dir .. "/probe.lua", "w"))
    f:write(PROBES)
    f:close()
    local out = T.sh(("PGSTORE_DSN=%s %s %s project --once --rebuild --table sandbox_events %s/probe.lua")
      :format(shq(T.dsn()), T.host(), unsafe and "--unsafe-scripts" or "", dir))
    T.sh("rm -rf " .. dir)
    local seen = {}
    for name, what in out:gmatch("PROBE ([^\n]-) (%S+)\n") do seen[name] = what end
    return seen, out
  end

  setup(function()
    local db = T.connect()
    local es = assert(db:events{ table = "sandbox_events", notify = false })
    assert(es:truncate())
    assert(es:append("p", { { type = "Probe" } }))
    es:close()
    db:close()
  end)

  it("keeps a projection script from the system and the connection", function()
    local seen, out = run(false)
    for _, name in ipairs{ "os.execute", "io.popen", "io.open", "require", "load", "debug", "getfenv",
                           "the DSN", "the string metatable", "db", "tx.conn", "tx metatable" } do
      assert.equal("blocked", seen[name], name .. ":\n" .. out)
    end
    assert.equal("works", seen["tx:query"], out)
  end)

  it("opens it all with --unsafe-scripts", function()
    local seen, out = run(true)
    for _, name in ipairs{ "os.execute", "io.popen", "io.open", "require", "load", "debug", "the DSN" } do
      assert.equal("reachable", seen[name], name .. ":\n" .. out)
    end
  end)
end)
