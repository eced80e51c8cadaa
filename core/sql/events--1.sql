-- SPDX-License-Identifier: MIT
-- events--1.sql — the event store, version 1: the events table, the heads
-- (one row per stream), idempotency keys, the position sequence and the
-- functions that hold the append and read_all algorithms. Released: frozen.
--
-- Placeholders: @events@ @heads@ @idempotency@ @seq@ (tables, sequence),
-- @append@ @read_all@ @import@ @replay@ (functions).
-- Custom SQLSTATEs raised here (mapped in core/events.c):
--   PGS00 a racing retry's replay (DETAIL: fv lv fp lp n) → success
--   PGS01 stream tombstoned → deleted     PGS02 stream archived → archived
--   PGS03 version conflict → conflict     PGS04 id/key reused → duplicate
--   PGS05 bad input → invalid
-- The global order (read_all never skips): see the note before @read_all@
-- below and the adversarial test in spec/events_order_spec.lua.
CREATE SEQUENCE IF NOT EXISTS @seq@ AS bigint CACHE 1;

CREATE TABLE IF NOT EXISTS @events@ (
  position bigint PRIMARY KEY,
  stream text COLLATE "C" NOT NULL,
  version bigint NOT NULL,
  id uuid NOT NULL UNIQUE,
  type text NOT NULL,
  schema_version int NOT NULL DEFAULT 1,
  data jsonb NOT NULL,
  metadata jsonb,
  time timestamptz NOT NULL DEFAULT now(),
  UNIQUE (stream, version));

-- One row per stream: its version (O(1) lookups and the per-stream
-- lock appends take) and its lifecycle status.
CREATE TABLE IF NOT EXISTS @heads@ (
  stream text COLLATE "C" PRIMARY KEY,
  version bigint NOT NULL DEFAULT 0,
  status text NOT NULL DEFAULT 'active'
    CHECK (status IN ('active', 'archived', 'tombstoned')),
  reason text,
  updated_at timestamptz NOT NULL DEFAULT now());

CREATE TABLE IF NOT EXISTS @idempotency@ (
  key text PRIMARY KEY,
  stream text NOT NULL,
  first_version bigint NOT NULL, last_version bigint NOT NULL,
  first_position bigint NOT NULL, last_position bigint NOT NULL,
  count int NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now());

-- Append: one round trip, one transaction (the caller's, or the
-- implicit one of the statement), three statements in the common case.
--   p_expected: >= 0 exact version, -1 any, -2 no stream, -3 exists.
--   p_events: [{type, data, metadata?, id?, schema_version?}, …]
--   p_tag: this store's 16-bit tag for the order lock (see read_all).
-- The head upsert locks the stream's row and advances its version in
-- one step; every refusal after it RAISEs, which undoes the advance.
-- A retry that finds its key or ids only once it holds the row lock
-- (it raced the first attempt, which committed meanwhile) gives the
-- head its version back and returns the original result, without an
-- error that would abort a caller's transaction. (Schema v1 raised
-- PGS00 carrying that result in DETAIL; events.c still reads it.)
-- The earlier result of an identical append: by idempotency key, or
-- by the batch's event ids. No row when there is none; PGS04 when the
-- key or ids were used for something else.
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
-- The order lock: before taking any position, announce the sequence's
-- last value L (one less while the sequence is fresh); every position
-- this transaction takes is > L.
  PERFORM pg_advisory_xact_lock_shared(((p_tag::bigint << 16) | ((s.l >> 32) & 65535))::bit(32)::int,
    (s.l & 4294967295)::bit(32)::int)
    FROM (SELECT CASE WHEN q.is_called THEN q.last_value ELSE q.last_value - 1 END AS l FROM @seq@ q) s;
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

