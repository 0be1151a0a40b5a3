"""What the scheduler's parts look up about a job: its record (checked against the caller), its submission, its
progress at the monitor and its queue's depth."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

from services.scheduler import access
from services.scheduler.jobs import JobRecord
from services.scheduler.store import JobStore
from thresher.core.auth import ANONYMOUS, Caller
from thresher.core.errors import JobNotFound, NotFound, Unavailable
from thresher.core.queue import Depth, QueueBackend
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
        self._queue_reads: Counter[str] = Counter()  # job id -> depth reads in flight
        self._queue_reads_changed = asyncio.Condition()

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
        """The batches in a running job's queue, waiting or in flight."""
        depth = await self.queue_depth(job)
        return depth.visible + depth.in_flight

    async def queue_depth(self, job: JobRecord) -> Depth:
        """A running job's queue depth. A depth read is a queue call, counted among the job's: the clean-up counts them
        once no read is in flight (queue_reads_done), and a read starting once the job has ended (its clean-up may
        have counted them and deleted the queue) does not call the queue (all 0)."""
        self._queue_reads[job.job_id] += 1
        try:
            with contextlib.suppress(NotFound):
                if not (await self._store.get_job(job.job_id)).status.is_final:
                    return await self._queues.open(job.queue_name).depth()
            return Depth(visible=0, in_flight=0, dead=0)
        finally:
            self._queue_reads[job.job_id] -= 1
            if not self._queue_reads[job.job_id]:
                del self._queue_reads[job.job_id]
            async with self._queue_reads_changed:
                self._queue_reads_changed.notify_all()

    async def queue_reads_done(self, job_id: str) -> None:
        """Once the depth reads of the job in flight are done (an ended job's: no new one calls the queue)."""
        async with self._queue_reads_changed:
            await self._queue_reads_changed.wait_for(lambda: job_id not in self._queue_reads)
