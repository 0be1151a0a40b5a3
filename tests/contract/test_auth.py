"""API keys end to end: the real gateway in front of the real scheduler (its peers small fakes), all on loopback."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.gateway import create_app
from services.scheduler.server import create_server
from tests.contract.test_scheduler import IDLE_WORKER, Harness
from thresher.core import auth, rpc, trust
from thresher.core.config import Config
from thresher.core.logs import JsonFormatter
from thresher.core.names import GRPC_TOKEN_KEY
from thresher.v1 import jobs_pb2, jobs_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc

pytestmark = pytest.mark.timeout(60)

KEYS = {"alice": ["submit"], "bob": ["submit"], "reader": ["read"], "admin": ["admin"]}
NO_KEY = {"none": None, "wrong": f"Bearer {auth.generate_key()}", "malformed": "Basic YWxpY2U6c2VjcmV0"}
SUBMISSION = {"workers": 1, "item_list": {"items": [1, 2], "batch_size": 1}}
API = {"name": "sum", "kind": "BatchAPI", "pod": {"containers": [{"name": "api", "command": IDLE_WORKER}]}}


class Stack:
    """The scheduler (with its keys file) and the gateway; `call` sends a request as one of KEYS or NO_KEY."""

    def __init__(self, harness: Harness, client: TestClient[Any, Any], keys: dict[str, str]) -> None:
        self.harness = harness
        self.client = client
        self.keys = keys

    async def call(self, who: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        value = NO_KEY[who] if who in NO_KEY else auth.authorization(self.keys[who])
        headers = {} if value is None else {"Authorization": value}
        data = io.BytesIO(body) if isinstance(body, bytes) else None if body is None else json.dumps(body)
        response = await self.client.request(method, path, data=data, headers=headers)
        text = await response.text()
        return response.status, json.loads(text) if response.content_type == "application/json" else text

    async def submit(self, who: str) -> str:
        status, job = await self.call(who, "POST", "/batch/sum", SUBMISSION)
        assert status == 200, job
        return str(job["job_id"])

    def metadata(self, who: str) -> tuple[tuple[str, str], ...]:
        """The key of `who` as the gateway sends it: beside the gateway's own token."""
        gateway = (GRPC_TOKEN_KEY, self.harness.trust.token(trust.GATEWAY))
        return (gateway,) if who == "none" else (gateway, ("authorization", auth.authorization(self.keys[who])))


@contextlib.asynccontextmanager
async def running_stack(tmp_path: Path, config: Callable[[Config], None] = lambda c: None) -> AsyncIterator[Stack]:
    """The scheduler, its keys file holding KEYS, and the gateway, with `config` applied; the API `sum` deployed."""
    keys = {name: auth.generate_key() for name in KEYS}
    h = Harness(tmp_path / "data")
    h.config.auth.keys_file = str(tmp_path / "api_keys")
    for name, scopes in KEYS.items():
        auth.add_key(Path(h.config.auth.keys_file), name, scopes, keys[name])
    config(h.config)
    await h.start_peers()
    h.scheduler, port, h.manager = await create_server(h.config, "127.0.0.1:0")
    h.config.addresses.scheduler = f"127.0.0.1:{port}"
    h.channel = rpc.channel(h.config.addresses.scheduler)
    try:
        async with TestClient(TestServer(create_app(h.config), host="127.0.0.1")) as client:
            stack = Stack(h, client, keys)
            deploy = {"apis": [API], "working_dir": str(tmp_path)}
            assert (await stack.call("admin", "POST", "/v1/apis", deploy))[0] == 200
            yield stack
    finally:
        await h.stop_scheduler()
        for server in h.servers:
            await server.stop(0)
        await h.enqueuer.queues.close()


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path) as stack:
        yield stack


# Each route, the keys that may call it (on alice's job, which has ended), and the status they then get.
ROUTES: list[tuple[str, str, Any, set[str], int]] = [
    ("POST", "/batch/sum?dryRun=true", SUBMISSION, {"alice", "bob", "admin"}, 200),
    ("POST", "/batch/sum", b"{not json", {"alice", "bob", "admin"}, 400),
    (
        "POST",
        "/v1/apis/sum/jobs?dryRun=true",
        b'{"workers":1,"item_list":{"batch_size":1}}\n1\n',
        {"alice", "bob", "admin"},
        200,
    ),
    ("GET", "/batch/sum?jobID={job}", None, {"alice", "reader", "admin"}, 200),
    ("DELETE", "/batch/sum?jobID={job}", None, {"alice", "admin"}, 409),
    ("GET", "/v1/apis", None, {"reader", "admin"}, 200),
    ("GET", "/v1/apis/sum", None, {"reader", "admin"}, 200),
    ("POST", "/v1/apis", {"apis": [API], "working_dir": "/srv"}, {"admin"}, 200),
    ("GET", "/v1/jobs", None, {"alice", "bob", "reader", "admin"}, 200),
    ("GET", "/v1/jobs?limit=x", None, {"alice", "bob", "reader", "admin"}, 400),
    ("GET", "/v1/jobs/{job}", None, {"alice", "reader", "admin"}, 200),
    ("DELETE", "/v1/jobs/{job}", None, {"alice", "admin"}, 409),
    ("GET", "/v1/jobs/{job}/failed", None, {"alice", "reader", "admin"}, 200),
    ("POST", "/v1/jobs/{job}/retry", None, {"alice", "admin"}, 400),
    ("GET", "/v1/jobs/{job}/events", None, {"alice", "reader", "admin"}, 200),
    ("GET", "/v1/jobs/{job}/logs", None, {"alice", "reader", "admin"}, 200),
    ("GET", "/v1/jobs/{job}/results", None, {"alice", "reader", "admin"}, 200),
    ("GET", "/v1/jobs/{job}/results?after=x", None, {"alice", "reader", "admin"}, 400),
    ("DELETE", "/v1/jobs/{job}/results", None, {"alice", "admin"}, 200),
]
OPEN_ROUTES = ["/healthz", "/openapi.json", "/metrics"]


