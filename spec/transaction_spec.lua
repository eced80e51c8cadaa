-- SPDX-License-Identifier: MIT
-- db:transaction: commit, rollback on nil, err, rollback and re-raise on
-- error, savepoints, and a real serialization conflict between two
-- connections that is retried until it succeeds.
local T = require "testenv"

describe("db:transaction", function()
  local db, t
  setup(function()
    db = T.connect{ pool_size = 3 }
    t = T.unique("txt")
    assert(db:exec(("create table %s (k text primary key, v int not null)"):format(t)))
  end)
  teardown(function()
    assert(db:exec("drop table " .. t))
    db:close()
    T.assert_no_leaks()
  end)
  before_each(function() assert(db:exec("truncate " .. t)) end)

  local function count()
    return db:query(("select count(*) as n from %s"):format(t))[1].n
  end

  it("commits and returns fn's results", function()
    local a, b = db:transaction(function(tx)
      assert(tx:exec(("insert into %s values ('a', 1)"):format(t)))
      return "done", 2
    end)
    assert.equal("done", a)
    assert.equal(2, b)
    assert.equal(1, count())
  end)

  it("rolls back and returns nil, err when fn does", function()
    local res, err = db:transaction(function(tx)
      assert(tx:exec(("insert into %s values ('a', 1)"):format(t)))
      return nil, "changed my mind"
    end)
    assert.is_nil(res)
    assert.equal("changed my mind", err)
    assert.equal(0, count())
  end)

  it("rolls back and re-raises when fn raises", function()
    assert.has_error(function()
      db:transaction(function(tx)
        assert(tx:exec(("insert into %s values ('a', 1)"):format(t)))
        error("boom", 0)
      end)
    end, "boom")
    assert.equal(0, count())
    -- the pool got its connection back
    assert.equal(0, db:pool_stats().borrowed)
  end)

  it("refuses a finished tx", function()
    local saved
    db:transaction(function(tx) saved = tx end)
    assert.has_error(function() saved:query("select 1") end, "attempt to use a finished transaction")
  end)

  it("supports savepoints and nested blocks", function()
    assert(db:transaction(function(tx)
      assert(tx:exec(("insert into %s values ('a', 1)"):format(t)))
      local r, err = tx:nested(function(inner)
        assert(inner:exec(("insert into %s values ('b', 2)"):format(t)))
        return nil, "undo b"
      end)
      assert.is_nil(r)
      assert.equal("undo b", err)
      assert(tx:savepoint("s1"))
      assert(tx:exec(("insert into %s values ('c', 3)"):format(t)))
      assert(tx:rollback_to("s1"))
      return true
    end))
    assert.same({ { k = "a" } }, db:query(("select k from %s"):format(t)))
  end)

  it("honours the isolation level", function()
    local iso = db:transaction(function(tx)
      return tx:query("select current_setting('transaction_isolation') as i")[1].i
    end, { isolation = "serializable" })
    assert.equal("serializable", iso)
    assert.equal("invalid", select(2, db:transaction(function() end, { isolation = "chaos" })).code)
  end)

  it("retries a real serialization failure and then succeeds", function()
    assert(db:exec(("insert into %s values ('x', 0), ('y', 0)"):format(t)))
    local other = T.connect()
    local attempts = 0
    local ok = db:transaction(function(tx)
      attempts = attempts + 1
      local sum = assert(tx:query(("select sum(v) as s from %s"):format(t)))[1].s
      if attempts == 1 then
        -- A concurrent serializable transaction on another connection reads
        -- what we write and writes what we read, and commits first.
        assert(other:transaction(function(otx)
          assert(otx:query(("select sum(v) from %s"):format(t)))
          assert(otx:exec(("update %s set v = v + 1 where k = 'x'"):format(t)))
          return true
        end, { isolation = "serializable" }))
      end
      assert(tx:exec(("update %s set v = $1 where k = 'y'"):format(t), sum + 10))
      return true
    end, { isolation = "serializable", retries = 3 })
    other:close()
    assert.is_true(ok)
    assert.equal(2, attempts)
    local rows = db:query(("select k, v from %s order by k"):format(t))
    assert.same({ { k = "x", v = 1 }, { k = "y", v = 11 } }, rows)
  end)

  it("gives up after the retries and returns the 40001 error", function()
    assert(db:exec(("insert into %s values ('x', 0), ('y', 0)"):format(t)))
    local other = T.connect()
    local attempts = 0
    local res, err = db:transaction(function(tx)
      attempts = attempts + 1
      assert(tx:query(("select sum(v) from %s"):format(t)))
      assert(other:transaction(function(otx)
        assert(otx:query(("select sum(v) from %s"):format(t)))
        return otx:exec(("update %s set v = v + 1 where k = 'x'"):format(t))
      end, { isolation = "serializable" }))
      return tx:exec(("update %s set v = v + 1 where k = 'y'"):format(t))
    end, { isolation = "serializable", retries = 2 })
    other:close()
    assert.is_nil(res)
    assert.equal("40001", err.sqlstate)
    assert.equal(3, attempts)
  end)
end)
