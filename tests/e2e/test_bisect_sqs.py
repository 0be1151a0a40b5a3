"""on_failure bisect on SQS (moto's server, over HTTP on 127.0.0.1): the halves of a split batch travel through the
job's FIFO queue and only the poison items reach its dead letter queue, each with its own error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_sqs_s3_stack import SqsStack, records, sqs_s3_stack, wait_for_final
from thresher.tools.client import GatewayClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

POISON = [13, 47]


@pytest.fixture
def moto_stack(aws_endpoint: str, tmp_path: Path) -> Iterator[SqsStack]:
    with sqs_s3_stack(aws_endpoint, aws_endpoint, tmp_path) as stack:
        yield stack


def test_a_bisecting_job_on_sqs_dead_letters_only_its_poison_items(moto_stack: SqsStack, tmp_path: Path) -> None:
    out = tmp_path / "out"
    client = GatewayClient(moto_stack.stack.url, api_key=moto_stack.stack.api_key)
    job = {
        "workers": 2,
        "item_list": {"items": list(range(60)), "batch_size": 10},
        "config": {"out_dir": str(out), "fail_items": POISON},
        "on_failure": "bisect",
        "sqs_dead_letter_queue": {"arn": "", "max_receive_count": 1},
    }
    submitted = client.submit("recorder", job)

    status = wait_for_final(client, submitted["job_id"])["job_status"]

    counts = status["batch_counts"]
    assert (counts["items_succeeded"], counts["items_dead_lettered"], counts["dead_lettered"]) == (58, 2, 2), status
    succeeded = sorted(item for record in records(out, "items") for item in record["items"])
    assert succeeded == [i for i in range(60) if i not in POISON]
    failed = client.failed(submitted["job_id"])
    assert sorted(f["items"] for f in failed) == [[13], [47]]
    assert all(f"poison item in {f['items']}" in f["error"] for f in failed)
