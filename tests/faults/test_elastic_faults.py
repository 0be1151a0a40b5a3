"""Faults while an elastic job (`min_workers` / `max_workers`) scales: the job still ends exact.

A worker killed while the job scales down (its last worker, holding the last batch, gets SIGTERM and is killed while it
drains), and the scheduler killed while its scaler decides: every item processed, every batch counted once, the hook
called once, nothing left.
"""

from __future__ import annotations

import os
import signal
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Stack, cmdline, processes_mentioning
from tests.faults.conftest import Outputs, submit
from tests.faults.test_faults import assert_succeeded_exactly
from tests.helpers import eventually, wait_until
from thresher.core.errors import Unavailable

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]


def scaling(stack: Stack, job_id: str) -> dict[str, Any]:
    try:
        return stack.client.get("recorder", job_id)["job_status"].get("scaling") or {}
    except Unavailable as e:  # the scheduler restarting
        raise AssertionError(e) from e


def restarted(stack: Stack, service: str, old_pid: int, job_id: str) -> int:
    """The new pid of `service`, once it answers for the job."""
    try:
        pid = stack.service_pid(service)
    except LookupError as e:  # between its death and its restart
        raise AssertionError(e) from e
    assert pid != old_pid
    scaling(stack, job_id)
    return pid


def test_the_last_worker_killed_while_it_drains_in_a_scale_down_loses_nothing(
    stack: Stack, outputs: Outputs, tmp_path: Path
) -> None:
    # Given an elastic job whose first batch is held while the others run: the scaler grows it, then the workers
    # that find nothing more exit idle (a scale-down) and the one holding the batch is left
    hold = tmp_path / "hold"
    hold.touch()
    items = list(range(20))
    config = {"slow_s": 0.2, "hold_items": [0], "hold_while": str(hold)}
    job_id = submit(stack, outputs, items, workers=None, min_workers=1, max_workers=3, config=config)

    def scaled_down() -> list[int]:
        now = scaling(stack, job_id)
        assert now["idle_exits"] >= 1 and now["desired_workers"] == 1, now
        [dequeuer] = processes_mentioning(f"--job-id {job_id}")
        return [dequeuer]

    [dequeuer] = eventually(scaled_down, timeout_s=90)

    # When that worker is told to stop (it drains: waits for its batch) and is killed while it drains
    argv = cmdline(dequeuer).split()
    log = stack.data_dir / "jobs" / job_id / f"{argv[argv.index('--worker-id') + 1]}.dequeuer.log"
    os.kill(dequeuer, signal.SIGTERM)
    wait_until(lambda: "stop requested" in log.read_text(), 10, "the dequeuer to drain")  # waiting for its batch
    os.kill(dequeuer, signal.SIGKILL)
    hold.unlink()

    # Then its batch comes back without using an attempt, a worker is started for it, and the job ends exact
    status = assert_succeeded_exactly(stack, outputs, job_id, items)
    assert status["metrics"]["failed"] == 0
    assert status["job_status"]["scaling"]["max_workers"] == 3


def test_the_scheduler_killed_while_it_scales_an_elastic_job_loses_nothing(stack: Stack, outputs: Outputs) -> None:
    # Given an elastic job of slow batches that the scaler is growing
    items = list(range(40))
    job_id = submit(stack, outputs, items, workers=None, min_workers=1, max_workers=4, config={"slow_s": 0.3})

    def growing() -> None:
        assert scaling(stack, job_id)["last_decision"] == "scale_up"

    eventually(growing, timeout_s=60)
    # When the scheduler is killed there, and killed again once it is back and deciding
    pid = stack.service_pid("scheduler")
    for _ in range(2):
        os.kill(pid, signal.SIGKILL)
        pid = eventually(partial(restarted, stack, "scheduler", pid, job_id), timeout_s=60)

    # Then the job ends exact, its workers within its range
    status = assert_succeeded_exactly(stack, outputs, job_id, items)
    assert status["job_status"]["worker_restarts"] == 0
    assert 1 <= status["job_status"]["scaling"]["desired_workers"] <= 4