async def test_every_route_answers_401_without_a_valid_key_and_403_without_the_scope_or_to_another_keys_job(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Given a job of alice's that has ended
    job = await stack.submit("alice")
    assert (await stack.call("admin", "DELETE", f"/v1/jobs/{job}"))[0] == 200

    # When each route is called with no key, a wrong one, a malformed one, and each key
    expected, actual = {}, {}
    for method, path, body, allowed, ok in ROUTES:
        path = path.format(job=job)
        for who in [*NO_KEY, *KEYS]:
            expected[method, path, who] = ok if who in allowed else 401 if who in NO_KEY else 403
            status, answer = await stack.call(who, method, path, body)
            actual[method, path, who] = status
            if status in (401, 403):
                assert answer["kind"] == ("unauthenticated" if status == 401 else "forbidden"), answer

    # Then each gets what its key allows, and nothing more
    assert {k: v for k, v in actual.items() if v != expected[k]} == {}
    for path in OPEN_ROUTES:
        assert (await stack.call("none", "GET", path))[0] == 200, path
    # And no key appeared in any log record, whatever its level
    leaks = [r for r in caplog.records if auth.KEY_PATTERN.search(JsonFormatter().format(r))]
    assert leaks == []


async def test_jobs_record_their_owner_a_submit_key_lists_and_stops_only_its_own_and_admin_stops_any(
    stack: Stack,
) -> None:
    # Given a job each for alice and bob
    alices, bobs = await stack.submit("alice"), await stack.submit("bob")

    # Then each is its submitter's, alice lists only hers, and a read key lists both
    status, listed = await stack.call("alice", "GET", "/v1/jobs")
    assert status == 200 and [j["job_status"]["job_id"] for j in listed["jobs"]] == [alices]
    assert listed["jobs"][0]["job_status"]["owner"] == "alice"
    status, listed = await stack.call("reader", "GET", "/v1/jobs")
    assert {j["job_status"]["job_id"]: j["job_status"]["owner"] for j in listed["jobs"]} == {
        alices: "alice",
        bobs: "bob",
    }

    # When bob tries to stop alice's job, alice stops hers and admin stops bob's
    status, error = await stack.call("bob", "DELETE", f"/v1/jobs/{alices}")
    assert (status, error["kind"]) == (403, "forbidden") and "another API key" in error["message"]
    assert (await stack.call("alice", "DELETE", f"/v1/jobs/{alices}"))[1]["job_status"]["status"] == "stopped"
    assert (await stack.call("admin", "DELETE", f"/v1/jobs/{bobs}"))[1]["job_status"]["status"] == "stopped"


async def test_the_jobs_service_takes_the_same_keys_as_call_metadata_and_the_internal_service_the_monitors_token(
    stack: Stack,
) -> None:
    jobs = jobs_pb2_grpc.JobsStub(stack.harness.channel)
    request = jobs_pb2.SubmitJobRequest(
        submission=jobs_pb2.JobSubmission(api_name="sum", workers=1, item_list=jobs_pb2.ItemList(items=[b"1"])),
        dry_run=True,
    )
    request.submission.item_list.batch_size = 1

    codes = {}
    for who in ("none", "reader", "alice"):
        try:
            await jobs.SubmitJob(request, metadata=stack.metadata(who), timeout=10)
            codes[who] = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as e:
            codes[who] = e.code()
    assert codes == {
        "none": grpc.StatusCode.UNAUTHENTICATED,
        "reader": grpc.StatusCode.PERMISSION_DENIED,
        "alice": grpc.StatusCode.OK,
    }
    caller = await jobs.Authorize(jobs_pb2.AuthorizeRequest(method="GetJob"), metadata=stack.metadata("reader"))
    assert (caller.name, list(caller.scopes)) == ("reader", ["read"])

    # The monitor's service is internal: no API key, the monitor's token, and an unknown job is simply not found
    internal = scheduler_pb2_grpc.SchedulerStub(stack.harness.channel)
    monitor = ((GRPC_TOKEN_KEY, stack.harness.trust.token(trust.MONITOR)),)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await internal.JobSettled(scheduler_pb2.JobSettledRequest(job_id="nope"), metadata=monitor, timeout=10)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
