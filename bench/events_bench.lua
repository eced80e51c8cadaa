-- SPDX-License-Identifier: MIT
-- Event store benchmarks. Each figure is printed beside baselines measured
-- in the same run on the same cluster: pgbench's prepared single-row or
-- 100-row INSERT into a plain events table (the physical limit), and raw
-- libpq through LuaJIT's FFI (bench/rawpq.lua) doing the same work by hand
-- into a table with the store's columns and indexes, or the same SELECT
-- into Lua tables.
--
--   build/pgstore --dsn "$DSN" run bench/events_bench.lua [seconds]
--
-- Appends run with NOTIFY on (the store's default), 200-byte data and
-- 129-byte metadata JSON, each client its own stream with an expected
-- version; every client is a process of its own (pgbench: a thread per
-- client). A write figure is the median of $PGSTORE_BENCH_REPS (3) runs.
local lib = require "bench.lib"
local rawpq = require "bench.rawpq"
local cjson = require "cjson"

-- A JSON object `size` bytes long as cjson writes it, padded in `pad`.
local function sized(t, pad, size)
  t[pad] = ""
  t[pad] = string.rep("x", size - #cjson.encode(t))
  assert(#cjson.encode(t) == size)
  return t
end
local DATA = sized({ amount = 42, sku = "ABC-123", note = "" }, "note", 200)
local METADATA = sized({ correlation_id = "3f1c2a9e-5b7d-4e21-9c0a-6d8e1f2b3c4d", user = "bench",
  trace = "" }, "trace", 129)
local DATA_JSON, METADATA_JSON = cjson.encode(DATA), cjson.encode(METADATA)
local RAW_TABLE = [[create table if not exists bench_raw (
  position bigserial primary key, stream text collate "C" not null, version bigint not null,
  id uuid not null default gen_random_uuid() unique, type text not null,
  schema_version int not null default 1, data jsonb not null, metadata jsonb,
  time timestamptz not null default now(), unique (stream, version))]]
local PLAIN_TABLE = [[create table if not exists bench_plain (
  id bigserial primary key, stream text collate "C" not null, version bigint not null,
  type text not null, data jsonb not null, metadata jsonb,
  time timestamptz not null default now(), unique (stream, version))]]

local function raw_insert_sql(batch)
  local values = {}
  for i = 1, batch do
    local b = (i - 1) * 5
    values[i] = ("($%d, $%d, $%d, $%d::jsonb, $%d::jsonb)"):format(b + 1, b + 2, b + 3, b + 4, b + 5)
  end
  return "insert into bench_raw (stream, version, type, data, metadata) values " .. table.concat(values, ", ")
end

-- pgbench scripts: each client its own stream, versions counted in a
-- client variable (pgbench keeps them from one transaction to the next).
local PGBENCH_ONE = [[
\set v :v + 1
insert into bench_plain (stream, version, type, data, metadata) values ('pgb-' || :client_id::text, :v, 'ItemAdded', :data, :meta);
]]
local PGBENCH_MANY = [[
\set v :v + 100
insert into bench_plain (stream, version, type, data, metadata) select 'pgb-' || :client_id::text, :v - 100 + o, 'ItemAdded', d, m from unnest(:datas::jsonb[], :metas::jsonb[]) with ordinality as u(d, m, o);
]]

local function pg_array(json, n)
  local quoted = '"' .. json:gsub('[\\"]', "\\%0") .. '"'
  local t = {}
  for i = 1, n do t[i] = quoted end
  return "{" .. table.concat(t, ",") .. "}"
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- pgbench at `clients` clients for `seconds` → rows/s.
local function pgbench(dsn, batch, clients, seconds)
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(batch == 1 and PGBENCH_ONE or PGBENCH_MANY)
  f:close()
  local vars = batch == 1
    and ("-D data=%s -D meta=%s"):format(shell_quote(DATA_JSON), shell_quote(METADATA_JSON))
    or ("-D datas=%s -D metas=%s"):format(shell_quote(pg_array(DATA_JSON, batch)),
      shell_quote(pg_array(METADATA_JSON, batch)))
  local bin = os.getenv("PGSTORE_BENCH_PGBIN")
  local out, tps
  -- On a loaded machine connecting 32 clients can eat a short run whole:
  -- then run again, twice as long.
  for try = 1, 2 do
    out = lib.sh(("%s -n -M prepared -c %d -j %d -T %d -f %s -D v=0 %s %s 2>&1"):format(
      bin and bin .. "/pgbench" or "pgbench", clients, clients, try * math.max(1, math.floor(seconds + 0.5)),
      script, vars, shell_quote(dsn)))
    tps = out:match("tps = ([%d%.]+)")
    if tps then break end
  end
  os.remove(script)
  if not tps then error("pgbench failed: " .. out) end
  return tonumber(tps) * batch
end

-- ---- worker processes ------------------------------------------------------

local function worker(mode, batch, seconds, id)
  batch, seconds = tonumber(batch), tonumber(seconds)
  local stream = ("bench-%s-%d-%d"):format(mode, id, os.time() % 100000)
  local version, rate = 0, nil
  if mode == "append" then
    local es = assert(db:events{ table = "bench_events", notify = os.getenv("PGSTORE_BENCH_NOTIFY") ~= "0" and nil or false })
    local events = {}
    for i = 1, batch do events[i] = { type = "ItemAdded", data = DATA, metadata = METADATA } end
    local opts = { expected = 0 }
    rate = lib.rate(seconds, function()
      opts.expected = version
      version = assert(es:append(stream, events, opts)).last_version
      return batch
    end)
    es:close()
  else
    local c = rawpq.connect(os.getenv("PGSTORE_BENCH_DSN"))
    c:prepare("ins", raw_insert_sql(batch))
    local args = {}
    rate = lib.rate(seconds, function()
      for i = 1, batch do
        version = version + 1
        local b = (i - 1) * 5
        args[b + 1], args[b + 2], args[b + 3], args[b + 4], args[b + 5] =
          stream, version, "ItemAdded", DATA_JSON, METADATA_JSON
      end
      c:exec_prepared("ins", unpack(args, 1, batch * 5))
      return batch
    end)
    c:close()
  end
  print(("rate %.1f"):format(rate))
end

if arg[1] == "worker" then return worker(arg[2], arg[3], arg[4], tonumber(arg[5])) end

-- ---- the driver ------------------------------------------------------------

local seconds = tonumber(arg[1]) or 3
local reps = tonumber(os.getenv("PGSTORE_BENCH_REPS")) or 3
local dsn = assert(os.getenv("PGSTORE_BENCH_DSN"), "set PGSTORE_BENCH_DSN (bench/run.sh does)")
local es = assert(db:events{ table = "bench_events" })
assert(db:exec(RAW_TABLE))
assert(db:exec(PLAIN_TABLE))

local function reset()
  assert(es:truncate())
  assert(db:exec("truncate bench_raw, bench_plain"))
  assert(db:exec("vacuum analyze bench_events, bench_events_heads, bench_raw, bench_plain"))
  assert(db:exec("checkpoint"))
end

local settings = db:query("select current_setting('fsync') f, current_setting('synchronous_commit') s,"
  .. " current_setting('full_page_writes') w, current_setting('server_version') v")[1]
print(("event store, %g s per figure, median of %d, %s; PostgreSQL %s, fsync %s, synchronous_commit %s,"
  .. " full_page_writes %s%s"):format(seconds, reps, os.date("!%Y-%m-%d"), settings.v, settings.f,
  settings.s, settings.w, os.getenv("PGSTORE_BENCH_LABEL") and " — " .. os.getenv("PGSTORE_BENCH_LABEL") or ""))
print(("%-36s %9s  %9s %5s  %9s %5s"):format("events/s", "pgstore", "pgbench", "ratio", "libpq", "ratio"))
local script = "bench/events_bench.lua"
for _, case in ipairs{ { 1, 1 }, { 1, 8 }, { 1, 32 }, { 100, 1 }, { 100, 8 } } do
  local batch, clients = case[1], case[2]
  local subject, plain, raw = {}, {}, {}
  for r = 1, reps do
    reset()
    subject[r] = lib.parallel(clients, script, dsn, "worker", "append", batch, seconds)
    reset()
    plain[r] = pgbench(dsn, batch, clients, seconds)
    reset()
    raw[r] = lib.parallel(clients, script, dsn, "worker", "raw", batch, seconds)
  end
  lib.report_vs(("append %d event%s, %d client%s"):format(batch, batch > 1 and "s" or "",
    clients, clients > 1 and "s" or ""), lib.median(subject), { lib.median(plain), lib.median(raw) })
end
if os.getenv("PGSTORE_BENCH_WRITES_ONLY") then return end
print()
lib.header("reads (baseline: libpq into Lua tables)")
-- Reads: a 1,000-event stream into Lua tables, and read_all over 100k events.
reset()
local batch = {}
for i = 1, 1000 do batch[i] = { type = "ItemAdded", data = DATA, metadata = METADATA } end
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
