"""The scheduler's gRPC services over loopback, with real fake peers (enqueuer, monitor) and real processes."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from services.scheduler.server import create_server
from services.scheduler.store import JobStore
from tests.e2e.conftest import alive
from tests.helpers import assert_eventually, stack_trust
from thresher.core import rpc, trust
from thresher.core.config import Config
from thresher.core.errors import InvalidRequest, NotFound, QueueNotFound, WrongState
from thresher.core.queue import KIND_JOB_COMPLETE, Batch, open_queue_backend
from thresher.v1 import (
    enqueuer_pb2,
    enqueuer_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    monitor_pb2,
    monitor_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
)

pytestmark = pytest.mark.timeout(60)
IDLE_WORKER = [sys.executable, "-c", "import time; time.sleep(300)"]
STUBBORN_WORKER = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"


class FakeEnqueuer(enqueuer_pb2_grpc.EnqueuerServicer):
    """Puts one batch per item on the real queue; can be told to fail."""

    def __init__(self, config: Config) -> None:
        self.requests: list[enqueuer_pb2.EnqueueRequest] = []
        self.error: Exception | None = None
        self.held = asyncio.Event()  # cleared: each call waits until it is set
        self.held.set()
        self.queues = open_queue_backend(config)

    async def Enqueue(self, request: Any, context: Any) -> AsyncIterator[enqueuer_pb2.EnqueueProgress]:
        self.requests.append(request)
        await self.held.wait()
        if self.error:
            raise self.error
        items = request.submission.item_list.items
        batches = [Batch(f"{request.job_id}-{i}", b"[" + item + b"]") for i, item in enumerate(items)]
        await self.queues.open(request.queue_name).send(batches)
        yield enqueuer_pb2.EnqueueProgress(batches_enqueued=len(items), items_enqueued=len(items), done=True)


class FakeMonitor(monitor_pb2_grpc.MonitorServicer):
    def __init__(self) -> None:
        self.tracked: list[monitor_pb2.TrackJobRequest] = []
        self.ready: list[str] = []  # workers whose dequeuers report them ready
        self.seconds_per_batch: float | None = None  # the mean batch time it answers, if any

    async def TrackJob(self, request: Any, context: Any) -> monitor_pb2.TrackJobResponse:
        self.tracked.append(request)
        return monitor_pb2.TrackJobResponse()

    async def GetJobProgress(self, request: Any, context: Any) -> monitor_pb2.JobProgress:
        progress = monitor_pb2.JobProgress(job_id=request.job_id, batches=jobs_pb2.BatchCounts(succeeded=1))
        if self.seconds_per_batch is not None:
            progress.batches.average_time_per_batch_s = self.seconds_per_batch
        progress.workers.extend(jobs_pb2.WorkerStatus(worker_id=w, phase="ready") for w in self.ready)
        progress.worker_counts.ready = len(self.ready)
        return progress

    async def Report(self, requests: Any, context: Any) -> AsyncIterator[monitor_pb2.ReportAcks]:
        async for message in requests:  # the workers' dequeuers report: acked, not looked at
            yield monitor_pb2.ReportAcks(acks=[monitor_pb2.ReportAck(seq=r.seq) for r in message.reports])


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.config = Config(data_dir=tmp_path)
        self.config.runtime.stop_grace_s = 2.0
        self.trust = stack_trust(self.config)
        self.enqueuer = FakeEnqueuer(self.config)
        self.monitor = FakeMonitor()
        self.servers: list[grpc.aio.Server] = []

    async def start_peers(self) -> None:
        for add, servicer, name, attr in (
            (enqueuer_pb2_grpc.add_EnqueuerServicer_to_server, self.enqueuer, "thresher.v1.Enqueuer", "enqueuer"),
            (monitor_pb2_grpc.add_MonitorServicer_to_server, self.monitor, "thresher.v1.Monitor", "monitor"),
        ):
            server, port = await rpc.start_server("127.0.0.1:0", [(add, servicer, name)], self.trust)
            self.servers.append(server)
            setattr(self.config.addresses, attr, f"127.0.0.1:{port}")

    async def start_scheduler(self) -> None:
        self.scheduler, port, self.manager = await create_server(self.config, "127.0.0.1:0")
        self.channel = rpc.channel(f"127.0.0.1:{port}")
        self.jobs = rpc.Client(jobs_pb2_grpc.JobsStub(self.channel), self.trust.token(trust.GATEWAY))
        self.internal = rpc.Client(scheduler_pb2_grpc.SchedulerStub(self.channel), self.trust.token(trust.MONITOR))

    async def stop_scheduler(self) -> None:
        await self.manager.shutdown()
        await self.scheduler.stop(1)
        await self.channel.close()

    async def deploy(self, name: str = "sum", command: list[str] = IDLE_WORKER) -> None:
        api = jobs_pb2.ApiSpec(name=name, containers=[jobs_pb2.Container(name="api", command=command)])
        await self.jobs.DeployApi(jobs_pb2.DeployApiRequest(api=api))

    async def submit(self, items: int = 3, workers: int = 2, api_name: str = "sum", **fields: Any) -> jobs_pb2.Job:
        submission = jobs_pb2.JobSubmission(api_name=api_name, workers=workers, **fields)
        submission.item_list.items.extend(str(i).encode() for i in range(items))
        submission.item_list.batch_size = 1
        return await self.jobs.SubmitJob(jobs_pb2.SubmitJobRequest(submission=submission))

    async def status(self, job_id: str) -> jobs_pb2.Job:
        return await self.jobs.GetJob(jobs_pb2.JobRef(job_id=job_id))

    async def wait_for_status(self, job_id: str, status: int, timeout_s: float = 20.0) -> jobs_pb2.Job:
        async def reached() -> jobs_pb2.Job:
            job = await self.status(job_id)
            assert job.status == status
            return job

        return await assert_eventually(reached, timeout_s=timeout_s)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(tmp_path)
    await h.start_peers()
    await h.start_scheduler()
    await h.deploy()
    yield h
    await h.stop_scheduler()
    for server in h.servers:
        await server.stop(0)
    await h.enqueuer.queues.close()


def worker_pids(data_dir: Path, job_id: str) -> list[int]:
    path = data_dir / "jobs" / job_id / "workers.json"
    return [p["pid"] for pod in json.loads(path.read_text()) for p in pod["processes"]] if path.exists() else []


async def running_job(h: Harness, **fields: Any) -> jobs_pb2.Job:
    job = await h.submit(**fields)

    async def enqueued() -> None:
        status = await h.status(job.job_id)
        assert status.status == jobs_pb2.JOB_STATUS_RUNNING and status.total_batch_count == 3
        assert len(worker_pids(h.config.data_dir, job.job_id)) == 4  # 2 workers, each with its dequeuer

    await assert_eventually(enqueued)
    return job


async def test_a_submission_is_enqueued_tracked_and_gets_its_workers(harness: Harness) -> None:
    job = await running_job(harness, config_json=b'{"k": 1}')

    [request] = harness.enqueuer.requests
    assert request.job_id == job.job_id and request.queue_name.endswith(job.job_id)
    assert list(request.submission.item_list.items) == [b"0", b"1", b"2"]
    assert [(t.job_id, t.total_batch_count) for t in harness.monitor.tracked] == [(job.job_id, 3)]
    spec = json.loads((harness.config.data_dir / "jobs" / job.job_id / "job.json").read_text())
    assert (spec["job_id"], spec["config"], spec["total_batch_count"]) == (job.job_id, {"k": 1}, 3)
    status = await harness.status(job.job_id)
    assert status.batches.succeeded == 1, "progress comes from the monitor"
    assert status.batches_in_queue == 3


async def test_the_status_says_enqueuing_until_every_batch_is_on_the_queue_and_counts_ready_workers(
    harness: Harness,
) -> None:
    """As Cortex's: `enqueuing` while the enqueuer runs, though workers start (and may take batches) before it ends;
    `total_batch_count` once known; workers under Cortex's keys, the ready ones counted."""
    harness.enqueuer.held.clear()
    job = await harness.submit()
    workers_file = harness.config.data_dir / "jobs" / job.job_id / "workers.json"

    def workers_started() -> list[str]:
        assert workers_file.exists()
        return [pod["worker_id"] for pod in json.loads(workers_file.read_text())]

    harness.monitor.ready = (await assert_eventually(workers_started))[:1]

    async def enqueuing_with_a_ready_worker() -> None:
        status = await harness.status(job.job_id)
        assert status.status == jobs_pb2.JOB_STATUS_ENQUEUING and not status.HasField("total_batch_count")
        assert status.worker_counts == jobs_pb2.WorkerCounts(ready=1, not_ready=1)

    await assert_eventually(enqueuing_with_a_ready_worker)
    harness.enqueuer.held.set()
    status = await harness.wait_for_status(job.job_id, jobs_pb2.JOB_STATUS_RUNNING)
    assert status.total_batch_count == 3


