"""A job's queue API calls add up at the monitor: dequeuers' heartbeats, the scheduler's RecordQueueCalls and the
monitor's own calls, each a running total under its own source. (tests/e2e/test_sqs_s3_stack.py checks a whole job's
count against the calls SQS got.)"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.contract.test_monitor import (
    API,
    JOB,
    STARTED,
    FakeScheduler,
    RunningMonitor,
    make_config,
    running_monitor,
    start_scheduler,
)
from tests.contract.test_monitor_worker_loss import Stream
from tests.contract.test_queue_contract import sqs_settings
from tests.helpers import assert_eventually
from thresher.core.config import QueueSettings
from thresher.core.queue import Batch, Depth, open_queue_backend
from thresher.v1 import jobs_pb2, monitor_pb2

QUEUE = "thresher_resize_job-1"
READY = monitor_pb2.WORKER_PHASE_READY
_seqs = itertools.count(50_000)


@contextlib.asynccontextmanager
async def monitor_on(tmp_path: Path, queue: QueueSettings | None = None) -> AsyncIterator[RunningMonitor]:
    scheduler, port = await start_scheduler(FakeScheduler())
    config = make_config(tmp_path, port)
    config.queue = queue or config.queue
    try:
        async with running_monitor(config) as running:
            yield running
    finally:
        await scheduler.stop(0)


@pytest.fixture
async def monitor(tmp_path: Path) -> AsyncIterator[RunningMonitor]:
    async with monitor_on(tmp_path) as running:
        yield running


def heartbeat(worker_id: str, source: str, **calls: int) -> monitor_pb2.Report:
    body = monitor_pb2.WorkerReport(phase=READY, queue_calls=jobs_pb2.QueueCalls(source=source, calls=calls))
    return monitor_pb2.Report(seq=next(_seqs), job_id=JOB, worker_id=worker_id, api_name=API, worker=body)


async def record(monitor: RunningMonitor, source: str, **calls: int) -> None:
    request = monitor_pb2.RecordQueueCallsRequest(
        job_id=JOB, api_name=API, queue_calls=[jobs_pb2.QueueCalls(source=source, calls=calls)]
    )
    await monitor.stub.RecordQueueCalls(request)


async def test_every_source_adds_its_newest_running_total(monitor: RunningMonitor) -> None:
    # Given two dequeuers' heartbeats, each carrying its running totals, and the scheduler's
    await monitor.report([heartbeat("w1", "dequeuer w1 a", ReceiveMessage=2), heartbeat("w2", "dequeuer w2 b")])
    await monitor.report([heartbeat("w1", "dequeuer w1 a", ReceiveMessage=5, DeleteMessageBatch=1)])
    await record(monitor, "scheduler c", CreateQueue=2, GetQueueAttributes=1)
    # When a message comes again, and a late one carries an older total
    await record(monitor, "scheduler c", CreateQueue=2, GetQueueAttributes=1)
    await monitor.report([heartbeat("w1", "dequeuer w1 a", ReceiveMessage=3)])

    # Then each source counts once, with its newest totals; /metrics says the same
    progress = await monitor.progress()
    expected = {"ReceiveMessage": 5, "DeleteMessageBatch": 1, "CreateQueue": 2, "GetQueueAttributes": 1}
    assert dict(progress.queue_calls) == expected
    metrics = await monitor.metrics()
    for operation, calls in expected.items():
        assert (
            metrics[f'thresher_job_queue_calls_total{{api_name="{API}",job_id="{JOB}",operation="{operation}"}}']
            == calls
        )


async def test_a_restarted_process_adds_to_what_its_predecessor_made(monitor: RunningMonitor) -> None:
    await monitor.report([heartbeat("w1", "dequeuer w1 first", ReceiveMessage=7)])
    await monitor.report([heartbeat("w1", "dequeuer w1 second", ReceiveMessage=2)])  # the same worker, restarted

    assert dict((await monitor.progress()).queue_calls) == {"ReceiveMessage": 9}


async def test_a_workers_queue_error_shows_in_the_progress_until_its_receives_succeed_again(
    monitor: RunningMonitor,
) -> None:
    failing = heartbeat("w1", "dequeuer w1 a", ReceiveMessage=3)
    failing.worker.queue_error = "SQS ReceiveMessage on queue q failed: UnsupportedOperation: not supported"
    await monitor.report([failing, heartbeat("w2", "dequeuer w2 b")])
    progress = await monitor.progress()
    assert {w.worker_id: w.queue_error for w in progress.workers} == {"w1": failing.worker.queue_error, "w2": ""}

    await monitor.report([heartbeat("w1", "dequeuer w1 a", ReceiveMessage=4)])  # a receive succeeded since
    assert [w.queue_error for w in (await monitor.progress()).workers] == ["", ""]


@pytest.mark.parametrize(
    ("source", "calls", "complaint"),
    [
        ("", {"ReceiveMessage": 1}, "source"),
        ("scheduler c", {"ReceiveMessage": -1}, "ReceiveMessage"),
        ("scheduler c", {"": 1}, "operation"),
        ("s" * 201, {}, "source"),
    ],
)
async def test_bad_counts_are_refused_and_change_nothing(
    monitor: RunningMonitor, source: str, calls: dict[str, int], complaint: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await record(monitor, source, **calls)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert complaint in (raised.value.details() or "")

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await monitor.report([heartbeat("w1", source, **calls)])
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    assert dict((await monitor.progress()).queue_calls) == {}


@pytest.fixture
async def sqs_monitor(aws_endpoint: str, tmp_path: Path) -> AsyncIterator[RunningMonitor]:
    """A monitor whose queues are on SQS (moto's server), where calls count."""
    async with monitor_on(tmp_path, sqs_settings(aws_endpoint)) as running:
        yield running


async def test_the_calls_the_monitor_makes_to_release_a_lost_workers_batch_count_for_the_job(
    sqs_monitor: RunningMonitor, aws_endpoint: str, tmp_path: Path
) -> None:
    # Given a worker holding a batch of a job on SQS, its start reported
    config = make_config(tmp_path, 0)
    config.queue = sqs_settings(aws_endpoint)
    backend = open_queue_backend(config)
    try:
        await backend.create(QUEUE, visibility_s=60)
        queue = backend.open(QUEUE)
        await queue.send([Batch("b1", b"[1]")])
        [delivery] = await queue.receive(1, wait_s=0)
        stream = Stream(sqs_monitor)
        await stream.send(heartbeat("w1", "dequeuer w1 a", ReceiveMessage=1))
        start = monitor_pb2.BatchReport(batch_id="b1", attempt=1, result=STARTED, receipt=delivery.receipt)
        report = monitor_pb2.Report(seq=next(_seqs), job_id=JOB, worker_id="w1", queue_name=QUEUE, batch=start)
        await stream.send(report)

        # When the worker is lost (its stream breaks), the monitor releases the batch on SQS
        stream.call.cancel()

        async def released() -> None:
            assert await queue.depth() == Depth(visible=1, in_flight=0, dead=0)

        await assert_eventually(released, timeout_s=10)
    finally:
        await backend.close()

    # Then the monitor's calls (the queue's URL, then the release) count for the job, beside the worker's own
    async def counted() -> None:
        assert dict((await sqs_monitor.progress()).queue_calls) == {
            "ReceiveMessage": 1,
            "GetQueueUrl": 1,
            "ChangeMessageVisibilityBatch": 1,
        }

    await assert_eventually(counted, timeout_s=10)
