-- SPDX-License-Identifier: MIT
-- Name rules and limits come from the core (lua/binding/l_names.c over
-- core/ident.c and core/notify.c): core.limits, core.check_table,
-- core.check_channel, core.check_notify. Every Lua entry point that takes
-- a channel, a table name or a payload gives the same verdict, with the
-- same message, as the core's check — nothing restates the rules.
local core = require "pgstore.core"
local listen = require "pgstore.listen"
local relay = require "pgstore.relay"
local locks = require "pgstore.locks"
local T = require "testenv"

local CHANNELS = {
  "ok", "a.b:c-d_e", ("c"):rep(63), ("c"):rep(64), "", 'ch"an', "ch;an", "ch an", "chän", "ch\0an",
}
local TABLES = {
  "names_t", "app.names_t", ("t"):rep(50), ("t"):rep(63), ("t"):rep(64), "", "1t", 't"x', "a.b.c", "t x",
  "tablé", "t\0x", "a$fn$b", "x$fn$",
}

-- The verdict of a call that returns value | nil, err: true, or the message.
-- A NUL byte is caught where a Lua string becomes a C string, before the
-- core's rules, each entry point naming its argument: only "refused" counts.
-- A store opened without migrations over tables that do not exist has
-- accepted the name: it says `not_found`, naming the table.
local function verdict(res, err)
  if res then return true end
  assert.is_table(err)
  if err.code == "not_found" then return true end
  assert.equal("invalid", err.code)
  if err.message:find("NUL byte", 1, true) then return "refused: a NUL byte" end
  return err.message
end

describe("names and limits", function()
  local db
  setup(function() db = T.connect() end)
  teardown(function()
    db:close()
    T.assert_no_leaks()
  end)

  it("exports the core's limits, and the Lua modules use them", function()
    assert.same({ name = 63, channel = 63, notify_payload = 7999, event_size = 1024 * 1024, lock_key = 512,
      seconds = 2147483, time = 9.2e12, batches = 1000 }, core.limits)
    assert.equal(core.limits.channel, listen.CHANNEL_MAX)
    assert.equal(core.limits.notify_payload, listen.PAYLOAD_MAX)
    assert.equal(core.limits.notify_payload, relay.PAYLOAD_MAX)
    assert.equal(core.limits.lock_key, locks.KEY_MAX)
  end)

  it("gives one verdict on a channel name wherever a channel is named", function()
    for _, ch in ipairs(CHANNELS) do
      local want = verdict(core.check_channel(ch))
      local label = ("%q"):format(ch)
      assert.equal(want, verdict(db:notify(ch, "x")), label)
      assert.equal(want, verdict(db:transaction(function(tx) return tx:notify(ch, "x") end)), label)
      local l, lerr = db:listen(ch)
      assert.equal(want, verdict(l, lerr), label)
      if l then l:close() end
      local es, eerr = db:events{ table = "names_events", notify = ch, migrate = false }
      assert.equal(want, verdict(es, eerr), label)
      if es then es:close() end
      local r, rerr = db:relay(ch)
      assert.equal(want, verdict(r, rerr), label)
      if r then r:close() end
    end
  end)

  it("refuses payloads at the core's limit, the same way everywhere", function()
    local max = core.limits.notify_payload
    assert.is_true(core.check_notify("ok", ("p"):rep(max)))
    assert.is_true(db:notify("ok", ("p"):rep(max)))
    for _, p in ipairs{ ("p"):rep(max + 1), "a\0b" } do
      local want = verdict(core.check_notify("ok", p))
      assert.equal(want, verdict(db:notify("ok", p)))
      local l = assert(db:listen("ok"))
      assert.equal(want, verdict(l:notify("ok", p)))
      l:close()
    end
    -- A relay sends larger changes through its table, up to max_change.
    local r = assert(db:relay("names_relay", { max_change = max }))
    local _, err = r:broadcast{ blob = ("x"):rep(max) }
    assert.matches("over the relay's max_change of " .. max .. " bytes", err.message)
    r:close()
  end)

  it("gives one verdict on a table name, suffixes counted", function()
    for _, name in ipairs(TABLES) do
      local want = verdict(core.check_table(name))
      local label = ("%q"):format(name)
      for _, kind in ipairs{ "snapshots", "checkpoints", "sessions" } do
        local s, err = db[kind](db, { table = name, skip_schema_init = true })
        assert.equal(want, verdict(s, err), kind .. " " .. label)
        if s then s:close() end
      end
      -- The event store derives <table>_heads and more: the core counts the
      -- suffix into the 63 bytes.
      local ewant = want == true and verdict(core.check_table(name, "_heads")) or want
      local es, eerr = db:events{ table = name, notify = false, migrate = false }
      if ewant == true and not es then ewant = verdict(core.check_table(name, "_position_seq")) end
      assert.equal(ewant, verdict(es, eerr), "events " .. label)
      if es then es:close() end
    end
    assert.is_true(core.check_table(("t"):rep(63)))
    assert.matches("longer than 63 bytes", select(2, core.check_table(("t"):rep(63), "_heads")).message)
    assert.equal(core.quote_ident("app.t"), '"app"."t"')
  end)

  it("refuses $ in a table name: the schema files dollar-quote function bodies", function()
    for _, name in ipairs{ "a$fn$b", "x$fn$", "ok$name", "s$.t" } do
      local ok, err = core.check_table(name)
      assert.is_nil(ok)
      assert.equal("invalid", err.code)
      for label, open in pairs{
        events = function() return db:events{ table = name, notify = false } end,
        kv = function() return db:kv{ table = name, cleanup_interval = 0 } end,
        partitions = function() return db:partitions{ name = "p", table = name } end,
        snapshots = function() return db:snapshots{ table = name } end,
        lock = function() return db:lock("k", { mode = "table", table = name }) end,
      } do
        local s, e = open()
        assert.is_nil(s, label)
        assert.equal(err.message, e and e.message, label .. " " .. name)
      end
    end
  end)

  it("raises for a name that is not a string", function()
    assert.has_error(function() core.check_channel(42) end)
    assert.has_error(function() core.check_table({}) end)
  end)
end)
