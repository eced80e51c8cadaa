-- SPDX-License-Identifier: MIT
-- pgstore.exec_checkpoints — execution checkpoints: one row per execution
-- id holding its latest checkpoint (a table, stored as JSONB). Saves are
-- upserts: any number of processes saving the same id at once leave one
-- row with one of their checkpoints, and none fails. SQL in
-- core/exec_checkpoints.c.
--
--   local xs = db:exec_checkpoints{ table = "pgstore_exec_checkpoints" }
--   xs:save(exec_id, { step = 3, vars = { … } })
--   local cp, err = xs:load(exec_id)   -- err.code == "not_found" when none
local core = require "pgstore.core"
local C = require "pgstore.companion"
local errors = require "pgstore.errors"

local _M = { _VERSION = core._VERSION }
local mt = { __index = _M, __name = "pgstore.exec_checkpoints" }
mt.__tostring = C.tostring

local OPTIONS = { table = "string", skip_schema_init = "boolean", max_value_size = "number" }

-- db:exec_checkpoints(opts) → xs | nil, err
-- opts: table ("pgstore_exec_checkpoints"), skip_schema_init (false),
-- max_value_size (bytes of checkpoint JSON, 1 MiB)
function _M.new(db, opts)
  opts = C.options(opts, OPTIONS, 1, "exec_checkpoints")
  local bad = C.size(opts.max_value_size, "max_value_size") or errors.nul(opts, "table")
  if bad then return nil, bad end
  local ud, err = core.exec_checkpoints(db.pool, opts)
  if not ud then return nil, err end
  return C.store(mt, db, ud)
end

-- xs:migrate() → true | nil, err
function _M:migrate()
  C.check(self, mt, "migrate")
  return self.core:migrate()
end

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
function _M:load(exec_id, opts)
  C.check(self, mt, "load")
  C.arg(exec_id, 1, "load", "string")
  local _, conn, tx = C.call_opts(opts, nil, 2, "load")
  local row, err = C.note(tx, self.core:load(exec_id, conn))
  if not row then return nil, err end
  return C.decode(row.checkpoint, "checkpoint")
end

-- xs:list([{ tx = tx }]) → { exec_id, … } in order | nil, err
function _M:list(opts)
  C.check(self, mt, "list")
  local _, conn, tx = C.call_opts(opts, nil, 1, "list")
  return C.note(tx, self.core:list(conn))
end

-- xs:delete(exec_id [, { tx = tx }]) → true | nil, err (absent: true)
function _M:delete(exec_id, opts)
  C.check(self, mt, "delete")
  C.arg(exec_id, 1, "delete", "string")
  local _, conn, tx = C.call_opts(opts, nil, 2, "delete")
  local n, err = C.note(tx, self.core:delete(exec_id, conn))
  if not n then return nil, err end
  return true
end

-- xs:close(): closes the db too when the store owns it; twice is harmless.
function _M:close()
  C.close(self, mt)
end

return _M
