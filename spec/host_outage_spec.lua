-- SPDX-License-Identifier: MIT
-- The host rides through its database restarting: `pgstore project`,
-- `pgstore tail --follow` and a db:subscribe{} loop keep running while a
-- private cluster is restarted (`pg_ctl restart -m fast`, then `-m
-- immediate`) under appends before, during and after; each says the outage
-- once (lost, back after N s) and delivers every event exactly once. A real
-- error still ends the host as before.
local core = require "pgstore.core"
local pgstore = require "pgstore"
local T = require "testenv"
local private = require "privatedb"

-- Runs a shell command in the background: its pid, stdout, stderr and,
-- once it ended, its exit status.
local function launch(dir, name, cmd)
  local p = { dir = dir, out = ("%s/%s.out"):format(dir, name), err = ("%s/%s.err"):format(dir, name),
              rc = ("%s/%s.rc"):format(dir, name), pidfile = ("%s/%s.pid"):format(dir, name) }
  T.sh(("rm -f %s %s; (%s >%s 2>%s & echo $! >%s; wait $!; echo $? >%s) >/dev/null 2>&1 &")
    :format(p.rc, p.pidfile, cmd, p.out, p.err, p.pidfile, p.rc))
  p.pid = T.eventually(function() return tonumber(T.read(p.pidfile):match("%d+")) end, 5)
  assert(p.pid, "did not start: " .. cmd)
  return p
end

local function ended(p) return T.read(p.rc):match("%d+") ~= nil end

-- SIGTERM, then the exit status (nil when it did not end within 20 s).
local function stop(p)
  if not ended(p) then T.sh("kill -TERM " .. p.pid) end
  T.eventually(function() return ended(p) end, 20)
  return tonumber(T.read(p.rc):match("%d+"))
end

local function count(text, pattern)
  return select(2, text:gsub(pattern, ""))
end

-- Appends one event, retrying through the outage (an append that failed
-- may have landed: the store, not this count, is what is compared).
local function append(es, i)
  for _ = 1, 300 do
    if es:append("s" .. (i % 7), { { type = "Added", data = { i = i } } }) then return end
    core.sleep(0.1)
  end
  error("append " .. i .. " failed for 30 s")
end

-- Appends before, during and after each restart: fast, immediate, and
-- an immediate stop with the server away for 2 s (an outage no reader
-- can miss between two reads).
local function appends_across_restarts(cluster, es)
  local i = 0
  for _, mode in ipairs{ "fast", "immediate", "away" } do
    for _ = 1, 40 do i = i + 1; append(es, i) end
    cluster:restart_async(mode)
    local deadline = core.now() + 60
    repeat -- during: whatever the server takes while going down and coming up
      i = i + 1
      es:append("s" .. (i % 7), { { type = "Added", data = { i = i } } })
      core.sleep(0.02)
    until cluster:restarted() or core.now() > deadline
    assert.truthy(cluster:restarted(), "the restart did not end")
    for _ = 1, 40 do i = i + 1; append(es, i) end
    core.sleep(1)
  end
end

