-- SPDX-License-Identifier: MIT
-- pgstore.devcluster — the embedded default database: a private PostgreSQL
-- cluster that `pgstore` creates on first use (initdb) and starts on demand
-- (pg_ctl), reachable only through a Unix socket in its own directory, so it
-- never collides with another server's port.
--
-- Where it lives: $PGSTORE_HOME, else $XDG_DATA_HOME/pgstore, else
-- ~/.local/share/pgstore. PostgreSQL refuses to run as root, so when root
-- runs pgstore the cluster belongs to the `postgres` system user and lives
-- in /var/lib/pgstore (unless PGSTORE_HOME says otherwise).
--
-- Who reaches it: its owner only. The home and socket directories are mode
-- 0700, there is no TCP listener, and pg_hba admits Unix-socket peers mapped
-- from the owner's OS user (and root's, when root runs pgstore), nobody
-- else. The host connects as `pgstore`, which owns the data but is not a
-- superuser, so SQL from scripts cannot run programs or touch server files;
-- `pgstore_admin`, the bootstrap superuser, only sets the roles up.
local _M = {}

local getenv, format = os.getenv, string.format

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function sh(cmd)
  local ok, how, code = os.execute(cmd)
  -- LuaJIT (5.1 semantics) returns the status number; 5.2+ returns three values.
  if type(ok) == "number" then return ok == 0, ok end
  return ok == true, code
end

local function read_cmd(cmd)
  local f = io.popen(cmd .. " 2>/dev/null")
  local out = f:read("*a")
  f:close()
  return out
end

local root -- whether we run as root, asked once
local function is_root()
  if root == nil then root = read_cmd("id -u"):match("^0") ~= nil end
  return root
end

function _M.home()
  local h = getenv("PGSTORE_HOME")
  if h and h ~= "" then return h end
  if is_root() then return "/var/lib/pgstore" end
  local xdg = getenv("XDG_DATA_HOME")
  if xdg and xdg ~= "" then return xdg .. "/pgstore" end
  return (getenv("HOME") or ".") .. "/.local/share/pgstore"
end

-- The directory holding initdb and pg_ctl (newest Debian version first).
function _M.bindir()
  local env = getenv("PGSTORE_PGBIN")
  if env and env ~= "" then return env end
  local dir = read_cmd("ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1"):gsub("%s+$", "")
  if dir ~= "" then return dir end
  local initdb = read_cmd("command -v initdb"):gsub("%s+$", "")
  if initdb ~= "" then return (initdb:gsub("/initdb$", "")) end
  return nil
end

local function paths()
  local home = _M.home()
  return {
    home = home, data = home .. "/data", run = home .. "/run",
    log = home .. "/server.log", lock = home .. "/start.lock",
  }
end

-- Runs a server command as the cluster's owner (postgres when we are root).
local function as_owner(cmd)
  if is_root() then return "runuser -u postgres -- sh -c " .. q(cmd) end
  return cmd
end

function _M.dsn()
  local p = paths()
  -- Every keyword spelled out, so PG* variables meant for other servers
  -- do not leak in.
  return format("host=%s port=5432 dbname=pgstore user=pgstore", p.run)
end

-- true, "running" | false, "stopped" | false, "absent"
function _M.status()
  local p = paths()
  local bin = _M.bindir()
  local f = io.open(p.data .. "/PG_VERSION")
  if not f then return false, "absent" end
  f:close()
  if not bin then return false, "stopped" end
  local ok = sh(as_owner(format("%s/pg_ctl -D %s status >/dev/null 2>&1", q(bin), q(p.data))))
  return ok, ok and "running" or "stopped"
end

-- The roles: the data's owner (the host's), the bootstrap superuser, and a
-- superuser that exists only while an older cluster is being moved.
local OWNER, ADMIN, MOVER = "pgstore", "pgstore_admin", "pgstore_migrate"

-- The OS users that own the cluster: the one running pgstore, and the
-- server's own when root runs it.
local function owners()
  if is_root() then return { "root", "postgres" } end
  local me = read_cmd("id -un"):gsub("%s+$", "")
  return { me }
end

