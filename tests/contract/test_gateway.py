"""The gateway's HTTP contract, against a small real Jobs gRPC server standing in for the scheduler."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from services.gateway import create_app
from services.gateway.middleware import LARGE_BODY_SLOTS
from tests.helpers import TEST_TRUST, assert_eventually, write_test_secret
from thresher.core import statuses
from thresher.core.config import Config
from thresher.core.errors import NotFound, WrongState
from thresher.core.rpc import start_server
from thresher.v1 import jobs_pb2, jobs_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
START = Timestamp(seconds=1700000000, nanos=123000000)  # 2023-11-14T22:13:20.123Z
END = Timestamp(seconds=1700000600)  # 2023-11-14T22:23:20Z
API_ID = "5f2c0a9e1b7d3c48"  # the deployed version of the API


class FakeJobs(jobs_pb2_grpc.JobsServicer):
    """The scheduler's public contract, in memory: records every request and answers from `jobs` and `apis`."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, Message]] = []
        self.jobs: dict[str, jobs_pb2.Job] = {}
        self.apis: dict[str, jobs_pb2.ApiSpec] = {}
        self.address = ""
        self.server: Any = None  # the grpc.aio server serving this fake

    def calls(self, method: str) -> list[Any]:
        return [request for name, request in self.requests if name == method]

    async def Authorize(self, request: jobs_pb2.AuthorizeRequest, context: Any) -> jobs_pb2.Caller:
        return jobs_pb2.Caller(scopes=["admin"])  # as a scheduler without API keys: everyone is let in

    async def SubmitJob(self, request: jobs_pb2.SubmitJobRequest, context: Any) -> jobs_pb2.Job:
        self.requests.append(("SubmitJob", request))
        sub = request.submission
        job = jobs_pb2.Job(
            job_id="69b377c15a1314be0a1b",
            api_name=sub.api_name,
            workers=sub.workers,
            config_json=sub.config_json,
            start_time=START,
            status=jobs_pb2.JOB_STATUS_PENDING,
            api_id=API_ID,
        )
        if sub.HasField("timeout_s"):
            job.timeout_s = sub.timeout_s
        if sub.HasField("sqs_dead_letter_queue"):
            job.sqs_dead_letter_queue.CopyFrom(sub.sqs_dead_letter_queue)
        return job

    async def GetJob(self, request: jobs_pb2.JobRef, context: Any) -> jobs_pb2.Job:
        self.requests.append(("GetJob", request))
        return self._job(request)

    async def StopJob(self, request: jobs_pb2.JobRef, context: Any) -> jobs_pb2.Job:
        self.requests.append(("StopJob", request))
        job = self._job(request)
        if statuses.is_final(job.status):
            raise WrongState(f"job {job.job_id} already finished")
        job.status = jobs_pb2.JOB_STATUS_STOPPED
        job.end_time.CopyFrom(END)
        return job

    async def ListJobs(self, request: jobs_pb2.ListJobsRequest, context: Any) -> jobs_pb2.ListJobsResponse:
        self.requests.append(("ListJobs", request))
        jobs = [self.jobs[i] for i in sorted(self.jobs) if request.api_name in ("", self.jobs[i].api_name)]
        return jobs_pb2.ListJobsResponse(jobs=jobs[: request.limit or None])

    async def DeployApi(self, request: jobs_pb2.DeployApiRequest, context: Any) -> jobs_pb2.ApiSpec:
        self.requests.append(("DeployApi", request))
        api = jobs_pb2.ApiSpec()
        api.CopyFrom(request.api)
        api.updated_time.CopyFrom(END)
        api.api_id = API_ID
        self.apis[api.name] = api
        return api

    async def GetApi(self, request: jobs_pb2.GetApiRequest, context: Any) -> jobs_pb2.ApiSpec:
        self.requests.append(("GetApi", request))
        if request.name not in self.apis:
            raise NotFound(f"API {request.name} is not deployed")
        return self.apis[request.name]

    async def ListApis(self, request: jobs_pb2.ListApisRequest, context: Any) -> jobs_pb2.ListApisResponse:
        self.requests.append(("ListApis", request))
        return jobs_pb2.ListApisResponse(apis=[self.apis[name] for name in sorted(self.apis)])

    def _job(self, ref: jobs_pb2.JobRef) -> jobs_pb2.Job:
        job = self.jobs.get(ref.job_id)
        if job is None or ref.api_name not in ("", job.api_name):
            raise NotFound(f"job {ref.job_id} not found")
        return job


