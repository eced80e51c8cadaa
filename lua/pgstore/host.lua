-- SPDX-License-Identifier: MIT
-- pgstore.host — the `pgstore` program: global flags (anywhere on the
-- line), the DSN (--dsn or --dsn-file, then PGSTORE_DSN, then libpq's PG*
-- variables when one is set, as psql reads them, then the embedded default
-- cluster; a password left out comes from PGPASSWORD or the passfile), and
-- dispatch to the subcommands in pgstore.cli.*, with `help [COMMAND]` and
-- a "did you mean" for a mistyped one. With no command it opens the REPL
-- when stdin is a terminal, and prints the help and exits 2 when it is not.
-- Exit codes: 0 ok, 1 runtime failure, 2 usage error. Errors are one line
-- on stderr.
local pgstore = require "pgstore"
local printable = require "pgstore.printable"
local escape = printable.escape
local suggest = require "pgstore.cli.suggest"

local _M = {}

-- Keep in the order `--help` lists them.
local COMMANDS = { "repl", "run", "project", "parked", "checkpoint", "policy", "tail", "append", "status", "migrate", "dev" }

-- Every line the host prints goes through pgstore.printable: what it
-- quotes (a stream name, a consumer, a server message) may hold escape
-- sequences meant for the operator's terminal.
local function eprint(msg) io.stderr:write("pgstore: ", escape(msg), "\n") end

local function one_line(msg)
  return (tostring(msg):gsub("\n%s*", " "))
end

function _M.say(msg) eprint(msg) end

-- One line on stdout, its control characters escaped.
function _M.print(line) io.stdout:write(escape(line), "\n") end

-- One line of JSON on stdout (cjson's or the server's text): still JSON,
-- nothing in it that acts on a terminal (printable.json).
function _M.print_json(text) io.stdout:write(printable.json(text), "\n") end

function _M.fail(err)
  eprint(one_line(err))
  return 1
end

function _M.usage_error(msg, usage)
  eprint(msg)
  if usage then io.stderr:write("usage: ", usage, "\n") end
  return 2
end

-- For xpcall around user code: keeps "file:line: message", turns error
-- tables into their message, adds a traceback only when asked to.
function _M.error_handler(e)
  local msg = type(e) == "table" and tostring(e) or tostring(e)
  if os.getenv("PGSTORE_TRACEBACK") then msg = debug.traceback(msg, 2) end
  return msg
end

local dsn_arg -- from --dsn; not kept in the module table (it may hold a password)
_M.unsafe_scripts = false -- --unsafe-scripts: projection scripts get the full environment
_M.migrate = true -- --no-migrate: never create or upgrade a schema (a role without DDL rights)

-- argv[i] holds the DSN of --dsn: main() hid it from other local users
-- (/proc/PID/cmdline) before anything loaded. Without a password — as
-- libpq parses it, the same judgement core/conn.c makes of its errors —
-- it is shown again; with one, the operator is told where it belongs.
local function check_password(i)
  if not require("pgstore.core").dsn_has_password(dsn_arg) then
    require("pgstore.sys").show_arg(i)
    return
  end
  _M.say("--dsn carries a password, which other local users can read while pgstore starts;"
    .. " use --dsn-file, PGPASSWORD or a passfile (PGPASSFILE, ~/.pgpass) instead")
end

-- The DSN of --dsn-file: the file's text, without surrounding whitespace.
-- A file other users may read is no better than the arguments: said.
local function read_dsn_file(path)
  local f, err = io.open(path)
  if not f then return nil, "--dsn-file: " .. tostring(err) end
  local mode = require("pgstore.sys").file_mode(path)
  if mode and mode % 64 ~= 0 then
    _M.say(("--dsn-file: %s can be read by other users (mode %03o); chmod 600 it"):format(path, mode))
  end
  local text = f:read("*a") or ""
  f:close()
  text = text:match("^%s*(.-)%s*$")
  if text == "" then return nil, "--dsn-file: " .. path .. " is empty" end
  return text
end

-- The variables through which libpq picks a server by itself; any of them
-- set means the user chose one, as psql takes it.
local PG_VARIABLES = { "PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE" }

-- The DSN the user chose: --dsn/--dsn-file, PGSTORE_DSN, then "" (libpq's
-- PG* variables) when one of those is set; nil: none (the embedded cluster).
local function chosen_dsn()
  local dsn = dsn_arg or os.getenv("PGSTORE_DSN")
  if dsn and dsn ~= "" then return dsn end
  for _, v in ipairs(PG_VARIABLES) do
    local value = os.getenv(v)
    if value and value ~= "" then return "" end
  end
end

-- Scripts run with the rights of the role the host connects as, and a
-- superuser's reach the server's operating-system user (`copy … to
-- program`). Said once, on stderr, for a DSN the user gave.
local warned_superuser = false
function _M.warn_if_superuser(db)
  if warned_superuser then return end
  warned_superuser = true
  if not chosen_dsn() then return end
  local rows = db:query("select current_user as u, current_setting('is_superuser') = 'on' as su")
  if rows and rows[1] and rows[1].su then
    _M.say(("connected as %s, a superuser: projection scripts can reach everything on the server,"
      .. " its files and programs too; connect as a role with only the rights they need"):format(rows[1].u))
  end
end

-- This worker's name for leases: host name and process id.
function _M.owner()
  local f = io.open("/proc/sys/kernel/hostname")
  local name = f and f:read("*l") or "host"
  if f then f:close() end
  return ("%s:%d"):format(name, require("pgstore.sys").getpid())
end

