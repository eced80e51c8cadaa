-- SPDX-License-Identifier: MIT
-- The host's manners through the real binary: read-only commands never
-- create anything, typos get a "did you mean", global flags go anywhere,
-- `pgstore help [COMMAND]` lists every option with its default, the DSN
-- comes from PG* variables before the embedded cluster, and a bad DSN
-- says libpq's reason.
local T = require "testenv"

describe("pgstore's manners", function()
  local db, store
  setup(function()
    db = T.connect()
    store = T.unique("shop_events")
    local out, rc = T.sh(("%s --dsn %q migrate --table %s"):format(T.host(), T.dsn(), store))
    assert.equal(0, rc, out)
  end)
  teardown(function()
    db:close()
    T.assert_no_leaks()
  end)

  local function pg(args)
    return T.sh(("%s --dsn %q %s"):format(T.host(), T.dsn(), args))
  end

  local function relations()
    return db:query("select count(*) as n from pg_class")[1].n
  end

  it("never creates anything for a read-only command on a mistyped store", function()
    local typo = store:gsub("events", "evnets")
    local before = relations()
    for _, cmd in ipairs{ "tail --all --table " .. typo, "tail some-stream --table " .. typo,
                          "status --table " .. typo } do
      local out, rc = pg(cmd)
      assert.equal(1, rc, cmd .. ": " .. out)
      assert.matches(("no event store %s (did you mean %s?)"):format(typo, store), out, 1, true)
    end
    assert.equal(before, relations())
    assert.is_false(db:query("select to_regclass($1) is not null as ok", typo)[1].ok)
  end)

  it("tails from an inclusive --from, and a missing stream is an error", function()
    for _, e in ipairs{ "a Placed '{}'", "b Placed '{}'", "a Paid '{}'" } do
      local out, rc = pg(("append --table %s %s"):format(store, e))
      assert.equal(0, rc, out)
    end
    local out, rc = pg(("tail --table %s --all --from 2"):format(store))
    assert.equal(0, rc, out)
    assert.matches("^2\tb\t1\t", out)
    out, rc = pg(("tail --table %s a --from 2"):format(store))
    assert.equal(0, rc, out)
    assert.matches("^3\ta\t2\tPaid", out)
    out, rc = pg(("tail --table %s --all --json"):format(store))
    assert.equal(0, rc, out)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = require("cjson").decode(l) end
    assert.equal(3, #lines)
    assert.same({ 3, "a", 2, "Paid" }, { lines[3].position, lines[3].stream, lines[3].version, lines[3].type })
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d", lines[3].time)
    assert.matches('^{"position":1,"stream":"a","version":1,"type":"Placed","time":', out)
    out, rc = pg(("tail --table %s nosuch"):format(store))
    assert.equal(1, rc, out)
    assert.matches("no stream nosuch", out, 1, true)
  end)

  it("suggests the command or option meant", function()
    local out, rc = T.sh(T.host() .. " stauts")
    assert.equal(2, rc, out)
    assert.matches("unknown command 'stauts' (did you mean status?)", out, 1, true)
    out, rc = pg("tail --all --follw")
    assert.equal(2, rc, out)
    assert.matches("unknown option --follw (did you mean --follow?)", out, 1, true)
  end)

  it("takes global flags after the command", function()
    local out, rc = T.sh(("%s status --table %s --dsn %q"):format(T.host(), store, T.dsn()))
    assert.equal(0, rc, out)
    assert.matches("head position", out, 1, true)
    out, rc = T.sh(("%s tail --all --table %s --dsn=%q"):format(T.host(), store, T.dsn()))
    assert.equal(0, rc, out)
  end)

  it("prints help for every command, listing each option with its default", function()
    local out, rc = T.sh(T.host() .. " help")
    assert.equal(0, rc, out)
    assert.matches("commands:", out, 1, true)
    out, rc = T.sh(T.host() .. " help project")
    assert.equal(0, rc, out)
    assert.matches("usage: pgstore project", out, 1, true)
    assert.matches("%-%-lease SECONDS[^\n]*default 10", out)
    assert.matches("%-%-renew SECONDS[^\n]*default lease / 3", out)
    out, rc = T.sh(T.host() .. " help tail")
    assert.equal(0, rc, out)
    for _, o in ipairs{ "--all", "--follow", "--types", "--from", "--limit", "--table" } do
      assert.matches("\n  " .. o:gsub("%-", "%%-"), out)
    end
    assert.matches("%-%-table[^\n]*default events", out)
    out, rc = T.sh(T.host() .. " help nosuch")
    assert.equal(2, rc, out)
    assert.matches("unknown command 'nosuch'", out, 1, true)
  end)

  it("takes the DSN from PG* variables before the embedded cluster, and says the order", function()
    local port, name = T.dsn():match("port=(%d+)"), T.dbname()
    local home = T.tmpdir("pgenv")
    finally(function() -- had the embedded cluster been started
      T.sh(("env -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE PGSTORE_HOME=%s %s dev stop"):format(home, T.host()))
      T.sh("rm -rf " .. home)
    end)
    local env = ("env -u PGSTORE_DSN PGSTORE_HOME=%s PGHOST=127.0.0.1 PGPORT=%s PGUSER=postgres PGDATABASE=%s ")
      :format(home, port, name)
    local out, rc = T.sh(env .. T.host() .. " status --table " .. store)
    assert.equal(0, rc, out)
    assert.matches("database  " .. name, out, 1, true)
    assert.is_nil(out:find("embedded", 1, true))
    -- nothing of the embedded cluster was made
    assert.is_nil(io.open(home .. "/data/PG_VERSION"))
    out = T.sh(T.host() .. " --help")
    assert.matches("PGHOST", out, 1, true)
  end)

  it("names the handler's file and line and the SQL error of a failing assert(tx:exec(…))", function()
    local dir = T.tmpdir("manners")
    finally(function() T.sh("rm -rf " .. dir) end)
    local out, rc = pg(("append --table %s h-1 Placed '{}'"):format(store))
    assert.equal(0, rc, out)
    T.write(dir .. "/bad.lua", [[
return {
  name = "bad_sql",
  handlers = { Placed = function(e, tx)
    assert(tx:exec("insert into no_such_table values (1)"))
  end },
}]])
    out, rc = pg(("project --once --table %s %s/bad.lua"):format(store, dir))
    assert.equal(1, rc, out)
    assert.matches(dir .. "/bad.lua:4: relation \"no_such_table\" does not exist", out, 1, true)
  end)

  it("status shows the consumers of every store, lag in positions and seconds", function()
    local cp = assert(db:checkpoints{ store = store })
    assert(cp:save("manners-consumer", 1))
    cp:close()
    local out, rc = pg("status") -- no --table: the default store is not there, the others' consumers are
    assert.equal(0, rc, out)
    assert.matches("no table events yet", out, 1, true)
    assert.matches("store [%w_.]*" .. store .. ", head position %d+", out)
    assert.matches("manners%-consumer%s+at 1%s+lag [1-9]%d*%s+%d+%.%ds", out)
  end)

  it("says libpq's reason when status cannot connect", function()
    local out, rc = T.sh(T.host() .. " --dsn 'host=127.0.0.1 port=1 dbname=x connect_timeout=2' status")
    assert.equal(1, rc, out)
    assert.is_nil(out:find("cannot query the server", 1, true))
    assert.matches("refused", out, 1, true)
  end)
  it("refuses a bad --expected and names a --policy file plainly, before connecting", function()
    local nowhere = T.host() .. " --dsn 'host=127.0.0.1 port=1 dbname=x connect_timeout=2' "
    local out, rc = T.sh(nowhere .. "append s T '{}' --expected -1")
    assert.equal(2, rc, out)
    assert.matches("--expected takes a version", out, 1, true)
    assert.is_nil(out:find("refused", 1, true))
    out, rc = T.sh(nowhere .. "append s T '{}' --policy nosuch.lua")
    assert.equal(1, rc, out)
    assert.matches("--policy: nosuch.lua", out, 1, true)
    assert.is_nil(out:find("policy.lua:", 1, true))
    assert.is_nil(out:find("refused", 1, true))
  end)
end)
