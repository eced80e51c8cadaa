-- SPDX-License-Identifier: MIT
-- pgstore.repl.history: where the file is, one entry per line with
-- multi-line chunks escaped, which entries are kept, trimming to the
-- newest entries once the file holds twice as many.
local history = require "pgstore.repl.history"
local T = require "testenv"

local function write(path, data, mode)
  local f = io.open(path, mode)
  if not f then return nil, "cannot open " .. path end
  f:write(data)
  f:close()
  return true
end

describe("repl history", function()
  local dir
  setup(function() dir = T.tmpdir("hist") end)
  teardown(function() T.sh("rm -rf " .. dir) end)

  it("encodes an entry on one line and back", function()
    for _, e in ipairs{ "x = 1", "function f()\n  return 1\nend", "a\\nb", "back\\", "cr\r", "\\\n\\" } do
      local line = history.encode(e)
      assert.is_nil(line:find("[\n\r]"))
      assert.equal(e, history.decode(line))
    end
  end)

  it("keeps entries that are not blank, not secret and not repeated", function()
    local CASES = {
      { "x = 1", nil, true }, { "x = 1", "x = 1", false }, { "x = 1", "y", true },
      { "", nil, false }, { "   ", nil, false }, { " db:query('secret')", nil, false },
    }
    for _, c in ipairs(CASES) do assert.equal(c[3], history.wanted(c[1], c[2]), c[1]) end
  end)

  it("finds its file from PGSTORE_HISTORY, XDG_DATA_HOME or HOME", function()
    local function path(env)
      local out = T.sh(("env -u PGSTORE_HISTORY -u XDG_DATA_HOME -u HOME %s luajit -e %q"):format(env,
        "package.path = 'lua/?.lua;' .. package.path; print(require('pgstore.repl.history').path())"))
      return (out:gsub("%s+$", ""))
    end
    assert.equal("/h/file", path("PGSTORE_HISTORY=/h/file XDG_DATA_HOME=/x HOME=/home/u"))
    assert.equal("nil", path("PGSTORE_HISTORY= HOME=/home/u"))
    assert.equal("/x/pgstore/history", path("XDG_DATA_HOME=/x HOME=/home/u"))
    assert.equal("/home/u/.local/share/pgstore/history", path("HOME=/home/u"))
  end)

  it("appends entries and loads the newest, oldest first", function()
    local path = dir .. "/a"
    for i = 1, 5 do assert(history.append(path, "e" .. i .. "\nline2", write)) end
    assert.same({ "e3\nline2", "e4\nline2", "e5\nline2" }, history.load(path, 3, write))
    assert.same({}, history.load(dir .. "/missing", 3, write))
  end)

  it("trims the file to the newest entries once it holds twice as many", function()
    local path = dir .. "/b"
    for i = 1, 7 do assert(history.append(path, "e" .. i, write)) end
    history.load(path, 4, write) -- 7 < 8: left alone
    assert.equal(7, select(2, T.sh("cat " .. path):gsub("\n", "")))
    assert(history.append(path, "e8", write))
    assert.same({ "e5", "e6", "e7", "e8" }, history.load(path, 4, write))
    assert.equal("e5\ne6\ne7\ne8\n", (T.sh("cat " .. path)))
    assert.equal("", (T.sh("ls " .. dir .. " | grep tmp")))
  end)
end)
