-- SPDX-License-Identifier: MIT
-- `pgstore tail [STREAM | --all] [--follow] [--types A,B] [--from N] [--limit N]`
-- prints events one per line: position, stream, version, type, data (JSON).
-- --json prints one JSON object per line instead, with the event's time.
-- --from is inclusive: a position with --all, a version with STREAM. A
-- stream that does not exist, or a store, is an error (exit 1), and
-- nothing is ever created.
-- --follow keeps printing new events as they commit (woken by NOTIFY,
-- polling every second without it) until SIGINT/SIGTERM, waiting out a
-- lost connection (a restart, a failover) with backoff (pgstore.outage).
local args = require "pgstore.cli.args"
local printable = require "pgstore.printable"
local escape, json = printable.escape, printable.json
local sys = require "pgstore.sys"
local outage = require "pgstore.outage"
local stores = require "pgstore.cli.stores"

local _M = {
  usage = "pgstore tail [STREAM | --all] [--follow] [--types A,B] [--from N] [--limit N] [--table T]",
  summary = "print events, one per line, and follow new ones",
}

local SPEC = args.options{
  { "--all", "flag", help = "every stream, in position order" },
  { "--follow", "flag", help = "keep printing new events until SIGINT/SIGTERM" },
  { "--types", "value", arg = "A,B", help = "only these event types", default = "all" },
  { "--from", args.whole(0, 2 ^ 53), arg = "N", help = "skip what comes before N (a position with --all, a version with STREAM)",
    default = "the start" },
  { "--limit", args.whole(0, 2 ^ 53), arg = "N", help = "stop after N events (0: no limit)", default = "0" },
  { "--table", "value", arg = "EVENTS", help = "the event store; never created here", default = "events" },
  { "--json", "flag", help = "one JSON object per line: position, stream, version, type, time, data, metadata" },
}
_M.help = _M.summary .. "\n\noptions:\n" .. args.describe(SPEC)

local function line(e)
  local data = e.data
  if e.metadata ~= nil and e.metadata ~= require("pgstore").null then
    data = data .. " " .. e.metadata
  end
  -- fields escaped one by one: the tabs between them are the only ones;
  -- data and metadata are the server's JSON text, kept JSON
  io.write(("%d\t%s\t%d\t%s\t%s\n"):format(e.position, escape(e.stream), e.version, escape(e.type), json(data)))
end

-- One event as one line of JSON, its keys always in this order; time as
-- the server wrote it (ISO 8601 with its offset), data and metadata are
-- the server's JSON text, kept as they are.
local cjson = require "cjson"
local function json_line(e)
  local meta = e.metadata
  if meta == nil or meta == require("pgstore").null then meta = "null" end
  io.write(json(('{"position":%d,"stream":%s,"version":%d,"type":%s,"time":%s,"data":%s,"metadata":%s}')
    :format(e.position, cjson.encode(e.stream), e.version, cjson.encode(e.type), cjson.encode(e.time), e.data, meta)), "\n")
end

function _M.main(host, argv)
  local o, pos = args.parse(argv, SPEC)
  if not o then return host.usage_error("tail: " .. pos, _M.usage) end
  local stream = pos[1]
  if (stream == nil) == (o.all == nil) or #pos > 1 then
    return host.usage_error("tail: give one STREAM or --all", _M.usage)
  end
  local from, limit = o.from or 0, o.limit or 0
  local db, err = host.connect{ pool_size = 2 }
  if not db then return host.fail(err) end
  local es
  -- read-only: never creates or upgrades a table
  es, err = stores.open(db, o.table, { codec = "raw" })
  if not es then db:close(); return host.fail(err) end
  -- a stream that is not there is a typo, unless we wait for it to start
  if stream and not o.follow then
    local v, verr = es:version(stream)
    if v == 0 then verr = ("no stream %s in %s"):format(stream, o.table or "events") end
    if verr then es:close(); db:close(); return host.fail(verr) end
  end
  local types = args.list(o.types)
  local listener
  if o.follow then
    sys.trap_signals()
    local ok, l = pcall(db.listen, db, es.channel)
    listener = ok and l or nil
  end

  -- --from is inclusive both ways: the first position (--all) or the
  -- first version (STREAM) printed
  local printed, cursor, version = 0, math.max(0, from - 1), (from > 0 and from or 1)
  local rc = 0
  -- One read from where the last one ended: rows | nil, err.
  local function read()
    if stream then
      local rows, rerr = es:read(stream, { from = version, types = types, raw = true,
                                           limit = limit > 0 and limit - printed or nil })
      if rows and #rows > 0 then version = rows[#rows].version + 1 end
      return rows, rerr
    end
    local rows, after = es:read_all{ after = cursor, types = types, raw = true,
                                     limit = limit > 0 and math.min(1000, limit - printed) or 1000 }
    if not rows then return nil, after end
    cursor = after
    return rows
  end
  -- --follow rides through a lost connection: the next read starts where
  -- the last one that answered ended, so nothing is printed twice or skipped.
  local ride = o.follow and outage.new{ what = "tail", say = host.say }
  while true do
    local rows
    if ride then
      rows, err = ride:call(read, { stopping = sys.interrupted })
      if not rows and outage.lost(err) then break end -- a signal while the server was away
    else
      rows, err = read()
    end
    if not rows then rc = host.fail(err); break end
    for _, e in ipairs(rows) do (o.json and json_line or line)(e) end
    io.stdout:flush()
    printed = printed + #rows
    if limit > 0 and printed >= limit then break end
    if #rows == 0 then
      if not o.follow or sys.interrupted() then break end
      local note, werr
      if listener then note, werr = listener:wait(1) end
      -- no listener, or one reconnecting by itself: poll
      if not listener or (not note and werr and werr.code ~= "timeout") then
        require("pgstore.core").sleep(listener and 0.1 or 1)
      end
      if sys.interrupted() then break end
    end
  end
  if listener then listener:close() end
  es:close()
  db:close()
  return rc
end

return _M
