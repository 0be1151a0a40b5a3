"""Batches that succeeded, reported to the monitor once the next batch is on its way to the worker.

Reporting and handing a batch to the settler are the largest part of the dequeuer's work per batch: done after the
next request is written, they overlap with the worker's work instead of delaying it. The loop flushes the successes
held after each request it writes, before waiting for more batches, and on its way out; so a success waits at most
for the next request to be written (the settler acks a batch on the queue only once its report is acked, as before).
"""

from __future__ import annotations

from services.dequeuer.reporter import Reporter
from services.dequeuer.settler import Settler
from services.dequeuer.worker import Outcome
from thresher.core.queue import Delivery
from thresher.v1 import monitor_pb2

MAX_HELD = 20  # successes held, at most (a bound: the loop flushes them after each request)


class Successes:
    def __init__(self, reporter: Reporter, settler: Settler) -> None:
        self._reporter = reporter
        self._settler = settler
        self._held: list[tuple[Delivery, Outcome]] = []

    def add(self, delivery: Delivery, outcome: Outcome) -> None:
        self._held.append((delivery, outcome))
        if len(self._held) >= MAX_HELD:
            self.flush()

    def flush(self) -> None:
        """Report every success held, and hand each to the settler."""
        held, self._held = self._held, []
        for delivery, outcome in held:
            report = batch_report(delivery, monitor_pb2.BATCH_RESULT_SUCCEEDED, outcome)
            self._settler.add(delivery, self._reporter.send(report))


def batch_report(
    delivery: Delivery, result: monitor_pb2.BatchResult.ValueType, outcome: Outcome | None = None
) -> monitor_pb2.BatchReport:
    report = monitor_pb2.BatchReport(batch_id=delivery.batch.batch_id, attempt=delivery.receive_count, result=result)
    if outcome is not None:
        report.duration_s, report.error = outcome.duration_s, outcome.error
    return report
