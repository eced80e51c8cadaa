-- SPDX-License-Identifier: MIT
-- snapshots--1.sql — the snapshot store, version 1: the latest state of
-- each stream. Released: frozen. Placeholder: @table@.
CREATE TABLE IF NOT EXISTS @table@ (
  stream text PRIMARY KEY,
  version bigint NOT NULL CHECK (version >= 0),
  schema_version integer NOT NULL DEFAULT 1 CHECK (schema_version >= 0),
  state jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now());
