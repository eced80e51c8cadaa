-- SPDX-License-Identifier: MIT
-- pgstore.exec_checkpoints — execution checkpoints: one row per execution
-- id holding its latest checkpoint (a table, stored as JSONB). Saves are
-- upserts: any number of processes saving the same id at once leave one
-- row with one of their checkpoints, and none fails. SQL in
-- core/exec_checkpoints.c; new, migrate and close come from
-- pgstore.companion.
--
--   local xs = db:exec_checkpoints{ table = "pgstore_exec_checkpoints" }
--   xs:save(exec_id, { step = 3, vars = { … } })
--   local cp, err = xs:load(exec_id)   -- err.code == "not_found" when none
local C = require "pgstore.companion"

-- db:exec_checkpoints(opts) → xs | nil, err
-- opts: table ("pgstore_exec_checkpoints"), skip_schema_init (false),
-- max_value_size (bytes of checkpoint JSON, 1 MiB)
local _M, mt = C.class("exec_checkpoints",
  { table = "string", skip_schema_init = "boolean", max_value_size = "number" })

-- xs:save(exec_id, checkpoint [, { tx = tx }]) → true | nil, err
function _M:save(exec_id, checkpoint, opts)
  C.check(self, mt, "save")
  C.arg(exec_id, 1, "save", "string")
  C.arg(checkpoint, 2, "save", "table")
  local _, conn, tx = C.call_opts(opts, nil, 3, "save")
  local json, err = C.encode(checkpoint, "checkpoint")
  if not json then return nil, err end
  return C.note(tx, self.core:save(exec_id, json, conn))
end

-- xs:load(exec_id [, { tx = tx }]) → checkpoint | nil, err (code "not_found")
local load_row = C.keyed(mt, "load")
function _M:load(exec_id, opts)
  local row, err = load_row(self, exec_id, opts)
  if not row then return nil, err end
  return C.decode(row.checkpoint, "checkpoint")
end

-- xs:list([{ tx = tx }]) → { exec_id, … } in order | nil, err
_M.list = C.whole(mt, "list")

-- xs:delete(exec_id [, { tx = tx }]) → true | nil, err (absent: true)
_M.delete = C.keyed(mt, "delete", true)

return _M