@pytest.fixture
async def scheduler() -> AsyncIterator[FakeJobs]:
    fake = FakeJobs()
    name = jobs_pb2.DESCRIPTOR.services_by_name["Jobs"].full_name
    registration = (jobs_pb2_grpc.add_JobsServicer_to_server, fake, name)
    server, port = await start_server("127.0.0.1:0", [registration], TEST_TRUST)
    fake.address = f"127.0.0.1:{port}"
    fake.server = server
    yield fake
    await server.stop(0)


@pytest.fixture
async def client(scheduler: FakeJobs, tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    config = Config(data_dir=tmp_path)
    write_test_secret(config)
    config.addresses.scheduler = scheduler.address
    async with TestClient(TestServer(create_app(config), host="127.0.0.1")) as client:
        yield client


def full_job() -> jobs_pb2.Job:
    """A finished job with every field set."""
    return jobs_pb2.Job(
        job_id="69b377c15a1314be0a1b",
        api_name="my-api",
        workers=2,
        config_json='{"model":"v2","label":"é"}'.encode(),
        timeout_s=3600,
        sqs_dead_letter_queue=jobs_pb2.DeadLetterPolicy(arn="arn:aws:sqs:us-east-1:1:dlq.fifo", max_receive_count=5),
        queue_url="file:///data/queue/my-api-69b377c15a1314be0a1b",
        api_id=API_ID,
        total_batch_count=10,
        start_time=START,
        end_time=END,
        status=jobs_pb2.JOB_STATUS_COMPLETED_WITH_FAILURES,
        status_reason="1 batch dead-lettered",
        batches_in_queue=0,
        worker_counts=jobs_pb2.WorkerCounts(pending=0, ready=1, succeeded=1, failed=0, killed_oom=2),
        batches=jobs_pb2.BatchCounts(
            succeeded=9,
            failed_attempts=5,
            dead_lettered=1,
            in_flight=0,
            average_time_per_batch_s=1.25,
            items_succeeded=88,
            items_dead_lettered=1,
            split=2,
        ),
        hook=jobs_pb2.HookOutcome(called=True, succeeded=True, http_status=200, attempts=2, error="try 1: HTTP 503"),
        items_enqueued=100,
        batch_timeout_s=60.0,
        max_receive_count=5,
        on_failure="bisect",
        worker_restarts=1,
        worker_disruptions=2,
        retry_of="69b377c15a1314be0000",
        owner="alice",
        workers_detail=[jobs_pb2.WorkerStatus(worker_id="w0", phase="ready", last_seen=END)],
        pace=jobs_pb2.Pace(batches_per_s=12.3456, eta_s=4.04, oldest_in_flight_s=0.5),
        queue_calls={"SendMessageBatch": 1, "ReceiveMessage": 2, "DeleteMessageBatch": 1},
        results=jobs_pb2.ResultsSize(count=9, bytes=1234),
    )


def running_job(job_id: str = "7000000000000000aaaa", api_name: str = "my-api") -> jobs_pb2.Job:
    """A job in progress: no total yet, no end, no config, timeout or dead letter queue, no batch timed yet."""
    return jobs_pb2.Job(
        job_id=job_id, api_name=api_name, workers=1, start_time=START, status=jobs_pb2.JOB_STATUS_ENQUEUING
    )


async def assert_error(response: aiohttp.ClientResponse, status: int, kind: str, message: str = "") -> None:
    assert response.status == status
    assert response.content_type == "application/json"
    body = await response.json()
    assert body["kind"] == kind
    assert message in body["message"]


# --- POST /batch/{api} ---


async def test_submission_is_translated_into_the_job_submission_and_answered_with_cortex_job_spec(
    client: TestClient[Any, Any], scheduler: FakeJobs
) -> None:
    # Given a Cortex submission with items of every JSON type, a config, a timeout and a dead letter queue
    body = {
        "workers": 2,
        "item_list": {"items": [{"b": 1, "a": [1, 2.5]}, "héllo ☃", 7, None, True, [[]]], "batch_size": 2},
        "config": {"model": "v2", "nested": {"k": [1, "x"]}},
        "timeout": 3600,
        "sqs_dead_letter_queue": {"arn": "arn:aws:sqs:us-east-1:1:dlq.fifo", "max_receive_count": 5},
        "batch_timeout": 12.5,
        "node_groups": ["ignored, as Cortex does"],
    }
    # When it is posted
    response = await client.post("/batch/my-api", data=json.dumps(body, indent=2))
    # Then the scheduler receives each item as written, compacted (json.dumps escapes non-ASCII characters)
    assert response.status == 200
    [request] = scheduler.calls("SubmitJob")
    sub = request.submission
    assert sub.api_name == "my-api" and sub.workers == 2
    assert list(sub.item_list.items) == [
        b'{"b":1,"a":[1,2.5]}',
        b'"h\\u00e9llo \\u2603"',
        b"7",
        b"null",
        b"true",
        b"[[]]",
    ]
    assert sub.item_list.batch_size == 2
    assert json.loads(sub.config_json) == body["config"]
    assert sub.config_json == b'{"model":"v2","nested":{"k":[1,"x"]}}'
    assert sub.HasField("timeout_s") and sub.timeout_s == 3600
    dlq = sub.sqs_dead_letter_queue
    assert (dlq.arn, dlq.max_receive_count) == ("arn:aws:sqs:us-east-1:1:dlq.fifo", 5)
    assert sub.batch_timeout_s == 12.5
    assert not sub.HasField("file_path_lister") and not sub.HasField("delimited_files")
    # And the answer is Cortex's flat job spec
    assert await response.json() == {
        "job_id": "69b377c15a1314be0a1b",
        "api_name": "my-api",
        "kind": "BatchAPI",
        "workers": 2,
        "sqs_dead_letter_queue": {"arn": "arn:aws:sqs:us-east-1:1:dlq.fifo", "max_receive_count": 5},
        "config": {"model": "v2", "nested": {"k": [1, "x"]}},
        "timeout": 3600,
        "api_id": API_ID,
        "sqs_url": "",
        "start_time": "2023-11-14T22:13:20.123Z",
    }


async def test_file_sources_are_passed_as_given_and_optional_fields_stay_unset(
    client: TestClient[Any, Any], scheduler: FakeJobs
) -> None:
    body = {
        "workers": 1,
        "file_path_lister": {"s3_paths": ["s3://b/in/"], "includes": ["**.jpg"], "excludes": ["**x*"], "batch_size": 3},
        "delimited_files": {"s3_paths": ["file:///data/a.jsonl"], "batch_size": 4},
        "config": None,
    }
    response = await client.post("/batch/my-api", json=body)
    assert response.status == 200
    [request] = scheduler.calls("SubmitJob")
    sub = request.submission
    lister, delimited = sub.file_path_lister, sub.delimited_files
    assert (list(lister.paths), list(lister.includes), list(lister.excludes)) == (["s3://b/in/"], ["**.jpg"], ["**x*"])
    assert lister.batch_size == 3
    assert list(delimited.paths) == ["file:///data/a.jsonl"] and delimited.batch_size == 4
    # Two sources are passed on as two: rejecting them is the scheduler's job
    assert not sub.HasField("item_list")
    assert not sub.HasField("timeout_s") and not sub.HasField("batch_timeout_s") and sub.config_json == b""
    assert not sub.HasField("sqs_dead_letter_queue")
    answer = await response.json()
    assert (answer["config"], answer["timeout"], answer["sqs_dead_letter_queue"]) == (None, None, None)


async def test_an_empty_item_list_reaches_the_scheduler_as_present(
    client: TestClient[Any, Any], scheduler: FakeJobs
) -> None:
    response = await client.post("/batch/my-api", json={"workers": 1, "item_list": {}})
    assert response.status == 200
    [request] = scheduler.calls("SubmitJob")
    assert request.submission.HasField("item_list") and list(request.submission.item_list.items) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"workers": "2"}, "workers: must be an integer"),
        ({"workers": True}, "workers: must be an integer"),
        ({"workers": 2.5}, "workers: must be an integer"),
        ({"workers": 2**31}, "workers: must be an integer from"),
        ({"min_workers": "1"}, "min_workers: must be an integer"),
        ({"max_workers": 2.5}, "max_workers: must be an integer"),
        ({"item_list": []}, "item_list: must be an object"),
        ({"item_list": {"items": {"a": 1}}}, "item_list: items: must be a list"),
        ({"item_list": {"items": [1], "batch_size": False}}, "item_list: batch_size: must be an integer"),
        ({"file_path_lister": {"s3_paths": "s3://b/"}}, "file_path_lister: s3_paths: must be a list of strings"),
        ({"delimited_files": {"s3_paths": ["a"], "excludes": [1]}}, "delimited_files: excludes: must be a list of"),
        ({"config": ["a"]}, "config: must be an object"),
        ({"timeout": "60"}, "timeout: must be an integer"),
        ({"sqs_dead_letter_queue": {"arn": 5}}, "sqs_dead_letter_queue: arn: must be a string"),
        ({"sqs_dead_letter_queue": {"max_receive_count": "3"}}, "sqs_dead_letter_queue: max_receive_count: must be"),
        ({"batch_timeout": "10"}, "batch_timeout: must be a number"),
        ({"batch_timeout": True}, "batch_timeout: must be a number"),
        ({"results": "s3://b/out"}, "results: must be an object"),
        ({"results": {"s3_path": ["s3://b/out"]}}, "results: s3_path: must be a string"),
        ({"on_failure": ["bisect"]}, "on_failure: must be a string"),
    ],
)
async def test_a_field_of_the_wrong_type_is_400_invalid_naming_the_field(
    client: TestClient[Any, Any], scheduler: FakeJobs, body: dict[str, Any], message: str
) -> None:
    response = await client.post("/batch/my-api", json=body)
    await assert_error(response, 400, "invalid", message)
    assert scheduler.calls("SubmitJob") == []


