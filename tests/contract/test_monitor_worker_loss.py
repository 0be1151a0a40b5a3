"""The monitor's part in fault tolerance: it counts attempts, decides dead letters, releases lost workers' batches."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.contract.test_monitor import (
    FAILED,
    JOB,
    STARTED,
    FakeScheduler,
    RunningMonitor,
    counts,
    make_config,
    running_monitor,
    start_scheduler,
)
from tests.helpers import assert_eventually
from thresher.core.queue import Batch, Depth, Queue, QueueBackend, open_queue_backend
from thresher.v1 import monitor_pb2

QUEUE = "thresher_resize_job-1"
RELEASED = monitor_pb2.BATCH_RESULT_RELEASED
_seqs = itertools.count(10_000)


def report(worker_id: str, **body: object) -> monitor_pb2.Report:
    kind = "worker" if "phase" in body else "batch"
    message = monitor_pb2.WorkerReport(**body) if kind == "worker" else monitor_pb2.BatchReport(**body)
    return monitor_pb2.Report(
        seq=next(_seqs), job_id=JOB, worker_id=worker_id, api_name="resize", queue_name=QUEUE, **{kind: message}
    )


def failed(batch_id: str, attempt: int, max_attempts: int = 3) -> monitor_pb2.Report:
    return report("w1", batch_id=batch_id, attempt=attempt, result=FAILED, error="HTTP 500", max_attempts=max_attempts)


class Stream:
    """One dequeuer's report stream, kept open: reports go in, acks come out."""

    def __init__(self, monitor: RunningMonitor) -> None:
        self._outbox: asyncio.Queue[list[monitor_pb2.Report]] = asyncio.Queue()
        self.call = monitor.stub.Report(self._drain())

    async def _drain(self) -> AsyncIterator[monitor_pb2.Reports]:
        while True:
            yield monitor_pb2.Reports(reports=await self._outbox.get())

    async def send(self, message: monitor_pb2.Report) -> monitor_pb2.ReportAck:
        [ack] = await self.send_together(message)
        return ack

    async def send_together(self, *messages: monitor_pb2.Report) -> list[monitor_pb2.ReportAck]:
        """In one stream message, as a busy dequeuer sends them."""
        self._outbox.put_nowait(list(messages))
        return list((await self.call.read()).acks)


@pytest.fixture
async def queues(tmp_path: Path) -> AsyncIterator[QueueBackend]:
    backend = open_queue_backend(make_config(tmp_path, 0))
    await backend.create(QUEUE, visibility_s=60)  # long: only a release can bring a batch back quickly
    yield backend
    await backend.close()


@pytest.fixture
async def monitor(tmp_path: Path) -> AsyncIterator[RunningMonitor]:
    scheduler, port = await start_scheduler(FakeScheduler())
    config = make_config(tmp_path, port)
    config.monitor.heartbeat_timeout_s = 0.6
    async with running_monitor(config) as running:
        yield running
    await scheduler.stop(0)


async def held_batch(queue: Queue) -> str:
    await queue.send([Batch("b1", b"[1]")])
    [delivery] = await queue.receive(1, wait_s=0)
    return delivery.receipt


async def test_the_failure_that_uses_up_the_attempts_is_acked_as_a_dead_letter(monitor: RunningMonitor) -> None:
    stream = Stream(monitor)
    decisions = [(await stream.send(failed("b1", n))).dead_letter for n in (1, 2, 3)]
    assert decisions == [False, False, True]
    assert (await stream.send(failed("b1", 3))).dead_letter, "a repeated report gets the same answer"
    stream.call.cancel()
    assert counts(await monitor.progress()) == (0, 3, 1, 0)


async def test_a_released_attempt_does_not_count_as_a_failure(monitor: RunningMonitor) -> None:
    stream = Stream(monitor)
    await stream.send(report("w1", batch_id="b1", attempt=1, result=STARTED))
    await stream.send(report("w1", batch_id="b1", attempt=1, result=RELEASED, error="worker lost"))
    decisions = [(await stream.send(failed("b1", n, max_attempts=2))).dead_letter for n in (2, 3)]
    stream.call.cancel()
    assert decisions == [False, True], "the released attempt used none of the two"
    assert counts(await monitor.progress()) == (0, 2, 1, 0)


