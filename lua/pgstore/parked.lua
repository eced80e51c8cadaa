-- SPDX-License-Identifier: MIT
-- pgstore.parked — the events projections parked (on_error = "park", in
-- the dead-letter table pgstore_parked): list them, show one, discard
-- them, or retry one on the projection's current code, the handler's
-- writes and the parked row's removal in one transaction.
local errors = require "pgstore.errors"
local script = require "pgstore.script"

local _M = {}

local COLUMNS = [[store, projection, position, stream, type, error,
  to_char(parked_at, 'YYYY-MM-DD"T"HH24:MI:SS"Z"') as parked_at]]

local function exists(db)
  local rows, err = db:query("select to_regclass('pgstore_parked') is not null as ok")
  if not rows then return nil, err end
  return rows[1].ok
end

-- _M.list(db, { projection = P, store = S, limit = N }) → rows | nil, err
-- Each row: store, projection, position, stream, type, error, parked_at
-- (oldest position first). None when the table was never made.
function _M.list(db, opts)
  opts = opts or {}
  local ok, err = exists(db)
  if not ok then return ok == false and {} or nil, err end
  return db:query(("select %s from pgstore_parked where ($1::text is null or projection = $1)"
    .. " and ($2::text is null or store = $2) order by store, projection, position limit $3"):format(COLUMNS),
    opts.projection, opts.store, opts.limit or 1000)
end

-- _M.counts(db) → { { store, projection, n }, … } | nil, err
function _M.counts(db)
  local ok, err = exists(db)
  if not ok then return ok == false and {} or nil, err end
  return db:query("select store, projection, count(*) as n from pgstore_parked group by 1, 2 order by 1, 2")
end

-- _M.show(db, projection, position[, store]) → row (as list's, plus event
-- (JSON text) and traceback) | nil, err (not_found)
function _M.show(db, projection, position, store)
  local ok, err = exists(db)
  if ok == nil then return nil, err end
  local rows = ok and db:query(("select %s, event::text as event, traceback from pgstore_parked"
    .. " where projection = $1 and position = $2 and ($3::text is null or store = $3)"):format(COLUMNS),
    projection, position, store)
  if not rows or not rows[1] then
    return nil, errors.new("not_found", ("no parked event of %s at position %d"):format(projection, position))
  end
  return rows[1]
end

-- _M.discard(db, projection[, position[, store]]) → number discarded | nil, err
-- Without a position, every parked event of the projection.
function _M.discard(db, projection, position, store)
  local ok, err = exists(db)
  if not ok then return ok == false and 0 or nil, err end
  local rows
  rows, err = db:query([[with d as (delete from pgstore_parked where projection = $1
      and ($2::bigint is null or position = $2) and ($3::text is null or store = $3) returning 1)
    select count(*) as n from d]], projection, position, store)
  if not rows then return nil, err end
  return rows[1].n
end

-- _M.retry(db, es, def, position) → true | nil, err
-- Runs def's handler (the projection as loaded now: pgstore.projection.load)
-- on the event es holds at position, upcast as es upcasts, and removes it
-- from the parked table, in one transaction: a handler that fails again
-- changes nothing (err names the script's line and the event).
function _M.retry(db, es, def, position)
  local store = es:store()
  local res, err = db:transaction(function(tx)
    local row, qerr = tx:query([[select 1 from pgstore_parked where projection = $1 and position = $2
      and store in ($3, '') for update]], def.name, position, store)
    if not row then return nil, qerr end
    if not row[1] then
      return nil, errors.new("not_found", ("no parked event of %s at position %d"):format(def.name, position))
    end
    local rows, rerr = es:read_all{ after = position - 1, limit = 1 }
    if not rows then return nil, rerr end
    local e = rows[1]
    if not e or e.position ~= position then
      return nil, errors.new("not_found", ("position %d is no longer in %s"):format(position, store))
    end
    local fn = def.handlers[e.type]
    if fn then
      local ok, msg = script.call(fn, e, require("pgstore.projection").handler_tx(tx))
      if not ok then
        return nil, errors.new("invalid", ("%s (event %s at position %d, stream %s)")
          :format(msg, e.type, e.position, e.stream))
      end
    end
    return tx:exec([[delete from pgstore_parked where projection = $1 and position = $2
      and store in ($3, '')]], def.name, position, store)
  end)
  if not res then return nil, err end
  return true
end

return _M
