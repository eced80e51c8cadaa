-- SPDX-License-Identifier: MIT
-- pgstore.cli.stores — the event stores a database holds, for the
-- commands that only read: they open a store that exists, and for one that
-- does not they say so with the closest name there is, never creating it.
local suggest = require "pgstore.cli.suggest"

local _M = {}

-- Event stores visible on the search path: tables with a position column
-- and a `<name>_heads` companion. → { name, … } sorted, or nil, err.
function _M.list(db)
  local rows, err = db:query([[
    select c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.relkind in ('r', 'p') and n.nspname = any (current_schemas(false))
       and exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'position'
                      and not a.attisdropped)
       and exists (select 1 from pg_class h where h.relnamespace = c.relnamespace
                      and h.relname = c.relname || '_heads')
     order by 1]])
  if not rows then return nil, err end
  local out = {}
  for _, r in ipairs(rows) do out[#out + 1] = r.name end
  return out
end

-- Whether a relation of that name exists: true | false | nil, err.
function _M.exists(db, name)
  local rows, err = db:query("select to_regclass($1) is not null as ok", name)
  if not rows then return nil, err end
  return rows[1].ok
end

-- "no event store NAME (did you mean OTHER?)" for a store that is not there.
function _M.missing(db, name)
  return ("no event store %s%s"):format(name, suggest.hint(name, _M.list(db) or {}))
end

-- Opens an existing event store without migrations (read-only commands):
-- es | nil, err (a missing store's err names the closest existing one).
function _M.open(db, name, opts)
  name = name or "events"
  local ok, err = _M.exists(db, name)
  if ok == nil then return nil, err end
  if not ok then return nil, _M.missing(db, name) end
  opts = opts or {}
  opts.table, opts.migrate = name, false
  return db:events(opts)
end

return _M
