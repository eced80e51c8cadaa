-- SPDX-License-Identifier: MIT
-- checkpoints--1--2.sql — consumer checkpoints, version 1 to 2: a
-- checkpoint belongs to a store and a consumer. `store` is the event
-- store's resolved name, "schema.table" unquoted (as in its migration
-- key), so `events`, `public.events` and a search_path hit are one store.
-- Checkpoints saved before were kept for the default event store, so they
-- move to the events table of this table's schema ("<schema>.events").
-- Released: frozen. Placeholder: @table@.
ALTER TABLE @table@ ADD COLUMN IF NOT EXISTS store text;

UPDATE @table@ SET store = (
    SELECT CASE WHEN n.nspname ~ '^[A-Za-z_][A-Za-z0-9_]*$' THEN n.nspname || '.events'
                ELSE 'events' END -- a schema outside the name rules is never resolved to
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = '@table@'::regclass)
 WHERE store IS NULL;

ALTER TABLE @table@ ALTER COLUMN store SET NOT NULL;

-- The key becomes (store, consumer); a table already keyed so is left alone.
DO $fn$
DECLARE v_pkey text;
BEGIN
  IF NOT EXISTS (
      SELECT 1 FROM pg_index i
       WHERE i.indrelid = '@table@'::regclass AND i.indisprimary
         AND (SELECT array_agg(a.attname::text ORDER BY k.ord)
                FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum)
             = ARRAY['store', 'consumer']) THEN
    SELECT conname INTO v_pkey FROM pg_constraint
     WHERE conrelid = '@table@'::regclass AND contype = 'p';
    IF v_pkey IS NOT NULL THEN
      EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', '@table@'::regclass, v_pkey);
    END IF;
    EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (store, consumer)', '@table@'::regclass);
  END IF;
END
$fn$;
