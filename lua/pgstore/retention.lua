-- SPDX-License-Identifier: MIT
-- pgstore.retention — enforcing store policies on an event store: removing
-- events (max_count, max_age, truncate_before) and archiving idle streams
-- (archive_after, archive_to). policies:apply(es, opts) and
-- `pgstore policy apply` call this.
--
-- How it scales: streams are found in SQL, never by loading every stream
-- into Lua. For each policy, pages of matching streams are read from the
-- heads table in name order (keyset paging); a policy's globs become
-- LIKE patterns (plus a regex for character classes) and their common
-- literal prefix a key range, so "cart-*" reads only the cart- part of the
-- primary key. The first policy whose pattern matches governs a stream:
-- the globs of the policies before it are excluded in the same query.
--
-- Why removing events never breaks a reader: read_all's cursor is a plain
-- position and its horizon comes from the position sequence and the order
-- locks of appends in flight (core/sql/events--1.sql), so deleted rows are
-- gaps it steps over. The end (es:latest_position(), where "from the end"
-- starts) is held as a floor before a run removes anything, and a run
-- removes only events at or below it, so the end never goes back.
--
-- Idempotency keys older than the store's idempotency_ttl are removed at
-- the end of every run, oldest first, in the same batches and at most
-- 100,000 per run (es:expire_idempotency_keys). Stream reads ask for
-- versions, and the head (the stream's version and status) is never
-- touched by retention: appends continue at the next version.
--
-- Batches: every DELETE removes at most `batch` rows (default 1000) and
-- commits on its own, so locks and WAL per transaction stay bounded and a
-- run can be stopped at any point. What a page removes is fixed when the
-- page is planned (a version bound per stream, and one cut-off time for
-- the whole run taken from the server's clock), so appends landing during
-- a run are never removed by it, and --dry-run shows what a run does.
--
-- Archiving: a stream is flagged archived only if its version is still the
-- one planned (the UPDATE waits for an append in flight on the stream and
-- then sees the new version), so an idle stream that just woke up is left
-- alone; appends to it then fail with `archived`. With archive_to, the
-- events then move to the other store (es:archive_to); streams of the
-- policy that are archived here but still hold events are moved too, so
-- an interrupted run finishes on the next.
local core = require "pgstore.core"
local errors = require "pgstore.errors"
local options = require "pgstore.options"
local glob = require "pgstore.glob"
local cjson = require "cjson"

local type, pairs, ipairs, tostring, error, unpack = type, pairs, ipairs, tostring, error, unpack
local format, concat = string.format, table.concat

local _M = {}

local OPTIONS = {
  dry_run = "boolean", batch = "number", page = "number", on_stream = "function", on_progress = "function",
  on_policy = "function",
}

local check_options = options.check

-- Numbered parameters for SQL assembled from fixed fragments: the values
-- are always bound, only the shape of the statement varies.
local function params()
  local q = { values = {}, n = 0 }
  function q.add(v, cast)
    q.n = q.n + 1
    q.values[q.n] = v
    return "$" .. q.n .. (cast or "")
  end
  return q
end

-- The glob list as JSON for jsonb_to_recordset: this policy's globs
-- (x = false) and those of the policies before it (x = true).
local function globs_json(set, index)
  local rows = {}
  for i = 1, index do
    for _, c in ipairs(set.policies[i].globs) do
      rows[#rows + 1] = { l = c.like, r = c.regex or cjson.null, x = i < index }
    end
  end
  return cjson.encode(rows)
end

-- One page of streams: the next `limit` heads after `after` in name order
-- (inside the key range of the policy's literal prefix) — an ordered scan
-- of the primary key that stops there, however many streams match — each
-- marked `governed` when the policy governs it, and for those, what the
-- policy would do. The caller pages on from the last stream returned.
local function plan_sql(t, p, q, after, limit, now, hold, set, index)
  local g = q.add(globs_json(set, index), "::jsonb")
  local where = { "h.stream > " .. q.add(after) }
  local prefixes = {}
  for i, c in ipairs(p.globs) do prefixes[i] = c.prefix end
  local lo = glob.common_prefix(prefixes)
  if lo ~= "" then
    where[#where + 1] = "h.stream >= " .. q.add(lo)
    local hi = glob.next_prefix(lo)
    if hi then where[#where + 1] = "h.stream < " .. q.add(hi) end
  end
  local governed = "EXISTS (SELECT 1 FROM g WHERE NOT g.x AND h.stream LIKE g.l AND (g.r IS NULL OR h.stream ~ g.r))"
  if index > 1 then
    governed = governed
      .. " AND NOT EXISTS (SELECT 1 FROM g WHERE g.x AND h.stream LIKE g.l AND (g.r IS NULL OR h.stream ~ g.r))"
  end
  local sel = { "h.stream, h.version, h.status, h.governed" }
  local from = { "scan h" }
  if p.retention then
    from[#from + 1] = format("CROSS JOIN LATERAL (SELECT GREATEST(COALESCE(%s - 1, 0), COALESCE(h.version - %s, 0)) AS cut) c",
      q.add(p.truncate_before, "::bigint"), q.add(p.max_count, "::bigint"))
    local cond = "e.version <= c.cut"
    if p.max_age then
      cond = format("(e.version <= c.cut OR e.time < %s - make_interval(secs => %s))", q.add(now, "::timestamptz"),
        q.add(p.max_age, "::float8"))
    end
    cond = format("%s AND e.position <= %s", cond, q.add(hold, "::bigint"))
    from[#from + 1] = format("CROSS JOIN LATERAL (SELECT count(*) AS remove, max(e.version) AS upto FROM %s e"
      .. " WHERE h.governed AND e.stream = h.stream AND %s) r", t.events, cond)
    sel[#sel + 1] = "c.cut, r.remove, r.upto"
  end
  if p.archive_after then
    from[#from + 1] = format("LEFT JOIN LATERAL (SELECT e.time AS last_time FROM %s e WHERE h.governed"
      .. " AND e.stream = h.stream ORDER BY e.version DESC LIMIT 1) a ON true", t.events)
    local idle = format("(h.status = 'active' AND (a.last_time IS NULL OR a.last_time < %s - make_interval(secs => %s)))",
      q.add(now, "::timestamptz"), q.add(p.archive_after, "::float8"))
    if p.archive_to then
      -- archived here but events left: an earlier run was interrupted
      idle = format("(%s OR (h.status = 'archived' AND a.last_time IS NOT NULL))", idle)
    end
    sel[#sel + 1] = format("a.last_time, h.governed AND %s AS archive", idle)
  end
  if #sel == 1 then return nil end -- no rules: nothing to find
  return format("WITH g AS MATERIALIZED (SELECT * FROM jsonb_to_recordset(%s) AS g(l text, r text, x boolean)),"
    .. " scan AS MATERIALIZED (SELECT h.stream, h.version, h.status, %s AS governed FROM %s h WHERE %s"
    .. " ORDER BY h.stream LIMIT %s)"
    .. " SELECT %s FROM %s ORDER BY h.stream",
    g, governed, t.heads, concat(where, " AND "), q.add(limit), concat(sel, ", "), concat(from, " "))
end

-- A planned row → the item describing what to do to the stream, or nil
-- when there is nothing to do.
local function work(p, r)
  if not r.governed then return nil end
  local remove = p.retention and r.remove or 0
  local archive = r.archive == true
  if remove == 0 and not archive then return nil end
  local to = archive and p.archive_to or nil
  return {
    policy = p.name, stream = r.stream, version = r.version, status = r.status,
    remove = remove, upto = remove > 0 and r.upto or nil,
    archive = archive, archive_to = to and (type(to) == "string" and to or to.table_name) or nil,
    last_time = r.last_time ~= nil and r.last_time ~= core.null and r.last_time or nil,
  }
end

-- Deletes at most `batch` planned rows of the page's streams; → count | nil, err
local function delete_batch(db, t, p, rows, now, hold, batch)
  local q = params()
  local list = q.add(cjson.encode(rows), "::jsonb")
  local cond = "e.version <= c.cut"
  if p.max_age then
    cond = format("(e.version <= c.cut OR e.time < %s - make_interval(secs => %s))", q.add(now, "::timestamptz"),
      q.add(p.max_age, "::float8"))
  end
  cond = format("%s AND e.position <= %s", cond, q.add(hold, "::bigint"))
  local sql = format("WITH c AS MATERIALIZED (SELECT * FROM jsonb_to_recordset(%s) AS c(stream text, cut bigint, upto bigint))"
    .. " DELETE FROM %s d WHERE d.position IN (SELECT e.position FROM c JOIN %s e ON e.stream = c.stream"
    .. " AND e.version <= c.upto WHERE %s LIMIT %s)", list, t.events, t.events, cond, q.add(batch))
  return db:exec(sql, unpack(q.values, 1, q.n))
end

-- The store a policy archives to, opened once per run when named by table.
-- Refuses the store itself under another spelling ("public.events"): a
-- move into the same table would delete what it just kept.
local function archive_store(es, p, opened)
  local to, other = p.archive_to, nil
  if type(to) == "string" then
    other = opened[to]
    if not other then
      local err
      other, err = es.db:events{ table = to, notify = false }
      if not other then return nil, err end
      opened[to] = other
    end
  else
    other = to
    if not require("pgstore.events").is_store(other) or not other.handle then
      return nil, errors.new("invalid", format("policy '%s': archive_to is not an open event store", p.name))
    end
  end
  if other.db == es.db then
    local rows, err = es.db:query("SELECT to_regclass($1) = to_regclass($2) AS same",
      assert(core.quote_ident(es.table_name)), assert(core.quote_ident(other.table_name)))
    if not rows then return nil, err end
    if rows[1].same == true then
      return nil, errors.new("invalid", format("policy '%s': archive_to names this same store (%s)", p.name,
        other.table_name))
    end
  end
  return other
end


-- apply(set, es, opts) → summary | nil, err (err.summary: what was done)
-- summary = { dry_run, streams, remove, archive, removed, archived, keys (expired
--             idempotency keys: to remove, or removed), keys_removed, skipped
--             ({ policy, stream, code, message } for each stream the archive
--             refused: tombstoned there, or its events there as others),
--             policies = { { name, streams, remove, archive, removed, archived }, … } }
-- opts.on_stream(item) is called for every stream with something to do,
-- before it is done: { policy, stream, version, status, remove, upto, archive,
-- archive_to, last_time }. opts.on_progress(summary) after every batch;
-- opts.on_policy(policy_summary, policy) when a policy is done.
function _M.apply(set, es, opts, fname)
  fname = fname or "apply"
  opts = check_options(opts, OPTIONS, 2, fname)
  local bad = options.int(opts.batch, "batch", 1, 1e7) or options.int(opts.page, "page", 1, 1e7)
  if bad then return nil, bad end
  local batch = opts.batch or 1000
  local page = opts.page or 500
  local dry = opts.dry_run == true
  local db = es.db
  if not db or db:is_closed() or not es.handle then options.raise("attempt to use a closed event store") end
  local t = {
    events = assert(core.quote_ident(es.table_name)),
    heads = assert(core.quote_ident(es.table_name .. "_heads")),
  }
  local summary = { dry_run = dry, streams = 0, remove = 0, archive = 0, removed = 0, archived = 0, keys = 0,
                    keys_removed = 0, skipped = {}, policies = {} }
  -- the run's clock (the server's), and a missing table fails before any output
  local rows, err = db:query(format("SELECT now()::text AS now WHERE NOT EXISTS (SELECT 1 FROM %s WHERE false)"
    .. " AND NOT EXISTS (SELECT 1 FROM %s WHERE false)", t.events, t.heads))
  if not rows then return nil, err end
  local now = rows[1].now
  -- The end, held as its floor before anything is removed (a dry run only
  -- reads it): events above it may still have an append in flight below
  -- them and are left for a later run, so es:latest_position() never goes
  -- back (see "The end" in core/sql, where <table>_end is made).
  local hold
  if dry then hold, err = es:latest_position() else hold, err = es:hold_end() end
  if not hold then return nil, err end
  local opened = {}
  local function finish(ok, e)
    for _, other in pairs(opened) do other:close() end
    if ok then return summary end
    if type(e) == "table" then e.summary = summary end
    return nil, e
  end
  local run
  local function progress()
    if opts.on_progress then opts.on_progress(summary) end
  end

  function run()
    for index, p in ipairs(set.policies) do
      local ps = { name = p.name, streams = 0, remove = 0, archive = 0, removed = 0, archived = 0 }
      summary.policies[index] = ps
      local after = ""
      while true do
        local q = params()
        local sql = plan_sql(t, p, q, after, page, now, hold, set, index)
        if not sql then break end
        rows, err = db:query(sql, unpack(q.values, 1, q.n))
        if not rows then return finish(false, err) end
        local del, del_count, arch = {}, 0, {}
        for _, r in ipairs(rows) do
          local item = work(p, r)
          if item then
            ps.streams, summary.streams = ps.streams + 1, summary.streams + 1
            ps.remove, summary.remove = ps.remove + item.remove, summary.remove + item.remove
            if item.archive then ps.archive, summary.archive = ps.archive + 1, summary.archive + 1 end
            if opts.on_stream then opts.on_stream(item) end
            if item.remove > 0 then
              del[#del + 1] = { stream = r.stream, cut = r.cut, upto = item.upto }
              del_count = del_count + item.remove
            end
            if item.archive then arch[#arch + 1] = item end
          end
        end
        if not dry then
          -- removal, in batches that each commit
          if del_count > 0 then
            repeat
              local n
              n, err = delete_batch(db, t, p, del, now, hold, batch)
              if not n then return finish(false, err) end
              ps.removed, summary.removed = ps.removed + n, summary.removed + n
              progress()
            until n < batch
          end
          -- archiving, one stream at a time
          for _, item in ipairs(arch) do
            -- the store it moves to, checked before the stream is flagged:
            -- a refused target leaves the stream as it was
            local n, other
            if p.archive_to then
              other, err = archive_store(es, p, opened)
              if not other then return finish(false, err) end
            end
            if item.status == "active" then
              n, err = db:exec(format("UPDATE %s SET status = 'archived', reason = NULL, updated_at = now()"
                .. " WHERE stream = $1 AND status = 'active' AND version = $2", t.heads), item.stream, item.version)
              if not n then return finish(false, err) end
            else
              n = 1 -- already flagged by an interrupted run; move what is left
            end
            if n == 1 and other then
              local moved, merr = es:archive_to(item.stream, other)
              if not moved and (merr.code == "deleted" or merr.code == "duplicate") then
                -- refused for this stream alone (tombstoned in the archive, or
                -- its events already there as others): say so, go on with the rest
                summary.skipped[#summary.skipped + 1] = { policy = p.name, stream = item.stream,
                                                          code = merr.code, message = merr.message }
                n = 0
              elseif not moved then
                return finish(false, merr)
              end
            end
            if n == 1 then
              ps.archived, summary.archived = ps.archived + 1, summary.archived + 1
            end
            progress()
          end
        end
        if #rows < page then break end
        after = rows[#rows].stream
      end
      if opts.on_policy then opts.on_policy(ps, p) end
    end
    -- idempotency keys past the store's TTL, bounded per run
    local n
    n, err = es:expire_idempotency_keys{ batch = batch, dry_run = dry }
    if not n then return finish(false, err) end
    if dry then summary.keys = n else summary.keys, summary.keys_removed = n, n end
    if n > 0 then progress() end
    return finish(true)
  end

  -- callbacks may raise: close what the run opened, then re-raise
  local res = { pcall(run) }
  if not res[1] then
    for _, other in pairs(opened) do other:close() end
    error(res[2], 0)
  end
  return res[2], res[3]
end

return _M
