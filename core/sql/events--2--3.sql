-- SPDX-License-Identifier: MIT
-- events--2--3.sql — the event store, version 2 to 3: a store is a table.
--   * The order lock is keyed by the events table's OID, which is unique
--     in the database, instead of a 16-bit tag hashed from the table name
--     as spelled: `t`, `public.t` and a search_path hit are one store, and
--     two stores can never share a key. A transaction takes it once per
--     store, however many appends it makes.
--   * Appends and imports commit durably even when the session asks for
--     synchronous_commit = off (see "Durability" below).
--   * The position sequence is held to what the order argument needs
--     (@check_order@), and read_all refuses to hand out events while it
--     is not.
--   * Every function names its tables schema-qualified (0.1 named them
--     unqualified, so a caller's search_path could point them elsewhere).
-- Released: frozen. Placeholders as in events--1.sql, and @order_lock@,
-- @check_order@ (functions).
--
-- Upgrading while processes run. p_tag stays in the signatures, so a
-- process of the previous version calls these same functions, and
-- read_all still honours the order locks of version 2 made under the
-- caller's p_tag: an append that began under the old definition (it may
-- be waiting for a stream's head while this file commits) and takes the
-- old lock afterwards still holds back followers of the same spelling.
-- Nothing here waits for appends or reads in flight, so the upgrade never
-- stops writes. What stays open: a follower of another spelling than a
-- still-running old appender, for that append only.

-- The order lock. L is the sequence's last value (one less while the
-- sequence is fresh); every position the caller's transaction takes after
-- this is > L. L travels in two shared advisory locks whose first key
-- half is the events table's OID: (OID, L >> 32) as one bigint key
-- (objsubid 1) then (OID, L & 0xffffffff) as two int keys (objsubid 2).
-- read_all pairs them per transaction; a low half without its high half
-- reads as high half 0, which only lowers the horizon. Positions up to
-- 2^63 - 1 (the sequence's bigint range; the Lua API stops at 2^53).
-- A transaction's first L is below every position it takes later, so
-- one pair per store and transaction is enough; a transaction-local
-- setting remembers it (undone, with the locks, by a rolled-back
-- savepoint), and a transaction of 100,000 appends holds two locks.
--
-- Durability. Under synchronous_commit = off a commit becomes visible
-- before its WAL is flushed, so a follower could pass a position that a
-- crash then takes back and hands out again. An append therefore raises
-- its own transaction to synchronous_commit = local when it finds it off:
-- the commit is flushed before anyone sees it (the cost of a default
-- commit, one WAL flush). Other settings (on, remote_write, remote_apply)
-- already flush locally and are left alone. A transaction that sets it
-- off again after the append takes that risk on itself.
CREATE OR REPLACE FUNCTION @order_lock@() RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE v_l bigint; v_oid bigint := '@events@'::regclass::oid;
BEGIN
  IF current_setting('synchronous_commit') = 'off' THEN
    PERFORM set_config('synchronous_commit', 'local', true);
  END IF;
  IF current_setting('pgstore.order_lock_' || v_oid, true) = 'held' THEN RETURN; END IF;
  SELECT CASE WHEN q.is_called THEN q.last_value ELSE q.last_value - 1 END INTO v_l FROM @seq@ q;
  PERFORM pg_advisory_xact_lock_shared((v_oid << 32) | (v_l >> 32));
  PERFORM pg_advisory_xact_lock_shared(v_oid::bit(32)::int, (v_l & 4294967295)::bit(32)::int);
  PERFORM set_config('pgstore.order_lock_' || v_oid, 'held', true);
END
$fn$;

-- @replay@ as in events--1.sql, made again so that a store made by 0.1
-- (whose functions named their tables unqualified, found through each
-- caller's search_path) names its own tables from here on; the functions
-- below are made again for the same reason among others.
CREATE OR REPLACE FUNCTION @replay@(p_stream text, p_events jsonb, p_key text,
  OUT fv bigint, OUT lv bigint, OUT fp bigint, OUT lp bigint, OUT n int)
 RETURNS SETOF record LANGUAGE plpgsql STABLE AS $fn$
DECLARE r record; v_n int := jsonb_array_length(p_events);
BEGIN
  IF p_key IS NOT NULL THEN
    SELECT * INTO r FROM @idempotency@ i WHERE i.key = p_key;
    IF NOT FOUND THEN RETURN; END IF;
    IF r.stream <> p_stream THEN
      RAISE EXCEPTION USING ERRCODE = 'PGS04', MESSAGE = format(
        'idempotency key %s was already used for stream %s', p_key, r.stream);
    END IF;
    RETURN QUERY SELECT r.first_version, r.last_version, r.first_position, r.last_position, r.count;
    RETURN;
  END IF;
  SELECT min(e.version) AS fv, max(e.version) AS lv, min(e.position) AS fp,
    max(e.position) AS lp, count(*)::int AS n, bool_and(e.stream = p_stream) AS same INTO r
    FROM @events@ e WHERE e.id IN (SELECT (x->>'id')::uuid FROM jsonb_array_elements(p_events) x);
  IF r.n = 0 THEN RETURN; END IF;
  IF NOT (r.n = v_n AND r.same AND r.lv - r.fv + 1 = v_n) THEN
    RAISE EXCEPTION USING ERRCODE = 'PGS04', MESSAGE = format(
      '%s of the event ids were already appended, not as this same batch', r.n);
  END IF;
  RETURN QUERY SELECT r.fv, r.lv, r.fp, r.lp, r.n;
END
$fn$;

CREATE OR REPLACE FUNCTION @append@(p_stream text, p_expected bigint, p_events jsonb,
  p_key text, p_time double precision, p_tag int, p_notify text,
  OUT r_first_version bigint, OUT r_last_version bigint, OUT r_first_position bigint,
  OUT r_last_position bigint, OUT r_count int, OUT r_replayed boolean)
 LANGUAGE plpgsql AS $fn$
DECLARE
  v_cur bigint; v_status text; v_n int := jsonb_array_length(p_events);
  v_check boolean := p_key IS NOT NULL OR p_events->0 ? 'id'; r record;
BEGIN
  IF v_check THEN
    SELECT * INTO r FROM @replay@(p_stream, p_events, p_key);
    IF FOUND THEN
      SELECT r.fv, r.lv, r.fp, r.lp, r.n, true INTO r_first_version, r_last_version,
        r_first_position, r_last_position, r_count, r_replayed;
      RETURN;
    END IF;
  END IF;
  INSERT INTO @heads@ AS h (stream, version) VALUES (p_stream, v_n)
    ON CONFLICT (stream) DO UPDATE SET version = h.version + v_n
    RETURNING h.version - v_n, h.status INTO v_cur, v_status;
  IF v_check THEN
    SELECT * INTO r FROM @replay@(p_stream, p_events, p_key);
    IF FOUND THEN
      UPDATE @heads@ SET version = v_cur WHERE stream = p_stream;
      SELECT r.fv, r.lv, r.fp, r.lp, r.n, true INTO r_first_version, r_last_version,
        r_first_position, r_last_position, r_count, r_replayed;
      RETURN;
    END IF;
  END IF;
  IF v_status = 'tombstoned' THEN
    RAISE EXCEPTION USING ERRCODE = 'PGS01', MESSAGE = format('stream %s is deleted (tombstoned)', p_stream);
  ELSIF v_status = 'archived' THEN
    RAISE EXCEPTION USING ERRCODE = 'PGS02', MESSAGE = format('stream %s is archived', p_stream);
  END IF;
  IF (p_expected >= 0 AND v_cur <> p_expected) OR (p_expected = -2 AND v_cur <> 0)
     OR (p_expected = -3 AND v_cur = 0) THEN
    RAISE EXCEPTION USING ERRCODE = 'PGS03',
      MESSAGE = format('version conflict on stream %s: expected %s, actual %s', p_stream,
        CASE p_expected WHEN -2 THEN 'no stream' WHEN -3 THEN 'an existing stream'
        ELSE p_expected::text END, v_cur),
      DETAIL = format('expected=%s actual=%s', p_expected, v_cur);
  END IF;
  PERFORM @order_lock@();
  IF v_n = 1 THEN -- the common case, without the set machinery
    INSERT INTO @events@ (position, stream, version, id, type, schema_version, data, metadata, time)
    VALUES (nextval('@seq@'), p_stream, v_cur + 1, COALESCE((p_events->0->>'id')::uuid, gen_random_uuid()),
      p_events->0->>'type', COALESCE((p_events->0->>'schema_version')::int, 1),
      COALESCE(p_events->0->'data', 'null'::jsonb), p_events->0->'metadata',
      COALESCE(to_timestamp(p_time), now()))
    RETURNING position INTO r_first_position;
    r_last_position := r_first_position;
  ELSE
    WITH ins AS (
      INSERT INTO @events@ (position, stream, version, id, type, schema_version, data, metadata, time)
      SELECT nextval('@seq@'), p_stream, v_cur + x.ord, COALESCE((x.val->>'id')::uuid, gen_random_uuid()),
        x.val->>'type', COALESCE((x.val->>'schema_version')::int, 1), COALESCE(x.val->'data', 'null'::jsonb),
        x.val->'metadata', COALESCE(to_timestamp(p_time), now())
      FROM jsonb_array_elements(p_events) WITH ORDINALITY AS x(val, ord) ORDER BY x.ord
      RETURNING position)
    SELECT min(position), max(position) INTO r_first_position, r_last_position FROM ins;
  END IF;
  r_first_version := v_cur + 1; r_last_version := v_cur + v_n; r_count := v_n; r_replayed := false;
  IF p_key IS NOT NULL THEN
    INSERT INTO @idempotency@ (key, stream, first_version, last_version, first_position, last_position, count)
    VALUES (p_key, p_stream, r_first_version, r_last_version, r_first_position, r_last_position, v_n);
  END IF;
  IF p_notify IS NOT NULL THEN PERFORM pg_notify(p_notify, r_last_position::text); END IF;
END
$fn$;

-- read_all, as in events--1.sql and events--1--2.sql, with step (2)
-- reading this table's order locks by OID: M is the smallest L announced
-- by a transaction running now, each transaction's L rebuilt from its two
-- lock halves (several in one transaction: the smallest halves, which is
-- at most each of its L). One scan of pg_locks is one snapshot of the lock
-- table, so both halves of a transaction are seen together. Version 2's
-- locks under p_tag count too (see "Upgrading while processes run"); a
-- foreign lock read as one only lowers the horizon. And it first checks
-- the sequence (@check_order@): changed by hand under running processes,
-- the followers stop with a clear error instead of skipping.
CREATE OR REPLACE FUNCTION @read_all@(p_after bigint, p_limit int, p_types text[], p_prefix text,
  p_tag int)
 RETURNS TABLE (r_position bigint, r_stream text, r_version bigint, r_id uuid, r_type text,
  r_schema_version int, r_data jsonb, r_metadata jsonb, r_time timestamptz, r_horizon bigint)
 LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE v_s bigint; v_called boolean; v_m bigint; v_h bigint; v_d bigint;
  v_oid oid := '@events@'::regclass::oid;
BEGIN
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION USING ERRCODE = 'PGS05', MESSAGE = 'read_all needs READ COMMITTED isolation';
  END IF;
  PERFORM @check_order@(false);
  SELECT s.last_value, s.is_called INTO v_s, v_called FROM @seq@ s;
  IF NOT v_called THEN v_s := v_s - 1; END IF;
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

-- import, as in events--1.sql, and refusing (PGS04, writing nothing) what
-- it used to lose: an event whose id or version this store already holds
-- as another event. Only the same event, left by an interrupted move of
-- two pools, is skipped.
CREATE OR REPLACE FUNCTION @import@(p_stream text, p_events jsonb, p_tag int, OUT r_count int)
 LANGUAGE plpgsql AS $fn$
DECLARE v_max bigint; v_id text; v_version bigint;
BEGIN
  INSERT INTO @heads@ (stream) VALUES (p_stream) ON CONFLICT DO NOTHING;
  PERFORM 1 FROM @heads@ WHERE stream = p_stream FOR UPDATE;
  SELECT e.version INTO v_version FROM jsonb_array_elements(p_events) x(val)
    JOIN @events@ e ON e.stream = p_stream AND e.version = (x.val->>'version')::bigint
   WHERE e.id <> (x.val->>'id')::uuid LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'PGS04', MESSAGE = format(
      'stream %s already has version %s here, as another event', p_stream, v_version);
  END IF;
  PERFORM @order_lock@();
  INSERT INTO @events@ (position, stream, version, id, type, schema_version, data, metadata, time)
  SELECT nextval('@seq@'), p_stream, (x.val->>'version')::bigint, (x.val->>'id')::uuid, x.val->>'type',
    (x.val->>'schema_version')::int, x.val->'data', x.val->'metadata', (x.val->>'time')::timestamptz
  FROM jsonb_array_elements(p_events) WITH ORDINALITY AS x(val, ord) ORDER BY x.ord
  ON CONFLICT (id) DO NOTHING;
  GET DIAGNOSTICS r_count = ROW_COUNT;
  SELECT x.val->>'id' INTO v_id FROM jsonb_array_elements(p_events) x(val)
   WHERE NOT EXISTS (SELECT 1 FROM @events@ e WHERE e.id = (x.val->>'id')::uuid
     AND e.stream = p_stream AND e.version = (x.val->>'version')::bigint) LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'PGS04', MESSAGE = format(
      'event %s of stream %s is already here as another event', v_id, p_stream);
  END IF;
  SELECT max(version) INTO v_max FROM @events@ WHERE stream = p_stream;
  UPDATE @heads@ SET version = GREATEST(version, COALESCE(v_max, 0)), status = 'active',
    reason = NULL, updated_at = now() WHERE stream = p_stream;
END
$fn$;

-- The sequence the order argument rests on: every nextval larger than any
-- value handed out before it, and that durably (CACHE 1: no backend holds
-- a private range; NO CYCLE: no wrap to small values; a positive
-- increment; LOGGED: a crash does not reset it), and never behind the
-- positions already taken (a RESTART or setval by hand would hand them
-- out again). With p_fix it sets what is wrong (at each migration and
-- each open that may migrate; a sequence behind is set to the highest
-- position there is — positions of events deleted above it cannot be
-- known); without p_fix (each read_all), or when the role may not alter
-- the sequence, it raises PGS05 naming what is wrong.
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
  SELECT q.last_value INTO v_last FROM @seq@ q;
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

SELECT @check_order@(true);
