"""Hostile input against a running `thresher up`: schemathesis fuzzes the gateway from its OpenAPI description, and
every gRPC method of every service gets bytes that are no protobuf message at all."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import AWS_ENV
from tests.contract.test_scheduler import IDLE_WORKER
from tests.e2e.conftest import children_of, stopped_after
from thresher.core import auth, trust
from thresher.core.config import Config
from thresher.core.names import GRPC_TOKEN_KEY, HEADER_AUTHORIZATION
from thresher.tools.launcher import StackProcess
from thresher.v1 import enqueuer_pb2, jobs_pb2, monitor_pb2, scheduler_pb2

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

EXAMPLES_PER_OPERATION = 25
# Small limits, so that valid submissions the fuzzer makes start few workers; inputs only from a folder of the test.
SETTINGS = {"limits": {"max_workers": 2, "max_jobs_in_progress_per_api": 2}, "runtime": {"stop_grace_s": 2}}
SERVICES = {  # each gRPC service, and the stack's service that serves it
    jobs_pb2.DESCRIPTOR.services_by_name["Jobs"]: "scheduler",
    scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"]: "scheduler",
    enqueuer_pb2.DESCRIPTOR.services_by_name["Enqueuer"]: "enqueuer",
    monitor_pb2.DESCRIPTOR.services_by_name["Monitor"]: "monitor",
}
# "Schema-valid data is accepted" cannot hold: a valid submission may name files that do not exist or a job that
# has ended, which no OpenAPI description can tell. Every other check of schemathesis runs.
NOT_CHECKED = [positive_data_acceptance]
NOT_PROTOBUF = b"\xff\xff\xff\xff"  # a tag that never ends (every byte says "more follows"): no message parses


@schemathesis.serializer("application/jsonl")
def json_lines(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    """A JSON Lines body (POST /v1/apis/{name}/jobs): a generated string as its text, anything else as JSON."""
    return value.encode() if isinstance(value, str) else json.dumps(value).encode()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, moto_server: str) -> Iterator[StackProcess]:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "inputs").mkdir()
    (root / "inputs" / "a.jsonl").write_text("1\n2\n")
    apis = root / "apis.yaml"
    apis.write_text(
        yaml.safe_dump([{"name": "fuzz", "pod": {"containers": [{"name": "api", "command": IDLE_WORKER}]}}])
    )
    inputs = {"local_roots": str(root / "inputs"), "s3_endpoint_url": moto_server, "s3_region": "us-east-1"}
    (root / "thresher.yaml").write_text(yaml.safe_dump(SETTINGS | {"inputs": inputs}))
    env = AWS_ENV | {"THRESHER_CONFIG": str(root / "thresher.yaml")}
    with stopped_after(StackProcess(root / "data", apis=apis, env=env)) as stack:
        yield stack


def test_no_request_fails_the_gateway_and_every_error_is_documented_json(stack: StackProcess) -> None:
    schema = schemathesis.openapi.from_url(f"{stack.url}/openapi.json")
    headers = {HEADER_AUTHORIZATION: auth.authorization(stack.api_key or "")}
    failures = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        # The deployed API in submissions' paths, so that they get past "not deployed" to every other check.
        submits = "{api}" in operation.path or operation.path == "/v1/apis/{name}/jobs"
        fixed = {"path_parameters": {"api" if "{api}" in operation.path else "name": "fuzz"}} if submits else {}
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if operation.path != "/healthz" else [])
        cases = st.one_of(*(operation.as_strategy(mode, headers=headers, **fixed) for mode in modes))

        @given(case=cases)
        @settings(
            max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def fuzz(case: Any) -> None:
            response = case.call_and_validate(excluded_checks=NOT_CHECKED, timeout=30)
            if response.status_code >= 400:
                error = response.json()
                assert set(error) == {"kind", "message"} and error["message"], error

        try:
            fuzz()
        except Exception as e:  # every operation's failure, not only the first
            failures[operation.label] = e
    assert failures == {}


async def test_bytes_that_are_no_message_get_invalid_argument_from_every_method(stack: StackProcess) -> None:
    endpoints = json.loads((stack.data_dir / "endpoints.json").read_text())
    services = children_of(stack.proc.pid)
    stack_trust = trust.load(Config(data_dir=stack.data_dir))
    codes = {}
    for service, server in SERVICES.items():
        async with grpc.aio.insecure_channel(endpoints[server]["grpc"]) as channel:
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                shape = (
                    "stream" if method.client_streaming else "unary",
                    "stream" if method.server_streaming else "unary",
                )
                call = getattr(channel, "_".join(shape))(path)
                request = iter([NOT_PROTOBUF]) if method.client_streaming else NOT_PROTOBUF
                # Past the token check, with the token of the role that may call the method
                role = next(role for role in trust.ROLE_METHODS if trust.Peer(role).may_call(path))
                token = stack_trust.token(role, "fuzz", "w0") if role == trust.DEQUEUER else stack_trust.token(role)
                try:
                    answer = call(request, timeout=10, metadata=((GRPC_TOKEN_KEY, token),))
                    if method.server_streaming:
                        [_ async for _ in answer]
                    else:
                        await answer
                    codes[path] = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as e:
                    codes[path] = e.code()
    assert {p: c for p, c in codes.items() if c != grpc.StatusCode.INVALID_ARGUMENT} == {}
    assert children_of(stack.proc.pid) == services, "no service crashed"


def test_no_api_key_internal_secret_or_token_appears_in_the_stacks_output_or_logs(stack: StackProcess) -> None:
    assert stack.api_key and auth.KEY_PATTERN.fullmatch(stack.api_key)
    assert f"API key: {stack.data_dir / auth.API_KEY_FILE}" in "".join(stack.output), "where the key is, not the key"
    secret = trust.secret_path(Config(data_dir=stack.data_dir)).read_text().strip()
    token = re.compile(rf"({'|'.join(trust.ROLE_METHODS)}):[^:\s]*:[^:\s]*:[0-9a-f]{{64}}")
    logs = [path for path in stack.data_dir.rglob("*.log")]
    assert len(logs) >= 4
    for text in ["".join(stack.output), *(path.read_text(errors="replace") for path in logs)]:
        assert not auth.KEY_PATTERN.search(text)
        assert secret not in text and not token.search(text)
