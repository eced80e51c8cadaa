-- SPDX-License-Identifier: MIT
-- locks--1--2.sql — the lock table, version 1 to 2: fencing tokens for
-- advisory locks. A row per advisory key (the signed 64-bit key the lock is
-- taken on); every acquisition adds one to its token while holding the lock,
-- so a later holder always has a larger token, and pid names the backend
-- that holds it. Rows are never deleted: the tokens keep growing.
-- Placeholders: @table@, @tokens@ (<table>_tokens).
CREATE TABLE IF NOT EXISTS @tokens@ (
  key bigint PRIMARY KEY,
  token bigint NOT NULL,
  pid int NOT NULL);
