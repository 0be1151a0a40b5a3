"""A submission's own dead letter queue (`sqs_dead_letter_queue.arn`), on moto's SQS over HTTP.

Job queues then dead-letter into the named queue, which several jobs may share and which Thresher never deletes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AWS_ENV, moto_client
from tests.contract.test_queue_contract import sqs_settings
from thresher.config import Config
from thresher.errors import InvalidRequest
from thresher.queue import Batch, open_queue_backend
from thresher.queue.sqlite import SqliteQueueBackend
from thresher.queue.sqs import SqsQueueBackend


@pytest.fixture
async def backend(aws_endpoint: str, tmp_path: Path) -> AsyncIterator[SqsQueueBackend]:
    backend = open_queue_backend(Config(data_dir=tmp_path, queue=sqs_settings(aws_endpoint)))
    assert isinstance(backend, SqsQueueBackend)
    yield backend
    await backend.close()


@pytest.fixture
def sqs(aws_endpoint: str) -> Any:
    return moto_client("sqs", aws_endpoint)


def create_user_queue(sqs: Any, name: str, fifo: bool = True) -> str:
    """The user's queue, made outside Thresher; returns its ARN."""
    url = sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true"} if fifo else {})["QueueUrl"]
    return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


async def dead_letter_one(backend: SqsQueueBackend, queue_name: str, batch_id: str) -> None:
    queue = backend.open(queue_name)
    await queue.send([Batch(batch_id, b"[1]")])
    [delivery] = await queue.receive(1, wait_s=0)
    await queue.dead_letter(delivery, f"{batch_id} failed")


async def test_jobs_dead_letter_into_a_named_queue_and_each_lists_only_its_own(
    backend: SqsQueueBackend, aws_endpoint: str, tmp_path: Path, sqs: Any
) -> None:
    arn = create_user_queue(sqs, "team-dead-letters.fifo")
    for job in ("job-a", "job-b"):
        await backend.create(job, 30, dead_letter_arn=arn)
        await dead_letter_one(backend, job, f"{job}-000000")

    # Another process (a dequeuer, a restarted scheduler) finds the named queue from the redrive policy.
    other = open_queue_backend(Config(data_dir=tmp_path, queue=sqs_settings(aws_endpoint)))
    try:
        letters = await other.open("job-a").dead_letters()
        await dead_letter_one(other, "job-b", "job-b-000001")
    finally:
        await other.close()

    assert [(letter.batch.batch_id, letter.error) for letter in letters] == [("job-a-000000", "job-a-000000 failed")]
    assert sorted(letter.batch.batch_id for letter in await backend.open("job-b").dead_letters()) == [
        "job-b-000000",
        "job-b-000001",
    ]
    assert "job-a-dlq.fifo" not in str(sqs.list_queues().get("QueueUrls", [])), "no queue of its own was made"


async def test_deleting_the_job_queues_keeps_the_named_queue_and_its_letters(
    backend: SqsQueueBackend, sqs: Any
) -> None:
    arn = create_user_queue(sqs, "kept-dead-letters.fifo")
    await backend.create("job-c", 30, dead_letter_arn=arn)
    await dead_letter_one(backend, "job-c", "job-c-000000")

    await backend.delete("job-c")

    url = sqs.get_queue_url(QueueName="kept-dead-letters.fifo")["QueueUrl"]
    kept = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [message["Body"] for message in kept] == ["[1]"]


@pytest.mark.parametrize(
    ("arn", "says"),
    [
        ("not-an-arn", "is not an SQS queue ARN"),
        (f"arn:aws:sqs:{AWS_ENV['AWS_DEFAULT_REGION']}:123456789012:missing.fifo", "no such queue"),
        ("arn:aws:sqs:eu-north-1:123456789012:elsewhere.fifo", "must be in the job queues' region"),
    ],
)
async def test_a_named_queue_that_cannot_be_used_is_refused_with_a_reason(
    backend: SqsQueueBackend, arn: str, says: str
) -> None:
    with pytest.raises(InvalidRequest, match=says):
        await backend.check_dead_letter_queue(arn)


async def test_a_standard_queue_is_refused_because_a_fifo_queue_needs_a_fifo_dead_letter_queue(
    backend: SqsQueueBackend, sqs: Any
) -> None:
    arn = create_user_queue(sqs, "standard-dead-letters", fifo=False)
    with pytest.raises(InvalidRequest, match="must be a FIFO queue"):
        await backend.check_dead_letter_queue(arn)
    with pytest.raises(InvalidRequest, match="must be a FIFO queue"):
        await backend.create("job-d", 30, dead_letter_arn=arn)
    assert "job-d" not in str(sqs.list_queues().get("QueueUrls", [])), "nothing is created"


async def test_the_sqlite_backend_refuses_a_named_queue(tmp_path: Path) -> None:
    backend = SqliteQueueBackend(tmp_path / "queue.db")
    try:
        with pytest.raises(InvalidRequest, match="needs the sqs queue backend"):
            await backend.check_dead_letter_queue("arn:aws:sqs:us-east-1:123456789012:x.fifo")
    finally:
        await backend.close()
