-- SPDX-License-Identifier: MIT
-- pgstore.sessions — sessions with JSONB state and history and optimistic
-- concurrency: a save at version n succeeds only when the stored version
-- is lower (or there is none), checked and written by ONE statement
-- (INSERT … ON CONFLICT … DO UPDATE … WHERE stored.version < n; see
-- core/sessions.c). Otherwise nothing is written and err.code is
-- "conflict".
--
--   local sess = db:sessions{ table = "atto_sessions" }
--   local s = sess:load(id) or { version = 0, state = {}, history = {} }
--   local ok, err = sess:save(id, { version = s.version + 1, state = …, history = … })
local core = require "pgstore.core"
local C = require "pgstore.companion"
local errors = require "pgstore.errors"

local next, type = next, type

local _M = { _VERSION = core._VERSION }
local mt = { __index = _M, __name = "pgstore.sessions" }
mt.__tostring = C.tostring

local OPTIONS = { table = "string", skip_schema_init = "boolean", max_value_size = "number" }
local SESSION_FIELDS = { version = "number", state = "table", history = "table" }

-- db:sessions(opts) → sess | nil, err
-- opts: table ("pgstore_sessions"), skip_schema_init (false),
-- max_value_size (bytes of state + history JSON, 1 MiB)
function _M.new(db, opts)
  opts = C.options(opts, OPTIONS, 1, "sessions")
  local bad = C.size(opts.max_value_size, "max_value_size") or errors.nul(opts, "table")
  if bad then return nil, bad end
  local ud, err = core.sessions(db.pool, opts)
  if not ud then return nil, err end
  return C.store(mt, db, ud)
end

-- sess:migrate() → true | nil, err
function _M:migrate()
  C.check(self, mt, "migrate")
  return self.core:migrate()
end

-- sess:load(id [, { tx = tx }]) → { version, state, history, time } | nil | nil, err
function _M:load(id, opts)
  C.check(self, mt, "load")
  C.arg(id, 1, "load", "string")
  local _, conn, tx = C.call_opts(opts, nil, 2, "load")
  local row, err = C.note(tx, self.core:load(id, conn))
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
function _M:delete(id, opts)
  C.check(self, mt, "delete")
  C.arg(id, 1, "delete", "string")
  local _, conn, tx = C.call_opts(opts, nil, 2, "delete")
  local n, err = C.note(tx, self.core:delete(id, conn))
  if not n then return nil, err end
  return true
end

-- sess:close(): closes the db too when the store owns it; twice is harmless.
function _M:close()
  C.close(self, mt)
end

return _M
