-- SPDX-License-Identifier: MIT
-- pgstore.projection — runs projection scripts: catch up from the
-- checkpoint, then follow live. Each batch's read-model writes and its
-- checkpoint commit in ONE transaction, so a crash between batches neither
-- loses nor repeats an effect (exactly once into PostgreSQL).
--
-- A projection script returns:
--   { name = "order_totals", types = { … }?, setup = sql | fn(tx),
--     teardown = sql | fn(tx)?, handlers = { Type = fn(event, tx) }, batch = 500,
--     on_error = "stop" | "skip" | "park", partitioned = false, partitions = 8 }
-- Handlers get `tx` with query/exec only. Errors read "file.lua:LINE: msg".
--
-- on_error: the batch first runs without savepoints. When a handler fails,
-- "stop" rolls the batch back and stops; "skip" and "park" roll it back and
-- run it again with a savepoint per event, skipping the failing event or
-- parking it (event, error, traceback) in the dead-letter table
-- pgstore_parked (its schema is the core's, migrated when the runner
-- starts), in the same transaction as the checkpoint.
--
-- partitioned = true: streams are spread over `partitions` partitions by
-- pm:partition_for(stream); each host process works only on the partitions
-- it leases (db:partitions), each with its own checkpoint, and every batch
-- commits only if its lease's fencing token is still current.
--
-- Reading: one read_all per step for a process's partitions of a
-- projection, filtered on the server to the partitions whose checkpoint
-- is furthest behind (all of them once they are level, which they are
-- when caught up), so every event is read once whatever the partition
-- count; each partition then commits its share as its own batch. One
-- LISTEN connection per runner wakes every unit.
--
-- Saving: a partition with events in a page commits them with its
-- checkpoint. One with none keeps its new cursor in memory (nothing of
-- its own lies before it, so saving it later loses nothing) until it next
-- gets events, or for IDLE_SAVE_EVERY seconds, when every such partition
-- of the projection is saved in ONE transaction under their lease guards,
-- or until a clean stop. Commits thus follow the partitions that got
-- events, not the partition count; a crash costs a re-read of at most
-- that many seconds, filtered to the partition.
local core = require "pgstore.core"
local errors = require "pgstore.errors"
local outage = require "pgstore.outage"
local options = require "pgstore.options"
local printable = require "pgstore.printable"
local script = require "pgstore.script"

local type, pairs, next, ipairs, tostring, format = type, pairs, next, ipairs, tostring, string.format
local lower, find, sub, match = string.lower, string.find, string.sub, string.match
local fields = script.fields
local now = core.now

-- How long a partition that got no events keeps its cursor unsaved.
local IDLE_SAVE_EVERY = 1

local _M = {}

-- ---- loading -----------------------------------------------------------------

local function fail(path, msg) return nil, ("%s: %s"):format(path, msg) end

-- A projection script's fields: their Lua types, or true where load checks
-- the value with a message of its own.
local FIELDS = {
  name = true, description = "string", types = true, setup = true, teardown = true, handlers = true,
  batch = true, on_error = true, partitioned = "boolean", partitions = "number",
}

-- The runner's own copy of a projection definition: every field checked
-- and copied (handlers as functions, types as strings) into tables the
-- script never sees, so what a handler later writes into the table it
-- returned changes nothing the runner reads. def | nil, "where: message".
local checked = setmetatable({}, { __mode = "k" }) -- the copies check made

