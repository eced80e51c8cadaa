-- SPDX-License-Identifier: MIT
-- events--7--8.sql — the event store, version 7 to 8: a cheaper append.
--   * @append_rows@ takes the events as typed arrays (types text[], data
--     and metadata jsonb[], ids uuid[], schema versions int[]) instead of
--     one JSON document split on the server: each value is parsed once,
--     as what it is, and nothing a caller writes into one value can reach
--     another (so the client no longer checks JSON the server checks).
--     The algorithm is @append@'s of events--2--3.sql, unchanged.
--   * The order lock reads the sequence's last value with
--     pg_sequence_last_value when the caller may (USAGE or SELECT on the
--     sequence: every appender has USAGE, for nextval), and through
--     @seq_last@ otherwise or while the sequence is fresh: the same
--     number, without a SECURITY DEFINER call per transaction (which cost
--     about as much as the rest of the lock).
--   * An append under synchronous_commit = off or local raises its own
--     transaction to on (version 6 raised off to local, which does not wait
--     for a synchronous standby).
--   * The heads table leaves a fifth of each page free: a head's update
--     changes no indexed column, so with room on its page it stays a HOT
--     update (no new index entry, pruned on the page).
-- Placeholders as in events--5--6.sql, and @append_rows@ (function).
--
-- Upgrading while processes run: @append@ and its signature stay, so a
-- process of version 7 appends as before beside one of version 8; both
-- take the same order lock and the same head row.

ALTER TABLE @heads@ SET (fillfactor = 80);

CREATE OR REPLACE FUNCTION @order_lock@() RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE v_l bigint; v_oid bigint := '@events@'::regclass::oid;
BEGIN
  -- Durable on the primary and on a synchronous standby: a commit a
  -- follower may read is one a failover keeps (off and local would let a
  -- promoted standby hand its position out again).
  IF current_setting('synchronous_commit') IN ('off', 'local') THEN
    PERFORM set_config('synchronous_commit', 'on', true);
  END IF;
  IF current_setting('pgstore.order_lock_' || v_oid, true) = 'held' THEN RETURN; END IF;
  -- NULL while the sequence is fresh or set with is_called false (then
  -- L is one less than its last value: @seq_last@ says so)
  IF has_sequence_privilege('@seq@'::regclass::oid, 'USAGE, SELECT') THEN
    v_l := pg_sequence_last_value('@seq@'::regclass);
  END IF;
  IF v_l IS NULL THEN v_l := @seq_last@(); END IF;
  PERFORM pg_advisory_xact_lock_shared((v_oid << 32) | (v_l >> 32)),
    pg_advisory_xact_lock_shared(v_oid::bit(32)::int, (v_l & 4294967295)::bit(32)::int),
    set_config('pgstore.order_lock_' || v_oid, 'held', true);
END
$fn$;

-- p_types, p_data: one element per event (a NULL datum is JSON null);
-- p_metadata, p_ids, p_schema_versions: NULL, or one element per event
-- (NULL elements: no metadata, a new id, version 1). All ids or none.
CREATE OR REPLACE FUNCTION @append_rows@(p_stream text, p_expected bigint, p_types text[],
  p_data jsonb[], p_metadata jsonb[], p_ids uuid[], p_schema_versions int[], p_key text,
  p_time double precision, p_tag int, p_notify text,
  OUT r_first_version bigint, OUT r_last_version bigint, OUT r_first_position bigint,
  OUT r_last_position bigint, OUT r_count int, OUT r_replayed boolean)
 LANGUAGE plpgsql AS $fn$
DECLARE
  v_cur bigint; v_status text; v_n int := cardinality(p_types); v_events jsonb;
  v_check boolean := p_key IS NOT NULL OR p_ids IS NOT NULL; r record;
BEGIN
  IF v_n IS NULL OR v_n = 0 OR array_ndims(p_types) <> 1 OR cardinality(p_data) IS DISTINCT FROM v_n
     OR cardinality(p_metadata) <> v_n OR cardinality(p_ids) <> v_n
     OR cardinality(p_schema_versions) <> v_n OR array_position(p_types, NULL) IS NOT NULL
     OR array_position(p_ids, NULL) IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'PGS05', MESSAGE = 'append: one type and one datum per event,'
      ' and metadata, ids and schema versions for none or for each (ids for all or none)';
  END IF;
  IF v_check THEN
    -- @replay@ reads the batch's ids, and its length
    v_events := CASE WHEN p_ids IS NULL THEN '[]'::jsonb
      ELSE (SELECT jsonb_agg(jsonb_build_object('id', i)) FROM unnest(p_ids) i) END;
    SELECT * INTO r FROM @replay@(p_stream, v_events, p_key);
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
    SELECT * INTO r FROM @replay@(p_stream, v_events, p_key);
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
    VALUES (nextval('@seq@'), p_stream, v_cur + 1, COALESCE(p_ids[1], gen_random_uuid()), p_types[1],
      COALESCE(p_schema_versions[1], 1), COALESCE(p_data[1], 'null'::jsonb), p_metadata[1],
      COALESCE(to_timestamp(p_time), now()))
    RETURNING position INTO r_first_position;
    r_last_position := r_first_position;
  ELSE
    WITH ins AS (
      INSERT INTO @events@ (position, stream, version, id, type, schema_version, data, metadata, time)
      SELECT nextval('@seq@'), p_stream, v_cur + x.ord, COALESCE(x.id, gen_random_uuid()), x.type,
        COALESCE(x.sv, 1), COALESCE(x.data, 'null'::jsonb), x.meta, COALESCE(to_timestamp(p_time), now())
      FROM unnest(p_types, p_data, p_metadata, p_ids, p_schema_versions)
        WITH ORDINALITY AS x(type, data, meta, id, sv, ord) ORDER BY x.ord
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
