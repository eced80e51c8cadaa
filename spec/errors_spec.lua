-- SPDX-License-Identifier: MIT
-- The error contract: runtime failures are nil, err with a code from the
-- closed set and the server's SQLSTATE; the same db keeps working.
local pgstore = require "pgstore"
local T = require "testenv"

describe("errors", function()
  local db
  setup(function() db = T.connect() end)
  teardown(function() db:close(); T.assert_no_leaks() end)

  it("reports a syntax error as sql/42601, then answers select 1", function()
    local rows, err = db:query("selec 1")
    assert.is_nil(rows)
    assert.equal("sql", err.code)
    assert.equal("42601", err.sqlstate)
    assert.matches("syntax error", tostring(err))
    assert.same({ { one = 1 } }, db:query("select 1 as one"))
  end)

  it("reports a unique violation as sql/23505 with the detail", function()
    local t = T.unique("uniq")
    assert(db:exec(("create table %s (id int primary key)"):format(t)))
    assert(db:exec(("insert into %s values ($1)"):format(t), 1))
    local n, err = db:exec(("insert into %s values ($1)"):format(t), 1)
    assert.is_nil(n)
    assert.equal("sql", err.code)
    assert.equal("23505", err.sqlstate)
    assert.matches("already exists", err.message)
    assert.same({ { one = 1 } }, db:query("select 1 as one"))
    assert(db:exec("drop table " .. t))
  end)

  it("reports a statement timeout as 'timeout' with 57014", function()
    local tdb = T.connect{ statement_timeout = 100 }
    local rows, err = tdb:query("select pg_sleep(2)")
    assert.is_nil(rows)
    assert.equal("timeout", err.code)
    assert.equal("57014", err.sqlstate)
    assert.same({ { one = 1 } }, tdb:query("select 1 as one"))
    tdb:close()
  end)

  it("reports a wrong parameter count as 'invalid'", function()
    local rows, err = db:query("select $1::int + $2::int as s", 1)
    assert.is_nil(rows)
    assert.equal("invalid", err.code)
    assert.matches("takes 2 parameters, 1 given", err.message)
  end)

  it("builds Lua-side errors with the same shape", function()
    local e = pgstore.errors.new("conflict", "boom", { expected = 1, actual = 2 })
    assert.equal("boom", tostring(e))
    assert.equal(getmetatable(select(2, db:query("selec"))), getmetatable(e))
    assert.is_true(pgstore.errors.is(e, "conflict"))
  end)
end)
