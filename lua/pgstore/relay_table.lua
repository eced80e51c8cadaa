-- SPDX-License-Identifier: MIT
-- pgstore.relay_table — where relay changes too large for a NOTIFY payload
-- wait for their receivers: the sender stores the JSON (made on first use,
-- rows older than `keep` seconds deleted on the way) and notifies "@<id>";
-- receivers fetch it back. Shared by pgstore.relay and resty.pgstore's relay,
-- which runs it in a worker thread through db:run.
local core = require "pgstore.core"
local cjson = require "cjson"
local errors = require "pgstore.errors"

local setmetatable, tostring, pcall = setmetatable, tostring, pcall
local format = string.format

local _M = {
  MAX_CHANGE = 1024 * 1024,         -- a relay's default max_change (bytes)
  KEEP = 60,                        -- seconds a stored change is kept
  CHANGE_LIMIT = 256 * 1024 * 1024, -- the largest max_change accepted
}

-- db → { [table] = true } once the table is known to exist on that db.
local migrated = setmetatable({}, { __mode = "k" })

-- The NOTIFY payload standing for a stored change, and back.
function _M.ref(id) return "@" .. id end
function _M.id_of(payload) return payload:match("^@(%d+)$") end

-- A change to broadcast as its JSON → json | nil, err ("invalid": not
-- encodable, over max_change, or, for one that travels in the NOTIFY
-- itself, no valid payload), judged before it is delivered anywhere.
function _M.encode(change, max_change, channel)
  local ok, json = pcall(cjson.encode, change)
  if not ok then return errors.fail("invalid", "the change cannot be encoded as JSON: " .. tostring(json)) end
  if #json > max_change then
    return errors.fail("invalid", format("the change is %d bytes as JSON, over the relay's max_change of %d bytes",
      #json, max_change))
  end
  if #json <= core.limits.notify_payload then
    local valid, err = core.check_notify(channel, json)
    if not valid then return nil, err end
  end
  return json
end

-- The relay options about large changes → nil, or an invalid error.
function _M.check_options(opts)
  local options = require "pgstore.options"
  local bad = options.int(opts.max_change, "max_change", 1, _M.CHANGE_LIMIT) or options.seconds(opts.keep, "keep")
    or errors.nul(opts, "table")
  if bad then return bad end
  local _, err = core.quote_ident(opts.table or "pgstore_relay")
  return err
end

-- relay_table.store(db, table, channel, json, keep) → id | nil, err
function _M.store(db, tbl, channel, json, keep)
  tbl = tbl or "pgstore_relay"
  local q, err = core.quote_ident(tbl)
  if not q then return nil, err end
  local known = migrated[db] or {}
  migrated[db] = known
  if not known[tbl] then
    local ok, merr = core.relay_migrate(db.pool, tbl, true)
    if not ok then return nil, merr end
    known[tbl] = true
  end
  local rows
  -- Only this channel's old rows: another relay's `keep` is its own.
  rows, err = db:query(("WITH gone AS (DELETE FROM %s WHERE id IN (SELECT id FROM %s WHERE channel = $1"
    .. " ORDER BY id LIMIT 100) AND created_at < clock_timestamp() - $3::float8 * interval '1 second')"
    .. " INSERT INTO %s (channel, change) VALUES ($1, $2) RETURNING id"):format(q, q, q), channel, json, keep)
  if not rows then return nil, err end
  return rows[1].id
end

-- relay_table.fetch(db, table, id, channel) → json | false, why (no
-- longer stored: a loss) | nil, err (cannot be read now: try again later).
function _M.fetch(db, tbl, id, channel)
  local q, err = core.quote_ident(tbl or "pgstore_relay")
  if not q then return false, tostring(err) end
  local rows
  rows, err = db:query(("SELECT change FROM %s WHERE id = $1::bigint AND channel = $2"):format(q), id, channel)
  if not rows then return nil, err end
  if not rows[1] then
    return false, "it is no longer in the relay table (large changes of a channel are kept `keep` seconds)"
  end
  return rows[1].change
end

return _M
