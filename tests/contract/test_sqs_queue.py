"""What only the SQS backend has: provider limits, batching, retries, call counts, queue attributes, named DLQs.

moto's server answers over real HTTP; a small proxy in front of it injects throttling and failed entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AWS_ENV, moto_client
from tests.contract.test_queue_contract import sqs_settings
from thresher.core.config import Config, QueueSettings
from thresher.core.errors import InvalidRequest, TooLarge
from thresher.core.queue import Batch, Depth, open_queue_backend
from thresher.core.queue.sqlite import SqliteQueueBackend
from thresher.core.queue.sqs import SqsQueue, SqsQueueBackend
from thresher.core.queue.sqs_messages import MAX_MESSAGE_BYTES, REDRIVE_MAX_RECEIVES
from thresher.core.queue.sqs_names import sqs_names


@pytest.fixture
async def backend(aws_endpoint: str, tmp_path: Path) -> AsyncIterator[SqsQueueBackend]:
    backend = open_queue_backend(Config(data_dir=tmp_path, queue=sqs_settings(aws_endpoint)))
    assert isinstance(backend, SqsQueueBackend)
    yield backend
    await backend.close()


@pytest.fixture
async def queue(backend: SqsQueueBackend) -> SqsQueue:
    await backend.create("job-1", 30)
    return backend.open("job-1")


def batches(n: int, body: bytes = b"[1]") -> list[Batch]:
    return [Batch(f"job-1-{i:06d}", body) for i in range(n)]


async def test_a_job_of_n_batches_needs_a_third_of_a_call_per_batch(backend: SqsQueueBackend) -> None:
    # Given a job of 200 batches, handled as the dequeuer does: receive 10, extend them once, ack them together
    n = 200
    await backend.create("job-1", 30)
    queue = backend.open("job-1")
    await queue.send(batches(n))
    done = 0
    while deliveries := await queue.receive(10, wait_s=0):
        assert await queue.extend(deliveries, 30) == []
        await queue.ack(deliveries)
        done += len(deliveries)
    assert await queue.depth() == Depth(0, 0, 0)

    # Then every batch was handled once, each verb costing one call per 10 batches
    assert done == n
    assert queue.calls["SendMessageBatch"] == queue.calls["ReceiveMessage"] - 1 == n // 10
    assert queue.calls["ChangeMessageVisibilityBatch"] == queue.calls["DeleteMessageBatch"] == n // 10
    assert sum(queue.calls.values()) < 0.45 * n, queue.calls
    assert backend.calls == queue.calls


async def test_an_extension_takes_effect(backend: SqsQueueBackend) -> None:
    await backend.create("job-1", 1)
    queue = backend.open("job-1")
    await queue.send(batches(1))
    [delivery] = await queue.receive(1, wait_s=0)

    assert await queue.extend([delivery], 10) == []

    await asyncio.sleep(1.1)
    assert await queue.receive(1, wait_s=0) == [], "the extension took effect"


async def test_a_group_of_acks_takes_one_delete_call_per_10(queue: SqsQueue) -> None:
    await queue.send(batches(15))
    deliveries = await queue.receive(10, wait_s=0) + await queue.receive(10, wait_s=0)

    await queue.ack(deliveries)

    assert queue.calls["DeleteMessageBatch"] == 2
    assert await queue.depth() == Depth(0, 0, 0)


async def test_a_group_of_releases_takes_one_call(queue: SqsQueue) -> None:
    await queue.send(batches(10))
    deliveries = await queue.receive(10, wait_s=0)

    await queue.release(deliveries)

    assert queue.calls["ChangeMessageVisibilityBatch"] == 1
    assert [d.receive_count for d in await queue.receive(10, wait_s=0)] == [2] * 10


async def test_batches_are_sent_10_at_a_time_within_the_size_limit(queue: SqsQueue) -> None:
    small, large = batches(25), [Batch(f"big-{i}", b'["' + b"x" * 100_000 + b'"]') for i in range(6)]

    await queue.send(small)
    await queue.send(large)

    # 25 small ones: 3 calls; 100 KB ones: two per call, as three would pass 256 KiB
    assert queue.calls["SendMessageBatch"] == 3 + 3
    received = {}
    while deliveries := await queue.receive(10, wait_s=0):
        received.update({d.batch.batch_id: d.batch.body for d in deliveries})
    assert received == {b.batch_id: b.body for b in small + large}


async def test_a_batch_over_the_message_limit_is_refused_by_name_and_nothing_is_sent(queue: SqsQueue) -> None:
    huge = Batch("job-1-000007", b'["' + b"x" * MAX_MESSAGE_BYTES + b'"]')

    with pytest.raises(TooLarge, match="batch job-1-000007 is .* bytes, over SQS's message limit"):
        await queue.send([*batches(3), huge])

    assert await queue.depth() == Depth(0, 0, 0)


async def test_a_batch_id_sqs_cannot_take_as_is_is_delivered_with_its_own_id(queue: SqsQueue) -> None:
    odd = Batch("job 1 – batch é" + "x" * 200, b"[1]")

    await queue.send([odd, odd])

    [delivery] = await queue.receive(10, wait_s=0)
    assert delivery.batch == odd


async def test_queue_names_fit_sqs_limits_and_stay_distinct() -> None:
    long_name = "thresher_" + "an.api/with:odd*chars" * 4 + "_7fffe35d4d1c5e2bd0a1"
    main, dlq = sqs_names(long_name)
    assert len(main) <= 80 and len(dlq) <= 80
    assert main.endswith(".fifo") and dlq == main.removesuffix(".fifo") + "-dlq.fifo"
    assert sqs_names(long_name) == (main, dlq), "deterministic"
    assert sqs_names(long_name + "x")[0] != main
    assert sqs_names("thresher_api_7fffe35d4d1c5e2bd0a1") == (
        "thresher_api_7fffe35d4d1c5e2bd0a1.fifo",
        "thresher_api_7fffe35d4d1c5e2bd0a1-dlq.fifo",
    )


async def test_a_job_queue_is_fifo_with_a_safety_net_redrive_to_its_own_dead_letter_queue(
    backend: SqsQueueBackend, aws_endpoint: str
) -> None:
    name = "thresher_" + "a" * 40 + "_7fffe35d4d1c5e2bd0a1"  # the longest name the scheduler makes

    url = await backend.create(name, visibility_s=2.5)

    client = moto_client("sqs", aws_endpoint)
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    dlq_url = client.get_queue_url(QueueName=sqs_names(name)[1])["QueueUrl"]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    assert attributes["FifoQueue"] == "true"
    assert attributes["VisibilityTimeout"] == "3", "whole seconds, rounded up"
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq_arn
    assert int(redrive["maxReceiveCount"]) == REDRIVE_MAX_RECEIVES


async def test_the_secret_key_is_never_shown_in_settings() -> None:
    settings = QueueSettings(backend="sqs", sqs_access_key_id="AKIDEXAMPLE", sqs_secret_access_key="s3cr3t-value")
    assert "s3cr3t-value" not in repr(Config(queue=settings))


# --- a flaky SQS: throttling and failed entries, injected by a proxy in front of moto --------------------------


class FlakySqs(ThreadingHTTPServer):
    """Forwards every call to moto (or ElasticMQ), except those it was told to fail; counts the calls it gets by
    operation."""

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _FlakyHandler)
        self.upstream = upstream
        self.calls: Counter[str] = Counter()
        self.throttle: Counter[str] = Counter()  # operation -> how many of its next calls are throttled
        self.fail_last_entry: Counter[str] = Counter()  # operation -> how many next batch calls lose their last entry
        self.unsupported: set[str] = set()  # operations refused every time, as by a server that lacks them
        # The handler threads share the counters: `+=` on a Counter is a read then a write, and two threads at once
        # would lose a count (the SQS stack test compares this count with the job's own, call for call)
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _FlakyHandler(BaseHTTPRequestHandler):
    server: FlakySqs

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        operation = self.headers["X-Amz-Target"].split(".")[-1]
        with self.server.lock:
            self.server.calls[operation] += 1
            refused = operation in self.server.unsupported
            throttled = self.server.throttle[operation] > 0
            if throttled:
                self.server.throttle[operation] -= 1
            drop_last = self.server.fail_last_entry[operation] > 0
            if drop_last:
                self.server.fail_last_entry[operation] -= 1
        if refused:
            refusal = {"__type": "com.amazonaws.sqs#UnsupportedOperation", "message": f"{operation} is not supported"}
            self._answer(400, refusal)
            return
        if throttled:
            self._answer(400, {"__type": "com.amazonaws.sqs#ThrottlingException", "message": "Rate exceeded"})
            return
        dropped = None
        if drop_last:
            request = json.loads(body)
            dropped = request["Entries"].pop()
            body = json.dumps(request).encode()
            if not request["Entries"]:  # SQS refuses an empty batch: answer for it
                failure = {"Id": dropped["Id"], "SenderFault": False, "Code": "InternalError", "Message": "injected"}
                self._answer(200, {"Successful": [], "Failed": [failure]})
                return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        forward = urllib.request.Request(self.server.upstream + self.path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(forward, timeout=30) as response:
                reply = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as e:  # an SQS error (a missing queue...): passed on as it is
            self._answer(e.code, json.loads(e.read() or b"{}"), e.headers.get("x-amzn-query-error"))
            return
        if dropped is not None:
            failure = {"Id": dropped["Id"], "SenderFault": False, "Code": "InternalError", "Message": "injected"}
            reply.setdefault("Failed", []).append(failure)
        self._answer(200, reply)

    def _answer(self, status: int, reply: dict[str, Any], query_error: str | None = None) -> None:
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(data)))
        if query_error:  # botocore reads the error code SQS's older clients knew from this header
            self.send_header("x-amzn-query-error", query_error)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def flaky_sqs(upstream: str) -> Iterator[FlakySqs]:
    """A FlakySqs in front of `upstream`, serving on 127.0.0.1 until the block ends."""
    server = FlakySqs(upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def flaky(aws_endpoint: str) -> Iterator[FlakySqs]:
    with flaky_sqs(aws_endpoint) as server:
        yield server


@pytest.fixture
async def flaky_queue(flaky: FlakySqs, tmp_path: Path) -> AsyncIterator[SqsQueue]:
    backend = open_queue_backend(Config(data_dir=tmp_path, queue=sqs_settings(flaky.url)))
    assert isinstance(backend, SqsQueueBackend)
    await backend.create("job-1", 30)
    yield backend.open("job-1")
    await backend.close()


async def test_throttled_calls_are_retried_with_backoff(flaky: FlakySqs, flaky_queue: SqsQueue) -> None:
    flaky.throttle["SendMessageBatch"] = 2
    flaky.throttle["ReceiveMessage"] = 1

    await flaky_queue.send(batches(5))
    received = await flaky_queue.receive(10, wait_s=0)

    assert len(received) == 5
    assert flaky_queue.calls["SendMessageBatch"] == 3 and flaky_queue.calls["ReceiveMessage"] == 2


async def test_entries_that_a_batch_call_failed_are_sent_again(flaky: FlakySqs, flaky_queue: SqsQueue) -> None:
    flaky.fail_last_entry["SendMessageBatch"] = 2

    await flaky_queue.send(batches(10))

    received = await flaky_queue.receive(10, wait_s=0)
    assert sorted(d.batch.batch_id for d in received) == [b.batch_id for b in batches(10)]
    assert flaky_queue.calls["SendMessageBatch"] == 3


async def test_deletes_that_a_batch_call_failed_are_made_again(flaky: FlakySqs, flaky_queue: SqsQueue) -> None:
    await flaky_queue.send(batches(3))
    deliveries = await flaky_queue.receive(10, wait_s=0)
    flaky.fail_last_entry["DeleteMessageBatch"] = 1

    await flaky_queue.ack(deliveries)

    assert flaky_queue.calls["DeleteMessageBatch"] == 2
    assert await flaky_queue.depth() == Depth(0, 0, 0)


# --- a submission's own dead letter queue (sqs_dead_letter_queue.arn), which jobs may share ---------------


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
        await backend.check_dead_letter_target(arn)


async def test_a_standard_queue_is_refused_because_a_fifo_queue_needs_a_fifo_dead_letter_queue(
    backend: SqsQueueBackend, sqs: Any
) -> None:
    arn = create_user_queue(sqs, "standard-dead-letters", fifo=False)
    with pytest.raises(InvalidRequest, match="must be a FIFO queue"):
        await backend.check_dead_letter_target(arn)
    with pytest.raises(InvalidRequest, match="must be a FIFO queue"):
        await backend.create("job-d", 30, dead_letter_arn=arn)
    assert "job-d" not in str(sqs.list_queues().get("QueueUrls", [])), "nothing is created"


async def test_the_sqlite_backend_refuses_a_named_queue(tmp_path: Path) -> None:
    backend = SqliteQueueBackend(tmp_path / "queue.db")
    try:
        with pytest.raises(InvalidRequest, match="needs the sqs queue backend"):
            await backend.check_dead_letter_target("arn:aws:sqs:us-east-1:123456789012:x.fifo")
    finally:
        await backend.close()
