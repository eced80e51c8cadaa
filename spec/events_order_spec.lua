-- SPDX-License-Identifier: MIT
-- The global read never skips: 16 writer processes commit out of order
-- (random delays before the append, between the insert and the commit, and
-- 10 % rolled back) while a follower process reads read_all continuously.
-- Its sequence must equal the committed events in position order, with
-- nothing missing and nothing twice. A naive follower (plain "position >
-- cursor") runs beside it to show what the test catches.
local T = require "testenv"

local WRITER = [[
local es = assert(db:events{ table = "ev_order", notify = false })
local me = tonumber(arg[1])
math.randomseed(me * 7919 + os.time())
local committed = 0
for i = 1, 40 do
  local ok = db:transaction(function(tx)
    if math.random() < 0.5 then assert(tx:exec("select pg_sleep($1)", math.random() * 0.01)) end
    assert(es:append("w" .. me, { { type = "E", data = { w = me, i = i } } }, { tx = tx }))
    assert(tx:exec("select pg_sleep($1)", math.random() * 0.02))
    if math.random() < 0.1 then return nil, "rolled back on purpose" end
    return true
  end)
  if ok then committed = committed + 1 end
end
print("committed", committed)
]]

local FOLLOWER = [[
local core = require "pgstore.core"
local es = assert(db:events{ table = "ev_order", notify = false })
local naive = arg[1] == "naive"
local cursor, out = 0, {}
while true do
  local rows
  if naive then
    rows = assert(db:query("select position, type from ev_order where position > $1 order by position limit 100", cursor))
    if #rows > 0 then cursor = rows[#rows].position end
  else
    rows, cursor = assert(es:read_all{ after = cursor, limit = 100, raw = true })
  end
  local stop = false
  for _, e in ipairs(rows) do
    out[#out + 1] = e.position
    if e.type == "Stop" then stop = true end
  end
  if stop then break end
  if #rows == 0 then core.sleep(0.001) end
end
print(table.concat(out, " "))
]]

describe("read_all under concurrent out-of-order commits", function()
  local db, es
  setup(function()
    db = T.connect()
    es = assert(db:events{ table = "ev_order", notify = false })
    assert(es:truncate())
  end)
  teardown(function()
    es:close()
    db:close()
    T.assert_no_leaks()
  end)

  it("delivers every committed event exactly once, in order", function()
    local follower = T.spawn(FOLLOWER, "exact")
    local naive = T.spawn(FOLLOWER, "naive")
    local results = T.run_parallel(16, WRITER)
    local committed = 0
    for i, r in ipairs(results) do
      assert.equal(0, r.rc, "writer " .. i .. ": " .. r.out)
      committed = committed + tonumber(r.out:match("committed%s+(%d+)"))
    end
    assert(es:append("control", { { type = "Stop" } }))
    local out, ended = T.wait(follower, 60)
    assert.is_true(ended, "the follower did not finish")
    local naive_out = T.wait(naive, 60)

    local truth = {}
    for _, r in ipairs(db:query("select position from ev_order order by position")) do
      truth[#truth + 1] = r.position
    end
    assert.equal(committed + 1, #truth)
    local got, seen = {}, {}
    for p in out:gmatch("%d+") do
      local n = tonumber(p)
      assert.is_nil(seen[n], "position " .. n .. " delivered twice")
      seen[n] = true
      got[#got + 1] = n
    end
    assert.same(truth, got)
    local naive_count = select(2, naive_out:gsub("%d+", ""))
    print(("\n  read_all delivered %d/%d events in order; a naive follower delivered %d/%d")
      :format(#got, #truth, naive_count, #truth))
  end)
end)