@pytest.mark.parametrize(
    "data", [b'{"workers": 1,', b"", b"\xff\xfe", b'{"workers": NaN}', b'{"config": {"a": 1e400}}', b"[1]"]
)
async def test_a_body_that_is_not_a_json_object_is_400_invalid(
    client: TestClient[Any, Any], scheduler: FakeJobs, data: bytes
) -> None:
    response = await client.post("/batch/my-api", data=data)
    await assert_error(response, 400, "invalid")
    assert scheduler.calls("SubmitJob") == []


async def test_items_reach_the_scheduler_as_written_as_cortex_kept_raw_json(
    client: TestClient[Any, Any], scheduler: FakeJobs
) -> None:
    # Given items whose numbers and strings a decode and encode would change, spread over lines, and a first
    # item_list that a second one (the last of equal keys wins) replaces
    body = b"""{"item_list": {"items": ["lost"]}, "workers": 1,
      "item_list": {"batch_size": 2, "items": [
        3.50, 1e2, 1E+2, -0.0, 12345678901234567890123, 1e400, "\\u00e9 \\" ,]\\\\", "caf\xc3\xa9",
        {"price" : 3.50 , "tags": [ "a b" , 1.10 ]},
        [ ] , {}, true, null
      ]}}"""
    # When it is posted
    response = await client.post("/batch/my-api", data=body)
    # Then each item keeps its text, only the whitespace between its tokens goes (as Go's encoder compacts it)
    assert response.status == 200, await response.text()
    [request] = scheduler.calls("SubmitJob")
    assert list(request.submission.item_list.items) == [
        b"3.50",
        b"1e2",
        b"1E+2",
        b"-0.0",
        b"12345678901234567890123",
        b"1e400",
        b'"\\u00e9 \\" ,]\\\\"',
        '"café"'.encode(),
        b'{"price":3.50,"tags":["a b",1.10]}',
        b"[]",
        b"{}",
        b"true",
        b"null",
    ]
    assert request.submission.item_list.batch_size == 2


