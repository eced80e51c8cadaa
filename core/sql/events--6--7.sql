-- SPDX-License-Identifier: MIT
-- events--6--7.sql — the event store, version 6 to 7: read_all filtered
-- by partition on the server, so a partitioned projection reads only the
-- events of the partitions it holds. Placeholders as in events--5--6.sql,
-- and @stream_key@ @partition@ (functions).
--
-- Upgrading while processes run: read_all's two new arguments have
-- defaults, so processes of version 6 call it as before.

-- A stream's key: FNV-1a 64 over the stream's UTF-8 bytes, as
-- pgs_hash_fnv1a64 (core/hash.c), the 64 bits as a bigint. Computed in
-- 32-bit halves so no product passes 2^63: the prime is 2^40 + 435, so
-- h * prime = (h << 40) + h * 435, whose high half is hi * 435 + the
-- carry of lo * 435 + lo << 8 (mod 2^32). About 0.06 µs of server CPU a
-- byte: 1.3 µs for a 20-byte name, no more than looking a stored key up
-- (1.4 µs), so it is computed as events are read and nothing is stored.
CREATE OR REPLACE FUNCTION @stream_key@(p_stream text) RETURNS bigint
 LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
DECLARE
  v_bytes bytea := convert_to(p_stream, 'UTF8');
  v_hi bigint := 3421674724; v_lo bigint := 2216829733; -- the offset basis 0xcbf29ce484222325
  v_t bigint;
BEGIN
  FOR i IN 0 .. length(v_bytes) - 1 LOOP
    v_lo := v_lo # get_byte(v_bytes, i);
    v_t := v_lo * 435;
    v_hi := (v_hi * 435 + (v_t >> 32) + (v_lo << 8)) & 4294967295;
    v_lo := v_t & 4294967295;
  END LOOP;
  RETURN (v_hi << 32) | v_lo;
END
$fn$;

-- The partition of a key among p_count, as pgs_hash_jump (core/hash.c):
-- Lamping & Veach's jump consistent hash. key := key * 2862933555777941757
-- + 1 (mod 2^64) in 32-bit halves: the multiplier is 0x27BB2EE6 << 32 |
-- 0x87B0B0FD, the low half split again as 0x87B0 << 16 | 0xB0FD so every
-- product stays below 2^63. The next bucket is the same float8 expression
-- as the C one, (b + 1) * (2^31 / ((key >> 33) + 1)), truncated: IEEE
-- doubles on both sides give the same bits. About 0.5 µs a call at 8
-- partitions, 1.2 µs at 1000 (ln(p_count) + 1 iterations on average).
CREATE OR REPLACE FUNCTION @partition@(p_key bigint, p_count int) RETURNS int
 LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
DECLARE
  v_hi bigint := (p_key >> 32) & 4294967295; v_lo bigint := p_key & 4294967295;
  v_a bigint; v_c bigint; v_s bigint; v_b bigint := -1; v_j bigint := 0;
BEGIN
  WHILE v_j < p_count LOOP
    v_b := v_j;
    v_a := v_lo * 45309;  -- 0xB0FD
    v_c := v_lo * 34736;  -- 0x87B0
    v_s := (v_a & 4294967295) + ((v_c & 65535) << 16) + 1;
    v_hi := ((v_a >> 32) + (v_c >> 16) + (v_s >> 32) + v_hi * 45309
             + (((v_hi * 34736) & 65535) << 16) + v_lo * 666578662) & 4294967295; -- 0x27BB2EE6
    v_lo := v_s & 4294967295;
    v_j := trunc((v_b + 1)::float8 * (2147483648::float8 / ((v_hi >> 1) + 1)::float8));
  END LOOP;
  RETURN v_b;
END
$fn$;

-- read_all, as in events--5--6.sql, with a partition filter: p_count NULL
-- reads every stream; else only streams whose @partition@(key, p_count) is
-- in p_parts. The filter is part of the page's WHERE, so LIMIT counts
-- only matching events and a page stays one round trip. The new
-- arguments have defaults and replace the five-argument form in this one
-- transaction, so a process of version 6 calls it as before (its prepared
-- statement is planned again) and the name stays one function.
DROP FUNCTION IF EXISTS @read_all@(bigint, int, text[], text, int);
CREATE OR REPLACE FUNCTION @read_all@(p_after bigint, p_limit int, p_types text[], p_prefix text,
  p_tag int, p_count int DEFAULT NULL, p_parts int[] DEFAULT NULL)
 RETURNS TABLE (r_position bigint, r_stream text, r_version bigint, r_id uuid, r_type text,
  r_schema_version int, r_data jsonb, r_metadata jsonb, r_time timestamptz, r_horizon bigint)
 LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE v_s bigint; v_m bigint; v_h bigint; v_d bigint; v_cap bigint;
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
  -- Filtered, a page ends at the latest after about p_limit events of
  -- the partitions asked for (p_limit × p_count / their number events of
  -- any stream), so a page of rare partitions never scans to the end; the
  -- cap is an event's position, so the cursor moves past gaps.
  IF p_count IS NOT NULL THEN
    SELECT e.position INTO v_cap FROM @events@ e WHERE e.position > p_after AND e.position <= v_h
      ORDER BY e.position
      OFFSET (p_limit::bigint * ((p_count + cardinality(p_parts) - 1) / cardinality(p_parts))) - 1 LIMIT 1;
    v_h := LEAST(v_h, v_cap); -- none that far: no cap
  END IF;
  SELECT e.position INTO v_d FROM @events@ e WHERE e.position <= v_h ORDER BY e.position DESC LIMIT 1;
  RETURN QUERY SELECT e.position, e.stream::text, e.version, e.id, e.type, e.schema_version, e.data,
    e.metadata, e.time, NULL::bigint FROM @events@ e
    WHERE e.position > p_after AND e.position <= v_h
      AND (p_types IS NULL OR e.type = ANY (p_types))
      AND (p_prefix IS NULL OR e.stream LIKE p_prefix)
      AND (p_count IS NULL OR @partition@(@stream_key@(e.stream), p_count) = ANY (p_parts))
    ORDER BY e.position LIMIT p_limit;
  RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::bigint, NULL::uuid, NULL::text, NULL::int,
    NULL::jsonb, NULL::jsonb, NULL::timestamptz, COALESCE(v_d, 0);
END
$fn$;
