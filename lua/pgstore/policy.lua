-- SPDX-License-Identifier: MIT
-- pgstore.policy — store policies: rules over the streams whose names match
-- a glob (pgstore.glob): retention (max_age, max_count, truncate_before),
-- archiving (archive_after, optionally archive_to another store), how often
-- aggregates snapshot (snapshot_every), and append guards.
--
--   local policies = pgstore.policies{ "policies/carts.lua", { name = "audit", streams = "audit-*", max_age = "400d" } }
--   policies:install(es)                 -- guards run before every append
--   policies:apply(es, { dry_run = true }) -- retention and archiving (pgstore policy apply)
--
-- A stream is governed by the FIRST policy whose pattern matches it (list
-- specific patterns before general ones; a policy with no rules exempts its
-- streams from the ones after it). Bad policies are programming errors:
-- pgstore.policies raises with the file (or entry) and what is wrong.
local core = require "pgstore.core"
local errors = require "pgstore.errors"
local options = require "pgstore.options"
local glob = require "pgstore.glob"
local script = require "pgstore.script"

-- debug.getmetatable: handles hide their metatables from getmetatable (__metatable)
local type, pairs, ipairs, tostring, error, setmetatable, getmetatable, floor =
      type, pairs, ipairs, tostring, error, setmetatable, debug.getmetatable, math.floor
local format, concat = string.format, table.concat

local _M = {}
local Set = {}
local mt = { __index = Set, __name = "pgstore.policies", __metatable = false }
_M.Set = Set

-- ---- durations ----------------------------------------------------------------

local UNITS = { s = 1, m = 60, h = 3600, d = 86400, w = 604800 }

-- "30d", "12h", "15m", "45s", "2w", compounds "1d12h" / "1h 30m", or a
-- number of seconds → seconds | nil, message. Zero, negative, NaN and
-- ages the server cannot subtract from now (options.AGE_MAX) refused.
function _M.duration(v)
  if type(v) == "number" then
    local bad = options.seconds(v, "a duration", true, options.AGE_MAX)
    if bad then return nil, bad.message end
    return v
  end
  if type(v) ~= "string" then return nil, "a duration must be a string like \"30d\" or seconds, got " .. type(v) end
  local total, rest = 0, v:gsub("^%s+", ""):gsub("%s+$", "")
  if rest == "" then return nil, "an empty duration" end
  local pos = 1
  while pos <= #rest do
    local num, unit, after = rest:match("^(%d+%.?%d*)%s*(%a+)%s*()", pos)
    if not num then
      return nil, format("bad duration '%s': use a number and a unit: s, m, h, d or w (\"30d\", \"1h30m\")", v)
    end
    local mult = UNITS[unit]
    if not mult then
      return nil, format("bad duration '%s': unknown unit '%s' (use s, m, h, d or w)", v, unit)
    end
    total = total + tonumber(num) * mult
    pos = after
  end
  if total <= 0 then return nil, format("bad duration '%s': it must be longer than zero", v) end
  if total > options.AGE_MAX then
    return nil, format("bad duration '%s': at most %.0f seconds", v, options.AGE_MAX)
  end
  return total
end

-- ---- one policy -----------------------------------------------------------------

-- The fields a policy may have; validate() checks each value.
local FIELDS = {
  name = true, description = "string", streams = true, max_age = true, max_count = true,
  truncate_before = true, archive_after = true, archive_to = true, snapshot_every = true, guard = true,
}

-- The function being called (pgstore.policy or pgstore.policies): a bad
-- definition is a bad argument #1 to it, raised at the caller's line.
local defining = "policies"

local function fail(msg)
  options.argerror(1, defining, "policy: " .. msg)
end

local function whole(v)
  return type(v) == "number" and v == v and v >= 1 and v <= 2 ^ 53 and v == floor(v)
end

-- The real event store's metatable, not its `__name`: a policy script can
-- set that on any table.
local function is_events(v)
  return require("pgstore.events").is_store(v)
end

