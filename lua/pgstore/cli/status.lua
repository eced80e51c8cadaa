-- SPDX-License-Identifier: MIT
-- `pgstore status [--table T]`: where the database stands — streams, events
-- and the head position; each consumer's checkpoint and its lag behind its
-- own store's head (every store's consumers); parked events per
-- projection; per partition set, the live workers, who holds each
-- partition until when, and (for partitioned projections) each
-- partition's lag in positions and seconds. Never prints connection
-- secrets: the server says who and where we are.
local args = require "pgstore.cli.args"
local stores = require "pgstore.cli.stores"

local _M = { usage = "pgstore status [--table EVENTS]",
  summary = "streams, positions, consumer lag, lease workers and partition lag" }

local SPEC = args.options{
  { "--table", "value", arg = "EVENTS", help = "the event store; never created here", default = "events" },
}
_M.help = _M.summary .. "\n\noptions:\n" .. args.describe(SPEC)

local function has_column(db, tbl, col)
  local rows = db:query([[select count(*) as n from pg_attribute
    where attrelid = to_regclass($1) and attname = $2 and not attisdropped]], tbl, col)
  return rows and rows[1].n > 0
end

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

-- Seconds since the oldest event past `position` in `store` was written
-- (0 when none is): how far behind a consumer is in time.
local function age_after(db, store, position, clock)
  local es = db:events{ table = store, notify = false, migrate = false }
  if not es then return 0 end
  local evs = es:read_all{ after = position, limit = 1, raw = true }
  es:close()
  local e = evs and evs[1]
  if not e or not e.time then return 0 end
  local t = type(e.time) == "number" and e.time
    or db:query("select extract(epoch from $1::timestamptz)::float8 as t", e.time)[1].t
  return math.max(0, clock - t)
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
  local clock = db:query("select extract(epoch from now())::float8 as t")[1].t
  host.print(("consumers %d (lag: positions behind the head, and the age of the oldest event not done)"):format(#rows))
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
    host.print(("    %-30s at %-10d lag %s %6.1fs %s"):format(r.consumer, r.position, lag,
      current_head and age_after(db, current, r.position, clock) or 0, r.updated_at))
  end
end

-- Checkpoints of partitioned projections by their lease set's name
-- ("projection:<store>:<name>", as pgstore.projection names both):
-- set → partition → { store, position }.
local function partition_checkpoints(db)
  local out = {}
  if not exists(db, "pgstore_checkpoints") or not has_column(db, "pgstore_checkpoints", "store") then return out end
  for _, r in ipairs(db:query([[select store, consumer, position from pgstore_checkpoints
      where consumer like 'projection:%']]) or {}) do
    local name, p = r.consumer:match("^projection:(.+):(%d+)$")
    if name then
      local set = "projection:" .. r.store .. ":" .. name
      out[set] = out[set] or {}
      out[set][tonumber(p)] = { store = r.store, position = r.position }
    end
  end
  return out
end

-- " lag N positions, S.Ss": behind the store's head, and the age of the
-- oldest event past the checkpoint (0 s when caught up).
local function lag_of(db, cp, heads, clock)
  if not cp then return "" end
  local h = heads[cp.store]
  if h == nil then
    local es = db:events{ table = cp.store, notify = false, migrate = false }
    h = { es = es or false, head = es and es:latest_position() }
    heads[cp.store] = h
  end
  if not h.head then return (" checkpoint %d"):format(cp.position) end
  local behind = math.max(0, h.head - cp.position)
  local secs = behind > 0 and age_after(db, cp.store, cp.position, clock) or 0
  return (" checkpoint %d lag %d positions %.1fs"):format(cp.position, behind, secs)
end

-- Parked events (on_error = "park") per projection and store: what
-- `pgstore parked list` would show.
local function print_parked(host, db)
  local rows = require("pgstore.parked").counts(db) or {}
  local total = 0
  for _, r in ipairs(rows) do total = total + r.n end
  host.print(("parked    %d"):format(total))
  for _, r in ipairs(rows) do
    host.print(("    %-30s %-24s %d (pgstore parked list --projection %s)"):format(r.projection,
      r.store == "" and "-" or r.store, r.n, r.projection))
  end
end

local function print_leases(host, db)
  local inst = has_column(db, "pgstore_leases", "instance") and "instance" or "owner"
  local rows = db:query(([[select name, partition, coalesce(owner, '-') as owner, coalesce(%s, '-') as instance,
    token, coalesce(to_char(expires_at, 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), '-') as expires,
    coalesce(expires_at < now(), true) as expired from pgstore_leases order by name, partition]]):format(inst)) or {}
  local members = {}
  if exists(db, "pgstore_leases_members") then
    local minst = has_column(db, "pgstore_leases_members", "instance") and "instance" or "owner"
    for _, m in ipairs(db:query(([[select name, owner, %s as instance,
        extract(epoch from expires_at - now())::float8 as left from pgstore_leases_members
        where expires_at > now() order by name, owner, 3]]):format(minst)) or {}) do
      members[m.name] = members[m.name] or {}
      table.insert(members[m.name], m)
    end
  end
  local clock = db:query("select extract(epoch from now())::float8 as t")[1].t
  local cps, heads = partition_checkpoints(db), {}
  host.print(("leases    %d"):format(#rows))
  local current
  for _, r in ipairs(rows) do
    if r.name ~= current then
      current = r.name
      local live = members[current] or {}
      host.print(("  set %s: workers %d live"):format(current, #live))
      for _, m in ipairs(live) do
        host.print(("    worker %s (instance %s), membership expires in %.1fs"):format(m.owner, m.instance, m.left))
      end
    end
    local cp = cps[r.name] and cps[r.name][r.partition]
    host.print(("    p%-3d %-28s token %-6d %s%s%s"):format(r.partition,
      r.owner == "-" and "-" or ("%s (%s)"):format(r.owner, r.instance), r.token, r.expires,
      r.expired and " (expired)" or "", lag_of(db, cp, heads, clock)))
  end
  for _, h in pairs(heads) do if h.es then h.es:close() end end
end

-- The store's streams, events and head: true | nil, err (no such store).
local function print_store(host, db, table_name)
  local es, err = stores.open(db, table_name, { notify = false })
  if not es then return nil, err end
  local head = es:latest_position() or 0
  es:close()
  local counts = db:query(([[select (select count(*) from %s) as streams,
    (select count(*) from %s where status = 'archived') as archived,
    (select count(*) from %s where status = 'tombstoned') as tombstoned,
    (select count(*) from %s) as events]]):format(table_name .. "_heads", table_name .. "_heads",
      table_name .. "_heads", table_name))[1]
  host.print(("streams   %d (%d archived, %d tombstoned)"):format(counts.streams, counts.archived, counts.tombstoned))
  host.print(("events    %d, head position %d"):format(counts.events, head))
  return true
end

function _M.main(host, argv)
  local o, pos = args.parse(argv, SPEC)
  if not o then return host.usage_error("status: " .. pos, _M.usage) end
  if #pos > 0 then return host.usage_error("status: no arguments expected", _M.usage) end
  local db, err = host.connect{ pool_size = 1 }
  if not db then return host.fail(err) end
  local table_name = o.table or "events"
  local who
  who, err = db:query([[select current_user as u, current_database() as d,
    coalesce(inet_server_addr()::text, 'local socket') as h, current_setting('server_version') as v]])
  if not who then db:close(); return host.fail(err) end
  who = who[1]
  host.print(("database  %s as %s on %s (PostgreSQL %s)"):format(who.d, who.u, who.h, who.v))
  -- the default store not made yet is a fresh database (other stores'
  -- consumers are still shown); a named one that is not there is a typo
  if not o.table and not exists(db, table_name) then
    host.print(("events    no table %s yet (run `pgstore migrate`)"):format(table_name))
  else
    local ok
    ok, err = print_store(host, db, table_name)
    if not ok then db:close(); return host.fail(err) end
  end
  if exists(db, "pgstore_checkpoints") then
    print_consumers(host, db)
  end
  if exists(db, "pgstore_parked") then print_parked(host, db) end
  if exists(db, "pgstore_leases") then print_leases(host, db) end
  db:close()
  return 0
end

return _M
