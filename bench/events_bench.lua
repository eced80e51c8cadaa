-- SPDX-License-Identifier: MIT
-- Event store benchmarks. Each figure is printed beside a baseline measured
-- in the same run on the same cluster: raw libpq through LuaJIT's FFI
-- (bench/rawpq.lua) doing the same work by hand — a prepared single-row or
-- 100-row INSERT into a table with the same columns and indexes, or the
-- same SELECT into Lua tables.
--
--   build/pgstore --dsn "$DSN" run bench/events_bench.lua [seconds]
--
-- Appends run with NOTIFY on (the store's default). Concurrent clients are
-- separate processes.
local lib = require "bench.lib"
local rawpq = require "bench.rawpq"

local DATA = { amount = 42, sku = "ABC-123", note = "benchmark payload" }
local DATA_JSON = '{"amount": 42, "sku": "ABC-123", "note": "benchmark payload"}'
local RAW_TABLE = [[create table if not exists bench_raw (
  position bigserial primary key, stream text collate "C" not null, version bigint not null,
  id uuid not null default gen_random_uuid() unique, type text not null,
  schema_version int not null default 1, data jsonb not null, metadata jsonb,
  time timestamptz not null default now(), unique (stream, version))]]

local function raw_insert_sql(batch)
  local values = {}
  for i = 1, batch do
    local b = (i - 1) * 4
    values[i] = ("($%d, $%d, $%d, $%d::jsonb)"):format(b + 1, b + 2, b + 3, b + 4)
  end
  return "insert into bench_raw (stream, version, type, data) values " .. table.concat(values, ", ")
end

-- ---- worker processes ------------------------------------------------------

local function worker(mode, batch, seconds, id)
  batch, seconds = tonumber(batch), tonumber(seconds)
  local stream = ("bench-%s-%d-%d"):format(mode, id, os.time() % 100000)
  local rate
  if mode == "append" then
    local es = assert(db:events{ table = "bench_events", notify = os.getenv("PGSTORE_BENCH_NOTIFY") ~= "0" and nil or false })
    local events = {}
    for i = 1, batch do events[i] = { type = "ItemAdded", data = DATA } end
    rate = lib.rate(seconds, function()
      assert(es:append(stream, events))
      return batch
    end)
    es:close()
  else
    local c = rawpq.connect(os.getenv("PGSTORE_BENCH_DSN"))
    c:prepare("ins", raw_insert_sql(batch))
    local version = 0
    local args = {}
    rate = lib.rate(seconds, function()
      for i = 1, batch do
        version = version + 1
        local b = (i - 1) * 4
        args[b + 1], args[b + 2], args[b + 3], args[b + 4] = stream, version, "ItemAdded", DATA_JSON
      end
      c:exec_prepared("ins", unpack(args, 1, batch * 4))
      return batch
    end)
    c:close()
  end
  print(("rate %.1f"):format(rate))
end

if arg[1] == "worker" then return worker(arg[2], arg[3], arg[4], tonumber(arg[5])) end

-- ---- the driver ------------------------------------------------------------

local seconds = tonumber(arg[1]) or 3
local dsn = assert(os.getenv("PGSTORE_BENCH_DSN"), "set PGSTORE_BENCH_DSN (bench/run.sh does)")
local es = assert(db:events{ table = "bench_events" })
assert(db:exec(RAW_TABLE))

local function reset()
  assert(es:truncate())
  assert(db:exec("truncate bench_raw"))
  assert(db:exec("vacuum analyze bench_events, bench_events_heads, bench_raw"))
end

lib.header(("event store, %g s per figure, %s"):format(seconds, os.date("!%Y-%m-%d")))
local script = "bench/events_bench.lua"
for _, case in ipairs{ { 1, 1 }, { 1, 8 }, { 1, 32 }, { 100, 1 }, { 100, 8 } } do
  local batch, clients = case[1], case[2]
  reset()
  local subject = lib.parallel(clients, script, dsn, "worker", "append", batch, seconds)
  reset()
  local baseline = lib.parallel(clients, script, dsn, "worker", "raw", batch, seconds)
  lib.report(("append %d event%s, %d client%s"):format(batch, batch > 1 and "s" or "",
    clients, clients > 1 and "s" or ""), subject, baseline)
end

-- Reads: a 1,000-event stream into Lua tables, and read_all over 100k events.
reset()
local batch = {}
for i = 1, 1000 do batch[i] = { type = "ItemAdded", data = DATA } end
assert(es:append("read-me", batch))
for _ = 1, 99 do assert(es:append("filler-" .. _, batch)) end
assert(db:exec("vacuum analyze bench_events"))
local raw = rawpq.connect(dsn)
local cols = "id, stream, version, position, type, schema_version, data, metadata, time"
raw:prepare("stream", ("select %s from bench_events where stream = $1 order by version"):format(cols))
raw:prepare("page", ("select %s from bench_events where position > $1 order by position limit 1000"):format(cols))

local base = lib.rate(seconds, function() return #raw:query_prepared("stream", "read-me") end)
lib.report("read a 1,000-event stream (decoded)", lib.rate(seconds, function()
  return #assert(es:read("read-me"))
end), base)
lib.report("read a 1,000-event stream (raw = true)", lib.rate(seconds, function()
  return #assert(es:read("read-me", { raw = true }))
end), base)

local function scan_raw()
  local cursor, n = 0, 0
  repeat
    local rows = raw:query_prepared("page", cursor)
    n = n + #rows
    if #rows > 0 then cursor = tonumber(rows[#rows].position) end
  until #rows == 0
  return n
end
local function scan(opts)
  local cursor, n = 0, 0
  repeat
    local rows
    rows, cursor = assert(es:read_all{ after = cursor, limit = 1000, raw = opts.raw })
    n = n + #rows
  until #rows == 0
  return n
end
base = lib.rate(seconds, scan_raw)
lib.report("read_all over 100k events (decoded)", lib.rate(seconds, function() return scan{} end), base)
lib.report("read_all over 100k events (raw = true)", lib.rate(seconds, function() return scan{ raw = true } end), base)
raw:close()
es:close()
