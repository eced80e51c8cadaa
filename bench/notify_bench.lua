-- SPDX-License-Identifier: MIT
-- Live-delivery latency: from an append committing to sub:next() returning
-- it, at 1,000 and 5,000 appends/s from other processes (one writer per
-- 1,000/s). The baseline, in
-- the same run, is raw LISTEN/NOTIFY through libpq (bench/rawpq.lua): one
-- process sends pg_notify at the same rate, another receives it — the
-- floor that any NOTIFY-woken reader sits on.
--
--   build/pgstore --dsn "$DSN" run bench/notify_bench.lua [seconds]
local core = require "pgstore.core"
local lib = require "bench.lib"
local rawpq = require "bench.rawpq"

local mode = arg[1]

-- Paced writer: `rate` appends (or NOTIFYs) per second for `seconds`.
local function pace(rate, seconds, fn)
  local t0 = core.now()
  local i = 0
  while core.now() - t0 < seconds do
    i = i + 1
    local due = t0 + i / rate
    local wait = due - core.now()
    if wait > 0 then core.sleep(wait) end
    fn(i)
  end
  print("rate " .. i / seconds)
end

if mode == "writer" then
  local kind, rate, seconds, table_name = arg[2], tonumber(arg[3]), tonumber(arg[4]), arg[5]
  if kind == "events" then
    local es = assert(db:events{ table = table_name, notify = table_name })
    pace(rate, seconds, function(i)
      assert(es:append("lat-" .. (i % 64), { { type = "Tick", data = { t = core.now() } } }))
    end)
    es:close()
  else
    local c = rawpq.connect(os.getenv("PGSTORE_BENCH_DSN"))
    c:prepare("n", "select pg_notify($1, $2)")
    pace(rate, seconds, function() c:exec_prepared("n", table_name, ("%.6f"):format(core.now())) end)
    c:close()
  end
  return
end

local seconds = tonumber(arg[1]) or 3
local dsn = assert(os.getenv("PGSTORE_BENCH_DSN"), "set PGSTORE_BENCH_DSN (bench/run.sh does)")

local function percentiles(xs)
  table.sort(xs)
  local function p(q) return xs[math.max(1, math.ceil(#xs * q))] * 1000 end
  return p(0.5), p(0.99), #xs
end

-- Writers share the rate: one per 1,000 appends/s, so each keeps its pace.
local function spawn_writer(kind, rate, channel)
  local n = math.max(1, math.floor(rate / 1000))
  for _ = 1, n do
    local cmd = ("%s --dsn '%s' run bench/notify_bench.lua writer %s %g %g %s >/dev/null 2>&1 &")
      :format(lib.host(), dsn, kind, rate / n, seconds, channel)
    os.execute(cmd)
  end
end

local function measure_pgstore(rate)
  local name = ("bench_lat_%d"):format(rate)
  local es = assert(db:events{ table = name, notify = name })
  assert(es:truncate())
  local sub = assert(db:subscribe{ name = name .. "_" .. os.time(), events = es, from = "end", poll = 1 })
  spawn_writer("events", rate, name)
  local lat, deadline = {}, core.now() + seconds + 2
  while core.now() < deadline do
    for _, e in ipairs(assert(sub:next(0.2))) do lat[#lat + 1] = core.now() - e.data.t end
  end
  sub:close()
  es:close()
  return percentiles(lat)
end

local function measure_raw(rate)
  local channel = ("bench_raw_lat_%d"):format(rate)
  local c = rawpq.connect(dsn)
  c:exec("LISTEN " .. channel)
  spawn_writer("raw", rate, channel)
  local lat, deadline = {}, core.now() + seconds + 2
  while core.now() < deadline do
    local payload = c:wait_notify(0.2)
    if payload then lat[#lat + 1] = core.now() - tonumber(payload) end
  end
  c:close()
  return percentiles(lat)
end

print(("notify latency, %g s per figure, %s"):format(seconds, os.date("!%Y-%m-%d")))
print(("%-36s %10s %10s %12s %12s %8s"):format("append → sub:next at", "p50 ms", "p99 ms", "raw p50 ms", "raw p99 ms", "events"))
for _, rate in ipairs{ 1000, 5000 } do
  local p50, p99, n = measure_pgstore(rate)
  local r50, r99 = measure_raw(rate)
  print(("%-36s %10.2f %10.2f %12.2f %12.2f %8d"):format(("%d appends/s"):format(rate), p50, p99, r50, r99, n))
end
