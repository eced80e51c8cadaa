-- SPDX-License-Identifier: MIT
-- resty.pgstore.events — the event store in nginx. Reads and writes run in
-- worker threads on a pgstore event store opened with the "raw" codec;
-- the codec (JSON by default, or your own encode/decode functions) and the
-- upcaster run here, in the request's VM, because functions cannot cross
-- into a thread VM. Reads decode from the raw rows the thread returns.
--
-- NOTIFY after appends: pgstore's C notifier is a thread with its own
-- connection per store object, which thread VMs would multiply; here each
-- worker sends one coalesced NOTIFY per channel after committed appends
-- (resty.pgstore.timers.notify), through its pool. With notify_in_tx the
-- store notifies inside the append's transaction instead, as pgstore does.
-- Appends inside db:transaction notify after its commit.
local codecs = require "pgstore.codec"
local pg_events = require "pgstore.events"
local errors = require "pgstore.errors"
local options = require "pgstore.options"
local call_mod = require "resty.pgstore.call"
local stores = require "resty.pgstore.stores"
local timers = require "resty.pgstore.timers"

-- debug.getmetatable: handles hide their metatables from getmetatable (__metatable)
local type, pairs, ipairs, tostring, setmetatable, getmetatable, select =
      type, pairs, ipairs, tostring, setmetatable, debug.getmetatable, select
local format = string.format
local call, raise, argerr, check_arg = call_mod.call, call_mod.raise, call_mod.arg, call_mod.check
local null = require("pgstore.core").null

local _M = {}
local Events = {}
local mt = { __index = Events, __name = "resty.pgstore.events", __metatable = false }

local OPTIONS = {
  table = "string", notify = "string|boolean", notify_in_tx = "boolean", codec = "string|table",
  migrate = "boolean", max_event_size = "number", notify_interval = "number", idempotency_ttl = "number",
}

local check_options = options.check

-- db:events{ table = "events", notify = "pgstore_events" | false, notify_in_tx = false,
--            codec = "json" | "raw" | { encode, decode }, migrate = true,
--            max_event_size, notify_interval = 0.005, idempotency_ttl = 604800 }
--   → es (no I/O until the first call)
function _M.new(db, _, opts)
  opts = check_options(opts, OPTIONS, 1, "events")
  local codec, cerr = codecs.resolve(opts.codec)
  if not codec then return nil, errors.new("invalid", cerr) end
  local channel = opts.notify
  if channel == nil or channel == true then channel = "pgstore_events" end
  local sopts = {
    table = opts.table, codec = "raw", migrate = opts.migrate,
    max_event_size = opts.max_event_size, idempotency_ttl = opts.idempotency_ttl,
    notify = (opts.notify_in_tx and channel) or false,
    notify_in_tx = opts.notify_in_tx,
  }
  return setmetatable({
    db = db, codec = codec, upcaster = nil, channel = channel or nil,
    table_name = opts.table or "events", sopts = sopts, skey = "events:" .. stores.serialize(sopts),
    notify_after = channel and not opts.notify_in_tx, notify_interval = opts.notify_interval,
  }, mt)
end

local function check(self, fname)
  if getmetatable(self) ~= mt then
    raise(format("bad argument #1 to '%s' (resty.pgstore.events expected; use es:%s())", fname, fname))
  end
  if self.closed then raise("attempt to use a closed event store") end
  if self.db.closed then raise("attempt to use a closed connection") end
end

-- A store call; inside a transaction it runs on the transaction's
-- connection (and slot).
local function run(self, method, txid, txarg, n, ...)
  local db = self.db
  if txid then
    return call_mod.on(db.cfg, txid, "store", db.spec, "events", self.skey, self.sopts, method,
                       txid, txarg, n, ...)
  end
  return call(db.cfg, "store", db.spec, "events", self.skey, self.sopts, method, txid, txarg, n, ...)
end

-- The same store on its db's background slot (the feed's reads).
function Events:_background()
  local bg = {}
  for k, v in pairs(self) do bg[k] = v end
  bg.db = self.db:_background()
  return setmetatable(bg, mt)
end

-- ---- writes ----------------------------------------------------------------------

