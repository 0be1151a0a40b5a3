"""An ended job's clean-up: its workers stopped, its dead letters stored, its queue deleted, its queue calls counted,
its staged items deleted; and reads of an ended job, which wait for it (a while at most) so that a final status shows
final dead letters and queue calls."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

from services.scheduler.dead_letters import written_dead_letters
from services.scheduler.job_tasks import JobTasks
from services.scheduler.jobs import JobRecord
from services.scheduler.lookups import Lookups
from services.scheduler.metrics import EndedWorkerCounter
from services.scheduler.queue_calls import QUEUE_CALLS_RETRY_S, QueueCallsSender
from services.scheduler.scaler import Scaler
from services.scheduler.store import JobStore
from thresher.core.config import Config
from thresher.core.errors import NotFound
from thresher.core.keyed_locks import KeyedLocks
from thresher.core.queue import QueueBackend
from thresher.core.runtime import Runtime
from thresher.core.staging import Staging
from thresher.v1 import jobs_pb2

log = logging.getLogger(__name__)

WAIT_S = 10.0  # how long a read of an ended job (status, dead letters) waits for its clean-up, at most


class Cleanup:
    def __init__(
        self,
        config: Config,
        store: JobStore,
        queues: QueueBackend,
        runtime: Runtime,
        lookups: Lookups,
        locks: KeyedLocks,
        queue_calls: QueueCallsSender,
        ended_workers: EndedWorkerCounter,
        scaler: Scaler,
    ) -> None:
        self._config = config
        self._store = store
        self._queues = queues
        self._runtime = runtime
        self._lookups = lookups
        self._locks = locks
        self._queue_calls = queue_calls
        self._ended_workers = ended_workers
        self._scaler = scaler
        self._staging = Staging(config)
        self._tasks = JobTasks("clean up")

    def start(self, job: JobRecord) -> None:
        """Clean an ended job up in the background, unless it is (or is being) cleaned up already."""
        if not job.cleaned:
            self._tasks.start(job.job_id, lambda: self._run(job.job_id))

    async def close(self) -> None:
        await self._staging.close()

    async def once_cleaned(self, job: JobRecord) -> JobRecord:
        """An ended job once its clean-up is done, WAIT_S at most; as it is then."""
        if job.status.is_final and not job.cleaned and (task := self._tasks.get(job.job_id)) is not None:
            await asyncio.wait([task], timeout=WAIT_S)
            job = await self._store.get_job(job.job_id)
        return job

    async def _run(self, job_id: str) -> None:
        # Workers first: a dequeuer drains its batch on SIGTERM; deleting the queue first would cut it off.
        await self._runtime.stop_workers(job_id, self._config.runtime.stop_grace_s)
        job = await self._store.get_job(job_id)
        with contextlib.suppress(NotFound):  # deleted already, before a restart
            if (failed := await written_dead_letters(self._queues.open(job.queue_name), job)) is None:
                return  # some are not written yet: the queue is kept; the supervision tries again
            await self._store.put_failed_batches(job_id, failed)
        await self._lookups.queue_reads_done(job_id)  # status reads call the queue: their calls count too
        calls = self._queues.open(job.queue_name).calls  # delete() forgets them; this mapping keeps counting
        await self._queues.delete(job.queue_name)
        await self._queue_calls.send_own(job, calls, QUEUE_CALLS_RETRY_S)
        if (submission := await self._lookups.submission(job_id)).item_list.HasField("staged"):
            await self._staging.delete(submission.item_list.staged)  # read by no one now: the queue is gone
        progress = await self._lookups.progress(job)  # every process's calls are in: the workers have stopped
        async with self._locks[job_id]:
            job = await self._store.get_job(job_id)
            queue_calls = jobs_pb2.QueueCalls(calls=progress.queue_calls).SerializeToString() if progress else None
            await self._store.put_job(dataclasses.replace(job, cleaned=True, queue_calls=queue_calls))
        self._queue_calls.forget(job_id)
        self._ended_workers.forget(job_id)
        self._scaler.forget(job)
        log.info("job %s: workers stopped, queue deleted", job_id, extra={"job_id": job_id})
