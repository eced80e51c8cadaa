-- SPDX-License-Identifier: MIT
-- The pool: exhaustion gives 'timeout' after the acquire timeout, a killed
-- backend is replaced transparently, and a server restart is survived.
local core = require "pgstore.core"
local T = require "testenv"

describe("pool", function()
  after_each(function() T.assert_no_leaks() end)

  it("times out with 'timeout' when every connection is borrowed", function()
    local db = T.connect{ pool_size = 2, acquire_timeout = 0.3 }
    local a = assert(db:acquire())
    local b = assert(db:acquire())
    local t0 = core.now()
    local rows, err = db:query("select 1")
    local waited = core.now() - t0
    assert.is_nil(rows)
    assert.equal("timeout", err.code)
    assert.matches("waiting for a free connection", err.message)
    assert.truthy(waited >= 0.25 and waited < 2, "waited " .. waited)
    a:release()
    assert.same({ { one = 1 } }, db:query("select 1 as one"))
    b:release()
    b:release() -- releasing twice is harmless
    db:close()
  end)

  it("replaces a connection killed with pg_terminate_backend", function()
    local db = T.connect{ pool_size = 1 }
    local pid = db:query("select pg_backend_pid() as p")[1].p
    assert(T.admin():query("select pg_terminate_backend($1)", pid))
    assert(T.eventually(function()
      return T.admin():query("select count(*) as n from pg_stat_activity where pid = $1", pid)[1].n == 0
    end))
    local rows = assert(db:query("select pg_backend_pid() as p"))
    assert.are_not.equal(pid, rows[1].p)
    db:close()
  end)

  it("survives a server restart", function()
    local db = T.connect{ pool_size = 2 }
    assert(db:query("select 1"))
    T.admin():close()
    T.testdb("restart")
    local rows, err = db:query("select 2 as two")
    assert.is_nil(err)
    assert.same({ { two = 2 } }, rows)
    db:close()
  end)

  it("gives the connection back when a transaction function raises", function()
    local db = T.connect{ pool_size = 1, acquire_timeout = 0.5 }
    for _ = 1, 3 do
      pcall(db.transaction, db, function() error("x") end)
    end
    assert.same({ { one = 1 } }, db:query("select 1 as one"))
    db:close()
  end)

  it("reuses a released connection that was left in a transaction, rolled back", function()
    local db = T.connect{ pool_size = 1 }
    local c = assert(db:acquire())
    assert(c:begin())
    assert(c:exec("create temp table leftover (a int)"))
    c:release()
    local rows, err = db:query("select * from leftover")
    assert.is_nil(rows)
    assert.equal("42P01", err.sqlstate)
    db:close()
  end)
end)
