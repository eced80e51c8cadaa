-- SPDX-License-Identifier: MIT
-- `pgstore repl` (also `pgstore` alone on a terminal) — the interactive
-- prompt, with `db` connected, `es` = db:events() and `pgstore` ready (see
-- pgstore.repl). Reading from a pipe, it runs the lines without prompts and
-- exits 1 if any chunk failed.
local pgstore = require "pgstore"
local pretty = require "pgstore.pretty"
local Repl = require "pgstore.repl"

local _M = { usage = "pgstore repl [--table NAME]", summary = "interactive Lua prompt with db and es ready" }

_M.help = [[
Interactive Lua with `db` connected, `es` = db:events() (--table NAME:
that store, which must exist) and `pgstore` ready; also what `pgstore` alone opens on a terminal. Expressions print
their values, pretty-printed; unfinished chunks continue on the next line.
Type :help inside for the commands (:quit, :set, :trace, \listen CHANNEL,
\unlisten) and keys (Tab completes; Up/Down, Ctrl-R: history; Ctrl-C
cancels or interrupts; Ctrl-D leaves).

History: $PGSTORE_HISTORY (empty: none), else
$XDG_DATA_HOME/pgstore/history, else ~/.local/share/pgstore/history; the
last 1000 entries; a line starting with a space is not kept. Line editing
is libedit's: ~/.editrc applies (e.g. `bind -v` for vi keys).

Without a terminal (a pipe or a file on stdin) the lines run without
prompts and the exit status is 1 if any chunk failed.]]

-- Line editing needs a terminal on both sides (as Python's REPL does);
-- otherwise lines are read plainly.
local function terminal()
  local ok, rl = pcall(require, "pgstore.readline")
  if ok and rl.isatty(0) and rl.isatty(1) then return rl end
  return nil
end

function _M.main(host, args)
  local table_name
  local i = 1
  while args[i] do
    local v = args[i]:match("^%-%-table=(.*)$")
    if v then
      table_name = v
    elseif args[i] == "--table" and args[i + 1] then
      table_name, i = args[i + 1], i + 1
    else
      return host.usage_error("repl: unexpected argument '" .. args[i] .. "'", _M.usage)
    end
    i = i + 1
  end
  local rl = terminal()
  local db, err = host.connect()
  if not db then return host.fail(err) end
  -- a store named on purpose must exist: a typo does not create one
  local ok, es, eerr = pcall(db.events, db, { table = table_name, migrate = not table_name and host.migrate })
  if table_name and not (ok and es) then
    db:close()
    return host.fail(ok and eerr or es)
  end
  if not ok or not es then
    host.say("es is not available: " .. pretty.error(ok and eerr or es))
    es = nil
  end
  local banner
  if rl then
    local rows = db:query("select current_database() as d, current_user as u")
    local where = rows and rows[1] and (" — %s as %s"):format(rows[1].d, rows[1].u) or ""
    -- the database's and role's names are the server's to choose
    banner = require("pgstore.printable").escape(
      ("pgstore %s%s; db, es and pgstore are ready (:help)"):format(pgstore._VERSION, where))
  end
  local repl = Repl.new{ db = db, es = es, rl = rl, banner = banner }
  local res = { pcall(repl.run, repl) }
  repl:close()
  if not res[1] then error(res[2], 0) end
  return res[2]
end

-- For `pgstore` with no command: is someone at a terminal?
function _M.is_terminal()
  local ok, rl = pcall(require, "pgstore.readline")
  return ok and rl.isatty(0)
end

return _M