async def test_a_settled_job_gets_its_hook_message_then_succeeds_and_leaves_nothing(harness: Harness) -> None:
    job = await running_job(harness)
    pids = worker_pids(harness.config.data_dir, job.job_id)
    summary = scheduler_pb2.JobSummary(total_batch_count=3, batches=jobs_pb2.BatchCounts(succeeded=3))

    for _ in range(2):  # a repeat is harmless
        await harness.internal.JobSettled(scheduler_pb2.JobSettledRequest(job_id=job.job_id, summary=summary))

    queue = open_queue_backend(harness.config).open(harness.enqueuer.requests[0].queue_name)
    deliveries = []
    while batch := await queue.receive(10, wait_s=0):
        deliveries += batch
    [hook_message] = [d for d in deliveries if d.batch.kind == KIND_JOB_COMPLETE]
    body = json.loads(hook_message.batch.body)
    assert (body["job_id"], body["status"], body["succeeded"], body["total_batch_count"]) == (
        job.job_id, "succeeded", 3, 3,
    )  # fmt: skip

    outcome = jobs_pb2.HookOutcome(called=True, succeeded=True, http_status=200, attempts=1)
    for _ in range(2):
        await harness.internal.HookFinished(scheduler_pb2.HookFinishedRequest(job_id=job.job_id, outcome=outcome))

    status = await harness.status(job.job_id)
    assert status.status == jobs_pb2.JOB_STATUS_SUCCEEDED
    assert status.hook.http_status == 200 and status.HasField("end_time")

    async def cleaned_up() -> None:
        assert not [pid for pid in pids if alive(pid)]
        try:
            await queue.depth()
        except QueueNotFound:
            return
        raise AssertionError("the queue still exists")

    await assert_eventually(cleaned_up)


