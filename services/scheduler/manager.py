"""The scheduler's job service, as a thin coordinator: each piece of a job's life has its own module (admission,
launch, supervision, ending, cleanup, restart); this one wires them and answers the public calls."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

from services.scheduler import access, jobs
from services.scheduler.admission import Admission
from services.scheduler.cleanup import Cleanup
from services.scheduler.dead_letters import dead_letters_now
from services.scheduler.ending import Ending
from services.scheduler.job_tasks import JobTasks
from services.scheduler.jobs import Status
from services.scheduler.launch import Launcher
from services.scheduler.logs import job_logs
from services.scheduler.lookups import Lookups
from services.scheduler.metrics import EndedWorkerCounter, jobs_by_status
from services.scheduler.queue_calls import QueueCallsSender
from services.scheduler.restart import pick_up_jobs, stop_workers_if_runtime_wants
from services.scheduler.scaler import Scaler
from services.scheduler.store import JobStore
from services.scheduler.supervision import Supervision
from services.scheduler.views import job_message, waiting_reason
from thresher.core.apis import check_api_spec
from thresher.core.auth import ANONYMOUS, Caller
from thresher.core.config import Config
from thresher.core.errors import InvalidRequest, NotFound, WrongState
from thresher.core.keyed_locks import KeyedLocks
from thresher.core.queue import QueueBackend
from thresher.core.rpc import Client
from thresher.core.runtime import Runtime
from thresher.v1 import jobs_pb2, scheduler_pb2

log = logging.getLogger(__name__)


class JobManager:
    def __init__(
        self, config: Config, store: JobStore, queues: QueueBackend, runtime: Runtime, enqueuer: Client, monitor: Client
    ) -> None:
        self._config = config
        self._store = store
        self._queues = queues
        self._runtime = runtime
        self._locks = KeyedLocks()  # one change at a time per job
        self._lookups = Lookups(store, queues, monitor)
        self._admission = Admission(config, store, queues)
        queue_calls = QueueCallsSender(queues, monitor)
        ended_workers = EndedWorkerCounter()
        self._launches = JobTasks("launch")
        self._scaler = Scaler(config, store, self._lookups)
        self._cleanup = Cleanup(
            config, store, queues, runtime, self._lookups, self._locks, queue_calls, ended_workers, self._scaler
        )
        self._ending = Ending(
            store, queues, runtime, self._lookups, self._locks, self._launches, self._cleanup, ended_workers
        )
        self._launcher = Launcher(
            config,
            store,
            queues,
            runtime,
            enqueuer,
            monitor,
            self._lookups,
            self._locks,
            queue_calls,
            self._launches,
            self._ending,
        )
        self._supervision = Supervision(
            config,
            store,
            runtime,
            self._locks,
            self._launcher,
            self._ending,
            self._cleanup,
            queue_calls,
            ended_workers,
            self._scaler,
        )

    # --- APIs -----------------------------------------------------------------------------------

    async def deploy_api(self, spec: jobs_pb2.ApiSpec) -> jobs_pb2.ApiSpec:
        check_api_spec(spec)  # here too: DeployApi is also called over gRPC, without the gateway's parsing
        spec.updated_time.GetCurrentTime()
        spec.api_id = secrets.token_hex(8)  # this version: each job names the one it was submitted to
        await self._store.put_api(spec)
        log.info("deployed API %s", spec.name)
        return spec

    async def get_api(self, name: str) -> jobs_pb2.ApiSpec:
        return await self._store.get_api(name)

    async def list_apis(self) -> list[jobs_pb2.ApiSpec]:
        return await self._store.list_apis()

    async def delete_api(self, name: str, delete_jobs: bool = False) -> jobs_pb2.DeleteApiResponse:
        """Stop the API's jobs in progress (each ends `stopped`) and forget the API; its jobs' history is kept unless
        `delete_jobs` (then those still being cleaned up after a while are kept)."""
        await self._store.get_api(name)  # NotFound "<name> is not deployed"
        stopped = await self._stop_jobs_of(name)
        await self._store.delete_api(name)
        stopped += await self._stop_jobs_of(name)  # any submitted meanwhile
        reply = jobs_pb2.DeleteApiResponse(stopped_job_ids=stopped)
        if delete_jobs:
            await asyncio.gather(*[self._cleanup.once_cleaned(await self._store.get_job(j)) for j in stopped])
            reply.deleted_jobs = await self._store.delete_ended_jobs(name)
        log.info("deleted API %s: %d jobs stopped, %d forgotten", name, len(stopped), reply.deleted_jobs)
        return reply

    async def _stop_jobs_of(self, api_name: str) -> list[str]:
        stopped = []
        for record in await self._store.list_jobs(api_name, limit=1_000_000, unfinished_only=True):
            async with self._locks[record.job_id]:
                job = await self._store.get_job(record.job_id)
                if not job.status.is_final:
                    await self._ending.finish(job, Status.STOPPED, f"its API {api_name} was deleted")
                    stopped.append(job.job_id)
        return stopped

    # --- jobs -----------------------------------------------------------------------------------

    async def submit(
        self, submission: jobs_pb2.JobSubmission, dry_run: bool = False, caller: Caller = ANONYMOUS
    ) -> jobs_pb2.Job:
        if dry_run:
            return await self._admission.dry_run(submission)
        job = await self._admission.admit(submission, caller)
        self._launcher.launch(job.job_id)
        return job_message(job, submission, self._config)

    async def get(self, job_id: str, api_name: str = "", caller: Caller = ANONYMOUS) -> jobs_pb2.Job:
        job = await self._lookups.job(job_id, api_name, caller)
        submission = await self._lookups.submission(job_id)
        if job.status.is_final:  # its own counts of ended workers: its runtime forgets them once they are stopped
            job = await self._cleanup.once_cleaned(job)
            progress = None if job.cleaned else await self._lookups.progress(job)  # a slow clean-up: the calls so far
            return job_message(job, submission, self._config, progress, scaling=self._scaler.status(job, None))
        workers = await self._runtime.workers(job_id)
        progress, in_queue = await asyncio.gather(self._lookups.progress(job), self._lookups.batches_in_queue(job))
        scaling = self._scaler.status(job, workers)
        message = job_message(job, submission, self._config, progress, in_queue, workers, scaling)
        message.status_reason = message.status_reason or waiting_reason(workers, progress)
        return message

    async def list(self, api_name: str, limit: int, caller: Caller = ANONYMOUS) -> list[jobs_pb2.Job]:
        records = await self._store.list_jobs(api_name, limit or 50, owner=access.owner_filter(caller))
        return list(await asyncio.gather(*(self.get(r.job_id) for r in records)))

    async def stop(self, job_id: str, api_name: str = "", caller: Caller = ANONYMOUS) -> jobs_pb2.Job:
        async with self._locks[job_id]:
            job = await self._lookups.job(job_id, api_name, caller, change=True)
            if job.status.is_final:
                raise WrongState(f"job {job_id} is not in progress: it already ended ({job.status.value})")
            await self._ending.finish(job, Status.STOPPED, "stopped on request")
        return await self.get(job_id)

    async def retry_failed(self, job_id: str, api_name: str = "", caller: Caller = ANONYMOUS) -> jobs_pb2.Job:
        """A new job made of exactly the dead-lettered batches of a finished one, with the same settings."""
        job = await self._lookups.job(job_id, api_name, caller)
        if not job.status.is_final:
            raise WrongState(f"job {job_id} is {job.status.value}: retry its failed batches once it has ended")
        failed = await self.failed_batches(job_id)
        if not failed:
            raise InvalidRequest(f"job {job_id} has no failed batches to retry")
        submission = jobs.retry_submission(job_id, await self._lookups.submission(job_id), failed)
        return await self.submit(submission, caller=caller)

    async def failed_batches(
        self, job_id: str, api_name: str = "", caller: Caller = ANONYMOUS
    ) -> builtins.list[jobs_pb2.FailedBatch]:  # builtins: in this class `list` is JobManager.list
        """From the queue while the job runs, then from the store: an ended job's list waits for its clean-up, which
        reads them once the workers have drained (a dead letter may still be on its way when the job ends)."""
        job = await self._cleanup.once_cleaned(await self._lookups.job(job_id, api_name, caller))
        if not job.cleaned:
            with contextlib.suppress(NotFound):
                return await dead_letters_now(self._queues.open(job.queue_name))
        return await self._store.failed_batches(job_id)

    async def logs(
        self, job_id: str, follow: bool, caller: Caller = ANONYMOUS
    ) -> AsyncIterator[builtins.list[jobs_pb2.LogLine]]:
        """The job's log lines, oldest first; following, new ones until the job has ended (and a last read after)."""
        await self._lookups.job(job_id, "", caller)
        async for lines in job_logs(self._store, self._runtime, job_id, follow):
            yield lines

    async def metrics_text(self) -> bytes:
        """The scheduler's series, for /metrics."""
        return await jobs_by_status(self._store)

    # --- reports from the monitor ---------------------------------------------------------------

    async def job_settled(self, job_id: str, summary: scheduler_pb2.JobSummary) -> None:
        await self._ending.settled(job_id, summary)

    async def hook_finished(self, job_id: str, outcome: jobs_pb2.HookOutcome) -> None:
        await self._ending.hook_finished(job_id, outcome)

    # --- start and end of the scheduler -----------------------------------------------------------

    async def recover(self) -> None:
        """After a (re)start: pick every unfinished job up where it was, then supervise them all."""
        await pick_up_jobs(self._store, self._launcher, self._ending, self._cleanup)
        self._supervision.start()

    async def shutdown(self) -> None:
        """Stop launching and supervising (first, and waited for: supervision would replace the workers stopped
        here); where the runtime wants it, stop the workers of unfinished jobs (recover() restarts them)."""
        await asyncio.gather(self._launches.cancel_all(), self._supervision.stop())
        await stop_workers_if_runtime_wants(self._config, self._store, self._runtime)
        await self._runtime.close()
        await self._cleanup.close()
