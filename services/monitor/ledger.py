"""The SQLite ledger (WAL, one file): every batch's attempts and state, workers, and what the scheduler was told.

All SQL of the monitor lives here, in ledger_schema.py (the tables), ledger_attempts.py (batch reports),
ledger_counts.py (a job's counts and settled batches) and ledger_metrics.py (the scrape). One thread owns the
connection, so calls are serialized and the event loop never blocks on the disk. A report is recorded at most once:
attempts are keyed by (job, batch, attempt), and a repeated report changes nothing.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from services.monitor.accounting import (
    BatchEvent,
    Event,
    HookEvent,
    Phase,
    QueueCalls,
    Result,
    WorkerEvent,
    is_settled,
)
from services.monitor.ledger_attempts import AttemptRecorder
from services.monitor.ledger_counts import BatchCounts, Settlement, batch_counts, settled_batch_ids, settlement
from services.monitor.ledger_metrics import JobMetrics, read_metrics, read_pace
from services.monitor.ledger_schema import ADDED_COLUMNS, SCHEMA
from services.monitor.terminal_counts import TerminalCounts
from thresher.core.errors import WrongState
from thresher.core.sqlite import SqliteFile, transaction


@dataclass(frozen=True)
class WorkerSeen:
    worker_id: str
    phase: Phase
    last_seen: float


@dataclass(frozen=True)
class Progress:
    api_name: str = ""
    total_batch_count: int | None = None
    batches: BatchCounts = BatchCounts()
    workers: dict[Phase, int] = field(default_factory=dict)
    workers_seen: list[WorkerSeen] = field(default_factory=list)
    batches_per_s: float = 0.0  # batches that became terminal per second, over the last PACE_WINDOW_S
    oldest_in_flight_s: float | None = None
    queue_calls: dict[str, int] = field(default_factory=dict)  # by operation, every source's
    queue_errors: dict[str, str] = field(default_factory=dict)  # worker id -> why its receives keep failing


@dataclass(frozen=True)
class Pending:
    """Notifications recorded for a job and not yet acknowledged by the scheduler."""

    settlement: Settlement | None = None
    hook_outcome: bytes | None = None


@dataclass(frozen=True)
class Applied:
    """What recording a group of events brought."""

    notify: set[str]  # jobs with a notification to send to the scheduler
    verdicts: dict[int, Result]  # index of an event whose batch is to be dead-lettered or split -> which


@dataclass(frozen=True)
class HeldBatch:
    """A batch a worker was working on (or split, and may not have acked yet), with what it takes to release it."""

    batch_id: str
    attempt: int
    receipt: str


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        # FULL: a report is acked only once it is on disk, and the dequeuer then deletes the batch for good. The
        # reader: status reads (progress, settled batches, /metrics) must not wait behind the writer's fsyncs.
        self._file = SqliteFile(path, SCHEMA, synchronous="FULL", reader=True, added=ADDED_COLUMNS)
        self._run = self._file.run
        self._terminal = TerminalCounts()

    async def close(self) -> None:
        await self._file.close()

    async def apply(self, events: Sequence[Event], names: dict[str, tuple[str, str]] | None = None) -> Applied:
        """Record `events` in one transaction. `names`: job id -> (api name, queue name), as the reports say."""
        names = names or {}

        def apply(db: sqlite3.Connection) -> Applied:
            now = time.time()
            touched = {e.job_id for e in events}
            with transaction(db):
                db.executemany(
                    "INSERT INTO jobs (job_id, api_name, queue_name, updated) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT DO UPDATE SET updated = excluded.updated,"
                    " api_name = CASE WHEN api_name = '' THEN excluded.api_name ELSE api_name END,"
                    " queue_name = CASE WHEN queue_name = '' THEN excluded.queue_name ELSE queue_name END",
                    [(job_id, *names.get(job_id, ("", "")), now) for job_id in touched],
                )
                notify: set[str] = set()
                verdicts: dict[int, Result] = {}
                added: Counter[str] = Counter()  # job id -> its batches that became terminal here
                ended = {
                    _attempt_key(e) for e in events if isinstance(e, BatchEvent) and e.result is not Result.STARTED
                }
                # The receipts of attempts that end in this group: their rows keep them (see held_by).
                receipts = {
                    key: e.receipt
                    for e in events
                    if isinstance(e, BatchEvent) and e.result is Result.STARTED and (key := _attempt_key(e)) in ended
                }
                attempts = AttemptRecorder(db, (e for e in events if isinstance(e, BatchEvent)))
                for index, event in enumerate(events):
                    if isinstance(event, BatchEvent):
                        if event.result is Result.STARTED and _attempt_key(event) in ended:
                            continue  # the attempt's outcome is in this group too: its row says all, in one write
                        if receipts and not event.receipt and (receipt := receipts.get(_attempt_key(event))):
                            event = replace(event, receipt=receipt)
                        result, terminal = attempts.record(event, now)
                        added[event.job_id] += terminal
                        if result in (Result.DEAD_LETTERED, Result.SPLIT):
                            verdicts[index] = result
                    elif _apply_one(db, event, now):
                        notify.add(event.job_id)
                attempts.write(db)
                # Any report shows its worker alive: a worker busy with batches need not send heartbeats.
                reporting = {(e.job_id, e.worker_id) for e in events if isinstance(e, BatchEvent)}
                db.executemany(
                    "UPDATE workers SET last_seen = ? WHERE job_id = ? AND worker_id = ?",
                    [(now, job_id, worker_id) for job_id, worker_id in reporting],
                )
                notify |= {job_id for job_id in touched if self._settle_if_done(db, job_id, now, added[job_id])}
            self._terminal.commit(added)
            return Applied(notify, verdicts)

        return await self._run(apply)

    async def held_by(self, job_id: str, worker_id: str) -> tuple[str, list[HeldBatch]]:
        """The job's queue and the batches `worker_id` may still hold: their newest attempt is its, and they are not
        terminal. That includes an attempt it reported failed or released: the report is acked before the dequeuer
        releases the batch on the queue, so a dequeuer lost in between still holds it. Releasing one it did release
        changes nothing (its receipt is stale)."""

        def held(db: sqlite3.Connection) -> tuple[str, list[HeldBatch]]:
            row = db.execute("SELECT queue_name FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            rows = db.execute(
                "SELECT a.batch_id, a.attempt, a.receipt FROM attempts a JOIN batches b USING (job_id, batch_id)"
                " WHERE a.job_id = ? AND a.worker_id = ? AND a.receipt != ''"
                " AND b.state IN ('in_flight', 'retrying', 'split')"
                " AND b.attempt = a.attempt",
                (job_id, worker_id),
            )
            return (row[0] if row else ""), [HeldBatch(*r) for r in rows]

        return await self._run(held)

    async def worker_phase(self, job_id: str, worker_id: str) -> Phase | None:
        query = "SELECT phase FROM workers WHERE job_id = ? AND worker_id = ?"
        row = await self._run(lambda db: db.execute(query, (job_id, worker_id)).fetchone())
        return Phase(row[0]) if row else None

    async def silent_workers(self, cutoff: float) -> list[tuple[str, str]]:
        """(job id, worker id) of workers still starting or ready that have said nothing since `cutoff`."""
        query = "SELECT job_id, worker_id FROM workers WHERE phase IN ('starting', 'ready') AND last_seen < ?"
        return await self._run(lambda db: [(r[0], r[1]) for r in db.execute(query, (cutoff,))])

    async def track(self, job_id: str, api_name: str, total_batch_count: int) -> set[str]:
        """The job has `total_batch_count` batches (idempotent); returns {job_id} if it just settled."""

        def track(db: sqlite3.Connection) -> set[str]:
            now = time.time()
            with transaction(db):
                row = db.execute("SELECT api_name, total_batch_count FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
                if row and row[1] is not None and row[1] != total_batch_count:
                    raise WrongState(f"job {job_id} is tracked with {row[1]} batches, not {total_batch_count}")
                if row and row[0] and api_name and row[0] != api_name:
                    raise WrongState(f"job {job_id} belongs to API {row[0]!r}, not {api_name!r}")
                db.execute(
                    "INSERT INTO jobs (job_id, api_name, total_batch_count, updated) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT DO UPDATE SET total_batch_count = excluded.total_batch_count,"
                    " updated = excluded.updated,"
                    " api_name = CASE WHEN api_name = '' THEN excluded.api_name ELSE api_name END",
                    (job_id, api_name, total_batch_count, now),
                )
                return {job_id} if self._settle_if_done(db, job_id, now) else set()

        return await self._run(track)

    async def progress(self, job_id: str) -> Progress:
        """The job's counts now; an unknown job has none yet."""

        def progress(db: sqlite3.Connection) -> Progress:
            row = db.execute("SELECT api_name, total_batch_count FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                return Progress()
            seen = [
                WorkerSeen(w, Phase(p), t)
                for w, p, t in db.execute(
                    "SELECT worker_id, phase, last_seen FROM workers WHERE job_id = ? ORDER BY worker_id", (job_id,)
                )
            ]
            counts: dict[Phase, int] = {}
            for worker in seen:
                counts[worker.phase] = counts.get(worker.phase, 0) + 1
            rate, oldest = read_pace(db, job_id, time.time())
            calls = dict(
                db.execute(
                    "SELECT operation, SUM(calls) FROM queue_calls WHERE job_id = ? GROUP BY operation", (job_id,)
                ).fetchall()
            )
            return Progress(row[0], row[1], batch_counts(db, job_id), counts, seen, rate, oldest, calls)

        return await self._file.read(progress)

    async def settled_batches(self, job_id: str, from_batch_id: str, limit: int) -> list[str]:
        """The job's settled batches from `from_batch_id` on, in id order (batch order), `limit` at most."""
        return await self._file.read(lambda db: settled_batch_ids(db, job_id, from_batch_id, limit))

    async def record_queue_calls(self, job_id: str, api_name: str, calls: Sequence[QueueCalls]) -> None:
        """Keep the newest running totals of each source (idempotent: totals only grow)."""

        def record(db: sqlite3.Connection) -> None:
            with transaction(db):
                db.execute(
                    "INSERT INTO jobs (job_id, api_name, updated) VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET"
                    " updated = excluded.updated,"
                    " api_name = CASE WHEN api_name = '' THEN excluded.api_name ELSE api_name END",
                    (job_id, api_name, time.time()),
                )
                for source in calls:
                    _record_queue_calls(db, job_id, source)

        await self._run(record)

    async def pending(self, job_id: str) -> Pending:
        def pending(db: sqlite3.Connection) -> Pending:
            row = db.execute(
                "SELECT total_batch_count, settled_at IS NOT NULL AND NOT settled_notified,"
                " CASE WHEN hook_notified THEN NULL ELSE hook_outcome END FROM jobs WHERE job_id = ?",
                (job_id,),
            ).fetchone()
            if row is None:
                return Pending()
            total, settle, hook = row
            return Pending(settlement(db, job_id, total) if settle else None, hook)

        return await self._run(pending)

    async def mark_settlement_notified(self, job_id: str) -> None:
        await self._run(lambda db: db.execute("UPDATE jobs SET settled_notified = 1 WHERE job_id = ?", (job_id,)))

    async def mark_hook_notified(self, job_id: str) -> None:
        await self._run(lambda db: db.execute("UPDATE jobs SET hook_notified = 1 WHERE job_id = ?", (job_id,)))

    async def jobs_to_notify(self) -> list[str]:
        """Jobs whose settlement or hook outcome the scheduler has not acknowledged yet (e.g. it was down)."""
        query = (
            "SELECT job_id FROM jobs WHERE (settled_at IS NOT NULL AND NOT settled_notified)"
            " OR (hook_outcome IS NOT NULL AND NOT hook_notified)"
        )
        return await self._run(lambda db: [row[0] for row in db.execute(query)])

    def _settle_if_done(self, db: sqlite3.Connection, job_id: str, now: float, added: int = 0) -> bool:
        """Mark the job settled the first time every batch is terminal (`added` of them in this transaction); True
        then."""
        row = db.execute(
            "SELECT total_batch_count, splits FROM jobs"
            " WHERE job_id = ? AND settled_at IS NULL AND total_batch_count IS NOT NULL",
            (job_id,),
        ).fetchone()
        if row is None or not is_settled(row[0], self._terminal.count(db, job_id, added), row[1]):
            return False
        db.execute("UPDATE jobs SET settled_at = ? WHERE job_id = ?", (now, job_id))
        self._terminal.forget(job_id)
        return True

    async def metrics(self, since: float, bounds_s: Sequence[float]) -> dict[str, JobMetrics]:
        """Per job updated since `since`: outcome counts, duration histograms and workers by phase."""
        return await self._file.read(lambda db: read_metrics(db, since, bounds_s))


def _apply_one(db: sqlite3.Connection, event: WorkerEvent | HookEvent, now: float) -> bool:
    """Record a worker or hook event; True if it brings a notification to send (a first hook outcome)."""
    if isinstance(event, WorkerEvent):
        db.execute(
            "INSERT INTO workers (job_id, worker_id, phase, last_seen) VALUES (?, ?, ?, ?)"
            " ON CONFLICT DO UPDATE SET phase = excluded.phase, last_seen = excluded.last_seen",
            (event.job_id, event.worker_id, event.phase.value, now),
        )
        if event.queue_calls is not None:
            _record_queue_calls(db, event.job_id, event.queue_calls)
    elif isinstance(event, HookEvent):
        cursor = db.execute(
            "UPDATE jobs SET hook_outcome = ? WHERE job_id = ? AND hook_outcome IS NULL", (event.outcome, event.job_id)
        )
        return cursor.rowcount == 1
    return False


def _record_queue_calls(db: sqlite3.Connection, job_id: str, source: QueueCalls) -> None:
    db.executemany(
        "INSERT INTO queue_calls (job_id, source, operation, calls) VALUES (?, ?, ?, ?)"
        " ON CONFLICT DO UPDATE SET calls = MAX(calls, excluded.calls)",  # a late, older total changes nothing
        [(job_id, source.source, operation, calls) for operation, calls in source.calls],
    )


def _attempt_key(event: BatchEvent) -> tuple[str, str, int]:
    return event.job_id, event.batch_id, event.attempt
