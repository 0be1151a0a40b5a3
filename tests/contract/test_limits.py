"""Limits: each over-large or over-many request gets its status and creates nothing; slow or bloated HTTP is cut off.

The real scheduler and gateway on loopback (the gateway as its own process for the connection-level limits).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

import aiohttp
import pytest

from tests.contract.test_auth import SUBMISSION, Stack, running_stack
from tests.contract.test_gateway import REPO, _listening_port
from thresher.core import auth
from thresher.core.config import Config

pytestmark = pytest.mark.timeout(60)

READ_TIMEOUT_S = 1.0


def small_limits(config: Config) -> None:
    config.gateway.max_body_bytes = 1024 * 1024
    config.limits.max_workers = 3
    config.limits.max_batch_size = 5
    config.limits.max_jobs_in_progress_per_api = 2
    config.limits.max_workers_in_progress = 4


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path, small_limits) as stack:
        yield stack


def submission(**changes: object) -> dict[str, object]:
    return SUBMISSION | changes


async def test_each_limit_gets_its_status_and_a_clear_message_and_nothing_is_created(stack: Stack) -> None:
    cases = [
        (b"[" + b" " * 1024 * 1024 + b"]", 413, "too_large", "larger than 1048576 bytes"),
        (
            submission(item_list={"items": ["x" * 300_000], "batch_size": 1}),
            400,
            "batchapi.item_size_exceeds_limit",
            "item 0 has size 300002",
        ),
        (submission(workers=4), 400, "invalid", "workers: must be at most 3 (got 4)"),
        (submission(item_list={"items": [1], "batch_size": 6}), 400, "invalid", "batch_size: must be at most 5"),
        (
            submission(item_list=None, file_path_lister={"s3_paths": ["/data"], "batch_size": 6}),
            400,
            "invalid",
            "file_path_lister: batch_size: must be at most 5 (got 6)",
        ),
    ]
    for body, status, kind, message in cases:
        answer = await stack.call("admin", "POST", "/batch/sum", body)
        assert answer[0] == status and answer[1]["kind"] == kind and message in answer[1]["message"], answer

    assert (await stack.call("admin", "GET", "/v1/jobs"))[1] == {"jobs": []}
    assert not (Path(stack.harness.config.data_dir) / "jobs").exists(), "no worker was started"


async def test_jobs_in_progress_per_api_are_capped_with_429_until_one_ends(stack: Stack) -> None:
    # Given as many jobs in progress as the API may have
    first, _ = await stack.submit("alice"), await stack.submit("bob")

    # When one more is submitted, it is refused and not created
    status, error = await stack.call("alice", "POST", "/batch/sum", SUBMISSION)
    assert (status, error["kind"]) == (429, "limit_exceeded")
    assert error["message"].startswith("sum has 2 jobs in progress, the most allowed")
    assert len((await stack.call("admin", "GET", "/v1/jobs"))[1]["jobs"]) == 2

    # Then once one has ended there is room again
    assert (await stack.call("alice", "DELETE", f"/v1/jobs/{first}"))[0] == 200
    assert (await stack.call("alice", "POST", "/batch/sum", SUBMISSION))[0] == 200


async def test_workers_in_progress_are_capped_in_all_with_429(stack: Stack) -> None:
    # Given a job with 3 of the 4 workers that may be in progress
    assert (await stack.call("alice", "POST", "/batch/sum", submission(workers=3)))[0] == 200

    # When another asks for 2, it is refused and not created; one that asks for 1 fits
    status, error = await stack.call("bob", "POST", "/batch/sum", submission(workers=2))
    assert (status, error["kind"]) == (429, "limit_exceeded"), error
    assert "have 3 workers and this one asks for 2: at most 4 in all" in error["message"]
    assert "(limits.max_workers_in_progress)" in error["message"]
    assert len((await stack.call("admin", "GET", "/v1/jobs"))[1]["jobs"]) == 1
    assert (await stack.call("bob", "POST", "/batch/sum", submission(workers=1)))[0] == 200


class Gateway(NamedTuple):
    host: str
    port: int
    metrics_port: int
    log: asyncio.StreamReader  # its stderr: one JSON line per record


@pytest.fixture
async def gateway(stack: Stack) -> AsyncIterator[Gateway]:
    """The gateway as a process (its real server limits), in front of the stack's scheduler; `/metrics` apart."""
    env = os.environ | {
        "THRESHER_DATA_DIR": str(stack.harness.config.data_dir),  # the stack secret is there
        "THRESHER_ADDRESSES_GATEWAY": "127.0.0.1:0",
        "THRESHER_ADDRESSES_GATEWAY_METRICS": "127.0.0.1:0",
        "THRESHER_ADDRESSES_SCHEDULER": stack.harness.config.addresses.scheduler,
        "THRESHER_GATEWAY_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.gateway", cwd=REPO, env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        port = await asyncio.wait_for(_listening_port(proc), timeout=20)
        assert proc.stderr is not None
        metrics = json.loads(await asyncio.wait_for(proc.stderr.readline(), timeout=20))["message"]
        assert metrics.startswith("gateway /metrics on port "), metrics
        yield Gateway("127.0.0.1", port, int(metrics.rsplit(" ", 1)[1]), proc.stderr)
    finally:
        proc.kill()
        await proc.wait()


async def test_metrics_can_have_a_port_of_their_own_and_stay_open(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{gateway.host}:{gateway.metrics_port}/metrics") as response:
            assert response.status == 200 and "thresher_http_requests_total" in await response.text()
        async with session.get(f"http://{gateway.host}:{gateway.port}/metrics") as response:
            assert (response.status, (await response.json())["kind"]) == (404, "not_found")
        async with session.get(f"http://{gateway.host}:{gateway.port}/openapi.json") as response:
            assert "/metrics" not in (await response.json())["paths"]


async def exchange(gateway: Gateway, data: bytes, wait_s: float = 10.0) -> tuple[bytes, float]:
    """Send `data` on a new connection; return the server's first answer (b"": it closed it) and when it came."""
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
    started = time.monotonic()
    writer.write(data)
    try:
        answer = await asyncio.wait_for(reader.read(65536), timeout=wait_s)
    finally:
        writer.close()
    return answer, time.monotonic() - started


async def test_a_client_that_never_finishes_its_headers_is_cut_off_after_the_read_timeout(
    gateway: Gateway,
) -> None:
    answer, closed_after_s = await exchange(gateway, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert answer == b"" and READ_TIMEOUT_S * 0.5 < closed_after_s < READ_TIMEOUT_S + 6


async def test_a_body_that_does_not_arrive_in_time_gets_408(gateway: Gateway, stack: Stack) -> None:
    headers = f"Authorization: {auth.authorization(stack.keys['admin'])}\r\nContent-Length: 1000\r\n"
    answer, _ = await exchange(gateway, f"POST /batch/sum HTTP/1.1\r\nHost: x\r\n{headers}\r\n{{".encode())
    assert answer.startswith(b"HTTP/1.1 408 ") and b'"kind": "timeout"' in answer, answer


CHUNKED = "Transfer-Encoding: chunked"


def assert_json_refusal(answer: bytes, says: str) -> None:
    """A 400 in the gateway's JSON shape, as every error it makes."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *headers = head.decode().split("\r\n")
    assert status_line.endswith(" 400 Bad Request"), answer[:300]
    assert "Content-Type: application/json; charset=utf-8" in headers, headers
    error = json.loads(body)
    assert error["kind"] == "invalid" and says in error["message"], error


@pytest.mark.parametrize(
    ("request_text", "says"),
    [
        (f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 9000}\r\n\r\n", "over 8190 bytes"),
        ("GET /healthz HTTP/1.1\r\nHost: x\r\n" + "".join(f"X-Many-{i}: 1\r\n" for i in range(150)) + "\r\n", "100"),
        (f"GET /{'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n", "over 8190 bytes"),
        ("GET /healthz HTTP/9\r\nHost: x\r\n\r\n", "not valid HTTP/1.1"),
        ("G<T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "not a valid HTTP method"),
        (f"POST /batch/sum HTTP/1.1\r\nHost: x\r\n{CHUNKED}\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n", "a chunk of its body"),
    ],
    ids=["a header over 8 KiB", "150 headers", "a URL over 8 KiB", "a bad request line", "a bad method", "a bad chunk"],
)
async def test_requests_aiohttp_refuses_get_a_json_400_saying_why(
    gateway: Gateway, request_text: str, says: str
) -> None:
    answer, _ = await exchange(gateway, request_text.encode())
    assert_json_refusal(answer, says)


@pytest.mark.parametrize(
    "request_text",
    [
        "GET /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\x01\r\n\r\n",
        "GET /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}{padding}\r\n\r\n",
        "GET /v1/jobs?{key}\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["a control character after the key", "an Authorization header over 8 KiB", "a key in a bad request line"],
)
async def test_a_request_that_cannot_be_parsed_is_logged_without_its_text(
    gateway: Gateway, stack: Stack, request_text: str
) -> None:
    # Given a request that aiohttp's parser refuses, quoting the line that holds an API key in its error
    key = stack.keys["admin"]
    answer, _ = await exchange(gateway, request_text.format(key=key, padding="a" * 9000).encode())
    assert_json_refusal(answer, "")
    assert key.encode() not in answer

    # When the gateway has logged it (a request after it is logged after it)
    await exchange(gateway, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    lines = []
    while not lines or '"GET /healthz 200' not in lines[-1]:
        lines.append((await asyncio.wait_for(gateway.log.readline(), timeout=10)).decode())

    # Then the refusal is logged, without the key
    assert any("Error handling request" in line for line in lines), lines
    assert not [line for line in lines if auth.KEY_PATTERN.search(line)]