async def test_a_body_over_the_limit_is_413_too_large(client: TestClient[Any, Any], scheduler: FakeJobs) -> None:
    head, tail = b'{"workers":1,"pad":"', b'"}'
    limit = Config().gateway.max_body_bytes
    assert limit == 10 * 1024 * 1024
    body = io.BytesIO(head + b"a" * (limit + 1 - len(head) - len(tail)) + tail)
    response = await client.post("/batch/my-api", data=body)
    await assert_error(response, 413, "too_large", str(limit))
    assert scheduler.calls("SubmitJob") == []


async def test_a_body_of_exactly_the_limit_is_accepted(client: TestClient[Any, Any], scheduler: FakeJobs) -> None:
    head, tail = b'{"workers":1,"pad":"', b'"}'
    limit = Config().gateway.max_body_bytes
    body = io.BytesIO(head + b"a" * (limit - len(head) - len(tail)) + tail)
    response = await client.post("/batch/my-api", data=body)
    assert response.status == 200
    assert len(scheduler.calls("SubmitJob")) == 1


async def test_large_bodies_are_handled_one_at_a_time_when_one_slot_is_configured(
    scheduler: FakeJobs, tmp_path: Path
) -> None:
    config = Config(data_dir=tmp_path)
    write_test_secret(config)
    config.addresses.scheduler = scheduler.address
    config.gateway.max_large_bodies = 1
    pad = "a" * (2 * 1024 * 1024)  # over 1 MiB: large
    first, second = (json.dumps({"workers": n, "pad": pad}).encode() for n in (1, 2))
    app = create_app(config)
    async with TestServer(app, host="127.0.0.1") as server:
        # Given a large submission whose body is still arriving, holding the only slot
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            head = (
                f"POST /batch/my-api HTTP/1.1\r\nHost: x\r\nContent-Length: {len(first)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + first[:1000])
            await writer.drain()

            def slot_taken() -> None:
                assert app[LARGE_BODY_SLOTS].locked()

            await assert_eventually(slot_taken)

            # When a second large submission arrives complete, then (a while later) the rest of the first
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{server.port}/batch/my-api"
                second_answer = asyncio.create_task(session.post(url, data=io.BytesIO(second)))
                await asyncio.sleep(0.5)  # without the cap, the second is handled meanwhile
                writer.write(first[1000:])
                first_answer = await reader.read()
                assert (await second_answer).status == 200
        finally:
            writer.close()

    # Then the second was handled only once the first was answered: the scheduler got them in that order
    assert first_answer.startswith(b"HTTP/1.1 200 ")
    assert [call.submission.workers for call in scheduler.calls("SubmitJob")] == [1, 2]


async def test_a_dry_run_asks_the_scheduler_to_validate_only(client: TestClient[Any, Any], scheduler: FakeJobs) -> None:
    response = await client.post("/batch/my-api?dryRun=true", json={"workers": 1, "item_list": {"items": [1]}})
    assert response.status == 200 and response.content_type == "text/plain"
    assert await response.text() == "validations passed"  # Cortex's text, without a newline
    bad = await client.post("/batch/my-api?dryRun=true", json={"workers": "1"})  # not a submission: JSON, as Cortex
    await assert_error(bad, 400, "invalid", "workers: must be an integer\n\njob submission schema can be found at")
    # "dryRun=yes" is not a Go bool, so Cortex treats it as false and submits
    submitted = await client.post("/batch/my-api?dryRun=yes", json={"workers": 1, "item_list": {"items": [1]}})
    assert submitted.status == 200
    assert [call.dry_run for call in scheduler.calls("SubmitJob")] == [True, False]


# --- GET and DELETE /batch/{api}?jobID= ---


async def test_get_maps_every_field_of_the_job(client: TestClient[Any, Any], scheduler: FakeJobs) -> None:
    job = full_job()
    scheduler.jobs[job.job_id] = job
    response = await client.get(f"/batch/my-api?jobID={job.job_id}")
    assert response.status == 200
    [ref] = scheduler.calls("GetJob")
    assert (ref.api_name, ref.job_id) == ("my-api", job.job_id)
    assert await response.json() == {
        "job_status": {
            "job_id": "69b377c15a1314be0a1b",
            "api_name": "my-api",
            "kind": "BatchAPI",
            "workers": 2,
            "config": {"model": "v2", "label": "é"},
            "timeout": 3600,
            "sqs_dead_letter_queue": {"arn": "arn:aws:sqs:us-east-1:1:dlq.fifo", "max_receive_count": 5},
            "api_id": API_ID,
            "sqs_url": "file:///data/queue/my-api-69b377c15a1314be0a1b",
            "total_batch_count": 10,
            "start_time": "2023-11-14T22:13:20.123Z",
            "end_time": "2023-11-14T22:23:20Z",
            "status": "completed_with_failures",
            "batches_in_queue": 0,
            "worker_counts": {"ready": 1, "succeeded": 1, "killed_oom": 2},  # Cortex's keys; zero counts left out
            "status_reason": "1 batch dead-lettered",
            "batch_counts": {
                "succeeded": 9,
                "failed_attempts": 5,
                "dead_lettered": 1,
                "in_flight": 0,
                "pending": 0,
                "split": 2,
                "items_succeeded": 88,
                "items_dead_lettered": 1,
            },  # fmt: skip
            "workers_detail": [{"worker_id": "w0", "phase": "ready", "last_heartbeat": "2023-11-14T22:23:20Z"}],
            "pace": {"batches_per_s": 12.346, "eta_s": 4.0, "oldest_in_flight_s": 0.5},
            "hook": {"called": True, "succeeded": True, "http_status": 200, "attempts": 2, "error": "try 1: HTTP 503"},
            "items_enqueued": 100,
            "batch_timeout": 60.0,
            "max_receive_count": 5,
            "on_failure": "bisect",
            "worker_restarts": 1,
            "worker_disruptions": 2,
            "retry_of": "69b377c15a1314be0000",
            "owner": "alice",
            "queue_calls": {
                "total": 4,
                "by_operation": {"DeleteMessageBatch": 1, "ReceiveMessage": 2, "SendMessageBatch": 1},
            },
            "results": {"count": 9, "bytes": 1234},
        },
        "metrics": {"succeeded": 9, "failed": 5, "average_time_per_batch": 1.25, "dead_lettered": 1},
        "endpoint": f"http://127.0.0.1:{client.port}/my-api?jobID=69b377c15a1314be0a1b",
    }


async def test_get_omits_what_is_not_known_yet(client: TestClient[Any, Any], scheduler: FakeJobs) -> None:
    job = running_job()
    scheduler.jobs[job.job_id] = job
    answer = await (await client.get(f"/batch/my-api?jobID={job.job_id}")).json()
    status = answer["job_status"]
    assert "total_batch_count" not in status and "end_time" not in status
    assert (status["config"], status["timeout"], status["sqs_dead_letter_queue"]) == (None, None, None)
    assert status["status"] == "enqueuing"
    assert answer["metrics"] == {"succeeded": 0, "failed": 0, "average_time_per_batch": None, "dead_lettered": 0}


@pytest.mark.parametrize("workers", [0, 2])
async def test_workers_given_beside_a_range_are_refused_even_zero_which_grpc_cannot_tell_from_none(
    client: TestClient[Any, Any], scheduler: FakeJobs, workers: int
) -> None:
    body = {"workers": workers, "min_workers": 1, "max_workers": 8, "item_list": {"items": [1], "batch_size": 1}}
    response = await client.post("/batch/my-api", json=body)
    error = await response.json()
    assert (response.status, error["kind"]) == (400, "job.conflicting_fields"), error
    assert error["message"].startswith("workers: cannot be given with min_workers and max_workers")
    assert scheduler.calls("SubmitJob") == [], "refused before the scheduler"


async def test_an_elastic_job_s_range_goes_to_the_scheduler_and_its_scaling_shows_in_the_status(
    client: TestClient[Any, Any], scheduler: FakeJobs
) -> None:
    body = {"min_workers": 1, "max_workers": 8, "item_list": {"items": [1], "batch_size": 1}}
    assert (await client.post("/batch/my-api", json=body)).status == 200
    [request] = scheduler.calls("SubmitJob")
    assert (request.submission.workers, request.submission.min_workers, request.submission.max_workers) == (0, 1, 8)
    job = running_job()
    job.workers = 3
    job.scaling.CopyFrom(
        jobs_pb2.Scaling(
            min_workers=1,
            max_workers=8,
            current_workers=2,
            desired_workers=3,
            idle_exits=1,
            last_decision="scale_up",
            reason="backlog too slow",
            decided_at=START,
        )
    )
    scheduler.jobs[job.job_id] = job
    status = (await (await client.get(f"/batch/my-api?jobID={job.job_id}")).json())["job_status"]
    assert status["workers"] == 3
    assert status["scaling"] == {
        "min_workers": 1,
        "max_workers": 8,
        "current_workers": 2,
        "desired_workers": 3,
        "idle_exits": 1,
        "last_decision": "scale_up",
        "reason": "backlog too slow",
        "decided_at": "2023-11-14T22:13:20.123Z",
    }


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (jobs_pb2.JOB_STATUS_UNSPECIFIED, "unknown"),
        (jobs_pb2.JOB_STATUS_PENDING, "pending"),
        (jobs_pb2.JOB_STATUS_ENQUEUING, "enqueuing"),
        (jobs_pb2.JOB_STATUS_RUNNING, "running"),
        (jobs_pb2.JOB_STATUS_SUCCEEDED, "succeeded"),
        (jobs_pb2.JOB_STATUS_COMPLETED_WITH_FAILURES, "completed_with_failures"),
        (jobs_pb2.JOB_STATUS_ENQUEUE_FAILED, "enqueue_failed"),
        (jobs_pb2.JOB_STATUS_WORKER_ERROR, "worker_error"),
        (jobs_pb2.JOB_STATUS_WORKER_OOM, "worker_oom"),
        (jobs_pb2.JOB_STATUS_TIMED_OUT, "timed_out"),
        (jobs_pb2.JOB_STATUS_STOPPED, "stopped"),
        (jobs_pb2.JOB_STATUS_UNEXPECTED_ERROR, "unexpected_error"),
    ],
)
async def test_each_status_has_its_cortex_code(
    client: TestClient[Any, Any], scheduler: FakeJobs, status: int, name: str
) -> None:
    job = running_job()
    job.status = status  # type: ignore[assignment]
    scheduler.jobs[job.job_id] = job
    answer = await (await client.get(f"/batch/my-api?jobID={job.job_id}")).json()
    assert answer["job_status"]["status"] == name


