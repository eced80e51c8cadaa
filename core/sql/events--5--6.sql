-- SPDX-License-Identifier: MIT
-- events--5--6.sql — the event store, version 5 to 6: following needs no
-- right on the position sequence. read_all, @check_order@ and the order
-- lock read the sequence's last value through @seq_last@, a SECURITY
-- DEFINER function of the sequence's owner, so a role with only
-- SELECT/INSERT/UPDATE/DELETE on the store's tables reads (read_all,
-- subscriptions, projections, the end); appending needs USAGE on the
-- sequence, for nextval, and no SELECT. read_all itself stays a function
-- of its caller: reading the events still takes SELECT on them.
-- Released: frozen. Placeholders as in events--4--5.sql, and @seq_last@
-- (function).
--
-- Upgrading while processes run: the signatures are those of version 5
-- and the bodies differ only in how they read the sequence, so processes
-- of either version call them alike.

-- The sequence's last value as the order argument reads it: the last
-- position handed out (one less than last_value while the sequence is
-- fresh or was set with is_called false). This number, and nothing else
-- of the sequence, is what every role that may call functions in the
-- store's schema learns through it (EXECUTE stays with PUBLIC: a follower
-- needs it, and nothing grants it per role). Its search_path is pinned,
-- so its body names the sequence by the schema it is in now (a store in
-- a schema outside the name rules is named unqualified: see "Names and
-- limits" in the README). Owned by the sequence's owner when the
-- migrating role may hand it over.
DO $fn$
DECLARE v_seq text; v_owner name;
BEGIN
  SELECT format('%I.%I', n.nspname, c.relname), pg_get_userbyid(c.relowner) INTO v_seq, v_owner
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = '@seq@'::regclass;
  EXECUTE format('CREATE OR REPLACE FUNCTION %s() RETURNS bigint LANGUAGE sql VOLATILE'
    ' SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS %L', '@seq_last@',
    format('SELECT CASE WHEN q.is_called THEN q.last_value ELSE q.last_value - 1 END FROM %s q', v_seq));
  IF v_owner <> current_user THEN
    BEGIN
      EXECUTE format('ALTER FUNCTION %s() OWNER TO %I', '@seq_last@', v_owner);
    EXCEPTION WHEN insufficient_privilege THEN NULL;
    END;
  END IF;
END
$fn$;

-- The order lock, as in events--2--3.sql, with L read through @seq_last@.
CREATE OR REPLACE FUNCTION @order_lock@() RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE v_l bigint; v_oid bigint := '@events@'::regclass::oid;
BEGIN
  IF current_setting('synchronous_commit') = 'off' THEN
    PERFORM set_config('synchronous_commit', 'local', true);
  END IF;
  IF current_setting('pgstore.order_lock_' || v_oid, true) = 'held' THEN RETURN; END IF;
  v_l := @seq_last@();
  PERFORM pg_advisory_xact_lock_shared((v_oid << 32) | (v_l >> 32));
  PERFORM pg_advisory_xact_lock_shared(v_oid::bit(32)::int, (v_l & 4294967295)::bit(32)::int);
  PERFORM set_config('pgstore.order_lock_' || v_oid, 'held', true);
END
$fn$;

-- @check_order@, as in events--2--3.sql, with the last value read through
-- @seq_last@: the position last handed out, so a sequence set to the
-- highest position with is_called false (its next value taken already)
-- counts as behind.
CREATE OR REPLACE FUNCTION @check_order@(p_fix boolean) RETURNS void
 LANGUAGE plpgsql AS $fn$
DECLARE v_cache bigint; v_cycle boolean; v_inc bigint; v_logged boolean; v_max bigint;
  v_last bigint; v_wrong text;
BEGIN
  SELECT s.seqcache, s.seqcycle, s.seqincrement, c.relpersistence <> 'u'
    INTO v_cache, v_cycle, v_inc, v_logged
    FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid WHERE s.seqrelid = '@seq@'::regclass;
  -- the highest position first, then the sequence: a position committed
  -- in between is below the value read after it
  SELECT e.position INTO v_max FROM @events@ e ORDER BY e.position DESC LIMIT 1;
  v_last := @seq_last@();
  IF v_cache = 1 AND NOT v_cycle AND v_inc > 0 AND v_logged AND v_last >= COALESCE(v_max, 0) THEN
    RETURN;
  END IF;
  v_wrong := format('the position sequence %s must have CACHE 1, NO CYCLE, a positive increment,'
    ' be LOGGED and not be behind the positions taken (it has CACHE %s, %s, INCREMENT %s, %s,'
    ' last value %s, highest position %s): read_all could skip events', '@seq@', v_cache,
    CASE WHEN v_cycle THEN 'CYCLE' ELSE 'NO CYCLE' END, v_inc,
    CASE WHEN v_logged THEN 'LOGGED' ELSE 'UNLOGGED' END, v_last, COALESCE(v_max, 0));
  IF p_fix THEN
    BEGIN
      ALTER SEQUENCE @seq@ CACHE 1 NO CYCLE;
      IF v_inc <= 0 THEN ALTER SEQUENCE @seq@ INCREMENT BY 1; END IF;
      IF NOT v_logged THEN ALTER SEQUENCE @seq@ SET LOGGED; END IF;
      IF v_last < COALESCE(v_max, 0) THEN PERFORM setval('@seq@', v_max); END IF;
      RETURN;
    EXCEPTION WHEN insufficient_privilege THEN NULL;
    END;
  END IF;
  RAISE EXCEPTION USING ERRCODE = 'PGS05', MESSAGE = v_wrong,
    HINT = 'run es:migrate() or pgstore migrate as a role that owns the sequence';
END
$fn$;

-- read_all, as in events--2--3.sql, with S read through @seq_last@.
CREATE OR REPLACE FUNCTION @read_all@(p_after bigint, p_limit int, p_types text[], p_prefix text,
  p_tag int)
 RETURNS TABLE (r_position bigint, r_stream text, r_version bigint, r_id uuid, r_type text,
  r_schema_version int, r_data jsonb, r_metadata jsonb, r_time timestamptz, r_horizon bigint)
 LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE v_s bigint; v_m bigint; v_h bigint; v_d bigint;
  v_oid oid := '@events@'::regclass::oid;
BEGIN
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION USING ERRCODE = 'PGS05', MESSAGE = 'read_all needs READ COMMITTED isolation';
  END IF;
  PERFORM @check_order@(false);
  v_s := @seq_last@();
  SELECT min(LEAST(CASE WHEN t.lo IS NOT NULL THEN (COALESCE(t.hi, 0) << 32) | t.lo END, t.v2)) INTO v_m
    FROM (SELECT min(l.objid::bigint) FILTER (WHERE l.classid = v_oid AND l.objsubid = 1) AS hi,
                 min(l.objid::bigint) FILTER (WHERE l.classid = v_oid AND l.objsubid = 2) AS lo,
                 min(((l.classid::bigint & 65535) << 32) | l.objid::bigint)
                   FILTER (WHERE l.objsubid = 2 AND (l.classid::bigint >> 16) = p_tag) AS v2
            FROM pg_locks l
           WHERE l.locktype = 'advisory' AND l.objsubid IN (1, 2)
             AND (l.classid = v_oid OR (l.classid::bigint >> 16) = p_tag)
             AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
           GROUP BY l.virtualtransaction) t;
  v_h := LEAST(v_s, COALESCE(v_m, v_s));
  SELECT e.position INTO v_d FROM @events@ e WHERE e.position <= v_h ORDER BY e.position DESC LIMIT 1;
  RETURN QUERY SELECT e.position, e.stream::text, e.version, e.id, e.type, e.schema_version, e.data,
    e.metadata, e.time, NULL::bigint FROM @events@ e
    WHERE e.position > p_after AND e.position <= v_h
      AND (p_types IS NULL OR e.type = ANY (p_types))
      AND (p_prefix IS NULL OR e.stream LIKE p_prefix)
    ORDER BY e.position LIMIT p_limit;
  RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::bigint, NULL::uuid, NULL::text, NULL::int,
    NULL::jsonb, NULL::jsonb, NULL::timestamptz, COALESCE(v_d, 0);
END
$fn$;
