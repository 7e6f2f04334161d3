-- A claim writes an attempt row and a log row for every task it leases. Their foreign keys to
-- `tasks` cost a trigger each per row (a `FOR KEY SHARE` lookup of the task: 35% of a claim
-- batch's lease statement), and checked nothing the writes do not already ensure: both rows are
-- only ever written in the transaction that has just read and changed their task, and tasks are
-- never deleted. SQLite's check is an in-process B-tree lookup and stays.
ALTER TABLE attempts DROP CONSTRAINT attempts_task_id_fkey;
ALTER TABLE task_log DROP CONSTRAINT task_log_task_id_fkey;
