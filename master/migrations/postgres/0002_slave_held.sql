-- Leases each slave holds (its tasks leased or running), kept by the task transitions in the
-- same transaction: a claim reads one row per slave instead of counting the slave's tasks.
ALTER TABLE slaves ADD COLUMN held BIGINT NOT NULL DEFAULT 0;
UPDATE slaves SET held = (SELECT COUNT(*) FROM tasks WHERE tasks.lease_slave = slaves.name);
