-- SPDX-License-Identifier: MIT
-- `pgstore parked list|show|retry|discard` — the events projections parked
-- (on_error = "park"): list them, show one with its event and traceback,
-- retry them on the projection's current code (the handler's writes and
-- the row's removal in one transaction), or discard them (pgstore.parked).
local args = require "pgstore.cli.args"
local parked = require "pgstore.parked"
local stores = require "pgstore.cli.stores"

local _M = {
  usage = "pgstore parked list [--projection NAME] | show POSITION --projection NAME"
    .. " | retry POSITION... --projection FILE.lua | discard POSITION...|--all --projection NAME  [--table EVENTS]",
  summary = "list, show, retry or discard parked events",
}

local SPEC = args.options{
  { "--projection", "value", arg = "NAME|FILE.lua",
    help = "the projection: its name, or for retry its file (run on its current code)", default = "every one (list)" },
  { "--all", "flag", help = "discard: every parked event of the projection" },
  { "--limit", args.whole(1, 2 ^ 31), arg = "N", help = "list: at most N rows", default = "1000" },
  { "--table", "value", arg = "EVENTS", help = "retry: the event store the projection reads; list: only that store's",
    default = "events (retry), every store (list)" },
}
_M.help = _M.summary .. "\n\noptions:\n" .. args.describe(SPEC)

local function positions(host, pos)
  local out = {}
  for i = 2, #pos do
    local n, msg = args.number("POSITION", pos[i], args.whole(1, 2 ^ 53))
    if not n then return nil, host.usage_error("parked: " .. msg, _M.usage) end
    out[#out + 1] = n
  end
  return out
end

local actions = {}

function actions.list(host, db, o)
  -- --table: that store's parked events, and a store that is not there is
  -- said so (with the closest name), as every read-only command does
  local store
  if o.table then
    local es, err = stores.open(db, o.table, { notify = false })
    if not es then return host.fail(err) end
    store = es:store()
    es:close()
  end
  local rows, err = parked.list(db, { projection = o.projection, store = store, limit = o.limit })
  if not rows then return host.fail(err) end
  -- fields escaped one by one: the tabs between them are the only ones
  local escape = require("pgstore.printable").escape
  for _, r in ipairs(rows) do
    io.write(table.concat({ escape(r.projection), escape(r.store), r.position, escape(r.stream), escape(r.type),
      r.parked_at, escape((r.error:gsub("\n.*", ""))) }, "\t"), "\n")
  end
  host.say(("%d parked"):format(#rows))
  return 0
end

function actions.show(host, db, o, list)
  if #list ~= 1 then return host.usage_error("parked show: one POSITION", _M.usage) end
  local r, err = parked.show(db, o.projection, list[1])
  if not r then return host.fail(err) end
  for _, k in ipairs{ "projection", "store", "position", "stream", "type", "parked_at", "error" } do
    host.print(("%-10s %s"):format(k, tostring(r[k])))
  end
  host.print("event      " .. r.event)
  if r.traceback then host.print("traceback  " .. r.traceback:gsub("\n", "\n           ")) end
  return 0
end

function actions.discard(host, db, o, list)
  if (#list == 0) == (o.all == nil) then
    return host.usage_error("parked discard: give POSITIONs or --all", _M.usage)
  end
  local total, rc = 0, 0
  for _, p in ipairs(#list > 0 and list or { false }) do
    local n, err = parked.discard(db, o.projection, p or nil)
    if not n then return host.fail(err) end
    -- a position that was not parked is a mistake to tell, as show tells it
    if p and n == 0 then rc = host.fail(("no parked event of %s at position %d"):format(o.projection, p)) end
    total = total + n
  end
  host.say(("discarded %d"):format(total))
  return rc
end

function actions.retry(host, db, o, list)
  if #list == 0 then return host.usage_error("parked retry: give POSITIONs", _M.usage) end
  local def, err = require("pgstore.projection").load(o.projection, host.unsafe_scripts)
  if not def then return host.fail(err) end
  local es
  es, err = stores.open(db, o.table)
  if not es then return host.fail(err) end
  local rc = 0
  for _, p in ipairs(list) do
    local ok, rerr = parked.retry(db, es, def, p)
    if ok then host.say(("%s: position %d applied and removed"):format(def.name, p))
    else rc = host.fail(rerr) end
  end
  es:close()
  return rc
end

function _M.main(host, argv)
  local o, pos = args.parse(argv, SPEC)
  if not o then return host.usage_error("parked: " .. pos, _M.usage) end
  local action = actions[pos[1] or ""]
  if not action then
    return host.usage_error(("parked: expected list, show, retry or discard%s"):format(
      pos[1] and require("pgstore.cli.suggest").hint(pos[1], { "list", "show", "retry", "discard" }) or ""), _M.usage)
  end
  if pos[1] ~= "list" and not o.projection then
    return host.usage_error("parked " .. pos[1] .. ": --projection is required", _M.usage)
  end
  local list, rc = positions(host, pos)
  if not list then return rc end
  local db, err = host.connect{ pool_size = 2 }
  if not db then return host.fail(err) end
  rc = action(host, db, o, list)
  db:close()
  return rc
end

return _M
