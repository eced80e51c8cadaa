-- SPDX-License-Identifier: MIT
-- parked--1--2.sql — the projections' dead-letter table, version 1 to 2:
-- a parked event belongs to a store too (the same projection over two
-- event stores parks two events at one position). `store` is the event
-- store's resolved name, as in checkpoints--1--2.sql; rows parked before
-- carry '' (their store was never recorded). Released: frozen.
-- Placeholder: @table@.
ALTER TABLE @table@ ADD COLUMN IF NOT EXISTS store text NOT NULL DEFAULT '';

DO $fn$
DECLARE v_pkey text;
BEGIN
  IF NOT EXISTS (
      SELECT 1 FROM pg_index i
       WHERE i.indrelid = '@table@'::regclass AND i.indisprimary
         AND (SELECT array_agg(a.attname::text ORDER BY k.ord)
                FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum)
             = ARRAY['store', 'projection', 'position']) THEN
    SELECT conname INTO v_pkey FROM pg_constraint
     WHERE conrelid = '@table@'::regclass AND contype = 'p';
    IF v_pkey IS NOT NULL THEN
      EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', '@table@'::regclass, v_pkey);
    END IF;
    EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (store, projection, position)', '@table@'::regclass);
  END IF;
END
$fn$;
