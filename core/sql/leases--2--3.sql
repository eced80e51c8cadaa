-- SPDX-License-Identifier: MIT
-- leases--2--3.sql — partition leases, version 2 to 3: every holder is an
-- instance (a random id per open lease handle, beside the readable owner),
-- members are keyed by it, and the guard checks it and bounds the guarded
-- transaction. Released: frozen. Placeholders as in leases--1.sql.
ALTER TABLE @table@ ADD COLUMN IF NOT EXISTS instance text;
ALTER TABLE @members@ ADD COLUMN IF NOT EXISTS instance text;
UPDATE @members@ SET instance = owner WHERE instance IS NULL;
ALTER TABLE @members@ ALTER COLUMN instance SET NOT NULL;

-- Two processes given one owner string are two members: the key becomes
-- (name, instance), whatever the old key was called.
DO $do$
DECLARE pk name; cols text[];
BEGIN
  SELECT c.conname, array_agg(a.attname::text ORDER BY k.i) INTO pk, cols
    FROM pg_constraint c
    CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, i)
    JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
   WHERE c.conrelid = '@members@'::regclass AND c.contype = 'p'
   GROUP BY c.conname;
  IF cols IS DISTINCT FROM ARRAY['name', 'instance'] THEN
    IF pk IS NOT NULL THEN
      EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', '@members@'::regclass, pk);
    END IF;
    EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (name, instance)', '@members@'::regclass);
  END IF;
END
$do$;

-- The owner-only guard would pass a second instance with the same owner.
DROP FUNCTION IF EXISTS @guard@(text, int, text, bigint);

-- Locks the lease row FOR SHARE inside the caller's transaction and raises
-- PGSL1 unless that instance still holds that token unexpired: a takeover
-- (an UPDATE) waits for the guarded transaction, so nothing commits under
-- a token after the token has changed. Claimers skip a locked row, so the
-- guarded transaction is bounded: from the guard on, no statement runs and
-- no idle pause lasts longer than p_bound_ms (the lease) — a holder frozen
-- after its guard loses its session, and so the lock, within one lease.
CREATE OR REPLACE FUNCTION @guard@(p_name text, p_partition int, p_owner text, p_instance text,
                                   p_token bigint, p_bound_ms int)
 RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE t bigint; cur_owner text; cur_token bigint; setting text; cur_ms float8;
BEGIN
  SELECT l.token INTO t FROM @table@ l
   WHERE l.name = p_name AND l.partition = p_partition AND l.instance = p_instance
     AND l.token = p_token AND l.expires_at > clock_timestamp()
   FOR SHARE OF l;
  IF NOT FOUND THEN
    SELECT l.owner, l.token INTO cur_owner, cur_token FROM @table@ l
     WHERE l.name = p_name AND l.partition = p_partition;
    RAISE EXCEPTION USING ERRCODE = 'PGSL1',
      MESSAGE = format('lease lost: partition %s of %s is no longer held by %s (instance %s) with token %s',
                       p_partition, p_name, p_owner, p_instance, p_token),
      DETAIL = format('now held by %s with token %s', coalesce(cur_owner, 'nobody'), cur_token);
  END IF;
  IF p_bound_ms > 0 THEN
    -- keep a tighter bound the session already has (0 is none)
    FOREACH setting IN ARRAY ARRAY['idle_in_transaction_session_timeout', 'statement_timeout'] LOOP
      cur_ms := extract(epoch FROM current_setting(setting)::interval) * 1000;
      IF cur_ms = 0 OR cur_ms > p_bound_ms THEN
        PERFORM set_config(setting, p_bound_ms::text, true);
      END IF;
    END LOOP;
  END IF;
  RETURN t;
END
$fn$;
