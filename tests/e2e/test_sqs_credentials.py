"""The SQS backend without AWS credentials (an operator's misconfiguration, not the caller's fault): every route that
reaches SQS answers 503 `unavailable` saying what to set, never a secret. `thresher up` on moto's SQS, over HTTP on
127.0.0.1, with no credential anywhere the services could find one."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AWS_ENV
from tests.e2e.conftest import WORKERS_DIR
from tests.helpers import eventually
from thresher.core.auth import authorization
from thresher.tools.launcher import StackProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

NO_CREDENTIALS = "no AWS credentials for SQS: set queue.sqs_access_key_id and queue.sqs_secret_access_key"
A_SECRET = "s3cr3t-without-its-key-id"
# Nowhere for boto3 to find credentials: empty keys count as unset, no files, no instance metadata (it would call
# 169.254.169.254). The container and web identity variables are left unset: boto3 tries them when merely present.
NO_AWS_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "",
    "AWS_SECRET_ACCESS_KEY": "",
    "AWS_SESSION_TOKEN": "",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
    "AWS_CONFIG_FILE": "/nonexistent/config",
    "AWS_EC2_METADATA_DISABLED": "true",
}
JOB = {"workers": 1, "item_list": {"items": [1, 2], "batch_size": 1}}
DEAD_LETTERS = {"arn": "arn:aws:sqs:us-east-1:123456789012:dead.fifo", "max_receive_count": 2}


def start_stack(aws_endpoint: str, tmp_path: Path, env: dict[str, str] | None = None) -> StackProcess:
    region = AWS_ENV["AWS_DEFAULT_REGION"]
    args = ["--queue-backend", "sqs", "--sqs-endpoint-url", aws_endpoint, "--sqs-region", region]
    env = {**NO_AWS_CREDENTIALS, "AWS_DEFAULT_REGION": region, **(env or {})}
    return StackProcess(tmp_path / "data", apis=WORKERS_DIR / "apis.yaml", args=args, env=env)


@pytest.fixture
def stack(aws_endpoint: str, tmp_path: Path) -> Iterator[StackProcess]:
    stack = start_stack(aws_endpoint, tmp_path)
    try:
        yield stack
    finally:
        stack.stop()


def call(stack: StackProcess, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any] | str]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": authorization(stack.api_key or "")}
    request = urllib.request.Request(stack.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def test_every_route_reaching_sqs_without_credentials_answers_503_saying_what_to_set(stack: StackProcess) -> None:
    # When a job names its own dead letter queue (checked on SQS at submit)
    for path in ("/batch/recorder", "/recorder"):
        status, error = call(stack, "POST", path, {**JOB, "sqs_dead_letter_queue": DEAD_LETTERS})
        # Then the answer is 503 `unavailable` saying what to set, not a 500
        assert status == 503, (path, status, error)
        assert isinstance(error, dict) and error["kind"] == "unavailable", (path, error)
        assert NO_CREDENTIALS in error["message"], (path, error)

    # When a plain job is submitted (its queue is made once it is accepted), then it ends enqueue_failed saying why
    status, submitted = call(stack, "POST", "/batch/recorder", JOB)
    assert status == 200 and isinstance(submitted, dict), submitted
    job_id = submitted["job_id"]

    def ended() -> dict[str, Any]:
        status, job = call(stack, "GET", f"/batch/recorder?jobID={job_id}")
        assert status == 200 and isinstance(job, dict) and job["job_status"]["status"] == "enqueue_failed", job
        return job["job_status"]

    job_status = eventually(ended, timeout_s=30)
    assert NO_CREDENTIALS in job_status["status_reason"]
    # And its dead letters, read from its queue by its clean-up, answer the same
    status, error = call(stack, "GET", f"/v1/jobs/{job_id}/failed")
    assert status == 503 and isinstance(error, dict) and error["kind"] == "unavailable", error
    assert NO_CREDENTIALS in error["message"]


def test_a_secret_key_without_its_key_id_stops_the_stack_at_start_saying_why_never_the_secret(
    aws_endpoint: str, tmp_path: Path
) -> None:
    # Given the settings' SQS secret key without its key id (boto3 would sign nothing: every call a TypeError)
    env = {"THRESHER_QUEUE_SQS_SECRET_ACCESS_KEY": A_SECRET}
    # When the stack starts, then it does not, and the services' logs say why without the secret
    with pytest.raises(RuntimeError, match="exited at start") as refused:
        start_stack(aws_endpoint, tmp_path, env).stop()
    logs = "".join(p.read_text() for p in (tmp_path / "data" / "logs").glob("*.log"))
    assert "queue.sqs_access_key_id and queue.sqs_secret_access_key go together" in logs
    assert A_SECRET not in logs and A_SECRET not in str(refused.value)
