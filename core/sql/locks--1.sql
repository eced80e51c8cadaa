-- SPDX-License-Identifier: MIT
-- locks--1.sql — the lock table (table-mode locks, for servers without
-- advisory locks), version 1: a row per key, taken by compare-and-set and
-- held for a TTL. Released: frozen. Placeholder: @table@.
CREATE TABLE IF NOT EXISTS @table@ (
  key text PRIMARY KEY,
  owner text NOT NULL,
  token bigint NOT NULL,
  expires_at timestamptz NOT NULL);
