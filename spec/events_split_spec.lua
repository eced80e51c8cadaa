-- SPDX-License-Identifier: MIT
-- Read/write split against a real streaming replica (pg_basebackup in the
-- harness): writes go to the primary, reads to the replica, and
-- consistent = true reads what this db just wrote.
local pgstore = require "pgstore"
local T = require "testenv"

describe("read/write split", function()
  local db, es, primary
  setup(function()
    primary = T.connect()
    local boot = assert(primary:events{ table = "ev_split", notify = false })
    assert(boot:truncate())
    boot:close()
    assert(T.eventually(function()
      local r = pgstore.connect(T.replica_dsn())
      local ok = r:query("select to_regclass('ev_split') is not null as ok")
      r:close()
      return ok and ok[1].ok
    end, 10), "the replica never saw the table")
    db = assert(pgstore.connect{ dsn = T.dsn(), read_dsn = T.replica_dsn(), application_name = "pgstore-split" })
    es = assert(db:events{ table = "ev_split", notify = false, migrate = false })
  end)
  teardown(function()
    es:close()
    db:close()
    primary:close()
    T.assert_no_leaks("pgstore-split")
  end)

  it("sends reads to the replica and writes to the primary", function()
    assert(es:append("rw", { { type = "A" } }))
    assert(es:read("rw", { consistent = true }))
    local replica = pgstore.connect(T.replica_dsn())
    local on_replica = replica:query(
      "select count(*) as n from pg_stat_activity where application_name = 'pgstore-split' and datname = current_database()")[1].n
    replica:close()
    assert.truthy(on_replica >= 1, "no read connection on the replica")
    assert.is_true(db:reader():query("select pg_is_in_recovery() as r")[1].r)
    assert.is_false(db:query("select pg_is_in_recovery() as r")[1].r)
  end)

  it("reads its own writes with consistent = true", function()
    for i = 1, 20 do
      local r = assert(es:append("ryw", { { type = "E", data = { i = i } } }))
      local rows = assert(es:read("ryw", { consistent = true, from = r.first_version }))
      assert.equal(1, #rows, "write " .. i .. " not visible")
      assert.equal(i, rows[1].data.i)
    end
  end)

  it("serves read_all from the primary so the order guarantee holds", function()
    assert(es:append("ra", { { type = "A" } }))
    local rows = assert(es:read_all{ prefix = "ra" })
    assert.equal(1, #rows) -- visible at once: the primary answered
  end)

  it("refuses writes on the replica itself", function()
    local r = assert(pgstore.connect(T.replica_dsn()))
    local res, err = r:exec("create table nope (a int)")
    assert.is_nil(res)
    assert.equal("sql", err.code)
    assert.equal("25006", err.sqlstate)
    r:close()
  end)
end)
