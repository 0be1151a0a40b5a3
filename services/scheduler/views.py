"""What the scheduler shows of a job: the Job message, the worker's job spec, the hook's summary."""

from __future__ import annotations

import json
import time
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from services.scheduler.jobs import JobRecord, Status
from thresher.core.config import Config
from thresher.core.queue import DeadLetter
from thresher.core.runtime import WorkerCount, WorkerPhase, WorkerState
from thresher.v1 import jobs_pb2, monitor_pb2, scheduler_pb2

READY = "ready"  # a worker's phase in the monitor's report once its dequeuer found it ready


def max_receive_count(submission: jobs_pb2.JobSubmission, config: Config) -> int:
    if submission.HasField("sqs_dead_letter_queue"):
        return submission.sqs_dead_letter_queue.max_receive_count
    return config.queue.max_receive_count


def batch_timeout_s(submission: jobs_pb2.JobSubmission, config: Config) -> float:
    return submission.batch_timeout_s if submission.HasField("batch_timeout_s") else config.dequeuer.batch_timeout_s


def job_message(
    job: JobRecord,
    submission: jobs_pb2.JobSubmission,
    config: Config,
    progress: monitor_pb2.JobProgress | None = None,
    batches_in_queue: int = 0,
    workers: list[WorkerState] | None = None,
    scaling: jobs_pb2.Scaling | None = None,
) -> jobs_pb2.Job:
    """The Job message: the stored record, plus live progress and its `workers` while the job runs. Its status is
    `enqueuing` until every batch is on the queue, as Cortex's, even while workers take the first ones. An elastic
    job's `workers` is the count its scaler asks for now, and `scaling` says why."""
    message = jobs_pb2.Job(
        job_id=job.job_id,
        api_name=job.api_name,
        workers=job.workers,
        config_json=submission.config_json,
        queue_url=job.queue_url,
        start_time=_timestamp(job.start_time),
        status=job.status.proto,
        status_reason=job.status_reason,
        batches_in_queue=batches_in_queue,
        items_enqueued=job.items_enqueued,
        batch_timeout_s=batch_timeout_s(submission, config),
        max_receive_count=max_receive_count(submission, config),
        worker_restarts=job.worker_restarts if workers is None else sum(w.crashed for w in workers),
        worker_disruptions=job.worker_disruptions if workers is None else sum(w.disrupted for w in workers),
        retry_of=submission.retry_of,
        owner=job.owner,
        api_id=job.api_id,
        on_failure=submission.on_failure,
    )
    if scaling is not None:
        message.scaling.CopyFrom(scaling)
    if submission.HasField("timeout_s"):
        message.timeout_s = submission.timeout_s
    if submission.HasField("sqs_dead_letter_queue"):
        message.sqs_dead_letter_queue.CopyFrom(submission.sqs_dead_letter_queue)
    if job.total_batch_count is not None:
        message.total_batch_count = job.total_batch_count
    if job.end_time is not None:
        message.end_time.CopyFrom(_timestamp(job.end_time))
    if job.hook is not None:
        message.hook.ParseFromString(job.hook)
    if job.final_counts is not None:
        message.batches.ParseFromString(job.final_counts)
    elif progress is not None:
        message.batches.CopyFrom(progress.batches)
        message.workers_detail.extend(progress.workers)
        message.pace.CopyFrom(progress.pace)
        _add_remaining(message)
    if workers is None:  # ended: the runtime forgot its workers; the crashes are what the job kept
        message.worker_counts.failed = message.worker_restarts
    else:
        message.worker_counts.CopyFrom(worker_counts(workers, progress))
    if job.queue_calls is not None:
        message.queue_calls.update(jobs_pb2.QueueCalls.FromString(job.queue_calls).calls)
    elif progress is not None:
        message.queue_calls.update(progress.queue_calls)
    return message


def worker_counts(workers: list[WorkerState], progress: monitor_pb2.JobProgress | None) -> jobs_pb2.WorkerCounts:
    """The workers by Cortex's keys, as the runtime sees them; a running worker whose dequeuer reports it ready is
    ready (the local runtime knows no readiness of its own)."""
    ready = {w.worker_id for w in progress.workers if w.phase == READY} if progress is not None else set()
    counts = jobs_pb2.WorkerCounts()
    for worker in workers:
        count = worker.count
        if count is WorkerCount.NOT_READY and worker.worker_id in ready:
            count = WorkerCount.READY
        setattr(counts, count.value, getattr(counts, count.value) + 1)
    return counts


