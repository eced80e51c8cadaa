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
    assert.equal(('duplicate key value violates unique constraint "%s_pkey"'):format(t), err.message)
    assert.equal(tostring(err), err.message)
    assert.equal("Key (id)=(1) already exists.", err.detail)
    assert.equal(t .. "_pkey", err.constraint)
    assert.equal(t, err.table)
    assert.equal("public", err.schema)
    assert.is_nil(err.hint)
    assert.is_nil(err.batch)
    assert.same({ { one = 1 } }, db:query("select 1 as one"))
    assert(db:exec("drop table " .. t))
  end)

  it("keeps the server's hint in its own field", function()
    local n, err = db:exec("select 1 + 'a'::text")
    assert.is_nil(n)
    assert.equal("42883", err.sqlstate)
    assert.equal("operator does not exist: integer + text", err.message)
    assert.matches("explicit type casts", err.hint)
    assert.same({ { one = 1 } }, db:query("select 1 as one"))
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

  describe("carries structured parts as fields, never in the message", function()
    local es
    setup(function() es = assert(db:events{ table = "err_fields_spec", notify = false }) end)
    before_each(function() assert(es:truncate()) end)
    teardown(function() es:close() end)

    it("reports expected and actual for a stream whose name looks like them", function()
      local stream = "x (expected=1 actual=2)"
      assert(es:append(stream, { { type = "A" } }))
      assert(es:append(stream, { { type = "A" } }))
      local res, err = es:append(stream, { { type = "B" } }, { expected = 5 })
      assert.is_nil(res)
      assert.equal("conflict", err.code)
      assert.equal("PGS03", err.sqlstate)
      assert.equal(5, err.expected)
      assert.equal(2, err.actual)
      assert.equal(tostring(err), err.message)
      assert.equal(2, es:version(stream))
    end)

    it("keeps expected and actual for a 1,000-byte stream name", function()
      local stream = ("s"):rep(1000)
      assert(es:append(stream, { { type = "A" } }))
      local _, err = es:append(stream, { { type = "B" } }, { expected = 7 })
      assert.equal("conflict", err.code)
      assert.equal(7, err.expected)
      assert.equal(1, err.actual)
      _, err = es:append(stream, { { type = "B" } }, { expected = "no_stream" })
      assert.equal("no_stream", err.expected)
      assert.equal(1, err.actual)
      assert.equal(1, es:version(stream))
    end)

    it("names the failing batch of append_many in err.batch (1-based)", function()
      assert(es:append("b1", { { type = "A" } }))
      assert(es:append("b3", { { type = "A" } }))
      local res, err = es:append_many{
        { stream = "b1", events = { { type = "A" } }, expected = 1 },
        { stream = "b2", events = { { type = "A" } } },
        { stream = "b3", events = { { type = "A" } }, expected = 4 },
      }
      assert.is_nil(res)
      assert.equal("conflict", err.code)
      assert.equal(3, err.batch)
      assert.equal(4, err.expected)
      assert.equal(1, err.actual)
      assert.is_nil(err.message:match("^batch"))
      assert.equal(1, es:version("b1"))
      assert.equal(0, es:version("b2"))
      -- caught before sending: the batch is a field too
      res, err = es:append_many{
        { stream = "b1", events = { { type = "A" } } },
        { stream = "b2", events = {} },
      }
      assert.is_nil(res)
      assert.equal("invalid", err.code)
      assert.equal(2, err.batch)
      res, err = es:append_many{
        { stream = "b1", events = { { type = "A" } } },
        { stream = "b\0", events = { { type = "A" } } },
      }
      assert.is_nil(res)
      assert.equal("invalid", err.code)
      assert.equal(2, err.batch)
      -- a guard's refusal of one batch
      es.guard = function(stream)
        if stream == "b2" then return nil, pgstore.errors.new("rejected", "not b2") end
        return true
      end
      res, err = es:append_many{
        { stream = "b1", events = { { type = "A" } } },
        { stream = "b2", events = { { type = "A" } } },
      }
      es.guard = nil
      assert.is_nil(res)
      assert.equal("rejected", err.code)
      assert.equal(2, err.batch)
      assert.same({ { one = 1 } }, db:query("select 1 as one"))
      assert(es:append("b2", { { type = "A" } }, { expected = "no_stream" }))
    end)

    it("takes a racing retry's result from PGS00's DETAIL (an append function of schema v1)", function()
      local schema = T.unique("err_replay")
      assert(db:exec("create schema " .. schema))
      local old = assert(db:events{ table = schema .. ".ev", notify = false })
      -- what a v1 append function did when a retry raced its first attempt, in
      -- the place of today's
      assert(db:exec(("drop function %s.ev_append_rows"):format(schema)))
      assert(db:exec(([[create function %s.ev_append_rows(p_stream text, p_expected bigint,
          p_types text[], p_data jsonb[], p_metadata jsonb[], p_ids uuid[], p_schema_versions int[],
          p_key text, p_time double precision, p_tag int, p_notify text,
          out r_first_version bigint, out r_last_version bigint, out r_first_position bigint,
          out r_last_position bigint, out r_count int, out r_replayed boolean)
        language plpgsql as $$ begin
          raise exception using errcode = 'PGS00', message = 'replayed ' || p_stream,
            detail = '11 12 101 102 2';
        end $$]]):format(schema)))
      local r = assert(old:append("s (1 2 3 4 5)", { { type = "A" }, { type = "B" } },
                                  { idempotency_key = "k" }))
      assert.same({ stream = "s (1 2 3 4 5)", first_version = 11, last_version = 12,
                    first_position = 101, last_position = 102, count = 2, replayed = true }, r)
      old:close()
      assert(db:exec(("drop schema %s cascade"):format(schema)))
    end)

    it("names the failing kv schema init phase in err.phase", function()
      local t = T.unique("kvphase")
      assert(db:exec(("create table %s (key text primary key)"):format(t)))
      local kv, err = db:kv{ table = t, cleanup_interval = 0 }
      assert.is_nil(kv)
      assert.equal("sql", err.code)
      assert.equal("42703", err.sqlstate)
      assert.equal("create_table", err.phase) -- the kv file makes its index with the table
      assert.equal('column "expires_at" does not exist', err.message)
      assert.same({ { one = 1 } }, db:query("select 1 as one"))
      assert(db:exec("drop table " .. t))
    end)

    it("leaves unset fields out of the table", function()
      local _, err = db:query("selec 1")
      for _, k in ipairs{ "detail", "hint", "constraint", "table", "column", "expected",
                          "actual", "batch", "phase" } do
        assert.is_nil(err[k], k)
      end
    end)
  end)

  it("builds Lua-side errors with the same shape", function()
    local e = pgstore.errors.new("conflict", "boom", { expected = 1, actual = 2 })
    assert.equal("boom", tostring(e))
    assert.equal(debug.getmetatable(select(2, db:query("selec"))), debug.getmetatable(e))
    assert.is_true(pgstore.errors.is(e, "conflict"))
  end)
end)
