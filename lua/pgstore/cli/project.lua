-- SPDX-License-Identifier: MIT
-- `pgstore project FILE.lua… [--once] [--rebuild] [--from start|end]` — runs
-- projections: setup, catch up from the checkpoint, then follow live. One
-- transaction per batch holds the read-model writes and the checkpoint.
-- SIGINT/SIGTERM finish the batch in flight, commit and exit 0. Progress
-- goes to stderr when it is a terminal.
local projection = require "pgstore.projection"
local sys = require "pgstore.sys"

local _M = {
  usage = "pgstore project FILE.lua... [--once] [--rebuild] [--from start|end] [--table EVENTS]"
    .. " [--upcasters FILE] [--policy FILE [--policy-every SECONDS] [--idempotency-ttl SECONDS]]",
  summary = "run projections: catch up, then follow live",
}

function _M.main(host, args)
  local files, opts = {}, { from = "start" }
  local i = 1
  while args[i] do
    local a = args[i]
    if a == "--once" then opts.once = true
    elseif a == "--rebuild" then opts.rebuild = true
    elseif a == "--from" then
      opts.from = args[i + 1]
      if opts.from ~= "start" and opts.from ~= "end" then
        return host.usage_error("project: --from takes start or end", _M.usage)
      end
      i = i + 1
    elseif a == "--table" then
      opts.table = args[i + 1]
      i = i + 1
    elseif a == "--lease" or a == "--renew" or a == "--policy-every" or a == "--idempotency-ttl" then
      -- seconds: a finite number, positive (0 for the TTL: keep forever)
      local n = tonumber(args[i + 1])
      local least = a == "--idempotency-ttl" and 0 or 1e-3
      if not n or n ~= n or n == math.huge or n < least then
        return host.usage_error(("project: %s takes a number of seconds%s, got %s"):format(a,
          least == 0 and " (0 or more)" or " (more than 0)", tostring(args[i + 1])), _M.usage)
      end
      opts[a:sub(3):gsub("%-", "_")] = n
      i = i + 1
    elseif a == "--upcasters" or a == "--policy" then
      local key = a:sub(3)
      opts[key] = opts[key] or {}
      if not args[i + 1] then return host.usage_error("project: " .. a .. " needs a file", _M.usage) end
      table.insert(opts[key], args[i + 1])
      i = i + 1
    elseif a:sub(1, 2) == "--" then
      return host.usage_error("project: unknown option " .. a, _M.usage)
    else
      files[#files + 1] = a
    end
    i = i + 1
  end
  if #files == 0 then return host.usage_error("project: no projection file given", _M.usage) end
  local defs = {}
  for _, f in ipairs(files) do
    local def, err = projection.load(f, host.unsafe_scripts)
    if not def then return host.fail(err) end
    defs[#defs + 1] = def
  end
  local db, err = host.connect{ pool_size = 2 }
  if not db then return host.fail(err) end
  local es
  host.warn_if_superuser(db)
  es, err = db:events{ table = opts.table, idempotency_ttl = opts.idempotency_ttl, migrate = host.migrate }
  if not es then return host.fail(err) end
  -- Upcasters: handlers see every event in its newest shape. Policies:
  -- retention and archiving applied every --policy-every seconds.
  local pgstore = require "pgstore"
  local ok, loaded = pcall(function()
    if opts.upcasters then es:upcast(pgstore.upcasters(opts.upcasters)) end
    return opts.policy and pgstore.policies(opts.policy) or nil
  end)
  if not ok then
    es:close()
    db:close()
    return host.fail(loaded)
  end
  local policies, next_policy_run = loaded, 0
  sys.trap_signals()
  local runner
  runner, err = projection.runner(db, defs, {
    events = es, rebuild = opts.rebuild, from = opts.from, once = opts.once,
    lease = opts.lease, renew = opts.renew, owner = host.owner(),
    progress = sys.isatty(2), say = host.say, migrate = host.migrate,
  })
  if not runner then
    es:close()
    db:close()
    return host.fail(err)
  end
  local res
  local every = opts.policy_every or 3600
  res, err = runner:run(function()
    if policies and require("pgstore.core").now() >= next_policy_run then
      next_policy_run = require("pgstore.core").now() + every
      local summary, perr = policies:apply(es)
      if summary then
        if summary.removed > 0 or summary.archived > 0 or summary.keys_removed > 0 then
          host.say(("policies: removed %d events, archived %d streams, expired %d idempotency keys")
            :format(summary.removed, summary.archived, summary.keys_removed))
        end
      else
        host.say("policies: " .. tostring(perr))
      end
    end
    return sys.interrupted()
  end)
  runner:close()
  es:close()
  db:close()
  if not res then return host.fail(err) end
  host.say(("projected %d events in %.2fs (%.0f events/s)"):format(res.events, res.seconds,
    res.events / math.max(res.seconds, 1e-6)))
  return 0
end

return _M
