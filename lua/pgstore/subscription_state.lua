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
-- An ack covers what was delivered: a cursor past the delivery cursor, or
-- behind the checkpoint already acked, is `invalid` and writes nothing
-- (rewind() is the way back). An ack is compare-and-set on the checkpoint
-- this subscription last stored, so two processes running one consumer
-- cannot both move it: the second gets `conflict`. Inside one transaction
-- a later ack compares against the earlier one's uncommitted write.
--
-- An ack that fails with `connection` or `timeout` may still have
-- committed (the connection was lost after the write was sent). Its cursor
-- is remembered; when a later ack then finds the checkpoint moved, the
-- stored checkpoint decides: at one of those cursors → that ack committed,
-- go on from it; anywhere else → another consumer moved it (`conflict`).
-- If it did not commit, the later ack simply succeeds from the old
-- checkpoint. This cannot tell our unknown ack from another process that
-- stored the very same cursor meanwhile (A's ack(20) is lost, B acks 20, A
-- adopts 20): outside a transaction delivery is at least once anyway, and
-- both delivered up to 20, so taking 20 as ours loses nothing; inside a
-- transaction an ack never becomes unsure (a lost connection is a
-- rollback), so exactly-once effects are not at stake.
--
-- A transaction whose COMMIT outcome is unknown leaves its ack in doubt:
-- rolled_back() moves the cursor back to the last acked checkpoint at once,
-- and until the stored checkpoint has been read back, the next ack reads
-- it first: found at the doubtful ack's cursor, the transaction committed,
-- so the events since were delivered again — that ack is a `conflict` and
-- the cursor goes on from the stored checkpoint.
local errors = require "pgstore.errors"

local type, setmetatable, tostring = type, setmetatable, tostring
local format = string.format

local _M = {}
local State = {}
local mt = { __index = State, __name = "pgstore.subscription_state", __metatable = false }

local function unknown_outcome(err)
  return type(err) == "table" and (err.code == "connection" or err.code == "timeout")
end

-- A position as Lua holds it: a whole number from 0 to 2^53 (doubles).
local function is_position(v)
  return type(v) == "number" and v >= 0 and v <= 2 ^ 53 and v % 1 == 0
end

