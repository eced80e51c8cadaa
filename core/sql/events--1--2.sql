-- SPDX-License-Identifier: MIT
-- events--1--2.sql — the event store, version 1 to 2: read_all's cursor
-- stops at the last committed position (see "Crashes" in events--1.sql),
-- and a racing retry replays without raising (see "Append" there).
-- Released: frozen. Placeholders as in events--1.sql.

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
