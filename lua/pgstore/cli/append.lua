-- SPDX-License-Identifier: MIT
-- `pgstore append STREAM TYPE JSON|--data-file FILE [--expected N|any|no_stream|exists]
--  [--metadata JSON] [--key IDEMPOTENCY_KEY] [--table T]` appends one event
-- whose data is the JSON given, and prints where it landed. With --ndjson
-- it reads events from stdin, one JSON object a line, for bulk import,
-- with a progress line on a terminal. Results print as JSON whose keys
-- are always in the same order.
local args = require "pgstore.cli.args"
local cjson = require "cjson"
local sys = require "pgstore.sys"

local _M = {
  usage = "pgstore append STREAM TYPE JSON|--data-file FILE [--expected N|any|no_stream|exists] [--metadata JSON]"
    .. " [--key K] [--table T] | append --ndjson [--table T] < FILE",
  summary = "append one event from the command line, or many from stdin",
}

local SPEC = args.options{
  { "--expected", "value", arg = "N|any|no_stream|exists", help = "refuse unless the stream is at that version",
    default = "any" },
  { "--metadata", "value", arg = "JSON", help = "the event's metadata", default = "none" },
  { "--key", "value", arg = "K", help = "idempotency key: a retry with it appends nothing twice", default = "none" },
  { "--data-file", "value", arg = "FILE", help = "the event's data from a file, in place of JSON", default = "none" },
  { "--ndjson", "flag", help = 'read events from stdin, one a line: {"stream", "type", "data"[, "metadata",'
    .. ' "expected", "key"]}' },
  { "--policy", "list", arg = "FILE", help = "store policies whose guards judge every append (repeatable)",
    default = "none" },
  { "--table", "value", arg = "EVENTS", help = "the event store", default = "events" },
}
_M.help = _M.summary .. "\n\noptions:\n" .. args.describe(SPEC)

local RESULT_KEYS = { "stream", "count", "first_version", "last_version", "first_position", "last_position",
                      "replayed" }

