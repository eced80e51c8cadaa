-- SPDX-License-Identifier: MIT
-- relay--1.sql — the relay's table, version 1: changes larger than a
-- NOTIFY payload, a row each; the NOTIFY carries "@<id>" and receivers
-- read the row back. Rows older than the sender's `keep` are deleted by
-- later large broadcasts (lua/pgstore/relay.lua). Placeholder: @table@.
CREATE TABLE IF NOT EXISTS @table@ (
  id bigserial PRIMARY KEY,
  channel text NOT NULL,
  change text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp());
