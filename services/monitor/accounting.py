"""The ledger's accounting rules: what one new report does to its batch. Pure, no I/O.

A batch counts once: succeeded if any attempt succeeded (even after it was dead-lettered), else
dead-lettered if its last attempt failed for good, else in flight or waiting for a retry according to
the report of its newest attempt. A batch split in two (on_failure bisect) counts as neither: its two halves, new
batches, count instead; it stays split whatever a late report of it says. Duplicate reports never reach these rules
(the ledger drops them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from thresher.core.retries import RetryPolicy, Verdict


class Result(StrEnum):
    """What one attempt of a batch reported."""

    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # will be tried again (as the dequeuer reports it: `decide` may make it DEAD_LETTERED)
    DEAD_LETTERED = "dead_lettered"  # the last attempt failed: the batch is in the dead letter queue
    RELEASED = "released"  # abandoned through no fault of the batch (worker lost, drained); not a failure
    SPLIT = "split"  # the last attempt failed, and the batch's two halves are sent as new batches


class BatchState(StrEnum):
    IN_FLIGHT = "in_flight"
    RETRYING = "retrying"  # an attempt failed; the batch is back on the queue
    SUCCEEDED = "succeeded"
    DEAD_LETTERED = "dead_lettered"
    SPLIT = "split"  # replaced by its two halves


TERMINAL_STATES = (BatchState.SUCCEEDED, BatchState.DEAD_LETTERED)
FAILED_RESULTS = (Result.FAILED, Result.DEAD_LETTERED, Result.SPLIT)  # those that use one of the batch's attempts


class Phase(StrEnum):
    """A worker's phase, as its dequeuer reports it."""

    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    LOST = "lost"  # its stream broke or its heartbeats stopped; its batches were released


@dataclass(frozen=True)
class BatchEvent:
    job_id: str
    batch_id: str
    attempt: int
    result: Result
    duration_s: float = 0.0
    error: str = ""
    max_attempts: int = 0  # FAILED: the job's RetryPolicy (thresher/core/retries.py), as its dequeuer says it
    bisect: bool = False  # FAILED: the job's on_failure is bisect (its RetryPolicy too)
    items: int = 0  # the batch's items (all but STARTED)
    worker_id: str = ""
    receipt: str = ""  # STARTED: the queue receipt, to release the batch if its worker is lost


@dataclass(frozen=True)
class QueueCalls:
    """Queue API calls one process made for a job: running totals by operation, which only grow."""

    source: str  # unique per process: a restarted one starts from zero under a new name
    calls: tuple[tuple[str, int], ...]  # (operation, calls)


@dataclass(frozen=True)
class WorkerEvent:
    job_id: str
    worker_id: str
    phase: Phase
    queue_calls: QueueCalls | None = None  # the dequeuer's (or, for LOST, the monitor's own) calls so far
    queue_error: str = ""  # why the dequeuer's receives keep failing, if they do


@dataclass(frozen=True)
class HookEvent:
    job_id: str
    outcome: bytes  # a serialized thresher.v1.HookOutcome, forwarded as is


Event = BatchEvent | WorkerEvent | HookEvent


@dataclass(frozen=True)
class Batch:
    """One batch as the ledger keeps it."""

    state: BatchState
    attempt: int  # the newest attempt reported
    failed_attempts: int
    duration_s: float | None  # of its first successful attempt
    last_error: str
    items: int = 0


_UNSEEN = Batch(BatchState.IN_FLIGHT, attempt=0, failed_attempts=0, duration_s=None, last_error="")


def decide(batch: Batch | None, event: BatchEvent) -> BatchEvent:
    """The event as recorded: a FAILED attempt that the retry policy (thresher/core/retries.py) finds to be the
    batch's last dead-letters it, or splits it. A batch split already is split again (its dequeuer was lost before it
    acked it: the halves are sent again, harmlessly); one that succeeded or was dead-lettered is never split.

    Attempts are counted here, from reported failures only, so that a worker lost mid-batch (no failure
    reported) never uses up a batch's attempts, whatever the queue's own receive count says.
    """
    if event.result is not Result.FAILED:
        return event
    if batch is not None and batch.state is BatchState.SPLIT:
        return dataclasses.replace(event, result=Result.SPLIT)
    failed_before = batch.failed_attempts if batch else 0
    verdict = RetryPolicy(event.max_attempts, event.bisect).after_failure(failed_before, event.items)
    if verdict is Verdict.SPLIT and batch is not None and batch.state in TERMINAL_STATES:
        verdict = Verdict.DEAD_LETTER
    return dataclasses.replace(event, result=_VERDICT_RESULTS[verdict]) if verdict is not Verdict.RETRY else event


_VERDICT_RESULTS = {Verdict.DEAD_LETTER: Result.DEAD_LETTERED, Verdict.SPLIT: Result.SPLIT}


def advance(batch: Batch | None, event: BatchEvent) -> Batch:
    """The batch after a new (never seen before) report of one of its attempts."""
    batch = batch or _UNSEEN
    failed = event.result in FAILED_RESULTS
    first_success = event.result is Result.SUCCEEDED and batch.state is not BatchState.SUCCEEDED
    return Batch(  # every field given: dataclasses.replace would cost more than the rest (once per report)
        state=_next_state(batch, event),
        attempt=max(batch.attempt, event.attempt),
        failed_attempts=batch.failed_attempts + failed,
        duration_s=event.duration_s if first_success else batch.duration_s,
        last_error=event.error if failed else batch.last_error,
        items=event.items or batch.items,
    )


def _next_state(batch: Batch, event: BatchEvent) -> BatchState:
    if batch.state is BatchState.SPLIT or event.result is Result.SPLIT:
        return BatchState.SPLIT  # its halves count from now on, even if a late report says it succeeded
    if batch.state is BatchState.SUCCEEDED or event.result is Result.SUCCEEDED:
        return BatchState.SUCCEEDED
    if batch.state is BatchState.DEAD_LETTERED or event.result is Result.DEAD_LETTERED:
        return BatchState.DEAD_LETTERED
    if event.attempt < batch.attempt:
        return batch.state  # a late report of an older attempt says nothing about the batch now
    return BatchState.IN_FLIGHT if event.result is Result.STARTED else BatchState.RETRYING  # failed or released


def is_settled(total_batch_count: int | None, terminal_batches: int, splits: int = 0) -> bool:
    """Every batch of the job is terminal (more than the total would be a sender's bug; it settles too). Each of
    `splits` batches split replaced one batch with two."""
    return total_batch_count is not None and terminal_batches >= total_batch_count + splits