-- The result as JSON, keys in RESULT_KEYS' order (then any others, sorted).
local function result_json(res)
  local parts, seen = {}, {}
  for _, k in ipairs(RESULT_KEYS) do
    if res[k] ~= nil then parts[#parts + 1] = cjson.encode(k) .. ":" .. cjson.encode(res[k]) end
    seen[k] = true
  end
  local rest = {}
  for k in pairs(res) do if not seen[k] then rest[#rest + 1] = k end end
  table.sort(rest)
  for _, k in ipairs(rest) do parts[#parts + 1] = cjson.encode(k) .. ":" .. cjson.encode(res[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- "7" → 7; any, no_stream, exists as they are: expected | nil, message
-- (anything else, such as -1, is refused here, before any connection)
local EXPECTED_WORDS = { any = true, no_stream = true, exists = true }
local function expected_of(v, name)
  if v == nil then return nil end
  if type(v) == "number" then v = ("%.0f"):format(v) end
  if type(v) == "string" and v:match("^%d+$") then return args.number(name, v, args.whole(0, 2 ^ 53)) end
  if EXPECTED_WORDS[v] then return v end
  return nil, ("%s takes a version (0 or more), any, no_stream or exists, not %s"):format(name, tostring(v))
end

-- The policies of --policy FILE…, loaded before connecting: policies | nil,
-- message naming the user's file (not the loader's own frame).
local function load_policies(files)
  for _, f in ipairs(files) do
    local h, ferr = io.open(f)
    if not h then return nil, "--policy: " .. tostring(ferr) end
    h:close()
  end
  local ok, res = pcall(require("pgstore").policies, files)
  if ok then return res end
  -- a bad definition is raised as a bad argument to pgstore.policies at
  -- the loader's line: keep what it says of the user's file
  local msg = tostring(res):gsub("^[^\n]-pgstore/[%w_/]+%.lua:%d+: ", "")
  msg = msg:match("^bad argument #1 to '[%w_.]+' %(policy: (.*)%)$") or msg
  return nil, "--policy: " .. msg
end

-- Guards judge events as the Lua API gives them to append: data and
-- metadata as tables. Without guards the JSON text goes as it is (codec raw).
local decoded = false
local function append_one(es, stream, etype, data, metadata, expected, key)
  if decoded then
    local ok, d = pcall(cjson.decode, data)
    if not ok then return nil, "data is no JSON: " .. tostring(d) end
    data = d
    if metadata then
      ok, metadata = pcall(cjson.decode, metadata)
      if not ok then return nil, "metadata is no JSON: " .. tostring(metadata) end
    end
  end
  return es:append(stream, { { type = etype, data = data, metadata = metadata } },
    { expected = expected, idempotency_key = key })
end

-- Events from stdin, one JSON object a line: prints each result, a
-- progress line on a terminal, and a summary on stderr.
local function bulk(host, es)
  local tty, n, lineno, t0 = sys.isatty(2), 0, 0, require("pgstore.core").now()
  local last_report = t0
  for line in io.stdin:lines() do
    lineno = lineno + 1
    if line:match("%S") then
      local ok, ev = pcall(cjson.decode, line)
      if not ok or type(ev) ~= "table" or type(ev.stream) ~= "string" or type(ev.type) ~= "string" or ev.data == nil then
        return host.fail(("stdin:%d: expected {\"stream\", \"type\", \"data\"}"):format(lineno))
      end
      local expected, msg = expected_of(ev.expected, "expected")
      if msg then return host.fail(("stdin:%d: %s"):format(lineno, msg)) end
      local meta = ev.metadata ~= nil and ev.metadata ~= cjson.null and cjson.encode(ev.metadata) or nil
      local res, err = append_one(es, ev.stream, ev.type, cjson.encode(ev.data), meta, expected, ev.key)
      if not res then return host.fail(("stdin:%d: %s"):format(lineno, tostring(err))) end
      host.print_json(result_json(res))
      n = n + 1
      local now = require("pgstore.core").now()
      if tty and now - last_report >= 1 then
        last_report = now
        io.stderr:write(("\rappended %d events (%.0f/s)"):format(n, n / math.max(now - t0, 1e-6)))
      end
    end
  end
  local secs = require("pgstore.core").now() - t0
  if tty then io.stderr:write("\r") end
  host.say(("appended %d events in %.2fs (%.0f events/s)"):format(n, secs, n / math.max(secs, 1e-6)))
  return 0
end

function _M.main(host, argv)
  local o, pos = args.parse(argv, SPEC)
  if not o then return host.usage_error("append: " .. pos, _M.usage) end
  local data = pos[3]
  if o.ndjson then
    if #pos > 0 then return host.usage_error("append: --ndjson takes no STREAM TYPE JSON", _M.usage) end
  elseif o.data_file then
    if #pos ~= 2 then return host.usage_error("append: expected STREAM TYPE with --data-file", _M.usage) end
    local f, ferr = io.open(o.data_file)
    if not f then return host.fail("--data-file: " .. tostring(ferr)) end
    data = f:read("*a")
    f:close()
  elseif #pos ~= 3 then
    return host.usage_error("append: expected STREAM TYPE JSON", _M.usage)
  end
  local expected, msg = expected_of(o.expected, "--expected")
  if msg then return host.usage_error("append: " .. msg, _M.usage) end
  local policies, perr
  if o.policy then
    policies, perr = load_policies(o.policy)
    if not policies then return host.fail(perr) end
  end
  local db, err = host.connect{ pool_size = 1 }
  if not db then return host.fail(err) end
  local es
  decoded = o.policy ~= nil
  es, err = db:events{ table = o.table, codec = not decoded and "raw" or nil, migrate = host.migrate }
  if not es then db:close(); return host.fail(err) end
  if policies then
    local ok, ierr = pcall(policies.install, policies, es)
    if not ok then es:close(); db:close(); return host.fail(ierr) end
  end
  local rc
  if o.ndjson then
    rc = bulk(host, es)
  else
    local res
    res, err = append_one(es, pos[1], pos[2], data, o.metadata, expected, o.key)
    if res then host.print_json(result_json(res)); rc = 0 else rc = host.fail(err) end
  end
  es:close()
  db:close()
  return rc
end

return _M