async def test_get_and_delete_without_job_id_are_400(client: TestClient[Any, Any], scheduler: FakeJobs) -> None:
    for method in ("GET", "DELETE"):
        response = await client.request(method, "/batch/my-api")
        await assert_error(response, 400, "endpoints.query_param_required", "query param required: jobID")
    assert scheduler.requests == []


async def test_delete_stops_the_job(client: TestClient[Any, Any], scheduler: FakeJobs) -> None:
    job = running_job()
    scheduler.jobs[job.job_id] = job
    response = await client.delete(f"/batch/my-api?jobID={job.job_id}")
    assert response.status == 200
    assert await response.json() == {"message": f"stopped job {job.job_id}"}
    [ref] = scheduler.calls("StopJob")
    assert (ref.api_name, ref.job_id) == ("my-api", job.job_id)


async def test_an_unknown_job_is_404_not_found(client: TestClient[Any, Any], scheduler: FakeJobs) -> None:
    scheduler.jobs["1234"] = running_job("1234", api_name="other-api")
    for method in ("GET", "DELETE"):
        response = await client.request(method, "/batch/my-api?jobID=1234")
        await assert_error(response, 404, "not_found", "job 1234 not found")


async def test_stopping_a_finished_job_is_409_conflict(client: TestClient[Any, Any], scheduler: FakeJobs) -> None:
    job = full_job()
    scheduler.jobs[job.job_id] = job
    response = await client.delete(f"/batch/my-api?jobID={job.job_id}")
    await assert_error(response, 409, "conflict", "already finished")