-- Checks one policy table; returns the normalised policy.
local function validate(p, where)
  if type(p) ~= "table" then fail(format("%s: a policy must be a table, got %s", where, type(p))) end
  p = script.fields(p)
  if type(p.streams) == "table" then p.streams = script.fields(p.streams) end
  local problem = options.problem(p, FIELDS, "name, streams, max_age, max_count, truncate_before, "
    .. "archive_after, archive_to, snapshot_every, guard, description")
  if problem then fail(format("%s: %s", where, problem)) end
  local name = p.name
  if name ~= nil and (type(name) ~= "string" or name == "") then
    fail(format("%s: field 'name' must be a non-empty string", where))
  end
  name = name or where
  local where_n = p.name and format("%s (policy '%s')", where, name) or where
  local streams = p.streams
  if type(streams) == "string" then streams = { streams } end
  if type(streams) ~= "table" or #streams == 0 then
    fail(format("%s: field 'streams' must be a pattern (\"cart-*\") or a list of them; use \"*\" for every stream",
      where_n))
  end
  local globs, list = {}, {}
  for i, s in ipairs(streams) do
    local c, err = glob.compile(s)
    if not c then fail(format("%s: streams[%d]: %s", where_n, i, err)) end
    globs[i], list[i] = c, s
  end
  local out = {
    name = name, description = p.description, origin = where, streams = list, globs = globs,
    guard = p.guard,
  }
  for _, k in ipairs{ "max_age", "archive_after" } do
    if p[k] ~= nil then
      local secs, err = _M.duration(p[k])
      if not secs then fail(format("%s: field '%s': %s", where_n, k, err)) end
      out[k], out[k .. "_text"] = secs, type(p[k]) == "string" and p[k] or (p[k] .. "s")
    end
  end
  for _, k in ipairs{ "max_count", "truncate_before", "snapshot_every" } do
    if p[k] ~= nil then
      if not whole(p[k]) then
        fail(format("%s: field '%s' must be a whole number >= 1, got %s", where_n, k, tostring(p[k])))
      end
      out[k] = p[k]
    end
  end
  if p.guard ~= nil and type(p.guard) ~= "function" then
    fail(format("%s: field 'guard' must be a function(stream, events, ctx), got %s", where_n, type(p.guard)))
  end
  local to = p.archive_to
  if to ~= nil then
    if type(to) == "string" then
      local _, qerr = core.quote_ident(to)
      if qerr then fail(format("%s: field 'archive_to': %s", where_n, tostring(qerr))) end
    elseif not is_events(to) then
      fail(format("%s: field 'archive_to' must be an events table name or an event store, got %s", where_n,
        type(to)))
    end
    if p.archive_after == nil then
      fail(format("%s: field 'archive_to' needs 'archive_after' (when to archive)", where_n))
    end
    out.archive_to = to
  end
  if out.snapshot_every and out.max_count and out.snapshot_every > out.max_count then
    fail(format("%s: snapshot_every (%d) is larger than max_count (%d): retention would remove events "
      .. "no snapshot covers, and aggregates could not load these streams", where_n, out.snapshot_every,
      out.max_count))
  end
  out.retention = out.max_age ~= nil or out.max_count ~= nil or out.truncate_before ~= nil
  return out
end

