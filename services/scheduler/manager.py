"""The scheduler's work: jobs from submission to cleanup, and putting things right after a restart."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from services.scheduler import access, jobs
from services.scheduler.cleanup import dead_letters_now, once_cleaned, written_dead_letters
from services.scheduler.inputs import check_files_exist, dry_run_paths
from services.scheduler.jobs import JobRecord, Status
from services.scheduler.logs import job_logs
from services.scheduler.metrics import EndedWorkerCounter, jobs_by_status
from services.scheduler.queue_calls import QueueCallsSender
from services.scheduler.store import JobStore
from services.scheduler.validation import check_limits, check_room, validate_submission
from services.scheduler.views import (
    batch_timeout_s,
    hook_summary,
    job_message,
    job_spec,
    max_receive_count,
    waiting_reason,
)
from thresher.core.aiotasks import create_guarded_task
from thresher.core.apis import check_api_spec
from thresher.core.auth import ANONYMOUS, Caller
from thresher.core.config import Config
from thresher.core.errors import InvalidRequest, NotFound, ThresherError, Unavailable, WrongState
from thresher.core.ids import new_job_id
from thresher.core.keyed_locks import KeyedLocks
from thresher.core.queue import KIND_JOB_COMPLETE, Batch, QueueBackend
from thresher.core.rpc import Client, retry_unavailable
from thresher.core.runtime import Runtime, WorkerLaunch
from thresher.v1 import enqueuer_pb2, jobs_pb2, monitor_pb2, scheduler_pb2

log = logging.getLogger(__name__)

SUPERVISE_INTERVAL_S = 0.5  # how often timeouts, cleanups and exited workers are looked at
PROGRESS_TIMEOUT_S = 2.0  # a status read does not wait longer than this for the monitor
RETRY_FOREVER_S = 365 * 24 * 3600.0
SUBMISSIONS_CACHED = 64
QUEUE_CALLS_RETRY_S = 10.0  # a count is best effort: how long it waits for the monitor, at most


class JobManager:
    def __init__(
        self, config: Config, store: JobStore, queues: QueueBackend, runtime: Runtime, enqueuer: Client, monitor: Client
    ) -> None:
        self._config = config
        self._store = store
        self._queues = queues
        self._runtime = runtime
        self._enqueuer = enqueuer
        self._monitor = monitor
        self._queue_calls = QueueCallsSender(queues, monitor)
        self._locks = KeyedLocks()  # one change at a time per job
        self._launches: dict[str, asyncio.Task[Any]] = {}
        self._supervisor: asyncio.Task[None] | None = None
        self._cleanups: dict[str, asyncio.Task[Any]] = {}
        self._submissions: dict[str, jobs_pb2.JobSubmission] = {}  # insertion order: the oldest goes first
        self._ended_workers = EndedWorkerCounter()
        self._admission = asyncio.Lock()  # one submission at a time between counting what runs and storing it

    # --- the public job service -------------------------------------------------------------

    async def deploy_api(self, spec: jobs_pb2.ApiSpec) -> jobs_pb2.ApiSpec:
        check_api_spec(spec)  # here too: DeployApi is also called over gRPC, without the gateway's parsing
        spec.updated_time.GetCurrentTime()
        await self._store.put_api(spec)
        log.info("deployed API %s", spec.name)
        return spec

    async def get_api(self, name: str) -> jobs_pb2.ApiSpec:
        return await self._store.get_api(name)

    async def list_apis(self) -> list[jobs_pb2.ApiSpec]:
        return await self._store.list_apis()

    async def submit(
        self, submission: jobs_pb2.JobSubmission, dry_run: bool = False, caller: Caller = ANONYMOUS
    ) -> jobs_pb2.Job:
        await self._store.get_api(submission.api_name)  # first, as Cortex: NotFound "<api> is not deployed"
        validate_submission(submission)
        check_limits(submission, self._config)
        if dry_run:
            paths = await dry_run_paths(submission, self._config.inputs)  # also: some file must match
            return jobs_pb2.Job(api_name=submission.api_name, dry_run_paths=paths)
        await check_files_exist(submission, self._config.inputs)  # Cortex's short-circuit listing: a 400, not later
        if submission.sqs_dead_letter_queue.arn:
            await self._queues.check_dead_letter_target(submission.sqs_dead_letter_queue.arn)
        async with self._admission:
            check_room(submission, *await self._store.in_progress(submission.api_name), self._config)
            job = jobs.new_job(new_job_id(), submission, time.time(), owner=caller.name)
            await self._store.put_submission(job.job_id, submission)  # first: a stored job has its submission
            await self._store.put_job(job)
        log.info("submitted job %s to %s", job.job_id, job.api_name, extra={"job_id": job.job_id})
        self._launch(job.job_id)
        return job_message(job, submission, self._config)

    async def get(self, job_id: str, api_name: str = "", caller: Caller = ANONYMOUS) -> jobs_pb2.Job:
        job = await self._job(job_id, api_name, caller)
        submission = await self._submission(job_id)
        if job.status.is_final:  # its own counts of ended workers: its runtime forgets them once they are stopped
            job = await once_cleaned(job, self._cleanups, self._store)
            progress = None if job.cleaned else await self._progress(job)  # a slow clean-up: the calls so far
            return job_message(job, submission, self._config, progress)
        workers = await self._runtime.workers(job_id)
        progress, in_queue = await asyncio.gather(self._progress(job), self._batches_in_queue(job))
        message = job_message(job, submission, self._config, progress, in_queue, workers)
        message.status_reason = message.status_reason or waiting_reason(workers, progress)
        return message

    async def list(self, api_name: str, limit: int, caller: Caller = ANONYMOUS) -> list[jobs_pb2.Job]:
        records = await self._store.list_jobs(api_name, limit or 50, owner=access.owner_filter(caller))
        return list(await asyncio.gather(*(self.get(r.job_id) for r in records)))

    async def stop(self, job_id: str, api_name: str = "", caller: Caller = ANONYMOUS) -> jobs_pb2.Job:
        async with self._locks[job_id]:
            job = await self._job(job_id, api_name, caller, change=True)
            if job.status.is_final:
                raise WrongState(f"job {job_id} is not in progress: it already ended ({job.status.value})")
            await self._finish(job, Status.STOPPED, "stopped on request")
        return await self.get(job_id)

    async def retry_failed(self, job_id: str, api_name: str = "", caller: Caller = ANONYMOUS) -> jobs_pb2.Job:
        """A new job made of exactly the dead-lettered batches of a finished one, with the same settings."""
        job = await self._job(job_id, api_name, caller)
        if not job.status.is_final:
            raise WrongState(f"job {job_id} is {job.status.value}: retry its failed batches once it has ended")
        failed = await self.failed_batches(job_id)
        if not failed:
            raise InvalidRequest(f"job {job_id} has no failed batches to retry")
        return await self.submit(jobs.retry_submission(job_id, await self._submission(job_id), failed), caller=caller)

    # --- reports from the monitor ---------------------------------------------------------

    async def job_settled(self, job_id: str, summary: scheduler_pb2.JobSummary) -> None:
        async with self._locks[job_id]:
            job = await self._store.get_job(job_id)
            if job.status.is_final or job.settled:
                return  # a repeat
            job = jobs.settled(job, summary.SerializeToString())
            await self._store.put_job(job)
            await self._send_job_complete(job)
        log.info("every batch of job %s is done; calling its hook", job_id, extra={"job_id": job_id})

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
        self._clean_up(job)

    # --- start-up and the supervision loop -----------------------------------------------

    async def recover(self) -> None:
        """After a (re)start: pick every unfinished job up where it was, then supervise them all."""
        for job in await self._store.list_jobs(limit=1_000_000, unfinished_only=True):
            if job.status.is_final:
                self._clean_up(job)
                continue
            self._launch(job.job_id)  # queue and workers again where missing; enqueuing resumes if unfinished
            if job.settled:
                await self._send_job_complete(job)
        self._supervisor = create_guarded_task(self._supervise(), "supervise jobs")

    async def shutdown(self) -> None:
        """Stop launching and supervising (first, and waited for: supervision would replace the workers stopped
        here); where the runtime wants it, stop the workers of unfinished jobs (recover() restarts them)."""
        tasks = [*self._launches.values(), *([self._supervisor] if self._supervisor else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._runtime.workers_stop_with_scheduler:
            unfinished = await self._store.list_jobs(limit=1_000_000, unfinished_only=True)
            grace_s = self._config.runtime.stop_grace_s
            await asyncio.gather(*(self._runtime.stop_workers(j.job_id, grace_s) for j in unfinished))
        await self._runtime.close()

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
            self._clean_up(job)
            return
        async with self._locks[job.job_id]:
            job = await self._store.get_job(job.job_id)
            if job.status.is_final:
                return
            if jobs.timed_out(job, time.time()):
                await self._finish(job, Status.TIMED_OUT, f"the job ran longer than its timeout of {job.timeout_s} s")
            elif job.queue_url:  # launched: its workers are to be kept running
                await self._keep_workers(job)
        await self._queue_calls.send_own(job)  # status reads call the queue too

    async def _keep_workers(self, job: JobRecord) -> None:
        """Replace workers that ended while the job has work; a job whose workers crash too often ends."""
        states = await self._runtime.workers(job.job_id)
        crashes = [w for w in states if w.crashed]
        self._ended_workers.count(job.api_name, job.job_id, states)
        if (ending := jobs.out_of_restarts(crashes, self._config.runtime.max_worker_restarts)) is not None:
            await self._finish(job, *ending)
        elif sum(not w.ended for w in states) < job.workers:
            await self._runtime.ensure_workers(await self._worker_launch(job), job.workers)

    # --- launching: queue, workers, enqueuing -------------------------------------------

    def _launch(self, job_id: str) -> None:
        if job_id not in self._launches or self._launches[job_id].done():
            self._launches[job_id] = create_guarded_task(self._run_launch(job_id), f"launch {job_id}")

    async def _run_launch(self, job_id: str) -> None:
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
                    await self._finish(job, Status.ENQUEUE_FAILED, str(e))
        finally:  # a long-lived scheduler launches many jobs: it keeps no task of theirs
            if self._launches.get(job_id) is asyncio.current_task():
                del self._launches[job_id]

    async def _start(self, job: JobRecord) -> None:
        """Create the queue and start the workers, without waiting for enqueuing (streaming start)."""
        async with self._locks[job.job_id]:
            job = await self._store.get_job(job.job_id)
            dead_letter_arn = (await self._submission(job.job_id)).sqs_dead_letter_queue.arn
            url = await self._queues.create(job.queue_name, self._config.queue.visibility_s, dead_letter_arn)
            job = jobs.started_enqueuing(job, url)
            await self._store.put_job(job)
            await self._runtime.ensure_workers(await self._worker_launch(job), job.workers)

    async def _enqueue(self, job_id: str) -> None:
        job = await self._store.get_job(job_id)
        if job.total_batch_count is None:
            request = enqueuer_pb2.EnqueueRequest(
                job_id=job_id, queue_name=job.queue_name, submission=await self._submission(job_id)
            )
            batches, items = await retry_unavailable(lambda: self._enqueue_once(job, request), RETRY_FOREVER_S)
            async with self._locks[job_id]:
                job = jobs.enqueued(await self._store.get_job(job_id), batches, items)
                await self._store.put_job(job)
            await self._runtime.update_job_spec(job_id, job_spec(job, await self._submission(job_id)))
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

    async def _worker_launch(self, job: JobRecord) -> WorkerLaunch:
        submission = await self._submission(job.job_id)
        return WorkerLaunch(
            job_id=job.job_id,
            api=await self._store.get_api(job.api_name),
            queue_name=job.queue_name,
            job_spec=job_spec(job, submission),
            max_receive_count=max_receive_count(submission, self._config),
            batch_timeout_s=batch_timeout_s(submission, self._config),
        )

    async def _send_job_complete(self, job: JobRecord) -> None:
        summary = scheduler_pb2.JobSummary.FromString(job.summary or b"")
        message = Batch(f"{job.job_id}-job-complete", hook_summary(job, summary), KIND_JOB_COMPLETE)
        await self._queues.open(job.queue_name).send([message])

    # --- the end: final status, then no worker and no queue left ---------------------------

    async def _finish(self, job: JobRecord, status: Status, reason: str) -> None:
        """Record a final status (the caller holds the job's lock), then clean up in the background."""
        progress = await self._progress(job)
        counts = progress.batches.SerializeToString() if progress else None
        job = jobs.finished(job, status, reason, counts, self._ended_workers.counted(job.job_id))
        await self._store.put_job(job)
        log.info("job %s ended %s: %s", job.job_id, status.value, reason, extra={"job_id": job.job_id})
        launch = self._launches.pop(job.job_id, None)
        if launch is not None and launch is not asyncio.current_task():
            launch.cancel()
        self._clean_up(job)

    def _clean_up(self, job: JobRecord) -> None:
        if not job.cleaned and job.job_id not in self._cleanups:
            self._cleanups[job.job_id] = create_guarded_task(self._run_cleanup(job.job_id), f"clean up {job.job_id}")

    async def _run_cleanup(self, job_id: str) -> None:
        try:
            # Workers first: a dequeuer drains its batch on SIGTERM; deleting the queue first would cut it off.
            await self._runtime.stop_workers(job_id, self._config.runtime.stop_grace_s)
            job = await self._store.get_job(job_id)
            with contextlib.suppress(NotFound):  # deleted already, before a restart
                if (failed := await written_dead_letters(self._queues.open(job.queue_name), job)) is None:
                    return  # some are not written yet: the queue is kept; the supervision tries again
                await self._store.put_failed_batches(job_id, failed)
            calls = self._queues.open(job.queue_name).calls  # delete() forgets them; this mapping keeps counting
            await self._queues.delete(job.queue_name)
            await self._queue_calls.send_own(job, calls, QUEUE_CALLS_RETRY_S)
            progress = await self._progress(job)  # every process's calls are in: the workers have stopped
            async with self._locks[job_id]:
                job = await self._store.get_job(job_id)
                queue_calls = jobs_pb2.QueueCalls(calls=progress.queue_calls).SerializeToString() if progress else None
                await self._store.put_job(dataclasses.replace(job, cleaned=True, queue_calls=queue_calls))
            self._queue_calls.forget(job_id)
            self._ended_workers.forget(job_id)
            log.info("job %s: workers stopped, queue deleted", job_id, extra={"job_id": job_id})
        finally:  # a long-lived scheduler ends many jobs: it keeps no task of theirs (the supervision tries again)
            del self._cleanups[job_id]

    # --- reads ------------------------------------------------------------------------------

    async def metrics_text(self) -> bytes:
        """The scheduler's series, for /metrics."""
        return await jobs_by_status(self._store)

    async def logs(
        self, job_id: str, follow: bool, caller: Caller = ANONYMOUS
    ) -> AsyncIterator[list[jobs_pb2.LogLine]]:
        """The job's log lines, oldest first; following, new ones until the job has ended (and a last read after)."""
        await self._job(job_id, "", caller)
        async for lines in job_logs(self._store, self._runtime, job_id, follow):
            yield lines

    async def failed_batches(
        self, job_id: str, api_name: str = "", caller: Caller = ANONYMOUS
    ) -> list[jobs_pb2.FailedBatch]:
        """From the queue while the job runs, then from the store: an ended job's list waits for its clean-up, which
        reads them once the workers have drained (a dead letter may still be on its way when the job ends)."""
        job = await once_cleaned(await self._job(job_id, api_name, caller), self._cleanups, self._store)
        if not job.cleaned:
            with contextlib.suppress(NotFound):
                return await dead_letters_now(self._queues.open(job.queue_name))
        return await self._store.failed_batches(job_id)

    async def _submission(self, job_id: str) -> jobs_pb2.JobSubmission:
        """A job's submission: immutable, so the recent ones stay in memory."""
        if job_id not in self._submissions:
            if len(self._submissions) >= SUBMISSIONS_CACHED:
                del self._submissions[next(iter(self._submissions))]
            self._submissions[job_id] = await self._store.get_submission(job_id)
        return self._submissions[job_id]

    async def _job(self, job_id: str, api_name: str, caller: Caller = ANONYMOUS, change: bool = False) -> JobRecord:
        """The job, if it belongs to `api_name` (when given) and `caller` may read it (or, with `change`, stop it)."""
        job = await self._store.get_job(job_id)
        if api_name and job.api_name != api_name:
            raise NotFound(f"unable to find job {job_id} of API {api_name}")
        access.check_job(caller, job_id, job.owner, change)
        return job

    async def _progress(self, job: JobRecord) -> monitor_pb2.JobProgress | None:
        request = jobs_pb2.JobRef(api_name=job.api_name, job_id=job.job_id)
        try:
            return await self._monitor.GetJobProgress(request, timeout=PROGRESS_TIMEOUT_S)
        except Unavailable:
            log.warning("monitor unavailable: job %s shown without progress", job.job_id)
            return None

    async def _batches_in_queue(self, job: JobRecord) -> int:
        with contextlib.suppress(NotFound):
            depth = await self._queues.open(job.queue_name).depth()
            return depth.visible + depth.in_flight
        return 0
