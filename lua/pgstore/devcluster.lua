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

local function is_root()
  return read_cmd("id -u"):match("^0") ~= nil
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
    log = home .. "/server.log", lock = home .. "/.lock",
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

-- Creates the cluster when absent and starts it when stopped. Safe when
-- several processes do it at once (flock on the cluster directory).
-- Returns the DSN, or nil and an error message. `say` reports progress.
function _M.ensure(say)
  say = say or function() end
  local running = _M.status()
  if running then return _M.dsn() end
  local bin = _M.bindir()
  if not bin then
    return nil, "PostgreSQL server binaries not found: install the postgresql package or set PGSTORE_PGBIN"
  end
  local p = paths()
  if is_root() then
    if not sh("id -u postgres >/dev/null 2>&1") then
      return nil, "running as root needs the 'postgres' system user (install the postgresql package)"
    end
    sh(format("mkdir -p %s && chown postgres: %s", q(p.home), q(p.home)))
    if not sh(as_owner(format("test -w %s", q(p.home)))) then
      return nil, format("the cluster's owner 'postgres' cannot write to %s: set PGSTORE_HOME to a directory it can reach", p.home)
    end
  else
    sh(format("mkdir -p %s", q(p.home)))
  end
  local script = table.concat({
    "set -e",
    format("if [ ! -f %s/PG_VERSION ]; then", q(p.data)),
    format("  %s/initdb -D %s -U pgstore --auth=trust -E UTF8 --locale=C >%s/initdb.log 2>&1",
      q(bin), q(p.data), q(p.home)),
    format("  mkdir -p %s", q(p.run)),
    format("  printf \"listen_addresses = ''\\nunix_socket_directories = '%%s'\\n\" %s >> %s/postgresql.conf",
      q(p.run), q(p.data)),
    "  echo initialised",
    "fi",
    format("if ! %s/pg_ctl -D %s status >/dev/null 2>&1; then", q(bin), q(p.data)),
    format("  %s/pg_ctl -D %s -l %s -w -t 60 start >/dev/null", q(bin), q(p.data), q(p.log)),
    "  echo started",
    "fi",
  }, "\n")
  local out = read_cmd(as_owner(format("flock %s sh -c %s", q(p.lock), q(script))) .. "; echo rc=$?")
  if out:find("initialised") then say("created the embedded cluster in " .. p.home) end
  if not out:find("rc=0") then
    return nil, format("could not start the embedded cluster in %s (see %s)", p.home, p.log)
  end
  if out:find("started") then say("started the embedded cluster in " .. p.home) end
  -- The database itself, created once.
  local core = require "pgstore.core"
  local pool = core.pool{ dsn = format("host=%s port=5432 dbname=postgres user=pgstore", p.run), pool_size = 1 }
  if pool then
    local _, err = pool:exec("create database pgstore")
    pool:close()
    if err and err.sqlstate ~= "42P04" then return nil, tostring(err) end
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
