"""What a Cortex client sees of the gateway (CORTEX-REFERENCE.md 2): its error kinds, its endpoint `/<api>`, its
dry-run text, items kept as written, open job routes by choice, CORS. The real gateway in front of the real
scheduler (its peers small fakes), S3 on moto's server, all on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.contract.test_auth import SUBMISSION, Stack, running_stack
from tests.contract.test_object_store import s3_settings, s3_tree
from tests.helpers import assert_eventually
from thresher.core import auth
from thresher.core.apis import NAME_PATTERN, RESERVED_NAMES
from thresher.core.config import Config
from thresher.core.sources import SCHEMA_HINT

pytestmark = pytest.mark.timeout(60)

CORTEX_ROUTES = ["/batch/sum", "/sum"]  # the operator's path, and the API's endpoint as `cortex get` printed it


@pytest.fixture
async def stack(tmp_path: Path, aws_endpoint: str) -> AsyncIterator[Stack]:
    s3_tree(aws_endpoint, "empty")

    def on_moto(config: Config) -> None:
        config.inputs = s3_settings(aws_endpoint)

    async with running_stack(tmp_path, on_moto) as stack:
        yield stack


def lister(*paths: str) -> dict[str, Any]:
    return {"workers": 1, "file_path_lister": {"s3_paths": list(paths), "batch_size": 1}}


ITEMS = {"items": [1], "batch_size": 1}
# A submission Cortex refused, its kind and message (each message is the whole of it, or its start before the hint)
REFUSED: dict[str, tuple[dict[str, Any], str, str]] = {
    "no source": (
        {"workers": 1},
        "job.specify_exactly_one_key",
        "specify exactly one of the following keys: item_list, file_path_lister, or delimited_files" + SCHEMA_HINT,
    ),
    "two sources": (
        {"workers": 1, "item_list": ITEMS, "delimited_files": lister("s3://empty/")["file_path_lister"]},
        "job.conflicting_fields",
        "please specify either the item_list or delimited_files field (but not more than one at the same time)"
        + SCHEMA_HINT,
    ),
    "no items": (
        {"workers": 1, "item_list": {"items": [], "batch_size": 1}},
        "configreader.too_few_elements",
        "item_list: items: must contain at least 1 elements" + SCHEMA_HINT,
    ),
    "no S3 paths": (lister(), "configreader.too_few_elements", "file_path_lister: s3_paths: must contain at least 1"),
    "an item too large": (
        {"workers": 1, "item_list": {"items": [1, "x" * 256_000], "batch_size": 1}},
        "batchapi.item_size_exceeds_limit",
        "item 1 has size 256002 bytes which exceeds the limit (256000 bytes)" + SCHEMA_HINT,
    ),
    "workers 0": (
        {"workers": 0, "item_list": ITEMS},
        "configreader.must_be_greater_than_or_equal_to",
        "workers: must be greater than or equal to 1 (got 0)" + SCHEMA_HINT,
    ),
    "a type Cortex's decoder refused": ({"workers": "2"}, "invalid", "workers: must be an integer" + SCHEMA_HINT),
    "an S3 path without a bucket": (
        lister("s3:///in/"),
        "aws.invalid_s3_path",
        "file_path_lister: s3_paths: s3:///in/",
    ),
    "an http path": (lister("http://example.com/in/"), "aws.invalid_s3_path", "file_path_lister: s3_paths: http://"),
    "no file matching": (
        lister("s3://empty/in/"),
        "batchapi.no_s3_files_found",
        "file_path_lister: no s3 files match search criteria",
    ),
}


@pytest.mark.parametrize("route", CORTEX_ROUTES)
@pytest.mark.parametrize("case", list(REFUSED))
async def test_each_refusal_has_cortexs_kind_and_message_on_every_route(stack: Stack, case: str, route: str) -> None:
    body, kind, message = REFUSED[case]
    status, error = await stack.call("admin", "POST", route, body)
    assert (status, error["kind"]) == (400, kind), error
    assert error["message"].startswith(message), error
    # The hint ends schema errors only, as in Cortex: not those of a file source's paths
    assert error["message"].endswith(SCHEMA_HINT) == message.endswith(SCHEMA_HINT), error
    assert (await stack.call("admin", "GET", "/v1/jobs"))[1] == {"jobs": []}, "nothing was created"


@pytest.mark.parametrize("route", CORTEX_ROUTES)
async def test_unknown_apis_jobs_and_a_missing_job_id_have_cortexs_kinds(stack: Stack, route: str) -> None:
    status, error = await stack.call("admin", "POST", route.replace("sum", "nope"), SUBMISSION)
    assert (status, error) == (404, {"kind": "resources.api_not_deployed", "message": "nope is not deployed"})
    for method in ("GET", "DELETE"):
        status, error = await stack.call("admin", method, f"{route}?jobID=0123")
        assert (status, error["kind"]) == (404, "job.not_found"), error
        status, error = await stack.call("admin", method, route)
        assert (status, error) == (
            400,
            {"kind": "endpoints.query_param_required", "message": "query param required: jobID"},
        )


async def test_a_job_is_submitted_read_and_stopped_at_the_apis_own_endpoint(stack: Stack) -> None:
    status, job = await stack.call("alice", "POST", "/sum", SUBMISSION)
    assert status == 200, job
    status, read = await stack.call("alice", "GET", f"/sum?jobID={job['job_id']}")
    assert status == 200 and read["job_status"]["job_id"] == job["job_id"], read
    status, stopped = await stack.call("alice", "DELETE", f"/sum?jobID={job['job_id']}")
    assert (status, stopped) == (200, {"message": f"stopped job {job['job_id']}"})
    # The API's endpoint is the one Cortex printed, and the gateway's own routes still answer theirs
    origin = f"http://127.0.0.1:{stack.client.port}"
    assert (await stack.call("admin", "GET", "/v1/apis/sum"))[1]["endpoint"] == f"{origin}/sum"
    assert read["endpoint"] == f"{origin}/sum?jobID={job['job_id']}"
    assert await stack.call("none", "GET", "/healthz") == (200, {"status": "ok"})
    assert (await stack.call("none", "GET", "/metrics"))[0] == 200
    assert (await stack.call("none", "GET", "/openapi.json"))[1]["openapi"].startswith("3.1")


@pytest.mark.parametrize("name", ["batch", "v1", "ui", "metrics", "healthz"])
async def test_an_api_named_as_a_gateway_route_is_refused_at_deploy(stack: Stack, tmp_path: Path, name: str) -> None:
    api = {"name": name, "kind": "BatchAPI", "pod": {"containers": [{"name": "api", "command": ["true"]}]}}
    status, error = await stack.call("admin", "POST", "/v1/apis", {"apis": [api], "working_dir": str(tmp_path)})
    assert (status, error["kind"]) == (400, "invalid"), error
    assert f"name: '{name}' is taken by the gateway's own routes" in error["message"]
    assert [a["name"] for a in (await stack.call("admin", "GET", "/v1/apis"))[1]["apis"]] == ["sum"]


async def test_every_gateway_route_is_reserved_as_an_api_name(stack: Stack) -> None:
    app = stack.client.server.app
    firsts = {r.canonical.split("/")[1] for r in app.router.resources()} - {"{api}"}
    assert {first for first in firsts if NAME_PATTERN.fullmatch(first)} <= set(RESERVED_NAMES)
    # and a reserved name without its route (the console's, /metrics on a port of its own) is no job route either
    for name in set(RESERVED_NAMES) - firsts:
        status, error = await stack.call("admin", "GET", f"/{name}?jobID=0123")
        assert (status, error["kind"]) == (404, "not_found"), error


@pytest.mark.parametrize("route", CORTEX_ROUTES)
async def test_a_dry_run_answers_cortexs_text(stack: Stack, route: str) -> None:
    status, text = await stack.call("admin", "POST", f"{route}?dryRun=true", SUBMISSION)
    assert (status, text) == (200, "validations passed")  # no newline, as Cortex
    s3_tree(str(stack.harness.config.inputs.s3_endpoint_url), "data").put("in/a.json", b"1")
    status, text = await stack.call("admin", "POST", f"{route}?dryRun=true", lister("s3://data/in/"))
    assert (status, text) == (200, "s3://data/in/a.json\nvalidations passed")
    # A submission that fails a check: 400, its message between newlines, as plain text
    status, text = await stack.call("admin", "POST", f"{route}?dryRun=true", lister("s3://empty/in/"))
    assert (status, text) == (400, "\nfile_path_lister: no s3 files match search criteria\n")
    status, text = await stack.call("admin", "POST", f"{route}?dryRun=true", {"workers": 0, "item_list": ITEMS})
    assert (status, text) == (400, "\nworkers: must be greater than or equal to 1 (got 0)" + SCHEMA_HINT + "\n")
    assert (await stack.call("admin", "GET", "/v1/jobs"))[1] == {"jobs": []}, "nothing was created"


async def test_items_reach_the_enqueuer_as_written(stack: Stack) -> None:
    body = b'{"workers": 1, "item_list": {"items": [3.50, {"price": 1.10, "name": "caf\\u00e9"}], "batch_size": 1}}'
    status, job = await stack.call("admin", "POST", "/sum", body)
    assert status == 200, job
    assert await enqueued_items(stack) == [b"3.50", b'{"price":1.10,"name":"caf\\u00e9"}']


async def enqueued_items(stack: Stack) -> list[bytes]:
    """The items of the one job the scheduler has asked the enqueuer to enqueue (it does so on its own time)."""

    async def enqueued() -> list[bytes]:
        requests = stack.harness.enqueuer.requests
        assert len(requests) == 1
        return list(requests[0].submission.item_list.items)

    return await assert_eventually(enqueued, timeout_s=10)


async def test_the_cli_submits_a_job_file_as_written(stack: Stack, tmp_path: Path) -> None:
    job_file = tmp_path / "job.json"
    job_file.write_bytes(b'{"workers": 1, "item_list": {"items": [3.50, 1e2], "batch_size": 1}}')
    env = {**os.environ, "THRESHER_API_KEY": stack.keys["admin"]}
    url = f"http://127.0.0.1:{stack.client.port}"
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "thresher.tools.cli", "--url", url, "submit", "sum", str(job_file), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(cli.communicate(), timeout=30)
    finally:
        if cli.returncode is None:
            cli.kill()
            await cli.wait()
    assert cli.returncode == 0 and b"submitted job" in out, err
    assert await enqueued_items(stack) == [b"3.50", b"1e2"]


# --- open routes by choice ---


@pytest.fixture
async def open_stack(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Stack]:
    """Cortex's job routes open with a `submit` key of their own, named `cortex`, for a trusted network."""

    def open_routes(config: Config) -> None:
        key, key_file = auth.generate_key(), tmp_path / "open_routes_key"
        auth.add_key(Path(config.auth.keys_file), "cortex", [auth.SUBMIT], key)
        key_file.write_text(key + "\n")
        config.gateway.open_routes_key_file = str(key_file)

    with caplog.at_level(logging.WARNING, logger="services.gateway"):
        async with running_stack(tmp_path, open_routes) as stack:
            yield stack


