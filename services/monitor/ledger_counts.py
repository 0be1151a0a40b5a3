"""A job's counts as the ledger reads them (services/monitor/ledger.py): its batches and items, its settlement, and
which of its batches are settled."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from services.monitor.accounting import TERMINAL_STATES


@dataclass(frozen=True)
class BatchCounts:
    succeeded: int = 0
    failed_attempts: int = 0
    dead_lettered: int = 0
    in_flight: int = 0
    average_time_per_batch_s: float | None = None
    items_succeeded: int = 0
    items_dead_lettered: int = 0
    split: int = 0  # batches split in two (on_failure bisect): each is counted by its halves


@dataclass(frozen=True)
class Settlement:
    """What the scheduler is told once every batch of a job is terminal."""

    total_batch_count: int
    batches: BatchCounts
    dead_lettered_batch_ids: list[str]


def batch_counts(db: sqlite3.Connection, job_id: str) -> BatchCounts:
    row = db.execute(
        "SELECT COALESCE(SUM(state = 'succeeded'), 0), COALESCE(SUM(failed_attempts), 0),"
        " COALESCE(SUM(state = 'dead_lettered'), 0), COALESCE(SUM(state = 'in_flight'), 0),"
        " AVG(CASE WHEN state = 'succeeded' THEN duration_s END),"
        " COALESCE(SUM(CASE WHEN state = 'succeeded' THEN items END), 0),"
        " COALESCE(SUM(CASE WHEN state = 'dead_lettered' THEN items END), 0), COALESCE(SUM(state = 'split'), 0)"
        " FROM batches WHERE job_id = ?",
        (job_id,),
    ).fetchone()
    return BatchCounts(*row)


def settlement(db: sqlite3.Connection, job_id: str, total_batch_count: int) -> Settlement:
    ids = db.execute(
        "SELECT batch_id FROM batches WHERE job_id = ? AND state = 'dead_lettered' ORDER BY batch_id", (job_id,)
    )
    return Settlement(total_batch_count, batch_counts(db, job_id), [row[0] for row in ids])


def settled_batch_ids(db: sqlite3.Connection, job_id: str, from_batch_id: str, limit: int) -> list[str]:
    """The job's terminal batches from `from_batch_id` on, in id order (batch order), `limit` at most; a batch split
    (on_failure bisect) once every batch split from it is settled: its descendants are terminal but for those split,
    and each split after the first adds one batch to the first one's two halves."""
    query = (
        "SELECT batch_id FROM batches b WHERE job_id = ? AND batch_id >= ? AND instr(batch_id, '.') = 0"
        " AND (state IN (?, ?) OR state = 'split' AND (SELECT SUM(state IN (?, ?)) - SUM(state = 'split')"
        "  FROM batches d WHERE d.job_id = b.job_id AND d.batch_id > b.batch_id || '.'"
        "  AND d.batch_id < b.batch_id || '/') = 2)"  # '/' follows '.': the range of the descendants' ids
        " ORDER BY batch_id LIMIT ?"
    )
    terminal = tuple(state.value for state in TERMINAL_STATES)
    return [row[0] for row in db.execute(query, (job_id, from_batch_id, *terminal, *terminal, limit))]
