"""One real job through the whole embedded stack: `thresher up`, five services, real workers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack, alive, processes_mentioning
from tests.helpers import eventually
from tests.unit.test_deploy_manifests import DASHBOARD_METRICS
from thresher.core.auth import authorization
from thresher.core.errors import Unavailable
from thresher.tools.client import find_api_key

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def test_a_job_of_1000_items_runs_to_succeeded_and_scales_to_zero(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # Each batch takes 20 ms: no-op batches are all done before the second worker is up.
    config = {"out_dir": str(out), "slow_s": 0.02}
    job = stack.client.submit(
        "recorder", {"workers": 2, "item_list": {"items": list(range(1000)), "batch_size": 10}, "config": config}
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

    endpoints = json.loads((stack.data_dir / "endpoints.json").read_text())
    scraped = {name: urllib.request.urlopen(e["metrics"], timeout=10).read().decode() for name, e in endpoints.items()}
    assert f'cortex_batch_succeeded{{api_name="recorder",job_id="{job["job_id"]}"}} 100\n' in scraped["monitor"]
    assert 'thresher_jobs{api_name="recorder",status="succeeded"} 1.0' in scraped["scheduler"]
    assert 'thresher_enqueued_batches_total{api_name="recorder"} 100.0' in scraped["enqueuer"]
    assert 'thresher_grpc_requests_total{code="OK",method="/thresher.v1.Jobs/SubmitJob"} 1.0' in scraped["scheduler"]
    assert 'thresher_http_requests_total{method="POST",route="/batch/{api}",status="200"} 1.0' in scraped["gateway"]
    assert all("process_resident_memory_bytes" in text for text in scraped.values()), "every service's own process"
    everything = "\n".join(scraped.values())
    assert [m for m in sorted(DASHBOARD_METRICS) if m not in everything] == [], "the dashboard queries what exists"

    worker_pids = [int(p.name) for p in (out / "pids").iterdir()]

    def no_worker_left() -> None:
        assert not [pid for pid in worker_pids if alive(pid)]
        assert not processes_mentioning(f"--job-id {job['job_id']}")

    eventually(no_worker_left, timeout_s=15)


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

    after = eventually(restarted_and_answering, timeout_s=15)
    assert after["job_status"]["status"] == "succeeded"
    assert after == before


AT_LEAST, TOO_FEW = "configreader.must_be_greater_than_or_equal_to", "configreader.too_few_elements"  # Cortex's kinds


def test_bad_requests_get_clear_errors_and_create_nothing(stack: Stack) -> None:
    cases = [
        ({"workers": 1}, "job.specify_exactly_one_key", "specify exactly one of the following keys"),
        ({"workers": 0, "item_list": {"items": [1], "batch_size": 1}}, AT_LEAST, "workers: must be greater than or"),
        ({"workers": 1, "item_list": {"items": [], "batch_size": 1}}, TOO_FEW, "items: must contain at least 1"),
        ({"workers": 1, "item_list": {"items": [1], "batch_size": 0}}, AT_LEAST, "batch_size: must be greater than"),
    ]
    for body, kind, message in cases:
        code, error = post(stack.url + "/batch/recorder", json.dumps(body).encode())
        assert (code, error["kind"]) == (400, kind) and message in error["message"], (body, error)
    assert post(stack.url + "/batch/nope", b'{"workers": 1}')[0] == 404
    assert post(stack.url + "/batch/recorder", b"{not json")[0] == 400
    assert post(stack.url + "/batch/recorder", b" " * (10 * 1024 * 1024 + 1))[0] == 413
    code, error = request("GET", stack.url + "/batch/recorder?jobID=00000000000000000000")
    assert (code, error["kind"]) == (404, "job.not_found")
    assert stack.client.jobs() == [], "no job was created"


def test_the_cli_deploys_an_api_file_to_a_running_stack(stack: Stack, tmp_path: Path) -> None:
    shutil.copy(Path(__file__).parent / "workers" / "recording_worker.py", tmp_path)
    apis = tmp_path / "more.yaml"
    apis.write_text(
        (Path(__file__).parent / "workers" / "apis.yaml").read_text().replace("name: recorder", "name: second")
    )
    cli = [sys.executable, "-m", "thresher.tools.cli", "--url", stack.url]
    result = subprocess.run([*cli, "deploy", str(apis)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "deployed API second" in result.stdout
    job = stack.client.submit("second", {"workers": 1, "item_list": {"items": [1], "batch_size": 1}, "config": {
        "out_dir": str(tmp_path / "out")}})  # fmt: skip
    assert stack.wait_for_final("second", job["job_id"])["job_status"]["status"] == "succeeded"


def post(url: str, body: bytes) -> tuple[int, dict]:
    return request("POST", url, body)


def request(method: str, url: str, body: bytes | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", "Authorization": authorization(find_api_key(url) or "")}
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_cli_follows_a_job_to_its_end_and_its_exit_code_says_how_it_ended(stack: Stack, tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "thresher.tools.cli", "--url", stack.url]
    job_file = tmp_path / "job.json"
    outcomes = {}
    for name, config in (("good", {}), ("poisoned", {"fail_items": [3]})):
        config["out_dir"] = str(tmp_path / name)
        job_file.write_text(json.dumps({"workers": 1, "item_list": {"items": [1, 2, 3, 4], "batch_size": 2},
                                        "config": config}))  # fmt: skip
        result = subprocess.run(
            [*cli, "submit", "recorder", str(job_file), "--wait"], capture_output=True, text=True, timeout=120
        )
        outcomes[name] = (result.returncode, result.stdout.strip().splitlines()[-1])
    assert outcomes["good"][0] == 0 and "2/2 batches" in outcomes["good"][1] and "succeeded" in outcomes["good"][1]
    assert outcomes["poisoned"][0] == 1 and "completed_with_failures" in outcomes["poisoned"][1]


def test_the_event_stream_of_a_real_job_ends_with_its_final_status(stack: Stack, tmp_path: Path) -> None:
    job = stack.client.submit(
        "recorder",
        {"workers": 1, "item_list": {"items": [1, 2], "batch_size": 1}, "config": {"out_dir": str(tmp_path)}},
    )
    stream = urllib.request.Request(
        f"{stack.url}/v1/jobs/{job['job_id']}/events", headers={"Authorization": authorization(stack.api_key or "")}
    )
    with urllib.request.urlopen(stream, timeout=60) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = [
            json.loads(line[len("data: ") :])
            for line in response.read().decode().splitlines()
            if line.startswith("data: ")
        ]
    statuses = [e["job_status"]["status"] for e in events]
    assert statuses[-1] == "succeeded" and len(statuses) >= 2


def test_the_cli_shows_a_jobs_worker_and_dequeuer_logs_and_follows_them_to_the_end(
    stack: Stack, tmp_path: Path
) -> None:
    job = stack.client.submit(
        "recorder",
        {"workers": 1, "item_list": {"items": list(range(6)), "batch_size": 1},
         "config": {"out_dir": str(tmp_path), "slow_s": 0.3}},
    )  # fmt: skip
    cli = [sys.executable, "-m", "thresher.tools.cli", "--url", stack.url]
    followed = subprocess.run([*cli, "logs", job["job_id"], "--follow"], capture_output=True, text=True, timeout=120)

    assert followed.returncode == 0, followed.stderr
    assert stack.client.get("recorder", job["job_id"])["job_status"]["status"] == "succeeded", "it followed to the end"
    sources = {tuple(line.split(" ", 2)[:2]) for line in followed.stdout.splitlines()}
    assert {source for _, source in sources} == {"api", "dequeuer"}
    assert "worker listening on" in followed.stdout and f"{job['job_id']}-w0 dequeuer |" in followed.stdout
    again = subprocess.run([*cli, "logs", job["job_id"]], capture_output=True, text=True, timeout=60)
    assert sorted(again.stdout.splitlines()) == sorted(followed.stdout.splitlines()), "the same lines, read at once"
    unknown = subprocess.run([*cli, "logs", "nope"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "not_found" in unknown.stderr
