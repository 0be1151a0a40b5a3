"""Deleting an API through the CLI on the embedded stack: its running job ends `stopped`, its history stays."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack
from tests.helpers import wait_until
from thresher.core.errors import NotFound

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def test_the_cli_deletes_an_api_stopping_its_running_job_and_keeping_its_history(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "out"
    items = {"items": list(range(100)), "batch_size": 1}
    job = stack.client.submit(
        "recorder", {"workers": 1, "item_list": items, "config": {"out_dir": str(out), "slow_s": 1}}
    )
    wait_until(lambda: list(out.glob("calls-*.jsonl")), 60, "a worker to take a batch")
    cli = [sys.executable, "-m", "thresher.tools.cli", "--url", stack.url]

    result = subprocess.run([*cli, "delete", "recorder"], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"deleted API recorder; jobs stopped: {job['job_id']}\n"
    status = stack.client.job(job["job_id"])["job_status"]  # kept
    assert (status["status"], status["status_reason"]) == ("stopped", "its API recorder was deleted")
    with pytest.raises(NotFound, match="recorder is not deployed"):
        stack.client.submit("recorder", {"workers": 1, "item_list": items})

    result = subprocess.run([*cli, "delete", "recorder"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "recorder is not deployed" in result.stderr
