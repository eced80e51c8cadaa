-- SPDX-License-Identifier: MIT
-- `pgstore project FILE.lua… [--once] [--rebuild] [--from start|end]` — runs
-- projections: setup, catch up from the checkpoint, then follow live. One
-- transaction per batch holds the read-model writes and the checkpoint.
-- SIGINT/SIGTERM finish the batch in flight, commit and exit 0. A lost
-- connection (a restart, a failover) is waited out with backoff, said once
-- when lost and once when back, and the projections go on from their
-- checkpoints (pgstore.outage). Progress goes to stderr when it is a terminal.
local args = require "pgstore.cli.args"
local projection = require "pgstore.projection"
local sys = require "pgstore.sys"

local _M = {
  usage = "pgstore project FILE.lua... [--once] [--rebuild] [--from start|end] [--table EVENTS]"
    .. " [--upcasters FILE] [--policy FILE [--policy-every SECONDS] [--idempotency-ttl SECONDS]]"
    .. " [--lease SECONDS] [--renew SECONDS]",
  summary = "run projections: catch up, then follow live",
}

_M.help = [[run projections: setup, catch up from the checkpoint, then follow live
(one transaction per batch holds the read-model writes and the checkpoint).

  --once              stop when caught up
  --rebuild           teardown, forget checkpoints and parked events, start over
  --from start|end    where a projection without a checkpoint begins (default start)
  --table EVENTS      the event store (default events)
  --upcasters FILE    upcasters applied before handlers see an event
  --policy FILE       store policies, applied every --policy-every SECONDS (default 3600)
  --idempotency-ttl SECONDS  how long append idempotency keys are kept (0: forever)

Partitioned projections (partitioned = true) share their partitions among
every process that runs them, through leases with fencing tokens:
  --lease SECONDS     how long a claim lasts without renewal (default 10): a
                      crashed worker's partitions stand idle at most this
                      plus one renew interval, so shorter means less idle
                      work, but it must outlast a slow tick (a server
                      restart, a long pause); a clean exit hands over at once
  --renew SECONDS     time between lease ticks (default lease / 3, two retries
                      before expiry); must be shorter than --lease
Each process is one worker: its owner is hostname:pid plus a random instance
id. It logs every acquisition, takeover, loss and rebalance; a batch whose
lease was lost is refused (lease_lost) and nothing of it commits.
`pgstore status` shows the live workers, who holds what, and each partition's
lag. SIGINT/SIGTERM finish the batch in flight, commit, release the leases and exit 0.]]

-- Seconds as partitions' lease and renew and the policy timer take them;
-- the TTL in whole seconds as db:events{ idempotency_ttl } does (0: forever).
local SPEC = {
  ["--once"] = "flag", ["--rebuild"] = "flag", ["--from"] = "value", ["--table"] = "value",
  ["--lease"] = args.seconds(true), ["--renew"] = args.seconds(true),
  ["--policy-every"] = args.seconds(true), ["--idempotency-ttl"] = args.whole(0, 2 ^ 32),
  ["--upcasters"] = "list", ["--policy"] = "list",
}

function _M.main(host, argv)
  local opts, files = args.parse(argv, SPEC)
  if not opts then return host.usage_error("project: " .. files, _M.usage) end
  opts.from = opts.from or "start"
  if opts.from ~= "start" and opts.from ~= "end" then
    return host.usage_error("project: --from takes start or end", _M.usage)
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
    progress = sys.isatty(2), say = host.say, migrate = host.migrate, stopping = sys.interrupted,
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
