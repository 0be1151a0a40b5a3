"""A follow of a job's results past batch 999,999 (the scheduler's JobResults over a real monitor and a real store).

Batch ids are zero-padded to 6 digits and gain one at 1,000,000 when the job's batch count is not known up front (file
sources: `job-999999`, `job-1000000`), or padded to one width for the whole job (inline items: `job-0999999`). Either
way, a follow must pass the batches settled without a result and send the results after them, in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.scheduler.results import SETTLED_ASKED, JobResults
from services.scheduler.store import JobStore
from tests.contract.test_monitor import (
    DEAD_LETTERED,
    JOB,
    SUCCEEDED,
    FakeScheduler,
    RunningMonitor,
    attempt,
    make_config,
    running_monitor,
    start_scheduler,
)
from tests.helpers import TEST_TRUST as STACK
from thresher.core import rpc, trust
from thresher.core.results.local import LocalResultStore
from thresher.v1 import jobs_pb2, monitor_pb2_grpc

FOLLOW_TIMEOUT_S = 10.0  # a follow waiting at a gap waits until the job is final: here, never


@dataclass
class Parts:
    monitor: RunningMonitor
    results: LocalResultStore
    follows: JobResults


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[Parts]:
    scheduler, scheduler_port = await start_scheduler(FakeScheduler())
    jobs = await JobStore.open(tmp_path / "jobs.db")
    await jobs.put_submission(JOB, jobs_pb2.JobSubmission())
    results = LocalResultStore(tmp_path / "results")
    async with running_monitor(make_config(tmp_path, scheduler_port)) as monitor:
        channel = rpc.channel(f"127.0.0.1:{monitor.port}")
        client = rpc.Client(monitor_pb2_grpc.MonitorStub(channel), STACK.token(trust.SCHEDULER))
        try:
            yield Parts(monitor, results, JobResults(jobs, lambda _: results, 0, client))
        finally:
            await channel.close()
    await jobs.close()
    await scheduler.stop(0)


async def running() -> bool:
    return False


async def followed(follows: JobResults, after: int, count: int) -> list[int]:
    """The indexes of the first `count` results a follow after `after` sends."""
    sent: list[int] = []
    async for message in follows.read(JOB, after, True, False, running):
        sent += [output.index for output in message]
        if len(sent) >= count:
            return sent
    return sent


@pytest.mark.parametrize("width", [6, 7], ids=["ids gaining a digit", "ids of one width"])
async def test_a_follow_passes_batches_settled_without_a_result_at_999999_and_goes_on_past_it(
    parts: Parts, width: int
) -> None:
    def batch_id(index: int) -> str:
        return f"{JOB}-{index:0{width}d}"

    # Given more batches settled early in the job than a follow asks the monitor about at once
    early = range(100_000, 100_000 + SETTLED_ASKED + 100)
    reports = [report for index in early for report in attempt(batch_id(index), 1, SUCCEEDED)]
    # And batch 999,998 dead-lettered, 999,999 succeeded without a result
    reports += [*attempt(batch_id(999_998), 1, DEAD_LETTERED), *attempt(batch_id(999_999), 1, SUCCEEDED)]
    await parts.monitor.report(reports)
    # And results stored for the ten batches after them
    after_them = range(1_000_000, 1_000_010)
    await parts.results.put_many(JOB, [(batch_id(i), 1, b"%d" % i, b"[]") for i in after_them])

    # When the running job's results are followed after batch 999,997
    sent = await asyncio.wait_for(followed(parts.follows, 999_997, len(after_them)), FOLLOW_TIMEOUT_S)

    # Then the follow passes the two settled batches and sends the results after them, in order
    assert sent == list(after_them)