async def test_an_unreachable_scheduler_is_503_unavailable(client: TestClient[Any, Any], scheduler: FakeJobs) -> None:
    await scheduler.server.stop(0)
    await assert_error(await client.get("/batch/my-api?jobID=1"), 503, "unavailable")
    await assert_error(await client.post("/batch/my-api", json={"workers": 1}), 503, "unavailable")
    # The gateway's own health does not depend on the scheduler
    response = await client.get("/healthz")
    assert response.status == 200 and await response.json() == {"status": "ok"}


async def test_an_unexpected_failure_is_500_internal_and_logged_once(
    client: TestClient[Any, Any], scheduler: FakeJobs, caplog: pytest.LogCaptureFixture
) -> None:
    job = running_job()
    job.config_json = b"{not json"  # a scheduler bug the gateway cannot render
    scheduler.jobs[job.job_id] = job
    with caplog.at_level(logging.INFO):
        response = await client.get(f"/batch/my-api?jobID={job.job_id}")
    await assert_error(response, 500, "internal", "internal error")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None


# --- routing, logging, /v1, /healthz ---


async def test_an_unknown_route_is_404_json_and_a_wrong_method_405_json(client: TestClient[Any, Any]) -> None:
    await assert_error(await client.get("/no/such/route"), 404, "not_found", "no route for GET /no/such/route")
    response = await client.put("/batch/my-api")
    await assert_error(response, 405, "method_not_allowed", "PUT is not allowed on /batch/my-api")
    assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD", "POST", "DELETE"}


