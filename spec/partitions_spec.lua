-- SPDX-License-Identifier: MIT
-- Partition leases: options, ticks and their changes, balancing, tokens,
-- guards, release, the background renewer, partition_for; then real worker
-- processes — 3 share 8 partitions and balance, a SIGKILLed worker's
-- partitions move within one lease timeout, a SIGSTOPped worker resumed
-- after its lease expired gets lease_lost on its next guarded commit, and
-- no work ever commits under a stale token.
local core = require "pgstore.core"
local partitions = require "pgstore.partitions"
local T = require "testenv"

local function sorted(t)
  table.sort(t)
  return t
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

describe("db:partitions", function()
  local db
  T.block_db(setup, teardown, function(d) db = d end, { pool_size = 4 })

  it("has the documented defaults and holds nothing before the first tick", function()
    local pm = assert(db:partitions{ name = T.unique("pm") })
    assert.equal(8, pm.count)
    assert.equal(10, pm.lease)
    assert.equal(10 / 3, pm.renew)
    assert.matches("^%x+$", pm.instance)
    -- a renew given alone keeps its lease three renews long
    local slow = assert(db:partitions{ name = T.unique("pm"), renew = 10 })
    assert.equal(30, slow.lease)
    slow:close()
    assert.equal("pgstore_leases", pm.table)
    assert.matches("^[^:]+:%d+", pm.owner) -- hostname:pid
    assert.same({}, pm:owned())
    assert.is_false(pm:owns(0))
    assert.is_nil(pm:token(0))
    pm:close()
  end)

  it("balances two workers 4/4, with tokens that grow on every change of owner", function()
    local name = T.unique("pm")
    local a = assert(db:partitions{ name = name, owner = "a" })
    local b = assert(db:partitions{ name = name, owner = "b" })
    local ch = assert(a:tick())
    assert.same({ acquired = { 0, 1, 2, 3, 4, 5, 6, 7 }, released = {}, lost = {}, taken = {} }, ch)
    assert.equal(8, count(a:owned()))
    local t6 = a:token(6)
    assert.same({ acquired = {}, released = {}, lost = {}, taken = {} }, assert(b:tick()))
    assert.same({ 4, 5, 6, 7 }, assert(a:tick()).released)
    assert.same({ 4, 5, 6, 7 }, assert(b:tick()).acquired)
    assert.is_true(b:owns(6))
    assert.is_false(a:owns(6))
    assert.equal(t6 + 1, b:token(6))
    local owned = a:owned()
    assert.same({ 0, 1, 2, 3 }, sorted((function() local k = {} for p in pairs(owned) do k[#k + 1] = p end return k end)()))
    -- close releases at once: a takes everything on its next tick
    b:close()
    assert.same({ 4, 5, 6, 7 }, assert(a:tick()).acquired)
    assert.equal(t6 + 2, a:token(6))
    a:close()
  end)

  it("guard passes for a held partition and fails with lease_lost otherwise, rolling back", function()
    local name, t = T.unique("pm"), T.unique("pmwork")
    assert(db:exec(("create table %s (p int, token bigint)"):format(t)))
    local a = assert(db:partitions{ name = name, owner = "a", lease = 1, renew = 0.2 })
    local b = assert(db:partitions{ name = name, owner = "b", lease = 1, renew = 0.2 })
    assert(a:tick())
    local token = a:token(3)
    assert.is_true(db:transaction(function(tx)
      assert(tx:exec(("insert into %s values (3, $1)"):format(t), token))
      return a:guard(tx, 3)
    end))
    local ok, err = db:transaction(function(tx)
      assert(tx:exec(("insert into %s values (3, $1)"):format(t), token))
      return b:guard(tx, 3) -- b does not hold it
    end)
    assert.is_nil(ok)
    assert.equal("lease_lost", err.code)
    assert.equal("PGSL1", err.sqlstate)
    -- a pauses past its lease; b takes over; a's stale token is fenced off
    core.sleep(1.2)
    assert.is_false(a:owns(3))
    assert.same({ 0, 1, 2, 3, 4, 5, 6, 7 }, assert(b:tick()).acquired)
    ok, err = db:transaction(function(tx)
      assert(tx:exec(("insert into %s values (3, $1)"):format(t), token))
      return a:guard(tx, 3, token)
    end)
    assert.equal("lease_lost", err.code)
    assert.matches("now held by b", err.detail)
    assert.same({ 0, 1, 2, 3, 4, 5, 6, 7 }, assert(a:tick()).lost)
    assert.same({ { n = 1 } }, db:query(("select count(*) as n from %s"):format(t)))
    -- misuse
    assert.has_error(function() a:guard(nil, 3) end)
    assert.has_error(function() a:guard({}, 3) end)
    assert.equal("invalid", select(2, a:owns(8)).code)
    assert.equal("invalid", select(2, a:token(1.5)).code)
    local saved
    db:transaction(function(tx) saved = tx end)
    assert.has_error(function() a:guard(saved, 3) end, "attempt to use a finished transaction")
    a:close()
    b:close()
    assert(db:exec("drop table " .. t))
  end)

  it("a tick inside a guarded transaction times out instead of waiting for itself", function()
    local pm = assert(db:partitions{ name = T.unique("pm"), lease = 2, renew = 0.4 })
    assert(pm:tick())
    local t0 = core.now()
    local ok, err = db:transaction(function(tx)
      assert(pm:guard(tx, 0))  -- holds the lease row until commit
      local r, e = pm:tick()    -- renewing that row must wait for the commit
      assert.is_nil(r)
      assert.equal("timeout", e.code)
      return pm:release()       -- and so must releasing it
    end)
    assert.is_nil(ok)
    assert.equal("timeout", err.code)
    assert.truthy(core.now() - t0 < 2)
    assert(pm:tick()) -- and nothing is stuck
    assert.is_true(pm:owns(0))
    pm:close()
  end)

  it("pgstore.open_partitions owns its db and closes it", function()
    local pgstore = require "pgstore"
    local pm = assert(pgstore.open_partitions({ dsn = T.dsn(), application_name = "pgstore-spec" },
      { name = T.unique("pm") }))
    assert(pm:tick())
    pm:close()
    assert.is_true(pm.db == nil)
  end)

  it("renews in the background when asked to", function()
    local pm = assert(db:partitions{ name = T.unique("pm"), lease = 1, renew = 0.2, background = true })
    core.sleep(1.5) -- longer than the lease: only renewal keeps it
    assert.equal(8, count(pm:owned()))
    assert.same({ 0, 1, 2, 3, 4, 5, 6, 7 }, pm:changes().acquired)
    assert.same({ acquired = {}, released = {}, lost = {}, taken = {} }, pm:changes())
    local info = pm:info()
    assert.is_true(info.background)
    assert.truthy(info.ticks >= 5)
    assert.equal(0, info.failures)
    pm:close()
    assert.equal("pgstore.partitions (closed)", tostring(pm))
    assert.has_error(function() pm:tick() end, "attempt to use a closed partition set")
  end)

  it("maps streams with a documented consistent hash", function()
    local pm = assert(db:partitions{ name = T.unique("pm") })
    -- pinned: jump_consistent_hash(fnv1a64(stream), count), never to change
    assert.equal(7, pm:partition_for("orders-1"))
    assert.equal(6, pm:partition_for("orders-2"))
    assert.equal(13, partitions.partition_for("customer/42", 16))
    assert.equal("af63dc4c8601ec8c", core.fnv1a64("a"))
    local seen = {}
    for i = 1, 800 do
      local p = pm:partition_for("stream-" .. i)
      assert.truthy(p >= 0 and p < 8)
      seen[p] = (seen[p] or 0) + 1
    end
    for p = 0, 7 do assert.truthy(seen[p] > 60, "partition " .. p .. " got " .. tostring(seen[p])) end
    pm:close()
  end)

  it("raises on misuse, refuses values out of range with 'invalid'", function()
    assert.has_error(function() db:partitions() end)
    assert.has_error(function() db:partitions{} end, "bad argument #1 to 'partitions' (option 'name' is required)")
    assert.has_error(function() db:partitions{ name = "x", leese = 5 } end)
    for _, o in ipairs{ { count = 0 }, { count = 2.5 }, { lease = 5, renew = 5 } } do
      o.name = "x"
      assert.equal("invalid", select(2, db:partitions(o)).code)
    end
    local pm, err = db:partitions{ name = "x", table = "bad;table" }
    assert.is_nil(pm)
    assert.equal("invalid", err.code)
  end)
end)

describe("partitions across processes", function()
  local db, dir, name, work, stopfile, script
  local LEASE, RENEW = 2, 0.5
  local procs = {} -- owner → { pid, out }

  local function spawn(owner, mode)
    local out = ("%s/%s.out"):format(dir, owner)
    local o = T.sh(("%s --dsn %q run %s %s %s %s %s %s >%s 2>&1 & echo $!"):format(
      T.host(), T.dsn(), script, name, owner, work, stopfile, mode, out))
    procs[owner] = { pid = assert(tonumber(o:match("(%d+)")), o), out = out }
    return procs[owner]
  end

  local function alive(pid)
    local _, rc = T.sh("kill -0 " .. pid)
    return rc == 0
  end

  -- Live leases now: owner → count, partition → { owner, token }.
  local function leases()
    local rows = assert(db:query(
      "select partition, owner, token from pgstore_leases where name = $1 and expires_at > now()", name))
    local per, by_partition = {}, {}
    for _, r in ipairs(rows) do
      per[r.owner] = (per[r.owner] or 0) + 1
      by_partition[r.partition] = { owner = r.owner, token = r.token }
    end
    return per, by_partition, #rows
  end

  local function shares()
    local per, _, total = leases()
    local s = {}
    for _, n in pairs(per) do s[#s + 1] = n end
    return sorted(s), total, per
  end

  setup(function()
    db = T.connect()
    dir = T.tmpdir("pm")
    name, work = T.unique("pmproc"), T.unique("pmwork")
    stopfile, script = dir .. "/stop", dir .. "/worker.lua"
    assert(db:exec(("create table %s (id bigserial primary key, p int not null, token bigint not null,"
      .. " owner text not null, unit int not null)"):format(work)))
    local f = assert(io.open(script, "w"))
    f:write(([[
      -- A worker: ticks every renew seconds (or lets the C renewer do it, in
      -- "slow" mode) and commits guarded units of work for what it holds.
      local core = require "pgstore.core"
      io.stdout:setvbuf("line")
      local name, owner, work, stopfile, mode = arg[1], arg[2], arg[3], arg[4], arg[5]
      local slow = mode == "slow"
      local pm = assert(db:partitions{ name = name, owner = owner, count = 8,
                                       lease = %g, renew = %g, background = slow })
      local held, unit = {}, 0
      local function apply(ch)
        if not ch then return end
        for _, p in ipairs(ch.acquired) do held[p] = pm:token(p) end
        for _, p in ipairs(ch.lost) do held[p] = nil end
        for _, p in ipairs(ch.released) do held[p] = nil end
      end
      local function stopped()
        local f = io.open(stopfile)
        if f then f:close() end
        return f ~= nil
      end
      local next_tick = 0
      while not stopped() do
        if slow then
          apply(pm:changes())
        elseif core.now() >= next_tick then
          apply(pm:tick())
          next_tick = core.now() + pm.renew
        end
        for p, token in pairs(held) do
          unit = unit + 1
          local ok, err = db:transaction(function(tx)
            if slow then -- a long unit of work: this is where it gets paused
              print("INWORK", p, token, unit)
              core.sleep(1)
            end
            assert(tx:exec("insert into " .. work .. " (p, token, owner, unit) values ($1, $2, $3, $4)",
              p, token, owner, unit))
            return pm:guard(tx, p, token)
          end)
          if not ok then
            print(err.code == "lease_lost" and "LEASE_LOST" or "ERROR", p, token, unit, tostring(err))
            held[p] = nil
            if slow then
              pm:close()
              return
            end
          end
          if slow then break end
        end
        core.sleep(0.02)
      end
      pm:close()
    ]]):format(LEASE, RENEW))
    f:close()
  end)

  teardown(function()
    io.open(stopfile, "w"):close()
    for _, p in pairs(procs) do
      T.eventually(function() return not alive(p.pid) end, 3)
      -- Only if that pid is still our worker: an exited one's pid may be reused.
      T.sh(("grep -qF %q /proc/%d/cmdline 2>/dev/null && kill -CONT %d && kill -KILL %d")
        :format(script, p.pid, p.pid, p.pid))
    end
    assert(db:exec("drop table " .. work))
    assert(db:exec("delete from pgstore_leases where name = $1", name))
    assert(db:exec("delete from pgstore_leases_members where name = $1", name))
    T.sh("rm -rf " .. dir)
    db:close()
    T.assert_no_leaks()
  end)

  it("3 workers share 8 partitions, each with 2 or 3", function()
    for i = 1, 3 do spawn(name .. "-w" .. i, "normal") end
    local ok = T.eventually(function()
      local s, total = shares()
      return total == 8 and #s == 3 and s[1] == 2 and s[2] == 3 and s[3] == 3
    end, 10)
    local s, total = shares()
    assert.truthy(ok, ("shares %s of %d"):format(table.concat(s, "/"), total))
  end)

  it("a SIGKILLed worker's partitions move to the others within one lease timeout", function()
    local victim = name .. "-w1"
    local _, before = leases()
    local moved = {}
    for p, l in pairs(before) do
      if l.owner == victim then moved[p] = l.token end
    end
    assert.truthy(count(moved) >= 2)
    T.sh("kill -KILL " .. procs[victim].pid)
    local t0 = core.now()
    local ok = T.eventually(function()
      local s, total, per = shares()
      return total == 8 and not per[victim] and #s == 2 and s[1] == 4 and s[2] == 4
    end, LEASE + RENEW + 3)
    local took = core.now() - t0
    assert.truthy(ok, "the partitions did not move: " .. table.concat((shares()), "/"))
    -- expiry of its last renewal (≤ LEASE) plus one tick of the others
    assert.truthy(took <= LEASE + RENEW + 1, ("took %.2fs"):format(took))
    local _, after = leases()
    for p, token in pairs(moved) do
      assert.are_not.equal(victim, after[p].owner)
      assert.truthy(after[p].token > token, "partition " .. p .. " kept its token")
    end
  end)

  it("a SIGSTOPped worker resumed after its lease expired gets lease_lost on its next guarded commit", function()
    local w = spawn(name .. "-w4", "slow")
    local p, token, unit
    assert(T.eventually(function()
      p, token, unit = T.read(w.out):match("INWORK\t(%d+)\t(%d+)\t(%d+)")
      return p
    end, 10), "the worker never got to work: " .. T.read(w.out))
    T.sh("kill -STOP " .. w.pid) -- inside the unit's transaction, before its guard
    p, token, unit = tonumber(p), tonumber(token), tonumber(unit)
    local t0 = core.now()
    local taken = T.eventually(function()
      local _, by = leases()
      return by[p] and by[p].owner ~= w and by[p].owner ~= name .. "-w4" and by[p].token > token
    end, LEASE + RENEW + 3)
    assert.truthy(taken, "partition " .. p .. " was not taken over")
    assert.truthy(core.now() - t0 <= LEASE + RENEW + 1.5)
    T.sh("kill -CONT " .. w.pid)
    assert(T.eventually(function() return T.read(w.out):find("LEASE_LOST") end, 5),
      "no lease_lost: " .. T.read(w.out))
    local lp, ltoken, lunit = T.read(w.out):match("LEASE_LOST\t(%d+)\t(%d+)\t(%d+)")
    assert.same({ p, token, unit }, { tonumber(lp), tonumber(ltoken), tonumber(lunit) })
    assert(T.eventually(function() return not alive(w.pid) end, 5))
    -- its unit of work did not commit
    assert.same({ { n = 0 } }, db:query(("select count(*) as n from %s where owner = $1 and unit = $2")
      :format(work), name .. "-w4", unit))
  end)

  it("never commits work under a stale token", function()
    io.open(stopfile, "w"):close()
    for _, p in pairs(procs) do T.eventually(function() return not alive(p.pid) end, 5) end
    local rows = assert(db:query(("select p, token, owner from %s order by p, id"):format(work)))
    assert.truthy(#rows > 100, "only " .. #rows .. " units of work")
    local owners, last = {}, {}
    for _, r in ipairs(rows) do
      owners[r.owner] = true
      assert(not last[r.p] or r.token >= last[r.p],
        ("partition %d: token %d committed after token %d"):format(r.p, r.token, last[r.p] or -1))
      last[r.p] = r.token
    end
    assert.truthy(count(owners) >= 3)
  end)
end)
