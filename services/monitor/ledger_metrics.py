"""The ledger's metrics read: per job, outcome counts, duration histograms and workers by phase (SQL only)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.monitor.accounting import FAILED_RESULTS, Result
from thresher.v1 import jobs_pb2

PACE_WINDOW_S = 60.0  # a job's pace is measured over this last stretch of time


@dataclass
class Histogram:
    count: int
    sum_s: float
    cumulative: list[int]  # observations <= each bucket bound, in the bounds' order


@dataclass
class JobMetrics:
    api_name: str
    outcomes: dict[str, int] = field(default_factory=dict)  # succeeded batches; failed and dead-lettered attempts
    durations: dict[str, Histogram] = field(default_factory=dict)  # by the same outcomes
    workers: dict[str, int] = field(default_factory=dict)  # by phase
    batches: dict[str, int] = field(default_factory=dict)  # by state: the ledger's view of the job's queue
    hook_calls: dict[str, int] = field(default_factory=dict)  # /on-job-complete calls by outcome
    queue_calls: dict[str, int] = field(default_factory=dict)  # queue API calls by operation


def read_metrics(db: sqlite3.Connection, since: float, bounds_s: Sequence[float]) -> dict[str, JobMetrics]:
    rows = db.execute("SELECT job_id, api_name FROM jobs WHERE updated >= ?", (since,))
    jobs = {job_id: JobMetrics(api_name) for job_id, api_name in rows}
    recent = "(SELECT job_id FROM jobs WHERE updated >= ?)"
    buckets = ", ".join("COALESCE(SUM(duration_s <= ?), 0)" for _ in bounds_s)
    # Successes count once per batch (its first success); failures (and releases, after a lost worker) count per
    # attempt, as Cortex's `failed` does.
    per_attempt = (*FAILED_RESULTS, Result.RELEASED)
    rows = db.execute(
        f"SELECT job_id, 'succeeded', COUNT(*), SUM(duration_s), {buckets} FROM batches"
        f" WHERE state = 'succeeded' AND job_id IN {recent} GROUP BY job_id"
        f" UNION ALL SELECT job_id, result, COUNT(*), SUM(duration_s), {buckets} FROM attempts"
        f" WHERE result IN ({', '.join('?' * len(per_attempt))}) AND job_id IN {recent} GROUP BY job_id, result",
        (*bounds_s, since, *bounds_s, *(r.value for r in per_attempt), since),
    )
    for job_id, outcome, count, sum_s, *cumulative in rows:
        if job_id in jobs:
            jobs[job_id].outcomes[outcome] = count
            jobs[job_id].durations[outcome] = Histogram(count, sum_s or 0.0, cumulative)
    workers = db.execute(
        f"SELECT job_id, phase, COUNT(*) FROM workers WHERE job_id IN {recent} GROUP BY job_id, phase", (since,)
    )
    for job_id, phase, count in workers:
        if job_id in jobs:
            jobs[job_id].workers[phase] = count
    states = db.execute(
        f"SELECT job_id, state, COUNT(*) FROM batches WHERE job_id IN {recent} GROUP BY job_id, state", (since,)
    )
    for job_id, state, count in states:
        if job_id in jobs:
            jobs[job_id].batches[state] = count
    totals = db.execute(f"SELECT job_id, total_batch_count, hook_outcome FROM jobs WHERE job_id IN {recent}", (since,))
    for job_id, total, hook in totals:
        if job_id in jobs and total is not None:  # batches never reported yet wait on the queue
            # A split batch is no batch to settle, and adds two: total + splits, less the batches seen but split
            split = jobs[job_id].batches.get("split", 0)
            jobs[job_id].batches["pending"] = max(0, total + 2 * split - sum(jobs[job_id].batches.values()))
        if job_id in jobs and hook is not None:
            outcome = jobs_pb2.HookOutcome.FromString(hook)
            jobs[job_id].hook_calls = {
                "succeeded": int(outcome.succeeded),
                "failed": outcome.attempts - int(outcome.succeeded),
            }
    calls = db.execute(
        f"SELECT job_id, operation, SUM(calls) FROM queue_calls WHERE job_id IN {recent} GROUP BY job_id, operation",
        (since,),
    )
    for job_id, operation, count in calls:
        if job_id in jobs:
            jobs[job_id].queue_calls[operation] = count
    return jobs


def read_pace(db: sqlite3.Connection, job_id: str, now: float) -> tuple[float, float | None]:
    """(terminal batches per second over the last PACE_WINDOW_S, age of the oldest attempt in progress)."""
    first, recent = db.execute(
        "SELECT MIN(reported_at), COALESCE(SUM(reported_at >= ? AND result IN ('succeeded', 'dead_lettered')), 0)"
        " FROM attempts WHERE job_id = ?",
        (now - PACE_WINDOW_S, job_id),
    ).fetchone()
    window_s = min(PACE_WINDOW_S, now - first) if first is not None else 0.0
    (started,) = db.execute(
        "SELECT MIN(a.reported_at) FROM attempts a JOIN batches b USING (job_id, batch_id)"
        " WHERE a.job_id = ? AND a.result = 'started' AND b.state = 'in_flight' AND b.attempt = a.attempt",
        (job_id,),
    ).fetchone()
    return (recent / window_s if window_s > 0 else 0.0), (now - started if started is not None else None)
