-- SPDX-License-Identifier: MIT
-- pgstore.events — the event store's Lua face: options, codecs, argument
-- checks, upcasting on read, and routing reads to replicas. The algorithm
-- (one-round-trip appends, the never-skipping global read) lives in C and
-- SQL: core/events*.c.
local core = require "pgstore.core"
local errors = require "pgstore.errors"
local options = require "pgstore.options"
local codecs = require "pgstore.codec"
local Tx = require "pgstore.tx"
local replicas = require "pgstore.replicas"

local type, ipairs, pairs, tostring, select = type, ipairs, pairs, tostring, select
-- debug.getmetatable: handles hide their metatables from getmetatable (__metatable)
local getmetatable = debug.getmetatable
local floor = math.floor
local null = core.null

local _M = {}
local Events = {}
local mt = { __index = Events, __name = "pgstore.events", __metatable = false }
_M.Events = Events

local MAX_VERSION = 2 ^ 53
local MAX_BATCHES = core.limits.batches
local EXPECTED = { any = -1, no_stream = -2, exists = -3 }
local EXPECTED_NAME = { [-1] = "any", [-2] = "no_stream", [-3] = "exists" }

local OPTIONS = {
  table = "string", notify = "string|boolean", notify_in_tx = "boolean", codec = "string|table",
  migrate = "boolean", max_event_size = "number", notify_interval = "number", idempotency_ttl = "number",
}

-- How long an idempotency key keeps a retry safe, in seconds: a week.
-- Older keys are removed by expire_idempotency_keys (policies:apply and
-- `pgstore policy apply` run it); 0 keeps them forever.
local IDEMPOTENCY_TTL = 7 * 24 * 3600
_M.IDEMPOTENCY_TTL = IDEMPOTENCY_TTL

local check_options = options.check
_M.check_options = check_options

-- The store's TTL lives in <table>_end (core/sql/events--4--5.sql): set by
-- a handle opened with one, read by the cleanup.
local function end_table(self)
  return assert(core.quote_ident(self.handle:store() .. "_end"))
end

-- Records an explicit idempotency_ttl as the store's. A role that may not
-- write it, or a store not yet upgraded, keeps it to this handle.
local function record_ttl(self, ttl)
  local ok, err = self.db:exec(("INSERT INTO %s AS e (one, position, idempotency_ttl) VALUES (true, 0, $1)"
    .. " ON CONFLICT (one) DO UPDATE SET idempotency_ttl = EXCLUDED.idempotency_ttl"):format(end_table(self)), ttl)
  if not ok and (err.sqlstate == "42501" or err.sqlstate == "42P01" or err.sqlstate == "42703") then
    return true
  end
  return ok, err
end

-- The TTL the cleanup goes by: the store's, when a handle recorded one;
-- else this handle's.
local function store_ttl(self)
  local rows = self.db:query(("SELECT idempotency_ttl FROM %s"):format(end_table(self)))
  local v = rows and rows[1] and rows[1].idempotency_ttl
  if type(v) == "number" then return v end
  return self.idempotency_ttl
end

-- db:events{ table = "events", notify = "pgstore_events" | false, notify_in_tx = false,
--            codec = "json" | "raw" | { encode, decode }, migrate = true,
--            idempotency_ttl = 604800 } → es | nil, err
function _M.new(db, opts)
  opts = check_options(opts, OPTIONS, 1, "events")
  local bad = errors.nul(opts, "table", "notify")
    or options.int(opts.max_event_size, "max_event_size", 1, 1073741824)
    or options.seconds(opts.notify_interval, "notify_interval")
    or options.int(opts.idempotency_ttl, "idempotency_ttl", 0, 2 ^ 32)
  if bad then return nil, bad end
  if opts.table then
    local ok, terr = core.check_table(opts.table)
    if not ok then return nil, terr end
  end
  local codec, cerr = codecs.resolve(opts.codec)
  if not codec then return nil, errors.new("invalid", cerr) end
  local notify = opts.notify
  if notify == nil or notify == true then notify = "pgstore_events" end
  local handle, err = core.events(db.pool, {
    table = opts.table,
    notify = notify or nil,
    notify_in_tx = opts.notify_in_tx,
    notify_interval = opts.notify_interval,
    migrate = opts.migrate ~= false,
    max_event_size = opts.max_event_size,
  })
  if not handle then return nil, err end
  local es = setmetatable({
    db = db, handle = handle, codec = codec, upcaster = nil,
    table_name = opts.table or "events", channel = notify or nil,
    idempotency_ttl = opts.idempotency_ttl or IDEMPOTENCY_TTL,
  }, mt)
  if opts.idempotency_ttl ~= nil then
    local ok, rerr = record_ttl(es, opts.idempotency_ttl)
    if not ok then
      handle:close()
      return nil, rerr
    end
  end
  return es