-- Events with data and metadata encoded by the codec (JSON text for the
-- thread's raw store) | nil, err (invalid). Anything malformed goes on
-- as it is, for pgstore's own checks to report.
local function encode_events(self, events, n, fname)
  if type(events) ~= "table" then return events end
  local out = {}
  for i, e in ipairs(events) do
    if type(e) ~= "table" then
      out[i] = e
    else
      pg_events.check_event_fields(e, i, n, fname)
      local data, derr = codecs.encode(self.codec, e.data == nil and null or e.data)
      if not data then
        return nil, errors.new("invalid", format("event %d: cannot encode data: %s", i, derr))
      end
      local meta
      if e.metadata ~= nil then
        meta, derr = codecs.encode(self.codec, e.metadata)
        if not meta then
          return nil, errors.new("invalid", format("event %d: cannot encode metadata: %s", i, derr))
        end
      end
      out[i] = { type = e.type, data = data, metadata = meta, id = e.id, schema_version = e.schema_version }
    end
  end
  return out
end

local function notify(self, position, tx)
  if not self.notify_after or type(position) ~= "number" then return end
  if tx then
    -- Sent once the transaction commits (see db:transaction).
    local a = tx.appended or {}
    tx.appended = a
    if not a[self.channel] or position > a[self.channel] then a[self.channel] = position end
    return
  end
  timers.notify(self.db, self.channel, position, self.notify_interval)
end

-- es:append(stream, events[, { expected, idempotency_key, time, tx }]) → result | nil, err
function Events:append(stream, events, opts)
  check(self, "append")
  check_arg(stream, 1, "append", "string")
  check_arg(opts, 3, "append", "table|nil")
  local tx
  opts, tx = stores.split_tx(self.db, opts, 3, "append")
  local encoded, err = encode_events(self, events, 2, "append")
  if not encoded then return nil, err end
  local res
  res, err = run(self, "append", tx and tx.id or nil, 3, 3, stream, encoded, opts)
  if not res then
    if tx then tx._note(tx, res, err) end
    return nil, err
  end
  if not res.replayed then notify(self, res.last_position, tx) end
  return res
end

-- es:append_many({ { stream, events, expected, idempotency_key }, … }[, { tx }]) → results | nil, err
function Events:append_many(batches, opts)
  check(self, "append_many")
  check_arg(batches, 1, "append_many", "table")
  check_arg(opts, 2, "append_many", "table|nil")
  local tx
  opts, tx = stores.split_tx(self.db, opts, 2, "append_many")
  local bad = pg_events.check_batch_count(batches)
  if bad then return nil, bad end
  local out = {}
  for i, b in ipairs(batches) do
    if type(b) == "table" then
      local encoded, err = encode_events(self, b.events, 1, "append_many")
      if not encoded then
        err.batch = i
        return nil, err
      end
      out[i] = { stream = b.stream, events = encoded, expected = b.expected,
                 idempotency_key = b.idempotency_key, time = b.time }
    else
      out[i] = b
    end
  end
  local res, err = run(self, "append_many", tx and tx.id or nil, 2, 2, out, opts)
  if not res then
    if tx then tx._note(tx, res, err) end
    return nil, err
  end
  local last
  for _, r in ipairs(res) do
    if not r.replayed and (not last or r.last_position > last) then last = r.last_position end
  end
  if last then notify(self, last, tx) end
  return res
end

-- ---- reads -------------------------------------------------------------------------

local function raw_opts(opts, n, fname)
  check_arg(opts, n, fname, "table|nil")
  local o, raw = {}, false
  if opts then
    for k, v in pairs(opts) do o[k] = v end
    raw = opts.raw == true
  end
  o.raw = true
  return o, raw
end

-- es:read(stream[, { from, to, limit, types, backward, raw, consistent }]) → events | nil, err
function Events:read(stream, opts)
  check(self, "read")
  check_arg(stream, 1, "read", "string")
  local o, raw = raw_opts(opts, 2, "read")
  local rows, err = run(self, "read", nil, 0, 2, stream, o)
  if not rows then return nil, err end
  return pg_events.decode_rows(self, rows, raw)
end

-- es:read_all([{ after, limit = 1000, types, prefix, raw }]) → events, cursor | nil, err
function Events:read_all(opts)
  check(self, "read_all")
  local o, raw = raw_opts(opts, 1, "read_all")
  local rows, cursor = run(self, "read_all", nil, 0, 1, o)
  if not rows then return nil, cursor end
  local err
  rows, err = pg_events.decode_rows(self, rows, raw)
  if not rows then return nil, err end
  return rows, cursor
end

-- Decodes raw rows (from es:read_all{ raw = true } or a feed) with the
-- store's codec and upcaster. The rows are copied first: feed rows are
-- shared between requests.
function Events:decode(rows)
  check(self, "decode")
  local copy = {}
  for i, r in ipairs(rows) do
    local e = {}
    for k, v in pairs(r) do e[k] = v end
    copy[i] = e
  end
  return pg_events.decode_rows(self, copy, false)
end

-- ---- everything else: as pgstore, in a thread ----------------------------------------

local PLAIN = {
  version = { "string" }, status = { "string" }, latest_position = {}, hold_end = {},
  expire_idempotency_keys = { "table|nil" },
  tombstone = { "string", "string|nil" }, archive = { "string" }, restore = { "string" },
  delete = { "string" }, truncate = {}, migrate = {},
}
for name, types in pairs(PLAIN) do
  Events[name] = function(self, ...)
    check(self, name)
    for i, t in ipairs(types) do check_arg((select(i, ...)), i, name, t) end
    return run(self, name, nil, 0, #types, ...)
  end
end

local function move(self, stream, other, method)
  check(self, method)
  check_arg(stream, 1, method, "string")
  if getmetatable(other) ~= mt then argerr(2, method, "resty.pgstore.events expected") end
  if other.closed then raise("attempt to use a closed event store") end
  local me = { self.db.spec, self.skey, self.sopts }
  local them = { other.db.spec, other.skey, other.sopts }
  return call_mod.call2(self.db.cfg, other.db.cfg, "events_move", me, them, stream, method)
end

-- es:archive_to(stream, other_es) → events moved | nil, err
function Events:archive_to(stream, other) return move(self, stream, other, "archive_to") end
-- es:restore_from(stream, other_es) → events moved | nil, err
function Events:restore_from(stream, other) return move(self, stream, other, "restore_from") end

-- es:upcast(fn | registry) → es: runs on every decoded read, in this VM.
function Events:upcast(up)
  check(self, "upcast")
  if type(up) == "table" and type(up.apply) == "function" then
    local reg = up
    up = function(e) return reg:apply(e) end
  elseif up ~= nil and type(up) ~= "function" then
    argerr(1, "upcast", "function or upcaster registry expected, got " .. type(up))
  end
  self.upcaster = up
  return self
end

function Events:close()
  self.closed = true
end

mt.__tostring = function(self)
  return self.closed and "resty.pgstore.events (closed)"
    or format("resty.pgstore.events (%s)", self.table_name)
end

return _M
