"""The job state machine: a job record and the pure transitions between statuses (no I/O)."""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass

from thresher.core import statuses
from thresher.core.errors import WrongState
from thresher.core.runtime import WorkerPhase, WorkerState
from thresher.core.sources import SOURCES
from thresher.v1 import jobs_pb2


class Status(enum.Enum):
    """Cortex's job status codes; the value is the JSON string."""

    PENDING = "pending"
    ENQUEUING = "enqueuing"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    COMPLETED_WITH_FAILURES = "completed_with_failures"
    ENQUEUE_FAILED = "enqueue_failed"
    WORKER_ERROR = "worker_error"
    WORKER_OOM = "worker_oom"
    TIMED_OUT = "timed_out"
    STOPPED = "stopped"
    UNEXPECTED_ERROR = "unexpected_error"

    @property
    def proto(self) -> jobs_pb2.JobStatus.ValueType:
        """Its JobStatus number in the contract."""
        return statuses.BY_JSON_NAME[self.value]

    @property
    def is_final(self) -> bool:
        return statuses.is_final(self.proto)


@dataclass(frozen=True)
class JobRecord:
    """What the scheduler keeps of a job besides its submission (stored apart: it may weigh 10 MiB).

    Protos (summary, hook, counts) are kept serialized.
    """

    job_id: str
    api_name: str
    queue_name: str
    start_time: float
    workers: int
    timeout_s: int | None = None  # seconds from submission
    status: Status = Status.PENDING
    status_reason: str = ""
    queue_url: str = ""
    total_batch_count: int | None = None
    items_enqueued: int = 0
    end_time: float | None = None
    summary: bytes | None = None  # scheduler_pb2.JobSummary, once every batch is terminal
    hook: bytes | None = None  # jobs_pb2.HookOutcome, once /on-job-complete ended
    final_counts: bytes | None = None  # jobs_pb2.BatchCounts at the end
    cleaned: bool = False  # workers stopped and queue deleted after the final status
    owner: str = ""  # the name of the API key that submitted the job ("" when keys are off)
    queue_calls: bytes | None = None  # jobs_pb2.QueueCalls: every process's calls for the job, read at cleanup
    # Workers replaced after a crash, and after a disruption, as counted until the job ended (its runtime forgets
    # them once they are cleaned up; stopping them then is no disruption).
    worker_restarts: int = 0
    worker_disruptions: int = 0
    api_id: str = ""  # the deployed version of its API it was submitted to
    # An elastic job's range (0: a fixed count); its `workers` is then what its scaler asks for now.
    min_workers: int = 0
    max_workers: int = 0

    @property
    def elastic(self) -> bool:
        return self.max_workers > 0

    @property
    def settled(self) -> bool:
        return self.summary is not None


def queue_name(api_name: str, job_id: str) -> str:
    """Short enough for SQS (80 characters with '.fifo'), unique per job."""
    return f"thresher_{api_name[:40]}_{job_id}"


def started_enqueuing(job: JobRecord, queue_url: str) -> JobRecord:
    _require_in_progress(job, "start enqueuing")
    status = Status.ENQUEUING if job.status is Status.PENDING else job.status
    return dataclasses.replace(job, status=status, queue_url=queue_url)


def enqueued(job: JobRecord, total_batch_count: int, items: int) -> JobRecord:
    """Every batch is on the queue: the job runs until its batches are terminal."""
    _require_in_progress(job, "finish enqueuing")
    return dataclasses.replace(job, status=Status.RUNNING, total_batch_count=total_batch_count, items_enqueued=items)


def settled(job: JobRecord, summary: bytes) -> JobRecord:
    """Every batch is terminal; the completion hook is next."""
    _require_in_progress(job, "settle")
    return dataclasses.replace(job, status=Status.RUNNING, summary=summary)


def hook_finished(
    job: JobRecord, hook: bytes, dead_lettered: int, final_counts: bytes, workers: Sequence[WorkerState] = ()
) -> JobRecord:
    """The job ends once its hook ran; its reason names the dead letters and the workers replaced (crashed, hung).
    `workers`: every worker the job has had, whose replacements it keeps counting."""
    if not job.settled:
        raise WrongState(f"job {job.job_id} has batches left; its hook cannot have run")
    status = Status.COMPLETED_WITH_FAILURES if dead_lettered else Status.SUCCEEDED
    reasons = [f"{dead_lettered} batches were dead-lettered"] if dead_lettered else []
    replaced = [w for w in workers if w.crashed]
    if replaced:
        reasons.append(f"workers replaced: {len(replaced)} (last: {replaced[-1].reason})")
    ended_workers = (len(replaced), sum(w.disrupted for w in workers))
    return dataclasses.replace(finished(job, status, "; ".join(reasons), final_counts, ended_workers), hook=hook)


def finished(
    job: JobRecord, status: Status, reason: str, final_counts: bytes | None, ended_workers: tuple[int, int] = (0, 0)
) -> JobRecord:
    """The job ends with a final `status`; its workers and queue are to be cleaned up. `ended_workers`: its workers
    replaced after a crash and after a disruption."""
    if not status.is_final:
        raise ValueError(f"{status} is not a final status")
    _require_in_progress(job, f"end as {status.value}")
    restarts, disruptions = ended_workers
    return dataclasses.replace(
        job,
        status=status,
        status_reason=reason,
        end_time=time.time(),
        final_counts=final_counts,
        cleaned=False,
        worker_restarts=restarts,
        worker_disruptions=disruptions,
    )


def new_job(
    job_id: str, submission: jobs_pb2.JobSubmission, now: float, owner: str = "", api_id: str = ""
) -> JobRecord:
    return JobRecord(
        job_id=job_id,
        api_name=submission.api_name,
        queue_name=queue_name(submission.api_name, job_id),
        start_time=now,
        workers=submission.workers or submission.min_workers,  # an elastic job starts at its minimum
        timeout_s=submission.timeout_s if submission.HasField("timeout_s") else None,
        owner=owner,
        api_id=api_id,
        min_workers=submission.min_workers,
        max_workers=submission.max_workers,
    )


def retry_submission(
    job_id: str, submission: jobs_pb2.JobSubmission, failed: list[jobs_pb2.FailedBatch]
) -> jobs_pb2.JobSubmission:
    """A new job made of exactly the `failed` batches of job `job_id`, with the same settings."""
    retry = jobs_pb2.JobSubmission()
    retry.CopyFrom(submission)
    for source in SOURCES:
        retry.ClearField(source)
    retry.batches.extend(f.items_json for f in failed)
    retry.retry_of = job_id
    retry.workers = min(retry.workers, len(failed))
    retry.max_workers = min(retry.max_workers, len(failed))
    retry.min_workers = min(retry.min_workers, retry.max_workers)
    return retry


def out_of_restarts(crashes: list[WorkerState], budget: int) -> tuple[Status, str] | None:
    """How a job ends whose workers crashed more often than its restart budget allows; None while within it."""
    if len(crashes) <= budget:
        return None
    oom = any(w.phase is WorkerPhase.OOM_KILLED for w in crashes)
    reason = f"workers crashed {len(crashes)} times (restart budget {budget}); last: {crashes[-1].reason}"
    return (Status.WORKER_OOM if oom else Status.WORKER_ERROR), reason


def timed_out(job: JobRecord, now: float) -> bool:
    return job.timeout_s is not None and not job.status.is_final and now - job.start_time >= job.timeout_s


def _require_in_progress(job: JobRecord, action: str) -> None:
    if job.status.is_final:
        raise WrongState(f"cannot {action}: job {job.job_id} has already ended ({job.status.value})")