end

local function check(self, fname)
  if getmetatable(self) ~= mt then
    options.argerror(1, fname, ("pgstore.events expected; use es:%s()"):format(fname))
  end
  if not self.handle then options.raise("attempt to use a closed event store") end
  if not self.db.pool then errors.closed() end
end

-- ---- arguments ------------------------------------------------------------

local function check_stream(stream, fname)
  if type(stream) ~= "string" then
    options.argerror(1, fname, "stream name (string) expected, got " .. type(stream))
  end
end

-- Lifecycle calls run in a transaction of their own: an argument past
-- their last (a { tx = … } above all) is misuse, never silently ignored.
local function no_more(n, fname, ...)
  if select("#", ...) > 0 then
    options.argerror(n, fname, "no more arguments expected (lifecycle operations run in a"
      .. " transaction of their own: no { tx = … })")
  end
end

-- expected → number, or nil and an invalid error
local function expected_number(v)
  if v == nil then return -1 end
  if type(v) == "string" then
    local n = EXPECTED[v]
    if n then return n end
    return nil, errors.new("invalid", ("expected version must be a number, 'any', 'no_stream' or 'exists', got '%s'"):format(v))
  end
  if v ~= v or v < 0 or v > MAX_VERSION or v ~= floor(v) then
    return nil, errors.new("invalid", ("expected version must be a whole number from 0 to 2^53, got %s"):format(tostring(v)))
  end
  return v
end

-- An event's fields and their Lua types; data and metadata go through the codec.
local EVENT_FIELDS = { type = "string", data = true, metadata = true, id = "string", schema_version = "number" }

-- Raises (argument n of fname) for event i with an unknown field or a field
-- of the wrong Lua type, naming it. Shared with resty.pgstore.
function _M.check_event_fields(e, i, n, fname)
  local problem = options.problem(e, EVENT_FIELDS)
  if problem then options.argerror(n, fname, ("event %d: %s"):format(i, problem)) end
end

-- events → array of { type, data = json, metadata = json, id, schema_version }
-- for C, or nil, err (invalid) without anything sent. An unknown field or a
-- field of the wrong Lua type raises (argument n of fname), naming it: a
-- misspelt `dat` would otherwise write an event without its data.
local function encode_events(self, events, n_arg, fname)
  local n = #events
  if n == 0 then return nil, errors.new("invalid", "no events given: append at least one") end
  local out = {}
  for i = 1, n do
    local e = events[i]
    if type(e) ~= "table" then
      return nil, errors.new("invalid", ("event %d must be a table, got %s"):format(i, type(e)))
    end
    _M.check_event_fields(e, i, n_arg, fname)
    if e.type == nil or e.type == "" then
      return nil, errors.new("invalid", ("event %d needs a type (a non-empty string)"):format(i))
    end
    if e.type:find("\0", 1, true) then
      return nil, errors.new("invalid", ("event %d: type contains a NUL byte"):format(i))
    end
    if e.id ~= nil and e.id:find("\0", 1, true) then
      return nil, errors.new("invalid", ("event %d: id must be a UUID string"):format(i))
    end
    local sv = e.schema_version
    if sv == nil and self.upcasters then
      -- with a registry installed, code writes the newest shape: stamp it
      -- so the chain does not upcast it again on read
      local latest = self.upcasters:latest(e.type)
      if latest > 1 then sv = latest end
    end
    if sv ~= nil and (sv ~= sv or sv < 1 or sv ~= floor(sv) or sv > 2147483647) then
      return nil, errors.new("invalid", ("event %d: schema_version must be a whole number >= 1"):format(i))
    end
    local data, derr = codecs.encode(self.codec, e.data == nil and null or e.data)
    if not data then
      return nil, errors.new("invalid", ("event %d: cannot encode data: %s"):format(i, derr))
    end
    local meta
    if e.metadata ~= nil then
      meta, derr = codecs.encode(self.codec, e.metadata)
      if not meta then
        return nil, errors.new("invalid", ("event %d: cannot encode metadata: %s"):format(i, derr))
      end
    end
    out[i] = { type = e.type, data = data, metadata = meta, id = e.id, schema_version = sv }
  end
  return out