-- Entries: policy tables, lists of them, and paths of scripts returning either.
local function collect(entry, where, out, depth)
  if depth > 8 then fail(where .. ": lists nested too deeply") end
  if type(entry) == "string" then
    local res, err = script.load(entry)
    if not res then fail(err) end
    return collect(res, entry, out, depth + 1)
  end
  if type(entry) ~= "table" then
    fail(format("%s: expected a policy table or a script path, got %s", where, type(entry)))
  end
  if #entry == 0 or entry.streams ~= nil or entry.name ~= nil then
    out[#out + 1] = validate(entry, where)
    return
  end
  for k in pairs(entry) do
    if type(k) ~= "number" then
      fail(format("%s: unknown field '%s' (a list holds only policies)", where, tostring(k)))
    end
  end
  for i, p in ipairs(entry) do
    collect(p, type(p) == "string" and p or format("%s (policy %d)", where, i), out, depth + 1)
  end
end

-- ---- the set --------------------------------------------------------------------

-- pgstore.policies{ policy | "file.lua" | { … }, … } → set (raises when invalid)
function _M.new(list, fname)
  fname = fname or "policies"
  defining = fname
  if type(list) ~= "table" then
    options.argerror(1, fname, "list of policies or script paths expected, got " .. type(list))
  end
  local all = {}
  if list.streams ~= nil or list.name ~= nil then
    collect(list, "policy", all, 1)
  else
    for k in pairs(list) do
      if type(k) ~= "number" then
        fail(format("unknown field '%s' in the list (it holds only policies and script paths)", tostring(k)))
      end
    end
    for i, entry in ipairs(list) do
      collect(entry, type(entry) == "string" and entry or format("entry %d", i), all, 1)
    end
  end
  if #all == 0 then fail("no policies given") end
  local seen = {}
  for _, p in ipairs(all) do
    if seen[p.name] then fail(format("two policies are named '%s' (%s and %s)", p.name, seen[p.name], p.origin)) end
    seen[p.name] = p.origin
  end
  return setmetatable({ policies = all }, mt)
end

-- pgstore.policy(table | "file.lua") → set of the policies it holds
function _M.one(p)
  if type(p) ~= "table" and type(p) ~= "string" then
    options.argerror(1, "policy", "policy table or script path expected, got " .. type(p))
  end
  return _M.new({ p }, "policy")
end

local function check(self, fname)
  if getmetatable(self) ~= mt then
    options.argerror(1, fname, format("pgstore.policies expected; use policies:%s()", fname))
  end
end

local function check_stream(stream, fname)
  options.arg(stream, 1, fname, "string", "stream name (string)")
end

local function matches(p, stream)
  for _, c in ipairs(p.globs) do
    if glob.match(c, stream) then return true end
  end
  return false
end

-- policies:match(stream) → the policy governing the stream (the first whose
-- pattern matches) | nil. Policies are plain tables: name, streams,
-- max_age (seconds), max_count, truncate_before, archive_after, archive_to,
-- snapshot_every, guard, origin.
function Set:match(stream)
  check(self, "match")
  check_stream(stream, "match")
  for _, p in ipairs(self.policies) do
    if matches(p, stream) then return p end
  end
  return nil
end

-- policies:list() → the policies in order
function Set:list()
  check(self, "list")
  return self.policies
end

-- policies:snapshot_every(stream) → n | nil
function Set:snapshot_every(stream)
  check(self, "snapshot_every")
  check_stream(stream, "snapshot_every")
  local p = self:match(stream)
  return p and p.snapshot_every
end

-- policies:snapshot_due(stream, version [, last_snapshot_version = 0]) → boolean:
-- true when the governing policy's snapshot_every events (or more) were
-- appended since the last snapshot.
function Set:snapshot_due(stream, version, since)
  check(self, "snapshot_due")
  check_stream(stream, "snapshot_due")
  options.arg(version, 2, "snapshot_due", "number", "version (number)")
  options.arg(since, 3, "snapshot_due", "number|nil", "last snapshot version (number)")
  local p = self:match(stream)
  local n = p and p.snapshot_every
  return n ~= nil and version - (since or 0) >= n
end

-- Runs the guard of the policy governing `stream`: true | nil, rejected.
-- ctx = { policy, stream, expected, idempotency_key, time, batch, version() }.
function Set:check_append(stream, events, info, es)
  check(self, "check_append")
  local p = self:match(stream)
  if not (p and p.guard) then return true end
  info = info or {}
  es = es or info.es
  local ctx = {
    policy = p.name, stream = stream, expected = info.expected, idempotency_key = info.idempotency_key,
    time = info.time, batch = info.batch,
    version = function()
      if not es then return nil end
      return es:version(stream)
    end,
  }
  local ok, res, reason = script.call(p.guard, stream, events, ctx)
  if ok and res then return true end
  if not ok then
    reason = res -- the guard raised: "file.lua:LINE: message"
  elseif reason == nil then
    reason = "the guard returned " .. tostring(res)
  end
  reason = tostring(reason)
  return nil, errors.new("rejected", format("policy '%s' rejected the append to %s: %s", p.name, stream, reason),
    { policy = p.name, stream = stream, reason = reason })
end

-- policies:install(es) → es: every append and append_many batch to a
-- governed stream runs its policy's guard first (nothing is written when
-- it refuses: nil, err with err.code = "rejected", err.reason, err.policy).
-- Replaces a guard installed before; a set without guards removes it.
function Set:install(es)
  check(self, "install")
  if not is_events(es) then options.argerror(1, "install", "event store expected (db:events())") end
  local any = false
  for _, p in ipairs(self.policies) do any = any or p.guard ~= nil end
  if not any then
    es.guard = nil
    return es
  end
  es.guard = function(stream, events, info)
    return self:check_append(stream, events, info, es)
  end
  return es
end

-- policies:apply(es, { dry_run = false, batch = 1000, page = 500, on_stream = fn(item),
--   on_progress = fn(p) }) → summary | nil, err. See pgstore.retention.
function Set:apply(es, opts)
  check(self, "apply")
  if not is_events(es) then options.argerror(1, "apply", "event store expected (db:events())") end
  return require("pgstore.retention").apply(self, es, opts)
end

-- policies:plan(es, opts) → summary | nil, err: apply with dry_run = true.
function Set:plan(es, opts)
  check(self, "plan")
  if not is_events(es) then options.argerror(1, "plan", "event store expected (db:events())") end
  if opts ~= nil and type(opts) ~= "table" then options.argerror(2, "plan", "options table expected, got " .. type(opts)) end
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.dry_run = true
  return require("pgstore.retention").apply(self, es, o, "plan")
end

-- One line describing a policy's rules, for listings.
function _M.describe(p)
  local parts = {}
  if p.max_count then parts[#parts + 1] = "max_count " .. p.max_count end
  if p.max_age then parts[#parts + 1] = "max_age " .. p.max_age_text end
  if p.truncate_before then parts[#parts + 1] = "truncate_before " .. p.truncate_before end
  if p.archive_after then
    parts[#parts + 1] = "archive_after " .. p.archive_after_text
    if p.archive_to then
      parts[#parts + 1] = "archive_to " .. (type(p.archive_to) == "string" and p.archive_to or p.archive_to.table_name)
    end
  end
  if p.snapshot_every then parts[#parts + 1] = "snapshot_every " .. p.snapshot_every end
  if p.guard then parts[#parts + 1] = "guard" end
  return ("streams %s: %s"):format(concat(p.streams, ", "), #parts > 0 and concat(parts, ", ") or "no rules")
end

mt.__tostring = function(self)
  return format("pgstore.policies (%d)", #self.policies)
end

return _M
