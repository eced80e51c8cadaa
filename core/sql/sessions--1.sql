-- SPDX-License-Identifier: MIT
-- sessions--1.sql — the session store, version 1: JSONB state and history
-- per session id. Released: frozen. Placeholder: @table@.
CREATE TABLE IF NOT EXISTS @table@ (
  id text PRIMARY KEY,
  version bigint NOT NULL CHECK (version >= 0),
  state jsonb NOT NULL,
  history jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(history) = 'array'),
  updated_at timestamptz NOT NULL DEFAULT now());
