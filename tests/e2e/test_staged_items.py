"""Large item lists staged as a file that the enqueuer streams, against the real embedded stack: a job streamed as JSON
Lines (`Client.map`, POST /v1/apis/<api>/jobs) and a Cortex JSON submission over the staging threshold, their items
kept byte for byte, their staged file deleted with the job, and a refused submission leaving nothing behind.

The stack stages every item list (gateway.stage_items_over_bytes 0), so that small jobs take the large jobs' path.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import moto_client
from tests.e2e.conftest import WORKERS_DIR, Stack, stopped_after
from tests.e2e.test_python_client_results import SQUARER
from tests.e2e.test_sqs_s3_stack import sqs_s3_stack
from tests.helpers import eventually
from thresher import Client
from thresher.core.errors import InvalidRequest, TooLarge, Unauthenticated
from thresher.core.names import ENV_API_KEY
from thresher.core.staging import STAGED_DIR

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

UPLOAD_LIMIT = 400_000  # bytes: a map of 100,000 items is over it
BODY_LIMIT = 300_000  # bytes: a JSON body of 60,000 items is over it, a JSON Lines one is not held to it
ITEMS = 60_000


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    env = {
        "THRESHER_GATEWAY_STAGE_ITEMS_OVER_BYTES": "0",
        "THRESHER_GATEWAY_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
        "THRESHER_GATEWAY_MAX_BODY_BYTES": str(BODY_LIMIT),
    }
    stack = Stack(tmp_path / "data", WORKERS_DIR / "apis.yaml", env=env)
    monkeypatch.setenv(ENV_API_KEY, stack.api_key or "")
    with stopped_after(stack):
        yield stack


@pytest.fixture
def client(stack: Stack) -> Client:
    client = Client(stack.url, api_key=stack.api_key)
    client.deploy([SQUARER], working_dir=WORKERS_DIR)
    return client


def staged_files(stack: Stack) -> list[str]:
    folder = stack.data_dir / STAGED_DIR
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def post(stack: Stack, path: str, body: bytes, content_type: str = "application/jsonl") -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {stack.api_key}", "Content-Type": content_type}
    request = urllib.request.Request(stack.url + path, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
            is_json = response.headers.get_content_type() == "application/json"
            return response.status, json.loads(text) if is_json else text
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_map_is_streamed_staged_and_read_back_in_order_and_its_staged_file_goes_with_the_job(
    stack: Stack, client: Client
) -> None:
    # Given 5,000 items, more than a JSON submission may hold
    with pytest.raises(TooLarge, match=f"larger than {BODY_LIMIT} bytes"):
        client.submit_text(
            "squarer", json.dumps({"item_list": {"items": list(range(ITEMS)), "batch_size": 7}}).encode()
        )

    # When a map of them is submitted (streamed as JSON Lines, staged as they arrive)
    squares = client.map("squarer", (i for i in range(ITEMS)), batch_size=100, workers=2)

    # Then every item's result comes back in input order, and the job's staged file is deleted once it has ended
    assert list(squares) == [i * i for i in range(ITEMS)]
    [job] = client.jobs("squarer")
    assert job["job_status"]["total_batch_count"] == 600 and job["job_status"]["status"] == "succeeded"
    eventually(lambda: staged_files(stack) == [] or None, timeout_s=30)


def test_items_reach_workers_and_results_as_written_by_either_route(stack: Stack, client: Client) -> None:
    # Given numbers whose JSON text decoding and encoding again would change
    written = ["3.50", "1e2", "-0.0", "2.000"]
    lines = b'{"workers":1,"item_list":{"batch_size":2}}\n' + "\n\n".join(written).encode() + b"\n"
    cortex = ('{"workers": 1, "item_list": {"batch_size": 2, "items": [' + ", ".join(written) + "]}}").encode()

    # When they are submitted as JSON Lines and as a Cortex JSON submission (both staged)
    for path, body, content_type in (
        ("/v1/apis/squarer/jobs", lines, "application/jsonl"),
        ("/batch/squarer", cortex, "application/json"),
    ):
        status, job = post(stack, path, body, content_type)
        assert status == 200, job
        assert stack.wait_for_final("squarer", job["job_id"])["job_status"]["status"] == "succeeded"

        # Then the results' items are as written
        lines_read = list(stack.client.results(job["job_id"], items=True))
        assert [json.loads(line)["result"] for line in lines_read] == [[12.25, 10000.0], [0.0, 4.0]]
        assert b'"items": [3.50,1e2]' in lines_read[0] and b'"items": [-0.0,2.000]' in lines_read[1]
    eventually(lambda: staged_files(stack) == [] or None, timeout_s=30)


def test_failed_batches_of_a_staged_list_are_listed_and_retried(stack: Stack, client: Client, tmp_path: Path) -> None:
    fail_while = tmp_path / "failing"
    fail_while.touch()
    config = {"out_dir": str(tmp_path / "out"), "fail_items": [3], "fail_while": str(fail_while), "results": True}
    job = client.submit("recorder", items=[1, 2, 3, 4], batch_size=1, workers=1, config=config)
    assert job.wait(progress=False)["job_status"]["status"] == "completed_with_failures"
    [failed] = job.failed()
    assert failed["items"] == [3]

    fail_while.unlink()
    retried = job.retry()
    assert retried.wait(progress=False)["job_status"]["status"] == "succeeded"
    assert [json.loads(line)["items"] for line in stack.client.results(retried.id, items=True)] == [[3]]


def test_refused_submissions_and_dry_runs_leave_no_staged_file(stack: Stack, client: Client) -> None:
    head = b'{"workers":1,"item_list":{"batch_size":2}}\n'

    status, error = post(stack, "/v1/apis/recorder/jobs", head + b"1\n2\n{bad\n4\n")
    assert (status, error["kind"]) == (400, "invalid") and error["message"].startswith("line 4: malformed JSON")
    status, error = post(stack, "/v1/apis/no-such-api/jobs", head + b"1\n2\n")
    assert (status, error["kind"]) == (404, "resources.api_not_deployed")
    status, error = post(stack, "/v1/apis/recorder/jobs", b'{"workers":1,"item_list":{"batch_size":0}}\n1\n')
    assert status == 400 and "batch_size" in error["message"]
    status, error = post(stack, "/v1/apis/recorder/jobs", head)
    assert status == 400 and "at least 1" in error["message"]
    status, error = post(stack, "/v1/apis/recorder/jobs", b'{"workers":1,"item_list":{"items":[1]}}\n')
    assert status == 400 and "a line of its own" in error["message"]
    status, answer = post(stack, "/v1/apis/recorder/jobs?dryRun=true", head + b"1\n2\n3\n")
    assert (status, answer) == (200, "validations passed")
    with pytest.raises(Unauthenticated):
        Client(stack.url, api_key="not-a-key").map("recorder", [1], batch_size=1)
    with pytest.raises(TooLarge, match=f"larger than {UPLOAD_LIMIT} bytes"):
        client.map("squarer", range(100_000), batch_size=100)
    with pytest.raises(InvalidRequest, match=f"line 3: longer than {BODY_LIMIT} bytes"):  # a line's limit
        client.submit("recorder", items=[1, "x" * BODY_LIMIT], batch_size=1, workers=1)
    too_large = json.dumps([1, "x" * 260_000])
    with pytest.raises(InvalidRequest, match=r"item 1 has size \d+ bytes which exceeds the limit"):
        client.submit("recorder", items=json.loads(too_large), batch_size=1, workers=1)
    status, error = post(
        stack,
        "/batch/recorder",
        f'{{"workers":1,"item_list":{{"batch_size":1,"items":{too_large}}}}}'.encode(),
        "application/json",
    )
    assert (status, error["kind"]) == (400, "batchapi.item_size_exceeds_limit")
    assert error["message"].startswith("item 1 has size") and "/openapi.json" in error["message"], "as Cortex words it"

    assert client.jobs() == [] and staged_files(stack) == []


def test_on_sqs_and_s3_a_staged_list_is_an_s3_object_while_its_job_runs_and_goes_with_it(
    aws_endpoint: str, tmp_path: Path
) -> None:
    # Given a stack on SQS and S3 (moto) that stages every item list under s3://staging/in
    s3 = moto_client("s3", aws_endpoint)
    s3.create_bucket(Bucket="staging")
    env = {"THRESHER_INPUTS_STAGING_S3_PREFIX": "s3://staging/in", "THRESHER_GATEWAY_STAGE_ITEMS_OVER_BYTES": "0"}
    with sqs_s3_stack(aws_endpoint, aws_endpoint, tmp_path, env) as on:
        client = Client(on.stack.url, api_key=on.stack.api_key)
        hold_while = tmp_path / "hold"
        hold_while.touch()
        config = {"out_dir": str(tmp_path / "out"), "hold_items": [0], "hold_while": str(hold_while), "results": True}

        # When a job of 12 items runs (its first batch held)
        job = client.submit("recorder", items=range(12), batch_size=2, workers=1, config=config)

        # Then its items are one S3 object meanwhile, read back as submitted, and deleted once the job has ended
        def staged() -> list[str]:
            return [o["Key"] for o in s3.list_objects_v2(Bucket="staging", Prefix="in/").get("Contents", [])]

        [key] = staged()
        assert key.endswith(".jsonl") and not (tmp_path / "data" / STAGED_DIR).exists()
        hold_while.unlink()
        assert job.wait(progress=False)["job_status"]["status"] == "succeeded"
        assert [line["items"] for line in job.results(items=True)] == [[i, i + 1] for i in range(0, 12, 2)]
        eventually(lambda: staged() == [] or None, timeout_s=30)

        # And a refused submission leaves no object
        with pytest.raises(InvalidRequest, match="batch_size"):
            client.submit("recorder", items=range(12), batch_size=0)
        assert staged() == []


def test_without_a_staging_place_a_json_lines_job_is_held_to_the_json_body_limit(tmp_path: Path) -> None:
    # Given a stack whose services share no data dir (as on Kubernetes) and no staging S3 prefix, and a file left by
    # an upload cut short
    (tmp_path / "data" / STAGED_DIR).mkdir(parents=True)
    (tmp_path / "data" / STAGED_DIR / "cut-short.part").write_bytes(b"1\n2\n")
    env = {"THRESHER_INPUTS_STAGE_IN_DATA_DIR": "false", "THRESHER_GATEWAY_MAX_BODY_BYTES": str(BODY_LIMIT)}
    with stopped_after(Stack(tmp_path / "data", WORKERS_DIR / "apis.yaml", env=env)) as stack:
        client = Client(stack.url, api_key=stack.api_key)
        client.deploy([SQUARER], working_dir=WORKERS_DIR)

        # Then a small map passes its items in messages, and one over the JSON body limit is refused
        assert list(client.map("squarer", range(100), batch_size=7, workers=1)) == [i * i for i in range(100)]
        with pytest.raises(TooLarge, match=f"larger than {BODY_LIMIT} bytes .*nowhere to stage items"):
            client.map("squarer", range(ITEMS), batch_size=7, workers=1)
        assert staged_files(stack) == [], "the gateway removed the cut-short file at its start, and staged nothing"
