"""The ledger's tables (services/monitor/ledger.py): jobs, attempts, batches, workers and queue calls, in one SQLite
file."""

# Columns added since a ledger file could have been made without them (thresher/core/sqlite.py adds them).
ADDED_COLUMNS = {"jobs.splits": "INTEGER NOT NULL DEFAULT 0", "batches.items": "INTEGER NOT NULL DEFAULT 0"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    api_name TEXT NOT NULL DEFAULT '',
    queue_name TEXT NOT NULL DEFAULT '',  -- where a lost worker's batches are released
    total_batch_count INTEGER,            -- NULL until TrackJob
    splits INTEGER NOT NULL DEFAULT 0,    -- batches split in two (on_failure bisect): each adds one to the total
    settled_at REAL,                      -- when every batch was first seen terminal
    settled_notified INTEGER NOT NULL DEFAULT 0,
    hook_outcome BLOB,                    -- serialized HookOutcome, the first one reported
    hook_notified INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL                 -- last report or tracking, for /metrics retention
);
CREATE INDEX IF NOT EXISTS jobs_updated ON jobs (updated);
CREATE TABLE IF NOT EXISTS attempts (
    job_id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    result TEXT NOT NULL,
    duration_s REAL NOT NULL,
    error TEXT NOT NULL,
    reported_at REAL NOT NULL,
    worker_id TEXT NOT NULL DEFAULT '',
    receipt TEXT NOT NULL DEFAULT '',     -- of a STARTED attempt
    PRIMARY KEY (job_id, batch_id, attempt)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
    job_id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    failed_attempts INTEGER NOT NULL,
    duration_s REAL,
    last_error TEXT NOT NULL,
    items INTEGER NOT NULL DEFAULT 0,     -- as its reports say (STARTED ones do not)
    PRIMARY KEY (job_id, batch_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS batches_state ON batches (job_id, state);
CREATE TABLE IF NOT EXISTS workers (
    job_id TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    phase TEXT NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (job_id, worker_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue_calls (
    job_id TEXT NOT NULL,
    source TEXT NOT NULL,                 -- a process's running totals: a dequeuer, the enqueuer, the scheduler...
    operation TEXT NOT NULL,              -- e.g. ReceiveMessage
    calls INTEGER NOT NULL,
    PRIMARY KEY (job_id, source, operation)
) WITHOUT ROWID;
"""
