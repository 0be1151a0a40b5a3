"""The scheduler's durable state: deployed APIs and jobs, in one SQLite file (WAL)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from services.scheduler.jobs import JobRecord, Status
from thresher.core.errors import ApiNotDeployed, JobNotFound
from thresher.core.sqlite import SqliteFile, transaction
from thresher.v1 import jobs_pb2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS apis (
    name TEXT PRIMARY KEY,
    spec BLOB NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    api_name TEXT NOT NULL,
    queue_name TEXT NOT NULL,
    start_time REAL NOT NULL,
    workers INTEGER NOT NULL,
    timeout_s INTEGER,
    status TEXT NOT NULL,
    status_reason TEXT NOT NULL,
    queue_url TEXT NOT NULL,
    total_batch_count INTEGER,
    items_enqueued INTEGER NOT NULL,
    end_time REAL,
    summary BLOB,
    hook BLOB,
    final_counts BLOB,
    cleaned INTEGER NOT NULL,
    owner TEXT NOT NULL DEFAULT '',         -- the name of the API key that submitted the job
    queue_calls BLOB                        -- a serialized QueueCalls: the job's queue API calls, by operation
);
CREATE INDEX IF NOT EXISTS jobs_by_api ON jobs (api_name, job_id);
CREATE TABLE IF NOT EXISTS submissions (
    job_id TEXT PRIMARY KEY,
    submission BLOB NOT NULL              -- a serialized JobSubmission, written once
);
CREATE TABLE IF NOT EXISTS failed_batches (
    job_id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    failed BLOB NOT NULL,                 -- a serialized FailedBatch
    PRIMARY KEY (job_id, batch_id)
);
"""
_COLUMNS = [
    "job_id",
    "api_name",
    "queue_name",
    "start_time",
    "workers",
    "timeout_s",
    "status",
    "status_reason",
    "queue_url",
    "total_batch_count",
    "items_enqueued",
    "end_time",
    "summary",
    "hook",
    "final_counts",
    "cleaned",
    "owner",
    "queue_calls",
    "worker_restarts",
    "worker_disruptions",
    "api_id",
    "min_workers",
    "max_workers",
]
# Columns added after the first release: (name, definition), added to older files when they are opened.
_ADDED_COLUMNS = [
    ("owner", "TEXT NOT NULL DEFAULT ''"),
    ("queue_calls", "BLOB"),
    ("worker_restarts", "INTEGER NOT NULL DEFAULT 0"),
    ("worker_disruptions", "INTEGER NOT NULL DEFAULT 0"),
    ("api_id", "TEXT NOT NULL DEFAULT ''"),
    ("min_workers", "INTEGER NOT NULL DEFAULT 0"),  # an elastic job's range; 0: fixed `workers`
    ("max_workers", "INTEGER NOT NULL DEFAULT 0"),
]
_IN_PROGRESS = ", ".join(f"'{s.value}'" for s in Status if not s.is_final)


