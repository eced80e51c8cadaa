-- SPDX-License-Identifier: MIT
-- The handlers of scripts/nginx/nginx.conf: an event store over HTTP.
--
--   POST /streams/{id}   body: an event { type, data, metadata?, id? } or an
--                        array of them. If-Match: <version> (or "*": the
--                        stream exists), If-None-Match: * (it does not),
--                        Idempotency-Key: <key>.
--                        201 + the append's result; 400 bad JSON or events;
--                        409 version conflict; 410 tombstoned stream.
--   GET  /streams/{id}   ?from=&limit=&backward=1 → 200, a JSON array of
--                        events ([] for a stream that does not exist: the
--                        array is written here, since Debian's lua-cjson
--                        encodes an empty table as {}); ETag: the version
--                        of the last one.
--   GET  /changes        Server-Sent Events, one per committed event in
--                        global order, `id:` = its position; resumes after
--                        Last-Event-ID (or ?after=<position>); without
--                        either, starts at the current end.
--   GET  /ping           "pong", without touching the database.
--
-- Every route but /ping needs `Authorization: Bearer <token>`: nginx.conf
-- runs pgstore_auth.lua in the server-rewrite phase, before these handlers.
--
-- Event data travels as JSON text: rows are read raw and spliced into the
-- responses, never decoded and encoded again.
local cjson = require "cjson.safe"
local pgstore = require "resty.pgstore"

local ngx = ngx
local type, tonumber, ipairs, concat = type, tonumber, ipairs, table.concat
local encode = cjson.encode

local _M = {}

local conf      -- from init_by_lua: plain data
local db, es, feed

-- init_by_lua: remember the settings; nothing is opened in the master.
function _M.configure(c)
  conf = c
end

-- init_worker_by_lua: per worker. No I/O happens here: the db connects
-- lazily, in worker threads.
function _M.init_worker()
  db = assert(pgstore.connect{
    dsn = conf.dsn, pool_size = conf.pool_size or 8,
    application_name = conf.application_name or "pgstore-nginx", shared_dict = "pgstore",
  })
  es = db:events{ table = conf.table }
end

-- The worker's change feed, started by the first /changes request (its
-- LISTEN and read loops are timers; a worker that never streams changes
-- never runs them).
local function the_feed()
  if not feed then
    local f, err = db:feed{ events = es }
    if not f then return nil, err end
    feed = f
  end
  return feed
end

-- ---- responses ------------------------------------------------------------------------

local STATUS = {
  invalid = 400, conflict = 409, duplicate = 409, archived = 409, rejected = 422,
  deleted = 410, not_found = 404, timeout = 503, connection = 503, closed = 503,
}

local function reply(status, body)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say(type(body) == "string" and body or encode(body))
  return ngx.exit(ngx.OK)
end

local function fail(err)
  local status = STATUS[err.code] or 500
  if status == 500 then ngx.log(ngx.ERR, "pgstore: ", tostring(err)) end
  if status == 503 then ngx.header["Retry-After"] = "1" end
  return reply(status, { error = err.code, message = err.message, expected = err.expected,
                         actual = err.actual })
end

local function bad(message)
  return reply(400, { error = "invalid", message = message })
end

-- ---- appends -----------------------------------------------------------------------------

-- If-Match / If-None-Match → the append's `expected`, or nil and a message.
local function expected_version()
  local h = ngx.req.get_headers()
  local m, nm = h["if-match"], h["if-none-match"]
  if type(m) == "table" or type(nm) == "table" then return nil, "repeated If-Match or If-None-Match" end
  if m and nm then return nil, "If-Match and If-None-Match together" end
  if nm then
    if nm ~= "*" then return nil, "If-None-Match takes only *" end
    return "no_stream"
  end
  if not m then return "any" end
  if m == "*" then return "exists" end
  local v = m:match('^"?(%d+)"?$')
  if not v or #v > 15 then return nil, "If-Match must be a stream version (a whole number) or *" end
  return tonumber(v)
end