async def test_an_ended_jobs_dead_letters_include_one_moved_while_its_workers_drain(harness: Harness) -> None:
    # Given a running job whose workers take their whole grace period to stop (they ignore SIGTERM)
    await harness.deploy("stubborn", [sys.executable, "-c", STUBBORN_WORKER])
    job = await harness.submit(api_name="stubborn")
    await harness.wait_for_status(job.job_id, jobs_pb2.JOB_STATUS_RUNNING)
    queue = open_queue_backend(harness.config).open(harness.enqueuer.requests[0].queue_name)
    # When the monitor has decided every batch and the job ends, with one dead letter still on its way (a dequeuer
    # moves it while draining, after the job's dead letters are first asked for)
    summary = scheduler_pb2.JobSummary(total_batch_count=3, batches=jobs_pb2.BatchCounts(succeeded=2, dead_lettered=1))
    await harness.internal.JobSettled(scheduler_pb2.JobSettledRequest(job_id=job.job_id, summary=summary))
    outcome = jobs_pb2.HookOutcome(called=True, succeeded=True, http_status=200, attempts=1)
    await harness.internal.HookFinished(scheduler_pb2.HookFinishedRequest(job_id=job.job_id, outcome=outcome))
    listing = asyncio.create_task(harness.jobs.ListFailedBatches(jobs_pb2.JobRef(job_id=job.job_id)))
    await asyncio.sleep(0.2)
    [delivery, *_] = await queue.receive(1, wait_s=0)
    await queue.dead_letter(delivery, "poison item")
    # Then the list has it: it is read once the workers have drained
    [failed] = (await asyncio.wait_for(listing, 20)).batches
    assert (failed.batch_id, failed.error) == (delivery.batch.batch_id, "poison item")


