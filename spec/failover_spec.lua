-- SPDX-License-Identifier: MIT
-- Failover: a private primary with a synchronous standby, and clients
-- given a multi-host DSN (target_session_attrs=read-write). Under three
-- writer processes (two with idempotency keys) and two followers
-- (`pgstore tail --follow`, a db:subscribe{} loop that acks), the primary
-- is killed with `pg_ctl stop -m immediate` and the standby promoted; the
-- old primary comes back as a standby (pg_rewind) and a planned
-- switchover fences the new primary read-only (its sessions stay, their
-- writes get SQLSTATE 25006) before handing back. Everyone goes on by
-- themselves; every acknowledged append is on the last primary, once;
-- keyed retries write nothing twice; the followers neither skip nor
-- repeat. Prints the outage clients saw.
local core = require "pgstore.core"
local pgstore = require "pgstore"
local T = require "testenv"
local replica = require "privatereplica"

-- Runs a shell command in the background: its pid, stdout, stderr and,
-- once it ended, its exit status.
local function launch(dir, name, cmd)
  local p = { out = ("%s/%s.out"):format(dir, name), err = ("%s/%s.err"):format(dir, name),
              rc = ("%s/%s.rc"):format(dir, name), pidfile = ("%s/%s.pid"):format(dir, name) }
  T.sh(("(%s >%s 2>%s & echo $! >%s; wait $!; echo $? >%s) >/dev/null 2>&1 &")
    :format(cmd, p.out, p.err, p.pidfile, p.rc))
  p.pid = T.eventually(function() return tonumber(T.read(p.pidfile):match("%d+")) end, 5)
  assert(p.pid, "did not start: " .. cmd)
  return p
end

local function ended(p) return T.read(p.rc):match("%d+") ~= nil end

-- A writer: appends until the stop file appears. With keys, an append
-- that fails with an unknown outcome is retried with the same key until
-- it is acknowledged; without, it is told as UNKNOWN and never retried
-- (it may or may not be there — never twice). Prints the longest time
-- between two acknowledgements.
local WRITER = [[
  local core = require "pgstore.core"
  io.stdout:setvbuf("line")
  local w, stop, keyed = tonumber(arg[1]), arg[2], arg[3] == "keyed"
  local es, err
  for _ = 1, 100 do
    es, err = db:events{ migrate = false, notify = false }
    if es then break end
    core.sleep(0.1)
  end
  assert(es, tostring(err))
  local function stopped() local f = io.open(stop) if f then f:close() end return f ~= nil end
  local seq, gap, last, deadline = 0, 0, core.now(), core.now() + 150
  while not stopped() and core.now() < deadline do
    seq = seq + 1
    local tag = ("w%d-%d"):format(w, seq)
    local batch = { { type = "Added", data = { k = tag, i = 1 } }, { type = "Added", data = { k = tag, i = 2 } } }
    local attempts = 0
    while not stopped() and core.now() < deadline do
      attempts = attempts + 1
      local r, e = es:append(("w%d-s%d"):format(w, seq % 4), batch, { idempotency_key = keyed and tag or nil })
      if r then
        local t = core.now()
        if t - last > gap then gap = t - last end
        last = t
        print(("OK %s %d %d %s %d"):format(tag, r.first_position, r.last_position, tostring(r.replayed), attempts))
        break
      end
      print(("ERR %s %s %s"):format(tag, e.code, tostring(e.sqlstate)))
      if e.code ~= "connection" and e.code ~= "timeout" then error("not a connection error: " .. tostring(e)) end
      if keyed then assert(e.idempotency_key == tag, "no key on " .. tostring(e))
      else print("UNKNOWN " .. tag) break end
      core.sleep(0.05)
    end
    core.sleep(0.01)
  end
  print(("GAP %.3f"):format(gap))
  print("DONE " .. seq)
]]

