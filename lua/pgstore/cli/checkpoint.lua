-- SPDX-License-Identifier: MIT
-- `pgstore checkpoint list|set|reset|skip` — where each consumer of an
-- event store stands, moved by hand: set a projection's checkpoint to a
-- position, reset it to the start, or step past one known-bad event (for
-- on_error = "stop"), recording that event in the parked table. Refuses
-- while a worker holds one of the projection's partition leases, unless
-- --force (a running unpartitioned runner finds its checkpoint moved and
-- goes on from the new one).
local args = require "pgstore.cli.args"
local stores = require "pgstore.cli.stores"
local suggest = require "pgstore.cli.suggest"

local _M = {
  usage = "pgstore checkpoint list | set NAME POSITION | reset NAME | skip NAME POSITION  [--table EVENTS] [--force]",
  summary = "list, set, reset checkpoints; step past one bad event",
}

local SPEC = args.options{
  { "--table", "value", arg = "EVENTS", help = "the event store the consumers read", default = "events" },
  { "--force", "flag", help = "even while a worker holds the projection's lease, when skip passes other events,"
    .. " set goes past the head, or NAME has no checkpoint yet" },
}
_M.help = _M.summary .. [[


NAME is a projection's name (every partition of a partitioned one) or a
consumer's; one without a checkpoint yet is refused unless --force (then
taken as unpartitioned).
set: the checkpoint is the last position done, the next event handled is
the one after it; past the store's head only with --force. reset: from the start. skip: the checkpoint
must stand just before POSITION (no event between); it moves to POSITION
and the event is recorded in pgstore_parked ("pgstore parked list").

options:
]] .. args.describe(SPEC)

