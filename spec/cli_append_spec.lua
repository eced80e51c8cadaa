-- SPDX-License-Identifier: MIT
-- `pgstore append` through the real binary: results as JSON with keys in
-- a fixed order, the data from a file, and bulk import of NDJSON on stdin
-- with a summary line (a bad line names its number and stops there).
local T = require "testenv"

describe("pgstore append", function()
  local db, store, dir
  setup(function()
    db = T.connect()
    store = T.unique("app_ev")
    dir = T.tmpdir("append")
  end)
  teardown(function()
    db:close()
    T.sh("rm -rf " .. dir)
    T.assert_no_leaks()
  end)

  local function pg(args)
    return T.sh(("%s --dsn %q %s"):format(T.host(), T.dsn(), args))
  end

  it("prints its result with keys in a fixed order, and takes --data-file", function()
    T.write(dir .. "/data.json", '{"total": 12}')
    local out, rc = pg(("append --table %s o-1 Placed --data-file %s/data.json"):format(store, dir))
    assert.equal(0, rc, out)
    assert.equal('{"stream":"o-1","count":1,"first_version":1,"last_version":1,"first_position":1,'
      .. '"last_position":1,"replayed":false}\n', out)
    assert.equal(12, db:query(("select (data->>'total')::int as t from %s"):format(store))[1].t)
    out, rc = pg(("append --table %s o-1 Placed --data-file %s/none.json"):format(store, dir))
    assert.equal(1, rc, out)
  end)

  it("lets --policy guards judge what it appends, from the line and from stdin", function()
    T.write(dir .. "/limits.lua", [[
return { name = "limits", streams = "g-*", guard = function(stream, events)
  for _, e in ipairs(events) do
    if e.data.total > 100 then return nil, "total over 100" end
  end
  return true
end }]])
    local out, rc = pg(("append --table %s g-1 Placed '{\"total\": 500}' --policy %s/limits.lua"):format(store, dir))
    assert.equal(1, rc, out)
    assert.matches("total over 100", out, 1, true)
    out, rc = pg(("append --table %s g-1 Placed '{\"total\": 5}' --policy %s/limits.lua"):format(store, dir))
    assert.equal(0, rc, out)
    T.write(dir .. "/g.ndjson", '{"stream": "g-2", "type": "Placed", "data": {"total": 900}}\n')
    out, rc = T.sh(("%s --dsn %q append --ndjson --table %s --policy %s/limits.lua < %s/g.ndjson")
      :format(T.host(), T.dsn(), store, dir, dir))
    assert.equal(1, rc, out)
    assert.matches("total over 100", out, 1, true)
    assert.equal(1, db:query(("select count(*) as n from %s where stream like 'g-%%'"):format(store))[1].n)
  end)

  it("imports NDJSON from stdin, stopping at a bad line", function()
    local lines = {}
    for i = 1, 50 do
      lines[#lines + 1] = ('{"stream": "b-%d", "type": "Added", "data": {"n": %d}, "expected": "no_stream"}'):format(i % 5, i)
      if i > 5 then lines[#lines] = lines[#lines]:gsub(', "expected": "no_stream"', "") end
    end
    T.write(dir .. "/in.ndjson", table.concat(lines, "\n") .. "\n")
    local out, rc = T.sh(("%s --dsn %q append --ndjson --table %s < %s/in.ndjson"):format(T.host(), T.dsn(), store, dir))
    assert.equal(0, rc, out)
    assert.matches("appended 50 events in", out, 1, true)
    assert.equal(50, db:query(("select count(*) as n from %s where stream like 'b-%%'"):format(store))[1].n)
    T.write(dir .. "/bad.ndjson", '{"stream": "c", "type": "A", "data": {}}\n{"stream": 1}\n{"stream": "c", "type": "A", "data": {}}\n')
    out, rc = T.sh(("%s --dsn %q append --ndjson --table %s < %s/bad.ndjson"):format(T.host(), T.dsn(), store, dir))
    assert.equal(1, rc, out)
    assert.matches("stdin:2:", out, 1, true)
    assert.equal(1, db:query(("select count(*) as n from %s where stream = 'c'"):format(store))[1].n)
  end)
end)
