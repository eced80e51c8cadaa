-- SPDX-License-Identifier: MIT
-- pgstore.checkpoints — consumer checkpoints: the last processed global
-- position (cursor) of each consumer. Saving inside the caller's
-- transaction commits the checkpoint together with the read-model writes,
-- which is what makes a projection exactly-once. SQL in core/checkpoints.c;
-- new, migrate and close come from pgstore.companion.
--
--   local cp = db:checkpoints{ table = "pgstore_checkpoints" }
--   local cursor = cp:load("orders") or 0
--   db:transaction(function(tx) …; return cp:save("orders", pos, { tx = tx }) end)
--   cp:save("orders", pos, { expected = cursor })   -- conflict if moved meanwhile
local core = require "pgstore.core"
local C = require "pgstore.companion"

local null = core.null

-- db:checkpoints(opts) → cp | nil, err
-- opts: table ("pgstore_checkpoints"), skip_schema_init (false)
local _M, mt = C.class("checkpoints", { table = "string", skip_schema_init = "boolean" })

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

-- cp:list([{ tx = tx }]) → { { consumer, cursor, time }, … } by consumer | nil, err
_M.list = C.whole(mt, "list")

return _M