async def test_stopping_a_job_stops_its_workers_and_a_second_stop_is_a_conflict(harness: Harness) -> None:
    job = await running_job(harness)
    pids = worker_pids(harness.config.data_dir, job.job_id)

    stopped = await harness.jobs.StopJob(jobs_pb2.JobRef(job_id=job.job_id))

    assert stopped.status == jobs_pb2.JOB_STATUS_STOPPED
    with pytest.raises(WrongState, match="not in progress"):
        await harness.jobs.StopJob(jobs_pb2.JobRef(job_id=job.job_id))

    async def no_worker_left() -> None:
        assert not [pid for pid in pids if alive(pid)]

    await assert_eventually(no_worker_left)


async def test_a_job_past_its_timeout_ends_timed_out(harness: Harness) -> None:
    job = await harness.submit(timeout_s=1)

    async def timed_out() -> None:
        assert (await harness.status(job.job_id)).status == jobs_pb2.JOB_STATUS_TIMED_OUT

    await assert_eventually(timed_out, timeout_s=10)


async def test_an_enqueuer_error_ends_the_job_enqueue_failed_with_the_reason(harness: Harness) -> None:
    harness.enqueuer.error = InvalidRequest("item 7: bad JSON")
    job = await harness.submit()

    async def failed() -> None:
        status = await harness.status(job.job_id)
        assert status.status == jobs_pb2.JOB_STATUS_ENQUEUE_FAILED
        assert "item 7: bad JSON" in status.status_reason

    await assert_eventually(failed)


async def test_bad_submissions_and_unknown_names_get_clear_errors(harness: Harness) -> None:
    with pytest.raises(InvalidRequest, match="workers: must be greater than or equal to 1"):
        await harness.submit(workers=0)
    with pytest.raises(NotFound, match="nope is not deployed"):
        await harness.jobs.SubmitJob(jobs_pb2.SubmitJobRequest(submission=jobs_pb2.JobSubmission(api_name="nope")))
    with pytest.raises(NotFound):
        await harness.status("0123456789abcdef0000")
    with pytest.raises(NotFound):
        await harness.jobs.GetApi(jobs_pb2.GetApiRequest(name="nope"))
    named_dlq = jobs_pb2.DeadLetterPolicy(arn="arn:aws:sqs:us-east-1:123456789012:dlq.fifo", max_receive_count=2)
    with pytest.raises(InvalidRequest, match="needs the sqs queue backend"):
        await harness.submit(sqs_dead_letter_queue=named_dlq)
    assert await harness.jobs.ListJobs(jobs_pb2.ListJobsRequest()) == jobs_pb2.ListJobsResponse()


async def test_a_restarted_scheduler_resumes_an_unfinished_job(harness: Harness) -> None:
    harness.enqueuer.error = InvalidRequest("not now")  # the first launch fails...
    job = await harness.submit()

    async def failed() -> None:
        assert (await harness.status(job.job_id)).status == jobs_pb2.JOB_STATUS_ENQUEUE_FAILED

    await assert_eventually(failed)
    await harness.stop_scheduler()
    harness.enqueuer.error = None

    await harness.start_scheduler()  # ...a job that ended stays ended; a new one is picked up
    job2_ref = await harness.submit()
    await harness.stop_scheduler()
    await harness.start_scheduler()

    async def resumed() -> None:
        assert (await harness.status(job2_ref.job_id)).status == jobs_pb2.JOB_STATUS_RUNNING

    await assert_eventually(resumed)
    assert (await harness.status(job.job_id)).status == jobs_pb2.JOB_STATUS_ENQUEUE_FAILED
    listed = await harness.jobs.ListJobs(jobs_pb2.ListJobsRequest(api_name="sum"))
    assert [j.job_id for j in listed.jobs] == [job2_ref.job_id, job.job_id], "newest first"


