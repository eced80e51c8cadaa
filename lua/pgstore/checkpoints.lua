-- SPDX-License-Identifier: MIT
-- pgstore.checkpoints — consumer checkpoints: the last processed global
-- position (cursor) of each consumer. Saving inside the caller's
-- transaction commits the checkpoint together with the read-model writes,
-- which is what makes a projection exactly-once. SQL in core/checkpoints.c.
--
--   local cp = db:checkpoints{ table = "pgstore_checkpoints" }
--   local cursor = cp:load("orders") or 0
--   db:transaction(function(tx) …; return cp:save("orders", pos, { tx = tx }) end)
--   cp:save("orders", pos, { expected = cursor })   -- conflict if moved meanwhile
local core = require "pgstore.core"
local C = require "pgstore.companion"
local errors = require "pgstore.errors"

local null = core.null

local _M = { _VERSION = core._VERSION }
local mt = { __index = _M, __name = "pgstore.checkpoints" }
mt.__tostring = C.tostring

local OPTIONS = { table = "string", skip_schema_init = "boolean" }
local SAVE_OPTIONS = { expected = "number|boolean|userdata" }

-- db:checkpoints(opts) → cp | nil, err
-- opts: table ("pgstore_checkpoints"), skip_schema_init (false)
function _M.new(db, opts)
  opts = C.options(opts, OPTIONS, 1, "checkpoints")
  local bad = errors.nul(opts, "table")
  if bad then return nil, bad end
  local ud, err = core.checkpoints(db.pool, opts)
  if not ud then return nil, err end
  return C.store(mt, db, ud)
end

-- cp:migrate() → true | nil, err
function _M:migrate()
  C.check(self, mt, "migrate")
  return self.core:migrate()
end

-- cp:load(consumer [, { tx = tx }]) → cursor | nil (new consumer) | nil, err
function _M:load(consumer, opts)
  C.check(self, mt, "load")
  C.arg(consumer, 1, "load", "string")
  local _, conn, tx = C.call_opts(opts, nil, 2, "load")
  return C.note(tx, self.core:load(consumer, conn))
end

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
function _M:delete(consumer, opts)
  C.check(self, mt, "delete")
  C.arg(consumer, 1, "delete", "string")
  local _, conn, tx = C.call_opts(opts, nil, 2, "delete")
  local n, err = C.note(tx, self.core:delete(consumer, conn))
  if not n then return nil, err end
  return true
end

-- cp:list([{ tx = tx }]) → { { consumer, cursor, time }, … } by consumer | nil, err
function _M:list(opts)
  C.check(self, mt, "list")
  local _, conn, tx = C.call_opts(opts, nil, 1, "list")
  return C.note(tx, self.core:list(conn))
end

-- cp:close(): closes the db too when the store owns it; twice is harmless.
function _M:close()
  C.close(self, mt)
end

return _M
