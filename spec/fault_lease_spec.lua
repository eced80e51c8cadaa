-- SPDX-License-Identifier: MIT
-- A lease holder cut off from the database by the proxy (its connections
-- dropped, new ones refused): its partitions move to the other worker
-- within one lease timeout, and when it comes back its guarded commits
-- under the old tokens fail with `lease_lost` and write nothing. (Holders
-- SIGKILLed and SIGSTOPped: spec/partitions_spec.lua; a partitioned
-- projection equal to a single-process run: projection_partitioned_spec.)
local core = require "pgstore.core"
local proxy = require "proxy"
local T = require "testenv"

describe("a lease holder whose connection is cut", function()
  local db, P
  local LEASE, RENEW = 2, 0.5
  setup(function() db = T.connect() end)
  teardown(function()
    if P then P:stop() end
    db:close()
    T.assert_no_leaks()
    T.assert_no_leaks("pgstore-fault-lease")
  end)

  it("loses its partitions within one lease timeout and cannot commit under the old tokens", function()
    local name, work = T.unique("fault_lease"), T.unique("fault_lease_work")
    assert(db:exec(("create table %s (p int, token bigint, owner text)"):format(work)))
    P = proxy.start{ lifetime = 120 }
    local dir = T.tmpdir("flease")
    local go = dir .. "/go"
    local holder = T.spawn(([[
      local core = require "pgstore.core"
      local pgstore = require "pgstore"
      io.stdout:setvbuf("line")
      local hdb = assert(pgstore.connect{ dsn = arg[1], pool_size = 2, connect_timeout = 2,
        query_timeout = 2, application_name = "pgstore-fault-lease" })
      local pm = assert(hdb:partitions{ name = %q, owner = "holder", count = 8, lease = %g, renew = %g })
      local function exists(f) local h = io.open(f) if h then h:close() end return h ~= nil end
      -- `held`: the partitions held when the cut began; a tick that gets
      -- through after the cut heals (before the go file) does not change it.
      local held, failing, cut = {}, false, false
      local deadline = core.now() + 60
      while not exists(%q) and core.now() < deadline do
        local ch, err = pm:tick()
        if ch then
          if failing then print("TICK OK again") end
          failing = false
          if not cut then
            held = pm:owned()
            local n = 0
            for _ in pairs(held) do n = n + 1 end
            print("HOLDS " .. n)
          end
        elseif not failing then
          failing, cut = true, true
          print("TICK FAILS " .. err.code)
        end
        core.sleep(%g)
      end
      -- Back online: commit a unit of work per partition held before the
      -- cut, each guarded by the token it was held under.
      for p, token in pairs(held) do
        local ok, err = hdb:transaction(function(tx)
          assert(tx:exec("insert into %s (p, token, owner) values ($1, $2, 'holder')", p, token))
          return pm:guard(tx, p, token)
        end)
        print(("GUARD %%d %%d %%s"):format(p, token, ok and "committed" or err.code))
      end
      pm:close()
      hdb:close()
    ]]):format(name, LEASE, RENEW, go, RENEW, work), P.dsn)

    local other = assert(db:partitions{ name = name, owner = "other", count = 8, lease = LEASE, renew = RENEW })
    local function owned(pm)
      local n = 0
      for _ in pairs(pm:owned()) do n = n + 1 end
      return n
    end
    -- The holder takes everything; then the other worker gets its half.
    assert(T.eventually(function() return T.output(holder):find("HOLDS 8") end, 10), T.output(holder))
    assert(T.eventually(function()
      assert(other:tick())
      return owned(other) == 4 and T.output(holder):find("HOLDS 4")
    end, 10), "no balance: " .. T.output(holder))
    local before = {}
    for _, r in ipairs(assert(db:query("select partition, token from pgstore_leases where name = $1 and owner = 'holder'", name))) do
      before[r.partition] = r.token
    end

    -- Cut it off.
    P:down(true)
    local t0 = core.now()
    assert(T.eventually(function()
      assert(other:tick())
      return owned(other) == 8
    end, LEASE + RENEW + 5), "the partitions did not move")
    local took = core.now() - t0
    assert.truthy(took <= LEASE + RENEW + 1, ("took %.2fs"):format(took))
    assert(T.eventually(function() return T.output(holder):find("TICK FAILS") end, 5))
    for p, token in pairs(before) do assert.truthy(other:token(p) > token, "partition " .. p .. " kept its token") end

    -- Back online: every guarded commit under an old token fails.
    P:down(false)
    io.open(go, "w"):close()
    local out, ended = T.wait(holder, 20)
    assert.is_true(ended, out)
    local guards, lost = 0, 0
    for _, result in out:gmatch("GUARD %d+ (%d+) (%S+)") do
      guards = guards + 1
      if result == "lease_lost" then lost = lost + 1 end
    end
    assert.equal(4, guards, out)
    assert.equal(4, lost, out)
    assert.same({ { n = 0 } }, db:query(("select count(*) as n from %s"):format(work)))
    print(("\n  connection cut: 4 partitions moved in %.2fs (lease %gs); 4 stale guarded commits, 4 lease_lost, 0 written")
      :format(took, LEASE))
    other:close()
    assert(db:exec("drop table " .. work))
    assert(db:exec("delete from pgstore_leases where name = $1", name))
    assert(db:exec("delete from pgstore_leases_members where name = $1", name))
    T.sh("rm -rf " .. dir)
  end)
end)