async def test_open_routes_take_cortex_job_requests_without_a_key_and_nothing_else(
    open_stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    # The gateway said at start that the routes are open, without the key
    [warning] = [r for r in caplog.get_records("setup") if "open_routes_key_file" in r.getMessage()]
    key = (Path(open_stack.harness.config.gateway.open_routes_key_file)).read_text().strip()
    assert warning.levelno == logging.WARNING and key not in warning.getMessage()
    # Cortex's job routes take requests without a key, which act with the configured one (as its owner)
    for route in CORTEX_ROUTES:
        status, job = await open_stack.call("none", "POST", route, SUBMISSION)
        assert status == 200, job
        status, read = await open_stack.call("none", "GET", f"{route}?jobID={job['job_id']}")
        assert (status, read["job_status"]["owner"]) == (200, "cortex"), read
        assert (await open_stack.call("none", "DELETE", f"{route}?jobID={job['job_id']}"))[0] == 200
    # A wrong key is still refused, and a caller's own key still counts
    assert (await open_stack.call("wrong", "POST", "/sum", SUBMISSION))[0] == 401
    status, job = await open_stack.call("bob", "POST", "/sum", SUBMISSION)
    assert (await open_stack.call("bob", "GET", f"/sum?jobID={job['job_id']}"))[1]["job_status"]["owner"] == "bob"
    # Every other route still needs a key
    for method, path in [("GET", "/v1/jobs"), ("GET", f"/v1/jobs/{job['job_id']}"), ("GET", "/v1/apis")]:
        assert (await open_stack.call("none", method, path))[0] == 401, path
    api = {"name": "other", "pod": {"containers": [{"name": "api", "command": ["true"]}]}}
    assert (await open_stack.call("none", "POST", "/v1/apis", {"apis": [api]}))[0] == 401


# --- CORS ---


@pytest.fixture
async def cors_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    def cors(config: Config) -> None:
        config.gateway.cors_origins = "https://app.example, http://127.0.0.1:3000/"

    async with running_stack(tmp_path, cors) as stack:
        yield stack


async def preflight(stack: Stack, origin: str, path: str = "/sum") -> Any:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    return await stack.client.options(path, headers=headers)


async def test_cors_answers_the_allowed_origins_only(cors_stack: Stack) -> None:
    for origin in ("https://app.example", "http://127.0.0.1:3000"):
        response = await preflight(cors_stack, origin)
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == origin
        assert {"POST", "GET", "DELETE"} <= set(
            response.headers["Access-Control-Allow-Methods"].replace(" ", "").split(",")
        )
        assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    # Answers to an allowed origin say so, errors too (a page can read why it was refused)
    response = await cors_stack.client.post(
        "/sum", data=json.dumps(SUBMISSION), headers={"Origin": "https://app.example"}
    )
    assert (response.status, response.headers["Access-Control-Allow-Origin"]) == (401, "https://app.example")
    # Another origin gets no preflight answer and no CORS header
    response = await preflight(cors_stack, "https://evil.example")
    assert response.status == 405 and "Access-Control-Allow-Origin" not in response.headers
    response = await cors_stack.client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert response.status == 200 and "Access-Control-Allow-Origin" not in response.headers


async def test_cors_is_off_by_default(stack: Stack) -> None:
    response = await preflight(stack, "https://app.example")
    assert response.status == 405 and "Access-Control-Allow-Origin" not in response.headers