local function positions(es)
  local all, cursor = {}, 0
  while true do
    local rows
    rows, cursor = assert(es:read_all{ after = cursor, limit = 1000 })
    if #rows == 0 then return all end
    for _, e in ipairs(rows) do all[#all + 1] = e.position end
  end
end

-- The outage lines: as many "lost" as "back", one to three (three
-- restarts; a quick one over between two reads of an idle host goes
-- unseen, the 2 s one does not), each "back" with its duration.
local function assert_outage_told(err, what)
  local lines = {}
  for l in err:gmatch("[^\n]*connection[^\n]*") do lines[#lines + 1] = l end
  print(("\n  %s: %s"):format(what, table.concat(lines, "\n    ")))
  local lost = count(err, "connection to the server lost")
  local back = count(err, "connection back after [%d%.]+ s")
  assert.truthy(lost >= 1 and lost <= 3, "outage lines: " .. err)
  assert.equal(lost, back, err)
end

describe("the host across a database restart", function()
  local cluster, db, es, dir
  setup(function()
    cluster = private.start("outage")
    dir = T.tmpdir("outage")
    T.sh("chmod 755 " .. dir)
  end)
  teardown(function()
    if db then db:close() end
    if cluster then cluster:stop() end
    T.sh("rm -rf " .. dir)
  end)
  before_each(function()
    if db then db:close() end
    db = assert(pgstore.connect{ dsn = cluster.dsn, application_name = "pgstore-spec" })
    es = assert(db:events{})
    assert(es:truncate())
  end)

  it("replaces a pooled connection whose server restarted", function()
    for _, mode in ipairs{ "fast", "immediate" } do
      assert(db:query("select 1"))
      cluster:restart(mode)
      local rows, err = db:query("select 1 as one")
      assert.is_nil(err, mode)
      assert.equal(1, rows[1].one)
    end
  end)

  -- stop: a lost connection taken for a handler's failure would end the
  -- host; park: it would park events.
  for _, on_error in ipairs{ "stop", "park" } do
  it("keeps `pgstore project` running; the read model counts every event once (on_error = " .. on_error .. ")",
     function()
    db:exec("drop table if exists counted")
    db:exec("delete from pgstore_checkpoints")
    T.write(dir .. "/counted.lua", [[
      return {
        name = "counted", on_error = "]] .. on_error .. [[", batch = 50,
        setup = "create table if not exists counted (position bigint primary key, n int not null)",
        handlers = { Added = function(e, tx)
          tx:query("select pg_sleep(0.002)")
          assert(tx:exec("insert into counted (position, n) values ($1, 1) "
            .. "on conflict (position) do update set n = counted.n + 1", e.position))
        end },
      }]])
    for i = 1, 200 do append(es, -i) end
    local p = launch(dir, "project_" .. on_error, ("%s --dsn %q project %s/counted.lua"):format(T.host(), cluster.dsn, dir))
    -- running (a server away at start is a start that fails, as before)
    assert.truthy(T.eventually(function()
      local r = db:query("select count(*) as n from counted")
      return r and r[1].n > 0
    end, 20), T.read(p.err))
    appends_across_restarts(cluster, es)
    local want = positions(es)
    local caught = T.eventually(function()
      local r = db:query("select count(*) as n from counted")
      return r and r[1].n == #want
    end, 30)
    local err = T.read(p.err)
    assert.is_false(ended(p), ("the host ended (status %s): %s"):format(T.read(p.rc), err))
    assert.truthy(caught, "the read model did not catch up: " .. err)
    local rows = assert(db:query("select position, n from counted order by position"))
    for k, pos in ipairs(want) do
      assert.equal(pos, rows[k].position)
      assert.equal(1, rows[k].n, ("position %d counted %d times"):format(pos, rows[k].n))
    end
    local parked = db:query("select count(*) as n from pgstore_parked")
    assert.equal(0, parked and parked[1].n or 0, "a lost connection was parked")
    assert.equal(0, stop(p), err)
    err = T.read(p.err)
    assert_outage_told(err, ("project (%s), %d events"):format(on_error, #want))
    assert.no.matches("handler", err)
  end)
  end

  it("keeps `pgstore tail --follow` printing every event once, in order", function()
    for i = 1, 50 do append(es, -i) end
    local p = launch(dir, "tail", ("%s --dsn %q tail --all --follow"):format(T.host(), cluster.dsn))
    assert.truthy(T.eventually(function() return T.read(p.out) ~= "" end, 20), T.read(p.err))
    appends_across_restarts(cluster, es)
    local want = positions(es)
    local printed = T.eventually(function()
      return count(T.read(p.out), "\n") >= #want
    end, 30)
    core.sleep(0.5)
    local err = T.read(p.err)
    assert.is_false(ended(p), "tail ended: " .. err)
    assert.truthy(printed, "tail printed too little: " .. err)
    local got = {}
    for pos in T.read(p.out):gmatch("(%d+)\t[^\n]*\n") do got[#got + 1] = tonumber(pos) end
    assert.same(want, got)
    assert.equal(0, stop(p), err)
    assert_outage_told(T.read(p.err), ("tail --follow, %d events"):format(#want))
  end)

  it("keeps a db:subscribe{} loop in a luajit process delivering every event once", function()
    db:exec("delete from pgstore_checkpoints")
    for i = 1, 50 do append(es, -i) end
    T.write(dir .. "/sub.lua", [[
      local pgstore = require "pgstore"
      local db = assert(pgstore.connect{ dsn = arg[1] })
      local es = assert(db:events{})
      local sub = assert(db:subscribe{ name = "outage-sub", events = es,
                                       say = function(msg) io.stderr:write(msg, "\n") end })
      local function loop()
        local f = io.open(arg[2])
        if f then f:close() return nil end
        local batch, err = sub:next(0.5)
        if not batch then error(("%s (%s, %s)"):format(tostring(err), err.code, tostring(err.sqlstate))) end
        for _, e in ipairs(batch) do io.stdout:write(e.position, "\n") end
        io.stdout:flush()
        if #batch > 0 then
          -- an ack lost with the connection: the next one covers it
          local ok, err = sub:ack(batch[#batch].position)
          if not ok and err.code ~= "connection" then error(tostring(err)) end
        end
        return true
      end
      -- a failure's traceback, whatever was raised
      local function raised(e)
        return debug.traceback(type(e) == "table" and ("%s (%s)"):format(tostring(e.message), tostring(e.code))
          or tostring(e), 2)
      end
      while true do
        local ok, stop = xpcall(loop, raised)
        if not ok then error(stop, 0) end
        if stop == nil then break end
      end
      sub:close()
      db:close()]])
    -- luajit loads pgstore/core.so: under the sanitizer build, with its runtime.
    local p = launch(dir, "sub", ("%sluajit %s/sub.lua %q %s/sub.stop"):format(require("nginx").preload(),
      dir, cluster.dsn, dir))
    assert.truthy(T.eventually(function() return T.read(p.out) ~= "" end, 20), T.read(p.err))
    appends_across_restarts(cluster, es)
    local want = positions(es)
    local done = T.eventually(function() return count(T.read(p.out), "\n") >= #want end, 30)
    core.sleep(0.5)
    local err = T.read(p.err)
    assert.is_false(ended(p), "the subscriber ended: " .. err)
    assert.truthy(done, "the subscriber saw too little: " .. err)
    local got = {}
    for pos in T.read(p.out):gmatch("(%d+)\n") do got[#got + 1] = tonumber(pos) end
    assert.same(want, got)
    T.write(dir .. "/sub.stop", "")
    T.eventually(function() return ended(p) end, 10)
    assert.equal(0, stop(p), err)
    assert_outage_told(T.read(p.err), ("db:subscribe{}, %d events"):format(#want))
  end)

  it("ends `pgstore project` and `tail --follow` with status 0 on SIGTERM while the server is away", function()
    db:exec("delete from pgstore_checkpoints")
    T.write(dir .. "/idle.lua", [[return { name = "idle", handlers = { Added = function() end } }]])
    for i = 1, 5 do append(es, i) end
    local proj = launch(dir, "idle", ("%s --dsn %q project %s/idle.lua"):format(T.host(), cluster.dsn, dir))
    local tail = launch(dir, "tail_away", ("%s --dsn %q tail --all --follow"):format(T.host(), cluster.dsn))
    assert.truthy(T.eventually(function() return T.read(tail.out) ~= "" end, 20), T.read(tail.err))
    assert.truthy(T.eventually(function()
      local r = db:query("select count(*) as n from pgstore_checkpoints where consumer like '%idle'")
      return r and r[1].n > 0
    end, 20), T.read(proj.err))
    cluster:down()
    local ok, why = pcall(function()
      for _, p in ipairs{ proj, tail } do
        assert.truthy(T.eventually(function() return T.read(p.err):find("connection to the server lost") end, 20),
          T.read(p.err))
        local t0 = core.now()
        assert.equal(0, stop(p), T.read(p.err))
        assert.truthy(core.now() - t0 < 5, "took " .. (core.now() - t0) .. " s to stop")
      end
    end)
    cluster:up()
    assert(ok, why)
  end)

  it("still ends `pgstore project` on a real error: the read model's INSERT right revoked", function()
    db:exec("delete from pgstore_checkpoints")
    db:exec("drop table if exists guarded")
    db:exec("drop role if exists outage_writer")
    assert(db:exec("create role outage_writer login"))
    assert(db:exec("create table guarded (position bigint primary key)"))
    assert(db:exec("grant select, insert, update, delete on all tables in schema public to outage_writer"))
    assert(db:exec("grant usage on all sequences in schema public to outage_writer"))
    T.write(dir .. "/guarded.lua", [[
      return { name = "guarded", handlers = { Added = function(e, tx)
        assert(tx:exec("insert into guarded values ($1)", e.position))
      end } }]])
    for i = 1, 5 do append(es, i) end
    local dsn = cluster.dsn:gsub("user=postgres", "user=outage_writer")
    local p = launch(dir, "guarded", ("%s --dsn %q --no-migrate project %s/guarded.lua"):format(T.host(), dsn, dir))
    assert.truthy(T.eventually(function()
      local r = db:query("select count(*) as n from guarded")
      return r and r[1].n == 5
    end, 20), T.read(p.err))
    assert(db:exec("revoke insert on guarded from outage_writer"))
    append(es, 6)
    assert.truthy(T.eventually(function() return ended(p) end, 20), "the host did not end: " .. T.read(p.err))
    local err = T.read(p.err)
    assert.equal(1, tonumber(T.read(p.rc):match("%d+")), err)
    assert.matches("permission denied for table guarded", err)
    assert.no.matches("connection to the server lost", err)
  end)

  it("still ends `pgstore project` on a real error: a handler that raises", function()
    db:exec("delete from pgstore_checkpoints")
    T.write(dir .. "/poison.lua", [[
      return { name = "poisoned", handlers = { Added = function(e)
        if e.data.i == 3 then error("poisoned event") end
      end } }]])
    for i = 1, 5 do append(es, i) end
    local p = launch(dir, "poison", ("%s --dsn %q project %s/poison.lua"):format(T.host(), cluster.dsn, dir))
    assert.truthy(T.eventually(function() return ended(p) end, 20), "the host did not end")
    local err = T.read(p.err)
    assert.equal(1, tonumber(T.read(p.rc):match("%d+")), err)
    assert.matches("poison%.lua:%d+: poisoned event", err)
    assert.no.matches("connection", err)
  end)
end)
