-- SPDX-License-Identifier: MIT
-- Appends over HTTP through nginx and resty.pgstore (the example of
-- scripts/nginx/: POST /streams/{id}, one JSON event per request, 201 with
-- the result) beside the same appends made directly from the host by as
-- many processes as there are HTTP connections, in the same run, on the
-- same cluster and table.
--
--   build/pgstore --dsn "$DSN" run bench/nginx_bench.lua [seconds]
--
-- Every request carries the example's bearer token (checked in the access
-- phase, as deployed). nginx runs with one worker per core; the HTTP client
-- is one LuaJIT process multiplexing its keep-alive connections
-- (spec/helpers/http.lua).
package.path = "spec/helpers/?.lua;" .. package.path
local lib = require "bench.lib"

local DATA = '{"amount": 42, "sku": "ABC-123", "note": "benchmark payload"}'

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

if arg[1] == "worker" then return worker(arg[2], tonumber(arg[3])) end

local nginx = require "nginx"
local http = require "http"

local seconds = tonumber(arg[1]) or 3
local dsn = assert(os.getenv("PGSTORE_BENCH_DSN") or os.getenv("PGSTORE_DSN"),
  "set PGSTORE_BENCH_DSN (bench/run.sh does)")
assert(db:events()) -- the table exists before either side starts

local srv = nginx.start{ dsn = dsn, workers = "auto" }
local run = os.time() % 100000

local function over_http(clients, secs)
  local stats = http.load{ port = srv.port, connections = clients, duration = secs, timeout = 10,
    make = function(i)
      return "POST", ("/streams/bench-http-%d-%d-%d"):format(run, clients, i), srv.auth,
        '{"type":"ItemAdded","data":' .. DATA .. '}'
    end }
  assert(next(stats.errors) == nil, "HTTP errors during the benchmark")
  assert(stats.statuses[201] == stats.requests, "non-201 answers during the benchmark")
  return stats.requests / stats.elapsed
end

local ok, err = pcall(function()
  -- Warm up: thread VMs are created, and open their stores, on first use.
  over_http(32, 1)
  lib.header(("appends over HTTP (nginx + resty.pgstore) vs the host directly, %g s per figure, %s")
    :format(seconds, os.date("!%Y-%m-%d")))
  for _, clients in ipairs{ 1, 8, 32 } do
    local subject = over_http(clients, seconds)
    local baseline = lib.parallel(clients, "bench/nginx_bench.lua", dsn, "worker", seconds)
    lib.report(("append 1 event over HTTP, %d connection%s"):format(clients, clients > 1 and "s" or ""),
      subject, baseline, "appends/s")
  end
end)
local stopped, why = srv:stop()
srv:cleanup()
assert(ok, err)
assert(stopped, why)