-- A db for the chosen DSN; starts the embedded cluster when none is given.
function _M.connect(opts)
  local dsn = chosen_dsn()
  if not dsn then
    local err
    dsn, err = require("pgstore.devcluster").ensure(_M.say)
    if not dsn then return nil, err end
  end
  opts = opts or {}
  opts.dsn = dsn ~= "" and dsn or nil
  opts.application_name = opts.application_name or "pgstore"
  -- Behind PgBouncer in transaction mode: PGSTORE_POOLER=transaction, and
  -- PGSTORE_LISTEN_DSN, a direct DSN for LISTEN (follow modes, projections).
  local pooler, listen_dsn = os.getenv("PGSTORE_POOLER"), os.getenv("PGSTORE_LISTEN_DSN")
  if pooler and pooler ~= "" then opts.pooler = opts.pooler or pooler end
  if listen_dsn and listen_dsn ~= "" then opts.listen_dsn = opts.listen_dsn or listen_dsn end
  return pgstore.connect(opts)
end

local function help()
  print(("pgstore %s — PostgreSQL event store and companion stores\n"):format(pgstore._VERSION))
  print("usage: pgstore [--dsn DSN] [COMMAND [args…]]\n\n" ..
    "With no command on a terminal, pgstore opens the REPL (pgstore repl).\n\ncommands:")
  for _, name in ipairs(COMMANDS) do
    print(("  %-10s %s"):format(name, require("pgstore.cli." .. name).summary))
  end
  print(("  %-10s %s"):format("help", "the commands, or one command's options with their defaults"))
  print([[

options:
  --dsn DSN     libpq connection string or URI; else $PGSTORE_DSN; else
                libpq's variables when any of PGHOST, PGHOSTADDR, PGPORT,
                PGDATABASE, PGUSER, PGSERVICE is set (as psql); else the
                embedded default cluster (see `pgstore dev`). A password
                is better left to PGPASSWORD or a passfile (PGPASSFILE,
                ~/.pgpass): other local users can read the arguments
  --dsn-file FILE  the DSN from a file (keep it mode 0600)
  --no-migrate  never create or upgrade tables (a role without DDL rights;
                `pgstore migrate` made them); tail and status never do
  --unsafe-scripts  give projection scripts the full Lua environment
                (io, os.execute, require …); by default they are sandboxed
  --help        this text; `pgstore help COMMAND` for one command
  --version     print the version
Global options go anywhere on the line (a script's own arguments, after
`run FILE`, are the script's).]])
end

local function command_help(cmd)
  print("usage: " .. cmd.usage .. "\n\n" .. (cmd.help or cmd.summary))
  print("\nglobal options: --dsn DSN, --dsn-file FILE, --no-migrate, --unsafe-scripts (see pgstore --help)")
end

local function unknown_command(name)
  return _M.usage_error(("unknown command '%s'%s (see pgstore --help)"):format(name,
    suggest.hint(name, COMMANDS)))
end

local function is_command(name)
  for _, c in ipairs(COMMANDS) do if c == name then return true end end
  return false
end

-- os.exit in a script closes the Lua state by default, so finalizers close
-- pools and connections before the process ends (LuaJIT's plain os.exit
-- does not).
local exit = os.exit
os.exit = function(code, close) return exit(code, close ~= false) end

-- Takes the global flags out of argv wherever they stand, up to a `--`
-- or a script's own arguments (after `run FILE`). → the rest | nil, rc.
local function take_globals(argv)
  local rest, i, command, script = {}, 1, nil, nil
  while argv[i] do
    local a = argv[i]
    local mine = not script and a ~= "--"
    if not mine then
      for j = i, #argv do rest[#rest + 1] = argv[j] end
      break
    end
    if a == "--dsn" then
      if not argv[i + 1] then return nil, _M.usage_error("--dsn needs a value") end
      dsn_arg = argv[i + 1]
      check_password(i + 1)
      i = i + 1
    elseif a:match("^%-%-dsn=") then
      dsn_arg = a:sub(7)
      check_password(i)
    elseif a == "--dsn-file" then
      if not argv[i + 1] then return nil, _M.usage_error("--dsn-file needs a file") end
      local err
      dsn_arg, err = read_dsn_file(argv[i + 1])
      if not dsn_arg then return nil, _M.fail(err) end
      i = i + 1
    elseif a == "--unsafe-scripts" then
      _M.unsafe_scripts = true
    elseif a == "--no-migrate" then
      _M.migrate = false
    else
      rest[#rest + 1] = a
      if a:sub(1, 1) ~= "-" then
        if not command then command = a elseif command == "run" then script = a end
      end
    end
    i = i + 1
  end
  return rest
end

function _M.main(argv)
  local args, rc = take_globals(argv)
  if not args then return rc end
  local first = args[1]
  if first == "--version" or first == "-v" then
    print("pgstore " .. pgstore._VERSION)
    return 0
  elseif first == "--help" or first == "-h" then
    help()
    return 0
  end
  local name = table.remove(args, 1)
  if not name then
    local repl = require "pgstore.cli.repl"
    if repl.is_terminal() then return repl.main(_M, args) end
    help()
    return 2
  end
  if name == "help" then
    if not args[1] then help(); return 0 end
    if not is_command(args[1]) then return unknown_command(args[1]) end
    command_help(require("pgstore.cli." .. args[1]))
    return 0
  end
  if not is_command(name) then return unknown_command(name) end
  local cmd = require("pgstore.cli." .. name)
  if args[1] == "--help" or args[1] == "-h" then
    command_help(cmd)
    return 0
  end
  return cmd.main(_M, args)
end

return _M
