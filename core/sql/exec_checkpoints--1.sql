-- SPDX-License-Identifier: MIT
-- exec_checkpoints--1.sql — execution checkpoints, version 1: one row per
-- execution id. Released: frozen. Placeholder: @table@.
CREATE TABLE IF NOT EXISTS @table@ (
  exec_id text PRIMARY KEY,
  checkpoint jsonb NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now());
