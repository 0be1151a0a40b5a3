"""One real job through the whole embedded stack: `thresher up`, five services, real workers."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack, alive, eventually, processes_mentioning
from thresher.errors import Unavailable

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def test_a_job_of_1000_items_runs_to_succeeded_and_scales_to_zero(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "out"
    job = stack.client.submit(
        "recorder",
        {"workers": 2, "item_list": {"items": list(range(1000)), "batch_size": 10}, "config": {"out_dir": str(out)}},
    )
    assert job["api_name"] == "recorder" and job["kind"] == "BatchAPI"

    status = stack.wait_for_final("recorder", job["job_id"])

    job_status, metrics = status["job_status"], status["metrics"]
    assert job_status["status"] == "succeeded", status
    assert job_status["total_batch_count"] == 100
    assert metrics["succeeded"] == 100
    assert metrics["failed"] == 0
    records = [json.loads(line) for path in out.glob("items-*.jsonl") for line in path.read_text().splitlines()]
    assert sorted(item for r in records for item in r["items"]) == list(range(1000))
    assert len({r["pid"] for r in records}) == 2, "both workers took batches"
    [hook] = [json.loads(line) for line in (out / "hooks.jsonl").read_text().splitlines()]
    assert (hook["job_id"], hook["total_batch_count"], hook["succeeded"], hook["dead_lettered"]) == (
        job["job_id"], 100, 100, 0,
    )  # fmt: skip

    worker_pids = [int(p.name) for p in (out / "pids").iterdir()]

    def no_worker_left() -> None:
        assert not [pid for pid in worker_pids if alive(pid)]
        assert not processes_mentioning(f"--job-id {job['job_id']}")

    eventually(no_worker_left)


def test_a_finished_job_is_still_readable_after_the_gateway_is_killed(stack: Stack, tmp_path: Path) -> None:
    job = stack.client.submit(
        "recorder",
        {"workers": 1, "item_list": {"items": [1, 2, 3], "batch_size": 2}, "config": {"out_dir": str(tmp_path)}},
    )
    before = stack.wait_for_final("recorder", job["job_id"])
    gateway = stack.service_pid("gateway")

    os.kill(gateway, signal.SIGKILL)

    def restarted_and_answering() -> dict:
        try:
            assert stack.service_pid("gateway") != gateway
            return stack.client.get("recorder", job["job_id"])
        except (LookupError, Unavailable) as e:  # not back yet
            raise AssertionError(e) from e

    after = eventually(restarted_and_answering)
    assert after["job_status"]["status"] == "succeeded"
    assert after == before
