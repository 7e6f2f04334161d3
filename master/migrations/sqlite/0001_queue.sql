-- pyti master schema (SQLite). Keep in step with ../postgres/0001_queue.sql: same tables, same
-- columns, same meaning; only the types differ. Times are Unix milliseconds.

-- One row per distinct recipe text; tasks point at the snapshot they were submitted with.
CREATE TABLE recipe_snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
);

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    package_name TEXT NOT NULL,
    package_version TEXT,
    package_spec TEXT NOT NULL,      -- JSON PackageSpec without uploaded bytes
    upload BLOB,                      -- uploaded sdist/wheel bytes
    submitter TEXT NOT NULL,
    priority INTEGER NOT NULL,
    trigger_label TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX jobs_package ON jobs (package_name, id);
CREATE INDEX jobs_submitter ON jobs (submitter, id);
CREATE INDEX jobs_created ON jobs (created_ms);

CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    recipe TEXT NOT NULL,
    snapshot_id INTEGER NOT NULL REFERENCES recipe_snapshots (id),
    submitter TEXT NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,              -- queued | leased | running | finished | cancelled
    verdict TEXT,                     -- set when finished
    attempt INTEGER NOT NULL,         -- current attempt, 1-based
    lease_id TEXT,
    lease_slave TEXT,
    lease_expires_ms INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
-- Dispatch reads only queued tasks: a partial index keeps it small however many finished.
CREATE INDEX tasks_queued ON tasks (recipe, priority, submitter, id) WHERE state = 'queued';
CREATE INDEX tasks_job ON tasks (job_id);
-- No index on state alone: the planner would prefer it to `id IN (...)` and scan every queued
-- task (state is never selective here); /metrics counts with a scan instead.
CREATE INDEX tasks_slave ON tasks (lease_slave) WHERE lease_slave IS NOT NULL;
CREATE INDEX tasks_lease_expiry ON tasks (lease_expires_ms) WHERE lease_expires_ms IS NOT NULL;

-- A lane is (recipe, priority, submitter) with its queued count; dispatch serves the highest
-- priority, then the lane served longest ago (fair share across submitters).
CREATE TABLE lanes (
    recipe TEXT NOT NULL,
    priority INTEGER NOT NULL,
    submitter TEXT NOT NULL,
    queued INTEGER NOT NULL,
    last_served INTEGER NOT NULL,
    PRIMARY KEY (recipe, priority, submitter)
);
CREATE INDEX lanes_pick ON lanes (priority, last_served) WHERE queued > 0;

-- Every attempt at a task, kept forever.
CREATE TABLE attempts (
    task_id INTEGER NOT NULL REFERENCES tasks (id),
    attempt INTEGER NOT NULL,
    slave TEXT NOT NULL,
    lease_id TEXT NOT NULL,
    leased_ms INTEGER NOT NULL,
    started_ms INTEGER,
    finished_ms INTEGER,
    outcome TEXT,                     -- pass|fail|error|timeout|tmpfail|lease_expired|cancelled
    reason TEXT,
    report_sha256 TEXT,               -- hash of the report, to recognise a repeat
    raw_result TEXT,                  -- JSON RawResult
    PRIMARY KEY (task_id, attempt)
);

CREATE TABLE task_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id INTEGER NOT NULL REFERENCES tasks (id),
    attempt INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    phase TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX task_log_task ON task_log (task_id, id);

CREATE TABLE slaves (
    name TEXT PRIMARY KEY,
    recipes TEXT NOT NULL,            -- JSON array
    slots INTEGER NOT NULL,
    registered_ms INTEGER NOT NULL,
    last_heartbeat_ms INTEGER NOT NULL
);

CREATE TABLE tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);
CREATE UNIQUE INDEX tokens_active_name ON tokens (name) WHERE revoked_ms IS NULL;