end

local function name_expected(err)
  if type(err) == "table" and err.code == "conflict" and EXPECTED_NAME[err.expected] then
    err.expected = EXPECTED_NAME[err.expected]
  end
  return err
end

-- ---- writes ---------------------------------------------------------------

local APPEND_OPTIONS = { expected = "number|string", idempotency_key = "string", time = "number", tx = "table" }

-- es.guard, when set (policies:install(es)), runs before anything is sent:
-- guard(stream, events, { es, expected, idempotency_key, time[, batch] })
-- → true | nil, err; append and append_many return its nil, err as is.

-- es:append(stream, events, { expected, idempotency_key, time, tx })
--   → { stream, first_version, last_version, first_position, last_position, count, replayed }
function Events:append(stream, events, opts)
  check(self, "append")
  check_stream(stream, "append")
  options.arg(events, 2, "append", "table", "array of event tables")
  opts = check_options(opts, APPEND_OPTIONS, 3, "append")
  local conn = opts.tx ~= nil and Tx.conn_of(opts.tx, 3, "append") or nil
  local expected, err = expected_number(opts.expected)
  if not expected then return nil, err end
  err = options.time(opts.time, "time")
  if err then return nil, err end
  local encoded
  encoded, err = encode_events(self, events, 2, "append")
  if not encoded then return nil, err end
  if self.guard then
    local ok, gerr = self.guard(stream, events, { es = self, expected = opts.expected,
      idempotency_key = opts.idempotency_key, time = opts.time })
    if not ok then return nil, gerr end
  end
  local res
  res, err = self.handle:append(stream, encoded, expected, opts.idempotency_key, opts.time, conn)
  if not res then
    if (err.code == "connection" or err.code == "timeout") and opts.idempotency_key then
      err.idempotency_key = opts.idempotency_key
      err.message = err.message .. " (outcome unknown: retry with the same idempotency key)"
    elseif err.code == "connection" or err.code == "timeout" then
      -- never retried here: a second try could write the events twice
      err.message = err.message .. " (outcome unknown: the append may have committed; only an append"
        .. " with an idempotency key is safe to retry)"
    end
    return nil, name_expected(err)
  end
  return res
end

local BATCH_FIELDS = { stream = "string", events = "table", expected = "number|string",
                       idempotency_key = "string", time = "number" }

local APPEND_MANY_OPTIONS = { tx = "table" }

-- check_batch_count(batches) → nil, or an invalid error for none or more
-- than core.limits.batches, before any batch is looked at: one call is one
-- transaction whose locks the server's shared lock table must hold.
function _M.check_batch_count(batches)
  local n = #batches
  if n == 0 then return errors.new("invalid", "no batches given") end
  if n > MAX_BATCHES then
    return errors.new("invalid", ("%d batches in one append_many: at most %d; split them into several calls")
      :format(n, MAX_BATCHES))
  end
end

-- Inside the caller's transaction: the batches one after another on its
-- connection (its commit or rollback makes them all or nothing).
local function append_in_tx(self, out, conn)
  local results = {}
  for i, b in ipairs(out) do
    local res, err = self.handle:append(b.stream, b.events, b.expected, b.idempotency_key, b.time, conn)
    if not res then
      if type(err) == "table" then err.batch = i end
      return nil, name_expected(err)
    end
    results[i] = res
  end
  return results
end

