-- SPDX-License-Identifier: MIT
-- parked--1.sql — the projections' dead-letter table, version 1: an event
-- a handler failed on (on_error = "park"), with the error and traceback.
-- Released: frozen. Placeholder: @table@.
CREATE TABLE IF NOT EXISTS @table@ (
  projection text NOT NULL,
  position bigint NOT NULL,
  stream text NOT NULL,
  type text NOT NULL,
  event jsonb NOT NULL,
  error text NOT NULL,
  traceback text,
  parked_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (projection, position));
