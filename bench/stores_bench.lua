-- SPDX-License-Identifier: MIT
-- stores_bench — the session store's optimistic save and the KV store's
-- set and get through the Lua API, each beside a raw-libpq baseline
-- (bench/rawpq.lua: LuaJIT FFI straight to libpq) running the SAME
-- prepared statement — its text is read back from pg_prepared_statements
-- after the store ran it — on the same cluster in the same run.
--
--   build/pgstore --dsn "$DSN" run bench/stores_bench.lua [seconds per round]
--
-- Each subject and its baseline run in alternating rounds (best round
-- kept), so a noisy neighbour hurts both alike. Both sides encode the same
-- session state with cjson; client CPU per operation is os.clock() time.
local core = require "pgstore.core"
local cjson = require "cjson"

local dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local rawpq = require "rawpq"

local SECONDS = tonumber(arg and arg[1]) or 0.5
local ROUNDS = 4
local lib = require "bench.lib"

local SESS_T, KV_T = "pgstore_bench_sessions", "pgstore_bench_kv"
local function reset()
  assert(db:exec("drop table if exists " .. SESS_T .. ", " .. KV_T))
  if db:query("select to_regclass('pgstore_migrations') is not null as e")[1].e then
    assert(db:exec("delete from pgstore_migrations where target = $1", "sessions:" .. SESS_T))
  end
end
reset()

local sess = assert(db:sessions{ table = SESS_T })
local kv = assert(db:kv{ table = KV_T, cleanup_interval = 0 })

-- The statements exactly as the stores prepared them.
local sql = assert(db:transaction(function(tx)
  assert(sess:save("probe", { version = 1, state = {} }, { tx = tx }))
  assert(kv:set("probe", "v", 60, { tx = tx }))
  assert(kv:get("probe", { tx = tx }))
  local found = {}
  for _, r in ipairs(assert(tx:query("select statement from pg_prepared_statements"))) do
    local s = r.statement
    -- table names may come schema-qualified ("public"."t")
    local function names(verb, t) return s:find(verb, 1, true) and s:find('"' .. t .. '"', 1, true) end
    if names("INSERT INTO ", SESS_T) then found.save = s end
    if names("INSERT INTO ", KV_T) then found.set = s end
    if names("SELECT value FROM ", KV_T) then found.get = s end
  end
  assert(found.save and found.set and found.get, "store statements not found")
  return found
end, { retries = 0 }))

local raw = rawpq.connect(db.opts.dsn)
raw:prepare("save", sql.save)
raw:prepare("set", sql.set)
raw:prepare("get", sql.get)

-- A realistic small session: a few fields, a short cart.
local function state(v)
  return { user = "ann", version = v, cart = { { sku = "A-1", qty = 2 }, { sku = "B-7", qty = 1 } },
           seen_at = 1700000000 + v }
end
local VALUE = ("v"):rep(100) -- plain ASCII, so valid bytea text input for the baseline
local KEYS = {}
for i = 0, 999 do KEYS[i] = "key:" .. i end

local function compare(name, subject, baseline)
  lib.compare(name, subject, baseline, { seconds = SECONDS, rounds = ROUNDS, per = 50, width = 30 })
end

-- Versions only go up; each side has its own session row.
local sv, rv = 1, 1
assert(sess:save("bench-api", { version = sv, state = state(sv) }))
raw:exec_prepared("save", "bench-raw", rv, cjson.encode(state(rv)), "[]")
for i = 0, 999 do assert(kv:set(KEYS[i], VALUE, 3600)) end

print(("stores benchmark: %g s rounds, best of %d; client CPU in µs per op"):format(SECONDS, ROUNDS))
print(("%-30s %10s %10s %7s %9s %9s"):format("subject", "pgstore/s", "libpq/s", "ratio", "cpu µs", "libpq µs"))

compare("sessions: optimistic save",
  function()
    sv = sv + 1
    local ok, err = sess:save("bench-api", { version = sv, state = state(sv), history = {} })
    if not ok then error(tostring(err)) end
  end,
  function()
    rv = rv + 1
    raw:exec_prepared("save", "bench-raw", rv, cjson.encode(state(rv)), "[]")
  end)

compare("kv: set (ttl 3600)",
  function(i)
    local ok, err = kv:set(KEYS[i % 1000], VALUE, 3600)
    if not ok then error(tostring(err)) end
  end,
  function(i) raw:exec_prepared("set", KEYS[i % 1000], VALUE, 3600) end)

compare("kv: get (hit)",
  function(i)
    local v, err = kv:get(KEYS[i % 1000])
    if not v then error(tostring(err or "miss")) end
  end,
  function(i) raw:exec_prepared("get", KEYS[i % 1000]) end)

-- The conflict path too: a stale version, refused by the same statement
-- (plus the read of the stored version for the error report).
compare("sessions: stale save (conflict)",
  function()
    local ok, err = sess:save("bench-api", { version = 1, state = state(1) })
    if ok or err.code ~= "conflict" then error("expected a conflict") end
  end,
  function()
    raw:exec_prepared("save", "bench-raw", 1, cjson.encode(state(1)), "[]")
  end)

raw:close()
sess:close()
kv:close()
reset()
