"""The monitor's part in on_failure bisect: it splits a bisecting batch after its last attempt, counts items, waits
for the halves before it settles the job, and has a split batch settled once all its halves are."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.contract.test_monitor import (
    JOB,
    SUCCEEDED,
    FakeScheduler,
    RunningMonitor,
    _assert_len,
    barrier,
    make_config,
    running_monitor,
    start_scheduler,
)
from tests.contract.test_monitor_worker_loss import Stream, report
from tests.helpers import assert_eventually
from thresher.v1 import monitor_pb2

FAILED = monitor_pb2.BATCH_RESULT_FAILED


@pytest.fixture
async def told() -> AsyncIterator[tuple[FakeScheduler, int]]:
    """The scheduler the monitor tells of settled jobs, and its port."""
    fake = FakeScheduler()
    server, port = await start_scheduler(fake)
    yield fake, port
    await server.stop(0)


@pytest.fixture
async def monitor(tmp_path: Path, told: tuple[FakeScheduler, int]) -> AsyncIterator[RunningMonitor]:
    async with running_monitor(make_config(tmp_path, told[1])) as running:
        yield running


def failed(batch_id: str, attempt: int, items: int, bisect: bool = True) -> monitor_pb2.Report:
    return report(
        "w1", batch_id=batch_id, attempt=attempt, result=FAILED, error=f"poison in {batch_id}", max_attempts=2,
        items=items, bisect=bisect,
    )  # fmt: skip


def succeeded(batch_id: str, items: int, attempt: int = 1) -> monitor_pb2.Report:
    return report("w1", batch_id=batch_id, attempt=attempt, result=SUCCEEDED, items=items)


async def verdicts(stream: Stream, *reports: monitor_pb2.Report) -> list[str]:
    return [
        "split" if ack.split else "dead_letter" if ack.dead_letter else "retry"
        for ack in await stream.send_together(*reports)
    ]


async def test_a_bisecting_batch_is_split_after_its_last_attempt_down_to_a_single_item(monitor: RunningMonitor) -> None:
    stream = Stream(monitor)
    assert await verdicts(stream, failed("b1", 1, items=4), failed("b1", 2, items=4)) == ["retry", "split"]
    assert await verdicts(stream, failed("b1", 3, items=4)) == ["split"], "delivered again before its ack: split again"
    assert await verdicts(stream, failed("b1.1", 1, items=2), failed("b1.1", 2, items=2)) == ["retry", "split"]
    assert await verdicts(stream, failed("b1.1.0", 1, items=1), failed("b1.1.0", 2, items=1)) == [
        "retry", "dead_letter",
    ], "a single item is dead-lettered"  # fmt: skip
    assert await verdicts(stream, failed("b2", 1, 4, bisect=False), failed("b2", 2, 4, bisect=False)) == [
        "retry", "dead_letter",
    ], "a job that does not bisect dead-letters the whole batch"  # fmt: skip
    stream.call.cancel()

    b = (await monitor.progress()).batches
    assert (b.split, b.dead_lettered, b.items_dead_lettered, b.failed_attempts) == (2, 2, 5, 9)


async def test_the_job_settles_once_every_half_is_terminal_with_items_counted(
    monitor: RunningMonitor, told: tuple[FakeScheduler, int]
) -> None:
    fake = told[0]
    await monitor.track(2)
    stream = Stream(monitor)
    await stream.send_together(succeeded("b2", items=3), failed("b1", 1, items=4), failed("b1", 2, items=4))
    await stream.send(succeeded("b1.0", items=2))
    await stream.send(succeeded("b1", items=4, attempt=9))  # a late success of the split batch changes nothing
    await barrier(monitor, fake)
    assert fake.settled_for(JOB) == [], "b1 was split: its halves count, not it, and b1.1 is not terminal yet"

    # b1.1 split in its turn, its halves terminal: every batch is
    await stream.send_together(failed("b1.1", 1, items=2), failed("b1.1", 2, items=2))
    await stream.send_together(succeeded("b1.1.0", 1), failed("b1.1.1", 1, items=1), failed("b1.1.1", 2, items=1))
    stream.call.cancel()

    await assert_eventually(lambda: _assert_len(fake.settled_for(JOB), 1))
    summary = fake.settled_for(JOB)[0].summary
    b = summary.batches
    assert (b.succeeded, b.dead_lettered, b.split, b.items_succeeded, b.items_dead_lettered) == (3, 1, 2, 6, 1)
    assert list(summary.dead_lettered_batch_ids) == ["b1.1.1"]
    metrics = await monitor.metrics()
    labels = f'api_name="resize",job_id="{JOB}"'
    assert metrics[f'thresher_batches_total{{{labels},outcome="split"}}'] == 2
    assert metrics[f"cortex_batch_failed{{{labels}}}"] == 6
    assert metrics[f'thresher_job_batches{{{labels},state="split"}}'] == 2
    assert metrics[f'thresher_job_batches{{{labels},state="pending"}}'] == 0


@pytest.mark.parametrize(
    ("halves", "settled"),
    [
        ([succeeded("b1.0", 1)], ["b0", "b2"]),  # one half only: b1 is not settled
        ([succeeded("b1.0", 1), succeeded("b1.1", 1)], ["b0", "b1", "b2"]),
    ],
)
async def test_a_split_batch_is_settled_once_all_its_halves_are(
    monitor: RunningMonitor, halves: list[monitor_pb2.Report], settled: list[str]
) -> None:
    stream = Stream(monitor)
    await stream.send_together(succeeded("b0", 1), failed("b1", 1, items=2), failed("b1", 2, items=2))
    await stream.send_together(succeeded("b2", 1), *halves)
    stream.call.cancel()

    request = monitor_pb2.SettledBatchesRequest(job_id=JOB, from_batch_id="", limit=10)
    assert list((await monitor.stub.GetSettledBatches(request)).batch_ids) == settled
