-- SPDX-License-Identifier: MIT
-- `pgstore run FILE.lua [args...]` — runs a script with `pgstore` loaded and a
-- connected `db` global; `arg` holds the script's own arguments. A script
-- that raises, or returns nil plus an error, fails the command (exit 1).
local _M = { usage = "pgstore run FILE.lua [args...]", summary = "run a Lua script with db connected" }

function _M.main(host, args)
  local file = args[1]
  if not file then return host.usage_error("run: no script given", _M.usage) end
  local chunk, lerr = require("pgstore.script").loadfile(file)
  if not chunk then return host.fail(lerr) end
  local db, err = host.connect()
  if not db then return host.fail(err) end
  local env = setmetatable({ db = db, pgstore = require "pgstore" }, { __index = _G })
  env.arg = { [0] = file }
  for i = 2, #args do env.arg[i - 1] = args[i] end
  setfenv(chunk, env)
  local res = { xpcall(function() return chunk(unpack(env.arg)) end, host.error_handler) }
  db:close()
  if not res[1] then return host.fail(res[2]) end
  if res[2] == nil and res[3] ~= nil then return host.fail(res[3]) end
  return 0
end

return _M