-- The settings pgstore keeps for the cluster, rewritten on every start so
-- that a cluster made by an older pgstore gets them too. A later
-- `include_if_exists` overrides what older versions appended to
-- postgresql.conf.
local function config_files(p)
  local conf = table.concat({
    "# Written by pgstore: reachable by its owner only, through the socket.",
    "listen_addresses = ''",
    "port = 5432", -- the socket's name; not the PGPORT meant for another server
    format("unix_socket_directories = '%s'", p.run:gsub("'", "''")),
    "unix_socket_permissions = 0700",
  }, "\n")
  local hba = table.concat({
    "# Written by pgstore: Unix-socket peers mapped from the cluster's owner, nobody else.",
    format("local all %s,%s,%s peer map=owner", OWNER, ADMIN, MOVER),
  }, "\n")
  local ident = { "# Written by pgstore: the OS users that own the cluster, and their roles." }
  for _, user in ipairs(owners()) do
    for _, role in ipairs{ OWNER, ADMIN, MOVER } do
      ident[#ident + 1] = format("owner %s %s", user, role)
    end
  end
  return { ["pgstore.conf"] = conf, ["pg_hba.conf"] = hba, ["pg_ident.conf"] = table.concat(ident, "\n") }
end

-- A one-connection pool as `user`, connected: pool | nil, err (a pool
-- connects lazily, so a role that cannot log in shows on first use).
local function open_pool(p, user, dbname)
  local pool, err = require("pgstore.core").pool{
    dsn = format("host=%s port=5432 dbname=%s user=%s", p.run, dbname, user),
    pool_size = 1, application_name = "pgstore-devcluster",
  }
  if not pool then return nil, err end
  local _, probe_err = pool:exec("select 1")
  if probe_err then
    pool:close()
    return nil, probe_err
  end
  return pool
end

-- Runs statements on a pool in order; the pool is closed either way.
-- Returns true | nil, err. `ignore` lists SQLSTATEs that are not failures.
local function run_all(pool, statements, ignore)
  for _, sql in ipairs(statements) do
    local _, err = pool:exec(sql)
    if err and not (ignore and ignore[err.sqlstate]) then
      pool:close()
      return nil, err
    end
  end
  pool:close()
  return true
end

-- The host's role is set up when it can log in, is no superuser and owns
-- the database (made its owner last of all, so a move cut short is redone).
local function owner_ready(p)
  local pool = open_pool(p, OWNER, "pgstore")
  if not pool then return false end
  local rows = pool:query([[select not r.rolsuper and d.datdba = r.oid as ready
    from pg_roles r, pg_database d where r.rolname = current_user and d.datname = current_database()]])
  pool:close()
  return rows and rows[1] and rows[1].ready == true
end

local INCLUDE = "include_if_exists = 'pgstore.conf'"

-- Whether the cluster runs as pgstore leaves it: its files as written and
-- the host's role set up. Reads files and connects once; starts nothing.
local function settled(p)
  for name, text in pairs(config_files(p)) do
    local f = io.open(p.data .. "/" .. name)
    if not f then return false end
    local have = f:read("*a")
    f:close()
    if have ~= text .. "\n" then return false end
  end
  local f = io.open(p.data .. "/postgresql.conf")
  if not f then return false end
  local conf = f:read("*a")
  f:close()
  return conf:find("\n" .. INCLUDE .. "\n", 1, true) ~= nil and owner_ready(p)
end

-- Every object of the data still owned by the superuser (tables, views,
-- sequences not tied to a column, functions, types, schemas) goes to the
-- owner role; what belongs to an extension stays.
local GIVE_DATA_TO_OWNER = [[
do $$
declare
  r record;
  admin oid := 'pgstore_admin'::regrole;
begin
  for r in select n.nspname from pg_namespace n
           where n.nspowner = admin and n.nspname !~ '^pg_' and n.nspname <> 'information_schema' loop
    execute format('alter schema %I owner to pgstore', r.nspname);
  end loop;
  for r in select c.oid::regclass as name, case c.relkind when 'v' then 'view' when 'm' then 'materialized view'
                  when 'S' then 'sequence' when 'f' then 'foreign table' else 'table' end as kind
           from pg_class c join pg_namespace n on n.oid = c.relnamespace
           where c.relowner = admin and n.nspname !~ '^pg_' and n.nspname <> 'information_schema'
             and c.relkind in ('r', 'p', 'v', 'm', 'f', 'S')
             -- a column's sequence follows its table; partitions do not
             and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass and d.objid = c.oid
                             and (d.deptype = 'e' or (c.relkind = 'S' and d.deptype in ('a', 'i')))) loop
    execute format('alter %s %s owner to pgstore', r.kind, r.name);
  end loop;
  for r in select p.oid::regprocedure as name, case p.prokind when 'p' then 'procedure'
                  when 'a' then 'aggregate' else 'function' end as kind
           from pg_proc p join pg_namespace n on n.oid = p.pronamespace
           where p.proowner = admin and n.nspname !~ '^pg_' and n.nspname <> 'information_schema'
             and not exists (select 1 from pg_depend d where d.classid = 'pg_proc'::regclass
                             and d.objid = p.oid and d.deptype = 'e') loop
    execute format('alter %s %s owner to pgstore', r.kind, r.name);
  end loop;
  for r in select t.oid::regtype as name, case t.typtype when 'd' then 'domain' else 'type' end as kind
           from pg_type t join pg_namespace n on n.oid = t.typnamespace
           where t.typowner = admin and n.nspname !~ '^pg_' and n.nspname <> 'information_schema'
             and (t.typtype in ('e', 'd', 'r')
                  or (t.typtype = 'c' and (select relkind from pg_class where oid = t.typrelid) = 'c'))
             and not exists (select 1 from pg_depend d where d.classid = 'pg_type'::regclass
                             and d.objid = t.oid and d.deptype = 'e') loop
    execute format('alter %s %s owner to pgstore', r.kind, r.name);
  end loop;
end $$]]

