-- SPDX-License-Identifier: MIT
-- leases--1--2.sql — partition leases, version 1 to 2: the guard made
-- again as in leases--1.sql, so that leases made by 0.1 (whose guard named
-- its table unqualified, found through each caller's search_path) are
-- checked against their own table. Released: frozen. Placeholders as in
-- leases--1.sql.

-- Locks the lease row FOR SHARE inside the caller's transaction and raises
-- PGSL1 unless that owner still holds that token unexpired: a takeover (an
-- UPDATE) waits for the guarded transaction, so nothing commits under a
-- token after the token has changed.
CREATE OR REPLACE FUNCTION @guard@(p_name text, p_partition int, p_owner text, p_token bigint)
 RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE t bigint; cur_owner text; cur_token bigint;
BEGIN
  SELECT l.token INTO t FROM @table@ l
   WHERE l.name = p_name AND l.partition = p_partition AND l.owner = p_owner
     AND l.token = p_token AND l.expires_at > clock_timestamp()
   FOR SHARE OF l;
  IF NOT FOUND THEN
    SELECT l.owner, l.token INTO cur_owner, cur_token FROM @table@ l
     WHERE l.name = p_name AND l.partition = p_partition;
    RAISE EXCEPTION USING ERRCODE = 'PGSL1',
      MESSAGE = format('lease lost: partition %s of %s is no longer held by %s with token %s',
                       p_partition, p_name, p_owner, p_token),
      DETAIL = format('now held by %s with token %s', coalesce(cur_owner, 'nobody'), cur_token);
  END IF;
  RETURN t;
END
$fn$;
