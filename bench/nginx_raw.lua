-- SPDX-License-Identifier: MIT
-- The raw baseline of bench/nginx_bench.lua, run in nginx's worker threads
-- (ngx.run_worker_thread): one prepared statement through libpq
-- (bench/rawpq.lua) on a connection the thread VM keeps — the least work a
-- worker-thread call to PostgreSQL can do, with no pgstore code at all.
local rawpq = require "bench.rawpq"

local _M = {}

local conn -- this thread VM's connection

-- run(dsn, "append", stream, json) → 1; run(dsn, "read", stream) → rows
function _M.run(dsn, op, stream, json)
  if not conn then
    conn = rawpq.connect(dsn)
    conn:prepare("append", "insert into bench_raw_http (stream, type, data) values ($1, 'ItemAdded', $2::jsonb)")
    conn:prepare("read", "select position, version, type, data::text as data from events "
      .. "where stream = $1 order by version")
  end
  if op == "append" then return conn:exec_prepared("append", stream, json) end
  return conn:query_prepared("read", stream)
end

return _M
