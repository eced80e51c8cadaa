-- SPDX-License-Identifier: MIT
-- pgstore.replicas — a db's read replicas: which one serves a read, how
-- long a read waits for a replica to catch up with a causal token (a WAL
-- position of the primary), and when a replica is left alone: down,
-- frozen, promoted, or lagging past replica_max_lag. A read that a
-- replica cannot serve goes to the next replica, then to the primary.
local core = require "pgstore.core"

local tonumber, type, unpack, select, ipairs = tonumber, type, unpack, select, ipairs

local _M = {}

local SKIP = 5          -- seconds a failed, promoted or lagging replica is left alone
local CHECK = 1         -- seconds between health checks of one replica
local POLL = 0.002      -- seconds between looks at a replica's replay position
_M.MAX_LAG = 10         -- replica_max_lag's default, seconds

-- Everything committed on the primary so far, as a WAL position a replica
-- reaches once it has replayed it all. The insert position, not the write
-- or flush one: with synchronous_commit = off a commit is acknowledged
-- once its record is inserted, before it is written. When the last record
-- ended on a page boundary the insert position stands past the next
-- page's header (24 bytes; 40 at a segment's start), where no record can
-- end: step back, or a replica that replayed it all would never reach it.
local HORIZON_SQL = [[
SELECT (l - CASE WHEN o % g = 40 THEN 40 WHEN o % b = 24 THEN 24 ELSE 0 END)::text AS lsn
  FROM (SELECT l, l - '0/0'::pg_lsn AS o,
               current_setting('wal_block_size')::numeric AS b,
               pg_size_bytes(current_setting('wal_segment_size')) AS g
          FROM pg_current_wal_insert_lsn() AS l) s]]

local STATE_SQL = "SELECT pg_is_in_recovery() AS standby, pg_last_wal_replay_lsn()::text AS replay"

-- "16/B374D848" → a number (exact below 2^53 bytes of WAL); nil if malformed.
local function lsn_number(s)
  if type(s) ~= "string" then return nil end
  local hi, lo = s:match("^(%x%x?%x?%x?%x?%x?%x?%x?)/(%x%x?%x?%x?%x?%x?%x?%x?)$")
  if not hi then return nil end
  return tonumber(hi, 16) * 4294967296 + tonumber(lo, 16)
end
_M.lsn_number = lsn_number

-- The primary's causal token: a read with after_lsn = token sees every
-- write committed before it was taken. → lsn string | nil, err
function _M.token(pool)
  local rows, err = pool:query(HORIZON_SQL)
  if not rows then return nil, err end
  return rows[1].lsn
end

-- set.list[i] = { pool, skip_until, checked }; the pools stay in db.readers.
function _M.new(pools, max_lag)
  local list = {}
  for i, p in ipairs(pools) do list[i] = { pool = p, skip_until = 0, checked = 0 } end
  return { list = list, next = 0, max_lag = max_lag or _M.MAX_LAG, samples = {} }
end

local function skip(st, now)
  st.skip_until = (now or core.now()) + SKIP
end

-- Samples the primary's position once per CHECK; returns the newest sample
-- at least max_lag old (what a replica within the bound has replayed),
-- dropping those before it.
local function lag_mark(set, primary, now)
  local s = set.samples
  if #s == 0 or now - s[#s].t >= CHECK then
    local lsn = _M.token(primary)
    if lsn then s[#s + 1] = { t = now, lsn = lsn_number(lsn) } end
  end
  local mark
  for i = #s, 1, -1 do
    if now - s[i].t >= set.max_lag then
      mark = s[i]
      for _ = 1, i - 1 do table.remove(s, 1) end
      break
    end
  end
  return mark
end

-- A replica answers, is still a standby, and has replayed what the
-- primary had max_lag seconds ago; else it is skipped for a while.
local function check(set, st, primary, now)
  st.checked = now
  local rows = st.pool:query(STATE_SQL)
  if not rows or rows[1].standby ~= true then return skip(st, now) end
  local mark = lag_mark(set, primary, now)
  if mark and (lsn_number(rows[1].replay) or 0) < mark.lsn then skip(st, now) end
end

-- The next replica in turn that is not skipped nor in `tried`; nil if none.
local function pick(set, primary, tried)
  local list, n = set.list, #set.list
  for _ = 1, n do
    set.next = set.next % n + 1
    local st = list[set.next]
    local now = core.now()
    if not tried[st] and now >= st.skip_until then
      if now - st.checked >= CHECK then check(set, st, primary, now) end
      if now >= st.skip_until then return st end
    end
  end
end

-- A pool for reads: the next usable replica, else the primary.
function _M.reader(set, primary)
  local st = pick(set, primary, {})
  return st and st.pool or primary
end

-- Waits (until deadline) for st to replay target; false when it does not,
-- and skips it when it fails or is no longer a standby.
local function replayed(st, target, deadline)
  while true do
    local rows = st.pool:query(STATE_SQL)
    if not rows or rows[1].standby ~= true then
      skip(st)
      return false
    end
    if (lsn_number(rows[1].replay) or 0) >= target then return true end
    if core.now() >= deadline then return false end
    core.sleep(POLL)
  end
end

-- What a replica's failure means for a read: "skip" it (it is down,
-- frozen past the query timeout, or closing), "next" (a conflict with
-- recovery cancelled the statement: the replica is fine), or nil (the
-- read's own error: the primary would give it too).
local function fault(err)
  if type(err) ~= "table" then return nil end
  if err.code == "connection" or err.code == "timeout" then return "skip" end
  if err.sqlstate == "40001" or err.sqlstate == "57P01" or err.sqlstate == "57P03" then return "next" end
end

local function pack(...) return { n = select("#", ...), ... } end

-- Runs fn(pool) on a replica — with lsn, one that has replayed it,
-- waiting up to `timeout` seconds in all — else on the primary. A replica
-- that fails the read is skipped and the next one tried, so a sick
-- replica never fails a read the primary can answer.
function _M.read(set, primary, fn, lsn, timeout)
  local target = lsn and lsn_number(lsn) -- checked by the caller
  local deadline = core.now() + (timeout or 1)
  local tried = {}
  while true do
    local st = pick(set, primary, tried)
    if not st then break end
    tried[st] = true
    if not target or replayed(st, target, deadline) then
      local res = pack(fn(st.pool))
      local f = res[1] == nil and fault(res[2])
      if not f then return unpack(res, 1, res.n) end
      if f == "skip" then skip(st) end
    end
  end
  return fn(primary)
end

return _M
