-- SPDX-License-Identifier: MIT
-- `pgstore append STREAM TYPE JSON [--expected N|any|no_stream|exists]
--  [--metadata JSON] [--key IDEMPOTENCY_KEY] [--table T]` appends one event
-- whose data is the JSON given, and prints where it landed.
local args = require "pgstore.cli.args"
local cjson = require "cjson"

local _M = {
  usage = "pgstore append STREAM TYPE JSON [--expected N|any|no_stream|exists] [--metadata JSON] [--key K] [--table T]",
  summary = "append one event from the command line",
}

local SPEC = args.options{
  { "--expected", "value", arg = "N|any|no_stream|exists", help = "refuse unless the stream is at that version",
    default = "any" },
  { "--metadata", "value", arg = "JSON", help = "the event's metadata", default = "none" },
  { "--key", "value", arg = "K", help = "idempotency key: a retry with it appends nothing twice", default = "none" },
  { "--table", "value", arg = "EVENTS", help = "the event store", default = "events" },
}
_M.help = _M.summary .. "\n\noptions:\n" .. args.describe(SPEC)

function _M.main(host, argv)
  local o, pos = args.parse(argv, SPEC)
  if not o then return host.usage_error("append: " .. pos, _M.usage) end
  if #pos ~= 3 then return host.usage_error("append: expected STREAM TYPE JSON", _M.usage) end
  local expected = o.expected
  if expected and expected:match("^%d+$") then
    local msg
    expected, msg = args.number("--expected", expected, args.whole(0, 2 ^ 53))
    if not expected then return host.usage_error("append: " .. msg, _M.usage) end
  end
  local db, err = host.connect{ pool_size = 1 }
  if not db then return host.fail(err) end
  local es
  es, err = db:events{ table = o.table, codec = "raw", migrate = host.migrate }
  if not es then db:close(); return host.fail(err) end
  local res
  res, err = es:append(pos[1], { { type = pos[2], data = pos[3], metadata = o.metadata } },
    { expected = expected, idempotency_key = o.key })
  es:close()
  db:close()
  if not res then return host.fail(err) end
  host.print_json(cjson.encode(res))
  return 0
end

return _M
