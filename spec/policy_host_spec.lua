-- SPDX-License-Identifier: MIT
-- `pgstore policy apply` through the real binary: the plan it prints, a dry
-- run that changes nothing, the run itself, progress only on a terminal,
-- and exit codes — 0 ok, 1 runtime failure (one line), 2 usage error.
local T = require "testenv"

local DAY = 86400

local function lines(s)
  local out = {}
  for l in s:gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

describe("pgstore policy apply", function()
  local dir, db, es, arch, policy_file
  local function host(args)
    return T.sh(("%s --dsn %q policy %s"):format(T.host(), T.dsn(), args))
  end

  setup(function()
    dir = T.tmpdir("polh")
    db = T.connect{ pool_size = 2 }
    es = assert(db:events{ table = "polh_spec", notify = false })
    arch = assert(db:events{ table = "polh_spec_archive", notify = false })
    policy_file = T.write(dir .. "/carts.lua", [[
      return {
        { name = "vip", streams = "cart-vip-*" },
        { name = "carts", streams = "cart-*", max_count = 4, archive_after = "90d" },
        { name = "old logs", streams = { "log-*", "trace-*" }, archive_after = "30d", archive_to = "polh_spec_archive" },
        { name = "audit", streams = "audit-*", max_age = "1d" },
      }
    ]])
  end)

  before_each(function()
    assert(es:truncate())
    assert(arch:truncate())
    local old = os.time() - 100 * DAY
    local function fill(stream, n, time)
      local evs = {}
      for i = 1, n do evs[i] = { type = "E", data = { i = i } } end
      assert(es:append(stream, evs, { time = time }))
    end
    fill("cart-1", 10, old)
    fill("cart-1", 1)               -- active again: not archived
    fill("cart-2", 10, old)
    fill("cart-3", 3, old)          -- nothing to remove, but idle
    fill("cart-vip-1", 20, old)     -- exempt
    fill("log-a", 2, old)
    fill("audit-1", 5)
  end)

  teardown(function()
    es:close()
    arch:close()
    db:close()
    T.sh("rm -rf " .. dir)
    T.assert_no_leaks()
  end)

  local function count(tbl)
    return db:query(("select count(*) as n from %s"):format(tbl or "polh_spec"))[1].n
  end

  local PLAN = {
    "policy 'vip' (streams cart-vip-*: no rules)",
    "  nothing to do",
    "policy 'carts' (streams cart-*: max_count 4, archive_after 90d)",
    "  cart-1: remove 7 events (versions <= 7 of 11)",
    "  cart-2: remove 6 events (versions <= 6 of 10), archive (last event %d+%-%d+%-%d+T[%d:]+%+00:00)",
    "  cart-3: archive (last event [^)]+)",
    "  3 streams: remove 13 events, archive 2 streams",
    "policy 'old logs' (streams log-*, trace-*: archive_after 30d, archive_to polh_spec_archive)",
    "  log-a: archive to polh_spec_archive (last event [^)]+)",
    "  1 stream: archive 1 stream",
    "policy 'audit' (streams audit-*: max_age 1d)",
    "  nothing to do",
    "total: remove 13 events, archive 3 streams",
  }

  it("prints the plan in a dry run and changes nothing", function()
    local before = count()
    local out, rc = host("apply " .. policy_file .. " --table polh_spec --dry-run")
    assert.equal(0, rc, out)
    local got = lines(out)
    -- literal lines, and the patterns where times vary
    for i, want in ipairs(PLAN) do
      if want:find("last event", 1, true) then
        local head = want:match("^(.-%(last event )")
        assert.equal(head, got[i]:sub(1, #head), out)
        assert.matches("%(last event %d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d[%.%d]*%+00:00%)$", got[i])
      else
        assert.equal(want, got[i], out)
      end
    end
    assert.equal("dry run: nothing was changed", got[#PLAN + 1])
    assert.equal(#PLAN + 1, #got)
    assert.equal(before, count())
    assert.equal("active", es:status("cart-2"))
  end)

  it("does what it planned, quietly when stderr is not a terminal", function()
    local errfile = dir .. "/stderr"
    local out, rc = T.sh(("%s --dsn %q policy apply %s --table polh_spec --batch 4 2>%s")
      :format(T.host(), T.dsn(), policy_file, errfile))
    assert.equal(0, rc, out .. T.read(errfile))
    local got = lines(out)
    assert.equal("total: remove 13 events, archive 3 streams", got[#got - 1])
    assert.equal("done: removed 13 events, archived 3 streams", got[#got])
    assert.equal("", T.read(errfile))
    assert.same({ 8, 9, 10, 11 }, (function()
      local v = {}
      for _, e in ipairs(assert(es:read("cart-1"))) do v[#v + 1] = e.version end
      return v
    end)())
    assert.equal(4, #assert(es:read("cart-2")))
    assert.equal(20, #assert(es:read("cart-vip-1")))
    assert.equal("active", es:status("cart-1"))
    assert.equal("archived", es:status("cart-2"))
    assert.equal("archived", es:status("cart-3"))
    assert.equal("archived", es:status("log-a"))
    assert.equal(2, #assert(arch:read("log-a")))
    assert.equal(5, #assert(es:read("audit-1")))
    -- a second run finds nothing to do
    out, rc = host("apply " .. policy_file .. " --table=polh_spec --summary")
    assert.equal(0, rc, out)
    assert.matches("total: remove 0 events, archive 0 streams\n$", out)
  end)

  it("shows progress on stderr when it is a terminal", function()
    local cmd = ("%s --dsn %q policy apply %s --table polh_spec --batch 3"):format(T.host(), T.dsn(), policy_file)
    -- `script` gives the host a terminal; a sanitizer preload is for the host only
    local preload = os.getenv("LD_PRELOAD")
    if preload then cmd = ("LD_PRELOAD=%q %s"):format(preload, cmd) end
    local out, rc = T.sh(("env -u LD_PRELOAD script -qec %q /dev/null"):format(cmd))
    assert.equal(0, rc, out)
    assert.matches("\rpgstore: removed 3 of 13 events, archived 0 of 3 streams", out, 1, true)
    assert.matches("\rpgstore: removed 13 of 13 events, archived 3 of 3 streams", out, 1, true)
    assert.matches("done: removed 13 events, archived 3 streams", out, 1, true)
  end)

  it("prints only totals with --summary", function()
    local out, rc = host("apply " .. policy_file .. " --table polh_spec --summary --dry-run")
    assert.equal(0, rc, out)
    assert.not_matches("cart%-1:", out)
    assert.matches("  3 streams: remove 13 events, archive 2 streams\n", out, 1, true)
  end)

  it("exits 2 on usage errors", function()
    local cases = {
      { "", "expected a subcommand: apply" },
      { "frobnicate", "unknown subcommand 'frobnicate'" },
      { "apply", "no policy file given" },
      { "apply " .. policy_file .. " --batch 0", "--batch must be a whole number" },
      { "apply " .. policy_file .. " --batch", "--batch needs a value" },
      { "apply " .. policy_file .. " --bogus", "unknown option '--bogus'" },
    }
    for _, c in ipairs(cases) do
      local out, rc = host(c[1])
      assert.equal(2, rc, c[1] .. ": " .. out)
      assert.matches(c[2], out, 1, true)
      assert.matches("usage: pgstore policy apply", out, 1, true)
    end
    local out, rc = host("apply --help")
    assert.equal(0, rc)
    assert.matches("--dry-run", out, 1, true)
    out = T.sh(T.host() .. " --help")
    assert.matches("\n  policy%s+%S", out)
  end)

  it("exits 1 with one line for broken policies, a missing table or no server", function()
    local bad = T.write(dir .. "/bad.lua", "return { streams = 'x-*', max_age = '30 days' }\n")
    local syntax = T.write(dir .. "/syntax.lua", "return {\n  streams = 'x-*',\n  max_count = undefined,\n}\n")
    local cases = {
      { "apply " .. dir .. "/missing.lua --table polh_spec", "missing%.lua" },
      { "apply " .. bad .. " --table polh_spec", "bad%.lua: field 'max_age': bad duration '30 days'" },
      { "apply " .. syntax .. " --table polh_spec", "syntax%.lua:3: unknown global 'undefined'" },
      { "apply " .. policy_file .. " --table polh_spec_nope", "polh_spec_nope.* does not exist" },
      { "apply " .. policy_file .. " --table 'bad name'", "invalid table name" },
    }
    for _, c in ipairs(cases) do
      local out, rc = host(c[1])
      assert.equal(1, rc, c[1] .. ": " .. out)
      assert.matches(c[2], out)
      assert.equal(1, #lines(out), out)
    end
    local out, rc = T.sh(("%s --dsn 'host=/nonexistent-pgstore-dir connect_timeout=2' policy apply %s --dry-run")
      :format(T.host(), policy_file))
    assert.equal(1, rc, out)
    assert.equal(1, #lines(out), out)
    assert.equal(51, count())
  end)
end)
