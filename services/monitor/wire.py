"""Proto messages to the monitor's domain and back; bad reports are rejected here with a clear error."""

from __future__ import annotations

import math

from services.monitor.accounting import BatchEvent, Event, HookEvent, Phase, QueueCalls, Result, WorkerEvent
from services.monitor.ledger import Progress
from services.monitor.ledger_counts import BatchCounts, Settlement
from thresher.core.errors import InvalidRequest
from thresher.v1 import jobs_pb2, monitor_pb2, scheduler_pb2

_RESULTS = {
    monitor_pb2.BATCH_RESULT_STARTED: Result.STARTED,
    monitor_pb2.BATCH_RESULT_SUCCEEDED: Result.SUCCEEDED,
    monitor_pb2.BATCH_RESULT_FAILED: Result.FAILED,
    monitor_pb2.BATCH_RESULT_DEAD_LETTERED: Result.DEAD_LETTERED,
    monitor_pb2.BATCH_RESULT_RELEASED: Result.RELEASED,
}
MAX_OPERATIONS = 64  # in one QueueCalls: SQS has about 20
MAX_NAME = 200  # characters of a source or an operation
MAX_QUEUE_ERROR = 1000  # characters of a worker's queue error kept
_PHASES = {
    monitor_pb2.WORKER_PHASE_STARTING: Phase.STARTING,
    monitor_pb2.WORKER_PHASE_READY: Phase.READY,
    monitor_pb2.WORKER_PHASE_STOPPING: Phase.STOPPING,
}


def decode_report(report: monitor_pb2.Report) -> Event:
    """The report's event. The monitor decodes thousands a second: each field is read once, and the text of an error
    is made only for a report that has one."""
    job_id = report.job_id
    if not job_id:
        raise InvalidRequest(f"{_where(report)}: job_id is required")
    body = report.WhichOneof("body")
    if body == "batch":
        return _decode_batch(report, job_id)
    where = _where(report)
    if body == "worker":
        if not report.worker_id:
            raise InvalidRequest(f"{where}: worker_id is required in a worker report")
        if report.worker.phase not in _PHASES:
            raise InvalidRequest(f"{where}: unknown worker phase {report.worker.phase}")
        calls = None
        if report.worker.HasField("queue_calls"):
            calls = decode_queue_calls(report.worker.queue_calls, where)
        error = report.worker.queue_error[:MAX_QUEUE_ERROR]
        return WorkerEvent(job_id, report.worker_id, _PHASES[report.worker.phase], calls, error)
    if body == "hook":
        return HookEvent(job_id, report.hook.SerializeToString(deterministic=True))
    raise InvalidRequest(f"{where}: a report needs a body (batch, worker or hook)")


def _where(report: monitor_pb2.Report) -> str:
    return f"report {report.seq}"


def decode_queue_calls(message: jobs_pb2.QueueCalls, where: str) -> QueueCalls:
    if not 0 < len(message.source) <= MAX_NAME:
        raise InvalidRequest(f"{where}: queue_calls needs a source of 1 to {MAX_NAME} characters")
    if len(message.calls) > MAX_OPERATIONS:
        raise InvalidRequest(f"{where}: queue_calls has {len(message.calls)} operations, more than {MAX_OPERATIONS}")
    for operation, calls in message.calls.items():
        if not 0 < len(operation) <= MAX_NAME or calls < 0:
            raise InvalidRequest(f"{where}: queue_calls: {operation!r}: {calls} is not an operation and a count >= 0")
    return QueueCalls(message.source, tuple(sorted(message.calls.items())))


def _decode_batch(report: monitor_pb2.Report, job_id: str) -> BatchEvent:
    batch = report.batch
    batch_id, attempt, duration_s, max_attempts = batch.batch_id, batch.attempt, batch.duration_s, batch.max_attempts
    result = _RESULTS.get(batch.result)
    if not batch_id:
        raise InvalidRequest(f"{_where(report)}: batch_id is required")
    if attempt < 1:
        raise InvalidRequest(f"{_where(report)}: attempt must be 1 or more, not {attempt}")
    if result is None:
        raise InvalidRequest(f"{_where(report)}: unknown batch result {batch.result}")
    if not math.isfinite(duration_s) or duration_s < 0:
        raise InvalidRequest(f"{_where(report)}: duration_s must be a finite number of seconds >= 0")
    if max_attempts < 0:
        raise InvalidRequest(f"{_where(report)}: max_attempts must be 0 (no limit) or more, not {max_attempts}")
    if batch.items < 0:
        raise InvalidRequest(f"{_where(report)}: items must be 0 or more, not {batch.items}")
    error, worker_id, receipt = batch.error, report.worker_id, batch.receipt
    return BatchEvent(
        job_id,
        batch_id,
        attempt,
        result,
        duration_s,
        error,
        max_attempts=max_attempts,
        bisect=batch.bisect,
        items=batch.items,
        worker_id=worker_id,
        receipt=receipt,
    )


def encode_counts(counts: BatchCounts) -> jobs_pb2.BatchCounts:
    message = jobs_pb2.BatchCounts(
        succeeded=counts.succeeded,
        failed_attempts=counts.failed_attempts,
        dead_lettered=counts.dead_lettered,
        in_flight=counts.in_flight,
        items_succeeded=counts.items_succeeded,
        items_dead_lettered=counts.items_dead_lettered,
        split=counts.split,
    )
    if counts.average_time_per_batch_s is not None:
        message.average_time_per_batch_s = counts.average_time_per_batch_s
    return message


def encode_progress(job_id: str, progress: Progress) -> monitor_pb2.JobProgress:
    message = monitor_pb2.JobProgress(
        job_id=job_id,
        batches=encode_counts(progress.batches),
        worker_counts=jobs_pb2.WorkerCounts(
            pending=progress.workers.get(Phase.STARTING, 0), ready=progress.workers.get(Phase.READY, 0)
        ),
        pace=jobs_pb2.Pace(batches_per_s=progress.batches_per_s),
    )
    if progress.oldest_in_flight_s is not None:
        message.pace.oldest_in_flight_s = progress.oldest_in_flight_s
    for worker in progress.workers_seen:
        error = progress.queue_errors.get(worker.worker_id, "")
        status = message.workers.add(worker_id=worker.worker_id, phase=worker.phase.value, queue_error=error)
        status.last_seen.FromNanoseconds(int(worker.last_seen * 1e9))
    if progress.total_batch_count is not None:
        message.total_batch_count = progress.total_batch_count
    message.queue_calls.update(progress.queue_calls)
    return message


def encode_summary(settlement: Settlement) -> scheduler_pb2.JobSummary:
    return scheduler_pb2.JobSummary(
        total_batch_count=settlement.total_batch_count,
        batches=encode_counts(settlement.batches),
        dead_lettered_batch_ids=settlement.dead_lettered_batch_ids,
    )
