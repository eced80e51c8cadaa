-- SPDX-License-Identifier: MIT
-- `pgstore repl` (also `pgstore` alone on a terminal) — the interactive
-- prompt, with `db` connected, `es` = db:events() and `pgstore` ready (see
-- pgstore.repl). Reading from a pipe, it runs the lines without prompts and
-- exits 1 if any chunk failed.
local pgstore = require "pgstore"
local pretty = require "pgstore.pretty"
local Repl = require "pgstore.repl"

local _M = { usage = "pgstore repl", summary = "interactive Lua prompt with db and es ready" }

-- Line editing needs a terminal on both sides (as Python's REPL does);
-- otherwise lines are read plainly.
local function terminal()
  local ok, rl = pcall(require, "pgstore.readline")
  if ok and rl.isatty(0) and rl.isatty(1) then return rl end
  return nil
end

function _M.main(host, args)
  if args[1] then return host.usage_error("repl: unexpected argument '" .. args[1] .. "'", _M.usage) end
  local rl = terminal()
  local db, err = host.connect()
  if not db then return host.fail(err) end
  local ok, es, eerr = pcall(db.events, db)
  if not ok or not es then
    host.say("es is not available: " .. pretty.error(ok and eerr or es))
    es = nil
  end
  local banner
  if rl then
    local rows = db:query("select current_database() as d, current_user as u")
    local where = rows and rows[1] and (" — %s as %s"):format(rows[1].d, rows[1].u) or ""
    banner = ("pgstore %s%s; db, es and pgstore are ready (:help)"):format(pgstore._VERSION, where)
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
