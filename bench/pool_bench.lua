-- SPDX-License-Identifier: MIT
-- pool_bench — what cleaning a connection on release costs (clean.c: one
-- round trip, sent on release, that resets the session a borrower's own
-- SQL may have changed and keeps pgstore's prepared statements), each
-- beside a raw-libpq baseline (bench/rawpq.lua) on the same cluster in the
-- same run:
--   * db:query("SELECT 1") (borrow, the caller's SQL, release and clean),
--     beside the same round trip through libpq;
--   * the same with 200 of pgstore's statements prepared on the connection
--     (the clean looks for statements a borrower prepared in SQL);
--   * a pooled kv:get (only pgstore's own statement ran: no clean), beside
--     the statement through libpq;
--   * the usual alternative, DISCARD ALL and preparing the statement again,
--     beside the statement alone.
--
--   build/pgstore --dsn "$DSN" run bench/pool_bench.lua [seconds per round]
--
-- Subject and baseline run in alternating rounds (best round kept).
local core = require "pgstore.core"
local pgstore = require "pgstore"

local dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local rawpq = require "rawpq"

local SECONDS = tonumber(arg and arg[1]) or 0.5
local ROUNDS = 4
local lib = require "bench.lib"

-- One connection, so every borrow gets the same warm backend.
local pool = assert(pgstore.connect{ dsn = db.opts.dsn, pool_size = 1, application_name = "pgstore-bench" })
local KV_T = "pgstore_bench_pool_kv"
assert(pool:exec("drop table if exists " .. KV_T))
local kv = assert(pool:kv{ table = KV_T, cleanup_interval = 0 })
assert(kv:set("k", "v", 3600))
assert(kv:get("k"))
local get_sql = assert(pool:query("select statement from pg_prepared_statements where statement like $1",
  "SELECT value FROM %" .. KV_T .. "%"))[1].statement

local raw = rawpq.connect(db.opts.dsn)
raw:prepare("get", get_sql)

local function compare(name, subject, baseline)
  lib.compare(name, subject, baseline, { seconds = SECONDS, rounds = ROUNDS, per = 20, width = 40 })
end

local function own_sql() assert(pool:query("SELECT 1")) end
local function select1() raw:exec("SELECT 1") end

print(("pool benchmark: %g s rounds, best of %d; client CPU in µs per op"):format(SECONDS, ROUNDS))
print(("%-40s %10s %10s %7s %9s %9s"):format("subject", "pgstore/s", "libpq/s", "ratio", "cpu µs", "libpq µs"))

compare("db:query, cleaned on release", own_sql, select1)

compare("kv:get, pooled (nothing to clean)",
  function()
    local v, err = kv:get("k")
    if not v then error(tostring(err or "miss")) end
  end,
  function() raw:exec_prepared("get", "k") end)

compare("DISCARD ALL + prepare again + get (libpq)",
  function()
    raw:exec("DISCARD ALL")
    raw:prepare("get", get_sql)
    raw:exec_prepared("get", "k")
  end,
  function() raw:exec_prepared("get", "k") end)

-- 200 more of pgstore's statements on the pooled connection.
for i = 1, 200 do assert(pool:query("select $1::int + " .. i, i)) end
assert(pool:query("select count(*) as n from pg_prepared_statements")[1].n >= 200)
compare("db:query, cleaned, 200 statements kept", own_sql, select1)

raw:close()
kv:close()
assert(pool:exec("drop table if exists " .. KV_T))
pool:close()
