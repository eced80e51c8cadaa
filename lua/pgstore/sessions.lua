-- SPDX-License-Identifier: MIT
-- pgstore.sessions — sessions with JSONB state and history and optimistic
-- concurrency: a save at version n succeeds only when the stored version
-- is lower (or there is none), checked and written by ONE statement
-- (INSERT … ON CONFLICT … DO UPDATE … WHERE stored.version < n; see
-- core/sessions.c). Otherwise nothing is written and err.code is
-- "conflict". new, migrate and close come from pgstore.companion.
--
--   local sess = db:sessions{ table = "atto_sessions" }
--   local s = sess:load(id) or { version = 0, state = {}, history = {} }
--   local ok, err = sess:save(id, { version = s.version + 1, state = …, history = … })
local C = require "pgstore.companion"

local next, pairs, type = next, pairs, type

-- db:sessions(opts) → sess | nil, err
-- opts: table ("pgstore_sessions"), skip_schema_init (false),
-- max_value_size (bytes of state + history JSON, 1 MiB)
local _M, mt = C.class("sessions",
  { table = "string", skip_schema_init = "boolean", max_value_size = "number" })

local SESSION_FIELDS = { version = "number", state = "table", history = "table" }

-- sess:load(id [, { tx = tx }]) → { version, state, history, time } | nil | nil, err
local load_row = C.keyed(mt, "load")
function _M:load(id, opts)
  local row, err = load_row(self, id, opts)
  if not row then return nil, err end
  local state, history
  state, err = C.decode(row.state, "state")
  if state == nil then return nil, err end
  history, err = C.decode(row.history, "history")
  if history == nil then return nil, err end
  return { version = row.version, state = state, history = history, time = row.time }
end

-- sess:save(id, { version = n, state = table, history = array } [, { tx = tx }])
-- → true | nil, err. A stored version ≥ n: err.code "conflict",
-- err.expected = n, err.actual = the stored version.
function _M:save(id, session, opts)
  C.check(self, mt, "save")
  C.arg(id, 1, "save", "string")
  C.arg(session, 2, "save", "table")
  for k, want in pairs(SESSION_FIELDS) do
    local v = session[k]
    if not (type(v) == want or (k == "history" and v == nil)) then
      C.bad(2, "save", ("field '%s' must be a %s, got %s"):format(k, want, type(v)))
    end
  end
  local _, conn, tx = C.call_opts(opts, nil, 3, "save")
  local ok, err = C.count(session.version, "version")
  if not ok then return nil, err end
  local state, history
  state, err = C.encode(session.state, "state")
  if not state then return nil, err end
  local h = session.history
  if h == nil or next(h) == nil then
    history = "[]" -- cjson would write an empty table as {}
  else
    history, err = C.encode(h, "history")
    if not history then return nil, err end
  end
  return C.note(tx, self.core:save(id, session.version, state, history, conn))
end

-- sess:delete(id [, { tx = tx }]) → true | nil, err (absent: true)
_M.delete = C.keyed(mt, "delete", true)

return _M
