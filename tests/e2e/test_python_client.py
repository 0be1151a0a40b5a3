"""`thresher.Client` against the real embedded stack: jobs, their failures and retries, streams, errors."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack
from thresher import Client, Job
from thresher.core.errors import InvalidRequest, NotFound, Unauthenticated
from thresher.tools.job import WaitTimeout

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture
def client(stack: Stack) -> Client:
    return Client(stack.url, api_key=stack.api_key)


def recorded_items(out: Path) -> list[object]:
    return [item for path in out.glob("items-*.jsonl") for line in path.read_text().splitlines()
            for item in json.loads(line)["items"]]  # fmt: skip


def test_a_job_submitted_from_a_generator_is_waited_for_with_a_progress_line(client: Client, tmp_path: Path) -> None:
    out = tmp_path / "out"
    items = (i for i in range(250))
    job = client.submit("recorder", items=items, batch_size=10, workers=1, config={"out_dir": str(out)})
    progress = io.StringIO()

    final = job.wait(out=progress)

    assert isinstance(job, Job) and job.api_name == "recorder"
    assert final["job_status"]["status"] == "succeeded" and final["job_status"]["total_batch_count"] == 25
    assert job.status()["metrics"]["succeeded"] == 25
    assert sorted(recorded_items(out)) == list(range(250)), "every item, streamed in the request body"
    lines = progress.getvalue().splitlines()
    assert lines and "25/25 batches" in lines[-1] and "succeeded" in lines[-1]
    assert job.id in [status["job_status"]["job_id"] for status in client.jobs("recorder")]


def test_failed_batches_are_listed_and_retried_as_a_new_job(client: Client, tmp_path: Path) -> None:
    fail_while = tmp_path / "failing"
    fail_while.touch()
    config = {"out_dir": str(tmp_path / "out"), "fail_items": [3], "fail_while": str(fail_while)}
    job = client.submit("recorder", items=[1, 2, 3, 4], batch_size=1, workers=1, config=config)
    assert job.wait(progress=False)["job_status"]["status"] == "completed_with_failures"

    [failed] = job.failed()
    assert failed["items"] == [3] and "poison item" in failed["error"]

    fail_while.unlink()
    retried = job.retry()
    assert retried.id != job.id and retried.api_name == "recorder"
    final = retried.wait(progress=False)
    assert final["job_status"]["status"] == "succeeded" and final["job_status"]["total_batch_count"] == 1
    assert retried.failed() == []


def test_a_stopped_job_ends_its_event_stream_and_its_logs(client: Client, tmp_path: Path) -> None:
    job = client.submit(
        "recorder", items=[1, 2], batch_size=1, workers=1, config={"out_dir": str(tmp_path), "hang_items": [1, 2]}
    )
    with pytest.raises(WaitTimeout, match=job.id):
        job.wait(progress=False, timeout_s=1)

    job.stop()

    events = list(job.events())
    assert events[-1]["job_status"]["status"] == "stopped" and events[-1]["job_status"]["job_id"] == job.id
    lines = list(job.logs(follow=True))  # ends: the job has ended
    assert any(" api | " in line for line in lines) and all(line.startswith(f"{job.id}-w") for line in lines)


def test_errors_are_the_projects_error_classes(stack: Stack, client: Client) -> None:
    with pytest.raises(NotFound):
        client.job("no-such-job").status()
    with pytest.raises(Unauthenticated):
        Client(stack.url, api_key="not-a-key").jobs()
    with pytest.raises(InvalidRequest, match="batch_size"):
        client.submit("recorder", items=[1], batch_size=0)
    with pytest.raises(InvalidRequest, match="exactly one of items or source"):
        client.submit("recorder", batch_size=1)
    with pytest.raises(InvalidRequest, match=r"items\[1\]: not JSON"):
        client.submit("recorder", items=[1, math.nan], batch_size=1)
    with pytest.raises(NotFound):
        client.submit("no-such-api", items=[1], batch_size=1)

    assert client.jobs() == [], "nothing was submitted, the half-sent body with NaN neither"
