-- SPDX-License-Identifier: MIT
-- Soak: one host process runs appends, stream reads, read_all, a
-- subscription with its listener, KV traffic, snapshots, plain queries and
-- short-lived stores and listeners for PGSTORE_SOAK_SECONDS (300 when
-- CI=true, else 60; 30 in the sanitizer pass, where RSS is not a measure:
-- LeakSanitizer checks the process at exit instead). Its resident memory
-- (VmRSS) is sampled every 10 s and must be flat after the warm-up.
local core = require "pgstore.core"
local T = require "testenv"

local function seconds()
  local env = tonumber(os.getenv("PGSTORE_SOAK_SECONDS") or "")
  if os.getenv("ASAN_OPTIONS") then return math.min(env or 30, 30) end
  return env or (os.getenv("CI") == "true" and 300 or 60)
end

local function rss_kb(pid)
  local f = io.open(("/proc/%d/status"):format(pid))
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+) kB"))
end

describe("soak", function()
  local db
  T.block_db(setup, teardown, function(d) db = d end)

  it("keeps the host's resident memory flat under mixed traffic", function()
    local duration = seconds()
    local sanitized = os.getenv("ASAN_OPTIONS") ~= nil
    local name = "soak_events"
    local es = assert(db:events{ table = name, notify = name })
    assert(es:truncate())
    local cp = assert(db:checkpoints{ store = es }) -- made here if no spec made it before
    assert(cp:delete("soak"))
    cp:close()
    local proc = T.spawn(([[
      local core = require "pgstore.core"
      io.stdout:setvbuf("line")
      local duration = tonumber(arg[1])
      local es = assert(db:events{ table = %q, notify = %q, migrate = false })
      local kv = assert(db:kv{ table = "soak_kv", cleanup_interval = 5 })
      local ss = assert(db:snapshots{ table = "soak_snapshots" })
      local sub = assert(db:subscribe{ name = "soak", events = es, batch = 200, poll = 0.2 })
      local payload = ("x"):rep(200)
      local blob = ("\0\1\2\255"):rep(256)
      local deadline = core.now() + duration
      local i, gen, delivered, appended = 0, 0, 0, 0
      while core.now() < deadline do
        i = i + 1
        local stream = ("g%%d-s%%d"):format(gen, i %% 50)
        assert(es:append(stream, { { type = "A", data = { i = i, s = payload } },
                                   { type = "B", data = { i = i }, metadata = { at = i } } }))
        appended = appended + 2
        assert(es:read(stream, { limit = 20, backward = true }))
        local rows = assert(sub:next(0))
        delivered = delivered + #rows
        if #rows > 0 then assert(sub:ack(rows[#rows].position)) end
        local key = "k" .. (i %% 500)
        assert(kv:set(key, blob, (i %% 3 == 0) and 0.5 or nil))
        kv:get(key)
        if i %% 7 == 0 then assert(kv:delete(key)) end
        if i %% 11 == 0 then assert(ss:save(stream, i, { i = i, s = payload })); assert(ss:load(stream)) end
        assert(db:query("select $1::int + 1 as n, $2::text as t, now() as at", i, payload))
        if i %% 200 == 0 then
          -- short-lived objects: each must give back everything it took
          local l = assert(db:listen("soak_tmp"))
          assert(db:notify("soak_tmp", "hi"))
          l:wait(0.5)
          l:close()
          local other = assert(db:kv{ table = "soak_kv", skip_schema_init = true, cleanup_interval = 0 })
          other:close()
          assert(db:transaction(function(tx) return tx:query("select 1 as one") end))
          assert(kv:delete_prefix("k1"))
        end
        if i %% 1000 == 0 then
          -- retire the previous generation of streams, so the table stays small
          for s = 0, 49 do es:delete(("g%%d-s%%d"):format(gen - 1, s)) end
          gen = gen + 1
        end
        core.sleep(0.005)
      end
      -- drain the subscription
      for _ = 1, 100 do
        local rows = assert(sub:next(0.2))
        if #rows == 0 then break end
        delivered = delivered + #rows
        assert(sub:ack(rows[#rows].position))
      end
      collectgarbage()
      print(("SOAK iterations %%d appended %%d delivered %%d lua_kb %%d"):format(i, appended, delivered,
        collectgarbage("count")))
      sub:close(); ss:close(); kv:close(); es:close()
    ]]):format(name, name), duration)

    local samples, t0 = {}, core.now()
    while T.alive(proc) and core.now() - t0 < duration + 30 do
      core.sleep(10 - (core.now() - t0) % 10)
      local kb = rss_kb(proc.pid)
      if kb then samples[#samples + 1] = kb end
    end
    local out, ended = T.wait(proc, 60)
    assert.is_true(ended, "the soak process did not end")
    local iters, appended, delivered, lua_kb = out:match("SOAK iterations (%d+) appended (%d+) delivered (%d+) lua_kb (%d+)")
    assert.truthy(iters, out)
    assert.is_nil(out:find("LeakSanitizer", 1, true), out)
    -- the subscription kept up through the whole run
    assert.equal(tonumber(appended), tonumber(delivered))
    assert.truthy(#samples >= 2, "too few RSS samples")
    -- Warm-up: the first fifth of the run (at least one sample).
    local warm = math.max(1, math.floor(#samples / 5))
    local base, peak = samples[warm], 0
    for k = warm, #samples do peak = math.max(peak, samples[k]) end
    local mb = {}
    for k, kb in ipairs(samples) do mb[k] = ("%.1f"):format(kb / 1024) end
    print(("\n  soak %ds%s: %s iterations (%s events appended and delivered, Lua heap %s KB at the end);"
      .. " VmRSS every 10 s (MB): %s; growth after warm-up %.1f MB")
      :format(duration, sanitized and " (sanitizer build: RSS not bounded)" or "", iters, appended,
        lua_kb, table.concat(mb, " "), (peak - base) / 1024))
    if not sanitized then
      assert.truthy(peak - base <= 8 * 1024,
        ("resident memory grew %.1f MB after warm-up"):format((peak - base) / 1024))
    end
    es:close()
  end)
end)