-- es:append_many({ { stream =, events =, expected =, idempotency_key = }, … }[, { tx }]) → results
function Events:append_many(batches, opts)
  check(self, "append_many")
  options.arg(batches, 1, "append_many", "table", "array of batches")
  opts = check_options(opts, APPEND_MANY_OPTIONS, 2, "append_many")
  local conn = opts.tx ~= nil and Tx.conn_of(opts.tx, 2, "append_many") or nil
  local bad = _M.check_batch_count(batches)
  if bad then return nil, bad end
  local out = {}
  for i, b in ipairs(batches) do
    options.arg(b, 1, "append_many", "table", ("batch %d: table"):format(i))
    options.check(b, BATCH_FIELDS, 1, "append_many")
    options.arg(b.stream, 1, "append_many", "string", ("batch %d: stream (string)"):format(i))
    options.arg(b.events, 1, "append_many", "table", ("batch %d: events (table)"):format(i))
    local expected, err = expected_number(b.expected)
    if not expected then err.message = ("batch %d: %s"):format(i, err.message); err.batch = i; return nil, err end
    err = options.time(b.time, "time")
    if err then err.message = ("batch %d: %s"):format(i, err.message); err.batch = i; return nil, err end
    local encoded
    encoded, err = encode_events(self, b.events, 1, "append_many")
    if not encoded then err.batch = i; return nil, err end
    if self.guard then
      local ok, gerr = self.guard(b.stream, b.events, { es = self, expected = b.expected,
        idempotency_key = b.idempotency_key, time = b.time, batch = i })
      if not ok then
        if type(gerr) == "table" then gerr.batch = i end
        return nil, gerr
      end
    end
    out[i] = { stream = b.stream, events = encoded, expected = expected,
               idempotency_key = b.idempotency_key, time = b.time }
  end
  if conn then return append_in_tx(self, out, conn) end
  local res, err = self.handle:append_many(out)
  if not res then
    if err.code == "connection" or err.code == "timeout" then
      -- As for append: with a key on every batch, retrying is safe.
      local keys, all = {}, true
      for i, b in ipairs(out) do
        keys[i] = b.idempotency_key
        all = all and b.idempotency_key ~= nil
      end
      if all then
        err.idempotency_keys = keys
        err.message = err.message .. " (outcome unknown: retry with the same idempotency keys)"
      else
        err.message = err.message .. " (outcome unknown: the batches may have committed; only a call"
          .. " with an idempotency key on every batch is safe to retry)"
      end
    end
    return nil, name_expected(err)
  end
  return res
end

-- ---- reads ----------------------------------------------------------------

-- Decodes a row's data and metadata and runs the upcaster (not for raw).
local function finish(self, rows, raw)
  if raw then return rows end
  local codec, up = self.codec, self.upcaster
  for i = 1, #rows do
    local e = rows[i]
    local v, err = codecs.decode(codec, e.data)
    if err then return nil, errors.new("invalid", ("event at position %d: cannot decode data: %s"):format(e.position, err)) end
    e.data = v
    if e.metadata == null then
      e.metadata = nil
    else
      v, err = codecs.decode(codec, e.metadata)
      if err then return nil, errors.new("invalid", "cannot decode metadata: " .. err) end
      e.metadata = v
    end
    if up then
      local ok, res = pcall(up, e)
      if not ok then
        return nil, errors.new("invalid", ("upcasting %s v%d at position %d failed: %s")
          :format(e.type, e.schema_version, e.position, tostring(res)))
      end
      rows[i] = res or e
    end
  end
  return rows
end
-- For stores that read raw rows elsewhere (resty.pgstore): self needs the
-- codec and upcaster fields.
_M.decode_rows = finish

-- A read on a replica when there is one: with `consistent`, one that has
-- replayed every write committed on the primary before the read began (a
-- round trip to the primary for its position); with `after_lsn`, one that
-- has replayed that causal token (none). Waits up to consistent_timeout,
-- else reads the primary (pgstore.replicas).
local function on_reader(self, opts, fn)
  local db = self.db
  if #db.readers == 0 or opts.primary then return fn(nil) end
  local lsn = opts.after_lsn
  if opts.consistent then
    local err
    lsn, err = db:causal_token()
    if not lsn then return nil, err end
  end
  return db:_read(fn, lsn, opts.consistent_timeout)
end

local READ_OPTIONS = {
  from = "number", to = "number", limit = "number", types = "table", backward = "boolean",
  raw = "boolean", consistent = "boolean", consistent_timeout = "number", primary = "boolean",
  after_lsn = "string",
}

local function check_count(v, name)
  if v ~= nil and (v ~= v or v < 0 or v ~= floor(v) or v > MAX_VERSION) then
    return errors.new("invalid", ("%s must be a whole number from 0 to 2^53"):format(name))
  end
end

-- es:read(stream, { from, to, limit, types, backward, raw, consistent, after_lsn,
--                   consistent_timeout, primary }) → events
-- primary = true reads the primary even when there are replicas.
function Events:read(stream, opts)
  check(self, "read")
  check_stream(stream, "read")
  opts = check_options(opts, READ_OPTIONS, 2, "read")
  options.list(opts, "types", "string", 2, "read")
  local bad = check_count(opts.from, "from") or check_count(opts.to, "to") or check_count(opts.limit, "limit")
    or options.seconds(opts.consistent_timeout, "consistent_timeout")
  if bad then return nil, bad end
  if opts.after_lsn and not replicas.lsn_number(opts.after_lsn) then
    return nil, errors.new("invalid", "after_lsn must be a token from db:causal_token(), such as '0/3000060'")
  end
  local rows, err = on_reader(self, opts, function(pool)
    return self.handle:read(stream, opts.from, opts.to, opts.limit, opts.types, opts.backward, pool)
  end)
  if not rows then return nil, err end
  return finish(self, rows, opts.raw)
