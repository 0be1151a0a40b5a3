"""The whole embedded stack (`thresher up`) on SQS and S3: moto's server over HTTP on 127.0.0.1 stands for AWS.

A delimited_files job reads JSON lines from S3, its batches travel through an SQS FIFO queue, and a batch holding a
poison item is dead-lettered. moto's SQS is slow, so the job stays at a few hundred items.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AWS_ENV, moto_client
from tests.contract.test_sqs_queue import FlakySqs, flaky_sqs
from tests.e2e.conftest import WORKERS_DIR, processes_mentioning
from thresher.auth import authorization
from thresher.cli import FINAL
from thresher.client import GatewayClient
from thresher.errors import Unavailable
from thresher.launcher import StackProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

ITEMS = 300
BATCH_SIZE = 5
POISON = 137  # the recording worker fails every batch holding it (config fail_items)


@pytest.fixture
def sqs(aws_endpoint: str) -> Iterator[FlakySqs]:
    """The stack's SQS endpoint: moto's, through a proxy that counts the calls (and injects no fault)."""
    with flaky_sqs(aws_endpoint) as proxy:
        yield proxy


@pytest.fixture
def stack(sqs: FlakySqs, aws_endpoint: str, tmp_path: Path) -> Iterator[StackProcess]:
    region = AWS_ENV["AWS_DEFAULT_REGION"]
    backends = ["--queue-backend", "sqs", "--sqs-endpoint-url", sqs.url, "--sqs-region", region,
                "--s3-endpoint-url", aws_endpoint, "--s3-region", region]  # fmt: skip
    stack = StackProcess(tmp_path / "data", apis=WORKERS_DIR / "apis.yaml", args=backends, env=AWS_ENV)
    try:
        yield stack
    finally:
        stack.stop()
        for pid in processes_mentioning(str(tmp_path)):
            os.kill(pid, signal.SIGKILL)  # nothing the test started outlives it


def test_a_delimited_files_job_on_sqs_and_s3_processes_every_item_and_dead_letters_the_poison(
    stack: StackProcess, sqs: FlakySqs, aws_endpoint: str, tmp_path: Path
) -> None:
    # Given 300 JSON lines in two S3 objects (and a marker file the globs leave out)
    s3 = moto_client("s3", aws_endpoint)
    s3.create_bucket(Bucket="jobs")
    half = ITEMS // 2
    s3.put_object(Bucket="jobs", Key="in/part-0.jsonl", Body="".join(f"{i}\n" for i in range(half)).encode())
    s3.put_object(Bucket="jobs", Key="in/part-1.jsonl", Body="".join(f"{i}\n" for i in range(half, ITEMS)).encode())
    s3.put_object(Bucket="jobs", Key="in/_SUCCESS", Body=b"")
    out = tmp_path / "out"
    job = {
        "workers": 2,
        "delimited_files": {"s3_paths": ["s3://jobs/in/"], "includes": ["**.jsonl"], "batch_size": BATCH_SIZE},
        "config": {"out_dir": str(out), "fail_items": [POISON]},
    }

    # A dry run lists the files it would read, and files that do not exist are refused
    assert post(stack, "/batch/recorder?dryRun=true", job) == (
        200,
        "s3://jobs/in/part-0.jsonl\ns3://jobs/in/part-1.jsonl\nvalidations passed\n",
    )
    nothing = {**job, "delimited_files": {"s3_paths": ["s3://jobs/none/"], "batch_size": 1}}
    code, error = post(stack, "/batch/recorder?dryRun=true", nothing)
    assert (code, json.loads(error)["message"]) == (400, "delimited_files: no files match search criteria")

    # When the job runs
    client = GatewayClient(stack.url, api_key=stack.api_key)
    submitted = client.submit("recorder", job)
    status = wait_for_final(client, submitted["job_id"])

    # Then every batch but the poison one succeeded, and that one was tried 3 times, then dead-lettered
    js, metrics = status["job_status"], status["metrics"]
    assert js["total_batch_count"] == ITEMS // BATCH_SIZE
    assert (metrics["succeeded"], metrics["dead_lettered"]) == (ITEMS // BATCH_SIZE - 1, 1), status
    assert js["status"] == "completed_with_failures", status
    poison_batch = list(range(POISON - POISON % BATCH_SIZE, POISON - POISON % BATCH_SIZE + BATCH_SIZE))
    succeeded = sorted(item for record in records(out, "items") for item in record["items"])
    assert succeeded == [i for i in range(ITEMS) if i not in poison_batch]
    assert sorted({item for record in records(out, "calls") for item in record["items"]}) == list(range(ITEMS))
    assert sorted(r["attempt"] for r in records(out, "calls") if POISON in r["items"]) == [1, 2, 3]  # any worker
    [failed] = client.failed(submitted["job_id"])
    assert (failed["items"], failed["attempts"]) == (poison_batch, 3)
    assert "poison item" in failed["error"]

    # And the job's queue and dead letter queue are gone from SQS
    def queues_left() -> list[str]:
        urls = moto_client("sqs", aws_endpoint).list_queues().get("QueueUrls", [])
        return [url for url in urls if submitted["job_id"] in url]

    eventually(lambda: queues_left() == [])

    # And the job counted its own SQS calls, every process's (scheduler, enqueuer, dequeuers): exactly the calls SQS
    # got, since no other job ran; its status and the monitor's /metrics say so
    def counted_every_call() -> bool:
        counted = client.get("recorder", submitted["job_id"])["job_status"]["queue_calls"]
        print(f"counted by the job: {counted}")
        return bool(counted == {"total": sum(sqs.calls.values()), "by_operation": dict(sorted(sqs.calls.items()))})

    eventually(counted_every_call)
    endpoints = json.loads((stack.data_dir / "endpoints.json").read_text())
    metrics = urllib.request.urlopen(endpoints["monitor"]["metrics"], timeout=10).read().decode()
    labels = f'api_name="recorder",job_id="{submitted["job_id"]}"'
    for operation, calls in sqs.calls.items():
        assert f'thresher_job_queue_calls_total{{{labels},operation="{operation}"}} {calls}.0' in metrics

    # And the calls that grow with the batches stay well under 3 per batch (about 1 here; receives and queue
    # attributes grow with time instead: idle long polls, status reads)
    batches = ITEMS // BATCH_SIZE
    per_batch = {op: n for op, n in sqs.calls.items() if op not in ("ReceiveMessage", "GetQueueAttributes")}
    print(f"SQS calls for a job of {batches} batches: {dict(sorted(sqs.calls.items()))}")
    assert sum(per_batch.values()) < 2 * batches, sqs.calls


def post(stack: StackProcess, path: str, body: Any) -> tuple[int, str]:
    headers = {"Authorization": authorization(stack.api_key or "")}
    request = urllib.request.Request(stack.url + path, data=json.dumps(body).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for_final(client: GatewayClient, job_id: str, timeout_s: float = 180.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            status = client.get("recorder", job_id)
        except Unavailable:
            status = {}
        if status and status["job_status"]["status"] in FINAL:
            return status
        time.sleep(0.5)  # each status read costs SQS calls on moto, which is slow
    raise AssertionError(f"job {job_id} did not finish in {timeout_s} s: {status}")


def records(out: Path, kind: str) -> list[dict[str, Any]]:
    return [json.loads(line) for path in out.glob(f"{kind}-*.jsonl") for line in path.read_text().splitlines()]


def eventually(check: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout_s} s")
        time.sleep(0.5)
