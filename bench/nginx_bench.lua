-- SPDX-License-Identifier: MIT
-- Appends and reads over HTTP through nginx and resty.pgstore (the example
-- of scripts/nginx/: POST /streams/{id}, one JSON event per request, 201
-- with the result; GET /streams/{id}, a 10-event stream as JSON) beside two
-- baselines of the same run, on the same cluster:
--   host        the same appends / reads made directly from the host, by
--               as many processes as there are HTTP connections;
--   raw thread  a bare nginx route doing one prepared statement through
--               ngx.run_worker_thread and libpq (bench/nginx_raw.lua: an
--               INSERT into a plain table, or the stream's SELECT) — the
--               floor of any worker-thread call to PostgreSQL.
--
--   build/pgstore --dsn "$DSN" run bench/nginx_bench.lua [seconds]
--
-- Each figure is the best of two alternating rounds. Every request
-- carries the example's bearer token (checked in the access
-- phase, as deployed). nginx runs with one worker per core; the HTTP client
-- is one LuaJIT process multiplexing its keep-alive connections
-- (spec/helpers/http.lua).
package.path = "spec/helpers/?.lua;" .. package.path
local lib = require "bench.lib"

local DATA = '{"amount": 42, "sku": "ABC-123", "note": "benchmark payload"}'

local READ_EVENTS = 10

local function worker(seconds, id)
  local es = assert(db:events())
  local stream = ("bench-direct-%d-%d"):format(id, os.time() % 100000)
  local data = { amount = 42, sku = "ABC-123", note = "benchmark payload" }
  local rate = lib.rate(tonumber(seconds), function()
    assert(es:append(stream, { { type = "ItemAdded", data = data } }))
    return 1
  end)
  print(("rate %.1f"):format(rate))
end

local function reader(seconds, stream)
  local es = assert(db:events())
  local rate = lib.rate(tonumber(seconds), function()
    assert(#assert(es:read(stream)) == READ_EVENTS)
    return 1
  end)
  print(("rate %.1f"):format(rate))
end

if arg[1] == "worker" then return worker(arg[2], tonumber(arg[3])) end
if arg[1] == "reader" then return reader(arg[2], arg[3]) end

local nginx = require "nginx"
local http = require "http"

local seconds = tonumber(arg[1]) or 3
local dsn = assert(os.getenv("PGSTORE_BENCH_DSN") or os.getenv("PGSTORE_DSN"),
  "set PGSTORE_BENCH_DSN (bench/run.sh does)")
local es = assert(db:events()) -- the table exists before either side starts
assert(db:exec("create table if not exists bench_raw_http (id bigserial primary key, stream text not null, "
  .. "type text not null, data jsonb, created_at timestamptz not null default now())"))
local settings = assert(db:query("select current_setting('fsync') as f, current_setting('synchronous_commit') as s"))[1]
local run = os.time() % 100000
local read_stream = ("bench-read-%d"):format(run)
for i = 1, READ_EVENTS do
  assert(es:append(read_stream, { { type = "ItemAdded", data = { amount = i, sku = "ABC-123" } } }))
end

local RAW = [[
set $bench_dsn '@DSN@';
location = /bench/raw {
    content_by_lua_block {
        ngx.req.read_body()
        local ok, res = ngx.run_worker_thread("pgstore", "bench.nginx_raw", "run", ngx.var.bench_dsn,
            ngx.var.arg_op, ngx.var.arg_stream, ngx.var.arg_op == "append" and ngx.req.get_body_data() or nil)
        if not ok then ngx.status = 500; ngx.say(tostring(res)); return end
        if ngx.var.arg_op == "append" then ngx.status = 201; ngx.say('{"count":1}'); return end
        ngx.say(require("cjson").encode(res))
    }
}
]]
assert(not dsn:find("'", 1, true), "the DSN cannot contain a single quote")
local srv = nginx.start{ dsn = dsn, workers = "auto", locations = RAW, lua_path = nginx.root() .. "/?.lua" }

local BODY = '{"type":"ItemAdded","data":' .. DATA .. '}'

local ROUTES = {
  append = function(clients)
    return function(i)
      return "POST", ("/streams/bench-http-%d-%d-%d"):format(run, clients, i), srv.auth, BODY
    end, 201
  end,
  read = function()
    return function() return "GET", "/streams/" .. read_stream, srv.auth end, 200
  end,
  raw_append = function(clients)
    return function(i)
      return "POST", ("/bench/raw?op=append&stream=bench-raw-%d-%d-%d"):format(run, clients, i), srv.auth, DATA
    end, 201
  end,
  raw_read = function()
    return function() return "GET", "/bench/raw?op=read&stream=" .. read_stream, srv.auth end, 200
  end,
}

-- requests/s of `route` over `clients` keep-alive connections
local function over_http(route, clients, secs)
  local make, want = ROUTES[route](clients)
  local stats = http.load{ port = srv.port, connections = clients, duration = secs, timeout = 10, make = make }
  assert(next(stats.errors) == nil, "HTTP errors during the benchmark")
  assert(stats.statuses[want] == stats.requests, ("non-%d answers during the benchmark"):format(want))
  return stats.requests / stats.elapsed
end

local ok, err = pcall(function()
  -- Warm up: thread VMs are created, and open their stores, on first use.
  for route in pairs(ROUTES) do over_http(route, 32, 1) end
  print(("appends and reads over HTTP (nginx + resty.pgstore) vs the host directly and a raw libpq call "
    .. "in a worker thread, %g s per figure, fsync %s, synchronous_commit %s, %s")
    :format(seconds, settings.f, settings.s, os.date("!%Y-%m-%d")))
  print(("%-44s %10s %10s %6s %11s %6s"):format("requests/s", "HTTP", "host", "ratio", "raw thread", "ratio"))
  for _, op in ipairs{ "append", "read" } do
    for _, clients in ipairs{ 1, 8, 32 } do
      -- The best of two alternating rounds of each: a shared machine is noisy.
      local subject, host, raw = 0, 0, 0
      for _ = 1, 2 do
        subject = math.max(subject, over_http(op, clients, seconds))
        host = math.max(host, op == "append" and lib.parallel(clients, "bench/nginx_bench.lua", dsn, "worker", seconds)
          or lib.parallel(clients, "bench/nginx_bench.lua", dsn, "reader", seconds, read_stream))
        raw = math.max(raw, over_http("raw_" .. op, clients, seconds))
      end
      local name = op == "append" and "append 1 event over HTTP" or ("read a %d-event stream over HTTP"):format(READ_EVENTS)
      print(("%-44s %10.0f %10.0f %6.2f %11.0f %6.2f"):format(
        ("%s, %d connection%s"):format(name, clients, clients > 1 and "s" or ""),
        subject, host, subject / host, raw, subject / raw))
      io.stdout:flush()
    end
  end
end)
local stopped, why = srv:stop()
srv:cleanup()
assert(ok, err)
assert(stopped, why)
