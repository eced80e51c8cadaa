-- SPDX-License-Identifier: MIT
-- pgstore.upcasters — a registry of upcasters: each turns one event type's
-- data (and optionally metadata) from schema version `from` to `to = from + 1`.
-- Chains apply in order on every decoded read (es:upcast(registry)), so
-- code only ever sees the newest shape of an event.
--
--   local reg = pgstore.upcasters{
--     { type = "OrderPlaced", from = 1, to = 2, upcast = function(data, metadata) … return data end },
--     "upcasters/order_placed_v3.lua",   -- a script returning one upcaster or a list of them
--   }
--   es:upcast(reg)
--
-- A bad registry is a programming error: pgstore.upcasters raises, naming
-- the entry (its file when it came from one) and what is wrong with it.
local options = require "pgstore.options"
local script = require "pgstore.script"

-- debug.getmetatable: handles hide their metatables from getmetatable (__metatable)
local type, pairs, ipairs, tostring, error, pcall, setmetatable, getmetatable =
      type, pairs, ipairs, tostring, error, pcall, setmetatable, debug.getmetatable
local format, concat, sort, floor = string.format, table.concat, table.sort, math.floor

local _M = {}
local Registry = {}
local mt = { __index = Registry, __name = "pgstore.upcasters", __metatable = false }

-- The fields an upcaster may have; validate() checks each value.
local FIELDS = { type = true, from = true, to = true, upcast = true, description = "string" }
local MAX_SCHEMA_VERSION = 2147483647 -- the events table's schema_version is an int

local function whole(v)
  return type(v) == "number" and v == v and v >= 1 and v <= MAX_SCHEMA_VERSION and v == floor(v)
end

-- Where an upcaster came from, for messages: "file.lua" or "entry 3",
-- plus the position inside a file that returned a list.
local function origin(src, i)
  return i and format("%s (upcaster %d)", src, i) or src
end

-- A bad definition is a bad argument #1 to pgstore.upcasters, raised at
-- the caller's line.
local function fail(msg)
  options.argerror(1, "upcasters", "upcasters: " .. msg)
end

-- Checks one upcaster table; returns a normalised copy.
local function validate(u, where)
  if type(u) ~= "table" then fail(format("%s: an upcaster must be a table, got %s", where, type(u))) end
  u = script.fields(u)
  local problem = options.problem(u, FIELDS, "type, from, to, upcast, description")
  if problem then fail(format("%s: %s", where, problem)) end
  if type(u.type) ~= "string" or u.type == "" then
    fail(format("%s: field 'type' must be a non-empty string (the event type), got %s", where, type(u.type)))
  end
  if not whole(u.from) then
    fail(format("%s: field 'from' must be a whole schema version >= 1, got %s", where, tostring(u.from)))
  end
  if u.to ~= u.from + 1 then
    fail(format("%s: %s upcaster goes from %d to %s; each step must go to from + 1 = %d", where, u.type,
      u.from, tostring(u.to), u.from + 1))
  end
  if type(u.upcast) ~= "function" then
    fail(format("%s: field 'upcast' must be a function(data, metadata), got %s", where, type(u.upcast)))
  end
  return { type = u.type, from = u.from, to = u.to, upcast = u.upcast, description = u.description,
           origin = where }
end

