"""What the scheduler's parts look up about a job: its record (checked against the caller), its submission, its
progress at the monitor and its queue's depth."""

from __future__ import annotations

import contextlib
import logging

from services.scheduler import access
from services.scheduler.jobs import JobRecord
from services.scheduler.store import JobStore
from thresher.core.auth import ANONYMOUS, Caller
from thresher.core.errors import JobNotFound, NotFound, Unavailable
from thresher.core.queue import QueueBackend
from thresher.core.rpc import Client
from thresher.v1 import jobs_pb2, monitor_pb2

log = logging.getLogger(__name__)

PROGRESS_TIMEOUT_S = 2.0  # a status read does not wait longer than this for the monitor
SUBMISSIONS_CACHED = 64


class Lookups:
    def __init__(self, store: JobStore, queues: QueueBackend, monitor: Client) -> None:
        self._store = store
        self._queues = queues
        self._monitor = monitor
        self._submissions: dict[str, jobs_pb2.JobSubmission] = {}  # insertion order: the oldest goes first

    async def job(self, job_id: str, api_name: str, caller: Caller = ANONYMOUS, change: bool = False) -> JobRecord:
        """The job, if it belongs to `api_name` (when given) and `caller` may read it (or, with `change`, stop it)."""
        job = await self._store.get_job(job_id)
        if api_name and job.api_name != api_name:
            raise JobNotFound(f"unable to find job {job_id} of API {api_name}")
        access.check_job(caller, job_id, job.owner, change)
        return job

    async def submission(self, job_id: str) -> jobs_pb2.JobSubmission:
        """A job's submission: immutable, so the recent ones stay in memory."""
        if job_id not in self._submissions:
            if len(self._submissions) >= SUBMISSIONS_CACHED:
                del self._submissions[next(iter(self._submissions))]
            self._submissions[job_id] = await self._store.get_submission(job_id)
        return self._submissions[job_id]

    async def progress(self, job: JobRecord) -> monitor_pb2.JobProgress | None:
        request = jobs_pb2.JobRef(api_name=job.api_name, job_id=job.job_id)
        try:
            progress: monitor_pb2.JobProgress = await self._monitor.GetJobProgress(request, timeout=PROGRESS_TIMEOUT_S)
            return progress
        except Unavailable:
            log.warning("monitor unavailable: job %s shown without progress", job.job_id)
            return None

    async def batches_in_queue(self, job: JobRecord) -> int:
        with contextlib.suppress(NotFound):
            depth = await self._queues.open(job.queue_name).depth()
            return depth.visible + depth.in_flight
        return 0