def _add_remaining(message: jobs_pb2.Job) -> None:
    """Pending batches and, at the current pace, the time left: both need the batch count."""
    if not message.HasField("total_batch_count"):
        return
    b = message.batches
    left = max(0, message.total_batch_count + b.split - b.succeeded - b.dead_lettered)  # a split adds a batch
    b.pending = max(0, left - b.in_flight)
    if message.pace.batches_per_s > 0:
        message.pace.eta_s = left / message.pace.batches_per_s


def waiting_reason(workers: list[WorkerState], progress: monitor_pb2.JobProgress | None) -> str:
    """Why a job in progress is not moving, in words, or "" when a worker is taking batches."""
    failing = [w for w in progress.workers if w.queue_error] if progress is not None else []
    if failing:
        return f"{len(failing)} workers cannot receive batches from the queue: {failing[-1].queue_error}"
    if progress is not None and progress.worker_counts.ready > 0:
        return ""
    pending = [w for w in workers if w.phase is WorkerPhase.PENDING]
    if pending:
        return f"{len(pending)} workers pending: {pending[-1].reason or 'not scheduled yet'}"
    crashed = [w for w in workers if w.crashed]
    if crashed and not any(w.phase is WorkerPhase.RUNNING for w in workers):
        return f"worker restarting: {crashed[-1].reason}"
    if progress is not None and progress.worker_counts.pending > 0:
        return f"{progress.worker_counts.pending} workers starting: waiting for the worker's readiness check"
    return ""


def job_spec(job: JobRecord, submission: jobs_pb2.JobSubmission) -> dict[str, Any]:
    """The job spec a worker reads from $THRESHER_JOB_SPEC (Cortex's /cortex/spec/job.json)."""
    spec: dict[str, Any] = {
        "job_id": job.job_id,
        "api_name": job.api_name,
        "kind": "BatchAPI",
        "workers": submission.workers or submission.max_workers,  # an elastic job's: at most
        "config": json.loads(submission.config_json) if submission.config_json else None,
        "timeout": submission.timeout_s if submission.HasField("timeout_s") else None,
        "sqs_dead_letter_queue": _dead_letter_json(submission),
        "api_id": job.api_id,
        "sqs_url": job.queue_url,
        "start_time": iso_time(job.start_time),
    }
    if job.total_batch_count is not None:
        spec["total_batch_count"] = job.total_batch_count
    return spec


def hook_summary(job: JobRecord, summary: scheduler_pb2.JobSummary) -> bytes:
    """The JSON body of /on-job-complete."""
    counts = summary.batches
    now = time.time()
    body = {
        "message": "job_complete",
        "job_id": job.job_id,
        "api_name": job.api_name,
        "status": (Status.COMPLETED_WITH_FAILURES if counts.dead_lettered else Status.SUCCEEDED).value,
        "total_batch_count": summary.total_batch_count,
        "succeeded": counts.succeeded,
        "failed": counts.failed_attempts,
        "dead_lettered": counts.dead_lettered,
        "items_succeeded": counts.items_succeeded,
        "items_dead_lettered": counts.items_dead_lettered,
        "split": counts.split,
        "average_time_per_batch": (
            counts.average_time_per_batch_s if counts.HasField("average_time_per_batch_s") else None
        ),
        "dead_lettered_batch_ids": list(summary.dead_lettered_batch_ids),
        "start_time": iso_time(job.start_time),
        "duration_s": round(now - job.start_time, 3),
    }
    return json.dumps(body).encode()


def iso_time(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1000):03d}Z"


def _dead_letter_json(submission: jobs_pb2.JobSubmission) -> dict[str, Any] | None:
    if not submission.HasField("sqs_dead_letter_queue"):
        return None
    dlq = submission.sqs_dead_letter_queue
    return {"arn": dlq.arn, "max_receive_count": dlq.max_receive_count}


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def failed_batch(letter: DeadLetter) -> jobs_pb2.FailedBatch:
    """A dead letter as the job service shows it (and the store keeps it after the queue is gone)."""
    batch = letter.batch
    return jobs_pb2.FailedBatch(
        batch_id=batch.batch_id, items_json=batch.body, attempts=letter.receive_count, error=letter.error
    )
