"""Launching a job's work: its queue, its workers (worker + dequeuer each) and its enqueuing, started without waiting
for enqueuing to end (streaming start); then the batch count goes to the monitor. Again after a restart: what exists
is kept and enqueuing resumes (its batch ids are deterministic)."""

from __future__ import annotations

import logging

from services.scheduler import jobs
from services.scheduler.ending import Ending
from services.scheduler.job_tasks import JobTasks
from services.scheduler.jobs import JobRecord, Status
from services.scheduler.lookups import Lookups
from services.scheduler.queue_calls import QUEUE_CALLS_RETRY_S, QueueCallsSender
from services.scheduler.store import JobStore
from services.scheduler.views import batch_timeout_s, job_spec, max_receive_count
from thresher.core.config import Config
from thresher.core.errors import ThresherError, Unavailable, WrongState
from thresher.core.keyed_locks import KeyedLocks
from thresher.core.queue import QueueBackend
from thresher.core.rpc import Client, retry_unavailable
from thresher.core.runtime import Runtime, WorkerLaunch
from thresher.v1 import enqueuer_pb2, monitor_pb2

log = logging.getLogger(__name__)

RETRY_FOREVER_S = 365 * 24 * 3600.0


class Launcher:
    def __init__(
        self,
        config: Config,
        store: JobStore,
        queues: QueueBackend,
        runtime: Runtime,
        enqueuer: Client,
        monitor: Client,
        lookups: Lookups,
        locks: KeyedLocks,
        queue_calls: QueueCallsSender,
        launches: JobTasks,
        ending: Ending,
    ) -> None:
        self._config = config
        self._store = store
        self._queues = queues
        self._runtime = runtime
        self._enqueuer = enqueuer
        self._monitor = monitor
        self._lookups = lookups
        self._locks = locks
        self._queue_calls = queue_calls
        self._launches = launches
        self._ending = ending

    def launch(self, job_id: str) -> None:
        """Launch the job in the background, unless its launch runs already."""
        self._launches.start(job_id, lambda: self._run(job_id))

    async def worker_launch(self, job: JobRecord) -> WorkerLaunch:
        """What the runtime needs to start one of the job's workers."""
        submission = await self._lookups.submission(job.job_id)
        return WorkerLaunch(
            job_id=job.job_id,
            api=await self._store.get_api(job.api_name),
            queue_name=job.queue_name,
            job_spec=job_spec(job, submission),
            max_receive_count=max_receive_count(submission, self._config),
            batch_timeout_s=batch_timeout_s(submission, self._config),
            results_s3_path=submission.results.s3_path,
            idle_s=self._config.scaling.idle_s if job.elastic else None,
            on_failure=submission.on_failure,
        )

    async def _run(self, job_id: str) -> None:
        job = await self._store.get_job(job_id)
        try:
            await self._start(job)
            await self._enqueue(job_id)
        except WrongState:
            return  # the job ended meanwhile (stopped, timed out)
        except ThresherError as e:
            async with self._locks[job_id]:
                job = await self._store.get_job(job_id)
                if not job.status.is_final:
                    await self._ending.finish(job, Status.ENQUEUE_FAILED, str(e))

    async def _start(self, job: JobRecord) -> None:
        """Create the queue and start the workers, without waiting for enqueuing (streaming start)."""
        async with self._locks[job.job_id]:
            job = await self._store.get_job(job.job_id)
            dead_letter_arn = (await self._lookups.submission(job.job_id)).sqs_dead_letter_queue.arn
            url = await self._queues.create(job.queue_name, self._config.queue.visibility_s, dead_letter_arn)
            job = jobs.started_enqueuing(job, url)
            await self._store.put_job(job)
            await self._runtime.ensure_workers(await self.worker_launch(job), job.workers)

    async def _enqueue(self, job_id: str) -> None:
        job = await self._store.get_job(job_id)
        if job.total_batch_count is None:
            submission = await self._lookups.submission(job_id)
            request = enqueuer_pb2.EnqueueRequest(job_id=job_id, queue_name=job.queue_name, submission=submission)
            batches, items = await retry_unavailable(lambda: self._enqueue_once(job, request), RETRY_FOREVER_S)
            async with self._locks[job_id]:
                job = jobs.enqueued(await self._store.get_job(job_id), batches, items)
                await self._store.put_job(job)
            await self._runtime.update_job_spec(job_id, job_spec(job, submission))
            log.info("job %s: %d batches enqueued", job_id, batches, extra={"job_id": job_id})
        track = monitor_pb2.TrackJobRequest(
            job_id=job_id, api_name=job.api_name, total_batch_count=job.total_batch_count or 0
        )
        await retry_unavailable(lambda: self._monitor.TrackJob(track), RETRY_FOREVER_S)

    async def _enqueue_once(self, job: JobRecord, request: enqueuer_pb2.EnqueueRequest) -> tuple[int, int]:
        last = enqueuer_pb2.EnqueueProgress()
        try:
            async for progress in self._enqueuer.Enqueue(request, timeout=None):
                last = progress
        finally:  # a broken call's calls count too
            if last.HasField("queue_calls"):
                await self._queue_calls.send(job, last.queue_calls, QUEUE_CALLS_RETRY_S)
        if not last.done:
            raise Unavailable("the enqueuer stopped before the end")
        return last.batches_enqueued, last.items_enqueued