end

local READ_ALL_OPTIONS = { after = "number|string", limit = "number", types = "table", prefix = "string", raw = "boolean",
                           partitions = "table", partition_count = "number" }

-- es:read_all({ after = cursor, limit = 1000, types, prefix, raw,
--               partitions = { p, … }, partition_count = n }) → events, cursor
-- partitions: only streams whose partition_for(stream, partition_count)
-- is one of them, filtered on the server (the cursor still covers every
-- position up to it).
function Events:read_all(opts)
  check(self, "read_all")
  opts = check_options(opts, READ_ALL_OPTIONS, 1, "read_all")
  options.list(opts, "types", "string", 1, "read_all")
  options.list(opts, "partitions", "number", 1, "read_all")
  if (opts.partitions == nil) ~= (opts.partition_count == nil) then
    return nil, errors.new("invalid", "partitions and partition_count go together")
  end
  local after = opts.after or 0
  if type(after) == "string" then
    local n = tonumber(after)
    if not n or not after:match("^%d+$") then
      return nil, errors.new("invalid", "cursor must be a position (digits), got '" .. after:sub(1, 40) .. "'")
    end
    after = n
  end
  local bad = check_count(after, "cursor") or check_count(opts.limit, "limit")
    or options.int(opts.partition_count, "partition_count", 1, 65536)
  if bad then return nil, bad end
  local rows, cursor = self.handle:read_all(after, opts.limit, opts.types, opts.prefix, opts.partition_count,
                                            opts.partitions)
  if not rows then return nil, cursor end
  local err
  rows, err = finish(self, rows, opts.raw)
  if not rows then return nil, err end
  return rows, cursor
end

function Events:version(stream)
  check(self, "version")
  check_stream(stream, "version")
  -- The primary: "read the version, then append with it" must see one's
  -- own and everyone's last append.
  return self.handle:version(stream)
end

function Events:status(stream)
  check(self, "status")
  check_stream(stream, "status")
  return self.handle:status(stream)
end

-- es:streams{ prefix = "", limit = 100, after = nil } → streams | nil, err
-- The store's streams in name order (byte order), from its heads: each
-- { stream, version, count, status, updated_at }, `count` the events it
-- holds now (fewer than `version` after retention or a delete). `after`
-- pages on: the last stream name of the previous page.
local STREAMS_OPTIONS = { prefix = "string", limit = "number", after = "string" }

function Events:streams(opts)
  check(self, "streams")
  opts = check_options(opts, STREAMS_OPTIONS, 1, "streams")
  local bad = options.int(opts.limit, "limit", 1, 2 ^ 31 - 1)
  if bad then return nil, bad end
  local store = self.handle:store()
  local events, heads = assert(core.quote_ident(store)), assert(core.quote_ident(store .. "_heads"))
  -- LIKE's wildcards in the prefix are plain characters
  local like = (opts.prefix or ""):gsub("[\\%%_]", "\\%0") .. "%"
  return self.db:query(([[SELECT h.stream, h.version, h.status, h.updated_at,
      (SELECT count(*) FROM %s e WHERE e.stream = h.stream) AS count
    FROM %s h WHERE h.stream LIKE $1 AND h.stream > $2 ORDER BY h.stream LIMIT $3]]):format(events, heads),
    like, opts.after or "", opts.limit or 100)
end

-- The store: the table as resolved when the store opened, "schema.table".
function Events:store()
  check(self, "store")
  return self.handle:store()
end

-- The end: read_all's cursor (an event that commits later, even one whose
-- append is in flight now, has a higher position), never lower than an end
-- reported before. "Start from the end" (subscriptions, projections, the
-- resty feed) starts here.
function Events:latest_position()
  check(self, "latest_position")
  return self.handle:latest_position()
end

-- The end as it stands, kept as its floor: removing events at or below it
-- never takes latest_position back (retention calls this first).
function Events:hold_end()
  check(self, "hold_end")
  return self.handle:hold_end()
end

local EXPIRE_OPTIONS = { batch = "number", max = "number", dry_run = "boolean" }