async def test_watch_streams_changes_until_the_final_status(harness: Harness) -> None:
    job = await running_job(harness)
    seen: list[int] = []

    async def watch() -> None:
        async for update in harness.jobs.WatchJob(jobs_pb2.JobRef(job_id=job.job_id)):
            seen.append(update.status)

    watcher = asyncio.create_task(watch())

    async def first_update() -> None:
        assert seen

    await assert_eventually(first_update)
    await harness.jobs.StopJob(jobs_pb2.JobRef(job_id=job.job_id))
    await asyncio.wait_for(watcher, timeout=10)
    assert seen[0] == jobs_pb2.JOB_STATUS_RUNNING and seen[-1] == jobs_pb2.JOB_STATUS_STOPPED


async def test_a_crash_looping_worker_uses_up_the_restart_budget_and_the_job_ends_worker_error(
    harness: Harness,
) -> None:
    await harness.deploy("crash", [sys.executable, "-c", "import sys; sys.exit(3)"])
    job = await harness.submit(items=1, workers=1, api_name="crash")

    status = await harness.wait_for_status(job.job_id, jobs_pb2.JOB_STATUS_WORKER_ERROR)
    budget = harness.config.runtime.max_worker_restarts
    assert "api exited with code 3" in status.status_reason and f"budget {budget}" in status.status_reason
    assert status.worker_restarts == budget + 1


async def test_a_scheduler_that_shuts_down_stops_its_workers_and_starts_none_meanwhile(harness: Harness) -> None:
    # Workers that ignore SIGTERM: stopping them takes the whole grace (2 s), over several supervision rounds
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    await harness.deploy("stubborn", [sys.executable, "-c", stubborn])
    job = await harness.submit(items=1, workers=2, api_name="stubborn")

    async def workers_started() -> None:
        assert len(worker_pids(harness.config.data_dir, job.job_id)) == 4

    await assert_eventually(workers_started)
    await asyncio.sleep(0.2)  # their SIGTERM handlers are in place

    await harness.stop_scheduler()

    pids = worker_pids(harness.config.data_dir, job.job_id)
    assert len(pids) == 4, "no worker was started while the others were being stopped"
    assert not [pid for pid in pids if alive(pid)]
    await harness.start_scheduler()  # for the fixture, which stops it


async def test_a_worker_command_that_cannot_start_fails_the_job_and_signals_nothing_else(harness: Harness) -> None:
    # The scheduler runs in this process: a signal meant for a pod that never started must not reach its group
    await harness.deploy("missing", ["/nonexistent/worker-binary"])
    job = await harness.submit(items=1, workers=1, api_name="missing")

    status = await harness.wait_for_status(job.job_id, jobs_pb2.JOB_STATUS_WORKER_ERROR)
    assert "cannot start api (/nonexistent/worker-binary)" in status.status_reason
    await harness.stop_scheduler()  # stops the workers of every job, the never-started ones included
    await harness.start_scheduler()  # for the fixture; this process is still here to do it


