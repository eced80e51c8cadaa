-- SPDX-License-Identifier: MIT
-- pgstore.repl.look — the REPL's commands to look around a database:
-- \stores (event stores in it), \streams [PREFIX] (es:streams), \events
-- STREAM [N] (the newest N), \consumers (checkpoints with their lag),
-- \parked (a projection's dead letters) and :table NAME (which store `es`
-- is). Read-only: a store is opened with migrate = false, so a typo never
-- creates one. Results go through the REPL's printer (a table of rows).
local _M = {}

local STORES_SQL = [[
SELECT n.nspname AS schema, t.relname AS store
  FROM pg_class t JOIN pg_namespace n ON n.oid = t.relnamespace
 WHERE t.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND EXISTS (SELECT 1 FROM pg_class h WHERE h.relnamespace = t.relnamespace
                  AND h.relname = t.relname || '_heads' AND h.relkind IN ('r', 'p'))
   AND EXISTS (SELECT 1 FROM pg_class s WHERE s.relnamespace = t.relnamespace
                  AND s.relname = t.relname || '_position_seq' AND s.relkind = 'S')
 ORDER BY 1, 2]]

local function rows_or_none(self, rows, err)
  if not rows then return self:report(err) end
  if #rows == 0 then return self:say("(0 rows)") end
  self:show(1, rows)
end

local function need_es(self)
  if self.es then return true end
  self:warn("no event store open (:table NAME opens one)")
end

-- a table of pgstore's own (checkpoints, parked) that may not exist yet
local function exists(self, name)
  local rows = self.db:query("SELECT to_regclass($1) IS NOT NULL AS ok", name)
  return rows and rows[1] and rows[1].ok
end

function _M.stores(self)
  local rows, err = self.db:query(STORES_SQL)
  if rows then
    local current = self.es and self.es:store()
    for _, r in ipairs(rows) do
      r.open = (r.schema .. "." .. r.store == current) and "es" or ""
    end
  end
  rows_or_none(self, rows, err)
end

function _M.streams(self, args)
  if not need_es(self) then return end
  local prefix, limit = args:match("^(%S*)%s*(%d*)$")
  if not prefix then return self:warn("usage: \\streams [PREFIX] [LIMIT]") end
  rows_or_none(self, self.es:streams{ prefix = prefix, limit = tonumber(limit) or 50 })
end

function _M.events(self, args)
  if not need_es(self) then return end
  local stream, n = args:match("^(%S+)%s*(%d*)$")
  if not stream then return self:warn("usage: \\events STREAM [N] (the newest N, 20 without)") end
  local evs, err = self.es:read(stream, { backward = true, limit = tonumber(n) or 20, raw = true })
  if not evs then return self:report(err) end
  local rows = {}
  for i, e in ipairs(evs) do
    rows[i] = { version = e.version, position = e.position, type = e.type, time = e.time, data = e.data }
  end
  rows_or_none(self, rows)
end

function _M.consumers(self)
  if not need_es(self) then return end
  if not exists(self, "pgstore_checkpoints") then return self:say("(0 rows)") end
  local latest, err = self.es:latest_position()
  if not latest then return self:report(err) end
  rows_or_none(self, self.db:query([[SELECT consumer, position, $2::bigint - position AS lag, updated_at
    FROM pgstore_checkpoints WHERE store = $1 ORDER BY consumer]], self.es:store(), latest))
end

function _M.parked(self, args)
  if not need_es(self) then return end
  if not exists(self, "pgstore_parked") then return self:say("(0 rows)") end
  rows_or_none(self, self.db:query([[SELECT projection, position, stream, type, error, parked_at
    FROM pgstore_parked WHERE store IN ($1, '') AND ($2 = '' OR projection = $2)
    ORDER BY projection, position LIMIT 100]], self.es:store(), args))
end

-- :table NAME: `es` becomes that store, which must exist
function _M.table(self, args)
  if args == "" then
    return self:say(self.es and self.es:store() or "no event store open")
  end
  local es, err = self.db:events{ table = args, migrate = false }
  if not es then return self:report(err) end
  if self.es then pcall(self.es.close, self.es) end
  self.es, self.env.es = es, es
  self:say("es is " .. es:store())
end

_M.NAMES = { "stores", "streams", "events", "consumers", "parked", "table" }

return _M