async def test_a_worker_whose_stream_breaks_has_its_batches_released_at_once(
    monitor: RunningMonitor, queues: QueueBackend
) -> None:
    # Given a worker holding a batch (visibility 60 s) and reporting it started
    queue = queues.open(QUEUE)
    receipt = await held_batch(queue)
    stream = Stream(monitor)
    await stream.send(report("w1", phase=monitor_pb2.WORKER_PHASE_READY))
    await stream.send(report("w1", batch_id="b1", attempt=1, result=STARTED, receipt=receipt))
    # When its stream breaks (its process died)
    stream.call.cancel()

    # Then the batch is visible again at once, and the attempt is not counted as failed
    async def released() -> None:
        assert await queue.depth() == Depth(visible=1, in_flight=0, dead=0)

    await assert_eventually(released, timeout_s=5)
    assert counts(await monitor.progress()) == (0, 0, 0, 0)


@pytest.mark.parametrize("together", [False, True], ids=["reported-apart", "reported-together"])
async def test_a_lost_dequeuers_answered_batch_is_released_at_once(
    monitor: RunningMonitor, queues: QueueBackend, together: bool
) -> None:
    # Given a worker whose batch failed: the monitor acked the FAILED report (so the batch waits for a retry), but
    # the dequeuer has not yet released it on the queue (visibility 60 s)
    queue = queues.open(QUEUE)
    receipt = await held_batch(queue)
    stream = Stream(monitor)
    await stream.send(report("w1", phase=monitor_pb2.WORKER_PHASE_READY))
    started = report("w1", batch_id="b1", attempt=1, result=STARTED, receipt=receipt)
    answered = failed("b1", 1)
    if together:  # the worker answered before the STARTED report left: both go in one message
        await stream.send_together(started, answered)
    else:
        await stream.send(started)
        await stream.send(answered)
    assert counts(await monitor.progress()) == (0, 1, 0, 0)

    # When its dequeuer dies before the release
    stream.call.cancel()

    # Then the batch is visible again at once, for its next attempt
    async def released() -> None:
        assert await queue.depth() == Depth(visible=1, in_flight=0, dead=0)

    await assert_eventually(released, timeout_s=5)
    assert counts(await monitor.progress()) == (0, 1, 0, 0), "the failed attempt counts once, the release not at all"


async def test_a_worker_that_said_it_was_stopping_is_not_lost(monitor: RunningMonitor, queues: QueueBackend) -> None:
    queue = queues.open(QUEUE)
    receipt = await held_batch(queue)
    stream = Stream(monitor)
    await stream.send(report("w1", batch_id="b1", attempt=1, result=STARTED, receipt=receipt))
    await stream.send(report("w1", phase=monitor_pb2.WORKER_PHASE_STOPPING))
    stream.call.cancel()
    await asyncio.sleep(1.0)  # long enough for a release to have happened, had it been wrong
    assert await queue.depth() == Depth(visible=0, in_flight=1, dead=0)


async def test_a_worker_reporting_batches_without_heartbeats_is_not_lost(
    monitor: RunningMonitor, queues: QueueBackend
) -> None:
    # Given a worker holding a batch, then reporting other batches but no heartbeat (a busy dequeuer skips them)
    queue = queues.open(QUEUE)
    receipt = await held_batch(queue)
    stream = Stream(monitor)
    await stream.send(report("w1", phase=monitor_pb2.WORKER_PHASE_READY))
    await stream.send(report("w1", batch_id="b1", attempt=1, result=STARTED, receipt=receipt))
    for n in range(2, 14):  # 2.4 s: four heartbeat timeouts (0.6 s), and past the monitor's first one
        await stream.send(report("w1", batch_id=f"b{n}", attempt=1, result=STARTED))
        await asyncio.sleep(0.2)

    # Then it is still ready, and the batch it holds was not released
    assert [w.phase for w in (await monitor.progress()).workers] == ["ready"]
    assert await queue.depth() == Depth(visible=0, in_flight=1, dead=0)
    stream.call.cancel()


async def test_a_silent_worker_is_lost_after_the_heartbeat_timeout(
    monitor: RunningMonitor, queues: QueueBackend
) -> None:
    # Given a worker holding a batch whose stream stays open but says nothing more (hung)
    queue = queues.open(QUEUE)
    receipt = await held_batch(queue)
    stream = Stream(monitor)
    await stream.send(report("w1", phase=monitor_pb2.WORKER_PHASE_READY))
    await stream.send(report("w1", batch_id="b1", attempt=1, result=STARTED, receipt=receipt))

    # Then, after the heartbeat timeout (0.6 s), its batch is released
    async def released() -> None:
        assert (await queue.depth()).visible == 1

    await assert_eventually(released, timeout_s=5)
    stream.call.cancel()
