"""The scheduler's results view keeps a bounded number of jobs' sizes, and its gauge is a running total of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from services.scheduler.results import JobResults
from services.scheduler.store import JobStore
from tests.helpers import TEST_TRUST as STACK
from thresher.core import rpc, trust
from thresher.core.results.local import LocalResultStore
from thresher.v1 import jobs_pb2, monitor_pb2_grpc

API = "results-view"
KEPT = 3
RESULT = b'{"ok": true}'


@pytest.fixture
async def view(tmp_path: Path) -> AsyncIterator[tuple[JobResults, LocalResultStore, JobStore]]:
    jobs = await JobStore.open(tmp_path / "jobs.db")
    results = LocalResultStore(tmp_path / "results")
    channel = rpc.channel("127.0.0.1:1")  # never called: sizes do not ask the monitor
    client = rpc.Client(monitor_pb2_grpc.MonitorStub(channel), STACK.token(trust.SCHEDULER))
    try:
        yield JobResults(jobs, lambda _: results, 0, client, jobs_kept=KEPT), results, jobs
    finally:
        await channel.close()
        await jobs.close()


async def finished_job(results: LocalResultStore, jobs: JobStore, index: int, count: int) -> jobs_pb2.Job:
    job_id = f"job{index:03d}"
    await jobs.put_submission(job_id, jobs_pb2.JobSubmission())
    await results.put_many(job_id, [(f"{job_id}-{i:06d}", 1, RESULT, b"") for i in range(count)])
    return jobs_pb2.Job(job_id=job_id, api_name=API)


def gauge() -> float | None:
    return REGISTRY.get_sample_value("thresher_results_bytes", {"api_name": API})


async def test_sizes_of_finished_jobs_stay_bounded_and_the_gauge_counts_those_kept(
    view: tuple[JobResults, LocalResultStore, JobStore],
) -> None:
    follows, results, jobs = view
    finished = [await finished_job(results, jobs, index, count=index + 1) for index in range(10)]
    sizes = [await follows.size(job, final=True) for job in finished]
    assert [size.count for size in sizes] == list(range(1, 11))
    assert follows.jobs_kept == KEPT  # not one per finished job
    assert gauge() == sum(size.bytes for size in sizes[-KEPT:])

    # A kept final job is not listed again; one read again once forgotten is listed, and replaces the oldest.
    await results.delete(finished[-1].job_id)
    assert (await follows.size(finished[-1], final=True)).count == 10
    assert (await follows.size(finished[0], final=True)).count == 1
    assert follows.jobs_kept == KEPT
    assert gauge() == sizes[0].bytes + sizes[-2].bytes + sizes[-1].bytes

    await follows.delete(finished[-1])
    assert gauge() == sizes[0].bytes + sizes[-2].bytes