local function append(stream)
  local expected, herr = expected_version()
  if not expected then return bad(herr) end
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if not body then return bad("the body must be a JSON event or an array of events") end
  local events, jerr = cjson.decode(body)
  if events == nil then return bad("the body is not valid JSON: " .. tostring(jerr)) end
  if type(events) ~= "table" then return bad("the body must be a JSON event or an array of events") end
  if events.type ~= nil then events = { events } end -- one event
  local key = ngx.var.http_idempotency_key
  local res, err = es:append(stream, events, { expected = expected, idempotency_key = key })
  if not res then return fail(err) end
  ngx.header["ETag"] = '"' .. res.last_version .. '"'
  return reply(res.replayed and 200 or 201, res)
end

-- ---- reads ---------------------------------------------------------------------------------

-- One raw event row as JSON, its data and metadata spliced in as they are.
local function event_json(e)
  return concat{
    '{"position":', e.position, ',"stream":', encode(e.stream), ',"version":', e.version,
    ',"type":', encode(e.type), ',"id":', encode(e.id), ',"schema_version":', e.schema_version,
    ',"time":', encode(e.time), ',"data":', e.data,
    ',"metadata":', e.metadata == pgstore.null and "null" or e.metadata, '}',
  }
end

local function number_arg(name)
  local v = ngx.var["arg_" .. name]
  if v == nil or v == "" then return nil end
  if not v:match("^%d+$") or #v > 15 then return false end
  return tonumber(v)
end

local function read(stream)
  local from, limit = number_arg("from"), number_arg("limit")
  if from == false or limit == false then return bad("from and limit must be whole numbers") end
  local rows, err = es:read(stream, { from = from, limit = limit, raw = true,
                                      backward = ngx.var.arg_backward == "1" })
  if not rows then return fail(err) end
  local parts = {}
  for i, e in ipairs(rows) do parts[i] = event_json(e) end
  if #rows > 0 then ngx.header["ETag"] = '"' .. rows[#rows].version .. '"' end
  return reply(200, "[" .. concat(parts, ",") .. "]")
end

function _M.stream(stream)
  local method = ngx.req.get_method()
  if method == "POST" then return append(stream) end
  if method == "GET" or method == "HEAD" then return read(stream) end
  ngx.header["Allow"] = "GET, HEAD, POST"
  return reply(405, { error = "method_not_allowed" })
end

-- ---- live changes ----------------------------------------------------------------------------

local HEARTBEAT = 15 -- seconds of silence before a comment line keeps proxies awake

function _M.changes()
  local cursor = ngx.var.http_last_event_id or ngx.var.arg_after
  if cursor ~= nil then
    if not cursor:match("^%d+$") or #cursor > 15 then
      return bad("Last-Event-ID (or ?after=) must be an event position")
    end
    cursor = tonumber(cursor)
  end
  local feed, err = the_feed()
  if not feed then return fail(err) end
  if not cursor then
    -- Live only: start where the feed is now (waiting for its first read).
    cursor = feed:position(5)
    if not cursor then return fail({ code = "timeout", message = "the change feed has not started yet" }) end
  end
  local gone = false
  ngx.on_abort(function() gone = true end)
  ngx.header["Content-Type"] = "text/event-stream"
  ngx.header["Cache-Control"] = "no-cache"
  ngx.header["X-Accel-Buffering"] = "no"
  ngx.print("retry: 1000\n\n")
  ngx.flush(true)
  local quiet = 0
  while not gone and not ngx.worker.exiting() do
    local events, next_cursor = feed:next(cursor, 1, 500)
    if not events then
      ngx.log(ngx.WARN, "pgstore: /changes: ", tostring(next_cursor))
      break
    end
    local out
    if #events > 0 then
      out = {}
      for i, e in ipairs(events) do
        out[i] = "id: " .. e.position .. "\ndata: " .. event_json(e):gsub("\n", "\ndata: ") .. "\n\n"
      end
      quiet = 0
    else
      quiet = quiet + 1
      if quiet >= HEARTBEAT then
        out, quiet = { ": keepalive\n\n" }, 0
      end
    end
    cursor = next_cursor
    if out then
      local ok = ngx.print(out)
      if not ok or not ngx.flush(true) then break end
    end
  end
  return ngx.exit(ngx.OK)
end

function _M.ping()
  ngx.say("pong")
end

return _M
