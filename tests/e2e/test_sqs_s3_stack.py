"""The whole embedded stack (`thresher up`) on SQS and S3, over HTTP on 127.0.0.1: moto's server stands for S3, and
for SQS either moto's (slow: its jobs stay at a few dozen batches) or ElasticMQ (strict, and fast enough for jobs of
thousands of batches).

A delimited_files job reads JSON lines from S3, its batches travel through an SQS FIFO queue, and a batch holding a
poison item is dead-lettered.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AWS_ENV, moto_client
from tests.contract.test_sqs_queue import FlakySqs, flaky_sqs
from tests.e2e.conftest import WORKERS_DIR, processes_mentioning
from tests.helpers import eventually, wait_until
from thresher.core.auth import authorization
from thresher.core.errors import Unavailable
from thresher.core.statuses import FINAL_NAMES
from thresher.tools.client import GatewayClient
from thresher.tools.launcher import StackProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

POISON = 137  # the recording worker fails every batch holding it (config fail_items)


@dataclass(frozen=True)
class SqsStack:
    stack: StackProcess
    sqs: FlakySqs  # the stack's SQS endpoint: a proxy that counts the calls (and injects faults when told)
    sqs_upstream: str  # moto's or ElasticMQ's URL
    s3: str  # moto's URL


@contextlib.contextmanager
def sqs_s3_stack(sqs_upstream: str, s3: str, tmp_path: Path, env: dict[str, str] | None = None) -> Iterator[SqsStack]:
    region = AWS_ENV["AWS_DEFAULT_REGION"]
    with flaky_sqs(sqs_upstream) as sqs:
        backends = ["--queue-backend", "sqs", "--sqs-endpoint-url", sqs.url, "--sqs-region", region,
                    "--s3-endpoint-url", s3, "--s3-region", region]  # fmt: skip
        env = {**AWS_ENV, **(env or {})}
        stack = StackProcess(tmp_path / "data", apis=WORKERS_DIR / "apis.yaml", args=backends, env=env)
        try:
            yield SqsStack(stack, sqs, sqs_upstream, s3)
        finally:
            stack.stop()
            for pid in processes_mentioning(str(tmp_path)):
                os.kill(pid, signal.SIGKILL)  # nothing the test started outlives it


@pytest.fixture
def on_moto(aws_endpoint: str, tmp_path: Path) -> Iterator[SqsStack]:
    with sqs_s3_stack(aws_endpoint, aws_endpoint, tmp_path) as stack:
        yield stack


@pytest.fixture
def on_elasticmq(elasticmq_endpoint: str, aws_endpoint: str, tmp_path: Path) -> Iterator[SqsStack]:
    with sqs_s3_stack(elasticmq_endpoint, aws_endpoint, tmp_path) as stack:
        yield stack


def test_a_delimited_files_job_on_sqs_and_s3_processes_every_item_and_dead_letters_the_poison(
    on_moto: SqsStack, tmp_path: Path
) -> None:
    # Given 300 JSON lines in two S3 objects (and a marker file the globs leave out), in batches of 5
    job = delimited_job(on_moto, items=300, batch_size=5, out=tmp_path / "out")

    # A dry run lists the files it would read, and files that do not exist are refused
    assert post(on_moto.stack, "/batch/recorder?dryRun=true", job) == (
        200,
        "s3://jobs/in/part-0.jsonl\ns3://jobs/in/part-1.jsonl\nvalidations passed",
    )
    nothing = {**job, "delimited_files": {"s3_paths": ["s3://jobs/none/"], "batch_size": 1}}
    code, error = post(on_moto.stack, "/batch/recorder?dryRun=true", nothing)
    assert (code, error) == (400, "\ndelimited_files: no s3 files match search criteria\n")  # as Cortex: text

    # When the job runs, then every item but the poison batch's is processed, that batch is dead-lettered, and the
    # job counted its own SQS calls
    run_and_check(on_moto, job, items=300, batch_size=5, out=tmp_path / "out")

    # And the calls that grow with the batches stay well under 3 per batch (about 1 here; receives and queue
    # attributes grow with time instead: idle long polls, status reads)
    calls = on_moto.sqs.calls
    per_batch = {op: n for op, n in calls.items() if op not in ("ReceiveMessage", "GetQueueAttributes")}
    print(f"SQS calls for a job of {300 // 5} batches: {dict(sorted(calls.items()))}")
    assert sum(per_batch.values()) < 2 * 300 // 5, calls


def test_a_job_of_2000_batches_on_elasticmq_whose_poison_error_holds_characters_sqs_refuses(
    on_elasticmq: SqsStack, tmp_path: Path
) -> None:
    # Given 10,000 JSON lines in batches of 5, on an SQS that keeps SQS's limits strictly, and a poison batch whose
    # error holds what a coloured traceback does: ESC, and a NUL (SQS refuses both in message attributes)
    out = tmp_path / "out"
    job = delimited_job(on_elasticmq, items=10_000, batch_size=5, out=out)
    job["config"]["fail_message"] = "\x1b[31mpoison item\x1b[0m\x00"
    # When the job runs, then it ends as on AWS: every batch but one succeeded, the poison one is in the dead
    # letter queue (and `thresher failed` lists it), and the count of SQS calls is final when the status is
    run_and_check(on_elasticmq, job, items=10_000, batch_size=5, out=out)


def test_a_job_whose_receives_keep_failing_says_why_in_its_status_and_the_monitors_log(
    on_moto: SqsStack, tmp_path: Path
) -> None:
    # Given an SQS server that refuses every receive (as one without MessageSystemAttributeNames does)
    on_moto.sqs.unsupported.add("ReceiveMessage")
    job = delimited_job(on_moto, items=10, batch_size=5, out=tmp_path / "out")
    client = GatewayClient(on_moto.stack.url, api_key=on_moto.stack.api_key)
    job_id = client.submit("recorder", job)["job_id"]

    # When its workers try to take batches, then the job's status says why it does not move
    def says_why() -> bool:
        status = client.get("recorder", job_id)["job_status"]
        print(status["status"], status["status_reason"])
        return "cannot receive batches from the queue" in status["status_reason"] and (
            "UnsupportedOperation" in status["status_reason"]
        )

    wait_until(says_why, 60, "the status to say why the job does not move", interval_s=0.5)
    # And so does a service's log (the monitor's), not only the dequeuers'
    monitor_log = (on_moto.stack.data_dir / "logs" / "monitor.log").read_text()
    assert "cannot receive batches" in monitor_log and "UnsupportedOperation" in monitor_log
    client.stop(job_id)


def test_a_dead_letter_sqs_refused_is_moved_at_the_clean_up_and_the_queue_is_kept_until_then(
    aws_endpoint: str, tmp_path: Path
) -> None:
    # Given an SQS that refuses SendMessage (dead letters only: batches go by SendMessageBatch), so that the
    # dequeuers cannot write the poison batch's dead letter, and a short visibility timeout for it to come back
    with sqs_s3_stack(aws_endpoint, aws_endpoint, tmp_path, {"THRESHER_QUEUE_VISIBILITY_S": "2"}) as on:
        on.sqs.unsupported.add("SendMessage")
        job = delimited_job(on, items=10, batch_size=5, out=tmp_path / "out")
        job["config"]["fail_items"] = [3]
        client = GatewayClient(on.stack.url, api_key=on.stack.api_key)
        job_id = client.submit("recorder", job)["job_id"]

        # When the job ends (the monitor counted the batch dead-lettered when it told the dequeuer to move it)
        status = wait_for_final(client, job_id)
        assert (status["job_status"]["status"], status["metrics"]["dead_lettered"]) == ("completed_with_failures", 1)

        # Then its clean-up finds the dead letter missing and keeps the job's queue, which still holds the batch
        scheduler_log = on.stack.data_dir / "logs" / "scheduler.log"
        wait_until(
            lambda: "were not in the dead letter queue" in scheduler_log.read_text(),
            60,
            "the scheduler to log the lost dead letters",
            interval_s=0.5,
        )
        assert queues_of(on, job_id) != []

        # And once SQS takes it, the clean-up moves it to the dead letter queue, then deletes the queues
        on.sqs.unsupported.clear()
        wait_until(lambda: queues_of(on, job_id) == [], 60, "the job's queues to go", interval_s=0.5)
        [failed] = client.failed(job_id)
        assert failed["items"] == [0, 1, 2, 3, 4]


def queues_of(on: SqsStack, job_id: str) -> list[str]:
    urls = moto_client("sqs", on.sqs_upstream).list_queues().get("QueueUrls", [])
    return [url for url in urls if job_id in url]


def delimited_job(on: SqsStack, items: int, batch_size: int, out: Path) -> dict[str, Any]:
    """`items` JSON lines (0, 1, ...) in two S3 objects under s3://jobs/in/, and a job that reads them."""
    s3 = moto_client("s3", on.s3)
    s3.create_bucket(Bucket="jobs")
    half = items // 2
    s3.put_object(Bucket="jobs", Key="in/part-0.jsonl", Body="".join(f"{i}\n" for i in range(half)).encode())
    s3.put_object(Bucket="jobs", Key="in/part-1.jsonl", Body="".join(f"{i}\n" for i in range(half, items)).encode())
    s3.put_object(Bucket="jobs", Key="in/_SUCCESS", Body=b"")
    return {
        "workers": 2,
        "delimited_files": {"s3_paths": ["s3://jobs/in/"], "includes": ["**.jsonl"], "batch_size": batch_size},
        "config": {"out_dir": str(out), "fail_items": [POISON]},
    }