-- read_all — why it never skips.
-- Positions come from one sequence with CACHE 1, so every nextval is
-- larger than any value returned before it. An appender reads the
-- sequence's last value L and takes a shared advisory lock encoding
-- (tag, L) BEFORE it takes a position; its positions are all > L.
-- This function, in three statements with their own snapshots
-- (VOLATILE plpgsql under READ COMMITTED):
--   (1) S := the sequence's last value;
--   (2) M := the smallest L among this store's order locks held now;
--   (3) returns events with p_after < position <= H = min(S, M).
-- Take any transaction that can still commit a position p <= H. Since
-- p <= S, p was taken before (1), so its lock was taken before (1). If
-- it is still running at (2), M <= its L < p <= H <= M: impossible. So
-- it ended before (2), and the snapshot of (3), taken after (2), sees
-- its commit (a transaction is visible before its locks are released).
-- Positions of rolled-back transactions are gaps nobody waits for; only
-- appends in flight hold H back, and only while they run. A hot standby
-- cannot see the primary's locks: read_all always runs on the primary.
-- Keys: 16-bit store tag and 48-bit L in the two-int advisory key space
-- (objsubid 2): at most 2^48 positions. A foreign lock that happens to
-- share the tag only lowers H (a brief wait), never skips.
--
-- Crashes. A sequence WAL-logs ahead of the values it hands out, but
-- nothing flushes that record when the transaction that took the value
-- rolls back: a server crash can then take S back, and the positions
-- after the restored value are handed out again. So the cursor this
-- function returns is not H but D, the highest committed position
-- <= H: its commit flushed the WAL that covers it, so no position <= D
-- can ever be taken again. Rolled-back positions above D are passed
-- once a later append commits (spec/fault_crash_spec.lua).
-- The last row returned is a marker whose r_position is NULL and whose
-- r_horizon is D (0 when there is none).
CREATE OR REPLACE FUNCTION @read_all@(p_after bigint, p_limit int, p_types text[], p_prefix text,
  p_tag int)
 RETURNS TABLE (r_position bigint, r_stream text, r_version bigint, r_id uuid, r_type text,
  r_schema_version int, r_data jsonb, r_metadata jsonb, r_time timestamptz, r_horizon bigint)
 LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE v_s bigint; v_called boolean; v_m bigint; v_h bigint; v_d bigint;
BEGIN
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION USING ERRCODE = 'PGS05', MESSAGE = 'read_all needs READ COMMITTED isolation';
  END IF;
  SELECT s.last_value, s.is_called INTO v_s, v_called FROM @seq@ s;
  IF NOT v_called THEN v_s := v_s - 1; END IF;
  SELECT min(((l.classid::bigint & 65535) << 32) | l.objid::bigint) INTO v_m FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND (l.classid::bigint >> 16) = p_tag
      AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database());
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

-- Import: events moved in from another store keep stream, version, id,
-- type, schema version, data, metadata and time; they take new
-- positions here under the same order lock. Idempotent by event id.
CREATE OR REPLACE FUNCTION @import@(p_stream text, p_events jsonb, p_tag int, OUT r_count int)
 LANGUAGE plpgsql AS $fn$
DECLARE v_last bigint; v_called boolean; v_max bigint;
BEGIN
  INSERT INTO @heads@ (stream) VALUES (p_stream) ON CONFLICT DO NOTHING;
  PERFORM 1 FROM @heads@ WHERE stream = p_stream FOR UPDATE;
  SELECT s.last_value, s.is_called INTO v_last, v_called FROM @seq@ s;
  IF NOT v_called THEN v_last := v_last - 1; END IF;
  PERFORM pg_advisory_xact_lock_shared(((p_tag::bigint << 16) | ((v_last >> 32) & 65535))::bit(32)::int,
    (v_last & 4294967295)::bit(32)::int);
  INSERT INTO @events@ (position, stream, version, id, type, schema_version, data, metadata, time)
  SELECT nextval('@seq@'), p_stream, (x.val->>'version')::bigint, (x.val->>'id')::uuid, x.val->>'type',
    (x.val->>'schema_version')::int, x.val->'data', x.val->'metadata', (x.val->>'time')::timestamptz
  FROM jsonb_array_elements(p_events) WITH ORDINALITY AS x(val, ord) ORDER BY x.ord
  ON CONFLICT (id) DO NOTHING;
  GET DIAGNOSTICS r_count = ROW_COUNT;
  SELECT max(version) INTO v_max FROM @events@ WHERE stream = p_stream;
  UPDATE @heads@ SET version = GREATEST(version, COALESCE(v_max, 0)), status = 'active',
    reason = NULL, updated_at = now() WHERE stream = p_stream;
END
$fn$;
