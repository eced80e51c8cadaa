-- SPDX-License-Identifier: MIT
-- The daily commands through the real binary: migrate, append, tail (one
-- stream, all, filtered, follow), status, and their exit codes (0 ok, 1
-- runtime failure, 2 usage error).
local T = require "testenv"

describe("pgstore daily commands", function()
  local table_name, db
  setup(function()
    db = T.connect()
    table_name = T.unique("cli_ev")
  end)
  teardown(function()
    db:close()
    T.assert_no_leaks()
  end)

  local function pg(args, dsn)
    return T.sh(("%s --dsn %q %s"):format(T.host(), dsn or T.dsn(), args))
  end

  it("migrates every store, twice without complaint", function()
    for _ = 1, 2 do
      local out, rc = pg("migrate --table " .. table_name)
      assert.equal(0, rc, out)
      for _, s in ipairs{ "events", "checkpoints", "snapshots", "sessions", "exec_checkpoints", "kv", "leases",
                          "locks", "parked", "relay" } do
        assert.matches(s .. ": ok", out)
      end
    end
    assert.is_true(db:query("select to_regclass($1) is not null as ok", table_name .. "_heads")[1].ok)
    assert.is_true(db:query("select to_regclass('pgstore_relay') is not null as ok")[1].ok, "the relay's table")
  end)

  it("appends from the command line and reports failures with exit 1", function()
    local out, rc = pg(("append --table %s order-1 Placed '{\"total\": 12}' --expected no_stream"):format(table_name))
    assert.equal(0, rc, out)
    assert.matches('"last_version":1', out)
    out, rc = pg(("append --table %s order-1 Paid '{}' --expected 1 --metadata '{\"by\": \"cli\"}'"):format(table_name))
    assert.equal(0, rc, out)
    out, rc = pg(("append --table %s order-1 Paid '{}' --expected 7"):format(table_name))
    assert.equal(1, rc)
    assert.matches("version conflict on stream order%-1: expected 7, actual 2", out)
    out, rc = pg(("append --table %s order-1 Paid '{not json'"):format(table_name))
    assert.equal(1, rc)
    assert.matches("json", out)
    out, rc = pg(("append --table %s order-1 Paid"):format(table_name))
    assert.equal(2, rc)
    out, rc = pg(("append --table %s a b c --bogus 1"):format(table_name))
    assert.equal(2, rc)
    assert.matches("unknown option %-%-bogus", out)
    assert.equal(2, db:query(("select count(*) as n from %s"):format(table_name))[1].n)
  end)

  it("tails a stream, all streams, with filters and limits", function()
    local out, rc = pg(("tail --table %s order-1"):format(table_name))
    assert.equal(0, rc, out)
    assert.equal('1\torder-1\t1\tPlaced\t{"total": 12}\n2\torder-1\t2\tPaid\t{} {"by": "cli"}\n', out)
    out = pg(("tail --table %s --all --types Paid"):format(table_name))
    assert.equal('2\torder-1\t2\tPaid\t{} {"by": "cli"}\n', out)
    out = pg(("tail --table %s --all --limit 1"):format(table_name))
    assert.equal('1\torder-1\t1\tPlaced\t{"total": 12}\n', out)
    out = pg(("tail --table %s --all --from 2"):format(table_name))
    assert.matches("^2\t", out)
    out, rc = pg(("tail --table %s"):format(table_name))
    assert.equal(2, rc)
    out, rc = pg(("tail --table %s --all --limit ten"):format(table_name))
    assert.equal(2, rc)
  end)

  it("refuses project's seconds that are no finite positive number", function()
    for _, bad in ipairs{ "--policy-every nan", "--policy-every -5", "--policy-every inf",
                          "--lease 0", "--idempotency-ttl -1" } do
      local out, rc = pg(("project %s x.lua"):format(bad))
      assert.equal(2, rc, bad .. ": " .. out)
      assert.matches(bad:match("^%S+") .. " must be a", out, 1, true)
    end
  end)

  it("holds every number flag to the API's ranges: a usage error before connecting", function()
    -- nothing listens there: a flag that got past parsing would fail to connect (exit 1)
    local nowhere = "host=127.0.0.1 port=1 dbname=x connect_timeout=1"
    local dir = T.tmpdir("cli_numbers")
    T.write(dir .. "/p.lua", "return {}")
    local cases = {
      { "project --policy-every 1e308 x.lua", "--policy-every must be a positive number of seconds up to 2147483, got '1e308'" },
      { "project --policy-every 3000000 x.lua", "--policy-every must be" },
      { "project --lease 1e308 x.lua", "--lease must be" },
      { "project --renew inf x.lua", "--renew must be" },
      { "project --idempotency-ttl 1e308 x.lua", "--idempotency-ttl must be a whole number from 0 to 4294967296, got '1e308'" },
      { "project --idempotency-ttl 1.5 x.lua", "--idempotency-ttl must be a whole number" },
      { "project x.lua --table", "--table needs a value" },
      { "project --table --once x.lua", "--table needs a value" },
      { "project --policy x.lua", "no projection file given" },
      { "tail --all --limit 1e308", "--limit must be a whole number from 0 to 9007199254740992, got '1e308'" },
      { "tail --all --limit 9007199254740993", "got '9007199254740993'" },
      { "tail --all --from 9007199254740993", "--from must be a whole number" },
      { "tail --all --from 1e308", "--from must be a whole number" },
      { "tail --all --from -1", "--from must be a whole number" },
      { "tail s --limit 1e308", "--limit must be a whole number" },
      { "tail --all --limit 0x10", "--limit must be a whole number" },
      { "tail --all --table", "--table needs a value" },
      { "append s E {} --expected 9007199254740993", "--expected must be a whole number" },
      { "policy apply " .. dir .. "/p.lua --batch 1e308", "--batch must be a whole number from 1 to 10000000" },
      { "policy apply " .. dir .. "/p.lua --idempotency-ttl -1", "--idempotency-ttl must be a whole number" },
    }
    for _, c in ipairs(cases) do
      local out, rc = pg(c[1], nowhere)
      assert.equal(2, rc, c[1] .. ": " .. out)
      assert.matches(c[2], out, 1, true)
      assert.matches("usage: pgstore", out, 1, true)
    end
    -- the largest values the API takes get past parsing (to the failed connection)
    for _, ok in ipairs{ "tail --all --limit 9007199254740992 --from 9007199254740992",
                         "policy apply " .. dir .. "/p.lua --batch 10000000 --idempotency-ttl 4294967296" } do
      local out, rc = pg(ok, nowhere)
      assert.equal(1, rc, ok .. ": " .. out)
    end
    local out, rc = pg(("tail --table %s --all --limit 9007199254740992 --from 007"):format(table_name))
    assert.equal(0, rc, out)
    T.sh("rm -rf " .. dir)
  end)

  it("follows new events until SIGTERM, then exits 0", function()
    local p = T.spawn(([[os.exit(os.execute(%q) == 0 and 0 or 3)]]):format(
      ("exec %s --dsn %q tail --table %s --all --follow --from 3"):format(T.host(), T.dsn(), table_name)))
    local es = assert(db:events{ table = table_name, notify = table_name, migrate = false })
    require("pgstore.core").sleep(0.3)
    assert(es:append("order-2", { { type = "Placed", data = { total = 1 } } }))
    assert(T.eventually(function() return T.output(p):find("order%-2") end, 5), T.output(p))
    T.sh(("pkill -TERM -f 'tail --table %s'"):format(table_name))
    local out, ended = T.wait(p, 5)
    assert.is_true(ended)
    assert.matches("^3\torder%-2\t1\tPlaced\t", out)
    es:close()
  end)

  it("shows status without secrets: streams, head, consumers with lag, leases", function()
    local cp = assert(db:checkpoints{ store = table_name })
    assert(cp:save("cli-consumer", 1))
    local user, pw = os.getenv("PGSTORE_TEST_SECRET_USER"), os.getenv("PGSTORE_TEST_SECRET_PASSWORD")
    -- rows only: the end is read_all's cursor, which needs no right on the
    -- position sequence
    assert(db:exec(("grant select on all tables in schema public to %s"):format(user)))
    local dsn = T.dsn() .. (" user=%s password=%s"):format(user, pw)
    local out, rc = pg("status --table " .. table_name, dsn)
    assert.equal(0, rc, out)
    assert.matches("as " .. user, out)
    assert.matches("streams%s+2", out)
    assert.matches("head position 3", out)
    assert.matches("cli%-consumer%s+at 1%s+lag 2", out)
    assert.is_nil(out:find(pw, 1, true))
    cp:delete("cli-consumer")
    cp:close()
  end)

  it("shows a partitioned projection's lag while it is behind", function()
    local dir = T.tmpdir("cli_parts")
    local store = T.unique("cli_parts_ev")
    T.write(dir .. "/part.lua", ([[return { name = "%s", partitioned = true, partitions = 2,
      handlers = { A = function() end } }]]):format(T.unique("pp")))
    local out, rc = pg(("append --table %s s-1 A '{}'"):format(store))
    assert.equal(0, rc, out)
    out, rc = pg(("project --once --table %s %s/part.lua"):format(store, dir))
    assert.equal(0, rc, out)
    out, rc = pg(("append --table %s s-1 A '{}'"):format(store))
    assert.equal(0, rc, out)
    out, rc = pg("status --table " .. store)
    assert.equal(0, rc, out)
    assert.matches("lag 1 positions", out)
  end)

  it("never loads a module from the current directory", function()
    local dir = T.tmpdir("cli_cwd")
    T.write(dir .. "/cjson.lua", 'io.stderr:write("loaded from the current directory\\n") os.exit(7)')
    local out, rc = T.sh(("cd %q && %s --dsn %q status --table %s"):format(dir, T.host(), T.dsn(), table_name))
    assert.equal(0, rc, out)
    assert.is_nil(out:find("loaded from the current directory", 1, true))
  end)

  it("prints help for each command with exit 0", function()
    for _, c in ipairs{ "run", "project", "parked", "checkpoint", "tail", "append", "status", "migrate", "dev", "repl" } do
      local out, rc = T.sh(T.host() .. " " .. c .. " --help")
      assert.equal(0, rc, c)
      assert.matches("usage: pgstore " .. c, out)
    end
  end)
end)