-- A cluster made before the owner role: its bootstrap superuser is called
-- `pgstore` and the host logged in as it. It becomes `pgstore_admin` (a
-- role cannot rename itself, hence the short-lived second superuser), and
-- whoever is still logged in as it is disconnected.
local function rename_old_superuser(p, say)
  local old, err = open_pool(p, OWNER, "postgres")
  if not old then return nil, err end
  local rows = old:query("select rolsuper from pg_roles where rolname = current_user")
  if not (rows and rows[1] and rows[1].rolsuper) then
    old:close()
    return nil, "neither pgstore_admin nor a superuser pgstore"
  end
  local ok
  ok, err = run_all(old, { "create role pgstore_migrate superuser login" }, { ["42710"] = true })
  if not ok then return nil, err end
  local mover
  mover, err = open_pool(p, MOVER, "postgres")
  if not mover then return nil, err end
  ok, err = run_all(mover, {
    "select pg_terminate_backend(pid) from pg_stat_activity where usename = 'pgstore' and pid <> pg_backend_pid()",
    "alter role pgstore rename to pgstore_admin",
  })
  if not ok then return nil, err end
  say("moved the embedded cluster's superuser to pgstore_admin; pgstore is now the data's owner, not a superuser")
  return true
end

-- Creates the owner role and the database, or moves an older cluster's
-- data to that role. Returns true | nil, err.
local function setup_roles(p, say)
  local admin = open_pool(p, ADMIN, "postgres")
  if not admin then
    -- (another pgstore may be moving it at the same time: then its admin appears)
    local _, move_err = rename_old_superuser(p, say)
    local err
    admin, err = open_pool(p, ADMIN, "postgres")
    if not admin then return nil, move_err or err end
  end
  local rows = admin:query("select pg_get_userbyid(datdba) as owner from pg_database where datname = 'pgstore'")
  local db_owner = rows and rows[1] and rows[1].owner
  local role = admin:query("select 1 from pg_roles where rolname = 'pgstore'")
  -- another pgstore starting at the same time may create them first
  local ok, err = run_all(admin, {
    "drop role if exists pgstore_migrate",
    (role and role[1]) and "alter role pgstore login nosuperuser nocreatedb nocreaterole noreplication nobypassrls"
      or "create role pgstore login",
    not db_owner and "create database pgstore owner pgstore" or "select 1",
  }, { ["42710"] = true, ["42P04"] = true })
  if not ok or not db_owner or db_owner == OWNER then return ok, err end
  local data
  data, err = open_pool(p, ADMIN, "pgstore")
  if not data then return nil, err end
  return run_all(data, { GIVE_DATA_TO_OWNER, "alter database pgstore owner to pgstore" })
end

