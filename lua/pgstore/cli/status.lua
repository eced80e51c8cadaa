-- SPDX-License-Identifier: MIT
-- `pgstore status [--table T]`: where the database stands — streams, events
-- and the head position; each consumer's checkpoint and its lag behind its
-- own store's head; each lease's owner and expiry. Never prints connection
-- secrets: the server says who and where we are.
local args = require "pgstore.cli.args"

local _M = { usage = "pgstore status [--table EVENTS]", summary = "streams, positions, consumer lag, leases" }

local function exists(db, name)
  local rows = db:query("select to_regclass($1) is not null as ok", name)
  return rows and rows[1].ok
end

-- The head position of the event store `name` (resolved), or nil and why.
local function head_of(db, name)
  local es, err = db:events{ table = name, notify = false, migrate = false }
  if not es then return nil, err end
  local head
  head, err = es:latest_position()
  es:close()
  return head, err
end

-- Each consumer's checkpoint, by store, and its lag behind the head of
-- its own store. Before `pgstore migrate` gave the table its store
-- column, every checkpoint is the default event store's.
local function print_consumers(host, db)
  local has_store = db:query([[select count(*) as n from pg_attribute
    where attrelid = to_regclass('pgstore_checkpoints') and attname = 'store' and not attisdropped]])
  local store = has_store and has_store[1].n > 0 and "store" or "current_schema() || '.events'"
  local rows = db:query(("select %s as store, consumer, position, updated_at from pgstore_checkpoints"
    .. " order by 1, 2"):format(store)) or {}
  host.print(("consumers %d"):format(#rows))
  local current, current_head
  for _, r in ipairs(rows) do
    if r.store ~= current then
      current = r.store
      local head, err = head_of(db, current)
      current_head = head
      host.print(head and ("  store %s, head position %d"):format(current, head)
        or ("  store %s: %s"):format(current, err and err.code == "not_found" and "no such event store"
          or tostring(err)))
    end
    local lag = current_head and ("%-8d"):format(math.max(0, current_head - r.position)) or "?       "
    host.print(("    %-30s at %-10d lag %s %s"):format(r.consumer, r.position, lag, r.updated_at))
  end
end

function _M.main(host, argv)
  local o, pos = args.parse(argv, { ["--table"] = "value" })
  if not o then return host.usage_error("status: " .. pos, _M.usage) end
  if #pos > 0 then return host.usage_error("status: no arguments expected", _M.usage) end
  local db, err = host.connect{ pool_size = 1 }
  if not db then return host.fail(err) end
  local table_name = o.table or "events"
  local who = db:query([[select current_user as u, current_database() as d,
    coalesce(inet_server_addr()::text, 'local socket') as h, current_setting('server_version') as v]])
  if not who then db:close(); return host.fail("cannot query the server") end
  who = who[1]
  host.print(("database  %s as %s on %s (PostgreSQL %s)"):format(who.d, who.u, who.h, who.v))
  if not exists(db, table_name) then
    host.print(("events    no table %s yet (run `pgstore migrate`)"):format(table_name))
    db:close()
    return 0
  end
  local es
  es, err = db:events{ table = o.table, notify = false, migrate = false }
  if not es then db:close(); return host.fail(err) end
  local head = es:latest_position() or 0
  local counts = db:query(([[select (select count(*) from %s) as streams,
    (select count(*) from %s where status = 'archived') as archived,
    (select count(*) from %s where status = 'tombstoned') as tombstoned,
    (select count(*) from %s) as events]]):format(table_name .. "_heads", table_name .. "_heads",
      table_name .. "_heads", table_name))[1]
  host.print(("streams   %d (%d archived, %d tombstoned)"):format(counts.streams, counts.archived, counts.tombstoned))
  host.print(("events    %d, head position %d"):format(counts.events, head))
  if exists(db, "pgstore_checkpoints") then
    print_consumers(host, db)
  end
  if exists(db, "pgstore_leases") then
    local rows = db:query([[select name, partition, coalesce(owner, '-') as owner, token,
      coalesce(to_char(expires_at, 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), '-') as expires,
      coalesce(expires_at < now(), true) as expired from pgstore_leases order by name, partition]])
    host.print(("leases    %d"):format(#rows))
    for _, r in ipairs(rows) do
      host.print(("  %-28s p%-3d %-28s token %-6d %s%s"):format(r.name, r.partition, r.owner, r.token,
        r.expires, r.expired and " (expired)" or ""))
    end
  end
  es:close()
  db:close()
  return 0
end

return _M