-- es:expire_idempotency_keys{ batch = 1000, max = 100000, dry_run = false }
--   → n: removes the keys older than the store's idempotency_ttl, oldest
-- first, `batch` per statement (each commits on its own) and at most `max`
-- per call; dry_run counts them (up to max). A key younger than the TTL is
-- never removed; a TTL of 0 removes nothing.
function Events:expire_idempotency_keys(opts)
  check(self, "expire_idempotency_keys")
  opts = check_options(opts, EXPIRE_OPTIONS, 1, "expire_idempotency_keys")
  local bad = options.int(opts.batch, "batch", 1, 1e7) or options.int(opts.max, "max", 1, 2 ^ 53)
  if bad then return nil, bad end
  local ttl = store_ttl(self)
  if ttl == 0 then return 0 end
  local batch, max = opts.batch or 1000, opts.max or 100000
  if opts.dry_run then return self.handle:expire_keys(ttl, math.min(max, 2 ^ 31 - 1), true) end
  local total = 0
  while total < max do
    local want = math.min(batch, max - total)
    local n, err = self.handle:expire_keys(ttl, want)
    if not n then return nil, err end
    total = total + n
    if n < want then break end
  end
  return total
end

-- ---- lifecycle ------------------------------------------------------------

function Events:tombstone(stream, reason, ...)
  check(self, "tombstone")
  check_stream(stream, "tombstone")
  no_more(3, "tombstone", ...)
  options.arg(reason, 2, "tombstone", "string|nil")
  return self.handle:tombstone(stream, reason)
end

for _, name in ipairs{ "archive", "restore" } do
  Events[name] = function(self, stream, ...)
    check(self, name)
    check_stream(stream, name)
    no_more(2, name, ...)
    return self.handle[name](self.handle, stream)
  end
end

-- Removing a stream's events (a hard delete, or a move to another store)
-- first holds the end of the store they leave, so removing its newest
-- events does not take latest_position back.
local function hold(es)
  local ok, err = es.handle:hold_end()
  if not ok then return nil, err end
  return true
end

function Events:delete(stream, ...)
  check(self, "delete")
  check_stream(stream, "delete")
  no_more(2, "delete", ...)
  local ok, err = hold(self)
  if not ok then return nil, err end
  return self.handle:delete(stream)
end

function Events:truncate()
  check(self, "truncate")
  return self.handle:truncate()
end

function Events:migrate()
  check(self, "migrate")
  return self.handle:migrate()
end

-- is_store(v) → whether v is an event store this module made: its real
-- metatable, not a `__name` any table can carry.
function _M.is_store(v)
  return getmetatable(v) == mt
end

local function check_other(other, fname)
  if not _M.is_store(other) then options.argerror(2, fname, "pgstore.events expected") end
  if not other.handle then options.raise("attempt to use a closed event store") end
end

-- Moves the stream's events to `other` and marks it archived here.
function Events:archive_to(stream, other, ...)
  check(self, "archive_to")
  check_stream(stream, "archive_to")
  check_other(other, "archive_to")
  no_more(3, "archive_to", ...)
  local ok, err = hold(self)
  if not ok then return nil, err end
  return self.handle:move(other.handle, stream, "archived")
end

-- Moves the stream's events back from `other`; it is active here again.
function Events:restore_from(stream, other, ...)
  check(self, "restore_from")
  check_stream(stream, "restore_from")
  check_other(other, "restore_from")
  no_more(3, "restore_from", ...)
  local ok, err = hold(other)
  if not ok then return nil, err end
  return other.handle:move(self.handle, stream, nil)
end

-- es:upcast(fn | registry): fn(event) → event runs on every decoded read;
-- a registry (pgstore.upcasters) is applied through its :apply method, and
-- appended events without a schema_version get the registry's newest
-- version of their type (they are written in the shape code reads).
function Events:upcast(up)
  check(self, "upcast")
  self.upcasters = nil
  if type(up) == "table" and type(up.apply) == "function" then
    local reg = up
    local rmt = getmetatable(reg)
    if rmt and rmt.__name == "pgstore.upcasters" then self.upcasters = reg end
    up = function(e) return reg:apply(e) end
  elseif up ~= nil and type(up) ~= "function" then
    options.argerror(1, "upcast", "function or upcaster registry expected, got " .. type(up))
  end
  self.upcaster = up
  return self
end

function Events:close()
  if self.handle then self.handle:close() end
  self.handle = nil
  if self.owns_db and self.db then self.db:close() end
end

mt.__tostring = function(self)
  return self.handle and ("pgstore.events (%s)"):format(self.table_name) or "pgstore.events (closed)"
end

return _M
