"""Recording a group of batch reports in the ledger (services/monitor/ledger.py), in its transaction.

The rows of the group's batches and of their attempts are read in one query per job, each report is decided in
memory in the order it came (so a report sees those before it in the group), and the rows are written with one
`executemany` per table: two statements per job and two per group, where one report took three (the ledger thread
was most of the monitor's CPU per report). A report is recorded at most once: an attempt keyed (job, batch,
attempt) already recorded with an outcome is a repeat and changes nothing.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable

from services.monitor.accounting import TERMINAL_STATES, Batch, BatchEvent, BatchState, Result, advance, decide

IDS_PER_QUERY = 500  # batch ids in one read (SQLite allows 32,766 variables in a statement)

BatchKey = tuple[str, str]  # (job id, batch id)
AttemptKey = tuple[str, str, int]  # (job id, batch id, attempt)

# A STARTED row may later take the attempt's result; the recorder writes only what it found new.
_WRITE_ATTEMPT = (
    "INSERT INTO attempts (job_id, batch_id, attempt, result, duration_s, error, reported_at, worker_id, receipt)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET result = excluded.result,"
    " duration_s = excluded.duration_s, error = excluded.error, reported_at = excluded.reported_at"
    " WHERE attempts.result = 'started' AND excluded.result != 'started'"
)
_WRITE_BATCH = (
    "INSERT OR REPLACE INTO batches (job_id, batch_id, state, attempt, failed_attempts, duration_s, last_error, items)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


class AttemptRecorder:
    """The ledger's rows of a group's batches, read once; `record` each report in order, then `write`."""

    def __init__(self, db: sqlite3.Connection, events: Iterable[BatchEvent]) -> None:
        self._batches: dict[BatchKey, Batch] = {}
        self._attempts: dict[AttemptKey, Result] = {}  # each attempt's result as recorded
        self._attempt_rows: list[tuple[str, str, int, str, float, str, float, str, str]] = []
        self._batch_rows: dict[BatchKey, tuple[str, str, str, int, int, float | None, str, int]] = {}
        self._splits: Counter[str] = Counter()  # job id -> its batches split here (their halves are batches now)
        by_job: dict[str, set[str]] = {}
        for event in events:
            by_job.setdefault(event.job_id, set()).add(event.batch_id)
        for job_id, batch_ids in by_job.items():
            ids = sorted(batch_ids)
            for start in range(0, len(ids), IDS_PER_QUERY):
                self._read(db, job_id, ids[start : start + IDS_PER_QUERY])

    def _read(self, db: sqlite3.Connection, job_id: str, batch_ids: list[str]) -> None:
        among = f"job_id = ? AND batch_id IN ({', '.join('?' * len(batch_ids))})"
        args = (job_id, *batch_ids)
        for batch_id, state, *rest in db.execute(
            "SELECT batch_id, state, attempt, failed_attempts, duration_s, last_error, items FROM batches"
            f" WHERE {among}",
            args,
        ):
            self._batches[job_id, batch_id] = Batch(BatchState(state), *rest)
        for batch_id, attempt, result in db.execute(
            f"SELECT batch_id, attempt, result FROM attempts WHERE {among}", args
        ):
            self._attempts[job_id, batch_id, attempt] = Result(result)

    def record(self, event: BatchEvent, now: float) -> tuple[Result, bool]:
        """Record one attempt's report; returns its result as recorded (for a repeat: as first recorded), and whether
        the batch became terminal."""
        key = (event.job_id, event.batch_id)
        batch = self._batches.get(key)
        event = decide(batch, event)
        attempt_key = (*key, event.attempt)
        stored = self._attempts.get(attempt_key)
        if stored is not None and (stored is not Result.STARTED or event.result is Result.STARTED):
            return stored, False  # a repeat
        self._attempts[attempt_key] = event.result
        self._attempt_rows.append(
            (
                *key,
                event.attempt,
                event.result.value,
                event.duration_s,
                event.error,
                now,
                event.worker_id,
                event.receipt,
            )
        )
        was_terminal = batch is not None and batch.state in TERMINAL_STATES
        was_split = batch is not None and batch.state is BatchState.SPLIT
        batch = self._batches[key] = advance(batch, event)
        self._splits[event.job_id] += batch.state is BatchState.SPLIT and not was_split
        self._batch_rows[key] = (
            *key,
            batch.state.value,
            batch.attempt,
            batch.failed_attempts,
            batch.duration_s,
            batch.last_error,
            batch.items,
        )
        return event.result, batch.state in TERMINAL_STATES and not was_terminal

    def write(self, db: sqlite3.Connection) -> None:
        """Write what `record` found new: each attempt row in report order, each batch's last state."""
        db.executemany(_WRITE_ATTEMPT, self._attempt_rows)
        db.executemany(_WRITE_BATCH, self._batch_rows.values())
        splits = [(count, job_id) for job_id, count in self._splits.items() if count]
        db.executemany("UPDATE jobs SET splits = splits + ? WHERE job_id = ?", splits)
