"""Admitting a submission: the API exists, the submission and its files pass every check, the limits leave room; only
then is the job stored `pending`. A dry run stops after the checks, with the files a file source would read."""

from __future__ import annotations

import asyncio
import logging
import time

from services.scheduler import jobs
from services.scheduler.inputs import check_files_exist, dry_run_paths
from services.scheduler.jobs import JobRecord
from services.scheduler.store import JobStore
from services.scheduler.validation import check_limits, check_room, validate_submission
from thresher.core.auth import Caller
from thresher.core.config import Config
from thresher.core.ids import new_job_id
from thresher.core.queue import QueueBackend
from thresher.v1 import jobs_pb2

log = logging.getLogger(__name__)


class Admission:
    def __init__(self, config: Config, store: JobStore, queues: QueueBackend) -> None:
        self._config = config
        self._store = store
        self._queues = queues
        self._lock = asyncio.Lock()  # one submission at a time between counting what runs and storing it

    async def dry_run(self, submission: jobs_pb2.JobSubmission) -> jobs_pb2.Job:
        await self._check(submission)
        paths = await dry_run_paths(submission, self._config.inputs)  # also: some file must match
        return jobs_pb2.Job(api_name=submission.api_name, dry_run_paths=paths)

    async def admit(self, submission: jobs_pb2.JobSubmission, caller: Caller) -> JobRecord:
        """The job stored `pending`, once every check passed."""
        api = await self._check(submission)
        submission.on_failure = submission.on_failure or api.on_failure  # the API's default, kept with the job
        await check_files_exist(submission, self._config.inputs)  # Cortex's short-circuit listing: a 400, not later
        if submission.sqs_dead_letter_queue.arn:
            await self._queues.check_dead_letter_target(submission.sqs_dead_letter_queue.arn)
        async with self._lock:
            check_room(submission, *await self._store.in_progress(submission.api_name), self._config)
            job = jobs.new_job(new_job_id(), submission, time.time(), owner=caller.name, api_id=api.api_id)
            await self._store.put_submission(job.job_id, submission)  # first: a stored job has its submission
            await self._store.put_job(job)
        log.info("submitted job %s to %s", job.job_id, job.api_name, extra={"job_id": job.job_id})
        return job

    async def _check(self, submission: jobs_pb2.JobSubmission) -> jobs_pb2.ApiSpec:
        api = await self._store.get_api(submission.api_name)  # first, as Cortex: NotFound "<api> is not deployed"
        validate_submission(submission)
        check_limits(submission, self._config)
        return api
