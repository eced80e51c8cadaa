-- SPDX-License-Identifier: MIT
-- Lease holders as real processes: two given one owner string are two
-- instances (each with its own share, neither passing the other's guard);
-- a holder frozen with SIGSTOP right after its guard gives its partition
-- up within one lease of its expiry; a `pgstore project` worker frozen
-- mid-batch has that batch refused as `lease_lost` when it resumes, and
-- the host logs what moved. `pgstore status` shows workers, owners and lag.
local core = require "pgstore.core"
local T = require "testenv"

local LEASE, RENEW = 2, 0.5

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

-- Spawned processes, ended (resumed first) when their block ends.
local spawned = {}
local function spawn(code)
  local proc = T.spawn(code)
  spawned[#spawned + 1] = proc
  return proc
end

local function end_all()
  for _, proc in ipairs(spawned) do
    if T.alive(proc) then T.sh(("kill -CONT %d; kill -KILL %d"):format(proc.pid, proc.pid)) end
    T.sh("rm -rf " .. proc.dir)
  end
  spawned = {}
end

-- The `pgstore project` a spawned `os.execute("exec pgstore project …")` runs.
local function child(proc)
  local pid
  T.eventually(function()
    pid = tonumber((T.sh("pgrep -P " .. proc.pid)):match("%d+"))
    return pid
  end, 5)
  return assert(pid, "no child of " .. proc.pid)
end

local function cleanup(db, name)
  assert(db:exec("delete from pgstore_leases where name = $1", name))
  assert(db:exec("delete from pgstore_leases_members where name = $1", name))
end

describe("lease holders", function()
  local db, dir
  setup(function()
    db = T.connect()
    dir = T.tmpdir("lholders")
  end)
  teardown(function()
    end_all()
    T.sh("rm -rf " .. dir)
    db:close()
    T.assert_no_leaks()
  end)

  it("two processes given one owner string are two instances", function()
    local name = T.unique("same_owner")
    local go, close = dir .. "/go-same", dir .. "/close-same"
    local code = ([[
      local core = require "pgstore.core"
      io.stdout:setvbuf("line")
      local pm = assert(db:partitions{ name = %q, owner = "same-owner", count = 8, lease = %g, renew = %g })
      print("INSTANCE " .. tostring(pm:info().instance))
      local function exists(f) local h = io.open(f) if h then h:close() end return h ~= nil end
      local deadline = core.now() + 30
      while not exists(%q) and core.now() < deadline do
        assert(pm:tick())
        local held = {}
        for p in pairs(pm:owned()) do held[#held + 1] = p end
        table.sort(held)
        print("OWNS " .. table.concat(held, ","))
        core.sleep(%g)
      end
      -- Every partition, guarded with the token the table holds for it now:
      -- only what this instance holds may commit.
      local rows = assert(db:query("select partition, token from pgstore_leases where name = $1", %q))
      for _, r in ipairs(rows) do
        local ok, err = db:transaction(function(tx) return pm:guard(tx, r.partition, r.token) end)
        print(("GUARD %%d %%s"):format(r.partition, ok and "committed" or err.code))
      end
      -- no release (which hands everything to the other) before both guarded
      while not exists(%q) and core.now() < deadline do core.sleep(0.05) end
      pm:close()
    ]]):format(name, LEASE, RENEW, go, RENEW, name, close)
    local a, b = spawn(code), spawn(code)
    local function last_owns(proc)
      local s
      for m in T.output(proc):gmatch("OWNS ([%d,]*)") do s = m end
      if not s then return nil end
      local set = {}
      for p in s:gmatch("%d+") do set[tonumber(p)] = true end
      return set
    end
    local split = T.eventually(function()
      local sa, sb = last_owns(a), last_owns(b)
      if not sa or not sb or count(sa) ~= 4 or count(sb) ~= 4 then return false end
      for p in pairs(sa) do if sb[p] then return false end end
      return true
    end, 15)
    T.write(go, "")
    T.eventually(function()
      local _, na = T.output(a):gsub("GUARD", "")
      local _, nb = T.output(b):gsub("GUARD", "")
      return na == 8 and nb == 8
    end, 15)
    T.write(close, "")
    local out_a, out_b = T.wait(a, 15), T.wait(b, 15)
    assert.truthy(split, "no 4/4 split between the two instances:\n" .. out_a .. "\n" .. out_b)
    local ia, ib = out_a:match("INSTANCE (%S+)"), out_b:match("INSTANCE (%S+)")
    assert.truthy(ia and ib and ia ~= ib, "instances " .. tostring(ia) .. " and " .. tostring(ib))
    local committed = {}
    for _, out in ipairs{ out_a, out_b } do
      for p, res in out:gmatch("GUARD (%d+) (%S+)") do
        if res == "committed" then committed[#committed + 1] = tonumber(p) end
      end
    end
    table.sort(committed)
    -- each partition passed one guard: the other instance got lease_lost
    assert.same({ 0, 1, 2, 3, 4, 5, 6, 7 }, committed, out_a .. "\n" .. out_b)
    local members = assert(db:query("select count(*) as n from pgstore_leases_members where name = $1", name))
    assert.equal(0, members[1].n) -- both closed: both memberships gone
    cleanup(db, name)
  end)

  it("a holder frozen after its guard loses the partition within one lease of its expiry", function()
    local name, work = T.unique("frozen_guard"), T.unique("frozen_work")
    assert(db:exec(("create table %s (p int, token bigint)"):format(work)))
    local holder = spawn(([[
      local core = require "pgstore.core"
      io.stdout:setvbuf("line")
      local pm = assert(db:partitions{ name = %q, owner = "frozen", count = 2, lease = %g, renew = %g })
      assert(pm:tick())
      local p, token = next(pm:owned())
      local ok, err = db:transaction(function(tx)
        assert(tx:exec("insert into %s (p, token) values ($1, $2)", p, token))
        assert(pm:guard(tx, p, token))
        print(("GUARDED %%d %%d"):format(p, token))
        core.sleep(0.5) -- frozen here, inside the guarded transaction
        return true
      end)
      print("AFTER " .. (ok and "committed" or err.code))
    ]]):format(name, LEASE, RENEW, work))
    local p, token
    assert(T.eventually(function()
      p, token = T.output(holder):match("GUARDED (%d+) (%d+)")
      return p
    end, 10), T.output(holder))
    T.signal(holder, "STOP")
    local t0 = core.now()
    p, token = tonumber(p), tonumber(token)
    local other = assert(db:partitions{ name = name, owner = "other", count = 2, lease = LEASE, renew = RENEW })
    local taken = T.eventually(function()
      assert(other:tick())
      return other:token(p) ~= nil
    end, 3 * LEASE + RENEW + 3)
    local took = core.now() - t0
    -- the holder's lease expires at most LEASE after the freeze; from then
    -- the partition is claimable within one lease timeout
    assert.truthy(taken, ("partition %d never taken from the frozen holder"):format(p))
    assert.truthy(took <= 2 * LEASE + RENEW + 1, ("took %.2fs"):format(took))
    assert.truthy(other:token(p) > token)
    T.signal(holder, "CONT")
    local out = T.wait(holder, 10)
    assert.falsy(out:find("AFTER committed", 1, true), out)
    assert.same({ { n = 0 } }, db:query(("select count(*) as n from %s"):format(work)))
    print(("\n  holder frozen after its guard: partition taken over %.2fs after the freeze (lease %gs)"):format(took, LEASE))
    other:close()
    assert(db:exec("drop table " .. work))
    cleanup(db, name)
  end)
end)

describe("a partitioned projection's workers", function()
  local db, es, dir, events, model
  local SCRIPT = [[
return {
  name = %q,
  partitioned = true,
  partitions = 4,
  batch = 20,
  setup = "create table if not exists %s (position bigint not null, stream text not null)",
  handlers = {
    Added = function(e, tx)
      -- slow enough that a freeze lands inside a batch
      assert(tx:exec("select pg_sleep(0.02) as in_frozen_batch"))
      assert(tx:exec("insert into %s (position, stream) values ($1, $2) -- in_frozen_batch", e.position, e.stream))
    end,
  },
}
]]
  setup(function()
    db = T.connect()
    events, model = T.unique("plev"), T.unique("pl_model")
    es = assert(db:events{ table = events, notify = events })
    dir = T.tmpdir("plost")
  end)
  teardown(function()
    end_all()
    T.sh("rm -rf " .. dir)
    es:close()
    db:close()
    T.assert_no_leaks()
  end)

  it("refuse a frozen worker's batch as lease_lost and log what moved", function()
    for s = 1, 8 do
      local evs = {}
      for i = 1, 40 do evs[i] = { type = "Added", data = { i = i } } end
      assert(es:append("acct-" .. s, evs))
    end
    local path = T.write(("%s/%s.lua"):format(dir, model), SCRIPT:format(model, model, model))
    local cmd = ("exec %s --dsn %q project --table %s %s --lease %g --renew %g"):format(T.host(), T.dsn(), events,
      path, LEASE, RENEW)
    local one = spawn(("os.execute(%q)"):format(cmd))
    local one_pid = child(one)
    -- freeze the only worker inside a batch: its backend is in a handler's statement
    local function backends(state)
      local rows = db:query([[select count(*) as n from pg_stat_activity where datname = current_database()
        and query like '%in_frozen_batch%' and query not like '%pg_stat_activity%' and state = $1]], state)
      return rows and rows[1].n or 0
    end
    -- stopped inside a batch: its transaction is open (else resume, try again)
    local frozen = T.eventually(function()
      if backends("active") == 0 then return false end
      T.sh("kill -STOP " .. one_pid)
      if T.eventually(function() return backends("idle in transaction") > 0 end, 0.5) then return true end
      T.sh("kill -CONT " .. one_pid)
      return false
    end, 20)
    assert.truthy(frozen, "the worker never ran a batch: " .. T.output(one))
    local two = spawn(("os.execute(%q)"):format(cmd))
    -- the second worker takes everything over and finishes
    local done = T.eventually(function()
      local rows = db:query(("select count(distinct position) as n from %s"):format(model))
      return rows and rows[1].n == 320
    end, 60)
    assert.truthy(done, "the second worker did not finish: " .. T.output(two))
    T.sh("kill -CONT " .. one_pid)
    local refused = T.eventually(function() return T.output(one):find("lease_lost", 1, true) end, 10)
    -- the resumed worker is a member again: the other gives it its share
    T.eventually(function() return T.output(two):find("rebalanced", 1, true) end, 10)
    -- status while both run: workers, owners, per-partition lag
    local status = T.sh(("%s --dsn %q status --table %s"):format(T.host(), T.dsn(), events))
    T.sh(("kill -TERM %d %d"):format(one_pid, child(two)))
    local out1, out2 = T.wait(one, 10), T.wait(two, 10)
    assert.truthy(refused, "no lease_lost from the resumed worker:\n" .. out1)
    assert.falsy(out1:find("checkpoint moved by another runner", 1, true), out1)
    -- one line per change: acquisitions, takeovers, losses, rebalances
    assert.truthy(out1:find("acquired partitions 0, 1, 2, 3", 1, true), out1)
    assert.truthy(out1:find("lost partitions", 1, true), out1)
    assert.truthy(out2:find("took over partition %d from %S+ %(its lease expired%)"), out2)
    assert.truthy(out2:find("rebalanced: released partitions", 1, true), out2)
    -- exactly once: the stale batch committed nothing
    local dup = assert(db:query(("select count(*) as n from (select position from %s group by position having count(*) > 1) d")
      :format(model)))
    assert.equal(0, dup[1].n)
    assert.truthy(status:find("workers", 1, true), status)
    assert.truthy(status:find("lag", 1, true), status)
    assert.truthy(status:match("p0%s.-%d+ positions.-%d+s"), status)
  end)

  it("document --lease and --renew with their defaults", function()
    local out = T.sh(("%s project --help"):format(T.host()))
    assert.truthy(out:find("--lease SECONDS", 1, true), out)
    assert.truthy(out:find("--renew SECONDS", 1, true), out)
    assert.truthy(out:match("%-%-lease SECONDS[^\n]*default 10"), out)
  end)
end)
