"""The runtime seam: where a job's workers (worker + dequeuer sidecar) run."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

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


@dataclass(frozen=True)
class WorkerState:
    worker_id: str
    running: bool
    exit_codes: dict[str, int | None] = field(default_factory=dict)  # per process: None while it runs


class Runtime(ABC):
    @abstractmethod
    async def ensure_workers(self, launch: WorkerLaunch, count: int) -> None:
        """Make `count` workers run for the job, starting those that are missing (idempotent)."""

    @abstractmethod
    async def update_job_spec(self, job_id: str, job_spec: dict[str, Any]) -> None:
        """Rewrite the job spec the workers read (e.g. once total_batch_count is known)."""

    @abstractmethod
    async def workers(self, job_id: str) -> list[WorkerState]: ...

    @abstractmethod
    async def stop_workers(self, job_id: str, grace_s: float) -> None:
        """SIGTERM every process of the job, SIGKILL what is left after `grace_s`; returns when none is left."""
