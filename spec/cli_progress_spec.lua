-- SPDX-License-Identifier: MIT
-- `pgstore project` on a terminal: a long catch-up shows its progress with
-- a percentage and the time left, and one summary line when done.
local T = require "testenv"

describe("pgstore project's progress", function()
  it("shows percent and ETA on a terminal, then a summary", function()
    local db = T.connect()
    local store, dir = T.unique("prog_ev"), T.tmpdir("progress")
    finally(function() db:close(); T.sh("rm -rf " .. dir) end)
    local lines = {}
    for i = 1, 300 do lines[i] = ('{"stream": "p-%d", "type": "Tick", "data": {}}'):format(i % 7) end
    T.write(dir .. "/in.ndjson", table.concat(lines, "\n") .. "\n")
    local out, rc = T.sh(("%s --dsn %q append --ndjson --table %s < %s/in.ndjson > /dev/null")
      :format(T.host(), T.dsn(), store, dir))
    assert.equal(0, rc, out)
    -- a slow handler: about 3 s for the 300 events, in batches of 20
    T.write(dir .. "/slow.lua", [[
return { name = "slow", batch = 20, handlers = { Tick = function(e, tx)
  assert(tx:exec("select pg_sleep(0.01)"))
end } }]])
    local cmd = ("%s --dsn %q project --once --table %s %s/slow.lua"):format(T.host(), T.dsn(), store, dir)
    out, rc = T.sh(("env -u LD_PRELOAD script -qec %q /dev/null"):format(cmd))
    assert.equal(0, rc, out)
    assert.matches("%d+ events%s+%d+/s%s+lag %d+%s+%d+%%%s+ETA %d+s", out)
    assert.matches("projected 300 events in", out, 1, true)
    db:close()
    T.assert_no_leaks()
  end)
end)
