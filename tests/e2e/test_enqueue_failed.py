"""An input that fails midway through enqueuing ends the job `enqueue_failed` before any worker got work from it,
as in Cortex (whose workers start only once enqueuing has succeeded): on the embedded stack, with real workers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.conftest import WORKERS_DIR, Stack, stopped_after

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

GOOD_ITEMS = 20_000  # a batch each: enough that workers are up and taking batches long before the bad item is reached


def test_an_input_that_fails_midway_ends_the_job_enqueue_failed_and_no_worker_gets_a_batch(tmp_path: Path) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    (inputs / "a.jsonl").write_text("".join(f"{i}\n" for i in range(GOOD_ITEMS)))
    (inputs / "b.jsonl").write_text('1\n{"bad": \n')  # listed after a.jsonl: the error is met only at the end
    stack = Stack(tmp_path / "data", WORKERS_DIR / "apis.yaml", args=["--local-roots", str(inputs)])
    with stopped_after(stack):
        source = {"s3_paths": [f"{inputs}{os.sep}"], "includes": ["**.jsonl"], "batch_size": 1}
        job = stack.client.submit(
            "recorder", {"workers": 2, "delimited_files": source, "config": {"out_dir": str(out)}}
        )

        status = stack.wait_for_final("recorder", job["job_id"])["job_status"]

        assert status["status"] == "enqueue_failed", status
        assert "b.jsonl: item 1" in status["status_reason"], status
        assert not list(out.glob("calls-*.jsonl")), "a worker was given a batch of a job whose enqueuing failed"
