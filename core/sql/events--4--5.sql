-- SPDX-License-Identifier: MIT
-- events--4--5.sql — the event store, version 4 to 5: the end's floor
-- (@end@) that keeps es:latest_position() from going back when the
-- newest events are removed, and an index on the idempotency keys' age
-- for their cleanup. Placeholders as in events--1.sql, plus @end@.
--
-- The end. es:latest_position() is the cursor read_all returns (the
-- highest committed position below its horizon: see "Crashes" in
-- events--1.sql), or this floor when that is higher. The cursor comes
-- from rows that exist, so removing the newest events would take it
-- back; before retention removes anything it raises the floor to the
-- end as it stands (es:hold_end), and removes only events at or below
-- it. Every value ever stored here was an end: every position at or
-- below it had committed or was never to commit (the sequence steps back
-- after a crash only over positions never committed, above the last
-- commit), and that stays true, so the floor is always a safe place to
-- start from, and the end is never lower than any end reported before.
-- A hard delete or a move holds the end first too; it removes a whole
-- stream, so events of that stream that come within the end between the
-- hold and the removal are the one case left where the end can step
-- back (over events that no longer exist).
CREATE TABLE IF NOT EXISTS @end@ (
  one boolean PRIMARY KEY DEFAULT true CHECK (one),
  position bigint NOT NULL);

-- Idempotency keys expire (the store's idempotency_ttl): the cleanup
-- takes the oldest first, in bounded batches, through this index.
DO $fn$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid
      AND a.attnum = i.indkey[0]
      WHERE i.indrelid = to_regclass('@idempotency@') AND i.indnatts = 1 AND a.attname = 'created_at') THEN
    CREATE INDEX ON @idempotency@ (created_at);
  END IF;
END
$fn$;

-- A key's age counts from its append, not from the start of the
-- transaction that made it (now()): an append that waited long for its
-- stream's head, or came late in a long transaction, gets its whole TTL.
ALTER TABLE @idempotency@ ALTER COLUMN created_at SET DEFAULT clock_timestamp();

-- The store's idempotency_ttl, as the last handle opened with one
-- explicitly set it (NULL: none did; each cleaning handle then uses its
-- own): so `pgstore policy apply` cleans by the writers' TTL, not its own
-- default.
ALTER TABLE @end@ ADD COLUMN IF NOT EXISTS idempotency_ttl bigint;
