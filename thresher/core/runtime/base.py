"""The runtime seam: where a job's workers (worker + dequeuer sidecar) run."""

from __future__ import annotations

import enum
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from thresher.core import trust
from thresher.core.config import Config, config_env
from thresher.core.dequeuer_args import DEQUEUER_MODULE, DequeuerArgs
from thresher.core.errors import InvalidRequest
from thresher.core.names import EXIT_TOKEN_REFUSED, EXIT_WORKER_HUNG
from thresher.v1 import jobs_pb2


@dataclass(frozen=True)
class WorkerLaunch:
    """Everything a runtime needs to start the workers of one job."""

    job_id: str
    api: jobs_pb2.ApiSpec
    queue_name: str
    job_spec: dict[str, Any]  # what the worker reads from $THRESHER_JOB_SPEC
    max_receive_count: int
    batch_timeout_s: float
    results_s3_path: str = ""  # the job's own S3 path for its results (empty: the settings' place)
    idle_s: float | None = None  # an elastic job's: a worker idle this long exits, not replaced (None: never)
    on_failure: str = ""  # the submission's (its API's default filled in): "" or one of ON_FAILURE_CHOICES

    def dequeuer_args(self, worker_id: str, port: int) -> DequeuerArgs:
        """The command line of the dequeuer of worker `worker_id`, whose worker listens on `port`."""
        return DequeuerArgs(
            job_id=self.job_id,
            api_name=self.api.name,
            worker_id=worker_id,
            queue_name=self.queue_name,
            worker_port=port,
            readiness_path=self.api.readiness_path or None,
            batch_timeout_s=self.batch_timeout_s,
            max_receive_count=self.max_receive_count,
            results_s3_path=self.results_s3_path or None,
            idle_s=self.idle_s,
            on_failure=self.on_failure or None,
        )


# Settings a dequeuer never needs, so never gets: the control plane's own (API keys, limits, input and cluster
# access, the runtime's budget). It keeps the queue's, the monitor's address, TLS and its own section.
DEQUEUER_SETTINGS_LEFT_OUT = ("auth", "limits", "inputs", "kubernetes", "runtime", "gateway", "scaling")


def dequeuer_config_env(config: Config) -> dict[str, str]:
    """The THRESHER_* variables of a dequeuer's settings, the same in every runtime."""
    return config_env(config, leave_out=DEQUEUER_SETTINGS_LEFT_OUT)


WORKER_HUNG = "worker hung: it answered neither a batch within batch_timeout nor a health check; killed and replaced"
TOKEN_REFUSED = (
    "the monitor refused the dequeuer's internal token: the services do not share one internal secret (changed and"
    " a service not restarted?); see the dequeuer's log"
)
_DEQUEUER_EXIT_REASONS = {EXIT_WORKER_HUNG: WORKER_HUNG, EXIT_TOKEN_REFUSED: TOKEN_REFUSED}


IDLED = "idle: its dequeuer found nothing to receive for the job's idle_s and exited (not replaced)"


def dequeuer_exit_reason(code: int | None) -> str | None:
    """What a dequeuer's own exit code says of its worker, in every runtime; None for an ordinary exit code."""
    return _DEQUEUER_EXIT_REASONS.get(code) if code is not None else None


def dequeuer_token(config: Config, job_id: str, worker_id: str) -> str:
    """What a worker's dequeuer reports with: a token for its job and worker only, never the stack secret."""
    return trust.load(config).token(trust.DEQUEUER, job_id, worker_id)


def dequeuer_argv(launch: WorkerLaunch, worker_id: str, port: int, python: str = sys.executable) -> list[str]:
    """The command line of one worker's dequeuer, the same in every runtime."""
    return [python, "-m", DEQUEUER_MODULE, *launch.dequeuer_args(worker_id, port).to_argv()]


class WorkerPhase(enum.Enum):
    PENDING = "pending"  # asked for, not running yet (Kubernetes: unscheduled, pulling images)
    RUNNING = "running"
    STOPPED = "stopped"  # ended without a fault: drained on SIGTERM, preempted, evicted, or its job ended
    FAILED = "failed"  # crashed: counts toward the job's restart budget
    OOM_KILLED = "oom_killed"  # killed for memory: counts toward the budget, and names the job's failure


