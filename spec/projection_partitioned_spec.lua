-- SPDX-License-Identifier: MIT
-- A partitioned projection shared by two host processes over 50,000
-- events; one is killed with SIGKILL mid-run, the other takes over its
-- partitions when their leases expire, and the read model ends exactly
-- equal to a single-process run of the same handlers.
local T = require "testenv"

local SCRIPT = [[
return {
  name = %q,
  partitioned = %s,
  partitions = 8,
  batch = 400,
  setup = "create table if not exists %s (stream text primary key, n int not null, total bigint not null, last int not null)",
  handlers = {
    Added = function(e, tx)
      assert(tx:exec("insert into %s as m values ($1, 1, $2, $3) on conflict (stream) do update set n = m.n + 1, total = m.total + excluded.total, last = excluded.last",
        e.stream, e.data.amount, e.version))
    end,
  },
}
]]

describe("a partitioned projection", function()
  local db, es, dir, events, ref, part
  setup(function()
    db = T.connect()
    events, ref, part = T.unique("ppev"), T.unique("pp_ref"), T.unique("pp_part")
    es = assert(db:events{ table = events, notify = events })
    dir = T.tmpdir("pp")
  end)
  teardown(function()
    T.sh("pkill -9 -f " .. dir)
    T.sh("rm -rf " .. dir)
    es:close()
    db:close()
    T.assert_no_leaks()
  end)

  local function model(name)
    local out = {}
    for _, r in ipairs(db:query(("select stream, n, total, last from %s order by stream"):format(name))) do
      out[#out + 1] = ("%s %d %d %d"):format(r.stream, r.n, r.total, r.last)
    end
    return out
  end

  it("equals a single-process run after one worker is killed", function()
    -- 50,000 events over 500 streams
    for chunk = 0, 49 do
      local batches = {}
      for s = 1, 10 do
        local evs = {}
        for i = 1, 100 do evs[i] = { type = "Added", data = { amount = (chunk * 7 + s * 13 + i) % 97 } } end
        batches[s] = { stream = ("acct-%d"):format(chunk * 10 + s), events = evs }
      end
      assert(es:append_many(batches))
    end
    local function script(name, partitioned)
      local path = ("%s/%s.lua"):format(dir, name)
      local f = assert(io.open(path, "w"))
      f:write(SCRIPT:format(name, partitioned, name, name))
      f:close()
      return path
    end
    local ref_path, part_path = script(ref, "false"), script(part, "true")
    local out, rc = T.sh(("%s --dsn %q project --table %s %s --once"):format(T.host(), T.dsn(), events, ref_path))
    assert.equal(0, rc, out)

    local cmd = ("exec %s --dsn %q project --table %s %s --lease 2 --renew 0.5"):format(T.host(), T.dsn(), events, part_path)
    local one = T.spawn(("os.execute(%q)"):format(cmd))
    local two = T.spawn(("os.execute(%q)"):format(cmd))
    -- both must hold partitions before one is killed
    assert(T.eventually(function()
      local rows = db:query("select count(distinct owner) as n from pgstore_leases where name = $1 and expires_at > now()", ("projection:%s:%s"):format(es:store(), part))
      return rows and rows[1].n == 2
    end, 60), "the two workers never shared the partitions: " .. T.output(one) .. T.output(two))
    assert(T.eventually(function()
      local rows = db:query(("select coalesce(sum(n), 0) as n from %s"):format(part))
      return rows and rows[1].n > 2000
    end, 30))
    T.signal({ pid = tonumber((T.sh(("pgrep -f -n '%s'"):format(part_path))):match("%d+")) }, "KILL")
    assert(T.eventually(function()
      local rows = db:query(("select coalesce(sum(n), 0) as n from %s"):format(part))
      return rows and rows[1].n == 50000
    end, 120), "the survivor did not finish the work: " .. T.output(one) .. T.output(two))
    T.sh(("pkill -TERM -f '%s'"):format(part_path))
    T.wait(one, 10)
    T.wait(two, 10)
    assert.same(model(ref), model(part))
    local owners = db:query("select count(distinct owner) as n from pgstore_leases where name = $1 and owner is not null", ("projection:%s:%s"):format(es:store(), part))
    assert.truthy(owners[1].n <= 1)
  end)
end)
