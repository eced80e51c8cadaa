-- SPDX-License-Identifier: MIT
-- checkpoints--1.sql — consumer checkpoints, version 1: the last processed
-- global position of each consumer. Released: frozen. Placeholder: @table@.
CREATE TABLE IF NOT EXISTS @table@ (
  consumer text PRIMARY KEY,
  position bigint NOT NULL CHECK (position >= 0),
  updated_at timestamptz NOT NULL DEFAULT now());
