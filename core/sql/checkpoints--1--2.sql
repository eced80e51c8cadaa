-- SPDX-License-Identifier: MIT
-- checkpoints--1--2.sql — consumer checkpoints, version 1 to 2: a
-- checkpoint belongs to a store and a consumer. `store` is the event
-- store's resolved name, "schema.table" unquoted (as in its migration
-- key), so `events`, `public.events` and a search_path hit are one store.
-- Checkpoints saved before carried no store. They move to the event
-- store of this table's schema: its `events` table when there is one, else
-- the one event store the schema has (a table beside its <t>_heads and
-- <t>_position_seq), else "<schema>.events". A schema with several event
-- stores and no `events` cannot say which a checkpoint was for.
-- Released: frozen. Placeholder: @table@.
ALTER TABLE @table@ ADD COLUMN IF NOT EXISTS store text;

UPDATE @table@ SET store = (
    WITH s AS (SELECT n.oid, n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.oid = '@table@'::regclass),
    stores AS (SELECT t.relname::text AS name FROM pg_class t, s
                WHERE t.relnamespace = s.oid AND t.relkind IN ('r', 'p')
                  AND EXISTS (SELECT 1 FROM pg_class h WHERE h.relnamespace = s.oid
                                 AND h.relname = t.relname || '_heads' AND h.relkind IN ('r', 'p'))
                  AND EXISTS (SELECT 1 FROM pg_class q WHERE q.relnamespace = s.oid
                                 AND q.relname = t.relname || '_position_seq' AND q.relkind = 'S'))
    SELECT CASE WHEN s.nspname ~ '^[A-Za-z_][A-Za-z0-9_]*$'
                THEN s.nspname || '.' || COALESCE(
                       (SELECT name FROM stores WHERE name = 'events'),
                       (SELECT min(name) FROM stores HAVING count(*) = 1),
                       'events')
                ELSE 'events' END -- a schema outside the name rules is never resolved to
      FROM s)
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
