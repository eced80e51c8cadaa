-- SPDX-License-Identifier: MIT
-- db:listen and NOTIFY: delivery, timeouts, the channel set, transactions,
-- names and payloads refused before the server, the fd for event loops,
-- and recovery — a terminated backend, a restarted server, a backend gone
-- silent — each announced by the reconnect marker.
local core = require "pgstore.core"
local ffi = require "ffi"
local T = require "testenv"

pcall(ffi.cdef, [[
  struct pgs_spec_pollfd { int fd; short events; short revents; };
  int poll(struct pgs_spec_pollfd *fds, unsigned long nfds, int timeout);
]])

local function readable(fd, ms)
  local p = ffi.new("struct pgs_spec_pollfd[1]")
  p[0].fd, p[0].events = fd, 1 -- POLLIN
  return ffi.C.poll(p, 1, ms) == 1
end

-- Waits (bounded) for the next real notification, skipping markers.
local function next_payload(l, timeout)
  local deadline = core.now() + (timeout or 5)
  while core.now() < deadline do
    local n, err = l:wait(deadline - core.now())
    if not n then return nil, err end
    if n.channel ~= "*" then return n end
  end
  return nil, "nothing"
end

describe("db:listen", function()
  local db
  T.block_db(setup, teardown, function(d) db = d end)

  it("delivers a notification as { channel, payload, pid }", function()
    local l = assert(db:listen("spec_l1"))
    local other = T.connect()
    local pid = other:query("select pg_backend_pid() as p")[1].p
    assert(other:query("select pg_notify('spec_l1', 'hello')"))
    local n = assert(l:wait(5))
    assert.same({ channel = "spec_l1", payload = "hello", pid = pid }, n)
    other:close()
    l:close()
  end)

  it("times out with code 'timeout' after the given seconds", function()
    local l = assert(db:listen("spec_l2"))
    local t0 = core.now()
    local n, err = l:wait(0.3)
    local waited = core.now() - t0
    assert.is_nil(n)
    assert.equal("timeout", err.code)
    assert.truthy(waited >= 0.29 and waited < 1.5, "waited " .. waited)
    n, err = l:wait(0)
    assert.is_nil(n)
    assert.equal("timeout", err.code)
    l:close()
  end)

  it("listens to a list of channels, and add/remove change the set", function()
    local l = assert(db:listen({ "spec_a", "spec_b" }, { heartbeat = 5 }))
    assert.same({ "spec_a", "spec_b" }, l:channels())
    assert(db:notify("spec_b", "1"))
    assert(db:notify("spec_c", "not yet"))
    assert.equal("spec_b", assert(l:wait(5)).channel)
    assert(l:add("spec_c"))
    assert(l:add("spec_c")) -- twice is harmless
    assert(l:remove("spec_a"))
    assert(l:remove("spec_a"))
    assert(db:notify("spec_a", "gone"))
    assert(db:notify("spec_c", "now"))
    local n = assert(l:wait(5))
    assert.same({ "spec_c", "now" }, { n.channel, n.payload })
    local none, err = l:wait(0.2)
    assert.is_nil(none)
    assert.equal("timeout", err.code)
    assert.same({ "spec_b", "spec_c" }, (function(c) table.sort(c); return c end)(l:channels()))
    l:close()
  end)

  it("delivers tx:notify at commit, and never after a rollback", function()
    local l = assert(db:listen("spec_tx"))
    db:transaction(function(tx)
      assert(tx:notify("spec_tx", "rolled back"))
      return nil, "no"
    end)
    assert(db:transaction(function(tx)
      assert(tx:notify("spec_tx", "committed"))
      local n = l:wait(0.2)
      assert.is_nil(n) -- not before the commit
      return true
    end))
    local n = assert(l:wait(5))
    assert.equal("committed", n.payload)
    assert.is_nil(l:wait(0.1))
    l:close()
  end)

  it("rejects bad channel names with 'invalid', and keeps working", function()
    local bad = { "", 'with"quote', "semi;colon", "with space", ("x"):rep(64), "caf\xc3\xa9", "*",
                  "it's", "new\nline" }
    local l = assert(db:listen("spec_ok"))
    for _, name in ipairs(bad) do
      local l2, err = db:listen(name)
      assert.is_nil(l2, name)
      assert.equal("invalid", err.code, name)
      assert.matches("invalid channel name", err.message)
      local ok
      ok, err = l:add(name)
      assert.is_nil(ok)
      assert.equal("invalid", err.code)
      ok, err = db:notify(name, "x")
      assert.is_nil(ok)
      assert.equal("invalid", err.code)
      assert.is_nil(err.sqlstate) -- refused here, not by the server
    end
    assert(db:listen(("x"):rep(63))):close() -- the longest name that fits
    assert(db:notify("spec_ok", "still fine"))
    assert.equal("still fine", assert(l:wait(5)).payload)
    l:close()
  end)

  it("refuses payloads of 8000 bytes and more before the server; 7999 arrive intact", function()
    local l = assert(db:listen("spec_big"))
    local max = ("0123456789abcdef"):rep(500):sub(1, 7999)
    assert(db:notify("spec_big", max))
    local n = assert(l:wait(5))
    assert.equal(7999, #n.payload)
    assert.equal(max, n.payload)
    for _, size in ipairs({ 8000, 8001 }) do
      local ok, err = db:notify("spec_big", ("y"):rep(size))
      assert.is_nil(ok)
      assert.equal("invalid", err.code)
      assert.is_nil(err.sqlstate)
      assert.matches("limit of 7999 bytes", err.message)
    end
    local ok, err = db:notify("spec_big", "nul\0byte")
    assert.is_nil(ok)
    assert.equal("invalid", err.code)
    assert.is_nil(l:wait(0.2))
    assert(db:transaction(function(tx)
      local r, e = tx:notify("spec_big", ("y"):rep(8001))
      assert.equal("invalid", e.code)
      return not r
    end))
    l:close()
  end)

  it("has an fd that becomes readable when a notification is pending", function()
    local l = assert(db:listen("spec_fd", { heartbeat = 5 }))
    local fd = assert(l:fd())
    assert.is_false(readable(fd, 50))
    assert(db:notify("spec_fd", "wake"))
    assert.is_true(readable(fd, 5000))
    assert.equal("wake", assert(l:wait(0)).payload)
    local due = l:due()
    assert.truthy(due > 0 and due <= 5)
    l:close()
  end)

  it("reconnects after pg_terminate_backend: a marker, then later notifications", function()
    local l = assert(db:listen("spec_term", { reconnect_min = 0.05 }))
    local old = l:stats().pid
    assert(T.admin():query("select pg_terminate_backend($1)", old))
    local n = assert(l:wait(10))
    assert.same({ channel = "*", reconnected = true }, n)
    local s = l:stats()
    assert.equal(1, s.reconnects)
    assert.is_true(s.connected)
    assert.are_not.equal(old, s.pid)
    assert.equal("connection", s.last_error.code)
    assert.matches("terminating connection", s.last_error.message)
    assert(db:notify("spec_term", "after"))
    assert.equal("after", assert(next_payload(l)).payload)
    l:close()
  end)

  it("keeps what it received before the connection dropped, then the marker", function()
    local l = assert(db:listen("spec_keep"))
    assert(db:notify("spec_keep", "before"))
    core.sleep(0.2) -- delivered to the socket, not yet read
    assert(T.admin():query("select pg_terminate_backend($1)", l:stats().pid))
    local n = assert(l:wait(5))
    assert.equal("before", n.payload)
    assert.same({ channel = "*", reconnected = true }, assert(l:wait(10)))
    l:close()
  end)

  it("drops an unread queue beyond max_queue and says so", function()
    local l = assert(db:listen("spec_q", { max_queue = 3 }))
    assert(db:transaction(function(tx)
      for i = 1, 5 do assert(tx:notify("spec_q", tostring(i))) end
      return true
    end))
    core.sleep(0.2)
    local got, marker = {}, false
    while true do
      local n = l:wait(0.3)
      if not n then break end
      if n.channel == "*" then marker = marker or n.overflow else got[#got + 1] = n.payload end
    end
    assert.is_true(marker)
    assert.equal(5, #got + l:stats().dropped)
    assert.equal("5", got[#got])
    l:close()
  end)

  it("survives a server restart", function()
    local l = assert(db:listen("spec_restart", { reconnect_min = 0.05, reconnect_max = 0.5 }))
    T.admin():close()
    T.testdb("restart")
    local n = assert(l:wait(20))
    assert.is_true(n.reconnected)
    assert(db:notify("spec_restart", "back"))
    assert.equal("back", assert(next_payload(l)).payload)
    l:close()
  end)

  it("finds a backend gone silent with its heartbeat", function()
    local l = assert(db:listen("spec_hb", { heartbeat = 0.5, heartbeat_timeout = 0.5 }))
    local pid = l:stats().pid
    local _, rc = T.sh("kill -STOP " .. pid)
    if rc ~= 0 then
      l:close()
      pending("cannot signal the server's processes here")
      return
    end
    local t0 = core.now()
    local n, err = l:wait(6)
    local took = core.now() - t0
    T.sh("kill -CONT " .. pid)
    assert.is_nil(err)
    assert.is_true(n.reconnected)
    assert.truthy(took < 4, "took " .. took)
    assert.are_not.equal(pid, l:stats().pid)
    l:close()
  end)

  it("raises on misuse and on a closed listener", function()
    local l = assert(db:listen("spec_misuse"))
    assert.has_error(function() l:wait("soon") end)
    assert.equal("invalid", select(2, l:wait(-1)).code) -- a number out of range: nil, err
    assert.has_error(function() l:add(nil) end)
    assert.has_error(function() db:listen(42) end, "bad argument #1 to 'listen' (string or table expected, got number)")
    assert.has_error(function() db:listen({ "a", 1 }) end)
    assert.equal("invalid", select(2, db:listen("a", { heartbeat = -1 })).code)
    assert.has_error(function() db:listen("a", { nonsense = 1 }) end)
    assert.has_error(function() db:notify(1) end)
    assert.matches("^pgstore.listener %(", tostring(l))
    l:close()
    l:close() -- twice is harmless
    assert.equal("pgstore.listener (closed)", tostring(l))
    assert.has_error(function() l:wait(0) end, "attempt to use a closed listener")
  end)

  it("pgstore.open_listen owns its db and closes it with the listener", function()
    local pgstore = require "pgstore"
    local before = T.backends()
    local l = assert(pgstore.open_listen({ dsn = T.dsn(), application_name = "pgstore-spec" }, "spec_open"))
    assert(l.db:notify("spec_open", "x"))
    assert.equal("x", assert(l:wait(5)).payload)
    l:close()
    assert.truthy(T.eventually(function() return T.backends() == before end))
    assert.is_true(l.db == nil)
  end)

  it("uses a connection of its own and closes it", function()
    local before = T.backends()
    local l = assert(db:listen("spec_own"))
    assert.equal(before + 1, T.backends())
    l:close()
    assert.truthy(T.eventually(function() return T.backends() == before end))
    local l2 = assert(db:listen("spec_gc"))
    l2 = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    assert.truthy(T.eventually(function() return T.backends() == before end))
  end)
end)
