-- SPDX-License-Identifier: MIT
-- leases--1.sql — partition leases, version 1: a row per partition of a
-- named set, a row per live worker, and the fencing guard. Released:
-- frozen. Placeholders: @table@ (leases), @members@, @guard@ (function).
CREATE TABLE IF NOT EXISTS @table@ (
  name text NOT NULL,
  partition int NOT NULL CHECK (partition >= 0),
  owner text,
  token bigint NOT NULL DEFAULT 0,
  expires_at timestamptz,
  PRIMARY KEY (name, partition));

CREATE TABLE IF NOT EXISTS @members@ (
  name text NOT NULL,
  owner text NOT NULL,
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (name, owner));

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
