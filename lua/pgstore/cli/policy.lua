-- SPDX-License-Identifier: MIT
-- `pgstore policy apply FILE.lua… [--dry-run]` — enforces store policies'
-- retention and archiving: prints what it would remove and archive, stream
-- by stream, then does it in bounded batches, with progress on stderr when
-- that is a terminal. The work itself is pgstore.retention's.
local pgstore = require "pgstore"
local args_ = require "pgstore.cli.args"

local _M = {
  usage = "pgstore policy apply FILE.lua... [options]",
  summary = "enforce store policies: retention and archiving",
}

local HELP = [[


options:
  FILE.lua      policy scripts (each returns a policy or a list of them); a
                stream is governed by the first policy whose pattern matches
  --dry-run     print what would be removed and archived; change nothing
  --summary     print only each policy's totals, not every stream
  --batch N     rows removed per transaction (default 1000)
  --table NAME  the events table (default events)
  --idempotency-ttl SECONDS
                idempotency keys older than this are removed (default
                604800, a week; 0 keeps them forever)]]

local function isatty(fd)
  local ok, ffi = pcall(require, "ffi")
  if not ok then return false end
  pcall(ffi.cdef, "int isatty(int fd);")
  local ok2, r = pcall(function() return ffi.C.isatty(fd) end)
  return ok2 and r == 1
end

local function plural(n, one, many)
  return ("%d %s"):format(n, n == 1 and one or many)
end

-- Expired idempotency keys, mentioned only when there are some.
local function keys(n, verb)
  return n > 0 and (", %s %s"):format(verb, plural(n, "idempotency key", "idempotency keys")) or ""
end

local function describe_item(item)
  local parts = {}
  if item.remove > 0 then
    parts[#parts + 1] = ("remove %s (versions <= %d of %d)"):format(plural(item.remove, "event", "events"),
      item.upto, item.version)
  end
  if item.archive then
    local what = item.archive_to and ("archive to " .. item.archive_to) or "archive"
    if item.status == "archived" then what = what .. " (archived, events left)" end
    parts[#parts + 1] = what .. (item.last_time and (" (last event " .. item.last_time .. ")") or " (no events)")
  end
  return table.concat(parts, ", ")
end

local function parse(host, args)
  local o = { files = {}, batch = 1000, table = "events" }
  local i = 2
  while args[i] do
    local a = args[i]
    if a == "--dry-run" then
      o.dry_run = true
    elseif a == "--summary" then
      o.summary = true
    elseif a == "--batch" or a == "--table" or a == "--idempotency-ttl" then
      local v = args[i + 1]
      if not v then return nil, host.usage_error(a .. " needs a value", _M.usage) end
      if a == "--idempotency-ttl" or a == "--batch" then
        -- as db:events{ idempotency_ttl } and set:apply{ batch } take them
        local n, msg = args_.number(a, v, a == "--batch" and args_.whole(1, 1e7) or args_.whole(0, 2 ^ 32))
        if not n then return nil, host.usage_error("policy apply: " .. msg, _M.usage) end
        o[a == "--batch" and "batch" or "idempotency_ttl"] = n
      else
        o.table = v
      end
      i = i + 1
    elseif a:match("^%-%-batch=") or a:match("^%-%-table=") or a:match("^%-%-idempotency%-ttl=") then
      table.insert(args, i + 1, a:match("=(.*)$"))
      args[i] = a:match("^(%-%-[%a-]+)=")
      i = i - 1
    elseif a:sub(1, 1) == "-" then
      return nil, host.usage_error("policy apply: unknown option '" .. a .. "'", _M.usage)
    else
      o.files[#o.files + 1] = a
    end
    i = i + 1
  end
  if #o.files == 0 then return nil, host.usage_error("policy apply: no policy file given", _M.usage) end
  return o
end

function _M.main(host, args)
  local sub = args[1]
  if sub == nil then return host.usage_error("policy: expected a subcommand: apply", _M.usage) end
  if sub ~= "apply" then return host.usage_error("policy: unknown subcommand '" .. sub .. "' (expected apply)", _M.usage) end
  for j = 2, #args do
    if args[j] == "--help" or args[j] == "-h" then
      print("usage: " .. _M.usage .. "\n\n" .. _M.summary .. HELP)
      return 0
    end
  end
  local o, code = parse(host, args)
  if not o then return code end

  local ok, set = pcall(pgstore.policies, o.files)
  if not ok then return host.fail(set) end

  local db, err = host.connect()
  if not db then return host.fail(err) end
  local es
  es, err = db:events{ table = o.table, notify = false, migrate = false, idempotency_ttl = o.idempotency_ttl }
  if not es then
    db:close()
    return host.fail(err)
  end
  local function done(rc, e)
    es:close()
    db:close()
    if e then return host.fail(e) end
    return rc
  end

  -- 1. the plan, streamed policy by policy
  local describe = require("pgstore.policy").describe
  local current
  local function header(p)
    if current == p.name then return end
    current = p.name
    host.print(("policy '%s' (%s)"):format(p.name, describe(p)))
  end
  local by_name = {}
  for _, p in ipairs(set:list()) do by_name[p.name] = p end
  local plan
  plan, err = set:plan(es, {
    batch = o.batch,
    on_stream = not o.summary and function(item)
      header(by_name[item.policy])
      -- host.print escapes the line once: stream names may hold anything
      host.print(("  %s: %s"):format(item.stream, describe_item(item)))
    end or nil,
    on_policy = function(ps, p)
      header(p)
      if ps.streams == 0 then
        print("  nothing to do")
        return
      end
      local parts = {}
      if ps.remove > 0 then parts[#parts + 1] = "remove " .. plural(ps.remove, "event", "events") end
      if ps.archive > 0 then parts[#parts + 1] = "archive " .. plural(ps.archive, "stream", "streams") end
      print(("  %s: %s"):format(plural(ps.streams, "stream", "streams"), table.concat(parts, ", ")))
    end,
  })
  if not plan then return done(1, err) end
  print(("total: remove %s, archive %s%s"):format(plural(plan.remove, "event", "events"),
    plural(plan.archive, "stream", "streams"), keys(plan.keys, "expire")))
  if o.dry_run then
    print("dry run: nothing was changed")
    return done(0)
  end
  if plan.remove == 0 and plan.archive == 0 and plan.keys == 0 then return done(0) end

  -- 2. the work, in bounded batches
  local tty = isatty(2)
  local shown = false
  local res
  res, err = set:apply(es, {
    batch = o.batch,
    on_progress = tty and function(s)
      shown = true
      io.stderr:write(("\rpgstore: removed %d of %d events, archived %d of %d streams ")
        :format(s.removed, plan.remove, s.archived, plan.archive))
      io.stderr:flush()
    end or nil,
  })
  if shown then io.stderr:write("\n") end
  if not res then
    local s = type(err) == "table" and err.summary
    if s then
      err = ("%s (stopped after removing %s and archiving %s)"):format(tostring(err),
        plural(s.removed, "event", "events"), plural(s.archived, "stream", "streams"))
    end
    return done(1, err)
  end
  print(("done: removed %s, archived %s%s"):format(plural(res.removed, "event", "events"),
    plural(res.archived, "stream", "streams"), keys(res.keys_removed, "expired")))
  return done(0)
end

return _M
