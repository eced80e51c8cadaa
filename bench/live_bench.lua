-- SPDX-License-Identifier: MIT
-- Live delivery through nginx: from an append's commit to its frame on
-- the example's /changes (Server-Sent Events), beside the host's own
-- subscription (db:subscribe in a plain LuaJIT process) fed by the same
-- appends in the same run: at ~1,000 appends/s, and after idle spells
-- (one append each half second, the case a sleeping loop makes slow).
--
--   build/pgstore --dsn "$DSN" run bench/live_bench.lua [seconds]
--
-- Writers are host processes (pgstore, appends with NOTIFY after commit)
-- that note each event's position and when its append returned; the SSE
-- client and the host subscriber note when each position arrived. Every
-- clock is CLOCK_MONOTONIC of this machine, so the times compare across
-- processes. Run it on a durable cluster (bench/run.sh makes its own so).
package.path = "spec/helpers/?.lua;" .. package.path
local core = require "pgstore.core"
local lib = require "bench.lib"

local mode = arg[1]

local function write_lines(path, lines)
  local f = assert(io.open(path, "w"))
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
end

-- position → seconds, from "position time" lines
local function read_times(path)
  local out = {}
  local f = io.open(path)
  if not f then return out end
  for line in f:lines() do
    local p, t = line:match("^(%d+) ([%d%.]+)$")
    if p then out[tonumber(p)] = tonumber(t) end
  end
  f:close()
  return out
end

-- writer <rate> <seconds> <gap> <file> <id>: `rate` appends/s (gap > 0:
-- one append every `gap` seconds instead) for `seconds`.
if mode == "writer" then
  local rate, seconds, gap, file, id = tonumber(arg[2]), tonumber(arg[3]), tonumber(arg[4]), arg[5], arg[6]
  local es = assert(db:events())
  local period = gap > 0 and gap or 1 / rate
  local lines, t0, i = {}, core.now(), 0
  while core.now() - t0 < seconds do
    i = i + 1
    local wait = t0 + i * period - core.now()
    if wait > 0 then core.sleep(wait) end
    local r = assert(es:append(("live-%s-%d"):format(id, i % 16), { { type = "Tick" } }))
    lines[#lines + 1] = ("%d %.6f"):format(r.first_position, core.now())
  end
  write_lines(file, lines)
  print("rate " .. i / seconds)
  return
end

-- subscriber <seconds> <file>: the host's own subscription, live from the end.
if mode == "subscriber" then
  local seconds, file = tonumber(arg[2]), arg[3]
  local es = assert(db:events())
  local sub = assert(db:subscribe{ name = "live-bench-" .. os.time() .. "-" .. math.random(1e6),
                                   events = es, from = "end" })
  local lines, deadline = {}, core.now() + seconds
  io.stdout:write("ready\n")
  io.stdout:flush()
  while core.now() < deadline do
    for _, e in ipairs(assert(sub:next(0.2))) do
      lines[#lines + 1] = ("%d %.6f"):format(e.position, core.now())
    end
  end
  write_lines(file, lines)
  sub:close()
  return
end

local nginx = require "nginx"
local http = require "http"

local seconds = tonumber(arg[1]) or 3
local dsn = assert(os.getenv("PGSTORE_BENCH_DSN") or os.getenv("PGSTORE_DSN"),
  "set PGSTORE_BENCH_DSN (bench/run.sh does)")
local es = assert(db:events())
local settings = assert(db:query("select current_setting('fsync') as f, current_setting('synchronous_commit') as s"))[1]

local function percentile(xs, q)
  return xs[math.max(1, math.ceil(#xs * q))] * 1000
end

local sh = lib.sh

local dir = sh("mktemp -d /tmp/pgstore-live-bench.XXXXXX"):gsub("%s+$", "")
local srv = nginx.start{ dsn = dsn, workers = 1 }

-- One phase: writers (n at rate/n each, or one every gap seconds) while the
-- SSE client and a host subscriber listen. → the latencies of both, sorted
local function phase(name, rate, gap, writers, secs)
  local s = assert(http.sse(srv.port, "/changes", srv.auth))
  -- The feed is live once an event has come through.
  local warm = assert(es:append("live-warm", { { type = "Warm" } })).first_position
  repeat local ev = assert(s:next(10), "the feed did not start") until tonumber(ev.id) >= warm
  local sub = io.popen(("%s --dsn '%s' run bench/live_bench.lua subscriber %g %s/%s.sub"):format(
    lib.host(), dsn, secs + 3, dir, name))
  assert(sub:read("*l") == "ready", "the subscriber did not start")
  core.sleep(0.5)
  for w = 1, writers do
    os.execute(("%s --dsn '%s' run bench/live_bench.lua writer %g %g %g %s/%s.w%d %s-%d >/dev/null 2>&1 &")
      :format(lib.host(), dsn, rate / writers, secs, gap, dir, name, w, name, w))
  end
  local arrived, deadline = {}, core.now() + secs + 2
  while core.now() < deadline do
    local ev = s:next(deadline - core.now())
    if ev and ev.id then arrived[tonumber(ev.id)] = http.now() end
  end
  s:close()
  sub:read("*a")
  sub:close()
  local host = read_times(("%s/%s.sub"):format(dir, name))
  local sse_lat, host_lat, missing = {}, {}, 0
  for w = 1, writers do
    for p, t in pairs(read_times(("%s/%s.w%d"):format(dir, name, w))) do
      if arrived[p] then sse_lat[#sse_lat + 1] = arrived[p] - t else missing = missing + 1 end
      if host[p] then host_lat[#host_lat + 1] = host[p] - t end
    end
  end
  assert(missing == 0, missing .. " events never reached /changes")
  assert(#sse_lat > 0 and #host_lat > 0, "nothing measured")
  table.sort(sse_lat)
  table.sort(host_lat)
  return sse_lat, host_lat
end

local ok, err = pcall(function()
  print(("live delivery, commit → SSE frame on /changes (nginx) vs the host's db:subscribe, %g s per "
    .. "figure, fsync %s, synchronous_commit %s, %s"):format(seconds, settings.f, settings.s, os.date("!%Y-%m-%d")))
  print(("%-30s %9s %9s %9s %9s %7s %7s %7s"):format("", "p50 ms", "p99 ms", "host p50", "host p99",
    "ratio50", "ratio99", "events"))
  -- Eight writers share the rate: with fsync on, one commit takes a few ms.
  for _, p in ipairs{ { "~1,000 appends/s", 1000, 0, 8, seconds },
                      { "after 0.5 s idle, each", 0, 0.5, 1, math.max(seconds, 10) } } do
    local sse_lat, host_lat = phase((p[1]:gsub("%W", "")), p[2], p[3], p[4], p[5])
    local s50, s99 = percentile(sse_lat, 0.5), percentile(sse_lat, 0.99)
    local h50, h99 = percentile(host_lat, 0.5), percentile(host_lat, 0.99)
    print(("%-30s %9.2f %9.2f %9.2f %9.2f %7.2f %7.2f %7d"):format(p[1], s50, s99, h50, h99,
      s50 / h50, s99 / h99, #sse_lat))
  end
end)
local stopped, why = srv:stop()
srv:cleanup()
sh("rm -rf " .. dir)
assert(ok, err)
assert(stopped, why)
