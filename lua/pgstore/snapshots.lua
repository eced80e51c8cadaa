-- SPDX-License-Identifier: MIT
-- pgstore.snapshots — the latest snapshot of each stream: its state (any
-- JSON value), the stream version it reflects, the schema version of its
-- shape and when it was taken. Saving an older version than the stored
-- one keeps the newer snapshot. SQL and table in core/snapshots.c; new,
-- migrate and close come from pgstore.companion.
--
--   local ss = db:snapshots{ table = "pgstore_snapshots" }
--   ss:save(stream, version, state, { schema_version = 2 })
--   local snap = ss:load(stream)   -- { stream, version, state, schema_version, time } | nil
local C = require "pgstore.companion"
local errors = require "pgstore.errors"

-- db:snapshots(opts) → ss | nil, err
-- opts: table ("pgstore_snapshots"), skip_schema_init (false),
-- max_value_size (bytes of state JSON, 1 MiB)
local _M, mt = C.class("snapshots",
  { table = "string", skip_schema_init = "boolean", max_value_size = "number" })

local SAVE_OPTIONS = { schema_version = "number" }

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
local load_row = C.keyed(mt, "load")
function _M:load(stream, opts)
  local row, err = load_row(self, stream, opts)
  if not row then return nil, err end
  local state
  state, err = C.decode(row.state, "state")
  if state == nil then return nil, err end
  row.state = state
  return row
end

-- ss:invalidate(stream [, { tx = tx }]) → true | nil, err (absent: true)
_M.invalidate = C.keyed(mt, "invalidate", true)

-- ss:invalidate_all([{ tx = tx }]) → number removed | nil, err
_M.invalidate_all = C.whole(mt, "invalidate_all")

return _M