-- state.open{ load, save, latest, from = "start" | "end" | cursor } → state | nil, err
-- The cursor starts at the stored checkpoint; without one, at `from`
-- ("end" is stored at once as the checkpoint).
-- A `from` that is no position (nor "start", "end") is `invalid`, stored
-- checkpoint or not.
function _M.open(o)
  local from = o.from or "start"
  if from ~= "start" and from ~= "end" and not is_position(from) then
    return errors.fail("invalid", format("invalid from: a cursor is a whole number from 0 to 2^53, got %s", tostring(from)))
  end
  local cursor, err = o.load()
  if err then return nil, err end
  local stored = cursor ~= nil
  if not stored then
    if from == "start" then
      cursor = 0
    elseif from == "end" then
      cursor, err = o.latest()
      if not cursor then return nil, err end
      -- Kept at once: a restart, or another worker taking this consumer
      -- over, before the first ack starts where this one did, not at a
      -- later end (the events between would be skipped). Someone who
      -- stored one first wins.
      local ok, serr = o.save(cursor, false, nil)
      if ok then
        stored = true
      elseif serr and serr.code == "conflict" then
        local now_stored, lerr = o.load()
        if lerr then return nil, lerr end
        if now_stored == nil then return nil, serr end
        cursor, stored = now_stored, true
      else
        return nil, serr
      end
    else
      cursor = from
    end
  end
  return setmetatable({
    load = o.load, save = o.save,
    cursor = cursor,   -- where the next read continues (delivered, maybe not acked)
    acked = cursor,    -- the checkpoint as this subscription believes it is stored
    stored = stored,   -- whether any checkpoint is stored (else the next ack expects none)
    pending = nil,     -- acked inside transaction pending_tx, not yet known to have committed
    pending_tx = nil,
    unsure = nil,      -- cursors of acks whose outcome is unknown: set of cursor → true
    doubt = nil,       -- acked by a transaction whose commit outcome is unknown, not yet read back
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

-- What the checkpoint is, as far as an ack inside tx can see: its own
-- transaction's earlier ack, else the committed one. → cursor | nil (none)
local function current(self, tx)
  if tx and self.pending and self.pending_tx == tx then return self.pending end
  if self.stored then return self.acked end
end

local function save(self, cursor, tx)
  return self.save(cursor, current(self, tx) or false, tx)
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

-- A transaction's commit outcome was unknown and the checkpoint could not
-- be read back then: read it now. → true (it did not commit, go on) | nil, err
local function resolve(self)
  local stored, err = self.load()
  if err then return nil, err end
  local doubt = self.doubt
  self.doubt = nil
  local acked = self.stored and self.acked or nil
  if stored ~= nil and stored ~= acked then
    -- It committed (or another consumer moved it): what was delivered
    -- since the rewind is already covered. Go on from the stored checkpoint.
    self.acked, self.stored, self.cursor, self.pending, self.pending_tx = stored, true, stored, nil, nil
    return errors.fail("conflict", format("checkpoint at %d, not %s: the transaction of unknown outcome "
      .. "(acking %d) committed or another consumer moved it; continuing from %d",
      stored, tostring(acked or "none"), doubt, stored), { expected = acked, actual = stored })
  end
  return true
end

local function refuse(cursor, why)
  return errors.fail("invalid", format("cannot ack %s: %s", tostring(cursor), why))
end

-- state:ack(cursor[, tx]) → true | nil, err. Inside tx the checkpoint
-- counts as stored only after state:committed().
function State:ack(cursor, tx)
  if not is_position(cursor) then return refuse(cursor, "a cursor is a whole number from 0 to 2^53") end
  if cursor > self.cursor then
    return refuse(cursor, format("only delivered up to %d", self.cursor))
  end
  local floor = current(self, tx)
  if floor and cursor < floor then
    return refuse(cursor, format("already acked %d (rewind() to go back)", floor))
  end
  if self.doubt then
    local ok, err = resolve(self)
    if not ok then return nil, err end
  end
  local ok, err = save(self, cursor, tx)
  if not ok and err.code == "conflict" and self.unsure then
    local adopted, serr = settle(self, err)
    if adopted == nil then return nil, serr end
    if adopted then
      if cursor < self.acked then
        return refuse(cursor, format("an earlier ack of unknown outcome stored %d", self.acked))
      end
      ok, err = save(self, cursor, tx)
    end
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
    self.pending, self.pending_tx = cursor, tx
  else
    self.acked, self.stored = cursor, true
  end
  return true
end

-- After the transaction holding state:ack(cursor, tx) committed.
function State:committed()
  if self.pending then
    self.acked, self.stored = self.pending, true
  end
  self.pending, self.pending_tx = nil, nil
end

-- Back to the stored checkpoint (re-read): the delivery cursor continues
-- from it. The cursor falls back to the last acked checkpoint first, so a
-- failed read leaves it there, never past what is stored. → cursor | nil, err
function State:rewind()
  self.pending, self.pending_tx = nil, nil
  self.cursor = self.acked
  local stored, err = self.load()
  if err then return nil, err end
  self.doubt = nil
  if stored ~= nil then self.acked, self.stored = stored, true end
  self.cursor = self.acked
  return self.cursor
end

-- The transaction holding state:ack(cursor, tx) failed with err. Its
-- writes and the checkpoint commit together, so the stored checkpoint
-- tells what happened: when another consumer moved it (`conflict`) or the
-- connection was lost (the COMMIT may or may not have landed), rewind to
-- it and go on. Anything else (a failing handler, a timeout that would
-- fail again) is the caller's to report. When the checkpoint cannot be
-- read, the cursor stays at the last acked checkpoint and the next ack
-- reads it first (see the header). → cursor | nil, err
function State:rolled_back(err)
  if type(err) == "table" and err.code == "connection" and self.pending then
    self.doubt = self.pending
  end
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
