"""Watching the unfinished jobs: every SUPERVISE_INTERVAL_S, a job past its timeout ends, a launched job's ended
workers are replaced while it has work (one whose workers crash too often ends; an elastic job's count is its
scaler's, scaler.py), an ended job not yet cleaned up is cleaned up (again), and the scheduler's own queue calls go to
the monitor."""

from __future__ import annotations

import asyncio
import logging
import time

from services.scheduler import jobs
from services.scheduler.cleanup import Cleanup
from services.scheduler.ending import Ending
from services.scheduler.jobs import JobRecord, Status
from services.scheduler.launch import Launcher
from services.scheduler.metrics import EndedWorkerCounter
from services.scheduler.queue_calls import QueueCallsSender
from services.scheduler.scaler import Scaler
from services.scheduler.store import JobStore
from thresher.core.aiotasks import create_guarded_task
from thresher.core.config import Config
from thresher.core.keyed_locks import KeyedLocks
from thresher.core.runtime import Runtime

log = logging.getLogger(__name__)

SUPERVISE_INTERVAL_S = 0.5  # how often timeouts, cleanups and exited workers are looked at


class Supervision:
    def __init__(
        self,
        config: Config,
        store: JobStore,
        runtime: Runtime,
        locks: KeyedLocks,
        launcher: Launcher,
        ending: Ending,
        cleanup: Cleanup,
        queue_calls: QueueCallsSender,
        ended_workers: EndedWorkerCounter,
        scaler: Scaler,
    ) -> None:
        self._config = config
        self._store = store
        self._runtime = runtime
        self._locks = locks
        self._launcher = launcher
        self._ending = ending
        self._cleanup = cleanup
        self._queue_calls = queue_calls
        self._ended_workers = ended_workers
        self._scaler = scaler
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = create_guarded_task(self._supervise(), "supervise jobs")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(SUPERVISE_INTERVAL_S)
            for job in await self._store.list_jobs(limit=1_000_000, unfinished_only=True):
                try:
                    await self._supervise_one(job)
                except Exception:  # one job's trouble must not stop the supervision of the others
                    log.exception("supervising job %s failed; trying again", job.job_id, extra={"job_id": job.job_id})

    async def _supervise_one(self, job: JobRecord) -> None:
        if job.status.is_final:
            self._cleanup.start(job)
            return
        async with self._locks[job.job_id]:
            job = await self._store.get_job(job.job_id)
            if job.status.is_final:
                return
            if jobs.timed_out(job, time.time()):
                reason = f"the job ran longer than its timeout of {job.timeout_s} s"
                await self._ending.finish(job, Status.TIMED_OUT, reason)
            elif job.queue_url:  # launched: its workers are to be kept running
                await self._keep_workers(job)
        await self._queue_calls.send_own(job)  # status reads call the queue too

    async def _keep_workers(self, job: JobRecord) -> None:
        """Replace workers that ended while the job has work (an elastic job's as many as its scaler asks for: not
        those that exited idle); a job whose workers crash too often ends."""
        states = await self._runtime.workers(job.job_id)
        crashes = [w for w in states if w.crashed]
        self._ended_workers.count(job.api_name, job.job_id, states)
        asked = job.workers
        if job.elastic:
            job = await self._scaler.scale(job, states)
        if (ending := jobs.out_of_restarts(crashes, self._config.runtime.max_worker_restarts)) is not None:
            await self._ending.finish(job, *ending)
        elif sum(not w.ended for w in states) < job.workers or job.workers != asked:
            # A changed count is applied even when fewer are wanted: Kubernetes lowers the Job's parallelism.
            await self._runtime.ensure_workers(await self._launcher.worker_launch(job), job.workers)
