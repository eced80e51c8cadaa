-- SPDX-License-Identifier: MIT
-- The script sandbox, attacked: scripts load as source text only (real
-- LuaJIT bytecode, plain and crafted to read stale stack slots, is refused
-- with a clear error instead of crashing the host); each script has its own
-- copy of `json`, so replacing its functions changes nothing for the host;
-- no pgstore metatable is reachable through getmetatable; the `tx` a
-- handler gets is a proxy that exposes no connection and cannot be changed;
-- and the table a projection script returns is copied when it loads, so
-- nothing the runner keeps or reads later is in the script's reach.
local pgstore = require "pgstore"
local T = require "testenv"

local function shq(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- `luajit -b` of a Lua source: the path of the bytecode file.
local function bytecode(dir, name, src)
  local from, to = T.write(dir .. "/" .. name .. ".src", src), dir .. "/" .. name
  local out, rc = T.sh(("luajit -b %s %s"):format(from, to))
  assert(rc == 0, out)
  return to
end

-- The projection that reads what earlier calls left on the Lua stack: its
-- `peek` is compiled, then the KNIL that clears its eight locals is
-- replaced by a MOV of slot 0 to itself, so it returns stale slots.
local PEEK = [[
local function peek() local a, b, c, d, e, f, g, h; return a, b, c, d, e, f, g, h end
return { name = "peek", handlers = { Peek = function(e, tx)
  local got = { peek() }
  for i = 1, 8 do if got[i] ~= nil then print("STALE", i, type(got[i]), tostring(got[i])) end end
end } }
]]
local KNIL_0_7, MOV_0_0 = "\44\0\7\0", "\18\0\0\0"

local function crafted(dir)
  local path = bytecode(dir, "peek.lua", PEEK)
  local code = T.read(path)
  local at = assert(code:find(KNIL_0_7, 1, true), "no KNIL 0 7 in the compiled peek")
  return T.write(path, code:sub(1, at - 1) .. MOV_0_0 .. code:sub(at + 4))
end

local function project(dir, file, global)
  return T.sh(("PGSTORE_DSN=%s %s %s project --once --rebuild --table sandbox_events %s/%s")
    :format(shq(T.dsn()), T.host(), global or "", dir, file))
end

describe("scripts load as text only", function()
  local dir
  setup(function()
    dir = T.tmpdir("sandbox")
    local db = T.connect()
    local es = assert(db:events{ table = "sandbox_events", notify = false })
    assert(es:truncate())
    assert(es:append("p", { { type = "Peek" }, { type = "Probe" }, { type = "Probe" } }))
    es:close()
    db:close()
  end)
  teardown(function() T.sh("rm -rf " .. dir) end)

  it("the host refuses a bytecode projection with a clear error and does not crash", function()
    bytecode(dir, "plain.lua", [[return { name = "plain", handlers = { Probe = function() end } }]])
    local out, rc = project(dir, "plain.lua")
    assert.equal(1, rc, out)
    assert.matches("plain%.lua: LuaJIT bytecode is refused; scripts load as source text", out)
  end)

  it("refuses bytecode crafted to read stale stack slots, also with --unsafe-scripts", function()
    local path = crafted(dir)
    -- it is real bytecode, and run by plain LuaJIT it does read stale slots
    local probe = assert(loadfile(path))().handlers.Peek
    local stale, print0 = {}, _G.print
    local function fill(...)
      local keep = { secret = true }
      return (function(...) return { ... } end)(keep, ...)
    end
    _G.print = function(_, i, kind) stale[#stale + 1] = kind end
    fill(1, 2, 3, 4, 5, 6, 7, 8)
    pcall(probe)
    _G.print = print0
    assert.truthy(#stale > 0, "the crafted peek read no stale slot")
    for _, global in ipairs{ "", "--unsafe-scripts" } do
      local out, rc = project(dir, "peek.lua", global)
      assert.equal(1, rc, out)
      assert.matches("LuaJIT bytecode is refused", out)
      assert.is_nil(out:find("STALE", 1, true), out)
    end
  end)

  it("policies and upcasters refuse bytecode files too", function()
    local pol = bytecode(dir, "policy.lua", [[return { streams = "x-*", guard = function() return true end }]])
    local up = bytecode(dir, "up.lua", [[return { type = "E", from = 1, to = 2, upcast = function(d) return d end }]])
    local ok, err = pcall(pgstore.policies, { pol })
    assert.is_false(ok)
    assert.matches("policy%.lua: LuaJIT bytecode is refused", err)
    ok, err = pcall(pgstore.upcasters, { up })
    assert.is_false(ok)
    assert.matches("up%.lua: LuaJIT bytecode is refused", err)
  end)

  it("the host's `run` refuses bytecode as well", function()
    local path = bytecode(dir, "run.lua", [[print("ran")]])
    local out, rc = T.sh(("PGSTORE_DSN=%s %s run %s"):format(shq(T.dsn()), T.host(), path))
    assert.equal(1, rc, out)
    assert.matches("LuaJIT bytecode is refused", out)
    assert.is_nil(out:find("ran\n", 1, true))
  end)
end)

describe("a script's modules are its own", function()
  local db, es, dir
  setup(function()
    dir = T.tmpdir("sandbox")
    db = T.connect()
    es = assert(db:events{ table = "sandbox_json", notify = false })
    assert(es:truncate())
  end)
  teardown(function()
    es:close()
    db:close()
    T.sh("rm -rf " .. dir)
    T.assert_no_leaks()
  end)

  -- Replaces json.encode so that the host's glob list for retention, were
  -- it encoded with this json, would make the policy govern every stream.
  local HIJACK = [[
local real = json.encode
json.encode = function(v)
  if type(v) == "table" and type(v[1]) == "table" and v[1].l then return '[{"l":"%","r":null,"x":false}]' end
  return real(v)
end
json.encode_sparse_array(true, 1, 1)
return { type = "Noted", from = 1, to = 2, upcast = function(d) return d end }
]]

  it("an upcaster replacing json.encode changes nothing for the host's retention run", function()
    local three = { { type = "Noted", data = { n = 1 } }, { type = "Noted", data = { n = 2 } }, { type = "Noted" } }
    assert(es:append("a-kept", three))
    assert(es:append("free-1", three))
    T.write(dir .. "/hijack.lua", HIJACK)
    T.write(dir .. "/policy.lua", [[return { streams = "*-kept", max_count = 1 }]])
    T.write(dir .. "/noop.lua", [[return { name = "sandbox_json", handlers = { Noted = function() end } }]])
    local out, rc = T.sh(("PGSTORE_DSN=%s %s project --once --table sandbox_json --upcasters %s/hijack.lua "
      .. "--policy %s/policy.lua %s/noop.lua"):format(shq(T.dsn()), T.host(), dir, dir, dir))
    assert.equal(0, rc, out)
    assert.equal(1, #assert(es:read("a-kept")), out) -- the policy did run
    assert.equal(3, #assert(es:read("free-1")), "a stream no policy governs lost events:\n" .. out)
  end)

  it("two scripts get two json tables, neither the host's", function()
    local script = require "pgstore.script"
    local src = [[return { json = json, string = string, null = null }]]
    local a = assert(script.load(T.write(dir .. "/a.lua", src)))
    local b = assert(script.load(T.write(dir .. "/b.lua", src)))
    assert(script.load(T.write(dir .. "/hijack.lua", HIJACK)))
    local cjson = require "cjson"
    assert.equal("[1]", cjson.encode({ 1 }))
    assert.equal("[1,null,null,null,5]", cjson.encode({ [1] = 1, [5] = 5 })) -- its settings too
    assert.are_not.equal(a.json, b.json)
    assert.are_not.equal(a.json, require "cjson")
    assert.are_not.equal(a.json.encode, require("cjson").encode)
    assert.equal(pgstore.null, a.json.null)
    assert.equal(pgstore.null, a.null)
    assert.are_not.equal(a.string, string)
  end)
end)

describe("pgstore's metatables are out of reach", function()
  local db
  T.block_db(setup, teardown, function(d) db = d end)

  -- Every kind of handle the Lua API gives out, C ones included.
  local function handles()
    local list = { db = db, pool = db.pool, policies = pgstore.policies{ { streams = "*", max_count = 5 } },
                   upcasters = pgstore.upcasters{}, aggregate = pgstore.aggregate{
                     events = db:events{ table = "sandbox_agg", notify = false }, initial = function() return {} end,
                     apply = { E = function(s) return s end } } }
    for _, kind in ipairs(db.KINDS) do
      local opts = ({ listen = "sandbox_ch", subscribe = { table = "sandbox_sub", consumer = "c" },
                      partitions = { name = "sandbox_pm", partitions = 2 } })[kind]
      if kind == "events" or kind == "relay" then opts = { table = "sandbox_ev", notify = false } end
      if kind == "relay" then opts = nil end
      local ok, h = pcall(db[kind], db, opts)
      if ok and h then list[kind] = h end
    end
    local _, err = db:query("select nope")
    list.error = err
    db:transaction(function(tx) list.tx = tx end)
    local conn = assert(db:acquire())
    list.conn = conn
    return list
  end

  it("getmetatable on any handle gives nothing useful, and the handles still work", function()
    local list = handles()
    local n = 0
    for name, h in pairs(list) do
      n = n + 1
      local m = getmetatable(h)
      assert.is_not_table(m, name)
      assert.is_not_userdata(m, name)
      if type(h) == "table" then
        assert.has_error(function() setmetatable(h, {}) end, "cannot change a protected metatable")
      end
    end
    assert.truthy(n >= 14, "only " .. n .. " handles")
    -- checks of `self` still tell a handle from a look-alike
    assert.has_error(function() list.events.append({}, "s", {}) end)
    assert.matches("pgstore.events", tostring(list.events))
    assert.equal("sql", list.error.code)
    assert.matches("nope", tostring(list.error))
    local pretty = require "pgstore.pretty"
    assert.matches("pgstore.events", pretty.format(list.events))
    list.conn:release()
    for name, h in pairs(list) do
      if name ~= "db" and name ~= "pool" and name ~= "conn" and name ~= "tx" and name ~= "error"
         and type(h) == "table" and type(h.close) == "function" then
        h:close()
      end
    end
    assert.same({ { one = 1 } }, db:query("select 1 as one"))
  end)

  it("a script's getmetatable gives nothing of a pgstore object, nor of strings", function()
    local script = require "pgstore.script"
    local dir = T.tmpdir("sandbox")
    local got = assert(script.load(T.write(dir .. "/mt.lua", [[
      return { peek = function(v) return getmetatable(v) end }
    ]])))
    T.sh("rm -rf " .. dir)
    local _, err = db:query("select nope")
    assert.is_falsy(got.peek(err))
    assert.is_falsy(got.peek(""))
    assert.is_falsy(got.peek(db))
    local own = setmetatable({}, { x = 1 })
    assert.equal(1, got.peek(own).x) -- a script's own metatables are its own
  end)
end)

describe("the tx a handler gets", function()
  local dir
  setup(function()
    dir = T.tmpdir("sandbox")
    local db = T.connect()
    local es = assert(db:events{ table = "sandbox_tx", notify = false })
    assert(es:truncate())
    assert(es:append("p", { { type = "Hook" }, { type = "Write" }, { type = "Write" } }))
    assert(db:exec("drop table if exists sandbox_tx_model"))
    es:close()
    db:close()
  end)
  teardown(function() T.sh("rm -rf " .. dir) end)

  local ATTACK = [=[
local function try(name, fn)
  local ok, res = pcall(fn)
  print(("ATTACK %s %s"):format(name, (ok and res ~= nil and res ~= false) and "reachable" or "blocked"))
end
local kept
return {
  name = "sandbox_tx",
  batch = 1,
  setup = "create table if not exists sandbox_tx_model (n int)",
  handlers = {
    Hook = function(e, tx)
      kept = tx
      local hook = function() print("HOOKED") return true end
      try("replace tx.exec", function() tx.exec = hook; return true end)
      try("rawset tx.exec", function() rawset(tx, "exec", hook); return true end)
      try("the metatable", function() return getmetatable(tx) end)
      try("the methods table", function() return getmetatable(tx).__index end)
      try("tx.conn", function() return tx.conn end)
      try("rawget tx.conn", function() return rawget(tx, "conn") end)
      try("pairs over tx", function() return next(tx) end)
      try("tx.commit", function() return tx.commit end)
      try("hook commit", function() tx.commit = hook; return true end)
      try("tx.lock", function() return tx.lock end)
      try("setfenv of a method", function() return setfenv(tx.exec, {}) end)
      try("the query function's env", function() return getfenv(tx.query) end)
    end,
    Write = function(e, tx)
      if e.version == 2 then
        try("the same tx in the next batch", function() return rawequal(kept, tx) end)
        try("a tx kept from an ended batch", function() return kept:query("select 1") end)
      end
      assert(tx:exec("insert into sandbox_tx_model (n) values ($1)", e.version))
    end,
  },
}
]=]

  it("exposes no connection, and its methods cannot be replaced or hooked", function()
    T.write(dir .. "/attack.lua", ATTACK)
    local out, rc = T.sh(("PGSTORE_DSN=%s %s project --once --rebuild --table sandbox_tx %s/attack.lua")
      :format(shq(T.dsn()), T.host(), dir))
    assert.equal(0, rc, out)
    local seen, n = {}, 0
    for name, what in out:gmatch("ATTACK ([^\n]-) (%S+)\n") do seen[name] = what; n = n + 1 end
    assert.equal(14, n, out)
    for name, what in pairs(seen) do assert.equal("blocked", what, name .. ":\n" .. out) end
    assert.is_nil(out:find("HOOKED", 1, true), out)
    local db = T.connect()
    assert.same({ { n = 2 }, { n = 3 } }, db:query("select n from sandbox_tx_model order by n"))
    db:close()
  end)
end)

describe("a projection script's own table", function()
  local db, es, dir
  setup(function()
    dir = T.tmpdir("sandbox")
    db = T.connect()
    es = assert(db:events{ table = "sandbox_own", notify = false })
    assert(es:truncate())
    assert(es:append("p", { { type = "Ping", data = { n = 1 } }, { type = "Ping", data = { n = 2 } },
                            { type = "Ping", data = { n = 3 } } }))
    assert(db:exec("drop table if exists sandbox_escaped, sandbox_trust_model"))
  end)
  teardown(function()
    assert(db:exec("drop table if exists sandbox_escaped, sandbox_trust_model"))
    es:close()
    db:close()
    T.sh("rm -rf " .. dir)
    T.assert_no_leaks()
  end)

  local function run(file, src)
    T.write(dir .. "/" .. file, src)
    return T.sh(("PGSTORE_DSN=%s %s project --once --rebuild --table sandbox_own %s/%s")
      :format(shq(T.dsn()), T.host(), dir, file))
  end

  -- Each try prints "ESCAPE <what> reachable|blocked"; whatever is reachable
  -- is also used the way an attacker would.
  local TRY = [=[
local function try(name, fn)
  local ok, res = pcall(fn)
  local got = ok and res ~= nil and res ~= false
  print(("ESCAPE %s %s"):format(name, got and "reachable" or "blocked"))
  return got and res or nil
end
]=]

  local function outcomes(out)
    local seen, n = {}, 0
    for name, what in out:gmatch("ESCAPE ([^\n]-) (%S+)\n") do
      seen[name] = what
      n = n + 1
    end
    return seen, n
  end

  -- A partitioned projection reads what the runner stored in its table.
  local HOST_HANDLES = TRY .. [=[
local def
def = {
  name = "sandbox_escape", partitioned = true, partitions = 1, batch = 1,
  handlers = {
    Ping = function(e, tx)
      if e.data.n ~= 1 then
        try("a codec changed by an earlier event", function() return e.data.hijacked end)
        return
      end
      try("the lease handle", function() return def.pm.core end)
      local db = try("the host's db", function() return def.pm.db end)
      if db then
        try("a query as the host", function() return db:exec("create table sandbox_escaped (n int)") end)
        try("the DSN", function() return db._dsn(db) end)
        try("a raw connection", function() local c = db.pool:acquire(); c:release(); return c end)
        try("the default codec", function()
          local es = db:events{ table = "sandbox_own", notify = false }
          es.codec.decode = function() return { hijacked = true } end
          return true
        end)
        try("the host's pool", function()
          db.pool = setmetatable({}, { __index = function() error("HIJACKED POOL") end })
          return true
        end)
      end
    end,
  },
}
return def
]=]

  it("a partitioned projection finds no host handle in it", function()
    local out, rc = run("escape.lua", HOST_HANDLES)
    assert.equal(0, rc, out)
    local seen, n = outcomes(out)
    assert.truthy(n >= 3, out)
    for name, what in pairs(seen) do assert.equal("blocked", what, name .. ":\n" .. out) end
    assert.is_nil(out:find("HIJACKED", 1, true), out)
    assert.matches("projected 3 events", out)
    assert.same({}, assert(db:query("select 1 from pg_class where relname = 'sandbox_escaped'")))
    local cp = assert(db:checkpoints{ store = es })
    assert.equal(es:latest_position(), cp:load("projection:sandbox_escape:0"))
    cp:close()
  end)

  -- A projection writes the fields the runner trusts: a lease manager whose
  -- guard gets the batch's transaction, a handler swapped, a count inflated.
  local TRUSTED_FIELDS = [=[
local def
def = {
  name = "sandbox_trust", batch = 1,
  setup = "create table if not exists sandbox_trust_model (n int)",
  handlers = {
    Ping = function(e, tx)
      assert(tx:exec("insert into sandbox_trust_model (n) values ($1)", e.data.n))
      if e.data.n == 1 then
        def.pm = {
          renew = 1, tick = function() end, owned = function() return { [0] = 1 } end,
          token = function() return 1 end, partition_for = function() return 0 end,
          guard = function(_, htx)
            print("GUARD GOT " .. tostring(htx) .. " " .. tostring(rawget(htx, "conn")))
            return true
          end,
        }
        def.next_tick, def.retired, def.on_error, def.batch = 0, 1000000, "skip", 1000
        def.handlers.Ping = function() print("SWAPPED HANDLER") end
      end
    end,
  },
}
return def
]=]

  it("the runner reads nothing a handler can write", function()
    local out, rc = run("trust.lua", TRUSTED_FIELDS)
    assert.equal(0, rc, out)
    assert.is_nil(out:find("GUARD GOT", 1, true), out)
    assert.is_nil(out:find("SWAPPED HANDLER", 1, true), out)
    assert.matches("projected 3 events", out)
    assert.same({ { n = 1 }, { n = 2 }, { n = 3 } }, db:query("select n from sandbox_trust_model order by n"))
  end)

  it("loading makes the runner's own copy; the script's table is never read again", function()
    local projection = require "pgstore.projection"
    local path = T.write(dir .. "/copy.lua", [[
local def
def = { name = "copy", types = { "Ping" }, handlers = { Ping = function() end, Own = function() return def end } }
return def
]])
    local def = assert(projection.load(path))
    local own = def.handlers.Own()
    assert.are_not.equal(own, def)
    assert.are_not.equal(own.handlers, def.handlers)
    assert.are_not.equal(own.types, def.types)
    assert.equal(own.handlers.Ping, def.handlers.Ping)
    own.handlers.Ping, own.name, own.types[2] = print, "other", "Own"
    assert.are_not.equal(print, def.handlers.Ping)
    assert.equal("copy", def.name)
    assert.same({ "Ping" }, def.types)
    assert.is_nil(own.batch) -- the defaults went into the copy, not into the script's table
    -- fields are read once and raw: an __index that answers differently each time is not asked
    T.write(path, [[
local asked = 0
return setmetatable({ name = "copy", handlers = { Ping = function() end } }, { __index = function(_, k)
  asked = asked + 1
  if k == "batch" then return asked == 1 and 10 or -1 end
end })
]])
    def = assert(projection.load(path))
    assert.equal(500, def.batch)
  end)

  it("no store shares its codec: changing one store's changes no other's", function()
    local a = assert(db:events{ table = "sandbox_own", notify = false })
    local b = assert(db:events{ table = "sandbox_own", notify = false })
    assert.are_not.equal(a.codec, b.codec)
    a.codec.decode = function() return { hijacked = true } end
    a.codec.encode = function() return '{"hijacked":true}' end
    local c = assert(db:events{ table = "sandbox_own", notify = false })
    for _, s in ipairs{ b, c } do
      local evs = assert(s:read("p"))
      assert.equal(1, evs[1].data.n)
      assert.is_nil(evs[1].data.hijacked)
    end
    local raw1 = assert(db:events{ table = "sandbox_own", notify = false, codec = "raw" })
    local raw2 = assert(db:events{ table = "sandbox_own", notify = false, codec = "raw" })
    assert.are_not.equal(raw1.codec, raw2.codec)
    for _, s in ipairs{ a, b, c, raw1, raw2 } do s:close() end
  end)

  it("an aggregate keeps its own copy of the apply handlers", function()
    local pgstore = require "pgstore"
    local apply = { Ping = function(s, e) s.n = s.n + e.data.n; return s end }
    local agg = pgstore.aggregate{ events = es, initial = function() return { n = 0 } end, apply = apply }
    apply.Ping = function() error("swapped") end
    local state = assert(agg:load("p"))
    assert.equal(6, state.n)
  end)

  it("bytecode behind a byte-order mark or a #! line is refused, naming the file", function()
    local plain = bytecode(dir, "plain.lua", [[return { name = "plain", handlers = { Ping = function() end } }]])
    local code = T.read(plain)
    for name, head in pairs{ ["bom.lua"] = "\239\187\191", ["shebang.lua"] = "#!/usr/bin/env luajit\n",
                             ["both.lua"] = "\239\187\191#!x\r\n" } do
      T.write(dir .. "/" .. name, head .. code)
      local out, rc = T.sh(("PGSTORE_DSN=%s %s project --once --table sandbox_own %s/%s")
        :format(shq(T.dsn()), T.host(), dir, name))
      assert.equal(1, rc, out)
      assert.matches(name:gsub("%.", "%%.") .. ": LuaJIT bytecode is refused", out)
      local ok, err = pcall(pgstore.policies, { dir .. "/" .. name })
      assert.is_false(ok)
      assert.matches(name:gsub("%.", "%%.") .. ": LuaJIT bytecode is refused", err)
    end
  end)
end)

-- A failing handler and the event it was given: what it raised (any
-- bytes) is parked as text the server takes, the event parked or skipped
-- is the stored one whatever the handler wrote into its table, and no
-- statement of a handler ends or splits the batch's transaction.
describe("a failing handler and its event", function()
  local db, es, dir
  local TABLE = "sandbox_fail"
  setup(function()
    dir = T.tmpdir("sandbox")
    db = T.connect()
    es = assert(db:events{ table = TABLE, notify = false })
    assert(db:exec("drop table if exists sandbox_fail_model"))
  end)
  before_each(function() assert(es:truncate()) end)
  teardown(function()
    assert(db:exec("drop table if exists sandbox_fail_model"))
    es:close()
    db:close()
    T.sh("rm -rf " .. dir)
    T.assert_no_leaks()
  end)

  local function run(name, src)
    T.write(dir .. "/" .. name .. ".lua", src)
    return T.sh(("PGSTORE_DSN=%s %s project --once --rebuild --table %s %s/%s.lua")
      :format(shq(T.dsn()), T.host(), TABLE, dir, name))
  end

  local function parked(name)
    return assert(db:query([[select position, stream, type, error, traceback, event::text as event
      from pgstore_parked where projection = $1 order by position]], name))
  end

  local function checkpoint(name)
    local cp = assert(db:checkpoints{ store = es })
    local at = cp:load("projection:" .. name)
    cp:close()
    return at
  end

  it("parks what a handler raised in bytes that are not UTF-8, and the stored event", function()
    assert(es:append("o-1", { { type = "OrderPlaced", data = { sku = "éclair" } },
                              { type = "Raw", data = { k = "v" } }, { type = "Wrote", data = { k = "v" } } }))
    local out, rc = run("orders", [[return { name = "orders", on_error = "park", handlers = {
      OrderPlaced = function(e, tx) if #e.data.sku ~= 4 then error(("bad sku %.1s…"):format(e.data.sku)) end end,
      Raw = function() error("\255\0") end,
      Wrote = function(e) e.data.k = "\255"; e.data.extra = true; e.type = "Forged"; error("wrote") end,
    } }]])
    assert.equal(0, rc, out)
    local rows = parked("orders")
    assert.equal(3, #rows, out)
    assert.matches("bad sku \\xC3…", rows[1].error, 1, true)
    assert.matches("\\xFF\\x00", rows[2].error, 1, true)
    assert.truthy(#rows[1].traceback > 0)
    local cjson = require "cjson"
    assert.same({ sku = "éclair" }, cjson.decode(rows[1].event).data)
    assert.equal("Wrote", rows[3].type)
    assert.same({ k = "v" }, cjson.decode(rows[3].event).data)
    assert.equal("Wrote", cjson.decode(rows[3].event).type)
    assert.equal(es:latest_position(), checkpoint("orders"))
  end)

  it("parks an event an upcaster made unencodable by its id, with the error", function()
    assert(es:append("u-1", { { type = "U", data = { k = "v" } } }))
    T.write(dir .. "/up.lua", [[return { type = "U", from = 1, to = 2,
      upcast = function(d) d.k = "\255"; return d end }]])
    T.write(dir .. "/upped.lua", [[return { name = "upped", on_error = "park", handlers = {
      U = function(e) error("upped " .. e.data.k) end } }]])
    local out, rc = T.sh(("PGSTORE_DSN=%s %s project --once --rebuild --table %s --upcasters %s/up.lua %s/upped.lua")
      :format(shq(T.dsn()), T.host(), TABLE, dir, dir))
    assert.equal(0, rc, out)
    local rows = parked("upped")
    assert.equal(1, #rows, out)
    assert.matches("upped \\xFF", rows[1].error, 1, true)
    local event = require("cjson").decode(rows[1].event)
    assert.is_true(event.unencodable)
    assert.equal(rows[1].position, event.position)
    assert.equal(es:latest_position(), checkpoint("upped"))
  end)

  it("skips and parks the stored events whatever the handler wrote into its table", function()
    assert(es:append("t-1", { { type = "T" }, { type = "T" } }))
    local first = assert(es:read("t-1"))[1].position
    local out, rc = run("retype", [[return { name = "retype", on_error = "skip", handlers = {
      T = function(e, tx) e.type = "Nope"; error("boom") end } }]])
    assert.equal(0, rc, out)
    assert.matches("skipped T at position " .. first, out, 1, true)
    assert.matches("skipped T at position " .. (first + 1), out, 1, true)
    out, rc = run("forge", [[return { name = "forge", on_error = "park", handlers = {
      T = function(e, tx) e.position = 424242; e.stream = "forged"; e.type = "Nope"; error("boom") end } }]])
    assert.equal(0, rc, out)
    local rows = parked("forge")
    assert.equal(2, #rows, out)
    for i, row in ipairs(rows) do
      assert.equal(first + i - 1, row.position)
      assert.equal("t-1", row.stream)
      assert.equal("T", row.type)
    end
  end)

  it("gives each handler call a fresh copy of the event", function()
    assert(es:append("c-1", { { type = "C", data = { n = 1, deep = { x = 1 } } } }))
    local out, rc = run("copies", [[
local calls = 0
return { name = "copies", on_error = "skip", handlers = { C = function(e, tx)
  calls = calls + 1
  print("SAW " .. calls .. " " .. tostring(e.data.deep.x) .. " " .. tostring(e.data.extra))
  e.data.deep.x, e.data.extra = 99, true
  error("again")
end } }]])
    assert.equal(0, rc, out)
    assert.matches("SAW 1 1 nil", out, 1, true)
    assert.matches("SAW 2 1 nil", out, 1, true)
  end)

  it("refuses every statement that ends or splits the batch's transaction", function()
    assert(es:append("x-1", { { type = "X" } }))
    local out, rc = run("control", [==[
local tries = {
  "commit", "  COMMIT", "rollback", "end", "abort", "begin", "start transaction", "savepoint s",
  "release s", "release savepoint s", "rollback to s", "prepare transaction 'p'", "commit prepared 'p'",
  "/* a /* nested */ comment */ commit", "-- a line\n  Commit work", "select 1; commit",
  "select 'a;b'; /* x */ end", "select $q$ ; $q$; commit", "select 'a\\' , 'b ; commit ; --'",
  "select e'\\''; commit", 'select ";" ; rollback', "PREPARE /* c */ transaction 'p'", "select 1 ;; Abort",
}
return { name = "control", setup = "create table if not exists sandbox_fail_model (n int)",
  handlers = { X = function(e, tx)
    assert(tx:exec("insert into sandbox_fail_model (n) values (1)"))
    for _, sql in ipairs(tries) do
      local ok, err = tx:exec(sql)
      print(("CONTROL %s %s"):format(ok and "ran" or err.code, sql:gsub("\n", " ")))
      ok, err = tx:query(sql)
      print(("CONTROL %s %s"):format(ok and "ran" or err.code, sql:gsub("\n", " ")))
    end
    assert(tx:query("select 'commit' as w, $1::text as p", "rollback"))
    assert(tx:exec("prepare sandbox_p as select 1"))
    local ok, err = tx:exec("do $$ begin commit; end $$")
    print("DO " .. tostring(ok) .. " " .. tostring(err and err.code))
    error("stop here")
  end } }]==])
    assert.equal(1, rc, out)
    local n = 0
    for what in out:gmatch("CONTROL (%S+)") do
      n = n + 1
      assert.equal("invalid", what, out)
    end
    assert.equal(46, n, out)
    assert.matches("DO nil sql", out, 1, true)
    assert.matches("stop here", out, 1, true)
    -- the handler's insert rolled back with its batch; the checkpoint stands
    -- just before the failing event (nothing before it to apply)
    assert.same({}, assert(db:query("select n from sandbox_fail_model")))
    assert.equal(es:latest_position() - 1, checkpoint("control"))
  end)
end)
