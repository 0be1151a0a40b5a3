"""The OpenAPI document matches the routes that exist; the event stream delivers a job's changes to its end."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.gateway import create_app
from tests.helpers import TEST_TRUST, write_test_secret
from thresher.core import rpc
from thresher.core.config import Config
from thresher.core.errors import NotFound
from thresher.v1 import jobs_pb2, jobs_pb2_grpc


class WatchingJobs(jobs_pb2_grpc.JobsServicer):
    """A scheduler without API keys whose job goes running -> succeeded while watched."""

    async def Authorize(self, request: jobs_pb2.AuthorizeRequest, context: Any) -> jobs_pb2.Caller:
        return jobs_pb2.Caller(scopes=["admin"])

    async def WatchJob(self, request: jobs_pb2.JobRef, context: Any) -> AsyncIterator[jobs_pb2.Job]:
        if request.job_id != "j1":
            raise NotFound(f"unable to find job {request.job_id}")
        for status in (jobs_pb2.JOB_STATUS_RUNNING, jobs_pb2.JOB_STATUS_SUCCEEDED):
            yield jobs_pb2.Job(job_id="j1", api_name="sum", workers=1, status=status)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    registration = (jobs_pb2_grpc.add_JobsServicer_to_server, WatchingJobs(), "thresher.v1.Jobs")
    server, port = await rpc.start_server("127.0.0.1:0", [registration], TEST_TRUST)
    config = Config(data_dir=tmp_path)
    write_test_secret(config)
    config.addresses.scheduler = f"127.0.0.1:{port}"
    async with TestClient(TestServer(create_app(config), host="127.0.0.1")) as client:
        yield client
    await server.stop(0)


async def test_the_openapi_document_describes_exactly_the_routes_that_exist(client: TestClient[Any, Any]) -> None:
    document = await (await client.get("/openapi.json")).json()
    described = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    routes = {
        (r.resource.canonical, r.method)
        for r in client.app.router.routes()
        if r.method not in ("HEAD", "*") and r.resource is not None
    }
    assert described == routes
    for ops in document["paths"].values():
        for op in ops.values():
            assert "200" in op["responses"] and op["summary"]


async def test_the_event_stream_delivers_each_change_and_ends_with_the_final_status(
    client: TestClient[Any, Any],
) -> None:
    response = await client.get("/v1/jobs/j1/events")
    assert response.status == 200 and response.content_type == "text/event-stream"
    text = await response.text()
    events = [block for block in text.strip().split("\n\n") if block]
    statuses = [json.loads(e.split("data: ", 1)[1])["job_status"]["status"] for e in events]
    assert statuses == ["running", "succeeded"]
    assert all(e.startswith("event: status\n") for e in events)


async def test_the_event_stream_of_an_unknown_job_is_a_json_404(client: TestClient[Any, Any]) -> None:
    response = await client.get("/v1/jobs/nope/events")
    assert response.status == 404
    assert (await response.json())["kind"] == "not_found"