@pytest.mark.parametrize(
    "container",
    [
        jobs_pb2.Container(name="api", command=IDLE_WORKER, env={"A=B": "1"}),
        jobs_pb2.Container(name="api", command=[*IDLE_WORKER, "\0"]),
    ],
    ids=["= in an env name", "NUL in an argument"],
)
async def test_an_api_whose_workers_cannot_be_started_is_refused_at_deploy(
    harness: Harness, container: jobs_pb2.Container
) -> None:
    api = jobs_pb2.ApiSpec(name="bad", containers=[container])
    with pytest.raises(InvalidRequest, match="not a variable name|holds a NUL"):
        await harness.jobs.DeployApi(jobs_pb2.DeployApiRequest(api=api))
    with pytest.raises(NotFound):
        await harness.jobs.GetApi(jobs_pb2.GetApiRequest(name="bad"))


async def test_a_job_of_an_old_api_whose_workers_cannot_start_ends_worker_error_with_the_reason(
    harness: Harness,
) -> None:
    # Given an API stored before deploys checked it (env names with "=" cannot be passed to exec)
    store = await JobStore.open(harness.config.data_dir / "scheduler" / "jobs.db")
    container = jobs_pb2.Container(name="api", command=IDLE_WORKER, env={"A=B": "1"})
    await store.put_api(jobs_pb2.ApiSpec(name="old", containers=[container]))
    await store.close()

    # When a job of it is submitted
    job = await harness.submit(items=1, workers=1, api_name="old")

    # Then each worker fails to start, as a crash does, and the job ends once the restart budget is used up
    status = await harness.wait_for_status(job.job_id, jobs_pb2.JOB_STATUS_WORKER_ERROR)
    assert "cannot start api" in status.status_reason and "environment variable" in status.status_reason
    assert status.worker_restarts == harness.config.runtime.max_worker_restarts + 1


async def test_deleting_an_api_stops_its_jobs_in_progress_and_keeps_their_history_unless_asked(
    harness: Harness,
) -> None:
    job = await running_job(harness)
    pids = worker_pids(harness.config.data_dir, job.job_id)

    reply = await harness.jobs.DeleteApi(jobs_pb2.DeleteApiRequest(name="sum"))

    assert (list(reply.stopped_job_ids), reply.deleted_jobs) == ([job.job_id], 0)
    status = await harness.status(job.job_id)  # kept, final once its clean-up is done
    assert (status.status, status.status_reason) == (jobs_pb2.JOB_STATUS_STOPPED, "its API sum was deleted")
    assert not [pid for pid in pids if alive(pid)]
    with pytest.raises(NotFound, match="sum is not deployed"):
        await harness.submit()
    with pytest.raises(NotFound, match="sum is not deployed"):
        await harness.jobs.DeleteApi(jobs_pb2.DeleteApiRequest(name="sum"))

    await harness.deploy()  # deployed again: its new job and the old one are forgotten on request
    job2 = await running_job(harness)
    reply = await harness.jobs.DeleteApi(jobs_pb2.DeleteApiRequest(name="sum", delete_jobs=True))
    assert (list(reply.stopped_job_ids), reply.deleted_jobs) == ([job2.job_id], 2)
    for job_id in (job.job_id, job2.job_id):
        with pytest.raises(NotFound):
            await harness.status(job_id)
    assert await harness.jobs.ListJobs(jobs_pb2.ListJobsRequest()) == jobs_pb2.ListJobsResponse()


async def test_a_job_names_the_deployed_version_of_its_api_which_a_redeploy_changes(harness: Harness) -> None:
    first_api = await harness.jobs.GetApi(jobs_pb2.GetApiRequest(name="sum"))
    job = await running_job(harness)
    assert first_api.api_id and job.api_id == first_api.api_id
    spec = json.loads((harness.config.data_dir / "jobs" / job.job_id / "job.json").read_text())
    assert spec["api_id"] == first_api.api_id, "the worker's job spec names it too, as Cortex's"

    await harness.deploy()  # the same definition, deployed again: a new version
    second_api = await harness.jobs.GetApi(jobs_pb2.GetApiRequest(name="sum"))
    job2 = await harness.submit()
    assert second_api.api_id not in ("", first_api.api_id) and job2.api_id == second_api.api_id
    assert (await harness.status(job.job_id)).api_id == first_api.api_id, "a job keeps the version it was given"
