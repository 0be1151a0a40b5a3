"""The monitor over real gRPC and HTTP on 127.0.0.1, with a fake Scheduler gRPC server recording what it is told."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from services.monitor import MonitorServer, create_server
from tests.helpers import TEST_TRUST as STACK
from tests.helpers import Signed, assert_eventually, write_test_secret
from thresher.core import rpc, trust
from thresher.core.config import Addresses, Config
from thresher.core.errors import Unavailable
from thresher.v1 import jobs_pb2, monitor_pb2, monitor_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
JOB = "job-1"
API = "resize"
STARTED = monitor_pb2.BATCH_RESULT_STARTED
SUCCEEDED = monitor_pb2.BATCH_RESULT_SUCCEEDED
FAILED = monitor_pb2.BATCH_RESULT_FAILED
DEAD_LETTERED = monitor_pb2.BATCH_RESULT_DEAD_LETTERED
_seqs = itertools.count(1)
_barrier_ids = itertools.count(1)


class FakeScheduler(scheduler_pb2_grpc.SchedulerServicer):
    """Records every acknowledged call; answers UNAVAILABLE while `failures_left` > 0."""

    def __init__(self) -> None:
        self.settled: list[scheduler_pb2.JobSettledRequest] = []
        self.hooks: list[scheduler_pb2.HookFinishedRequest] = []
        self.failures_left = 0
        self.refused = 0

    async def JobSettled(self, request: scheduler_pb2.JobSettledRequest, context: object) -> scheduler_pb2.Ack:
        self._maybe_fail()
        self.settled.append(request)
        return scheduler_pb2.Ack()

    async def HookFinished(self, request: scheduler_pb2.HookFinishedRequest, context: object) -> scheduler_pb2.Ack:
        self._maybe_fail()
        self.hooks.append(request)
        return scheduler_pb2.Ack()

    def _maybe_fail(self) -> None:
        if self.failures_left > 0:
            self.failures_left -= 1
            self.refused += 1
            raise Unavailable("the scheduler is restarting")

    def settled_for(self, job_id: str) -> list[scheduler_pb2.JobSettledRequest]:
        return [r for r in self.settled if r.job_id == job_id]


async def start_scheduler(fake: FakeScheduler, port: int = 0) -> tuple[grpc.aio.Server, int]:
    registration = (scheduler_pb2_grpc.add_SchedulerServicer_to_server, fake, "thresher.v1.Scheduler")
    return await rpc.start_server(f"127.0.0.1:{port}", [registration], STACK)


@dataclass
class RunningMonitor:
    server: MonitorServer
    stub: Any  # a MonitorStub whose calls are the scheduler's, but for reports: a dequeuer's of JOB, for any worker
    open_streams: asyncio.Event = field(default_factory=asyncio.Event)  # set: every report stream ends
    port: int = 0  # its gRPC port, for a service's own rpc.Client

    async def report(self, reports: Sequence[monitor_pb2.Report]) -> list[int]:
        """Send `reports` in one message on a stream left open, as a live dequeuer's is (an ended stream means a lost
        worker); returns the seqs acked."""

        async def stream() -> AsyncIterator[monitor_pb2.Reports]:
            yield monitor_pb2.Reports(reports=reports)
            await self.open_streams.wait()

        call = self.stub.Report(stream())
        return await read_acks(call, len(reports))

    async def track(self, total_batch_count: int, job_id: str = JOB) -> None:
        await self.stub.TrackJob(
            monitor_pb2.TrackJobRequest(job_id=job_id, api_name=API, total_batch_count=total_batch_count)
        )

    async def progress(self, job_id: str = JOB) -> monitor_pb2.JobProgress:
        return await self.stub.GetJobProgress(jobs_pb2.JobRef(job_id=job_id))

    async def counted(self, job_id: str = JOB) -> monitor_pb2.JobProgress:
        """The progress without its pace, which moves with the clock."""
        progress = await self.progress(job_id)
        progress.ClearField("pace")
        return progress

    async def metrics(self) -> dict[str, float]:
        """The job series of /metrics as {'name{labels}': value} (not the process's own, which move by themselves)."""
        url = f"http://127.0.0.1:{self.server.metrics_port}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200
            text = await response.text()
        samples = (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
        own = ("process_", "python_", "thresher_grpc_")
        return {name: float(value) for name, value in samples if not name.startswith(own)}


async def read_acks(call: Any, count: int) -> list[int]:
    """The seqs of the next `count` acks of a Report call, however the monitor grouped them."""
    seqs: list[int] = []
    while len(seqs) < count:
        seqs += [ack.seq for ack in (await call.read()).acks]
    return seqs


@contextlib.asynccontextmanager
async def running_monitor(config: Config) -> AsyncIterator[RunningMonitor]:
    server, port = await create_server(config, "127.0.0.1:0")
    channel = rpc.channel(f"127.0.0.1:{port}")
    reports = STACK.token(trust.DEQUEUER, JOB, trust.ANY_WORKER)
    stub = Signed(monitor_pb2_grpc.MonitorStub(channel), STACK.token(trust.SCHEDULER), Report=reports)
    running = RunningMonitor(server, stub, port=port)
    try:
        yield running
    finally:
        await server.stop(0)
        running.open_streams.set()
        await channel.close()


@pytest.fixture
async def scheduler() -> AsyncIterator[tuple[FakeScheduler, int]]:
    fake = FakeScheduler()
    server, port = await start_scheduler(fake)
    yield fake, port
    await server.stop(0)


def make_config(data_dir: Path, scheduler_port: int) -> Config:
    config = Config(
        data_dir=data_dir,
        addresses=Addresses(scheduler=f"127.0.0.1:{scheduler_port}", monitor_metrics="127.0.0.1:0"),
    )
    write_test_secret(config)
    return config


@pytest.fixture
def fake(scheduler: tuple[FakeScheduler, int]) -> FakeScheduler:
    return scheduler[0]


@pytest.fixture
async def monitor(tmp_path: Path, scheduler: tuple[FakeScheduler, int]) -> AsyncIterator[RunningMonitor]:
    async with running_monitor(make_config(tmp_path, scheduler[1])) as running:
        yield running


def batch(
    batch_id: str, attempt: int, result: int, duration_s: float = 0.0, error: str = "", job_id: str = JOB
) -> monitor_pb2.Report:
    body = monitor_pb2.BatchReport(
        batch_id=batch_id, attempt=attempt, result=result, duration_s=duration_s, error=error
    )
    return monitor_pb2.Report(seq=next(_seqs), job_id=job_id, worker_id="w1", batch=body)


def worker(worker_id: str, phase: int) -> monitor_pb2.Report:
    return monitor_pb2.Report(
        seq=next(_seqs), job_id=JOB, worker_id=worker_id, worker=monitor_pb2.WorkerReport(phase=phase)
    )


def hook(outcome: jobs_pb2.HookOutcome) -> monitor_pb2.Report:
    return monitor_pb2.Report(seq=next(_seqs), job_id=JOB, worker_id="w1", hook=outcome)


def attempt(batch_id: str, n: int, result: int, duration_s: float = 0.0) -> list[monitor_pb2.Report]:
    """One attempt as a dequeuer reports it: STARTED, then its result."""
    error = "" if result == SUCCEEDED else f"HTTP 500 on attempt {n}"
    return [batch(batch_id, n, STARTED), batch(batch_id, n, result, duration_s, error)]


# A job of three batches: b1 succeeds at once, b2 on its second attempt, b3 is dead-lettered after three.
MIXED_JOB = [
    *attempt("b1", 1, SUCCEEDED, 2.0),
    *attempt("b2", 1, FAILED, 0.5),
    *attempt("b2", 2, SUCCEEDED, 4.0),
    *attempt("b3", 1, FAILED, 0.1),
    *attempt("b3", 2, FAILED, 0.1),
    *attempt("b3", 3, DEAD_LETTERED, 0.1),
]


def counts(progress: monitor_pb2.JobProgress) -> tuple[int, int, int, int]:
    b = progress.batches
    return b.succeeded, b.failed_attempts, b.dead_lettered, b.in_flight


async def barrier(monitor: RunningMonitor, fake: FakeScheduler) -> None:
    """Wait until the monitor has told the scheduler about a job settled after everything sent so far."""
    job_id = f"barrier-{next(_barrier_ids)}"
    await monitor.track(0, job_id=job_id)

    def told() -> None:
        assert fake.settled_for(job_id)

    await assert_eventually(told)


async def test_reports_are_acked_and_counted(monitor: RunningMonitor) -> None:
    reports = [*MIXED_JOB, batch("b4", 1, STARTED)]

    acks = await monitor.report(reports)

    assert acks == [r.seq for r in reports]
    progress = await monitor.progress()
    assert counts(progress) == (2, 4, 1, 1)
    assert progress.batches.average_time_per_batch_s == pytest.approx(3.0)
    assert not progress.HasField("total_batch_count")


async def test_a_repeated_report_changes_nothing(monitor: RunningMonitor) -> None:
    await monitor.report(MIXED_JOB)
    before = await monitor.counted()
    metrics_before = await monitor.metrics()

    acks = await monitor.report(MIXED_JOB[3:] + MIXED_JOB)

    assert acks == [r.seq for r in MIXED_JOB[3:] + MIXED_JOB]
    assert await monitor.counted() == before
    assert await monitor.metrics() == metrics_before


async def test_a_batch_that_succeeds_twice_counts_once_with_its_first_duration(monitor: RunningMonitor) -> None:
    await monitor.report([*attempt("b1", 1, SUCCEEDED, 2.0), *attempt("b1", 2, SUCCEEDED, 8.0)])

    progress = await monitor.progress()

    assert counts(progress) == (1, 0, 0, 0)
    assert progress.batches.average_time_per_batch_s == pytest.approx(2.0)


async def test_a_batch_that_succeeds_after_being_dead_lettered_counts_as_succeeded(monitor: RunningMonitor) -> None:
    await monitor.report([batch("b1", 1, STARTED), *attempt("b1", 2, DEAD_LETTERED)])
    assert counts(await monitor.progress()) == (0, 1, 1, 0)

    await monitor.report([batch("b1", 1, SUCCEEDED, 30.0)])  # the first attempt's worker answered at last

    assert counts(await monitor.progress()) == (1, 1, 0, 0)


async def test_a_late_report_of_an_older_attempt_leaves_the_batch_in_flight(monitor: RunningMonitor) -> None:
    await monitor.report([batch("b1", 1, STARTED), batch("b1", 2, STARTED), batch("b1", 1, FAILED)])

    assert counts(await monitor.progress()) == (0, 1, 0, 1)


async def test_job_tracked_after_its_batches_settles_once_with_its_summary(
    monitor: RunningMonitor, fake: FakeScheduler
) -> None:
    await monitor.report(MIXED_JOB)
    await barrier(monitor, fake)
    assert fake.settled_for(JOB) == []  # every batch is terminal, but the total is not known yet

    await monitor.track(3)

    await assert_eventually(lambda: _assert_len(fake.settled_for(JOB), 1))
    summary = fake.settled_for(JOB)[0].summary
    assert summary.total_batch_count == 3
    assert (summary.batches.succeeded, summary.batches.failed_attempts, summary.batches.dead_lettered) == (2, 4, 1)
    assert summary.batches.average_time_per_batch_s == pytest.approx(3.0)
    assert list(summary.dead_lettered_batch_ids) == ["b3"]

    await monitor.track(3)
    await monitor.report(MIXED_JOB)
    await barrier(monitor, fake)
    assert len(fake.settled_for(JOB)) == 1


async def test_job_tracked_before_its_batches_settles_when_the_last_one_ends(
    monitor: RunningMonitor, fake: FakeScheduler
) -> None:
    await monitor.track(2)
    await monitor.report([*attempt("b1", 1, SUCCEEDED, 1.0), batch("b2", 1, STARTED)])
    await barrier(monitor, fake)
    assert fake.settled_for(JOB) == []

    await monitor.report([batch("b2", 1, SUCCEEDED, 1.0)])

    await assert_eventually(lambda: _assert_len(fake.settled_for(JOB), 1))
    summary = fake.settled_for(JOB)[0].summary
    assert (summary.total_batch_count, summary.batches.succeeded, list(summary.dead_lettered_batch_ids)) == (2, 2, [])
    assert (await monitor.progress()).total_batch_count == 2


async def test_a_batch_counts_once_toward_settling_however_many_terminal_reports_it_gets(
    monitor: RunningMonitor, fake: FakeScheduler
) -> None:
    # Given a job of 2 batches whose first is dead-lettered, then succeeds, then is reported again (each on its own)
    await monitor.track(2)
    for reports in (attempt("b1", 1, DEAD_LETTERED), attempt("b1", 2, SUCCEEDED), attempt("b1", 2, SUCCEEDED)):
        await monitor.report(reports)
    # Then the job is not settled while its second batch is out
    await barrier(monitor, fake)
    assert fake.settled_for(JOB) == []
    # And it settles once the second batch ends
    await monitor.report(attempt("b2", 1, SUCCEEDED))
    await assert_eventually(lambda: _assert_len(fake.settled_for(JOB), 1))


async def test_job_with_no_batches_settles_as_soon_as_it_is_tracked(
    monitor: RunningMonitor, fake: FakeScheduler
) -> None:
    await monitor.track(0)

    await assert_eventually(lambda: _assert_len(fake.settled_for(JOB), 1))
    assert fake.settled_for(JOB)[0].summary.total_batch_count == 0


async def test_tracking_a_job_again_with_another_total_is_refused(monitor: RunningMonitor) -> None:
    await monitor.track(3)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await monitor.track(4)

    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_job_settled_is_retried_while_the_scheduler_answers_unavailable(
    monitor: RunningMonitor, fake: FakeScheduler
) -> None:
    fake.failures_left = 3

    await monitor.track(0)

    await assert_eventually(lambda: _assert_len(fake.settled_for(JOB), 1))
    assert fake.refused == 3


async def test_job_settled_reaches_a_scheduler_started_later(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeScheduler()
    server, port = await start_scheduler(fake)
    await server.stop(0)  # the port is known, and nothing listens on it
    async with running_monitor(make_config(tmp_path, port)) as monitor:
        await monitor.track(0)
        await assert_eventually(lambda: _assert_logged(caplog, "JobSettled failed"))

        server, _ = await start_scheduler(fake, port)
        try:
            await assert_eventually(lambda: _assert_len(fake.settled_for(JOB), 1), timeout_s=20)
        finally:
            await server.stop(0)


async def test_a_restarted_monitor_keeps_its_counts_and_sends_a_pending_settlement(
    tmp_path: Path, scheduler: tuple[FakeScheduler, int]
) -> None:
    fake, port = scheduler
    fake.failures_left = 1_000_000
    async with running_monitor(make_config(tmp_path, port)) as first:
        await first.report(MIXED_JOB)
        await first.track(3)
        await assert_eventually(lambda: _assert_positive(fake.refused))
        before = await first.counted()

    fake.failures_left = 0
    async with running_monitor(make_config(tmp_path, port)) as second:
        assert await second.counted() == before
        assert counts(before) == (2, 4, 1, 0)
        await assert_eventually(lambda: _assert_len(fake.settled_for(JOB), 1))
        assert list(fake.settled_for(JOB)[0].summary.dead_lettered_batch_ids) == ["b3"]


async def test_a_settlement_acknowledged_before_a_restart_is_not_sent_again(
    tmp_path: Path, scheduler: tuple[FakeScheduler, int]
) -> None:
    fake, port = scheduler
    async with running_monitor(make_config(tmp_path, port)) as first:
        await first.track(0)
        await assert_eventually(lambda: _assert_len(fake.settled_for(JOB), 1))

    async with running_monitor(make_config(tmp_path, port)) as second:
        await barrier(second, fake)

    assert len(fake.settled_for(JOB)) == 1


@pytest.mark.timeout(30)  # far less than the grace below: a stream held open makes the stop take all of it
async def test_a_stopping_monitor_ends_its_report_streams_at_once_after_acking_what_it_read(
    tmp_path: Path, scheduler: tuple[FakeScheduler, int]
) -> None:
    # Given a live dequeuer's report stream (open, with its first reports acked)
    server, port = await create_server(make_config(tmp_path, scheduler[1]), "127.0.0.1:0")
    forever = asyncio.Event()

    async def stream() -> AsyncIterator[monitor_pb2.Reports]:
        yield monitor_pb2.Reports(reports=attempt("b1", 1, SUCCEEDED))
        await forever.wait()

    async with rpc.channel(f"127.0.0.1:{port}") as channel:
        reports = STACK.token(trust.DEQUEUER, JOB, "w1")
        call = Signed(monitor_pb2_grpc.MonitorStub(channel), reports).Report(stream())
        assert len(await read_acks(call, 2)) == 2

        # When the monitor stops (SIGTERM), with a grace for calls under way far longer than the test may take
        await server.stop(grace_s=3600)

        # Then the stream has ended cleanly, so that the dequeuer reconnects at once (to the restarted monitor)
        assert await call.read() is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
        forever.set()


async def test_a_hook_outcome_is_forwarded_once(monitor: RunningMonitor, fake: FakeScheduler) -> None:
    outcome = jobs_pb2.HookOutcome(called=True, succeeded=True, http_status=200, attempts=2)
    report = hook(outcome)

    await monitor.report([report, report])
    await monitor.report([report, hook(jobs_pb2.HookOutcome(called=True, succeeded=False, attempts=3))])

    await assert_eventually(lambda: _assert_len(fake.hooks, 1))
    await barrier(monitor, fake)
    assert len(fake.hooks) == 1
    assert (fake.hooks[0].job_id, fake.hooks[0].outcome) == (JOB, outcome)


async def test_progress_counts_workers_by_their_last_phase(monitor: RunningMonitor) -> None:
    starting, ready, stopping = (
        monitor_pb2.WORKER_PHASE_STARTING,
        monitor_pb2.WORKER_PHASE_READY,
        monitor_pb2.WORKER_PHASE_STOPPING,
    )
    await monitor.report(
        [
            worker("w1", starting),
            worker("w1", ready),
            worker("w2", starting),
            worker("w3", ready),
            worker("w3", stopping),
        ]
    )

    progress = await monitor.progress()

    assert (progress.worker_counts.pending, progress.worker_counts.ready) == (1, 1)


async def test_progress_is_answered_while_a_report_waits_for_the_ledger(
    monitor: RunningMonitor, tmp_path: Path
) -> None:
    """A status read must not queue behind the ledger's writes (with a hundred jobs, those are many commits, each
    with its fsync): here the write waits for the lock another process holds."""
    await monitor.report(attempt("b1", 1, SUCCEEDED))
    with contextlib.closing(sqlite3.connect(tmp_path / "monitor" / "ledger.db", isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # the write lock: the monitor's next write waits for it
        waiting = asyncio.ensure_future(monitor.report(attempt("b2", 1, SUCCEEDED)))
        await asyncio.sleep(0.5)  # time for the report to reach the ledger's writer

        progress = await asyncio.wait_for(monitor.progress(), 10)

        assert counts(progress) == (1, 0, 0, 0)  # what is committed
        assert not waiting.done()
        other.execute("COMMIT")
    await waiting
    assert counts(await monitor.progress()) == (2, 0, 0, 0)


async def test_a_job_with_no_report_has_zero_progress(monitor: RunningMonitor) -> None:
    progress = await monitor.progress("never-heard-of")

    assert counts(progress) == (0, 0, 0, 0)
    assert (progress.worker_counts.pending, progress.worker_counts.ready) == (0, 0)
    assert not progress.HasField("total_batch_count")
    assert not progress.batches.HasField("average_time_per_batch_s")


async def test_progress_asked_under_another_api_is_not_found(monitor: RunningMonitor) -> None:
    await monitor.track(1)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await monitor.stub.GetJobProgress(jobs_pb2.JobRef(api_name="another", job_id=JOB))

    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_settled_batches_are_the_terminal_ones_from_a_batch_on_in_batch_order(monitor: RunningMonitor) -> None:
    # Given b1 succeeded, b2 dead-lettered, b3 in flight, b4 failed once (to be tried again) and b5 succeeded
    await monitor.report([*attempt("b5", 1, SUCCEEDED), *attempt("b2", 1, DEAD_LETTERED), batch("b3", 1, STARTED),
                          *attempt("b4", 1, FAILED), *attempt("b1", 1, SUCCEEDED)])  # fmt: skip

    async def settled(from_batch_id: str, limit: int = 10) -> list[str]:
        request = monitor_pb2.SettledBatchesRequest(job_id=JOB, from_batch_id=from_batch_id, limit=limit)
        return list((await monitor.stub.GetSettledBatches(request)).batch_ids)

    # Then the settled ones are the succeeded and dead-lettered, from the batch asked about on, `limit` at most
    assert await settled("") == ["b1", "b2", "b5"]
    assert await settled("b2") == ["b2", "b5"]
    assert await settled("b2", limit=1) == ["b2"]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await settled("", limit=0)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_report_without_a_body_is_refused_as_invalid(monitor: RunningMonitor) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await monitor.report([monitor_pb2.Report(seq=1, job_id=JOB, worker_id="w1")])

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "body" in (raised.value.details() or "")


async def test_metrics_show_cortex_counters_under_their_exact_names(monitor: RunningMonitor) -> None:
    await monitor.track(3)
    await monitor.report(MIXED_JOB)
    await monitor.report(MIXED_JOB)  # repeats count nothing

    metrics = await monitor.metrics()

    labels = f'api_name="{API}",job_id="{JOB}"'
    assert metrics[f"cortex_batch_succeeded{{{labels}}}"] == 2
    assert metrics[f"cortex_batch_failed{{{labels}}}"] == 4
    assert metrics[f"cortex_time_per_batch_count{{{labels}}}"] == 2
    assert metrics[f"cortex_time_per_batch_sum{{{labels}}}"] == pytest.approx(6.0)
    assert metrics[f'cortex_time_per_batch_bucket{{{labels},le="2.5"}}'] == 1
    for outcome, value in (("succeeded", 2), ("failed", 3), ("dead_lettered", 1)):
        assert metrics[f'thresher_batches_total{{{labels},outcome="{outcome}"}}'] == value
    assert metrics[f'thresher_batch_duration_seconds_count{{{labels},outcome="failed"}}'] == 3
    assert not any(name.startswith("cortex_batch_succeeded_total") for name in metrics)


async def test_metrics_show_workers_by_phase(monitor: RunningMonitor) -> None:
    await monitor.report([worker("w1", monitor_pb2.WORKER_PHASE_READY), worker("w2", monitor_pb2.WORKER_PHASE_READY)])

    metrics = await monitor.metrics()

    assert metrics[f'thresher_workers{{api_name="",job_id="{JOB}",phase="ready"}}'] == 2
    assert metrics[f'thresher_workers{{api_name="",job_id="{JOB}",phase="starting"}}'] == 0


async def test_the_monitor_process_serves_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    make_config(tmp_path, 0)  # the stack secret, in its data dir
    env = os.environ | {
        "THRESHER_DATA_DIR": str(tmp_path),
        "THRESHER_ADDRESSES_MONITOR": "127.0.0.1:0",
        "THRESHER_ADDRESSES_MONITOR_METRICS": "127.0.0.1:0",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.monitor", cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        grpc_port = await asyncio.wait_for(_serving_port(process), timeout=20)
        async with rpc.channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = Signed(monitor_pb2_grpc.MonitorStub(channel), STACK.token(trust.SCHEDULER))
            progress = await stub.GetJobProgress(jobs_pb2.JobRef(job_id=JOB))
        assert counts(progress) == (0, 0, 0, 0)

        process.send_signal(signal.SIGTERM)

        assert await asyncio.wait_for(process.wait(), timeout=20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _serving_port(process: asyncio.subprocess.Process) -> int:
    assert process.stderr is not None
    async for line in process.stderr:
        message = json.loads(line).get("message", "")
        if found := re.search(r"serving gRPC on port (\d+)", message):
            return int(found.group(1))
    raise AssertionError("the monitor exited before serving")


def _assert_len(items: Sequence[object], n: int) -> None:
    assert len(items) == n


def _assert_positive(n: int) -> None:
    assert n > 0


def _assert_logged(caplog: pytest.LogCaptureFixture, text: str) -> None:
    assert any(text in record.getMessage() for record in caplog.records)


async def test_progress_shows_each_worker_and_the_pace_of_the_job(monitor: RunningMonitor) -> None:
    # Given a worker whose report stream stays open (a stream that ends means the worker is gone)
    reports = [worker("w1", monitor_pb2.WORKER_PHASE_READY), *attempt("b1", 1, SUCCEEDED, 0.1), batch("b2", 1, STARTED)]
    done = asyncio.Event()

    async def open_stream() -> AsyncIterator[monitor_pb2.Reports]:
        for report in reports:  # one message each: the monitor may ack them together
            yield monitor_pb2.Reports(reports=[report])
        await done.wait()

    call = monitor.stub.Report(open_stream())
    await read_acks(call, len(reports))
    progress = await monitor.progress()
    done.set()
    call.cancel()
    [w1] = progress.workers
    assert (w1.worker_id, w1.phase) == ("w1", "ready") and w1.last_seen.seconds > 0
    assert progress.pace.batches_per_s > 0
    assert progress.pace.HasField("oldest_in_flight_s") and progress.pace.oldest_in_flight_s >= 0