class WorkerCount(enum.Enum):
    """The key of Cortex's `worker_counts` that counts a worker (Cortex's pod classification)."""

    PENDING = "pending"
    CREATING = "creating"
    NOT_READY = "not_ready"
    READY = "ready"
    SUCCEEDED = "succeeded"
    ERR_IMAGE_PULL = "err_image_pull"
    TERMINATING = "terminating"
    FAILED = "failed"
    KILLED = "killed"
    KILLED_OOM = "killed_oom"
    STALLED = "stalled"
    UNKNOWN = "unknown"


# A worker's count when its runtime says no more than its phase. A running worker is NOT_READY until its readiness
# is known (the local runtime leaves that to the dequeuer's reports); one disrupted was killed, not failed.
_COUNT_OF_PHASE = {
    WorkerPhase.PENDING: WorkerCount.PENDING,
    WorkerPhase.RUNNING: WorkerCount.NOT_READY,
    WorkerPhase.STOPPED: WorkerCount.SUCCEEDED,
    WorkerPhase.FAILED: WorkerCount.FAILED,
    WorkerPhase.OOM_KILLED: WorkerCount.KILLED_OOM,
}


@dataclass(frozen=True)
class WorkerState:
    worker_id: str
    phase: WorkerPhase
    reason: str = ""  # why it is not running, in words ("api exited with code 1", "evicted: node drained")
    # Ended by its infrastructure (a spot reclaim, an eviction, a preemption, a drain on SIGTERM): STOPPED, replaced
    # while the job has work, counted apart from crashes.
    disrupted: bool = False
    counted_as: WorkerCount | None = None  # where the runtime knows more than the phase (Kubernetes)
    # STOPPED because its dequeuer found no work for its job's idle_s (EXIT_IDLE): an elastic job's scaler counts it
    # as removed, not to be replaced.
    idled: bool = False

    @property
    def count(self) -> WorkerCount:
        """Its key in the status's `worker_counts`."""
        if self.counted_as is not None:
            return self.counted_as
        return WorkerCount.KILLED if self.disrupted else _COUNT_OF_PHASE[self.phase]

    @property
    def ended(self) -> bool:
        return self.phase in (WorkerPhase.STOPPED, WorkerPhase.FAILED, WorkerPhase.OOM_KILLED)

    @property
    def crashed(self) -> bool:
        return self.phase in (WorkerPhase.FAILED, WorkerPhase.OOM_KILLED)


class Runtime(ABC):
    # Whether a scheduler that stops (SIGTERM) stops the workers of unfinished jobs too. Locally yes: `thresher up`
    # stops as a whole and restarts them. On Kubernetes no: a scheduler's rolling update must not touch workers.
    workers_stop_with_scheduler: bool = False

    @abstractmethod
    async def ensure_workers(self, launch: WorkerLaunch, count: int) -> None:
        """Make `count` workers run for the job, replacing those that ended (idempotent)."""

    @abstractmethod
    async def update_job_spec(self, job_id: str, job_spec: dict[str, Any]) -> None:
        """Rewrite the job spec the workers read (e.g. once total_batch_count is known)."""

    @abstractmethod
    async def workers(self, job_id: str) -> list[WorkerState]:
        """Every worker the job has had, the ended ones included (the scheduler counts crashes from them)."""

    async def read_logs(self, job_id: str, offsets: dict[str, int]) -> list[tuple[str, str, str]]:
        """New lines of the job's logs as (worker id, source, line), from `offsets`, which it advances."""
        raise InvalidRequest(f"the {type(self).__name__} shows no logs; use the platform's own tools")

    async def close(self) -> None:  # noqa: B027 - most runtimes hold nothing to release
        """Release connections and watches (workers keep running)."""

    @abstractmethod
    async def stop_workers(self, job_id: str, grace_s: float) -> None:
        """SIGTERM every process of the job, SIGKILL what is left after `grace_s`; returns when none is left."""