local function check(script_def, where)
  if type(script_def) ~= "table" then return fail(where, "a projection must be a table") end
  local raw = fields(script_def)
  local problem = options.problem(raw, FIELDS, "name, handlers, types, setup, teardown, batch, on_error, "
    .. "partitioned, partitions, description")
  if problem then return fail(where, problem) end
  local def = { name = raw.name, description = raw.description, partitioned = raw.partitioned == true,
                path = where }
  if type(def.name) ~= "string" or not def.name:match("^[%w_%-%.:]+$") then
    return fail(where, "name must be a string of letters, digits, _ - . :")
  end
  local handlers = type(raw.handlers) == "table" and fields(raw.handlers)
  if not handlers or next(handlers) == nil then
    return fail(where, "handlers must be a table of functions keyed by event type")
  end
  for k, v in pairs(handlers) do
    if type(k) ~= "string" or type(v) ~= "function" then
      return fail(where, ("handlers.%s must be a function"):format(tostring(k)))
    end
  end
  def.handlers = handlers
  local types = {}
  if raw.types == nil then
    for k in pairs(handlers) do types[#types + 1] = k end
    table.sort(types)
  elseif type(raw.types) ~= "table" then
    return fail(where, "types must be an array of event types")
  else
    local given = fields(raw.types)
    for i = 1, #given do
      if type(given[i]) ~= "string" then return fail(where, "types must be an array of event types (strings)") end
      types[i] = given[i]
    end
    for k in pairs(given) do
      if types[k] == nil then return fail(where, "types must be an array of event types (strings)") end
    end
  end
  def.types = types
  for _, f in ipairs{ "setup", "teardown" } do
    local v = raw[f]
    if v ~= nil and type(v) ~= "string" and type(v) ~= "function" then
      return fail(where, f .. " must be SQL text or a function(tx)")
    end
    def[f] = v
  end
  def.batch = raw.batch or 500
  if type(def.batch) ~= "number" then return fail(where, "batch must be a positive integer") end
  local bad = options.int(def.batch, "batch", 1, 2 ^ 31)
  if bad then return fail(where, bad.message) end
  def.on_error = raw.on_error or "stop"
  if def.on_error ~= "stop" and def.on_error ~= "skip" and def.on_error ~= "park" then
    return fail(where, "on_error must be 'stop', 'skip' or 'park'")
  end
  def.partitions = raw.partitions or 8
  bad = options.int(def.partitions, "partitions", 1, 65536)
  if bad then return fail(where, bad.message) end
  checked[def] = true
  return def
end

-- Loads and checks a projection script: the runner's copy | nil, message.
function _M.load(path, unsafe)
  local def, err = script.load(path, nil, unsafe)
  if not def then return nil, err end
  return check(def, path)
end

-- ---- the statements a handler may not send ------------------------------------

-- The first word of a statement that ends, splits or leaves the batch's
-- transaction (PREPARE only with TRANSACTION after it). A DO block or a
-- procedure cannot commit inside a transaction block, so the first word
-- decides.
local CONTROL = { commit = true, rollback = true, ["end"] = true, abort = true, begin = true,
                  start = true, savepoint = true, release = true }

-- Where the string literal opening at i ends (past its quote). backslash:
-- a backslash escapes the next character (E'…', or any '…' when the
-- session turned standard_conforming_strings off).
local function string_end(sql, i, backslash)
  local j = i + 1
  while true do
    local q = find(sql, backslash and "['\\]" or "'", j)
    if not q then return #sql + 1 end
    if sub(sql, q, q) == "\\" then
      j = q + 2
    elseif sub(sql, q + 1, q + 1) == "'" then
      j = q + 2
    else
      return q + 1
    end
  end
end

-- The transaction-control word that begins any statement of sql (a call
-- without parameters may send several, separated by `;`), or nil. Reads
-- past whitespace, `--` lines, nested `/* */` comments, quoted strings,
-- identifiers and dollar quotes, with the session's reading of '…'
-- strings given by `backslash`.
local function control_word(sql, backslash)
  local i, n = 1, #sql
  local first, prepare = true, false -- the next word begins a statement; it follows PREPARE
  while i <= n do
    local c = sub(sql, i, i)
    local two = sub(sql, i, i + 1)
    if find(c, "^%s") then
      i = i + 1
    elseif two == "--" then
      i = (find(sql, "\n", i, true) or n) + 1
    elseif two == "/*" then
      local depth = 1
      i = i + 2
      while i <= n and depth > 0 do
        local t = sub(sql, i, i + 1)
        if t == "/*" then depth, i = depth + 1, i + 2
        elseif t == "*/" then depth, i = depth - 1, i + 2
        else i = i + 1 end
      end
    elseif c == ";" then
      first, prepare, i = true, false, i + 1
    elseif c == "'" then
      first, prepare, i = false, false, string_end(sql, i, backslash)
    elseif c == '"' then
      first, prepare, i = false, false, (find(sql, '"', i + 1, true) or n) + 1
    elseif c == "$" and (match(sql, "^%$%$", i) or match(sql, "^%$[%a_\128-\255][%w_\128-\255]*%$", i)) then
      local tag = match(sql, "^%$%$", i) or match(sql, "^%$[%a_\128-\255][%w_\128-\255]*%$", i)
      local close = find(sql, tag, i + #tag, true)
      first, prepare, i = false, false, close and close + #tag or n + 1
    elseif find(c, "^[%a_\128-\255]") then
      local word = match(sql, "^[%w_$\128-\255]+", i)
      local w = lower(word)
      i = i + #word
      if first and CONTROL[w] then return w end
      if prepare and w == "transaction" then return "prepare transaction" end
      prepare = first and w == "prepare"
      first = false
      -- no `;` further on: no other statement begins (the common case, read no further)
      if not prepare and not find(sql, ";", i, true) then return nil end
      if (w == "e") and sub(sql, i, i) == "'" then i = string_end(sql, i, true) end
    else
      first, prepare, i = false, false, i + 1
    end
  end
end

-- nil | the `invalid` error for a statement a handler may not send. Read
-- both ways a '…' string can be read, so a session setting cannot hide one.
local function refused(sql)
  if type(sql) ~= "string" then return nil end
  local word = control_word(sql, false) or control_word(sql, true)
  if not word then return nil end
  return errors.new("invalid", ("a handler cannot end or split the batch's transaction (%s)"):format(word:upper()))
end

-- ---- one unit of work: a projection, or one partition of it --------------------

-- What handlers see: the transaction's query and exec, nothing else. It is
-- a fresh userdata with a hidden metatable, so a handler can neither swap
-- its methods (rawset needs a table) nor reach the transaction, its
-- connection or a metatable the host shares; once the transaction ended,
-- a kept proxy only raises. A statement that lost the connection is noted
-- in seen.lost: whatever the handler makes of it, the whole transaction is
-- gone, so the handler did not fail (see apply).
local function handler_tx(tx, seen)
  local function watch(...)
    local res, err = ...
    if res == nil and seen and errors.is(err, "connection") then seen.lost = err end
    return ...
  end
  local methods = {
    query = function(_, sql, ...)
      local bad = refused(sql)
      if bad then return nil, bad end
      return watch(tx:query(sql, ...))
    end,
    exec = function(_, sql, ...)
      local bad = refused(sql)
      if bad then return nil, bad end
      return watch(tx:exec(sql, ...))
    end,
  }
  local proxy = newproxy(true)
  local m = getmetatable(proxy)
  m.__index = methods
  m.__newindex = function(_, k)
    error(("cannot set tx.%s: the tx a handler gets is read-only"):format(tostring(k)), 2)
  end
  m.__tostring = function() return "pgstore.tx (handler)" end
  m.__metatable = false
  return proxy
end

-- The tx handlers get, for pgstore.parked's retry as for the runner.
_M.handler_tx = handler_tx

local function run_sql_or_fn(tx, what)
  if type(what) == "string" then return tx:exec(what) end
  local ok, msg = script.call(what, handler_tx(tx))
  if not ok then return nil, errors.new("invalid", msg) end
  return true
end

-- Setup and teardown, one process at a time per projection: partitioned
-- workers start together, and concurrent CREATE … IF NOT EXISTS of one
-- table can still collide in the catalog (a unique violation on pg_type).
local function schema_step(tx, def, what)
  local ok, err = tx:lock("pgstore.projection.schema:" .. def.name)
  if not ok then return nil, err end
  return run_sql_or_fn(tx, what)
end

-- A copy of a stored event for one handler call: the row's fields and
-- its data and metadata, table by table (shared tables and cycles kept as
-- such). A handler changes only its copy, never what the runner skips,
-- parks or gives the next handler or pass.
local function copy(v, seen)
  if type(v) ~= "table" then return v end
  if seen[v] then return seen[v] end
  local c = {}
  seen[v] = c
  for k, x in next, v do c[copy(k, seen)] = copy(x, seen) end
  local mt = debug.getmetatable(v)
  if mt then debug.setmetatable(c, mt) end
  return c
end

local function fresh(e)
  local c = {}
  for k, v in next, e do c[k] = v end
  if type(e.data) == "table" or type(e.metadata) == "table" then
    local seen = {}
    c.data, c.metadata = copy(e.data, seen), copy(e.metadata, seen)
  end
  return c
end

-- Parks e, the event as the runner read it (no handler saw this table).
-- What the handler raised is made text the server takes (pgstore.printable);
-- an event that does not encode to valid JSON text is parked by id.
local function park(tx, unit, e, msg, tb)
  local def = unit.def
  local cjson = require "cjson"
  local ok, event = pcall(cjson.encode, {
    id = e.id, stream = e.stream, version = e.version, position = e.position, type = e.type,
    schema_version = e.schema_version, data = e.data, metadata = e.metadata, time = e.time,
  })
  if not ok or printable.utf8(event) ~= event or find(event, "\\u0000", 1, true) then
    event = cjson.encode({ id = e.id, position = e.position, unencodable = true })
  end
  return tx:exec([[insert into pgstore_parked (store, projection, position, stream, type, event, error, traceback)
    values ($1, $2, $3, $4, $5, $6::jsonb, $7, $8) on conflict (store, projection, position) do update
    set error = excluded.error, traceback = excluded.traceback, parked_at = now()]],
    unit.runner.es:store(), def.name, e.position, e.stream, e.type, event, printable.utf8(msg),
    tb and printable.utf8(tb))
end

-- nil | the error when a handler's statements left the batch's transaction
-- (refused by handler_tx; checked again after every call all the same).
local function left_batch(tx)
  if tx.conn:tx_status() ~= "idle" then return nil end
  return errors.new("invalid", "a handler ended the batch's transaction; nothing of the batch is committed")
end

-- Applies rows inside tx. careful = savepoint per event (skip/park), with
-- what was skipped or parked added to `skipped`, to be told once the batch
-- committed. A handler whose statement lost the connection did not fail:
-- the batch's transaction is lost with it (err.code `connection`).
-- Returns true | nil, err (err.message "file:line: msg (event …)").
local function apply(unit, tx, rows, careful, skipped)
  local def, seen = unit.def, {}
  local htx = handler_tx(tx, seen)
  -- rows are the runner's: a handler gets fresh(e), so e.position,
  -- e.stream and e.type below are what was stored
  for _, e in ipairs(rows) do
    local fn = def.handlers[e.type]
    if fn then
      if careful then
        local ok, msg, tb, left
        local res, err = tx:nested(function()
          ok, msg, tb = script.call(fn, fresh(e), htx)
          left = left_batch(tx)
          if left then return true end
          if not ok then return nil, msg end
          return true
        end)
        if seen.lost then return nil, seen.lost end
        if left then return nil, left end
        if not res and ok ~= false then return nil, err end -- the savepoint itself failed
        if not res then
          if def.on_error == "park" then
            local pok, perr = park(tx, unit, e, msg, tb)
            if not pok then return nil, perr end
          end
          skipped[#skipped + 1] = ("%s: %s %s at position %d: %s"):format(def.name,
            def.on_error == "park" and "parked" or "skipped", e.type, e.position, msg)
        end
      else
        local ok, msg = script.call(fn, fresh(e), htx)
        if seen.lost then return nil, seen.lost end
        local left = left_batch(tx)
        if left then return nil, left end
        if not ok then
          return nil, errors.new("invalid", ("%s (event %s at position %d, stream %s)")
            :format(msg, e.type, e.position, e.stream), { handler_failed = true, position = e.position })
        end
      end
    end
  end
  return true
end

-- The rows of a batch before position (they are in position order).
local function before(rows, position)
  local prefix = {}
  for _, e in ipairs(rows) do
    if e.position >= position then break end
    prefix[#prefix + 1] = e
  end
  return prefix
end

-- Processes one batch: read-model writes + checkpoint in one transaction.
-- Under on_error = "stop" a failing handler rolls the batch back; the
-- events before the failing one then commit on their own, with the
-- checkpoint just before it, so the stop leaves the checkpoint at the bad
-- event (where `pgstore checkpoint skip` steps past it) and not at the
-- batch's start. The batch committed nothing, so nothing is applied twice.
local function process(unit, rows, cursor)
  local db, def = unit.runner.db, unit.def
  local skipped, committing
  local function body(careful, batch, upto)
    return db:transaction(function(tx)
      skipped, committing = {}, false
      local ok, err = apply(unit, tx, batch, careful, skipped)
      if not ok then return nil, err end
      -- The guard before the checkpoint: a stale worker is told its lease
      -- is lost, not that the checkpoint moved (its successor moved it).
      if unit.pm then
        ok, err = unit.pm:guard(tx, unit.partition, unit.token)
        if not ok then return nil, err end
      end
      ok, err = unit.sub:ack(upto, tx)
      if not ok then return nil, err end
      committing = true
      return true
    end)
  end
  local ok, err = body(false, rows, cursor)
  if not ok and type(err) == "table" and err.handler_failed and def.on_error ~= "stop" then
    ok, err = body(true, rows, cursor)
  elseif not ok and type(err) == "table" and err.handler_failed then
    local prefix = before(rows, err.position)
    local pok, perr = body(false, prefix, err.position - 1)
    if pok then
      unit.sub:committed()
      unit.processed = unit.processed + #prefix
      err.message = ("%s; stopped with the checkpoint at %d, just before it"):format(err.message, err.position - 1)
    elseif type(perr) ~= "table" or perr.code ~= "invalid" then
      err = perr -- lost connection, lease lost, checkpoint moved: told as for any batch
    end
  end
  if not ok then
    -- The writes and the checkpoint commit together, so the stored
    -- checkpoint says where to go on from.
    local cursor, rerr = unit.sub:rolled_back(err)
    -- The checkpoint could not be read back (the server is away): the
    -- cursor is at the last ack, the next ack reads it first, and run()
    -- waits for the server (pgstore.outage).
    if not cursor then return nil, rerr end
    if err.code == "lease_lost" then return nil, err end -- the runner leaves the partition
    local why
    if err.code == "conflict" then
      why = "checkpoint moved by another runner"
    elseif committing then
      why = ("commit outcome unknown (%s)"):format(err.code)
    else
      why = ("connection lost before the commit, the batch rolled back (%s)"):format(tostring(err))
    end
    unit.say(("%s: %s; continuing from %d"):format(def.name, why, cursor))
    return true
  end
  unit.sub:committed()
  unit.processed = unit.processed + #rows
  unit.failed = unit.failed + #skipped
  for _, note in ipairs(skipped) do unit.say(note) end
  return true
end

-- ---- the runner -------------------------------------------------------------------

local Runner = {}
Runner.__index = Runner
Runner.__metatable = false

-- defs: what _M.load returned, or definition tables (checked and copied
--       here the same way);
-- opts: events = es, rebuild, from, once, say = fn(msg), progress = bool,
--       poll = seconds, owner = string (partitioned workers),
--       stopping = fn → true once a signal asks to stop (ends a wait for
--       the server: run() rides through lost connections),
--       migrate = true (false: the tables exist; a role without DDL rights)
-- What the runner keeps per projection (its lease manager, when to tick
-- it next) lives in its own tables, keyed by its copy of the definition.
function _M.runner(db, defs, opts)
  local self = setmetatable({ db = db, defs = {}, opts = opts, units = {}, say = opts.say or print,
                              leases = {}, next_tick = {}, next_idle_save = {} }, Runner)
  for i, def in ipairs(defs) do
    if not checked[def] then
      local err
      def, err = check(def, ("projection %d"):format(i))
      if not def then return nil, errors.new("invalid", err) end
    end
    self.defs[i] = def
  end
  self.es = opts.events
  -- Without a listener (no channel, or the server refuses LISTEN) the
  -- runner polls.
  if self.es.channel then
    local lok, l = pcall(db.listen, db, self.es.channel)
    if lok and l then self.listener = l end
  end
  local migrate = opts.migrate ~= false
  -- The dead-letter table is the core's (core/sql/parked--*.sql).
  local ok, err = core.parked_migrate(db.pool, nil, migrate)
  -- A projection's checkpoints belong to the event store it runs against.
  if ok then
    self.cp, err = db:checkpoints{ store = self.es, skip_schema_init = not migrate }
    ok = self.cp ~= nil
  end
  for _, def in ipairs(ok and self.defs or {}) do
    ok, err = self:prepare(def)
    if not ok then break end
  end
  if not ok then
    self:close() -- what was opened so far
    return nil, err
  end
  return self
end

-- The name of a partitioned projection's lease set. Leases, like
-- checkpoints, belong to the store: the same projection over two stores
-- is two sets of partitions.
function Runner:lease_set(def)
  return ("projection:%s:%s"):format(self.es:store(), def.name)
end

function Runner:prepare(def)
  local db = self.db
  if self.opts.rebuild then
    if def.teardown then
      local ok, err = db:transaction(function(tx) return schema_step(tx, def, def.teardown) end)
      if not ok then return nil, err end
    end
    local mine = "projection:" .. def.name
    for _, c in ipairs(self.cp:list() or {}) do
      if c.consumer == mine or c.consumer:sub(1, #mine + 1) == mine .. ":" then self.cp:delete(c.consumer) end
    end
    -- this store's parked events, and those parked before stores were told apart
    db:exec("delete from pgstore_parked where projection = $1 and store in ($2, '')", def.name, self.es:store())
    -- and its partition set, whose count a rebuild may change (no leases
    -- table: nothing to remove)
    db:exec("delete from pgstore_leases where name = $1", self:lease_set(def))
  end
  if def.setup then
    local ok, err = db:transaction(function(tx) return schema_step(tx, def, def.setup) end)
    if not ok then return nil, err end
  end
  if def.partitioned then
    local consumers = {}
    for p = 0, def.partitions - 1 do consumers[#consumers + 1] = ("projection:%s:%d"):format(def.name, p) end
    local ok, serr = self:hold_start(consumers)
    if not ok then return nil, serr end
    local pm, err = db:partitions{ name = self:lease_set(def),
                                   count = def.partitions,
                                   lease = self.opts.lease, renew = self.opts.renew, owner = self.opts.owner,
                                   skip_schema_init = self.opts.migrate == false }
    if not pm then return nil, err end
    self.leases[def] = pm
  else
    local unit, err = self:unit(def, "projection:" .. def.name)
    if not unit then return nil, err end
  end
  return true
end

-- --from end: one end for every partition of a projection, stored as their
-- checkpoints before any runs, so a partition started or taken over later
-- begins there too, not at a later end (skipping what came between). A
-- partition that has a checkpoint keeps it.
function Runner:hold_start(consumers)
  if self.opts.from ~= "end" then return true end
  if not self.start then
    local head, err = self.es:latest_position()
    if not head then return nil, err end
    self.start = head
  end
  for _, c in ipairs(consumers) do
    local ok, err = self.cp:save(c, self.start, { expected = false })
    if not ok and err.code ~= "conflict" then return nil, err end
  end
  return true
end

function Runner:unit(def, consumer, partition)
  local sub, err = self.db:subscribe{ name = consumer, events = self.es, types = def.types,
    batch = def.batch, from = self.opts.from, checkpoints = self.cp, poll = self.opts.poll,
    wait_for_server = false, -- run() waits for the server, once for every unit
    listen = false }         -- the runner's one listener wakes every unit
  if not sub then return nil, err end
  local unit = { def = def, sub = sub, runner = self, processed = 0, failed = 0,
                 partition = partition, say = self.say }
  if partition then
    local pm = self.leases[def]
    unit.pm, unit.token = pm, pm:token(partition)
  end
  self.units[#self.units + 1] = unit
  return unit
end

local function list(ps)
  table.sort(ps)
  return table.concat(ps, ", ")
end

-- One line per kind of lease change of a tick: acquisitions, takeovers
-- (whose expired lease, each), losses and what a rebalance gave up.
local function tell_changes(say, def, pm, changes)
  local acquired, taken = {}, {}
  for _, p in ipairs(changes.acquired) do
    local from = changes.taken and changes.taken[p]
    if from then taken[#taken + 1] = { p = p, from = from } else acquired[#acquired + 1] = p end
  end
  if #acquired > 0 then say(("%s: acquired partitions %s"):format(def.name, list(acquired))) end
  table.sort(taken, function(a, b) return a.p < b.p end)
  for _, t in ipairs(taken) do
    say(("%s: took over partition %d from %s (its lease expired)"):format(def.name, t.p, t.from))
  end
  if #changes.lost > 0 then
    say(("%s: lost partitions %s (lease expired or taken over)"):format(def.name, list(changes.lost)))
  end
  if #changes.released > 0 then
    local n = 0
    for _ in pairs(pm:owned()) do n = n + 1 end
    say(("%s: rebalanced: released partitions %s to other workers, holding %d of %d")
      :format(def.name, list(changes.released), n, pm.count))
  end
end

-- Follows lease changes: a unit per owned partition.
function Runner:rebalance()
  for _, def in ipairs(self.defs) do
    local pm = self.leases[def]
    if pm and (not self.next_tick[def] or now() >= self.next_tick[def]) then
      local changes, terr = pm:tick()
      if changes then
        tell_changes(self.say, def, pm, changes)
        self.tick_failing = nil
      elseif not self.tick_failing then
        self.tick_failing = true -- told once per outage
        self.say(("%s: cannot renew leases (%s); partitions count as held until their lease runs out")
          :format(def.name, tostring(terr)))
      end
      self.next_tick[def] = now() + (self.opts.renew or pm.renew) / 2
      local owned = pm:owned()
      local keep = {}
      for _, u in ipairs(self.units) do
        if u.def ~= def or (not u.lost and owned[u.partition] and owned[u.partition] == u.token) then
          keep[#keep + 1] = u
        else
          u.sub:close()
        end
      end
      self.units = keep
      for p in pairs(owned) do
        local have = false
        for _, u in ipairs(self.units) do have = have or (u.def == def and u.partition == p) end
        if not have then
          local _, err = self:unit(def, ("projection:%s:%d"):format(def.name, p), p)
          if err then return nil, err end
        end
      end
    end
  end
  return true
end

-- Commits what unit was delivered (rows, up to its cursor) when there is
-- anything to commit: → events processed | nil, err.
function Runner:commit(unit, rows)
  if #rows == 0 and not unit.sub:unacked() then return 0 end
  local ok, err = process(unit, rows, unit.sub:position())
  if not ok then
    if type(err) ~= "table" or err.code ~= "lease_lost" then return nil, err end
    unit.lost = true
    self.say(("%s: partition %d: lease_lost, its batch of %d events refused (%s); leaving it")
      :format(unit.def.name, unit.partition, #rows, err.detail or "taken over"))
    self.next_tick[unit.def] = 0
  end
  return #rows
end

-- One read for a partitioned projection's units in this process: those
-- whose cursor is furthest behind, filtered on the server to their
-- partitions; each gets its share and the page's cursor. The others wait
-- for the next step (they are ahead), so no event is read twice. A
-- filtered page may end before the head with few events or none (see
-- read_all): moved says whether the cursor went on.
-- → events processed, moved | nil, err
function Runner:read_partitions(def, units)
  local after = math.huge
  for _, u in ipairs(units) do after = math.min(after, u.sub:position()) end
  local behind, share, parts, moved = {}, {}, {}, false
  for _, u in ipairs(units) do
    if u.sub:position() == after then
      behind[#behind + 1], share[u.partition], parts[#parts + 1] = u, {}, u.partition
    end
  end
  local pm = self.leases[def]
  local rows, cursor = self.es:read_all{ after = after, limit = def.batch, types = def.types,
                                         partitions = parts, partition_count = pm.count }
  if not rows then return nil, cursor end
  for _, e in ipairs(rows) do
    local mine = share[pm:partition_for(e.stream)]
    if not mine then -- the server's partition_for is not this one's: nothing can be trusted
      return nil, errors.new("invalid", ("%s: the server put stream %q in a partition not asked for")
        :format(def.name, e.stream))
    end
    mine[#mine + 1] = e
  end
  local total = 0
  for _, u in ipairs(behind) do
    if cursor > after then moved = true end
    u.sub:delivered(cursor)
    local mine = share[u.partition]
    if #mine > 0 then -- the others keep their cursor in memory (save_idle)
      local n, err = self:commit(u, mine)
      if not n then return nil, err end
      total = total + n
    end
  end
  return total, moved
end

-- Saves the cursors of def's partitions that moved without events (see
-- the header), all in one transaction: every guard first, so a lost lease
-- fails the transaction before any checkpoint is written, then the acks.
-- Due every IDLE_SAVE_EVERY seconds; `now_too` (a clean stop) saves at
-- once. A refused guard leaves that partition (as a refused batch does);
-- the others are saved at the next turn. → true | nil, err
function Runner:save_idle(def, now_too)
  if not now_too and now() < (self.next_idle_save[def] or 0) then return true end
  self.next_idle_save[def] = now() + IDLE_SAVE_EVERY
  local idle = {}
  for _, u in ipairs(self.units) do
    if u.def == def and u.partition and not u.lost and u.sub:unacked() then idle[#idle + 1] = u end
  end
  if #idle == 0 then return true end
  local refused
  local ok, err = self.db:transaction(function(tx)
    for _, u in ipairs(idle) do
      local gok, gerr = u.pm:guard(tx, u.partition, u.token)
      if not gok then
        if type(gerr) == "table" and gerr.code == "lease_lost" then refused = u end
        return nil, gerr
      end
    end
    for _, u in ipairs(idle) do
      local aok, aerr = u.sub:ack(u.sub:position(), tx)
      if not aok then return nil, aerr end
    end
    return true
  end)
  if ok then
    for _, u in ipairs(idle) do u.sub:committed() end
    return true
  end
  if refused then
    refused.lost = true
    self.say(("%s: partition %d: lease_lost, its checkpoint not saved (%s); leaving it")
      :format(def.name, refused.partition, err.detail or "taken over"))
    self.next_tick[def], self.next_idle_save[def] = 0, 0
    return true
  end
  -- Nothing was saved: each goes on from its stored checkpoint (a
  -- conflict: another runner moved it) or, with the server away, waits.
  local first
  for _, u in ipairs(idle) do
    local cursor, rerr = u.sub:rolled_back(err)
    if not cursor then first = first or rerr end
  end
  if first then return nil, first end
  return true
end

-- A clean stop saves what save_idle has not yet: a restart then reads
-- nothing again. Best effort: a cursor left unsaved costs a re-read only.
function Runner:save_all_idle()
  for _, def in ipairs(self.defs) do
    if self.leases[def] then self:save_idle(def, true) end
  end
end

-- Takes what the listener has queued (hints; the reads cover them), which
-- keeps its heartbeat and reconnects going while the runner is busy.
local function drain(l)
  for _ = 1, 1000 do
    if not l:wait(0) then return end
  end
end

-- One pass over every unit: returns how many events it processed. When
-- there was nothing, waits up to `wait` seconds for a notification.
function Runner:step(wait)
  local ok, err = self:rebalance()
  if not ok then return nil, err end
  if self.listener then drain(self.listener) end
  local total, groups, order = 0, {}, {}
  for _, unit in ipairs(self.units) do
    if unit.partition then
      local g = groups[unit.def]
      if not g then
        g = {}
        groups[unit.def], order[#order + 1] = g, unit.def
      end
      g[#g + 1] = unit
    else
      local rows
      rows, err = unit.sub:next(0)
      if not rows then return nil, err end
      local n
      n, err = self:commit(unit, rows)
      if not n then return nil, err end
      total = total + n
    end
  end
  local moved = false
  for _, def in ipairs(order) do
    local n, went = self:read_partitions(def, groups[def])
    if not n then return nil, went end
    total, moved = total + n, moved or went
    ok, err = self:save_idle(def)
    if not ok then return nil, err end
  end
  wait = math.min(wait or 0, self.opts.poll or 1)
  if total == 0 and not moved and wait > 0 then
    local note, lerr
    if self.listener then note, lerr = self.listener:wait(wait) end
    if not self.listener then
      core.sleep(wait)
    elseif not note and lerr and lerr.code ~= "timeout" then
      core.sleep(math.min(wait, 0.05)) -- the listener reconnects by itself
    end
  elseif #self.units == 0 then
    core.sleep(math.max(wait, 0.05)) -- no partition yet
  end
  return total
end

-- Runs until caught up (opts.once) or interrupted. Returns totals. A lost
-- connection is no failure: the step is tried again (pgstore.outage) from
-- the checkpoints, which the batch in flight committed with its writes or
-- not at all, until the server answers or opts.stopping() (a signal).
-- "12:00:01  1500 events  950/s  lag 500  75%  ETA 1s": done so far, of
-- done plus what is left, and the time left at the current rate.
local function progress_line(count, rate, lag)
  local line = ("%s  %d events  %.0f/s  lag %d"):format(os.date("%H:%M:%S"), count, rate, lag)
  if count + lag > 0 then line = line .. ("  %d%%"):format(math.floor(100 * count / (count + lag))) end
  if lag > 0 and rate > 0 then line = line .. ("  ETA %ds"):format(math.ceil(lag / rate)) end
  return line .. "   "
end

function Runner:run(interrupted)
  local started, last_report, last_count = now(), now(), 0
  local progress = self.opts.progress
  local ride = outage.new{ what = "projections", say = self.say }
  local wait = self.opts.once and 0 or 0.5
  local step = function() return self:step(wait) end
  while true do
    local n, err = ride:call(step, { stopping = self.opts.stopping })
    if not n then
      if outage.lost(err) then -- stopped by a signal while the server was away
        if progress then io.stderr:write("\n") end
        return { events = self:processed(), seconds = now() - started }
      end
      return nil, err
    end
    if progress and now() - last_report >= 1 then
      local count = self:processed()
      local rate = (count - last_count) / (now() - last_report)
      io.stderr:write("\r" .. progress_line(count, rate, self:lag()))
      last_report, last_count = now(), count
    end
    if interrupted and interrupted() then break end
    if self.opts.once and n == 0 and self:caught_up() then break end
  end
  self:save_all_idle()
  if progress then io.stderr:write("\n") end
  return { events = self:processed(), seconds = now() - started }
end

function Runner:processed()
  local n = 0
  for _, u in ipairs(self.units) do n = n + u.processed end
  return n
end

-- Positions not yet handled: from the cursors, which a partition without
-- events moves before its checkpoint is saved.
function Runner:lag()
  local head = self.es:latest_position()
  if not head then return 0 end
  local lag = 0
  for _, u in ipairs(self.units) do lag = math.max(lag, head - u.sub:position()) end
  return lag
end

function Runner:caught_up()
  local head = self.es:latest_position()
  if not head then return false end -- the server is away: not known to be caught up
  for _, u in ipairs(self.units) do
    if u.sub:position() < head then return false end
  end
  -- partitioned: every partition must be owned by someone and done; a
  -- single --once worker owns them all after its first ticks.
  return true
end

function Runner:close()
  for _, u in ipairs(self.units) do u.sub:close() end
  if self.listener then self.listener:close() end
  for _, d in ipairs(self.defs) do if self.leases[d] then self.leases[d]:close() end end
  if self.cp then self.cp:close() end
end

return _M
