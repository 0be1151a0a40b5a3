"""Input that once made the gateway or the scheduler fail with 500: each gets 400 (or 503 naming what is missing)
with the JSON shape, and creates nothing. The real gateway and scheduler on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.contract.test_auth import Stack, running_stack
from thresher.core.config import Config

pytestmark = pytest.mark.timeout(60)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def files(path: str, includes: str = "") -> bytes:
    globs = f', "includes": ["{includes}"]' if includes else ""
    return f'{{"workers": 1, "file_path_lister": {{"s3_paths": ["{path}"]{globs}, "batch_size": 1}}}}'.encode()


ITEMS = '"workers": 1, "item_list": {"items": [1], "batch_size": 1}'
BAD_BODIES = {
    "100,000 nested arrays": (nested(100_000).encode(), "nested deeper than 100"),
    "an item nested 990 deep": (f'{{"workers": 1, "item_list": {{"items": [{nested(990)}]}}}}'.encode(), "deeper"),
    "a config nested 200 deep": (f'{{{ITEMS}, "config": {{"a": {nested(200)}}}}}'.encode(), "nested deeper than 100"),
    "a lone surrogate in s3_paths": (files("/data/\\ud800"), "lone surrogate"),
    "a lone surrogate in includes": (files("/data/", includes="\\udfff*"), "lone surrogate"),
    "a lone surrogate in the dead letter arn": (
        f'{{{ITEMS}, "sqs_dead_letter_queue": {{"arn": "\\ud800", "max_receive_count": 1}}}}'.encode(),
        "lone surrogate",
    ),
    "NUL in a local path": (files("/data/\\u0000/"), "cannot hold a NUL character"),
    "NUL in a file:// path": (files("file:///data/a\\u0000b"), "cannot hold a NUL character"),
}


@pytest.fixture
async def stack(tmp_path: Path, moto_server: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    """No AWS credentials anywhere (S3 is moto's server, which is never reached without them)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))

    def s3_without_credentials(config: Config) -> None:
        config.inputs.s3_endpoint_url, config.inputs.s3_region = moto_server, "us-east-1"

    async with running_stack(tmp_path, s3_without_credentials) as stack:
        yield stack


@pytest.mark.parametrize("dry_run", ["", "?dryRun=true"], ids=["submit", "dry run"])
@pytest.mark.parametrize("case", list(BAD_BODIES))
async def test_bad_input_is_400_invalid_saying_why(stack: Stack, case: str, dry_run: str) -> None:
    body, message = BAD_BODIES[case]
    status, error = await stack.call("admin", "POST", f"/batch/sum{dry_run}", body)
    if isinstance(error, str):  # a dry run's check that fails is told in text, as Cortex did
        assert dry_run and status == 400 and error.startswith("\n") and message in error, error
    else:
        assert (status, error["kind"]) == (400, "invalid") and message in error["message"], error
    assert (await stack.call("admin", "GET", "/v1/jobs"))[1] == {"jobs": []}, "nothing was created"


@pytest.mark.parametrize(
    ("encoding", "body"),
    [("gzip", b"\x1f\x8b\x08\x00 not gzip at all"), ("deflate", b"not deflate")],
)
async def test_a_body_that_does_not_decode_is_400_invalid(stack: Stack, encoding: str, body: bytes) -> None:
    headers = {"Authorization": f"Bearer {stack.keys['admin']}", "Content-Encoding": encoding}
    response = await stack.client.request("POST", "/batch/sum", data=body, headers=headers)
    error = await response.json()
    assert (response.status, error["kind"]) == (400, "invalid"), error
    assert "does not decode as its Content-Encoding says" in error["message"], error
    assert (await stack.call("admin", "GET", "/v1/jobs"))[1] == {"jobs": []}, "nothing was created"


async def test_s3_inputs_without_s3_credentials_are_503_naming_the_settings(stack: Stack) -> None:
    status, error = await stack.call("admin", "POST", "/batch/sum", files("s3://bucket/in/"))
    assert (status, error["kind"]) == (503, "unavailable"), error
    assert "inputs.s3_access_key_id and inputs.s3_secret_access_key" in error["message"], error
