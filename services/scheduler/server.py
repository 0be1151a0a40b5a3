"""The scheduler's gRPC servicers: decode, call the JobManager, encode. Nothing else."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from services.scheduler import access
from services.scheduler.manager import JobManager
from services.scheduler.results import JobResults
from services.scheduler.store import JobStore
from thresher.core import rpc, statuses, trust
from thresher.core.aiotasks import create_guarded_task
from thresher.core.auth import Caller, KeyRing
from thresher.core.config import Config
from thresher.core.names import GRPC_AUTHORIZATION_KEY
from thresher.core.queue import open_queue_backend
from thresher.core.results import open_result_store
from thresher.core.runtime import open_runtime
from thresher.v1 import enqueuer_pb2_grpc, jobs_pb2, jobs_pb2_grpc, monitor_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.25


class JobsServicer(jobs_pb2_grpc.JobsServicer):
    """Each method first finds the caller from its API key (metadata `authorization`) and checks its scope."""

    def __init__(self, manager: JobManager, keys: KeyRing, results: JobResults) -> None:
        self._manager = manager
        self._keys = keys
        self._results = results

    def _caller(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> Caller:
        metadata = dict(context.invocation_metadata() or ())
        authorization = metadata.get(GRPC_AUTHORIZATION_KEY)  # a str: gRPC gives bytes only for keys ending in -bin
        caller = self._keys.caller(authorization if isinstance(authorization, str) else None)
        access.require(caller, method)
        return caller

    async def Authorize(
        self, request: jobs_pb2.AuthorizeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> jobs_pb2.Caller:
        caller = self._caller(context, request.method)
        return jobs_pb2.Caller(name=caller.name, scopes=sorted(caller.scopes))

    async def DeployApi(
        self, request: jobs_pb2.DeployApiRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> jobs_pb2.ApiSpec:
        self._caller(context, "DeployApi")
        return await self._manager.deploy_api(request.api)

    async def DeleteApi(
        self, request: jobs_pb2.DeleteApiRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> jobs_pb2.DeleteApiResponse:
        self._caller(context, "DeleteApi")
        jobs = await self._results.jobs_of(request.name) if request.delete_jobs else []
        reply = await self._manager.delete_api(request.name, request.delete_jobs)
        await self._results.delete_forgotten(jobs)  # a job deleted takes its results with it
        return reply

    async def GetApi(
        self, request: jobs_pb2.GetApiRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> jobs_pb2.ApiSpec:
        self._caller(context, "GetApi")
        return await self._manager.get_api(request.name)

    async def ListApis(
        self, request: jobs_pb2.ListApisRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> jobs_pb2.ListApisResponse:
        self._caller(context, "ListApis")
        return jobs_pb2.ListApisResponse(apis=await self._manager.list_apis())

    async def SubmitJob(
        self, request: jobs_pb2.SubmitJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> jobs_pb2.Job:
        caller = self._caller(context, "SubmitJob")
        return await self._manager.submit(request.submission, request.dry_run, caller)

    async def GetJob(self, request: jobs_pb2.JobRef, context: grpc.aio.ServicerContext[Any, Any]) -> jobs_pb2.Job:
        caller = self._caller(context, "GetJob")
        return await self._with_results(await self._manager.get(request.job_id, request.api_name, caller))

    async def _with_results(self, job: jobs_pb2.Job) -> jobs_pb2.Job:
        job.results.CopyFrom(await self._results.size(job, statuses.is_final(job.status)))
        return job

    async def ListJobs(
        self, request: jobs_pb2.ListJobsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> jobs_pb2.ListJobsResponse:
        caller = self._caller(context, "ListJobs")
        jobs = await self._manager.list(request.api_name, request.limit, caller)
        return jobs_pb2.ListJobsResponse(jobs=[await self._with_results(job) for job in jobs])

    async def StopJob(self, request: jobs_pb2.JobRef, context: grpc.aio.ServicerContext[Any, Any]) -> jobs_pb2.Job:
        caller = self._caller(context, "StopJob")
        return await self._manager.stop(request.job_id, request.api_name, caller)

    async def WatchJob(
        self, request: jobs_pb2.JobRef, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[jobs_pb2.Job]:
        caller = self._caller(context, "WatchJob")
        last = None
        while True:
            job = await self._with_results(await self._manager.get(request.job_id, request.api_name, caller))
            if job != last:
                yield job
                last = job
            if statuses.is_final(job.status):
                return
            await asyncio.sleep(WATCH_INTERVAL_S)

    async def ListFailedBatches(
        self, request: jobs_pb2.JobRef, context: grpc.aio.ServicerContext[Any, Any]
    ) -> jobs_pb2.ListFailedBatchesResponse:
        caller = self._caller(context, "ListFailedBatches")
        batches = await self._manager.failed_batches(request.job_id, request.api_name, caller)
        return jobs_pb2.ListFailedBatchesResponse(batches=batches)

    async def GetJobLogs(
        self, request: jobs_pb2.JobLogsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[jobs_pb2.LogLine]:
        caller = self._caller(context, "GetJobLogs")
        async for lines in self._manager.logs(request.job_id, request.follow, caller):
            for line in lines:
                yield line

    async def ReadResults(
        self, request: jobs_pb2.ReadResultsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[jobs_pb2.BatchOutputs]:
        caller = self._caller(context, "ReadResults")
        await self._manager.get(request.job_id, "", caller)  # it exists, and the caller may read it

        async def is_final() -> bool:
            return statuses.is_final((await self._manager.get(request.job_id, "", caller)).status)

        after = request.after if request.HasField("after") else -1
        async for outputs in self._results.read(request.job_id, after, request.follow, request.items, is_final):
            yield jobs_pb2.BatchOutputs(outputs=outputs)

    async def DeleteResults(
        self, request: jobs_pb2.JobRef, context: grpc.aio.ServicerContext[Any, Any]
    ) -> jobs_pb2.DeletedResults:
        caller = self._caller(context, "DeleteResults")
        job = await self._manager.get(request.job_id, request.api_name, caller)
        access.check_job(caller, job.job_id, job.owner, change=True)
        return await self._results.delete(job)

    async def RetryFailed(self, request: jobs_pb2.JobRef, context: grpc.aio.ServicerContext[Any, Any]) -> jobs_pb2.Job:
        caller = self._caller(context, "RetryFailed")
        return await self._manager.retry_failed(request.job_id, request.api_name, caller)


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(self, manager: JobManager) -> None:
        self._manager = manager

    async def JobSettled(
        self, request: scheduler_pb2.JobSettledRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scheduler_pb2.Ack:
        await self._manager.job_settled(request.job_id, request.summary)
        return scheduler_pb2.Ack()

    async def HookFinished(
        self, request: scheduler_pb2.HookFinishedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scheduler_pb2.Ack:
        await self._manager.hook_finished(request.job_id, request.outcome)
        return scheduler_pb2.Ack()


async def create_server(config: Config, address: str) -> tuple[grpc.aio.Server, int, JobManager]:
    """Open the store, backends and peers, pick up unfinished jobs, and serve Jobs and Scheduler on `address`."""
    keys = KeyRing(config.auth.keys_file)
    stack = trust.load(config)
    token = stack.token(trust.SCHEDULER)
    store = await JobStore.open(Path(config.data_dir) / "scheduler" / "jobs.db")
    enqueuer = rpc.Client(enqueuer_pb2_grpc.EnqueuerStub(rpc.channel(config.addresses.enqueuer, config.tls)), token)
    monitor = rpc.Client(monitor_pb2_grpc.MonitorStub(rpc.channel(config.addresses.monitor, config.tls)), token)
    manager = JobManager(config, store, open_queue_backend(config), open_runtime(config), enqueuer, monitor)
    results = JobResults(store, lambda s3_path: open_result_store(config, s3_path), config.results.ttl_s, monitor)
    if config.results.ttl_s > 0:
        create_guarded_task(results.expire(), "expire results")
    server, port = await rpc.start_server(
        address,
        [
            (jobs_pb2_grpc.add_JobsServicer_to_server, JobsServicer(manager, keys, results), "thresher.v1.Jobs"),
            (scheduler_pb2_grpc.add_SchedulerServicer_to_server, SchedulerServicer(manager), "thresher.v1.Scheduler"),
        ],
        stack,
        config.tls,
    )
    await manager.recover()
    return server, port, manager
