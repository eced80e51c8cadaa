-- SPDX-License-Identifier: MIT
-- Looking around from the REPL: es:streams (prefix, limit, paging), the
-- commands \stores, \streams, \events, \consumers, \parked and :table,
-- `pgstore repl --table`, and rows printed as a table on a terminal (tmux).
local T = require "testenv"
local tty = require "tty"

local function run(input, extra)
  local f = os.tmpname()
  local h = assert(io.open(f, "w"))
  h:write(input)
  h:close()
  local out, rc = T.sh(("%s --dsn %s repl %s <%s 2>&1"):format(T.host(), tty.quote(T.dsn()), extra or "", f))
  os.remove(f)
  return out, rc
end

describe("es:streams", function()
  local db, es, name
  setup(function()
    db = T.connect()
    name = T.unique("look")
    es = assert(db:events{ table = name })
    assert(es:append("ord-1", { { type = "A", data = {} }, { type = "B", data = {} } }))
    assert(es:append("ord_2", { { type = "A", data = {} } }))
    assert(es:append("ordx", { { type = "A", data = {} } }))
    assert(es:append("x", { { type = "A", data = {} } }))
  end)
  teardown(function()
    es:close()
    db:close()
  end)

  it("lists streams by prefix with versions and counts, a page at a time", function()
    local rows = assert(es:streams{ prefix = "ord" })
    local names = {}
    for i, r in ipairs(rows) do names[i] = r.stream end
    assert.same({ "ord-1", "ord_2", "ordx" }, names)
    assert.equal(2, rows[1].version)
    assert.equal(2, rows[1].count)
    assert.equal("active", rows[1].status)
    -- LIKE's wildcards are plain characters in the prefix
    rows = assert(es:streams{ prefix = "ord_" })
    assert.equal(1, #rows)
    assert.equal("ord_2", rows[1].stream)
    rows = assert(es:streams{ limit = 2, after = "ord_2" })
    assert.equal("ordx", rows[1].stream)
    assert.equal("x", rows[2].stream)
    assert.equal(4, #assert(es:streams()))
  end)

  it("refuses a bad limit and unknown options", function()
    local rows, err = es:streams{ limit = 0 }
    assert.is_nil(rows)
    assert.equal("invalid", err.code)
    assert.has_error(function() es:streams{ prefx = "o" } end)
  end)

  it("backs the REPL's commands", function()
    local out, rc = run(table.concat({ "\\stores", "\\streams ord", "\\events ord-1 1", "\\consumers", "\\parked",
      ":table " .. name .. "_nosuch", ":table", "" }, "\n"), "--table " .. name)
    assert.equal(1, rc, out) -- the missing store
    assert.matches("es%s+|%s+public%s+|%s+" .. name, out)
    assert.matches(" count | status | stream", out, 1, true)
    assert.matches(" 2 | active | ord%-1 +|[^\n]+|%s+2\n", out)
    assert.matches("(3 rows)", out, 1, true)
    assert.matches("{}%s+|%s+%d+%s+|[^\n]+| B%s+|%s+2\n%(1 row%)", out) -- the newest event only
    assert.matches("does not exist", out)
    assert.matches("\npublic%." .. name .. "\n$", out)
    local _, rc2 = run("1\n", "--table " .. name .. "_nosuch")
    assert.equal(1, rc2)
  end)

  it("shows consumers with their lag", function()
    local cp = assert(db:checkpoints{ store = es })
    assert(cp:save("reporter", 2))
    local out = run("\\consumers\n", "--table " .. name)
    assert.matches("reporter%s+|%s+3%s+|%s+2%s+|", out) -- consumer | lag | position | …
  end)
end)

describe("rows on a terminal", function()
  local s
  teardown(function()
    if s then s:close() end
    tty.stop()
    T.assert_no_leaks("pgstore")
  end)

  it("print as a table, and as Lua after :set format lua", function()
    s = tty.start(("%s --dsn %s repl"):format(T.host(), tty.quote(T.dsn())), { env = { PGSTORE_HISTORY = "" } })
    s:wait_for("pgstore> ", 15)
    s:send([[db:query("select g as n, repeat('w', g * 30) as wide from generate_series(1, 2) g")]]):keys("Enter")
    local screen = s:wait_for("(2 rows)")
    assert.matches(" n | +wide\n%-%-%-%+%-+\n 1 | w+\n 2 | w+…\n%(2 rows%)", screen)
    s:send(":set format lua"):keys("Enter")
    s:send([[db:query("select 1 as n")]]):keys("Enter")
    s:wait_for("{ { n = 1 } }")
    s:send(":quit"):keys("Enter")
    assert.equal(0, s:wait_exit())
  end)
end)
