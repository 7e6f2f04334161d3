-- When the current lease was granted. A claim writes only the task's row (and its slave's and
-- lane's counts); the attempt's row and its "queued -> leased" log line are written by the
-- lease's first change (started, reported, expired, given up), and readers show them from the
-- task until then. Leases granted before this column existed were recorded when granted and
-- keep it NULL.
ALTER TABLE tasks ADD COLUMN leased_ms BIGINT;
