-- SPDX-License-Identifier: MIT
-- events--3--4.sql — the event store, version 3 to 4: the idempotency
-- keys indexed by stream, so a hard delete (which removes the stream's
-- keys under the stream's head lock) finds them without reading every key.
-- Released: frozen. Placeholders as in events--2--3.sql, and @idem_stream@
-- (index). Building it holds off appends with keys for as long as it takes
-- on a large key table.
CREATE INDEX IF NOT EXISTS @idem_stream@ ON @idempotency@ (stream);