local SUBSCRIBER = [[
  local pgstore = require "pgstore"
  local function main()
  local db = assert(pgstore.connect{ dsn = arg[1] })
  local es, err
  for _ = 1, 100 do -- opened as the writers open it
    es, err = db:events{ migrate = false, notify = false }
    if es then break end
    io.stderr:write("open: ", tostring(err), " (", tostring(err.code), ")\n")
    require("pgstore.core").sleep(0.1)
  end
  assert(es, err)
  local sub = assert(db:subscribe{ name = "failover", events = es, poll = 0.2,
                                   say = function(msg) io.stderr:write(msg, "\n") end })
  while true do
    local f = io.open(arg[2])
    if f then f:close() break end
    local batch, err = sub:next(0.5)
    if not batch then error(("%s (%s, %s)"):format(tostring(err), err.code, tostring(err.sqlstate))) end
    for _, e in ipairs(batch) do io.stdout:write(e.position, "\n") end
    io.stdout:flush()
    if #batch > 0 then
      -- an ack lost with the connection: the next one covers it
      local ok, aerr = sub:ack(batch[#batch].position)
      if not ok and aerr.code ~= "connection" then
        error(("ack: %s (%s, %s)"):format(tostring(aerr), aerr.code, tostring(aerr.sqlstate)))
      end
    end
  end
  sub:close()
  db:close()
  end
  -- a failure's traceback, whatever was raised
  local ok, e = xpcall(main, function(e)
    return debug.traceback(type(e) == "table" and ("%s (%s, %s)"):format(tostring(e.message), tostring(e.code),
      tostring(e.sqlstate)) or tostring(e), 2)
  end)
  if not ok then io.stderr:write(e, "\n") os.exit(1) end
]]

describe("failover to a synchronous standby", function()
  local pair, dir

  setup(function()
    pair = replica.start("failover", { sync = true })
    dir = T.tmpdir("failover")
  end)

  teardown(function()
    if pair then pair:stop() end
    if dir then T.sh("rm -rf " .. dir) end
  end)

  it("keeps writers and followers going, loses nothing acknowledged and writes nothing twice", function()
    local dsn = pair:multi_dsn()
    local db = assert(pgstore.connect{ dsn = dsn, application_name = "failover-spec" })
    local es = assert(db:events{})
    es:close()
    T.write(dir .. "/writer.lua", WRITER)
    T.write(dir .. "/sub.lua", SUBSCRIBER)
    local stop = dir .. "/stop"
    local writers = {}
    local tail, sub
    finally(function() -- whatever failed: no process of this spec outlives it
      T.write(stop, "")
      T.write(dir .. "/sub.stop", "")
      local procs = { tail or false, sub or false }
      for _, p in ipairs(writers) do procs[#procs + 1] = p end
      for _, p in ipairs(procs) do
        if p and not ended(p) then T.sh("kill -TERM " .. p.pid) end
      end
    end)
    for w = 1, 3 do
      writers[w] = launch(dir, "writer" .. w, ("%s --dsn %q run %s/writer.lua %d %s %s")
        :format(T.host(), dsn, dir, w, stop, w <= 2 and "keyed" or "plain"))
    end
    tail = launch(dir, "tail", ("%s --dsn %q tail --all --follow"):format(T.host(), dsn))
    sub = launch(dir, "sub", ("%sluajit %s/sub.lua %q %s/sub.stop"):format(require("nginx").preload(),
      dir, dsn, dir))
    local function acked()
      local n = 0
      for w = 1, 3 do n = n + select(2, T.read(writers[w].out):gsub("\nOK ", "")) end
      return n
    end
    local function progress(more, what)
      local from = acked()
      assert(T.eventually(function() return acked() >= from + more end, 40),
        ("no progress %s: %s"):format(what, T.read(writers[1].out):sub(-400) .. T.read(writers[1].err)))
    end
    progress(20, "before the failover")
    -- the followers are up (a start while no server takes writes is a
    -- start that fails, as with one server)
    assert(T.eventually(function() return T.read(tail.out) ~= "" and T.read(sub.out) ~= "" end, 40),
      "the followers did not start: " .. T.read(tail.err) .. T.read(sub.err))

    -- the failover: an immediate stop, the standby promoted 0.5 s later
    local t_kill = core.now()
    local took = pair:failover(0.5)
    progress(3, "after the failover")
    local back = core.now() - t_kill
    progress(20, "after the failover")

    -- the old primary back as a standby, then a planned switchover to it:
    -- the fenced primary's sessions get 25006 on their writes
    pair:rejoin()
    progress(10, "with the old primary back as a standby")
    pair:switchover(1)
    progress(20, "after the switchover")
    T.write(stop, "")

    local oks, unknown, errs, gap, codes = {}, {}, 0, 0, {}
    for w = 1, 3 do
      T.eventually(function() return ended(writers[w]) end, 30)
      local out = T.read(writers[w].out)
      assert.equal("0", T.read(writers[w].rc):match("%d+"), "writer " .. w .. ": " .. out:sub(-600)
        .. T.read(writers[w].err))
      for tag, fp, lp, rep, att in out:gmatch("OK (%S+) (%d+) (%d+) (%a+) (%d+)") do
        oks[#oks + 1] = { tag = tag, fp = tonumber(fp), lp = tonumber(lp), replayed = rep == "true",
                          attempts = tonumber(att), keyed = w <= 2 }
      end
      for tag in out:gmatch("UNKNOWN (%S+)") do unknown[#unknown + 1] = tag end
      for _, code, state in out:gmatch("ERR (%S+) (%S+) (%S+)") do
        errs = errs + 1
        local k = code .. "/" .. state
        codes[k] = (codes[k] or 0) + 1
      end
      gap = math.max(gap, tonumber(out:match("GAP (%S+)")))
    end

    -- every acknowledged append is on the last primary, once, whole
    local per_tag = {}
    for _, r in ipairs(assert(db:query([[select data->>'k' as k, count(*) as n, min(position) as fp,
      max(position) as lp from events group by 1]]))) do
      per_tag[r.k] = r
    end
    local retried, replayed = 0, 0
    for _, ok in ipairs(oks) do
      local row = per_tag[ok.tag]
      assert.truthy(row, "append " .. ok.tag .. " was acknowledged and is not there")
      assert.equal(2, row.n, "append " .. ok.tag .. " is there " .. row.n / 2 .. " times")
      assert.equal(ok.fp, row.fp)
      assert.equal(ok.lp, row.lp)
      if ok.attempts > 1 then retried = retried + 1 end
      if ok.replayed then replayed = replayed + 1 end
      per_tag[ok.tag] = nil
    end
    -- an append of unknown outcome is there once or not at all; nothing
    -- else is there
    local landed = 0
    for _, tag in ipairs(unknown) do
      local row = per_tag[tag]
      if row then
        assert.equal(2, row.n, "append " .. tag .. " is there " .. row.n / 2 .. " times")
        landed = landed + 1
        per_tag[tag] = nil
      end
    end
    assert.same({}, per_tag)

    -- the followers delivered every event once, in order
    local want = {}
    for _, r in ipairs(assert(db:query("select position from events order by position"))) do
      want[#want + 1] = r.position
    end
    local function delivered(p, pattern)
      local got = {}
      for pos in T.read(p.out):gmatch(pattern) do got[#got + 1] = tonumber(pos) end
      return got
    end
    assert.truthy(T.eventually(function() return #delivered(tail, "(%d+)\t[^\n]*\n") >= #want end, 20),
      "tail fell behind: " .. T.read(tail.err))
    assert.truthy(T.eventually(function() return #delivered(sub, "(%d+)\n") >= #want end, 20),
      "the subscriber fell behind: " .. T.read(sub.err))
    core.sleep(0.3)
    assert.is_false(ended(tail), "tail ended: " .. T.read(tail.err))
    assert.is_false(ended(sub), "the subscriber ended: " .. T.read(sub.err))
    assert.same(want, delivered(tail, "(%d+)\t[^\n]*\n"))
    assert.same(want, delivered(sub, "(%d+)\n"))
    T.write(dir .. "/sub.stop", "")
    T.sh("kill -TERM " .. tail.pid)
    assert.truthy(T.eventually(function() return ended(tail) and ended(sub) end, 10))
    assert.equal("0", T.read(sub.rc):match("%d+"), T.read(sub.err))

    local codelist = {}
    for c, n in pairs(codes) do codelist[#codelist + 1] = c .. " " .. n end
    table.sort(codelist)
    print(("\n  failover: promoted %.1f s after the kill; writers: %.1f s without an ack (longest gap), "
      .. "acks again %.1f s after the kill"):format(took, gap, back))
    print(("  %d appends acknowledged (%d retried with their key, %d replayed), %d of unknown outcome "
      .. "(%d landed, once); %d failed attempts (%s); %d events, lost 0, duplicated 0; "
      .. "tail and subscriber delivered %d each, in order"):format(#oks, retried, replayed, #unknown, landed,
      errs, table.concat(codelist, ", "), #want, #want))
    assert.truthy(retried > 0 or #unknown > 0, "no append failed: the failover did not hit the writers")
    db:close()
  end)
end)
