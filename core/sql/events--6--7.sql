-- SPDX-License-Identifier: MIT
-- events--6--7.sql — the event store, version 6 to 7: no change to the
-- schema (the series is numbered without gaps, and the runner applies
-- every step in turn).
SELECT 1;
