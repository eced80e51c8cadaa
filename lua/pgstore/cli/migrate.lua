-- SPDX-License-Identifier: MIT
-- `pgstore migrate [--table T]` creates or upgrades the schema of the event
-- store and the companion stores' default tables. Idempotent, and safe to
-- run from many processes at once (each migration holds an advisory lock).
local args = require "pgstore.cli.args"

local _M = {
  usage = "pgstore migrate [--table EVENTS]",
  summary = "create or upgrade the schema (idempotent)",
}

function _M.main(host, argv)
  local o, pos = args.parse(argv, { ["--table"] = "value" })
  if not o then return host.usage_error("migrate: " .. pos, _M.usage) end
  if #pos > 0 then return host.usage_error("migrate: no arguments expected", _M.usage) end
  local db, err = host.connect{ pool_size = 1 }
  if not db then return host.fail(err) end
  local steps = {
    { "events", function() return db:events{ table = o.table, notify = false } end },
    { "checkpoints", function() return db:checkpoints() end },
    { "snapshots", function() return db:snapshots() end },
    { "sessions", function() return db:sessions() end },
    { "exec_checkpoints", function() return db:exec_checkpoints() end },
    { "kv", function() return db:kv{ cleanup_interval = 0 } end },
  }
  for _, step in ipairs(steps) do
    local store, serr = step[2]()
    if not store then
      db:close()
      return host.fail(("%s: %s"):format(step[1], tostring(serr)))
    end
    if store.migrate then
      local ok, merr = store:migrate()
      if not ok then
        store:close()
        db:close()
        return host.fail(("%s: %s"):format(step[1], tostring(merr)))
      end
    end
    store:close()
    print(step[1] .. ": ok")
  end
  db:close()
  return 0
end

return _M