class JobStore:
    def __init__(self, path: Path) -> None:
        """Use `await JobStore.open(path)`: it also brings an older file up to date."""
        self._file = SqliteFile(path, _SCHEMA)
        self._run = self._file.run

    @classmethod
    async def open(cls, path: Path) -> JobStore:
        store = cls(path)
        await store._run(_add_missing_columns)
        return store

    async def close(self) -> None:
        await self._file.close()

    async def put_api(self, spec: jobs_pb2.ApiSpec) -> None:
        row = (spec.name, spec.SerializeToString(), time.time())
        await self._run(lambda db: db.execute("INSERT OR REPLACE INTO apis VALUES (?, ?, ?)", row))

    async def get_api(self, name: str) -> jobs_pb2.ApiSpec:
        row = await self._run(lambda db: db.execute("SELECT spec FROM apis WHERE name = ?", (name,)).fetchone())
        if row is None:
            raise ApiNotDeployed(f"{name} is not deployed")
        return jobs_pb2.ApiSpec.FromString(row[0])

    async def list_apis(self) -> list[jobs_pb2.ApiSpec]:
        rows = await self._run(lambda db: db.execute("SELECT spec FROM apis ORDER BY name").fetchall())
        return [jobs_pb2.ApiSpec.FromString(r[0]) for r in rows]

    async def delete_api(self, name: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM apis WHERE name = ?", (name,)))

    async def delete_ended_jobs(self, api_name: str) -> int:
        """Forget the API's jobs that have ended and been cleaned up, with their submissions and dead letters; returns
        how many."""
        ended = f"SELECT job_id FROM jobs WHERE api_name = ? AND status NOT IN ({_IN_PROGRESS}) AND cleaned = 1"

        def delete(db: sqlite3.Connection) -> int:
            with transaction(db):  # all of a job or none of it
                job_ids = [(row[0],) for row in db.execute(ended, (api_name,)).fetchall()]
                for table in ("failed_batches", "submissions", "jobs"):
                    db.executemany(f"DELETE FROM {table} WHERE job_id = ?", job_ids)
            return len(job_ids)

        return await self._run(delete)

    async def put_job(self, job: JobRecord) -> None:
        values = tuple(_encode(getattr(job, c)) for c in _COLUMNS)
        statement = f"INSERT OR REPLACE INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
        await self._run(lambda db: db.execute(statement, values))

    async def put_submission(self, job_id: str, submission: jobs_pb2.JobSubmission) -> None:
        row = (job_id, submission.SerializeToString())
        await self._run(lambda db: db.execute("INSERT OR REPLACE INTO submissions VALUES (?, ?)", row))

    async def get_submission(self, job_id: str) -> jobs_pb2.JobSubmission:
        query = "SELECT submission FROM submissions WHERE job_id = ?"
        row = await self._run(lambda db: db.execute(query, (job_id,)).fetchone())
        if row is None:
            raise JobNotFound(f"unable to find job {job_id}")
        return jobs_pb2.JobSubmission.FromString(row[0])

    async def get_job(self, job_id: str) -> JobRecord:
        statement = f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE job_id = ?"
        row = await self._run(lambda db: db.execute(statement, (job_id,)).fetchone())
        if row is None:
            raise JobNotFound(f"unable to find job {job_id}")
        return _decode(row)

    async def list_jobs(
        self, api_name: str = "", limit: int = 50, unfinished_only: bool = False, owner: str = ""
    ) -> list[JobRecord]:
        """Newest first (job ids sort that way); `owner`: only the jobs that this key submitted."""
        where, params = [], []
        for column, value in (("api_name", api_name), ("owner", owner)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if unfinished_only:
            where.append(f"(status IN ({_IN_PROGRESS}) OR cleaned = 0)")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        statement = f"SELECT {', '.join(_COLUMNS)} FROM jobs {clause} ORDER BY job_id LIMIT ?"
        rows = await self._run(lambda db: db.execute(statement, (*params, limit)).fetchall())
        return [_decode(r) for r in rows]

    async def ended_before(self, cutoff: float) -> list[tuple[str, str]]:
        """(job id, API) of the jobs that ended before `cutoff` (a time.time())."""
        statement = "SELECT job_id, api_name FROM jobs WHERE end_time IS NOT NULL AND end_time < ? ORDER BY job_id"
        rows = await self._run(lambda db: db.execute(statement, (cutoff,)).fetchall())
        return [(str(r[0]), str(r[1])) for r in rows]

    async def in_progress(self, api_name: str) -> tuple[int, int]:
        """How many jobs of the API have not ended (pending, enqueuing, running), and the workers of every job that
        has not ended, together (an elastic job's as many as its scaler asks for now)."""
        counts = "COALESCE(SUM(api_name = ?), 0), COALESCE(SUM(workers), 0)"
        query = f"SELECT {counts} FROM jobs WHERE status IN ({_IN_PROGRESS})"
        row = await self._run(lambda db: db.execute(query, (api_name,)).fetchone())
        return int(row[0]), int(row[1])

    async def count_by_status(self) -> dict[tuple[str, str], int]:
        """(api name, status) -> how many jobs."""
        query = "SELECT api_name, status, COUNT(*) FROM jobs GROUP BY api_name, status"
        rows = await self._run(lambda db: db.execute(query).fetchall())
        return {(api, status): n for api, status, n in rows}

    async def put_failed_batches(self, job_id: str, batches: list[jobs_pb2.FailedBatch]) -> None:
        """Keep a job's dead letters after its queue is deleted (idempotent)."""
        rows = [(job_id, b.batch_id, b.SerializeToString()) for b in batches]
        await self._run(lambda db: db.executemany("INSERT OR REPLACE INTO failed_batches VALUES (?, ?, ?)", rows))

    async def failed_batches(self, job_id: str) -> list[jobs_pb2.FailedBatch]:
        query = "SELECT failed FROM failed_batches WHERE job_id = ? ORDER BY batch_id"
        rows = await self._run(lambda db: db.execute(query, (job_id,)).fetchall())
        return [jobs_pb2.FailedBatch.FromString(r[0]) for r in rows]


def _add_missing_columns(db: sqlite3.Connection) -> None:
    present = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    for name, definition in _ADDED_COLUMNS:
        if name not in present:
            db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")


def _encode(value: Any) -> Any:
    if isinstance(value, Status):
        return value.value
    if isinstance(value, bool):
        return int(value)
    return value


def _decode(row: tuple[Any, ...]) -> JobRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["status"] = Status(values["status"])
    values["cleaned"] = bool(values["cleaned"])
    return JobRecord(**values)
