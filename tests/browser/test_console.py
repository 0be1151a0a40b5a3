"""The console in a real browser against the real stack: jobs appear and follow their progress live, dead letters
show with their errors and retry, stop works, each key sees what its scope allows, a wrong key is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.alert import Alert

from tests.browser.console import Console
from tests.e2e.conftest import Stack
from thresher.core import auth
from thresher.tools.client import GatewayClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def submit(client: GatewayClient, out: Path, items: int, **config: Any) -> str:
    job = {"workers": 1, "item_list": {"items": list(range(1, items + 1)), "batch_size": 1}}
    return client.submit("recorder", job | {"config": {"out_dir": str(out), **config}})["job_id"]


def test_a_job_submitted_through_the_api_appears_and_reaches_succeeded_without_a_reload(
    stack: Stack, console: Console, tmp_path: Path
) -> None:
    assert stack.api_key
    console.sign_in(stack.api_key)
    console.mark_page()

    job_id = submit(stack.client, tmp_path, items=12, slow_s=0.4)

    # It appears in the list; its page follows it live to the end, its chart and logs with it
    console.open_job(job_id)
    console.wait(lambda: console.find("#job-status").get_attribute("data-status") == "succeeded", "no success shown")
    assert console.text("#pace").startswith("12 of 12 batches")
    assert len(console.find("#throughput polyline").get_attribute("points").split()) >= 2  # changes seen live
    console.wait(lambda: "recording_worker" in console.text("#logs") or "dequeuer" in console.text("#logs"), "no logs")
    assert console.find("#stop").is_displayed() is False
    # And back in the list, its row says so too, the page never reloaded
    console.go("#/jobs")
    row = console.wait(lambda: console.job_row(job_id), "the job is not in the list")
    assert row == {"status": "succeeded", "done": "12", "total": "12"}
    assert not console.reloaded()