async def test_each_request_is_logged_once_without_its_body(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="services.gateway"):
        await client.post("/batch/my-api", json={"workers": 1, "config": {"token": "s3cr3t-value"}})
        await client.get("/batch/my-api")
    lines = [r for r in caplog.records if r.name == "services.gateway.middleware"]
    assert [(r.method, r.path, r.status) for r in lines] == [  # type: ignore[attr-defined]
        ("POST", "/batch/my-api", 200),
        ("GET", "/batch/my-api", 400),
    ]
    assert all(r.ms >= 0 for r in lines)  # type: ignore[attr-defined]
    assert "s3cr3t-value" not in caplog.text


async def test_apis_are_deployed_listed_and_read_under_v1(client: TestClient[Any, Any], scheduler: FakeJobs) -> None:
    definition = {
        "name": "my-api",
        "kind": "BatchAPI",
        "pod": {
            "port": 9000,
            "containers": [
                {
                    "name": "api",
                    "command": ["python", "worker.py"],
                    "env": {"MODE": "fast"},
                    "readiness_probe": {"http_get": {"path": "/healthz"}},
                }
            ],
        },
        "compute": {"cpu": "2", "mem": "4Gi", "gpu": 1},
        "node_groups": ["gpu-spot"],
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    response = await client.post("/v1/apis", json={"apis": [definition], "working_dir": "/srv/apis"})
    assert response.status == 200
    [request] = scheduler.calls("DeployApi")
    assert (request.api.name, request.api.port, request.api.working_dir) == ("my-api", 9000, "/srv/apis")
    assert request.api.readiness_path == "/healthz"
    deployed = {
        "name": "my-api",
        "kind": "BatchAPI",
        "endpoint": f"http://127.0.0.1:{client.port}/my-api",
        "pod": {
            "port": 9000,
            "containers": [
                {"name": "api", "image": "", "command": ["python", "worker.py"], "args": [], "env": {"MODE": "fast"}}
            ],
        },
        "working_dir": "/srv/apis",
        "readiness_path": "/healthz",
        "updated_time": "2023-11-14T22:23:20Z",
        "api_id": API_ID,
        "compute": {"cpu": "2", "mem": "4Gi", "gpu": 1},
        "node_groups": ["gpu-spot"],
        "node_selector": {},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "value": "", "effect": "NoSchedule"}],
    }
    assert await response.json() == {"apis": [deployed]}
    assert await (await client.get("/v1/apis")).json() == {"apis": [deployed]}
    assert await (await client.get("/v1/apis/my-api")).json() == deployed
    await assert_error(await client.get("/v1/apis/other"), 404, "not_found", "other is not deployed")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "apis: required"),
        ({"apis": [{"name": "Bad Name", "pod": {"containers": []}}]}, "name"),
        ({"apis": [{"name": "a", "pod": {"containers": [{"command": ["x"]}]}}], "working_dir": "rel"}, "working_dir"),
        ([], "request body: must be an object"),
    ],
)
async def test_a_bad_api_definition_deploys_nothing(
    client: TestClient[Any, Any], scheduler: FakeJobs, body: Any, message: str
) -> None:
    await assert_error(await client.post("/v1/apis", json=body), 400, "invalid", message)
    assert scheduler.calls("DeployApi") == []


