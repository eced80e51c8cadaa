-- SPDX-License-Identifier: MIT
-- pgstore.subscription_state — where a subscription stands: the delivery
-- cursor, the checkpoint it last stored, conditional acks, acks whose
-- outcome is unknown, and rewind. Pure Lua with no I/O of its own: the
-- host hands it load() and save(), so pgstore.subscribe, the projection
-- runner and resty.pgstore's subscription all run this one state machine.
--
--   local st, err = state.open{ from = "start",
--     load = function() return cp:load(name) end,            -- → cursor | nil | nil, err
--     save = function(cursor, expected, tx)                  -- expected: cursor | false (none)
--       return cp:save(name, cursor, { tx = tx, expected = expected }) end,
--     latest = function() return es:latest_position() end }  -- for from = "end"
--   -- or, the same over a checkpoint store: state.for_consumer(cp, name, es, "start")
--   st:delivered(cursor); st:ack(cursor[, tx]); st:committed(); st:rewind()
--
-- An ack is compare-and-set on the checkpoint this subscription last
-- stored, so two processes running one consumer cannot both move it: the
-- second gets `conflict`. An ack that fails with `connection` or `timeout`
-- may still have committed (the connection was lost after the write was
-- sent). Its cursor is remembered; when a later ack then finds the
-- checkpoint moved, the stored checkpoint decides: at one of those cursors
-- → that ack committed, go on from it; anywhere else → another consumer
-- moved it (`conflict`). If it did not commit, the later ack simply
-- succeeds from the old checkpoint.
local type, setmetatable = type, setmetatable

local _M = {}
local State = {}
local mt = { __index = State, __name = "pgstore.subscription_state" }

local function unknown_outcome(err)
  return type(err) == "table" and (err.code == "connection" or err.code == "timeout")
end

-- state.open{ load, save, latest, from = "start" | "end" | cursor } → state | nil, err
-- The cursor starts at the stored checkpoint; without one, at `from`.
function _M.open(o)
  local cursor, err = o.load()
  if err then return nil, err end
  local stored = cursor ~= nil
  if not stored then
    local from = o.from or "start"
    if from == "start" then
      cursor = 0
    elseif from == "end" then
      cursor, err = o.latest()
      if not cursor then return nil, err end
    else
      cursor = from
    end
  end
  return setmetatable({
    load = o.load, save = o.save,
    cursor = cursor,   -- where the next read continues (delivered, maybe not acked)
    acked = cursor,    -- the checkpoint as this subscription believes it is stored
    stored = stored,   -- whether any checkpoint is stored (else the next ack expects none)
    pending = nil,     -- acked inside a transaction not yet known to have committed
    unsure = nil,      -- cursors of acks whose outcome is unknown: set of cursor → true
  }, mt)
end

-- state.for_consumer(cp, consumer, es, from) → state | nil, err: open{}
-- over a checkpoint store's load and save (pgstore's or resty.pgstore's)
-- and an event store's latest_position.
function _M.for_consumer(cp, consumer, es, from)
  return _M.open{
    from = from,
    load = function() return cp:load(consumer) end,
    save = function(cursor, expected, tx) return cp:save(consumer, cursor, { tx = tx, expected = expected }) end,
    latest = function() return es:latest_position() end,
  }
end

-- After a read: the delivery cursor moves to where it ended.
function State:delivered(cursor)
  self.cursor = cursor
end

local function save(self, cursor, tx)
  return self.save(cursor, self.stored and self.acked or false, tx)
end

-- The checkpoint moved away from where we think it is: did one of our
-- unsure acks land? → true (adopted) | false (someone else) | nil, err
local function settle(self, err)
  local stored = err.actual
  if stored == nil then
    local lerr
    stored, lerr = self.load()
    if lerr then return nil, lerr end
  end
  if stored ~= nil and self.unsure[stored] then
    self.acked, self.stored = stored, true
    return true
  end
  return false
end

-- state:ack(cursor[, tx]) → true | nil, err. Inside tx the checkpoint
-- counts as stored only after state:committed().
function State:ack(cursor, tx)
  local ok, err = save(self, cursor, tx)
  if not ok and err.code == "conflict" and self.unsure then
    local adopted, serr = settle(self, err)
    if adopted == nil then return nil, serr end
    if adopted then ok, err = save(self, cursor, tx) end
  end
  if not ok then
    -- Inside a transaction a lost connection rolls it back: no doubt there.
    if not tx and unknown_outcome(err) then
      self.unsure = self.unsure or {}
      self.unsure[cursor] = true
    end
    return nil, err
  end
  -- Saves are compare-and-set: an unsure ack landing after this one
  -- expected an older checkpoint and changes nothing.
  self.unsure = nil
  if tx then
    self.pending = cursor
  else
    self.acked, self.stored = cursor, true
  end
  return true
end

-- After the transaction holding state:ack(cursor, tx) committed.
function State:committed()
  if self.pending then
    self.acked, self.stored, self.pending = self.pending, true, nil
  end
end

-- Back to the stored checkpoint (re-read): the delivery cursor continues
-- from it. → cursor | nil, err
function State:rewind()
  self.pending = nil
  local stored, err = self.load()
  if err then return nil, err end
  if stored ~= nil then self.acked, self.stored = stored, true end
  self.cursor = self.acked
  return self.cursor
end

-- The transaction holding state:ack(cursor, tx) failed with err. Its
-- writes and the checkpoint commit together, so the stored checkpoint
-- tells what happened: when another consumer moved it (`conflict`) or the
-- connection was lost (the COMMIT may or may not have landed), rewind to
-- it and go on. Anything else (a failing handler, a timeout that would
-- fail again) is the caller's to report. → cursor | nil, err
function State:rolled_back(err)
  local cursor, rerr = self:rewind()
  if type(err) == "table" and (err.code == "conflict" or err.code == "connection") then
    if not cursor then return nil, rerr end
    return cursor
  end
  return nil, err
end

-- Events delivered past the stored checkpoint (or skipped by a filter)
-- that an ack would cover.
function State:unacked()
  return self.cursor > self.acked
end

-- Positions between the stored checkpoint and head.
function State:lag(head)
  local lag = head - self.acked
  return lag > 0 and lag or 0
end

return _M