-- The consumers NAME stands for: its own, or a projection's.
local function consumers_of(list, name)
  local out = {}
  local mine = "projection:" .. name
  for _, c in ipairs(list) do
    if c.consumer == name or c.consumer == mine or c.consumer:match("^" .. mine:gsub("%p", "%%%0") .. ":%d+$") then
      out[#out + 1] = c
    end
  end
  return out
end

-- The names a user may give: projections' and other consumers'.
local function names(list)
  local out, seen = {}, {}
  for _, c in ipairs(list) do
    local n = c.consumer:match("^projection:(.-):%d+$") or c.consumer:match("^projection:(.+)$") or c.consumer
    if not seen[n] then seen[n], out[#out + 1] = true, n end
  end
  return out
end

-- A worker holding one of the projection's partitions: "owner until T" | nil.
local function holder(db, store, name)
  local ok = stores.exists(db, "pgstore_leases")
  if not ok then return nil end
  local rows = db:query([[select owner, to_char(expires_at, 'HH24:MI:SS') as until from pgstore_leases
    where name = $1 and owner is not null and expires_at > now() limit 1]],
    ("projection:%s:%s"):format(store, name))
  return rows and rows[1] and ("%s (lease until %s)"):format(rows[1].owner, rows[1]["until"])
end

local function list(host, cp, head)
  local rows, err = cp:list()
  if not rows then return host.fail(err) end
  io.write(("%-40s %10s %10s  %s\n"):format("consumer", "position", "lag", "updated"))
  for _, c in ipairs(rows) do
    io.write(("%-40s %10d %10d  %s\n"):format(require("pgstore.printable").escape(c.consumer), c.cursor,
      math.max(0, head - c.cursor), tostring(c.time)))
  end
  return 0
end

-- Steps past the event at position: its checkpoint must be just before it.
local function skip(host, db, es, cp, c, position, force)
  local between = db:query(("select count(*) as n from %s where position > $1 and position < $2")
    :format(es:store()), c.cursor or 0, position)[1].n
  if between > 0 and not force then
    return host.fail(("%s is at %d: %d events before %d would be skipped too (--force)")
      :format(c.consumer, c.cursor or 0, between, position))
  end
  local rows, err = es:read_all{ after = position - 1, limit = 1, raw = true }
  if not rows then return host.fail(err) end
  local e = rows[1]
  if not e or e.position ~= position then return host.fail(("no event at position %d"):format(position)) end
  local ok
  ok, err = require("pgstore.core").parked_migrate(db.pool, nil, host.migrate)
  if not ok then return host.fail(err) end
  local name = c.consumer:match("^projection:(.-):%d+$") or c.consumer:match("^projection:(.+)$") or c.consumer
  ok, err = db:transaction(function(tx)
    local saved, serr = cp:save(c.consumer, position, { tx = tx, expected = c.cursor or false })
    if not saved then return nil, serr end
    return tx:exec([[insert into pgstore_parked (store, projection, position, stream, type, event, error)
      values ($1, $2, $3, $4, $5, jsonb_build_object('id', $6::text, 'stream', $4::text, 'type', $5::text,
        'position', $3::bigint, 'version', $7::bigint, 'data', $8::jsonb), $9)
      on conflict (store, projection, position) do update set error = excluded.error, parked_at = now()]],
      es:store(), name, position, e.stream, e.type, tostring(e.id), e.version, e.data,
      "stepped past by hand (pgstore checkpoint skip)")
  end)
  if not ok then return host.fail(err) end
  host.say(("%s: stepped past %s at position %d (recorded in pgstore_parked)"):format(c.consumer, e.type, position))
  return 0
end

function _M.main(host, argv)
  local o, pos = args.parse(argv, SPEC)
  if not o then return host.usage_error("checkpoint: " .. pos, _M.usage) end
  local action, name = pos[1], pos[2]
  local want = ({ list = 1, set = 3, reset = 2, skip = 3 })[action or ""]
  if not want then
    return host.usage_error("checkpoint: expected list, set, reset or skip" .. (action and
      require("pgstore.cli.suggest").hint(action, { "list", "set", "reset", "skip" }) or ""), _M.usage)
  end
  if #pos ~= want then return host.usage_error("checkpoint " .. action .. ": wrong arguments", _M.usage) end
  local position
  if want == 3 then
    local msg
    position, msg = args.number("POSITION", pos[3], args.whole(0, 2 ^ 53))
    if not position then return host.usage_error("checkpoint: " .. msg, _M.usage) end
  end
  local db, err = host.connect{ pool_size = 2 }
  if not db then return host.fail(err) end
  local es, cp
  es, err = stores.open(db, o.table, { notify = false })
  if es then cp, err = db:checkpoints{ store = es, skip_schema_init = not host.migrate } end
  local function done(rc)
    if cp then cp:close() end
    if es then es:close() end
    db:close()
    return rc
  end
  if not cp then return done(host.fail(err)) end
  local head = es:latest_position() or 0
  if action == "list" then return done(list(host, cp, head)) end
  local all
  all, err = cp:list()
  if not all then return done(host.fail(err)) end
  local targets = consumers_of(all, name)
  -- A stopped projection has its checkpoint (the runner commits up to the
  -- failing event), so a name without one is most likely a typo: making
  -- its first takes --force.
  if #targets == 0 and action ~= "reset" and o.force then targets = { { consumer = "projection:" .. name } } end
  if #targets == 0 then
    return done(host.fail(("no checkpoint %s in %s%s"):format(name, es:store(), suggest.hint(name, names(all)))))
  end
  -- past the head, every event still to come would be skipped unseen
  if action == "set" and position > head and not o.force then
    return done(host.fail(("%d is past the head of %s (%d); --force to set it anyway")
      :format(position, es:store(), head)))
  end
  local busy = holder(db, es:store(), name)
  if busy and not o.force then
    return done(host.fail(("%s is running: %s holds its lease; stop it first or use --force"):format(name, busy)))
  end
  if action == "skip" then
    if #targets > 1 then return done(host.fail("skip: give one partition's consumer, e.g. " .. targets[1].consumer)) end
    return done(skip(host, db, es, cp, targets[1], position, o.force))
  end
  for _, c in ipairs(targets) do
    local ok
    if action == "reset" then ok, err = cp:delete(c.consumer) else ok, err = cp:save(c.consumer, position) end
    if not ok then return done(host.fail(err)) end
    host.say(("%s: %s"):format(c.consumer, action == "reset" and "reset to the start"
      or ("set to %d"):format(position)))
  end
  return done(0)
end

return _M
