-- SPDX-License-Identifier: MIT
-- A partitioned projection reads only its partitions: the server's
-- partition of a stream equals partition_for's for any name, two worker
-- processes over 8 partitions read each event about once (not once per
-- partition) through one LISTEN connection each, and every event is
-- handled exactly once when one of them is killed mid-run. Its commits
-- follow the partitions that got events, not the partition count.
local T = require "testenv"
local core = require "pgstore.core"
local cjson = require "cjson"

-- A random valid UTF-8 stream name of 1 to 40 characters, of 1 to 4 bytes each.
local function utf8_char(cp)
  local char = string.char
  if cp < 0x80 then return char(cp) end
  if cp < 0x800 then return char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64) end
  if cp < 0x10000 then
    return char(0xE0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
  end
  return char(0xF0 + math.floor(cp / 262144), 0x80 + math.floor(cp / 4096) % 64,
    0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
end

local function random_name()
  local out = {}
  for i = 1, math.random(1, 40) do
    local kind, cp = math.random(4)
    if kind == 1 then cp = math.random(33, 126)
    elseif kind == 2 then cp = math.random(0xA0, 0x7FF)
    elseif kind == 3 then
      repeat cp = math.random(0x800, 0xFFFD) until cp < 0xD800 or cp > 0xDFFF
    else cp = math.random(0x10000, 0x10FFFF) end
    out[i] = utf8_char(cp)
  end
  return table.concat(out)
end

describe("partition filter on the server", function()
  local db, es, events
  setup(function()
    db = T.connect()
    events = T.unique("prf")
    es = assert(db:events{ table = events, notify = false })
    math.randomseed(os.time())
  end)
  teardown(function()
    es:close()
    db:close()
    T.assert_no_leaks()
  end)

  it("gives every stream the partition partition_for gives it, for any name and count", function()
    local names = {}
    for i = 1, 3000 do names[i] = random_name() end
    names[#names + 1] = "a"
    names[#names + 1] = ("x"):rep(200)
    local sql = ("select x.n, %s_partition(%s_stream_key(x.s), $2) as p"
      .. " from jsonb_array_elements_text($1::jsonb) with ordinality as x(s, n) order by x.n"):format(events, events)
    for _, count in ipairs{ 1, 2, 3, 7, 8, 12, 100, 1000, 65536 } do
      local rows = assert(db:query(sql, cjson.encode(names), count))
      assert.equal(#names, #rows)
      for i, r in ipairs(rows) do
        if r.p ~= core.partition_for(names[i], count) then
          error(("count %d: the server puts %q in %d, partition_for in %d")
            :format(count, names[i], r.p, core.partition_for(names[i], count)))
        end
      end
    end
  end)

  it("reads each partition's events only", function()
    local batches = {}
    for i = 1, 400 do
      batches[i] = { stream = random_name() .. "-" .. i, events = { { type = "A", data = { i = i } }, { type = "A", data = { i = i } } } }
    end
    assert(es:append_many(batches))
    local function check()
      local seen = 0
      for p = 0, 7 do
        local after = 0
        repeat
          -- a page ends after about 97 × 8 events of any stream: it may
          -- hold few or none of this partition's before the end
          local rows, cursor = assert(es:read_all{ after = after, limit = 97, partitions = { p }, partition_count = 8 })
          for _, e in ipairs(rows) do
            assert.equal(core.partition_for(e.stream, 8), p)
            seen = seen + 1
          end
          local moved = cursor > after
          after = cursor
        until not moved
      end
      assert.equal(800, seen)
    end
    check()
    local both = assert(es:read_all{ partitions = { 2, 5 }, partition_count = 8, limit = 1000 })
    for _, e in ipairs(both) do
      local p = core.partition_for(e.stream, 8)
      assert.is_true(p == 2 or p == 5)
    end
    local nothing, err = es:read_all{ partitions = { 8 }, partition_count = 8 }
    assert.is_nil(nothing)
    assert.equal("invalid", err.code)
  end)

  it("keeps a set's partition count: another count is refused until a rebuild", function()
    local name = T.unique("count_set")
    local a = assert(db:partitions{ name = name, count = 8 })
    local b, err = db:partitions{ name = name, count = 4 }
    assert.is_nil(b)
    assert.equal("invalid", err.code)
    assert.matches("has 8 partitions, not 4", err.message)
    a:close()
    local projection = require "pgstore.projection"
    local function def(n)
      return { name = "counted", partitioned = true, partitions = n, handlers = { Added = function() end } }
    end
    local r = assert(projection.runner(db, { def(8) }, { events = es, say = function() end }))
    r:close()
    local none, rerr = projection.runner(db, { def(4) }, { events = es, say = function() end })
    assert.is_nil(none)
    assert.equal("invalid", rerr.code)
    r = assert(projection.runner(db, { def(4) }, { events = es, rebuild = true, say = function() end }))
    r:close()
  end)
end)

-- A worker: the projection runner over the store, counting the rows
-- every read_all returns into a file (a line per read, so a SIGKILL loses
-- none). arg: application name, table, channel, model table, count file, dsn.
local WORKER = [[
local app, events, chan, model, counts, dsn = arg[1], arg[2], arg[3], arg[4], arg[5], arg[6]
local pgstore = require "pgstore"
local projection = require "pgstore.projection"
local wdb = assert(pgstore.connect{ dsn = dsn, application_name = app, pool_size = 2 })
local es = assert(wdb:events{ table = events, notify = chan })
local read_all = es.read_all
es.read_all = function(self, o)
  local rows, cursor = read_all(self, o)
  if rows then
    local f = assert(io.open(counts, "a"))
    f:write(#rows, "\n")
    f:close()
  end
  return rows, cursor
end
local runner = assert(projection.runner(wdb, { {
  name = model, partitioned = true, partitions = 8, batch = 200,
  setup = ("create table if not exists %s (position bigint primary key, stream text not null, seen int not null default 1)"):format(model),
  handlers = { Added = function(e, tx)
    assert(tx:exec(("insert into %s as m (position, stream) values ($1, $2) on conflict (position) do update set seen = m.seen + 1"):format(model),
      e.position, e.stream))
  end },
} }, { events = es, lease = 2, renew = 0.5, owner = app, say = print }))
print(runner:run(function() return false end))
]]

describe("a partitioned projection over two processes", function()
  local started = os.time()
  local db, es, events, chan, model, dir, workers
  setup(function()
    db = T.connect()
    events, chan, model = T.unique("prev"), T.unique("prch"), T.unique("prmodel")
    es = assert(db:events{ table = events, notify = chan })
    dir = T.tmpdir("partsread")
    workers = {}
  end)
  teardown(function()
    for _, w in ipairs(workers) do if T.alive(w) then T.signal(w, "KILL") end end
    T.sh("rm -rf " .. dir)
    es:close()
    db:close()
    T.assert_no_leaks()
  end)

  local function append(from, to)
    for chunk = from, to do
      local batches = {}
      for s = 1, 10 do
        local evs = {}
        for i = 1, 40 do evs[i] = { type = "Added", data = { i = i } } end
        local n = chunk * 10 + s
        batches[s] = { stream = (n % 3 == 0 and "Kundenkonto-Ü-%d" or n % 3 == 1 and "口座-%d" or "acct-%d"):format(n), events = evs }
      end
      assert(es:append_many(batches))
    end
  end

  local function handled()
    return db:query(("select count(*) as n, coalesce(max(seen), 0) as most from %s"):format(model))[1]
  end

  it("reads each event about once, LISTENs once per process, and handles each exactly once across a SIGKILL", function()
    local N = 8000
    append(0, 14) -- 6,000 events before the workers start
    local apps = { T.unique("prw"), T.unique("prw") }
    for i, app in ipairs(apps) do
      workers[i] = T.spawn(WORKER, app, events, chan, model, ("%s/reads.%d"):format(dir, i), T.dsn())
    end
    local function outputs() return T.output(workers[1]) .. T.output(workers[2]) end
    local lease = ("projection:%s:%s"):format(es:store(), model)
    assert(T.eventually(function()
      local rows = db:query("select count(distinct owner) as n from pgstore_leases where name = $1 and expires_at > now()", lease)
      return rows and rows[1].n == 2
    end, 30), "the two workers never shared the partitions: " .. outputs())

    -- One LISTEN connection per process: its last statement is the
    -- (re-)LISTEN, or the listener's empty heartbeat query.
    local function listening()
      return db:query([[select count(*) as n from pg_stat_activity where datname = current_database()
        and application_name = any ($1::text[]) and (query like '%LISTEN%' or query = '')]],
        "{" .. table.concat(apps, ",") .. "}")[1].n
    end
    local listeners = T.eventually(function() return listening() == 2 and 2 end, 5) or listening()

    assert(T.eventually(function() return handled().n >= 1500 end, 30), "no progress: " .. outputs())
    T.signal(workers[1], "KILL")
    append(15, 19) -- 2,000 more while the survivor takes over
    assert(T.eventually(function() return handled().n == N end, 60),
      ("the survivor did not finish: %d of %d handled\n%s"):format(handled().n, N, outputs()))
    local h = handled()
    assert.equal(N, h.n)
    assert.equal(1, h.most) -- no event handled twice
    local missing = db:query(("select count(*) as n from %s e where not exists (select 1 from %s m where m.position = e.position)")
      :format(events, model))[1].n
    assert.equal(0, missing)

    local read = 0
    for i = 1, 2 do
      for line in T.read(("%s/reads.%d"):format(dir, i)):gmatch("%d+") do read = read + tonumber(line) end
    end
    -- each event once, plus what the killed worker read and never
    -- committed and what a handover made a new owner read again: far
    -- below one read per partition (8 × N)
    print(("read %d rows for %d events over 8 partitions and 2 processes, %d LISTEN connections")
      :format(read, N, listeners))
    assert.is_true(read >= N, "fewer rows read than events: " .. read)
    assert.is_true(read <= 1.5 * N, ("%d rows read for %d events"):format(read, N))
    assert.equal(2, listeners)
    T.signal(workers[2], "TERM")
    T.wait(workers[2], 10)
    print(("two processes: %d s"):format(os.time() - started))
  end)
end)

-- A worker over `partitions` partitions that stops cleanly once the file
-- `stop` exists. arg: partitions, table, channel, model table, stop file, dsn.
local COUNTED = [[
local partitions, events, chan, model, stop, dsn = tonumber(arg[1]), arg[2], arg[3], arg[4], arg[5], arg[6]
local pgstore = require "pgstore"
local projection = require "pgstore.projection"
local wdb = assert(pgstore.connect{ dsn = dsn, application_name = "prcommits", pool_size = 2 })
local es = assert(wdb:events{ table = events, notify = chan })
local runner = assert(projection.runner(wdb, { {
  name = model, partitioned = true, partitions = partitions, batch = 50,
  setup = ("create table if not exists %s (position bigint primary key, stream text not null, seen int not null default 1)"):format(model),
  handlers = { Added = function(e, tx)
    assert(tx:exec(("insert into %s as m (position, stream) values ($1, $2) on conflict (position) do update set seen = m.seen + 1"):format(model),
      e.position, e.stream))
  end },
} }, { events = es, lease = 2, renew = 0.5, say = print }))
local res = assert(runner:run(function() return io.open(stop) ~= nil end))
print("handled", res.events)
runner:close()
es:close()
wdb:close()
]]

describe("a partitioned projection's commits", function()
  local db, es, events, chan, dir, workers
  setup(function()
    db = T.connect()
    events, chan = T.unique("pcev"), T.unique("pcch")
    es = assert(db:events{ table = events, notify = chan })
    dir = T.tmpdir("partscommits")
    workers = {}
  end)
  teardown(function()
    for _, w in ipairs(workers) do if T.alive(w) then T.signal(w, "KILL") end end
    T.sh("rm -rf " .. dir)
    es:close()
    db:close()
    T.assert_no_leaks()
  end)

  -- Transactions committed in this spec's database, once the counters
  -- stopped moving (a backend reports its own at exit).
  local function commits()
    local function read()
      return db:query("select xact_commit as n from pg_stat_database where datname = current_database()")[1].n
    end
    local last, n = -1, read()
    while n ~= last do
      core.sleep(0.5)
      last, n = n, read()
    end
    return n
  end

  local function handled(model)
    return db:query(("select count(*) as n, coalesce(max(seen), 0) as most from %s"):format(model))[1]
  end

  -- Waits (bounded, polling gently: every poll is a commit too) until
  -- `model` handled n events.
  local function until_handled(model, n, timeout, w)
    local deadline, h = core.now() + timeout, nil
    while core.now() < deadline do
      h = db:query(("select count(*) as n from %s"):format(model))
      if h and h[1] and h[1].n >= n then return true end
      core.sleep(0.25)
    end
    error(("%s: only %s of %d handled\n%s"):format(model, h and h[1] and h[1].n or "?", n, T.output(w)))
  end

  -- Runs a worker over `partitions` partitions until it handled all N
  -- events (killed once on the way when `kill` is set, then started
  -- again), stops it cleanly, and returns the commits it cost.
  local function run(partitions, N, kill)
    local model = T.unique("pcmodel" .. partitions)
    local stop = ("%s/stop.%s"):format(dir, model)
    db:exec(("create table if not exists %s (position bigint primary key, stream text not null, seen int not null default 1)"):format(model))
    local before = commits()
    local w = T.spawn(COUNTED, partitions, events, chan, model, stop, T.dsn())
    workers[#workers + 1] = w
    if kill then
      core.sleep(0.5)
      until_handled(model, math.floor(N / 3), 30, w)
      T.signal(w, "KILL")
      T.wait(w, 10)
      w = T.spawn(COUNTED, partitions, events, chan, model, stop, T.dsn())
      workers[#workers + 1] = w
    end
    until_handled(model, N, 60, w)
    T.write(stop, "")
    local out, ended = T.wait(w, 20)
    assert.is_true(ended, "the worker did not stop: " .. out)
    local h = handled(model)
    assert.equal(N, h.n)
    assert.equal(1, h.most) -- no event handled twice
    return commits() - before
  end

  it("grow with the partitions that got events, not with the partition count, and stay exactly once across a SIGKILL", function()
    -- Mostly one stream, with a few others now and then: most pages hold
    -- one partition's events, a few hold several.
    local N = 0
    for chunk = 1, 30 do
      local batches = { { stream = "pc-main", events = {} } }
      for i = 1, 200 do batches[1].events[i] = { type = "Added", data = { i = i } } end
      if chunk % 5 == 0 then
        batches[2] = { stream = "pc-side-" .. chunk, events = { { type = "Added", data = {} }, { type = "Added", data = {} } } }
      end
      assert(es:append_many(batches))
      N = N + 200 + (batches[2] and 2 or 0)
    end
    local two = run(2, N)
    local many = run(64, N, true)
    print(("%d events, batch 50: %d commits over 2 partitions, %d over 64 (killed and restarted once)")
      :format(N, two, many))
    assert.is_true(many <= 2 * two, ("%d commits over 64 partitions, %d over 2"):format(many, two))
  end)
end)
