-- SPDX-License-Identifier: MIT
-- `pgstore migrate [--table T]` creates or upgrades the schema of the event
-- store and of every other store's default tables (companions, leases,
-- locks, the dead-letter table, the relay's table), upgrading what older versions made in
-- place. Idempotent, and safe to run from many processes at once (each
-- store migrates under its advisory lock).
local args = require "pgstore.cli.args"
local core = require "pgstore.core"

-- Leases, the lock table, the dead-letter and relay tables have no store object
-- to open here: a stand-in whose migrate() runs theirs.
local function table_only(db, migrate, ...)
  local extra = { ... }
  return { migrate = function() return migrate(db.pool, nil, unpack(extra)) end, close = function() end }
end

local _M = {
  usage = "pgstore migrate [--table EVENTS]",
  summary = "create or upgrade the schema (idempotent)",
}

local SPEC = args.options{
  { "--table", "value", arg = "EVENTS", help = "the event store to create or upgrade", default = "events" },
}
_M.help = _M.summary .. "\n\noptions:\n" .. args.describe(SPEC)

function _M.main(host, argv)
  local o, pos = args.parse(argv, SPEC)
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
    { "leases", function() return table_only(db, core.lease_migrate) end },
    { "locks", function() return table_only(db, core.lock_migrate) end },
    { "parked", function() return table_only(db, core.parked_migrate, true) end },
    { "relay", function() return table_only(db, core.relay_migrate, true) end },
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
