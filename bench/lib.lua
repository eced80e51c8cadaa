-- SPDX-License-Identifier: MIT
-- Benchmark helpers: run N copies of a worker script as real processes at
-- once, time things, and print a figure beside its baseline.
local core = require "pgstore.core"

local _M = {}

-- sh(cmd) → what cmd printed.
local function sh(cmd)
  local f = io.popen(cmd)
  local out = f:read("*a")
  f:close()
  return out
end
_M.sh = sh

-- The host binary running this script (so workers use the same build).
function _M.host()
  return os.getenv("PGSTORE_HOST_BIN") or "build/pgstore"
end

-- Runs `n` processes of `pgstore --dsn DSN run SCRIPT args… <index>` in
-- parallel; returns the numbers each printed as "rate N" summed.
function _M.parallel(n, script, dsn, ...)
  local dir = sh("mktemp -d /tmp/pgstore-bench.XXXXXX"):gsub("%s+$", "")
  local args = table.concat({ ... }, " ")
  local cmds = {}
  for i = 1, n do
    cmds[#cmds + 1] = ("%s --dsn '%s' run %s %s %d >%s/%d 2>&1 &"):format(_M.host(), dsn, script, args, i, dir, i)
  end
  sh(table.concat(cmds, "\n") .. "\nwait")
  local total = 0
  for i = 1, n do
    local f = io.open(dir .. "/" .. i)
    local out = f:read("*a")
    f:close()
    local rate = out:match("rate ([%d%.]+)")
    if not rate then error("worker " .. i .. " failed: " .. out) end
    total = total + tonumber(rate)
  end
  sh("rm -rf " .. dir)
  return total
end

-- Calls fn() repeatedly for `seconds`; fn returns how many items it did.
-- Returns items per second.
function _M.rate(seconds, fn)
  local t0, done = core.now(), 0
  local deadline = t0 + seconds
  repeat
    done = done + fn()
  until core.now() >= deadline
  return done / (core.now() - t0)
end

local rows = {}

function _M.report(name, subject, baseline, unit)
  rows[#rows + 1] = { name, subject, baseline, unit or "events/s" }
  io.write(("%-44s %12.0f %12.0f   %5.2f  %s\n"):format(name, subject, baseline, subject / baseline, unit or "events/s"))
  io.flush()
end

-- median(list) → the middle value (the mean of the two middle ones).
function _M.median(list)
  local t = {}
  for i, v in ipairs(list) do t[i] = v end
  table.sort(t)
  local n = #t
  if n == 0 then return 0 end
  return n % 2 == 1 and t[(n + 1) / 2] or (t[n / 2] + t[n / 2 + 1]) / 2
end

-- Prints a figure beside several same-run baselines, each with its ratio:
-- report_vs(name, subject, { value, value, … }).
function _M.report_vs(name, subject, baselines)
  local line = ("%-36s %9.0f"):format(name, subject)
  for _, b in ipairs(baselines) do line = line .. ("  %9.0f %5.2f"):format(b, subject / b) end
  print(line)
  io.flush()
end

function _M.header(title)
  print(title)
  print(("%-44s %12s %12s   %5s"):format("benchmark", "pgstore", "baseline", "ratio"))
end

-- Runs op(i) for `seconds`, `per` calls between clock reads; returns
-- ops/s and client CPU µs per op.
local function run(op, seconds, per)
  local n, t0, c0 = 0, core.now(), os.clock()
  local deadline = t0 + seconds
  repeat
    for _ = 1, per do
      n = n + 1
      op(n)
    end
  until core.now() >= deadline
  local wall, cpu = core.now() - t0, os.clock() - c0
  return n / wall, cpu / n * 1e6
end

-- Prints subject beside baseline: the best of `rounds` alternating rounds
-- of `seconds` each, after a warm-up of both (prepares, JIT). opts:
-- { seconds, rounds, per = 20, width = 30 }.
function _M.compare(name, subject, baseline, opts)
  local per = opts.per or 20
  run(subject, 0.2, per)
  run(baseline, 0.2, per)
  local best = { s = 0, b = 0, scpu = math.huge, bcpu = math.huge }
  for _ = 1, opts.rounds do
    local ops, cpu = run(baseline, opts.seconds, per)
    if ops > best.b then best.b = ops end
    if cpu < best.bcpu then best.bcpu = cpu end
    ops, cpu = run(subject, opts.seconds, per)
    if ops > best.s then best.s = ops end
    if cpu < best.scpu then best.scpu = cpu end
  end
  print(("%-" .. (opts.width or 30) .. "s %10.0f %10.0f %7.2f %9.1f %9.1f"):format(name, best.s, best.b,
    best.s / best.b, best.scpu, best.bcpu))
end

return _M
