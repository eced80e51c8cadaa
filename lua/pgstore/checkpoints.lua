-- SPDX-License-Identifier: MIT
-- pgstore.checkpoints — consumer checkpoints: the last processed global
-- position (cursor) of each consumer of one event store. A handle serves
-- one store (`store`, the event table as db:events names it, or the event
-- store itself; default "events"), resolved like the event store resolves
-- its table, so each (store, consumer) has its own checkpoint. Saving inside the caller's
-- transaction commits the checkpoint together with the read-model writes,
-- which is what makes a projection exactly-once. SQL in core/checkpoints.c;
-- new, migrate and close come from pgstore.companion.
--
--   local cp = db:checkpoints{ table = "pgstore_checkpoints", store = es }
--   local cursor = cp:load("orders") or 0
--   db:transaction(function(tx) …; return cp:save("orders", pos, { tx = tx }) end)
--   cp:save("orders", pos, { expected = cursor })   -- conflict if moved meanwhile
local core = require "pgstore.core"
local C = require "pgstore.companion"

local errors = require "pgstore.errors"

-- debug.getmetatable: handles hide their metatables from getmetatable (__metatable)
local type, pairs, getmetatable = type, pairs, debug.getmetatable
local null = core.null

-- db:checkpoints(opts) → cp | nil, err
-- opts: table ("pgstore_checkpoints"), skip_schema_init (false),
--       store ("events": an event table's name, or the event store)
local _M, mt = C.class("checkpoints", { table = "string", skip_schema_init = "boolean",
                                        store = "string|table" })

-- The store a name or an event store stands for: an event store's own
-- table as it resolved it when it opened (so a table of the same name
-- created later on the search_path changes nothing), else the name as
-- given; a misuse raises.
local function store_name(store, n, fname)
  if type(store) == "table" then
    if type(store.table_name) ~= "string" then
      C.bad(n, fname, "option 'store' must be an event table's name or an event store (db:events())")
    end
    if type(store.store) == "function" then return store:store() end
    return store.table_name
  end
  return store
end
_M.store_name = store_name

local class_new = _M.new
function _M.new(db, opts)
  local o = {}
  if type(opts) == "table" then
    for k, v in pairs(opts) do o[k] = v end
    o.store = store_name(o.store, 1, "checkpoints")
  else
    o = opts
  end
  local bad = type(o) == "table" and errors.nul(o, "store")
  if bad then return nil, bad end
  local cp, err = class_new(db, o)
  if not cp then return nil, err end
  cp.opts = { table = o and o.table, skip_schema_init = o and o.skip_schema_init,
              store = o and o.store or "events" }
  return cp
end

-- cp:store() → "schema.table": the event store this handle serves, resolved
function _M:store()
  C.check(self, mt, "store")
  return self.core:store()
end

-- for_store(cp, store) → a handle on cp's table for the event store
-- `store` (a name or the event store), and whether the caller owns it
-- (must close it) | nil, err. cp itself when it serves that spelling.
-- A checkpoint object of the caller's own making is used as it is.
function _M.for_store(cp, store)
  local name = store_name(store, 1, "checkpoints") or "events"
  if getmetatable(cp) ~= mt or cp.opts.store == name then return cp, false end
  local other, err = _M.new(cp.db, { table = cp.opts.table, skip_schema_init = true, store = name })
  if not other then return nil, err end
  return other, true
end

local SAVE_OPTIONS = { expected = "number|boolean|userdata" }

-- cp:load(consumer [, { tx = tx }]) → cursor | nil (new consumer) | nil, err
_M.load = C.keyed(mt, "load")

-- cp:save(consumer, cursor [, { tx = tx, expected = n | false }]) → true | nil, err
-- expected = n: only if the stored cursor is n; expected = false (or
-- pgstore.null): only if none is stored yet. Otherwise err.code is
-- "conflict" with err.expected and err.actual (false: no checkpoint).
function _M:save(consumer, cursor, opts)
  C.check(self, mt, "save")
  C.arg(consumer, 1, "save", "string")
  C.arg(cursor, 2, "save", "number")
  local o, conn, tx = C.call_opts(opts, SAVE_OPTIONS, 3, "save")
  local expected = o.expected
  if expected == null then expected = false end
  if expected == true or type(expected) == "userdata" then
    C.bad(3, "save", "option 'expected' must be a number, false or pgstore.null")
  end
  local ok, err = C.count(cursor, "cursor")
  if not ok then return nil, err end
  if type(expected) == "number" then
    ok, err = C.count(expected, "expected cursor")
    if not ok then return nil, err end
  end
  local res, serr = self.core:save(consumer, cursor, expected, conn)
  -- the core's -1 on a side of a conflict is "no checkpoint": false, as in opts.expected
  if serr and serr.code == "conflict" then
    if serr.expected == -1 then serr.expected = false end
    if serr.actual == -1 then serr.actual = false end
  end
  return C.note(tx, res, serr)
end

-- cp:delete(consumer [, { tx = tx }]) → true | nil, err (absent: true)
_M.delete = C.keyed(mt, "delete", true)

-- cp:list([{ tx = tx }]) → { { consumer, cursor, time, store }, … } of this
-- handle's store, by consumer | nil, err
_M.list = C.whole(mt, "list")

return _M
