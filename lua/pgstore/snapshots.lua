-- SPDX-License-Identifier: MIT
-- pgstore.snapshots — the latest snapshot of each stream: its state (any
-- JSON value), the stream version it reflects, the schema version of its
-- shape and when it was taken. Saving an older version than the stored
-- one keeps the newer snapshot. SQL and table in core/snapshots.c.
--
--   local ss = db:snapshots{ table = "pgstore_snapshots" }
--   ss:save(stream, version, state, { schema_version = 2 })
--   local snap = ss:load(stream)   -- { stream, version, state, schema_version, time } | nil
local core = require "pgstore.core"
local C = require "pgstore.companion"
local errors = require "pgstore.errors"

local _M = { _VERSION = core._VERSION }
local mt = { __index = _M, __name = "pgstore.snapshots" }
mt.__tostring = C.tostring

local OPTIONS = { table = "string", skip_schema_init = "boolean", max_value_size = "number" }
local SAVE_OPTIONS = { schema_version = "number" }

-- db:snapshots(opts) → ss | nil, err
-- opts: table ("pgstore_snapshots"), skip_schema_init (false),
-- max_value_size (bytes of state JSON, 1 MiB)
function _M.new(db, opts)
  opts = C.options(opts, OPTIONS, 1, "snapshots")
  local bad = C.size(opts.max_value_size, "max_value_size") or errors.nul(opts, "table")
  if bad then return nil, bad end
  local ud, err = core.snapshots(db.pool, opts)
  if not ud then return nil, err end
  return C.store(mt, db, ud)
end

-- ss:migrate() → true | nil, err: creates the table when missing.
function _M:migrate()
  C.check(self, mt, "migrate")
  return self.core:migrate()
end

-- ss:save(stream, version, state [, { schema_version = 1, tx = tx }])
-- → true, written | nil, err. written is false when a newer snapshot
-- was already stored (and kept); an equal version is overwritten.
function _M:save(stream, version, state, opts)
  C.check(self, mt, "save")
  C.arg(stream, 1, "save", "string")
  C.arg(version, 2, "save", "number")
  C.arg(state, 3, "save", "table|string|number|boolean|userdata")
  local o, conn, tx = C.call_opts(opts, SAVE_OPTIONS, 4, "save")
  local ok, err = C.count(version, "version")
  if not ok then return nil, err end
  local schema_version = o.schema_version or 1
  ok, err = C.count(schema_version, "schema_version")
  if not ok then return nil, err end
  if schema_version > 2147483647 then
    return nil, errors.new("invalid", "schema_version must be at most 2147483647")
  end
  local json
  json, err = C.encode(state, "state")
  if not json then return nil, err end
  return C.note(tx, self.core:save(stream, version, json, schema_version, conn))
end

-- ss:load(stream [, { tx = tx }]) → { stream, version, state,
-- schema_version, time } | nil (no snapshot) | nil, err
function _M:load(stream, opts)
  C.check(self, mt, "load")
  C.arg(stream, 1, "load", "string")
  local _, conn, tx = C.call_opts(opts, nil, 2, "load")
  local row, err = C.note(tx, self.core:load(stream, conn))
  if not row then return nil, err end
  local state
  state, err = C.decode(row.state, "state")
  if state == nil then return nil, err end
  row.state = state
  return row
end

-- ss:invalidate(stream [, { tx = tx }]) → true | nil, err (absent: true)
function _M:invalidate(stream, opts)
  C.check(self, mt, "invalidate")
  C.arg(stream, 1, "invalidate", "string")
  local _, conn, tx = C.call_opts(opts, nil, 2, "invalidate")
  local n, err = C.note(tx, self.core:invalidate(stream, conn))
  if not n then return nil, err end
  return true
end

-- ss:invalidate_all([{ tx = tx }]) → number removed | nil, err
function _M:invalidate_all(opts)
  C.check(self, mt, "invalidate_all")
  local _, conn, tx = C.call_opts(opts, nil, 1, "invalidate_all")
  return C.note(tx, self.core:invalidate_all(conn))
end

-- ss:close(): releases the store; closes the db too when the store owns it
-- (pgstore.open_snapshots). Closing twice is harmless.
function _M:close()
  C.close(self, mt)
end

return _M
