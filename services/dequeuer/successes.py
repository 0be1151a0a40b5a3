"""Batches that succeeded, reported to the monitor once the next batch is on its way to the worker.

Reporting and handing a batch to the settler are the largest part of the dequeuer's work per batch: done after the
next request is written, they overlap with the worker's work instead of delaying it. The loop flushes the successes
held after each request it writes, before waiting for more batches, and on its way out; so a success waits at most
for the next request to be written (the settler acks a batch on the queue only once its report is acked, as before).

A success with a result (the worker's JSON answer) is reported only once its result is stored, so that a succeeded
batch always has its result. One task stores them in the background, in groups: those flushed within STORE_AFTER_S
of the first, or while it stored the group before, as one group of the store (one file or S3 object:
thresher/core/results/groups.py). Each file costs more than its bytes, and a result waits for its batch's ack only, not
the worker. A result that cannot be stored makes the attempt a failed one.
"""

from __future__ import annotations

import asyncio

from services.dequeuer.reporter import Reporter
from services.dequeuer.settler import Settler
from services.dequeuer.worker import Outcome
from thresher.core.bisect import count_items
from thresher.core.queue import Delivery
from thresher.core.results import ResultStore
from thresher.core.retries import RetryPolicy
from thresher.v1 import monitor_pb2

MAX_HELD = 20  # successes held, at most (a bound: the loop flushes them after each request)
STORE_AFTER_S = 0.02  # a result waits this long for others to be stored with (unless MAX_HELD already wait)
MAX_TO_STORE = 4 * MAX_HELD  # results waiting to be stored, at most: the loop waits for room before another batch


class Successes:
    def __init__(
        self, reporter: Reporter, settler: Settler, results: ResultStore, job_id: str, retries: RetryPolicy
    ) -> None:
        self._reporter = reporter
        self._settler = settler
        self._results = results
        self._job_id = job_id
        self._retries = retries
        self._held: list[tuple[Delivery, Outcome]] = []
        self._to_store: list[tuple[Delivery, Outcome]] = []  # flushed successes whose results are not stored yet
        self._storing: asyncio.Task[None] | None = None
        self._stored = asyncio.Event()  # set whenever a group is stored

    def add(self, delivery: Delivery, outcome: Outcome) -> None:
        self._held.append((delivery, outcome))
        if len(self._held) >= MAX_HELD:
            self.flush()

    def flush(self) -> None:
        """Report every success held, and hand each to the settler; those with a result once it is stored."""
        held, self._held = self._held, []
        for delivery, outcome in held:
            if outcome.result:
                self._to_store.append((delivery, outcome))
            else:
                self._report(delivery, outcome)
        if self._to_store and self._storing is None:
            self._storing = asyncio.create_task(self._store(), name="store results")

    async def wait_for_room(self) -> None:
        """Wait while MAX_TO_STORE results wait to be stored (the store is slow): call before running a batch."""
        while len(self._to_store) >= MAX_TO_STORE:
            self._stored.clear()
            await self._stored.wait()

    async def drain(self, timeout_s: float) -> None:
        """Flush, and wait until every result is stored and its batch reported, `timeout_s` at most (a batch whose
        result is not stored by then stays held, and is released)."""
        self.flush()
        if self._storing is not None:
            await asyncio.wait([self._storing], timeout=timeout_s)

    async def _store(self) -> None:
        """Store the results flushed, a group at a time, until none is left; report each batch once stored."""
        try:
            while self._to_store:
                if len(self._to_store) < MAX_HELD:
                    await asyncio.sleep(STORE_AFTER_S)  # a larger group for the same cost: a file or object each
                group, self._to_store = self._to_store, []
                await self._store_then_report(group)
                self._stored.set()
        finally:
            self._storing = None

    async def _store_then_report(self, successes: list[tuple[Delivery, Outcome]]) -> None:
        entries = [
            (delivery.batch.batch_id, delivery.receive_count, outcome.result, delivery.batch.body)
            for delivery, outcome in successes
        ]
        try:
            await self._results.put_many(self._job_id, entries)
        except Exception as e:
            error = f"could not store the batch's result: {type(e).__name__}: {e}"
            for delivery, outcome in successes:
                report = failed_report(delivery, outcome, self._retries, error)
                self._settler.add(delivery, self._reporter.send(report), error)
            return
        for delivery, outcome in successes:
            self._report(delivery, outcome)

    def _report(self, delivery: Delivery, outcome: Outcome) -> None:
        report = batch_report(delivery, monitor_pb2.BATCH_RESULT_SUCCEEDED, outcome)
        self._settler.add(delivery, self._reporter.send(report))


def batch_report(
    delivery: Delivery, result: monitor_pb2.BatchResult.ValueType, outcome: Outcome | None = None
) -> monitor_pb2.BatchReport:
    report = monitor_pb2.BatchReport(batch_id=delivery.batch.batch_id, attempt=delivery.receive_count, result=result)
    if outcome is not None:
        report.duration_s, report.error = outcome.duration_s, outcome.error
        report.items = count_items(delivery.batch.body)
    return report


def failed_report(delivery: Delivery, outcome: Outcome, retries: RetryPolicy, error: str) -> monitor_pb2.BatchReport:
    """A failed attempt's report: it carries the job's limit, for the monitor's verdict (thresher/core/retries.py)."""
    report = batch_report(delivery, monitor_pb2.BATCH_RESULT_FAILED, outcome)
    report.error, report.max_attempts, report.bisect = error, retries.max_attempts, retries.bisect
    return report
