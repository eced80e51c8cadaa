-- SPDX-License-Identifier: MIT
-- Projections through the real host binary: catch-up with --once, exactly
-- once under kill -9, skip and park of a poison event, stop with file:line,
-- rebuild equal to the first build, graceful SIGTERM, and the sandbox; and
-- the runner in process when a handler's statement loses the connection.
local core = require "pgstore.core"
local proxy = require "proxy"
local T = require "testenv"

local COUNTER = [[
return {
  name = %q,
  setup = "create table if not exists %s (stream text primary key, n int not null, total numeric not null)",
  teardown = "drop table if exists %s",
  batch = %d,
  on_error = %q,
  handlers = {
    Added = function(e, tx)
      if e.data.poison then error("poisoned event " .. e.version) end
      assert(tx:exec("insert into %s as t values ($1, 1, $2) on conflict (stream) do update set n = t.n + 1, total = t.total + excluded.total",
        e.stream, e.data.amount))
    end,
  },
}
]]

local function projection(dir, name, opts)
  opts = opts or {}
  local path = ("%s/%s.lua"):format(dir, name)
  T.write(path, COUNTER:format(name, name, name, opts.batch or 50, opts.on_error or "stop", name))
  return path
end

describe("pgstore project", function()
  local db, es, dir, table_name
  setup(function()
    db = T.connect()
    dir = T.tmpdir("proj")
  end)
  teardown(function()
    T.sh("rm -rf " .. dir)
    db:close()
    T.assert_no_leaks()
  end)
  -- Each test has its own event store, so projections see only its events.
  before_each(function()
    table_name = T.unique("proj_ev")
    es = assert(db:events{ table = table_name, notify = table_name })
  end)
  after_each(function() es:close() end)

  local function project(args)
    return T.sh(("%s --dsn %q project --table %s %s"):format(T.host(), T.dsn(), table_name, args))
  end

  local function model(name)
    local rows = db:query(("select stream, n, total from %s order by stream"):format(name))
    local m = {}
    for _, r in ipairs(rows or {}) do m[r.stream] = { n = r.n, total = r.total } end
    return m
  end

  local function append_added(prefix, streams, per_stream, extra)
    for s = 1, streams do
      local batch = {}
      for i = 1, per_stream do batch[i] = { type = "Added", data = { amount = i } } end
      if extra then batch[#batch + 1] = extra end
      assert(es:append(prefix .. s, batch))
    end
  end

  it("catches up with --once and writes the read model", function()
    local name = T.unique("proj_once")
    append_added(name .. "-", 3, 10)
    local out, rc = project(projection(dir, name) .. " --once")
    assert.equal(0, rc, out)
    assert.matches("projected %d+ events", out)
    local m = model(name)
    for s = 1, 3 do assert.same({ n = 10, total = "55" }, m[name .. "-" .. s]) end
    -- a second run has nothing new to do, and changes nothing
    out, rc = project(projection(dir, name) .. " --once")
    assert.equal(0, rc, out)
    assert.same(m, model(name))
  end)

  it("applies every event exactly once across kill -9 between batches", function()
    local name = T.unique("proj_kill")
    local path = projection(dir, name, { batch = 7 })
    append_added(name .. "-", 10, 60)
    for _ = 1, 4 do
      local p = T.spawn(([[os.execute(%q)]]):format(("%s --dsn %q project --table %s %s")
        :format(T.host(), T.dsn(), table_name, path)))
      T.sh("sleep 0." .. math.random(2, 6))
      T.sh(("pkill -9 -f '%s'"):format(path))
      T.wait(p, 10)
    end
    local out, rc = project(path .. " --once")
    assert.equal(0, rc, out)
    local m = model(name)
    for s = 1, 10 do assert.same({ n = 60, total = "1830" }, m[name .. "-" .. s], "stream " .. s) end
  end)

  it("stops on a failing handler with file:line and keeps the checkpoint before it", function()
    local name = T.unique("proj_stop")
    append_added(name .. "-", 1, 3, { type = "Added", data = { amount = 1, poison = true } })
    local path = projection(dir, name)
    local out, rc = project(path .. " --once")
    assert.equal(1, rc)
    assert.matches(name .. "%.lua:%d+: poisoned event 4", out)
    -- the failing batch rolled back, then what came before the poison
    -- committed on its own: the checkpoint stands just before it
    assert.matches("stopped with the checkpoint at %d+, just before it", out)
    assert.same({ n = 3, total = "6" }, model(name)[name .. "-1"])
    local cp = assert(db:checkpoints{ store = es })
    assert.equal(es:latest_position() - 1, cp:load("projection:" .. name))
    cp:close()
    out, rc = project(path .. " --once")
    assert.equal(1, rc)
    assert.same({ n = 3, total = "6" }, model(name)[name .. "-1"], "nothing applied twice")
  end)

  it("skips or parks a poison event and goes on", function()
    local skip, park = T.unique("proj_skip"), T.unique("proj_park")
    append_added(skip .. "-", 1, 5, { type = "Added", data = { amount = 1, poison = true } })
    append_added(park .. "-", 1, 5, { type = "Added", data = { amount = 1, poison = true } })
    assert(es:append(skip .. "-1", { { type = "Added", data = { amount = 100 } } }))
    assert(es:append(park .. "-1", { { type = "Added", data = { amount = 100 } } }))
    local out, rc = project(projection(dir, skip, { on_error = "skip" }) .. " " ..
      projection(dir, park, { on_error = "park" }) .. " --once")
    assert.equal(0, rc, out)
    assert.same({ n = 6, total = "115" }, model(skip)[skip .. "-1"])
    assert.same({ n = 6, total = "115" }, model(park)[park .. "-1"])
    -- both projections read the whole store: each poison event is parked once
    local parked = db:query([[select stream, type, error, event->'data'->>'poison' as poison
      from pgstore_parked where projection = $1 order by stream]], park)
    assert.equal(2, #parked)
    assert.equal(park .. "-1", parked[1].stream)
    assert.matches("poisoned event 6", parked[1].error)
    assert.equal("true", parked[1].poison)
    assert.equal(0, #db:query("select 1 from pgstore_parked where projection = $1", skip))
    -- a parked event belongs to its store
    assert.same({ es:store(), es:store() }, { db:query([[select store from pgstore_parked
      where projection = $1]], park)[1].store, db:query([[select store from pgstore_parked
      where projection = $1]], park)[2].store })
  end)

  it("rebuilds to the same read model", function()
    local name = T.unique("proj_rebuild")
    append_added(name .. "-", 4, 25)
    local path = projection(dir, name)
    assert.equal(0, select(2, project(path .. " --once")))
    local first = model(name)
    assert(db:exec(("update %s set n = -1"):format(name))) -- damage it
    local out, rc = project(path .. " --once --rebuild")
    assert.equal(0, rc, out)
    assert.same(first, model(name))
  end)

  it("finishes the batch in flight and exits 0 on SIGTERM", function()
    local name = T.unique("proj_term")
    local path = projection(dir, name)
    append_added(name .. "-", 2, 10)
    local p = T.spawn(([[os.exit(os.execute(%q) == 0 and 0 or 3)]]):format(
      ("exec %s --dsn %q project --table %s %s"):format(T.host(), T.dsn(), table_name, path)))
    assert(T.eventually(function()
      local m = model(name)
      return m[name .. "-2"] and m[name .. "-2"].n == 10
    end, 10))
    T.sh(("pkill -TERM -f 'pgstore.*project.*%s'"):format(path))
    local out, ended = T.wait(p, 10)
    assert.is_true(ended)
    -- (the suite connects as a superuser, which the host points out once)
    assert.equal("", (out:gsub("pgstore: projected[^\n]*\n", ""):gsub("pgstore: connected as %S+, a superuser[^\n]*\n", "")))
    local cp = db:query("select position from pgstore_checkpoints where consumer = $1", "projection:" .. name)
    assert.equal(1, #cp)
  end)

  it("hands handlers the newest shape with --upcasters and applies --policy retention", function()
    local name = T.unique("proj_up")
    T.write(dir .. "/" .. name .. ".lua", ([[return {
      name = %q,
      setup = "create table if not exists %s (stream text, currency text)",
      handlers = { Added = function(e, tx) assert(tx:exec("insert into %s values ($1, $2)", e.stream, e.data.currency)) end },
    }]]):format(name, name, name))
    T.write(dir .. "/up.lua", [[return { type = "Added", from = 1, to = 2,
      upcast = function(d) d.currency = d.currency or "EUR"; return d end }]])
    T.write(dir .. "/keep2.lua", [[return { name = "keep two", streams = "up-*", max_count = 2 }]])
    assert(es:append("up-1", { { type = "Added", schema_version = 1, data = { amount = 1 } },
                               { type = "Added", schema_version = 1, data = { amount = 2 } },
                               { type = "Added", schema_version = 1, data = { amount = 3 } } }))
    local out, rc = project(("%s/%s.lua --upcasters %s/up.lua --policy %s/keep2.lua --once")
      :format(dir, name, dir, dir))
    assert.equal(0, rc, out)
    assert.same({ { n = 3 } }, db:query(("select count(*) as n from %s where currency = 'EUR'"):format(name)))
    assert.equal(2, db:query(("select count(*) as n from %s where stream = 'up-1'"):format(table_name))[1].n)
  end)

  it("sandboxes scripts: unknown globals and io are errors", function()
    local path = dir .. "/sneaky.lua"
    T.write(path, [[return { name = "sneaky", handlers = { Added = function(e, tx) io.write("x") end } }]])
    append_added("sneaky-", 1, 1)
    local out, rc = project(path .. " --once")
    assert.equal(1, rc)
    assert.matches("unknown global 'io'", out)
    T.write(path, [[local x = undefined_thing; return { name = "sneaky2", handlers = { A = function() end } }]])
    out, rc = project(path .. " --once")
    assert.equal(1, rc)
    assert.matches("sneaky%.lua:1: unknown global 'undefined_thing'", out)
  end)

  it("refuses bad projection files with a usage or load error", function()
    local out, rc = T.sh(T.host() .. " project")
    assert.equal(2, rc)
    T.write(dir .. "/bad.lua", [[return { name = "bad", handlers = {}, on_error = "explode" }]])
    out, rc = project(dir .. "/bad.lua --once")
    assert.equal(1, rc)
    assert.matches("bad%.lua: handlers must be", out)
  end)
end)

-- A connection lost under a handler's statement is no handler failure: the
-- batch's whole transaction rolled back, so nothing was skipped or parked,
-- and no COMMIT was sent. The runner rewinds to the stored checkpoint and
-- applies the batch again.
describe("the projection runner, a handler's connection cut", function()
  local db, P, cdb
  setup(function()
    db = T.connect()
    P = proxy.start{ lifetime = 120 }
    cdb = T.connect{ dsn = P.dsn, pool_size = 2 }
  end)
  teardown(function()
    cdb:close()
    P:stop()
    db:close()
    T.assert_no_leaks()
  end)

  for _, on_error in ipairs{ "stop", "skip", "park" } do
    it("rolls the batch back and applies it again (on_error = " .. on_error .. ")", function()
      local name = T.unique("proj_cut")
      local es = assert(db:events{ table = name .. "_ev", notify = false })
      for i = 1, 3 do
        local b = {}
        for j = 1, 10 do b[j] = { type = "P", data = { n = (i - 1) * 10 + j } } end
        assert(es:append("p" .. i, b))
      end
      assert(db:exec(("create table %s (position bigint primary key, applied int not null)"):format(name)))
      local upsert = ("insert into %s as t values ($1, 1) on conflict (position) do update set applied = t.applied + 1")
        :format(name)
      local cut = false
      local def = { name = name, types = { "P" }, batch = 10, on_error = on_error, partitions = 8,
                    handlers = { P = function(e, tx)
                      if e.data.n == 15 and not cut then
                        cut = true
                        P:cut_all()
                        core.sleep(0.3)
                      end
                      assert(tx:exec(upsert, e.position))
                    end } }
      local said = {}
      local runner = assert(require("pgstore.projection").runner(cdb, { def },
        { events = es, once = true, poll = 0.05, say = function(m) said[#said + 1] = m end }))
      local res, err = runner:run()
      runner:close()
      assert.truthy(res, tostring(err))
      assert.is_true(cut)
      local text = table.concat(said, "\n")
      assert.not_matches("skipped", text)
      assert.not_matches("parked", text)
      assert.not_matches("commit outcome unknown", text)
      assert.matches("connection lost before the commit, the batch rolled back", text)
      local rows = assert(db:query(("select count(*)::int as n, max(applied) as most from %s"):format(name)))[1]
      assert.same({ n = 30, most = 1 }, rows, "every event applied exactly once")
      assert.same({}, assert(db:query("select position from pgstore_parked where projection = $1", name)))
      local cp = assert(db:checkpoints{ store = es })
      assert.equal(es:latest_position(), cp:load("projection:" .. name))
      cp:close()
      assert(db:exec("drop table " .. name))
      es:close()
    end)
  end
end)
