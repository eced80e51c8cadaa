-- SPDX-License-Identifier: MIT
-- The embedded default cluster is reachable by its owner only: its socket
-- directory is private, authentication is peer (never trust), and the host
-- connects as a role that owns the data but is not a superuser, so a
-- projection's handler cannot `copy … to program`. A cluster made by an
-- older pgstore (trust for everyone, data owned by the superuser) is moved
-- to that setup on its next use. Run as root (as the suite is in CI), the
-- cluster belongs to `postgres` and the other user trying it is `nobody`.
local T = require "testenv"

local function shq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local ROOT = T.sh("id -u"):match("^0") ~= nil

-- A command as the cluster's OS owner (postgres when the suite runs as root).
local function as_owner(cmd)
  if ROOT then return "runuser -u postgres -- sh -c " .. shq(cmd) end
  return cmd
end

-- A command as another local user (the attacker).
local function as_nobody(cmd)
  return "setpriv --reuid=nobody --regid=nogroup --clear-groups -- sh -c " .. shq(cmd)
end

local function bindir()
  local env = os.getenv("PGSTORE_PGBIN")
  if env and env ~= "" then return env end
  return (T.sh("ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1"):gsub("%s+$", ""))
end

describe("the embedded default cluster", function()
  local dir, home, env
  local function host(args) return T.sh(env .. T.host() .. " " .. args) end
  local function run_dir() return home .. "/run" end

  -- psql on the cluster's socket as the user running the suite.
  local function psql(user, sql)
    return T.sh(("psql -X -At %s -c %s"):format(
      shq(("host=%s port=5432 dbname=postgres user=%s"):format(run_dir(), user)), shq(sql)))
  end

  -- Every way `nobody` could try the socket: each role, each command.
  local function assert_nobody_refused()
    local marker = dir .. "/drop/nobody-ran-a-program"
    for _, user in ipairs{ "pgstore", "pgstore_admin", "postgres", "nobody" } do
      for _, db in ipairs{ "pgstore", "postgres" } do
        local out, rc = T.sh(as_nobody(("psql -X -At %s -c %s"):format(
          shq(("host=%s port=5432 dbname=%s user=%s connect_timeout=5"):format(run_dir(), db, user)),
          shq(("copy (select 1) to program 'touch %s'"):format(marker)))))
        assert.are_not.equal(0, rc, user .. "@" .. db .. ": " .. out)
        assert.matches("connection to server", out)
      end
    end
    assert.is_nil(io.open(marker))
  end

  before_each(function()
    dir = T.tmpdir("devcluster")
    T.sh("chmod 755 " .. dir) -- the cluster's OS owner must reach its home
    -- where a program run by the server could leave its mark
    T.sh(("mkdir -m 1777 %s/drop"):format(shq(dir)))
    home = dir .. "/home"
    -- no server chosen: PG* variables would choose one (as psql takes them)
    env = ("env -u PGSTORE_DSN -u PGPASSWORD -u PGHOST -u PGHOSTADDR -u PGPORT -u PGUSER"
      .. " -u PGDATABASE -u PGSERVICE PGSTORE_HOME=%s "):format(shq(home))
    T.write(dir .. "/who.lua", [[
      local r = db:query([=[select current_user as u, r.rolsuper as s from pg_roles r
                             where r.rolname = current_user]=])[1]
      print("role", r.u, r.s and "superuser" or "not a superuser")
    ]])
  end)

  after_each(function()
    host("dev stop")
    T.sh(as_owner(("%s/pg_ctl -D %s -m immediate -w stop"):format(bindir(), shq(home .. "/data"))))
    T.sh("rm -rf " .. shq(dir))
  end)

  it("is reached by its owner only, as a role that is not a superuser", function()
    if not ROOT then pending("needs root to try the cluster as another user") return end
    local out, rc = host("run " .. dir .. "/who.lua")
    assert.equal(0, rc, out)
    assert.matches("created the embedded cluster", out)
    assert.matches("role\tpgstore\tnot a superuser", out)
    -- private directories: the socket cannot even be reached
    assert.equal("700", (T.sh("stat -c %a " .. shq(run_dir())):gsub("%s+$", "")))
    assert.equal("700", (T.sh("stat -c %a " .. shq(home)):gsub("%s+$", "")))
    assert_nobody_refused()
    -- and were the directories and the socket open, authentication still
    -- refuses others
    local socket = run_dir() .. "/.s.PGSQL.5432"
    T.sh(("chmod 711 %s && chmod 755 %s && chmod 777 %s"):format(shq(home), shq(run_dir()), shq(socket)))
    local out_open = T.sh(as_nobody(("psql -X -At %s -c 'select 1'"):format(
      shq(("host=%s port=5432 dbname=pgstore user=pgstore"):format(run_dir())))))
    assert.matches("Peer authentication failed", out_open)
    assert_nobody_refused()
    T.sh(("chmod 700 %s %s %s"):format(shq(home), shq(run_dir()), shq(socket)))
    -- peer on the socket, nothing else: no trust, no TCP
    local rules = psql("pgstore_admin", "select type || ' ' || auth_method from pg_hba_file_rules")
    assert.matches("^local peer\n", rules)
    assert.is_nil(rules:find("trust", 1, true))
    assert.is_nil(rules:find("host", 1, true))
    assert.equal("\n", psql("pgstore_admin", "show listen_addresses"))
    assert.equal("0700\n", psql("pgstore_admin", "show unix_socket_permissions"))
    -- the data belongs to the owner role
    assert.equal("pgstore\n", psql("pgstore_admin",
      "select pg_get_userbyid(datdba) from pg_database where datname = 'pgstore'"))
  end)

  it("runs a projection's handler as a role that cannot run programs", function()
    local marker = dir .. "/drop/handler-ran-a-program"
    local out, rc = host("append s-1 Added '{}'")
    assert.equal(0, rc, out)
    T.write(dir .. "/shell.lua", ([[return { name = "shell", handlers = { Added = function(e, tx)
      assert(tx:exec("copy (select 1) to program 'touch %s'"))
    end } }]]):format(marker))
    out, rc = host("project " .. dir .. "/shell.lua --once")
    assert.equal(1, rc, out)
    assert.matches("pg_execute_server_program", out)
    assert.is_nil(io.open(marker))
    out = host("run " .. dir .. "/who.lua")
    assert.matches("role\tpgstore\tnot a superuser", out)
  end)

  for _, running in ipairs{ true, false } do
    it(("moves a %s cluster made by an older pgstore (trust, superuser-owned data) to the owner role")
      :format(running and "running" or "stopped"), function()
      -- the layout earlier versions made: trust for everyone, the host as
      -- the bootstrap superuser `pgstore`, a world-reachable socket directory
      local bin, data, run = bindir(), home .. "/data", run_dir()
      T.sh("mkdir -p " .. shq(home))
      if ROOT then T.sh("chown postgres: " .. shq(home)) end
      local out, rc = T.sh(as_owner(table.concat({
        "unset PGHOST PGPORT PGUSER PGDATABASE",
        ("%s/initdb -D %s -U pgstore --auth=trust -E UTF8 --locale=C >/dev/null"):format(bin, shq(data)),
        ("mkdir -m 755 -p %s"):format(shq(run)),
        ("printf \"listen_addresses = ''\\nunix_socket_directories = '%%s'\\n\" %s >> %s/postgresql.conf")
          :format(shq(run), shq(data)),
        ("%s/pg_ctl -D %s -l %s/server.log -w start >/dev/null"):format(bin, shq(data), shq(home)),
      }, " && ")))
      assert.equal(0, rc, out)
      local old = ("host=%s port=5432 dbname=pgstore user=pgstore"):format(run)
      psql("pgstore", "create database pgstore")
      out, rc = T.sh(("%s --dsn %s append old-1 Added '{\"n\":1}'"):format(T.host(), shq(old)))
      assert.equal(0, rc, out)
      if ROOT then
        -- the hole itself, before the move: anyone is the superuser
        out, rc = T.sh(as_nobody(("psql -X -At %s -c 'select rolsuper from pg_roles where rolname = current_user'")
          :format(shq(old))))
        assert.equal(0, rc, out)
        assert.equal("t\n", out)
      end

      if not running then
        out, rc = T.sh(as_owner(("%s/pg_ctl -D %s -m fast -w stop"):format(bin, shq(data))))
        assert.equal(0, rc, out)
      end
      -- the next use moves it
      out, rc = host("run " .. dir .. "/who.lua")
      assert.equal(0, rc, out)
      assert.matches("role\tpgstore\tnot a superuser", out)
      out, rc = host("append old-1 Added '{\"n\":2}'")
      assert.equal(0, rc, out)
      out, rc = host("tail old-1")
      assert.equal(0, rc, out)
      assert.matches('"n": 1', out)
      assert.matches('"n": 2', out)
      assert.equal("0\n", psql("pgstore_admin",
        "select count(*) from pg_roles where rolsuper and rolcanlogin and rolname <> 'pgstore_admin'"))
      local owned = T.sh(("psql -X -At %s -c %s"):format(
        shq(("host=%s port=5432 dbname=pgstore user=pgstore_admin"):format(run)),
        shq([[select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace
              where n.nspname = 'public' and pg_get_userbyid(c.relowner) <> 'pgstore']])))
      assert.equal("0\n", owned)
      local rules = psql("pgstore_admin", "select type || ' ' || auth_method from pg_hba_file_rules")
      assert.is_nil(rules:find("trust", 1, true))
      assert.equal("700", (T.sh("stat -c %a " .. shq(run)):gsub("%s+$", "")))
      if ROOT then assert_nobody_refused() end

      -- and after a restart it is the same
      out, rc = host("dev stop")
      assert.equal(0, rc, out)
      out, rc = host("run " .. dir .. "/who.lua")
      assert.equal(0, rc, out)
      assert.matches("role\tpgstore\tnot a superuser", out)
      assert.equal("0700\n", psql("pgstore_admin", "show unix_socket_permissions"))
      if ROOT then assert_nobody_refused() end
    end)
  end
end)
