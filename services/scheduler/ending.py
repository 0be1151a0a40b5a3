"""How a job ends: every batch settled (the `job_complete` message goes on its queue, for the hook), then the hook
finished (its final status); or cut short (stopped, timed out, enqueuing failed, workers crashing). Then its
clean-up."""

from __future__ import annotations

import logging

from services.scheduler import jobs
from services.scheduler.cleanup import Cleanup
from services.scheduler.job_tasks import JobTasks
from services.scheduler.jobs import JobRecord, Status
from services.scheduler.lookups import Lookups
from services.scheduler.metrics import EndedWorkerCounter
from services.scheduler.store import JobStore
from services.scheduler.views import hook_summary
from thresher.core.keyed_locks import KeyedLocks
from thresher.core.queue import KIND_JOB_COMPLETE, Batch, QueueBackend
from thresher.core.runtime import Runtime
from thresher.v1 import jobs_pb2, scheduler_pb2

log = logging.getLogger(__name__)


class Ending:
    def __init__(
        self,
        store: JobStore,
        queues: QueueBackend,
        runtime: Runtime,
        lookups: Lookups,
        locks: KeyedLocks,
        launches: JobTasks,
        cleanup: Cleanup,
        ended_workers: EndedWorkerCounter,
    ) -> None:
        self._store = store
        self._queues = queues
        self._runtime = runtime
        self._lookups = lookups
        self._locks = locks
        self._launches = launches
        self._cleanup = cleanup
        self._ended_workers = ended_workers

    async def settled(self, job_id: str, summary: scheduler_pb2.JobSummary) -> None:
        """The monitor decided every batch: store its summary and have a dequeuer call the hook."""
        async with self._locks[job_id]:
            job = await self._store.get_job(job_id)
            if job.status.is_final or job.settled:
                return  # a repeat
            job = jobs.settled(job, summary.SerializeToString())
            await self._store.put_job(job)
            await self.send_job_complete(job)
        log.info("every batch of job %s is done; calling its hook", job_id, extra={"job_id": job_id})

    async def send_job_complete(self, job: JobRecord) -> None:
        summary = scheduler_pb2.JobSummary.FromString(job.summary or b"")
        message = Batch(f"{job.job_id}-job-complete", hook_summary(job, summary), KIND_JOB_COMPLETE)
        await self._queues.open(job.queue_name).send([message])

    async def hook_finished(self, job_id: str, outcome: jobs_pb2.HookOutcome) -> None:
        async with self._locks[job_id]:
            job = await self._store.get_job(job_id)
            if job.status.is_final:
                return  # a repeat
            counts = scheduler_pb2.JobSummary.FromString(job.summary or b"").batches
            workers = await self._runtime.workers(job_id)
            hook, final_counts = outcome.SerializeToString(), counts.SerializeToString()
            job = jobs.hook_finished(job, hook, counts.dead_lettered, final_counts, workers)
            await self._store.put_job(job)
        log.info("job %s ended %s", job_id, job.status.value, extra={"job_id": job_id})
        self._cleanup.start(job)

    async def finish(self, job: JobRecord, status: Status, reason: str) -> None:
        """Cut the job short with a final status (the caller holds the job's lock), then clean up in the background."""
        progress = await self._lookups.progress(job)
        counts = progress.batches.SerializeToString() if progress else None
        job = jobs.finished(job, status, reason, counts, self._ended_workers.counted(job.job_id))
        await self._store.put_job(job)
        log.info("job %s ended %s: %s", job.job_id, status.value, reason, extra={"job_id": job.job_id})
        self._launches.cancel(job.job_id)
        self._cleanup.start(job)
