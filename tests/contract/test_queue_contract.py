"""The queue seam's contract, for every backend: SQLite in tmp_path, and SQS over HTTP on two servers: moto's
("sqs") and ElasticMQ ("elasticmq"), which keeps SQS's limits strictly where moto is lenient.

Visibility timeouts differ only because SQS counts them in whole seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import AWS_ENV
from thresher.core.config import Config, QueueSettings
from thresher.core.errors import QueueNotFound
from thresher.core.queue import KIND_JOB_COMPLETE, Batch, Delivery, Depth, Queue, QueueBackend, open_queue_backend

VISIBILITY_S = {"sqlite": 0.3, "sqs": 1.0, "elasticmq": 1.0}
SQS_ENDPOINTS = {"sqs": "aws_endpoint", "elasticmq": "elasticmq_endpoint"}  # fixtures of tests/conftest.py


@pytest.fixture(params=["sqlite", "sqs", "elasticmq"])
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def config(backend_name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    if backend_name == "sqlite":
        return Config(data_dir=tmp_path)
    return Config(data_dir=tmp_path, queue=sqs_settings(request.getfixturevalue(SQS_ENDPOINTS[backend_name])))


def sqs_settings(endpoint: str, region: str = AWS_ENV["AWS_DEFAULT_REGION"]) -> QueueSettings:
    return QueueSettings(
        backend="sqs",
        sqs_endpoint_url=endpoint,
        sqs_region=region,
        sqs_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        sqs_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.fixture
def visibility_s(backend_name: str) -> float:
    return VISIBILITY_S[backend_name]


@pytest.fixture
async def backend(config: Config) -> AsyncIterator[QueueBackend]:
    backend = open_queue_backend(config)
    yield backend
    await backend.close()


@pytest.fixture
async def queue(backend: QueueBackend, visibility_s: float) -> Queue:
    await backend.create("job-1", visibility_s)
    return backend.open("job-1")


def batches(n: int, start: int = 0) -> list[Batch]:
    return [Batch(f"b{i}", f"[{i}]".encode()) for i in range(start, start + n)]


async def test_received_batches_are_invisible_until_their_visibility_expires(queue: Queue, visibility_s: float) -> None:
    await queue.send(batches(3))
    first = await queue.receive(10, wait_s=0)
    assert sorted(d.batch.batch_id for d in first) == ["b0", "b1", "b2"]  # SQS orders within a message group only
    assert await queue.receive(10, wait_s=0) == []
    assert await queue.depth() == Depth(visible=0, in_flight=3, dead=0)

    await asyncio.sleep(visibility_s + 0.05)
    again = await queue.receive(10, wait_s=0)
    assert [d.receive_count for d in again] == [2, 2, 2]


async def test_receive_returns_at_most_max_batches(queue: Queue) -> None:
    await queue.send(batches(25))
    received = await queue.receive(10, wait_s=0)
    assert len({d.batch.batch_id for d in received}) == 10
    assert all(d.batch.body == f"[{d.batch.batch_id[1:]}]".encode() for d in received)


@pytest.mark.parametrize("backend_name", ["sqlite"])
async def test_sqlite_delivers_in_send_order(queue: Queue) -> None:
    # SQS orders messages within a message group only, and each batch is a group of its own.
    await queue.send(batches(25))
    received = await queue.receive(10, wait_s=0)
    assert [d.batch.batch_id for d in received] == [f"b{i}" for i in range(10)]


async def test_sending_a_batch_id_twice_is_a_no_op_even_after_its_ack(queue: Queue) -> None:
    # SQLite remembers ids for the queue's life; SQS for its 5-minute deduplication window.
    await queue.send(batches(2))
    await queue.ack(await queue.receive(10, wait_s=0))
    await queue.send(batches(3))
    assert [d.batch.batch_id for d in await queue.receive(10, wait_s=0)] == ["b2"]


async def test_acked_batch_is_never_delivered_again(queue: Queue, visibility_s: float) -> None:
    await queue.send(batches(1))
    [delivery] = await queue.receive(1, wait_s=0)
    await queue.ack([delivery])
    await asyncio.sleep(visibility_s + 0.05)
    assert await queue.receive(1, wait_s=0) == []
    assert await queue.depth() == Depth(0, 0, 0)
    await queue.ack([delivery])  # acking again is not an error


async def test_released_batch_is_received_again_at_once_with_a_higher_count(queue: Queue) -> None:
    await queue.send(batches(1))
    [delivery] = await queue.receive(1, wait_s=0)
    await queue.release([delivery])
    [again] = await queue.receive(1, wait_s=0)
    assert again.batch == delivery.batch
    assert again.receive_count == 2


async def test_a_cancelled_receive_hides_no_batch(queue: Queue) -> None:
    # Given a receive under way
    await queue.send(batches(3))
    receiving = asyncio.create_task(queue.receive(10, wait_s=1))
    await asyncio.sleep(0)  # it has made its call
    # When it is cancelled
    receiving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await receiving
    # Then every batch can be received at once
    assert sorted(d.batch.batch_id for d in await queue.receive(10, wait_s=0)) == ["b0", "b1", "b2"]


async def test_extended_batch_stays_invisible_past_its_first_timeout(queue: Queue, visibility_s: float) -> None:
    await queue.send(batches(1))
    [delivery] = await queue.receive(1, wait_s=0)
    assert await queue.extend([delivery], visibility_s * 4) == []
    await asyncio.sleep(visibility_s + 0.1)
    assert await queue.receive(1, wait_s=0) == []


async def received_twice(queue: Queue, visibility_s: float) -> tuple[Delivery, Delivery]:
    """One batch received, then received again once its visibility ran out: a stale delivery and the current one."""
    await queue.send(batches(1))
    [stale] = await queue.receive(1, wait_s=0)
    await asyncio.sleep(visibility_s + 0.05)
    [current] = await queue.receive(1, wait_s=0)
    return stale, current


async def test_a_stale_delivery_never_fails_and_the_current_one_settles_the_batch(
    queue: Queue, visibility_s: float
) -> None:
    # What every backend guarantees; SQLite also ignores the stale delivery (next test), SQS may not.
    stale, current = await received_twice(queue, visibility_s)
    assert current.receive_count == 2

    await queue.extend([stale], 10)
    await queue.release([stale])

    assert await queue.extend([current], 10) == []
    await queue.ack([current])
    assert await queue.receive(1, wait_s=0) == []
    assert await queue.depth() == Depth(0, 0, 0)


@pytest.mark.parametrize("backend_name", ["sqlite", "elasticmq"])
async def test_a_stale_delivery_cannot_extend_or_release_a_batch_received_again(
    queue: Queue, visibility_s: float
) -> None:
    # ElasticMQ answers ReceiptHandleIsInvalid for a stale receipt handle; SQS may accept it (moto's server does):
    # there the stale delivery does act.
    stale, current = await received_twice(queue, visibility_s)
    assert await queue.extend([stale, current], 10) == [stale]
    await queue.release([stale])
    assert await queue.depth() == Depth(visible=0, in_flight=1, dead=0)


async def test_a_delivery_settled_already_cannot_be_extended(queue: Queue) -> None:
    await queue.send(batches(1))
    [delivery] = await queue.receive(1, wait_s=0)
    await queue.ack([delivery])
    assert await queue.extend([delivery], 10) == [delivery]


async def test_a_receive_says_how_long_each_delivery_surely_holds_its_batch(queue: Queue, visibility_s: float) -> None:
    await queue.send(batches(2))
    before = time.monotonic()
    received = await queue.receive(10, wait_s=0)
    after = time.monotonic()
    assert [d.held_until for d in received] == [received[0].held_until] * 2
    assert before <= received[0].held_until - visibility_s <= after


async def test_groups_larger_than_a_batch_call_are_settled_whole(queue: Queue) -> None:
    # Given 25 deliveries (SQS's batch calls take 10 entries)
    await queue.send(batches(25))
    received = [d for _ in range(3) for d in await queue.receive(10, wait_s=0)]
    assert len(received) == 25
    # When 12 are extended, then acked, and the other 13 released, each group in one verb
    assert await queue.extend(received[:12], 30) == []
    await queue.ack(received[:12])
    await queue.release(received[12:])
    # Then the released ones come back at once and the acked ones never do
    again = [d for _ in range(2) for d in await queue.receive(10, wait_s=0)]
    assert sorted(d.batch.batch_id for d in again) == sorted(d.batch.batch_id for d in received[12:])
    assert await queue.depth() == Depth(visible=0, in_flight=13, dead=0)


async def test_dead_lettered_batch_keeps_its_body_count_and_error(backend: QueueBackend) -> None:
    # A long visibility: the second batch must still be in flight at the last line, however slow the machine.
    await backend.create("job-1", 60)
    queue = backend.open("job-1")
    await queue.send(batches(2))
    first, _ = await queue.receive(2, wait_s=0)
    await queue.dead_letter(first, "HTTP 500: boom")
    [dead] = await queue.dead_letters()
    assert (dead.batch.batch_id, dead.batch.body, dead.receive_count, dead.error) == ("b0", b"[0]", 1, "HTTP 500: boom")
    assert (await queue.depth()).dead == 1
    assert await queue.dead_letters() == [dead], "listing loses nothing"
    assert await queue.depth() == Depth(visible=0, in_flight=1, dead=1)


async def test_a_dead_letter_whose_error_holds_control_characters_is_kept(queue: Queue) -> None:
    # A coloured traceback (ESC) or a NUL: characters SQS refuses in a message attribute (moto accepts them)
    await queue.send(batches(1))
    [delivery] = await queue.receive(1, wait_s=0)
    await queue.dead_letter(delivery, "Traceback: \x1b[31mValueError\x1b[0m: bad\x00byte")
    [dead] = await queue.dead_letters()
    assert dead.batch == delivery.batch
    assert "ValueError" in dead.error and "bad" in dead.error and "byte" in dead.error, dead.error
    assert await queue.depth() == Depth(visible=0, in_flight=0, dead=1)


@pytest.mark.parametrize("backend_name", ["sqs", "elasticmq"])
async def test_a_named_dead_letter_queue_is_found_whatever_region_the_server_names_in_its_arns(
    backend_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # Given clients in a region other than the server's (ElasticMQ puts its own region in the ARNs it hands back,
    # the redrive policy's included), and a job queue whose dead letter queue is named by an ARN in the clients' one
    endpoint = request.getfixturevalue(SQS_ENDPOINTS[backend_name])
    config = Config(data_dir=tmp_path, queue=sqs_settings(endpoint, region="eu-west-1"))
    scheduler, dequeuer = open_queue_backend(config), open_queue_backend(config)
    try:
        url = await scheduler.create("shared", 30)  # any FIFO queue will do as the named one
        account = url.rstrip("/").split("/")[-2]
        await scheduler.create("job-1", 30, dead_letter_arn=f"arn:aws:sqs:eu-west-1:{account}:shared.fifo")
        await scheduler.open("job-1").send(batches(1))
        # When another process, which knows the dead letter queue only from the server, dead-letters the batch
        queue = dequeuer.open("job-1")
        [delivery] = await queue.receive(1, wait_s=0)
        await queue.dead_letter(delivery, "boom")
        # Then it is there
        assert [d.batch.batch_id for d in await queue.dead_letters()] == ["b0"]
    finally:
        await scheduler.close()
        await dequeuer.close()


async def test_long_poll_returns_a_batch_sent_while_waiting(queue: Queue) -> None:
    async def send_later() -> None:
        await asyncio.sleep(0.1)
        await queue.send(batches(1))

    sender = asyncio.create_task(send_later())
    received = await queue.receive(10, wait_s=2)
    await sender
    assert [d.batch.batch_id for d in received] == ["b0"]


async def test_control_messages_are_delivered_but_not_counted_as_batches(queue: Queue) -> None:
    await queue.send([Batch("job-1-job-complete", b"{}", KIND_JOB_COMPLETE)])
    assert await queue.depth() == Depth(0, 0, 0)
    [delivery] = await queue.receive(1, wait_s=0)
    assert delivery.batch.kind == KIND_JOB_COMPLETE


async def test_every_verb_raises_queue_not_found_after_deletion(backend: QueueBackend, queue: Queue) -> None:
    await queue.send(batches(1))
    [delivery] = await queue.receive(1, wait_s=0)
    await backend.delete(queue.name)
    for call in (
        lambda: queue.send(batches(1)),
        lambda: queue.receive(1, wait_s=0),
        lambda: queue.extend([delivery], 1),
        lambda: queue.ack([delivery]),
        lambda: queue.release([delivery]),
        lambda: queue.dead_letter(delivery, "x"),
        queue.depth,
        queue.dead_letters,
    ):
        with pytest.raises(QueueNotFound):
            await call()
    await backend.delete(queue.name)  # deleting twice is not an error


async def test_a_queue_never_created_is_not_found(backend: QueueBackend) -> None:
    with pytest.raises(QueueNotFound, match="never-made"):
        await backend.open("never-made").send(batches(1))


async def test_creating_a_queue_again_keeps_its_batches(
    backend: QueueBackend, queue: Queue, visibility_s: float
) -> None:
    await queue.send(batches(2))
    first = await backend.create(queue.name, visibility_s)
    second = await backend.create(queue.name, visibility_s)
    assert first == second
    assert len(await queue.receive(10, wait_s=0)) == 2


async def test_queue_contents_survive_reopening_the_backend(config: Config) -> None:
    first = open_queue_backend(config)
    await first.create("q", 30)
    await first.open("q").send(batches(2))
    await first.close()
    second = open_queue_backend(config)
    try:
        assert len(await second.open("q").receive(10, wait_s=0)) == 2
    finally:
        await second.close()


# Not on moto: its threaded server checks and marks a message received without a lock, so two receives at once can
# both take it (moto/sqs/models.py receive_message); SQS and ElasticMQ do not.
@pytest.mark.parametrize("backend_name", ["sqlite", "elasticmq"])
async def test_two_processes_worth_of_consumers_never_receive_the_same_batch(config: Config) -> None:
    backends = [open_queue_backend(config) for _ in range(2)]
    await backends[0].create("q", 30)
    await backends[0].open("q").send(batches(200))
    seen: list[str] = []

    async def consume(backend: QueueBackend) -> None:
        queue = backend.open("q")
        while received := await queue.receive(7, wait_s=0):
            seen.extend(d.batch.batch_id for d in received)

    await asyncio.gather(*(consume(b) for b in backends))
    for backend in backends:
        await backend.close()
    assert sorted(seen) == sorted(f"b{i}" for i in range(200))