-- Entries: upcaster tables, lists of them, and paths of scripts returning
-- either. Appends normalised upcasters to `out`.
local function collect(entry, where, out, depth)
  if depth > 8 then fail(where .. ": lists nested too deeply") end
  if type(entry) == "string" then
    local res, err = script.load(entry)
    if not res then fail(err) end
    return collect(res, entry, out, depth + 1)
  end
  if type(entry) ~= "table" then
    fail(format("%s: expected an upcaster table or a script path, got %s", where, type(entry)))
  end
  if entry.type ~= nil or entry.upcast ~= nil or entry.from ~= nil or entry.to ~= nil then
    out[#out + 1] = validate(entry, where)
    return
  end
  if #entry == 0 then fail(where .. ": an empty table is neither an upcaster nor a list of upcasters") end
  for k in pairs(entry) do
    if type(k) ~= "number" then
      fail(format("%s: unknown field '%s' (a list holds only upcasters)", where, tostring(k)))
    end
  end
  for i, u in ipairs(entry) do
    if type(u) == "string" then
      collect(u, u, out, depth + 1)
    else
      collect(u, origin(where, i), out, depth + 1)
    end
  end
end

-- pgstore.upcasters{ upcaster | "file.lua" | { … }, … } → registry (raises when invalid)
function _M.new(list)
  if type(list) ~= "table" then
    options.argerror(1, "upcasters", "list of upcasters or script paths expected, got " .. type(list))
  end
  local all = {}
  for i, entry in ipairs(list) do
    collect(entry, type(entry) == "string" and entry or format("entry %d", i), all, 1)
  end
  for k in pairs(list) do
    if type(k) ~= "number" or k < 1 or k > #list or k ~= floor(k) then
      fail(format("unknown field '%s' in the list (it holds only upcasters and script paths)", tostring(k)))
    end
  end

  -- Per type: the steps by `from`; duplicates and gaps are errors.
  local steps, first, last = {}, {}, {}
  for _, u in ipairs(all) do
    local s = steps[u.type]
    if not s then
      s = {}
      steps[u.type] = s
    end
    local prev = s[u.from]
    if prev then
      fail(format("two upcasters for %s %d→%d: %s and %s", u.type, u.from, u.to, prev.origin, u.origin))
    end
    s[u.from] = u
    if not first[u.type] or u.from < first[u.type] then first[u.type] = u.from end
    if not last[u.type] or u.to > last[u.type] then last[u.type] = u.to end
  end
  local types = {}
  for t in pairs(steps) do types[#types + 1] = t end
  sort(types)
  for _, t in ipairs(types) do
    local missing = {}
    for v = first[t], last[t] - 1 do
      if not steps[t][v] then missing[#missing + 1] = format("%d→%d", v, v + 1) end
    end
    if #missing > 0 then
      fail(format("the chain for %s has a gap: no upcaster for %s (it has steps from %d to %d)", t,
        concat(missing, ", "), first[t], last[t]))
    end
  end
  return setmetatable({ steps = steps, first = first, last = last, types = types, count = #all }, mt)
end

local function check(self, fname)
  if getmetatable(self) ~= mt then
    options.argerror(1, fname, format("pgstore.upcasters expected; use registry:%s()", fname))
  end
end

-- registry:latest(type) → the newest schema version of the type (1 when
-- the registry has no upcaster for it).
function Registry:latest(t)
  check(self, "latest")
  options.arg(t, 1, "latest", "string", "event type (string)")
  return self.last[t] or 1
end

-- registry:upcast(type, schema_version, data, metadata) → data, metadata,
-- schema_version: the chain applied to bare values. Raises when a step
-- fails or the version is older than the chain's first step.
function Registry:upcast(t, v, data, metadata)
  check(self, "upcast")
  local s = self.steps[t]
  if not s then return data, metadata, v end
  if v < self.first[t] then
    error(format("%s v%d is older than the first upcaster (%d→%d): no chain from v%d", t, v,
      self.first[t], self.first[t] + 1, v), 0)
  end
  while true do
    local u = s[v]
    if not u then break end
    local ok, d, m = pcall(u.upcast, data, metadata)
    if not ok then
      error(format("%s v%d→v%d (%s): %s", t, u.from, u.to, u.origin, tostring(d)), 0)
    end
    if d == nil then
      error(format("%s v%d→v%d (%s): upcast returned nothing; it must return the data", t, u.from, u.to,
        u.origin), 0)
    end
    data = d
    if m ~= nil then metadata = m end
    v = u.to
  end
  return data, metadata, v
end

-- registry:apply(event) → event, upcast to the newest version of its type
-- (schema_version updated). Events of types without upcasters, and events
-- already newer than the chain (written by newer code), pass unchanged.
-- Raises when a step fails; es:read reports that as an `invalid` error.
function Registry:apply(e)
  check(self, "apply")
  local t = e.type
  local s = self.steps[t]
  if not s then return e end
  local v = e.schema_version or 1
  if not s[v] and v >= self.first[t] then return e end
  e.data, e.metadata, e.schema_version = self:upcast(t, v, e.data, e.metadata)
  return e
end

-- registry:list() → array of { type, from, to, origin, description }, by type then version.
function Registry:list()
  check(self, "list")
  local out = {}
  for _, t in ipairs(self.types) do
    for v = self.first[t], self.last[t] - 1 do
      local u = self.steps[t][v]
      out[#out + 1] = { type = t, from = u.from, to = u.to, origin = u.origin, description = u.description }
    end
  end
  return out
end

mt.__tostring = function(self)
  return format("pgstore.upcasters (%d upcasters for %d types)", self.count, #self.types)
end

return _M