async def test_jobs_are_listed_read_and_stopped_under_v1(client: TestClient[Any, Any], scheduler: FakeJobs) -> None:
    newer, older, other = running_job("6000aaaa"), running_job("7000aaaa"), running_job("5000aaaa", "other-api")
    for job in (newer, older, other):
        scheduler.jobs[job.job_id] = job
    listed = await (await client.get("/v1/jobs?api=my-api&limit=5")).json()
    assert [j["job_status"]["job_id"] for j in listed["jobs"]] == ["6000aaaa", "7000aaaa"]
    assert listed["jobs"][0]["endpoint"] == f"http://127.0.0.1:{client.port}/my-api?jobID=6000aaaa"
    [query] = scheduler.calls("ListJobs")
    assert (query.api_name, query.limit) == ("my-api", 5)
    everything = await (await client.get("/v1/jobs")).json()
    assert len(everything["jobs"]) == 3
    one = await (await client.get("/v1/jobs/5000aaaa")).json()
    assert one["job_status"]["api_name"] == "other-api" and "metrics" in one
    stopped = await (await client.delete("/v1/jobs/5000aaaa")).json()
    assert stopped["job_status"]["status"] == "stopped" and stopped["job_status"]["end_time"] == "2023-11-14T22:23:20Z"
    await assert_error(await client.get("/v1/jobs/nope"), 404, "not_found")
    await assert_error(await client.get("/v1/jobs?limit=-1"), 400, "invalid", "limit")


# --- the process ---


async def test_the_gateway_process_serves_its_address_and_stops_on_sigterm(scheduler: FakeJobs, tmp_path: Path) -> None:
    write_test_secret(Config(data_dir=tmp_path))
    env = os.environ | {
        "THRESHER_DATA_DIR": str(tmp_path),
        "THRESHER_ADDRESSES_GATEWAY": "127.0.0.1:0",
        "THRESHER_ADDRESSES_SCHEDULER": scheduler.address,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.gateway", cwd=REPO, env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        port = await asyncio.wait_for(_listening_port(proc), timeout=20)
        scheduler.apis["my-api"] = jobs_pb2.ApiSpec(name="my-api", port=8080)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
            async with session.get(f"http://127.0.0.1:{port}/v1/apis") as response:
                assert [api["name"] for api in (await response.json())["apis"]] == ["my-api"]
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=20)
        assert proc.returncode == 0, stderr.decode()
        assert "gateway stopping" in stderr.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _listening_port(proc: asyncio.subprocess.Process) -> int:
    assert proc.stderr is not None
    while line := await proc.stderr.readline():
        message = json.loads(line)["message"]
        if message.startswith("gateway listening on "):
            return int(message.rsplit(":", 1)[1])
    raise AssertionError("the gateway exited before listening")
