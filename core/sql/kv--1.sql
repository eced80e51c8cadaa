-- SPDX-License-Identifier: MIT
-- kv--1.sql — the key-value store, version 1: BYTEA values with an
-- optional expiry, and the index cleanup scans. Keys collate "C" so that a
-- prefix LIKE can use the primary key's index whatever the database's
-- collation. Released: frozen. Placeholders: @table@, @index@ (the index's
-- unqualified name: it lives in the table's schema).
CREATE TABLE IF NOT EXISTS @table@ (
  key text COLLATE "C" PRIMARY KEY,
  value bytea NOT NULL,
  expires_at timestamptz);

CREATE INDEX IF NOT EXISTS @index@ ON @table@ (expires_at) WHERE expires_at IS NOT NULL;
