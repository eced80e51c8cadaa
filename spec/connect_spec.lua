-- SPDX-License-Identifier: MIT
-- Connecting: DSN forms, options, connection failures and their codes,
-- secrets kept out of messages, misuse, closing.
local pgstore = require "pgstore"
local core = require "pgstore.core"
local T = require "testenv"

describe("pgstore.connect", function()
  after_each(function() T.assert_no_leaks() end)

  it("connects with a DSN string and with an options table", function()
    local db = assert(pgstore.connect(T.dsn()))
    assert.same({ { one = 1 } }, db:query("select 1 as one"))
    db:close()
    db = T.connect{ pool_size = 2, connect_timeout = 3, statement_timeout = 5000 }
    local rows = assert(db:query("select current_setting('statement_timeout') as st, current_setting('TimeZone') as tz"))
    assert.equal("5s", rows[1].st)
    assert.equal("UTC", rows[1].tz)
    db:close()
  end)

  it("speaks UTF-8 whatever the DSN asks: names hash and JSON stays as written", function()
    for _, extra in ipairs{ " client_encoding=LATIN1", " options='-c client_encoding=LATIN1'" } do
      local db = assert(pgstore.connect(T.dsn() .. extra))
      assert.equal("UTF8", db:query("show client_encoding")[1].client_encoding, extra)
      local tbl = T.unique("enc_ev")
      local es = assert(db:events{ table = tbl, notify = false })
      assert(es:append("café-€", { { type = "A", data = { s = "é" } } }))
      local ev = assert(es:read("café-€"))[1]
      assert.equal("é", ev.data.s, extra)
      local rows = assert(db:query(("select octet_length(stream) as n from %s"):format(tbl)))
      assert.equal(#"café-€", rows[1].n, extra)
      es:close()
      db:close()
    end
  end)

  it("sets application_name", function()
    local db = T.connect{ application_name = "pgstore-spec" }
    local rows = assert(db:query("select current_setting('application_name') as a"))
    assert.equal("pgstore-spec", rows[1].a)
    db:close()
  end)

  it("reports an unreachable server as 'connection' within the connect timeout", function()
    local db = assert(pgstore.connect{ dsn = "host=127.0.0.1 port=1 dbname=x", connect_timeout = 2 })
    local t0 = core.now()
    local rows, err = db:query("select 1")
    assert.is_nil(rows)
    assert.equal("connection", err.code)
    assert.truthy(core.now() - t0 < 3)
    assert.matches("could not connect", tostring(err))
    -- an unknown host name fails the same way
    db:close()
    db = assert(pgstore.connect{ dsn = "host=no-such-host.invalid dbname=x", connect_timeout = 2 })
    rows, err = db:query("select 1")
    assert.is_nil(rows)
    assert.equal("connection", err.code)
    db:close()
  end)

  it("never shows the password of a wrong-password login", function()
    local user = assert(os.getenv("PGSTORE_TEST_SECRET_USER"))
    local dsn = T.dsn() .. " user=" .. user .. " password=Not-The-Secret-913"
    local db = assert(pgstore.connect(dsn))
    local rows, err = db:query("select 1")
    assert.is_nil(rows)
    assert.equal("connection", err.code)
    assert.matches("password authentication failed", err.message)
    assert.is_nil(err.message:find("Not-The-Secret-913", 1, true))
    db:close()
    -- and the right password works
    dsn = T.dsn() .. " user=" .. user .. " password=" .. os.getenv("PGSTORE_TEST_SECRET_PASSWORD")
    db = assert(pgstore.connect(dsn))
    assert.equal(user, db:query("select current_user as u")[1].u)
    db:close()
  end)

  it("rejects a malformed DSN with 'invalid' and no secret in the message", function()
    local db, err = pgstore.connect("password=Hidden-Pw-78 bogus")
    assert.is_nil(db)
    assert.equal("invalid", err.code)
    assert.is_nil(tostring(err):find("Hidden-Pw-78", 1, true))
    -- a URI libpq only rejects when connecting: still no secret
    db = assert(pgstore.connect("postgresql://u:Hidden-Pw-77@localhost:notaport/db"))
    local rows
    rows, err = db:query("select 1")
    assert.is_nil(rows)
    assert.equal("connection", err.code)
    assert.is_nil(tostring(err):find("Hidden-Pw-77", 1, true))
    db:close()
  end)

  it("raises on misuse with the argument number", function()
    assert.has_error(function() pgstore.connect(42) end,
      "bad argument #1 to 'connect' (string or table expected, got number)")
    assert.has_error(function() pgstore.connect{ dsn = T.dsn(), pool_size = "4" } end,
      "bad argument #1 to 'connect' (option 'pool_size' must be number, got string)")
    assert.has_error(function() pgstore.connect{ dsn = T.dsn(), bogus = 1 } end,
      "bad argument #1 to 'connect' (unknown option 'bogus')")
    assert.equal("invalid", select(2, pgstore.connect{ dsn = T.dsn(), pool_size = 0 }).code)
    local db = T.connect()
    assert.has_error(function() db:query(42) end, "bad argument #1 to 'query' (string expected, got number)")
    assert.has_error(function() db:query("select $1", {}) end)
    assert.has_error(function() db:exec() end, "bad argument #1 to 'exec' (string expected, got nil)")
    assert.has_error(function() db.query("select 1") end)
    assert.has_error(function() db:transaction("not a function") end,
      "bad argument #1 to 'transaction' (function expected, got string)")
    -- and the db still works after each misuse
    assert.same({ { x = 1 } }, db:query("select 1 as x"))
    db:close()
  end)

  it("raises when a closed db is used, and closing twice is harmless", function()
    local db = T.connect()
    assert(db:query("select 1"))
    db:close()
    db:close()
    assert.equal("pgstore.db (closed)", tostring(db))
    assert.has_error(function() db:query("select 1") end, "attempt to use a closed connection")
    assert.has_error(function() db:exec("select 1") end, "attempt to use a closed connection")
    assert.has_error(function() db:transaction(function() end) end, "attempt to use a closed connection")
  end)

  it("exposes the version and null", function()
    assert.matches("^%d+%.%d+%.%d+$", pgstore._VERSION)
    assert.equal(require("cjson").null, pgstore.null)
    local out = T.sh(T.host() .. " --version")
    assert.equal("pgstore " .. pgstore._VERSION, (out:gsub("%s+$", "")))
  end)
end)
