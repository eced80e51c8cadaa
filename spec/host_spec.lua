-- SPDX-License-Identifier: MIT
-- The host binary: version, usage errors, `pgstore run` with a connected db
-- and one-line file:line failures, and the embedded default cluster that
-- starts from nothing and is reused.
local T = require "testenv"

local function tmpdir()
  local dir = T.tmpdir("spec")
  T.sh("chmod 755 " .. dir) -- the embedded cluster's owner must reach it
  return dir
end

describe("pgstore host", function()
  local dir
  setup(function() dir = tmpdir() end)
  teardown(function() T.sh("rm -rf " .. dir) end)

  it("prints help and exits 2 on an unknown command", function()
    local out, rc = T.sh(T.host() .. " --help")
    assert.equal(0, rc)
    assert.matches("usage: pgstore", out)
    out, rc = T.sh(T.host() .. " frobnicate")
    assert.equal(2, rc)
    assert.matches("unknown command 'frobnicate'", out)
    out, rc = T.sh(T.host() .. " run")
    assert.equal(2, rc)
  end)

  it("runs a script with db connected and script arguments", function()
    T.write(dir .. "/ok.lua", [[
      local rows = assert(db:query("select $1::int * 2 as v", tonumber(arg[1])))
      print("answer", rows[1].v, pgstore._VERSION)
    ]])
    local out, rc = T.sh(("%s --dsn %q run %s/ok.lua 21"):format(T.host(), T.dsn(), dir))
    assert.equal(0, rc, out)
    assert.matches("answer\t42", out)
  end)

  it("takes the DSN from PGSTORE_DSN", function()
    T.write(dir .. "/env.lua", [[print(db:query("select current_database() as d")[1].d)]])
    local out, rc = T.sh(("PGSTORE_DSN=%q %s run %s/env.lua"):format(T.dsn(), T.host(), dir))
    assert.equal(0, rc, out)
    assert.equal(T.dbname(), out:match("%S+"))
  end)

  it("fails a raising script with exit 1 and one line naming file:line", function()
    T.write(dir .. "/bad.lua", "local x = 1\nerror('it broke')\n")
    local out, rc = T.sh(("%s --dsn %q run %s/bad.lua"):format(T.host(), T.dsn(), dir))
    assert.equal(1, rc)
    assert.matches("bad%.lua:2: it broke", out)
    local lines = select(2, out:gsub("\n", ""))
    assert.equal(1, lines)
  end)

  it("fails a script that returns nil, err and one with a syntax error", function()
    T.write(dir .. "/nilerr.lua", "return db:query('selec 1')\n")
    local out, rc = T.sh(("%s --dsn %q run %s/nilerr.lua"):format(T.host(), T.dsn(), dir))
    assert.equal(1, rc)
    assert.matches("syntax error", out)
    T.write(dir .. "/syntax.lua", "local = 3\n")
    out, rc = T.sh(("%s --dsn %q run %s/syntax.lua"):format(T.host(), T.dsn(), dir))
    assert.equal(1, rc)
    assert.matches("syntax%.lua:1:", out)
  end)

  it("starts the embedded default cluster from nothing and reuses it", function()
    local home = dir .. "/home"
    T.write(dir .. "/who.lua", [[print("db", db:query("select current_database() as d")[1].d)]])
    local env = ("env -u PGSTORE_DSN -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE PGSTORE_HOME=%q "):format(home)
    local out, rc = T.sh(env .. T.host() .. " run " .. dir .. "/who.lua")
    assert.equal(0, rc, out)
    assert.matches("created the embedded cluster", out)
    assert.matches("db\tpgstore", out)
    local status = T.sh(env .. T.host() .. " dev status")
    local pid = status:match("pid (%d+)")
    assert.truthy(pid, status)
    out, rc = T.sh(env .. T.host() .. " run " .. dir .. "/who.lua")
    assert.equal(0, rc, out)
    assert.is_nil(out:find("created", 1, true))
    assert.is_nil(out:find("started", 1, true))
    assert.equal(pid, T.sh(env .. T.host() .. " dev status"):match("pid (%d+)"))
    out, rc = T.sh(env .. T.host() .. " dev stop")
    assert.equal(0, rc, out)
    local _, src = T.sh(env .. T.host() .. " dev status")
    assert.equal(1, src)
  end)
end)