def run_and_check(on: SqsStack, job: dict[str, Any], items: int, batch_size: int, out: Path) -> None:
    client = GatewayClient(on.stack.url, api_key=on.stack.api_key)
    submitted = client.submit("recorder", job)
    status = wait_for_final(client, submitted["job_id"])

    # The first read that shows a final status shows the final count of SQS calls: exactly the calls SQS got from
    # every process (scheduler, enqueuer, dequeuers, monitor), since no other job ran
    sqs_calls = {"total": sum(on.sqs.calls.values()), "by_operation": dict(sorted(on.sqs.calls.items()))}
    assert status["job_status"]["queue_calls"] == sqs_calls

    # Every batch but the poison one succeeded, and that one was tried 3 times, then dead-lettered
    js, metrics = status["job_status"], status["metrics"]
    assert js["total_batch_count"] == items // batch_size
    assert (metrics["succeeded"], metrics["dead_lettered"]) == (items // batch_size - 1, 1), status
    assert js["status"] == "completed_with_failures", status
    first = POISON - POISON % batch_size
    poison_batch = list(range(first, first + batch_size))
    succeeded = sorted(item for record in records(out, "items") for item in record["items"])
    assert succeeded == [i for i in range(items) if i not in poison_batch]
    assert sorted({item for record in records(out, "calls") for item in record["items"]}) == list(range(items))
    assert sorted(r["attempt"] for r in records(out, "calls") if POISON in r["items"]) == [1, 2, 3]  # any worker
    [failed] = client.failed(submitted["job_id"])
    assert (failed["items"], failed["attempts"]) == (poison_batch, 3)
    assert "poison item" in failed["error"]

    # The job's queue and dead letter queue are gone from SQS
    wait_until(lambda: queues_of(on, submitted["job_id"]) == [], 30, "the job's queues to go", interval_s=0.5)

    # The monitor's /metrics counts the same calls
    endpoints = json.loads((on.stack.data_dir / "endpoints.json").read_text())
    text = urllib.request.urlopen(endpoints["monitor"]["metrics"], timeout=10).read().decode()
    labels = f'api_name="recorder",job_id="{submitted["job_id"]}"'
    for operation, calls in sqs_calls["by_operation"].items():
        assert f'thresher_job_queue_calls_total{{{labels},operation="{operation}"}} {calls}.0' in text


def post(stack: StackProcess, path: str, body: Any) -> tuple[int, str]:
    headers = {"Authorization": authorization(stack.api_key or "")}
    request = urllib.request.Request(stack.url + path, data=json.dumps(body).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for_final(client: GatewayClient, job_id: str, timeout_s: float = 240.0) -> dict[str, Any]:
    def final() -> dict[str, Any]:
        try:
            status = client.get("recorder", job_id)
        except Unavailable:
            status = {}
        assert status and status["job_status"]["status"] in FINAL_NAMES, (
            f"job {job_id} did not finish in {timeout_s} s: {status}"
        )
        return status

    return eventually(final, timeout_s, interval_s=0.5)  # each status read costs SQS calls on moto, which is slow


def records(out: Path, kind: str) -> list[dict[str, Any]]:
    return [json.loads(line) for path in out.glob(f"{kind}-*.jsonl") for line in path.read_text().splitlines()]


@pytest.mark.parametrize("sqs_server", ["moto", "elasticmq"])
def test_results_on_s3_are_kept_once_per_batch_read_back_in_order_and_deleted(
    sqs_server: str, aws_endpoint: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Given a stack on SQS (moto's or ElasticMQ's) that keeps results under s3://results/kept, and a worker that kills
    # its own dequeuer as soon as it answered batch 3 (so that batch is delivered, and its result written, twice)
    sqs = request.getfixturevalue("elasticmq_endpoint") if sqs_server == "elasticmq" else aws_endpoint
    s3 = moto_client("s3", aws_endpoint)
    s3.create_bucket(Bucket="results")
    env = {
        "THRESHER_RESULTS_S3_PREFIX": "s3://results/kept",
        "THRESHER_RESULTS_S3_ENDPOINT_URL": aws_endpoint,
        "THRESHER_RESULTS_S3_REGION": AWS_ENV["AWS_DEFAULT_REGION"],
    }
    with sqs_s3_stack(sqs, aws_endpoint, tmp_path, env) as on:
        client = GatewayClient(on.stack.url, api_key=on.stack.api_key)
        out = tmp_path / "out"
        config = {"out_dir": str(out), "results": True, "kill_dequeuer_items": [3], "kill_dequeuer_after_s": 0}
        job = client.submit("recorder", {"workers": 1, "item_list": {"items": list(range(12)), "batch_size": 1},
                                         "config": config})  # fmt: skip
        status = wait_for_final(client, job["job_id"])
        assert status["job_status"]["status"] == "succeeded", status
        assert sorted(r["attempt"] for r in records(out, "items") if r["items"] == [3]) == [1, 2]

        # When the results are read, then there is one per batch, in order, from S3 objects that each hold a group
        # of batches (the results of a dequeuer's flush)
        results = [json.loads(line) for line in client.results(job["job_id"], items=True)]
        assert [(r["index"], r["items"], r["result"]["squares"]) for r in results] == [
            (i, [i], [i * i]) for i in range(12)
        ]
        assert results[3]["result"]["attempt"] == 2, "the last successful attempt's"
        listed = s3.list_objects_v2(Bucket="results", Prefix=f"kept/{job['job_id']}/")["Contents"]
        assert listed and all(o["Key"].endswith(".results") for o in listed), listed
        assert client.job(job["job_id"])["job_status"]["results"]["count"] == 12

        # And a DELETE removes every object
        assert client.delete_results(job["job_id"])["deleted_results"] == 12
        assert s3.list_objects_v2(Bucket="results", Prefix=f"kept/{job['job_id']}/").get("KeyCount") == 0


def test_a_job_naming_its_own_s3_path_keeps_its_results_there_and_reads_and_deletes_them_from_there(
    aws_endpoint: str, tmp_path: Path
) -> None:
    # Given a stack with no results.s3_prefix (results go to its data dir) that lets jobs name their own S3 path for
    # results, S3 on moto, and a job that does
    s3 = moto_client("s3", aws_endpoint)
    s3.create_bucket(Bucket="mine")
    env = {
        "THRESHER_RESULTS_JOB_S3_PATHS": "true",
        "THRESHER_RESULTS_S3_ENDPOINT_URL": aws_endpoint,
        "THRESHER_RESULTS_S3_REGION": AWS_ENV["AWS_DEFAULT_REGION"],
    }
    with sqs_s3_stack(aws_endpoint, aws_endpoint, tmp_path, env) as on:
        client = GatewayClient(on.stack.url, api_key=on.stack.api_key)
        config = {"out_dir": str(tmp_path / "out"), "results": True}
        job = client.submit("recorder", {"workers": 2, "item_list": {"items": list(range(8)), "batch_size": 2},
                                         "config": config, "results": {"s3_path": "s3://mine/runs/"}})  # fmt: skip
        assert wait_for_final(client, job["job_id"])["job_status"]["status"] == "succeeded"

        # Then its results are objects under that path, read back from there in order, and none is in the data dir
        listed = s3.list_objects_v2(Bucket="mine", Prefix=f"runs/{job['job_id']}/").get("Contents", [])
        assert listed and all(o["Key"].endswith(".results") for o in listed), listed
        results = [json.loads(line) for line in client.results(job["job_id"])]
        assert [(r["index"], r["result"]["squares"]) for r in results] == [
            (i, [2 * i * 2 * i, (2 * i + 1) ** 2]) for i in range(4)
        ]
        assert client.job(job["job_id"])["job_status"]["results"]["count"] == 4
        assert not (on.stack.data_dir / "results" / job["job_id"]).exists()

        # And a DELETE removes them from there
        assert client.delete_results(job["job_id"])["deleted_results"] == 4
        assert s3.list_objects_v2(Bucket="mine", Prefix=f"runs/{job['job_id']}/").get("KeyCount") == 0
