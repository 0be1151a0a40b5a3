"""Elastic jobs on the scheduler's gRPC service, with the local runtime's real processes: the scaler adds workers
while the backlog would drain too slowly, and a worker that exits idle is not replaced."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tests.contract import test_scheduler
from tests.contract.test_scheduler import Harness, worker_pids
from tests.e2e.conftest import WORKERS_DIR
from tests.helpers import assert_eventually
from thresher.core.errors import LimitExceeded
from thresher.core.queue import Batch
from thresher.core.runtime.base import IDLED
from thresher.core.runtime.local import LocalRuntime
from thresher.v1 import jobs_pb2

pytestmark = pytest.mark.timeout(90)
harness = test_scheduler.harness  # the scheduler's tests' fixture: the scheduler with real fake peers
SQUARING_WORKER = [sys.executable, str(WORKERS_DIR / "squaring_worker.py")]


def alive(pids: list[int]) -> int:
    return sum(Path(f"/proc/{pid}").exists() for pid in pids)


async def test_workers_are_added_while_the_backlog_drains_too_slowly_up_to_the_limits(harness: Harness) -> None:
    harness.config.scaling.target_drain_s = 10.0
    harness.config.limits.max_workers_in_progress = 3  # below max_workers: the limit is what stops the scaler
    harness.monitor.seconds_per_batch = 1.0  # 40 batches of 1 s: 4 workers would drain them in 10 s
    job = await harness.submit(items=40, workers=0, min_workers=1, max_workers=5)  # workers never ready: no batch runs
    assert job.workers == 1, "an elastic job starts at its minimum"

    async def scaled_up() -> jobs_pb2.Job:
        status = await harness.status(job.job_id)
        assert status.workers == 3 and status.scaling.desired_workers == 3
        assert len(worker_pids(harness.config.data_dir, job.job_id)) == 6  # 3 workers, each with its dequeuer
        return status

    status = await assert_eventually(scaled_up, timeout_s=20)
    scaling = status.scaling
    assert (scaling.min_workers, scaling.max_workers, scaling.last_decision) == (1, 5, "scale_up")
    assert scaling.reason == (
        "backlog too slow: 40 batches x 1 s / 1 workers = 40 s > target_drain_s 10: 3 workers"
        " (limits.max_workers_in_progress)"
    )
    labels = {"api_name": "sum", "job_id": job.job_id}
    assert REGISTRY.get_sample_value("thresher_scaling_desired_workers", labels) == 3
    assert REGISTRY.get_sample_value("thresher_scaling_decisions_total", {"api_name": "sum", "decision": "scale_up"})
    with pytest.raises(LimitExceeded, match="jobs in progress have 3 workers"):  # admission counts them
        await harness.submit(items=1, workers=1)
    harness.config.limits.max_workers_in_progress = 5  # room for both, even once the scaler asks for 4
    fixed = await harness.submit(items=1, workers=1)
    assert fixed.workers == 1 and not fixed.HasField("scaling"), "a fixed job has no scaler"


async def test_a_worker_that_exits_idle_after_the_scalers_look_is_not_replaced_by_the_count_decided_then(
    harness: Harness,
) -> None:
    harness.config.scaling.idle_s = 1.0
    await harness.deploy("squares", SQUARING_WORKER)
    job = await harness.submit(items=1, workers=0, min_workers=1, max_workers=1, api_name="squares")
    await assert_eventually(lambda: _assert_pids(harness, job.job_id, 2), timeout_s=30)  # a worker and its dequeuer
    await harness.manager._supervision.stop()  # the supervision's looks are this test's now
    record = await harness.manager._store.get_job(job.job_id)
    launch = await harness.manager._launcher.worker_launch(record)
    assert record.workers == 1
    dequeuer = worker_pids(harness.config.data_dir, job.job_id)[-1]
    await assert_eventually(lambda: _assert_ended(dequeuer), timeout_s=30)  # its one batch done, it idled out

    runtime = LocalRuntime(harness.config)
    try:
        # As the supervision's ensure_workers with the count its scaler decided before the worker exited idle
        await runtime.ensure_workers(launch, record.workers)
    finally:
        await runtime.close()

    _assert_pids(harness, job.job_id, 2)  # no worker was started in its place


def _assert_pids(harness: Harness, job_id: str, count: int) -> None:
    assert len(worker_pids(harness.config.data_dir, job_id)) == count


def _assert_ended(pid: int) -> None:
    assert alive([pid]) == 0, f"{pid} still runs"


async def test_a_worker_that_finds_no_work_for_idle_s_exits_and_is_not_replaced(harness: Harness) -> None:
    harness.config.scaling.target_drain_s = 10.0
    harness.config.scaling.idle_s = 1.0
    harness.monitor.seconds_per_batch = 1.0
    await harness.deploy("squares", SQUARING_WORKER)
    slow = b'{"slow_s": 0.2}'  # 8 s of batches for one worker: the scaler sees them waiting
    job = await harness.submit(items=40, workers=0, min_workers=1, max_workers=3, api_name="squares", config_json=slow)

    async def scaled_up() -> None:
        assert len(worker_pids(harness.config.data_dir, job.job_id)) == 6

    await assert_eventually(scaled_up, timeout_s=30)

    async def idled_out() -> jobs_pb2.Job:  # the 40 batches run; then every worker finds nothing
        status = await harness.status(job.job_id)
        assert status.batches_in_queue == 0
        assert status.scaling.idle_exits == 3 and status.scaling.desired_workers == 0
        return status

    status = await assert_eventually(idled_out, timeout_s=30)
    assert status.scaling.last_decision in ("scale_down", "hold") and status.worker_restarts == 0
    assert status.worker_counts.succeeded == 3, "an idle exit is no failure"
    runtime = LocalRuntime(harness.config)  # as a restarted scheduler's: it did not start them, their exit files tell
    try:
        runtime_states = await runtime.workers(job.job_id)
    finally:
        await runtime.close()
    assert [(w.idled, w.reason) for w in runtime_states] == [(True, IDLED)] * 3

    # Not replaced, not even below min_workers while no batch waits: the job pays for no worker
    async def all_gone() -> None:  # each worker process ends after its dequeuer (SIGTERM from the runtime)
        assert alive(worker_pids(harness.config.data_dir, job.job_id)) == 0

    await assert_eventually(all_gone, timeout_s=20)
    for _ in range(20):
        assert alive(worker_pids(harness.config.data_dir, job.job_id)) == 0
        status = await harness.status(job.job_id)
        assert (status.scaling.desired_workers, status.scaling.idle_exits, status.workers) == (0, 3, 0)
    assert len(runtime_states) == 3, "no worker was started after the three"

    # Once a batch waits again, the job is back to min_workers
    queue = harness.enqueuer.queues.open(harness.enqueuer.requests[-1].queue_name)
    await queue.send([Batch(f"{job.job_id}-x", b"[7]")])

    async def back() -> None:
        assert len(worker_pids(harness.config.data_dir, job.job_id)) == 8, "a fourth worker, for the new batch"

    await assert_eventually(back, timeout_s=20)
    decisions = {"api_name": "squares", "decision": "scale_up"}
    assert (REGISTRY.get_sample_value("thresher_scaling_decisions_total", decisions) or 0) >= 2, "up, and up again"