-- Creates the cluster when absent, starts it when stopped, brings an older
-- cluster's settings and roles up to date. Safe when several processes do
-- it at once (flock on the cluster directory). Returns the DSN, or nil and
-- an error message. `say` reports progress.
function _M.ensure(say)
  say = say or function() end
  if settled(paths()) then return _M.dsn() end
  local bin = _M.bindir()
  if not bin then
    return nil, "PostgreSQL server binaries not found: install the postgresql package or set PGSTORE_PGBIN"
  end
  local p = paths()
  if is_root() then
    if not sh("id -u postgres >/dev/null 2>&1") then
      return nil, "running as root needs the 'postgres' system user (install the postgresql package)"
    end
    sh(format("mkdir -p -m 0700 %s && chown postgres: %s", q(p.home), q(p.home)))
    if not sh(as_owner(format("test -w %s", q(p.home)))) then
      return nil, format("the cluster's owner 'postgres' cannot write to %s: set PGSTORE_HOME to a directory it can reach", p.home)
    end
  else
    sh(format("mkdir -p -m 0700 %s", q(p.home)))
  end
  local script = {
    "set -e",
    "umask 077",
    format("if [ ! -f %s/PG_VERSION ]; then", q(p.data)),
    format("  %s/initdb -D %s -U %s --auth-local=peer --auth-host=reject -E UTF8 --locale=C >%s/initdb.log 2>&1",
      q(bin), q(p.data), ADMIN, q(p.home)),
    "  echo initialised",
    "fi",
    format("mkdir -p %s", q(p.run)),
    format("chmod 0700 %s %s", q(p.home), q(p.run)),
    "changed=",
    -- put FILE TEXT: replaces FILE when its text differs
    [[put() {
      if [ "$(cat "$1" 2>/dev/null)" != "$2" ]; then printf '%s\n' "$2" >"$1.new"; mv "$1.new" "$1"; changed=1; fi
    }]],
  }
  for name, text in pairs(config_files(p)) do
    script[#script + 1] = format("put %s/%s %s", q(p.data), name, q(text))
  end
  script[#script + 1] = format("grep -qxF %s %s/postgresql.conf || { echo %s >>%s/postgresql.conf; changed=1; }",
    q(INCLUDE), q(p.data), q(INCLUDE), q(p.data))
  script[#script + 1] = table.concat({
    format("if ! %s/pg_ctl -D %s status >/dev/null 2>&1; then", q(bin), q(p.data)),
    format("  %s/pg_ctl -D %s -l %s -w -t 60 start >/dev/null", q(bin), q(p.data), q(p.log)),
    "  echo started",
    -- not settled, yet running: reload even when the files were written
    -- by a run cut short before its reload
    "else",
    format("  %s/pg_ctl -D %s reload >/dev/null", q(bin), q(p.data)),
    "  if [ -n \"$changed\" ]; then echo reconfigured; fi",
    "fi",
  }, "\n")
  -- -o: the server started under the lock must not keep holding it (older
  -- versions' servers hold their `.lock`, hence a new name).
  local out = read_cmd(as_owner(format("flock -o -w 120 %s sh -c %s", q(p.lock), q(table.concat(script, "\n"))))
    .. "; echo rc=$?")
  if out:find("initialised") then say("created the embedded cluster in " .. p.home) end
  if not out:find("rc=0") then
    return nil, format("could not start the embedded cluster in %s (see %s)", p.home, p.log)
  end
  if out:find("started") then say("started the embedded cluster in " .. p.home) end
  if out:find("reconfigured") then say("the embedded cluster in " .. p.home .. " now admits its owner only") end
  if not owner_ready(p) then
    local ok, err = setup_roles(p, say)
    if not ok and not owner_ready(p) then
      return nil, format("could not set up the roles of the embedded cluster in %s: %s"
        .. " (move it aside and pgstore makes a new one)", p.home, tostring(err))
    end
  end
  return _M.dsn()
end

function _M.stop()
  local running = _M.status()
  if not running then return true end
  local p = paths()
  local ok = sh(as_owner(format("%s/pg_ctl -D %s -m fast -w stop >/dev/null", q(_M.bindir()), q(p.data))))
  if not ok then return nil, "pg_ctl stop failed (see " .. p.log .. ")" end
  return true
end

-- The server's process id, or nil when it is not running.
function _M.pid()
  local f = io.open(paths().data .. "/postmaster.pid")
  if not f then return nil end
  local pid = tonumber(f:read("*l"))
  f:close()
  return pid
end

return _M
