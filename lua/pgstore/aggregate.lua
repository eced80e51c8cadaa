-- SPDX-License-Identifier: MIT
-- pgstore.aggregate — the everyday write path: load a stream's state (the
-- latest snapshot plus the events after it, folded through `apply`), run a
-- command against it, append what the command returns with the version it
-- saw as the expected version, and on a conflict (someone appended first)
-- load again and re-run the command, a bounded number of times.
--
--   local cart = pgstore.aggregate{
--     events = es, snapshots = ss, snapshot_every = 50,
--     initial = function() return { items = {} } end,
--     apply = {
--       ItemAdded = function(s, e) s.items[#s.items + 1] = e.data.sku; return s end,
--     },
--   }
--   local state, version, res = cart:execute("cart-1", function(s, v)
--     if #s.items >= 10 then return nil, "the cart is full" end
--     return { { type = "ItemAdded", data = { sku = "A1" } } }
--   end)
--
-- A command may run more than once (after a conflict), so it must only
-- decide, not act. Errors raised by handlers and commands propagate.
local core = require "pgstore.core"
local errors = require "pgstore.errors"
local options = require "pgstore.options"

-- debug.getmetatable: handles hide their metatables from getmetatable (__metatable)
local type, pairs, ipairs, tostring, error, getmetatable, setmetatable, floor =
      type, pairs, ipairs, tostring, error, debug.getmetatable, setmetatable, math.floor
local format = string.format

local _M = {}
local Agg = {}
local mt = { __index = Agg, __name = "pgstore.aggregate", __metatable = false }

local OPTIONS = {
  events = "table", snapshots = "table", initial = "function", apply = "table", policy = "table",
  snapshot_every = "number", retries = "number", ignore_unknown = "boolean", schema_version = "number",
  page = "number",
}
local EXECUTE_OPTIONS = { idempotency_key = "string", retries = "number" }

local check_options = options.check

local function named(v, name)
  local m = type(v) == "table" and getmetatable(v)
  return m and m.__name == name
end

-- pgstore.aggregate{ events, snapshots?, initial, apply, policy?, snapshot_every?,
--   retries = 3, ignore_unknown = false, schema_version = 1, page = 1000 } → agg
-- Misuse raises; a number out of range is nil, err (invalid).
function _M.new(opts)
  options.arg(opts, 1, "aggregate", "table", "options table")
  check_options(opts, OPTIONS, 1, "aggregate")
  if not named(opts.events, "pgstore.events") then
    options.argerror(1, "aggregate", "option 'events' must be an event store (db:events())")
  end
  if opts.snapshots ~= nil and not named(opts.snapshots, "pgstore.snapshots") then
    options.argerror(1, "aggregate", "option 'snapshots' must be a snapshot store (db:snapshots())")
  end
  if opts.policy ~= nil and not named(opts.policy, "pgstore.policies") then
    options.argerror(1, "aggregate", "option 'policy' must be a policy set (pgstore.policies{ … })")
  end
  if not opts.initial then options.argerror(1, "aggregate", "option 'initial' (function() → state) is required") end
  if not opts.apply then options.argerror(1, "aggregate", "option 'apply' ({ EventType = function(state, event) }) is required") end
  -- the aggregate's own copy: changing the caller's table later changes nothing here
  local handlers = {}
  for k, v in next, opts.apply do
    if type(k) ~= "string" or type(v) ~= "function" then
      options.argerror(1, "aggregate", format("option 'apply' must map event types to functions (%s = %s)",
        tostring(k), type(v)))
    end
    handlers[k] = v
  end
  local bad = options.int(opts.snapshot_every, "snapshot_every", 1, 2 ^ 31)
    or options.int(opts.retries, "retries", 0, 2 ^ 31) or options.int(opts.schema_version, "schema_version", 1, 2 ^ 31)
    or options.int(opts.page, "page", 1, 2 ^ 31)
  if bad then return nil, bad end
  if opts.snapshot_every and not opts.snapshots then
    options.argerror(1, "aggregate", "option 'snapshot_every' needs a snapshot store (option 'snapshots')")
  end
  return setmetatable({
    events = opts.events, snapshots = opts.snapshots, initial = opts.initial, handlers = handlers,
    policy = opts.policy, snapshot_every = opts.snapshot_every, retries = opts.retries or 3,
    ignore_unknown = opts.ignore_unknown == true, schema_version = opts.schema_version or 1,
    page = opts.page or 1000,
  }, mt)
end

local function check(self, fname, stream)
  if getmetatable(self) ~= mt then
    options.argerror(1, fname, format("pgstore.aggregate expected; use agg:%s()", fname))
  end
  options.arg(stream, 1, fname, "string", "stream name (string)")
end

local function initial_state(self)
  local s = self.initial()
  if s == nil then error("aggregate: initial() returned nil; it must return the starting state", 0) end
  return s
end

-- Folds events into state; they must continue at version + 1 without gaps.
local function fold(self, stream, state, version, evs)
  local handlers = self.handlers
  for i = 1, #evs do
    local e = evs[i]
    if e.version ~= version + 1 then
      return nil, errors.new("not_found", format("cannot load %s: expected version %d, found %d — events "
        .. "were removed (retention?) and no snapshot covers them", stream, version + 1, e.version),
        { stream = stream, expected = version + 1, actual = e.version })
    end
    local h = handlers[e.type]
    if h then
      local s = h(state, e)
      if s ~= nil then state = s end
    elseif not self.ignore_unknown then
      return nil, errors.new("invalid", format("%s: no apply handler for event type '%s' (version %d); add "
        .. "one or set ignore_unknown = true", stream, e.type, e.version), { stream = stream, type = e.type,
        version = e.version })
    end
    version = e.version
  end
  return state, version
end

-- → state, version, snapshot version (0 without one) | nil, err
local function load(self, stream, primary)
  local es = self.events
  local state, version, since = nil, 0, 0
  if self.snapshots then
    local snap, err = self.snapshots:load(stream)
    if err then return nil, err end
    if snap and snap.schema_version == self.schema_version then
      state, version, since = snap.state, snap.version, snap.version
    end
  end
  if state == nil then state = initial_state(self) end
  local page = self.page
  while true do
    local evs, err = es:read(stream, { from = version + 1, limit = page, primary = primary })
    if not evs then return nil, err end
    state, version = fold(self, stream, state, version, evs)
    if state == nil then return nil, version end
    if #evs < page then break end
  end
  return state, version, since
end

-- agg:load(stream) → state, version (0 and initial() for a new stream) | nil, err
-- Reads like es:read (a replica when there is one); execute reads the primary.
function Agg:load(stream)
  check(self, "load", stream)
  local state, version = load(self, stream, false)
  return state, version
end

-- A command's refusal as an error: pgstore errors (and tables with a code)
-- pass as they are; anything else becomes `rejected` with it as the reason.
local function as_error(e)
  if type(e) == "table" and (getmetatable(e) == errors.mt or type(e.code) == "string") then return e end
  local msg = type(e) == "table" and type(e.message) == "string" and e.message or tostring(e)
  return errors.new("rejected", msg, { reason = e })
end

local function snapshot_due(self, stream, version, since)
  if not self.snapshots then return false end
  if self.snapshot_every then return version - since >= self.snapshot_every end
  if self.policy then return self.policy:snapshot_due(stream, version, since) end
  return false
end

-- agg:execute(stream, fn(state, version) → events | nil, err [, { idempotency_key, retries }])
--   → state, version, result | nil, err
-- fn returns a list of events (or one event) to append, an empty list or
-- nothing to do nothing, or nil, err to refuse (err: a string becomes
-- { code = "rejected", message = err }; an error table is passed on).
-- result is es:append's result (nil when nothing was appended), plus
-- `attempts`, and `snapshot` (the version saved) or `snapshot_error`.
-- After `retries` conflicts in a row: nil, err with err.code = "conflict".
function Agg:execute(stream, fn, opts)
  check(self, "execute", stream)
  if type(fn) ~= "function" then options.argerror(2, "execute", "command function expected, got " .. type(fn)) end
  opts = check_options(opts, EXECUTE_OPTIONS, 3, "execute")
  local bad = options.int(opts.retries, "retries", 0, 2 ^ 31)
  if bad then return nil, bad end
  local retries = opts.retries or self.retries
  local es = self.events
  local last
  for attempt = 1, retries + 1 do
    local state, version, since = load(self, stream, true)
    if state == nil then return nil, version end
    local evs, cerr = fn(state, version)
    if evs == nil then
      if cerr ~= nil then return nil, as_error(cerr) end
      return state, version, nil
    end
    if type(evs) ~= "table" then
      return nil, errors.new("invalid", "the command must return a list of events, nil or nil, err; got " .. type(evs))
    end
    if evs.type ~= nil then evs = { evs } end
    if #evs == 0 then return state, version, nil end
    if not self.ignore_unknown then
      -- refuse before writing what this aggregate could not load again
      for i = 1, #evs do
        local e = evs[i]
        if type(e) == "table" and type(e.type) == "string" and not self.handlers[e.type] then
          return nil, errors.new("invalid", format("%s: the command returned an event of type '%s', which has "
            .. "no apply handler; nothing was appended", stream, e.type), { stream = stream, type = e.type })
        end
      end
    end
    local res, err = es:append(stream, evs, { expected = version, idempotency_key = opts.idempotency_key })
    if res then
      res.attempts = attempt
      local new
      if res.replayed then
        -- the key was used before: nothing was written now; show the stream as it is
        state, version = load(self, stream, true)
        if state == nil then return nil, version end
        return state, version, res
      end
      new, err = es:read(stream, { from = res.first_version, to = res.last_version, primary = true })
      if not new then return nil, err end
      state, version = fold(self, stream, state, version, new)
      if state == nil then return nil, version end
      if snapshot_due(self, stream, version, since) then
        -- the events are committed whatever happens here: a failed save
        -- is reported beside the result, not as the command's failure
        local ok, written = self.snapshots:save(stream, version, state, { schema_version = self.schema_version })
        if not ok then
          res.snapshot_error = written
        elseif written then
          res.snapshot = version
        end
      end
      return state, version, res
    end
    if err.code ~= "conflict" then return nil, err end
    last = err
    if type(err.actual) == "number" and err.actual < version and since > 0 then
      -- the stream is older than our snapshot (deleted and begun again):
      -- the snapshot describes a stream that no longer exists
      local ok, ierr = self.snapshots:invalidate(stream)
      if not ok then return nil, ierr end
    end
    if attempt <= retries then core.backoff(attempt) end
  end
  last.attempts = retries + 1
  last.message = format("%s (gave up after %d attempts)", last.message, retries + 1)
  return nil, last
end

mt.__tostring = function() return "pgstore.aggregate" end

return _M
