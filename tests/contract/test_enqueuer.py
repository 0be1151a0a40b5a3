"""The Enqueuer over real gRPC on loopback, writing to a real SQLite queue."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from services.enqueuer.batching import cut_batches
from services.enqueuer.server import create_server
from tests.helpers import Signed, stack_trust
from thresher.core import trust
from thresher.core.config import Config
from thresher.core.errors import NotFound
from thresher.core.itemlists import ItemSizes
from thresher.core.queue import Queue, QueueBackend, open_queue_backend
from thresher.core.rpc import Client, channel
from thresher.core.staging import Staging
from thresher.v1 import enqueuer_pb2, enqueuer_pb2_grpc, jobs_pb2

JOB_ID = "7fffabc123"
QUEUE = "textstats-7fffabc123"


def scheduler_stub(chan: grpc.aio.Channel, config: Config) -> Signed:
    """The Enqueuer's stub as the scheduler calls it: with its token."""
    return Signed(enqueuer_pb2_grpc.EnqueuerStub(chan), stack_trust(config).token(trust.SCHEDULER))


@dataclass
class Stack:
    stub: Signed  # an EnqueuerStub whose calls are the scheduler's
    backend: QueueBackend
    queue: Queue
    client: Client  # the same service through the scheduler's client, which raises ThresherError
    config: Config


@pytest.fixture
async def stack(tmp_path) -> AsyncIterator[Stack]:
    config = Config(data_dir=tmp_path)
    config.inputs.local_roots = "/"
    backend = open_queue_backend(config)
    await backend.create(QUEUE, visibility_s=30)
    stack_trust(config)  # the stack secret, as `thresher up` makes it
    server, port = await create_server(config, "127.0.0.1:0")
    async with channel(f"127.0.0.1:{port}") as chan:
        client = Client(enqueuer_pb2_grpc.EnqueuerStub(chan), stack_trust(config).token(trust.SCHEDULER))
        yield Stack(scheduler_stub(chan, config), backend, backend.open(QUEUE), client, config)
    await server.stop(None)
    await backend.close()


def request(count: int, batch_size: int, queue: str = QUEUE) -> enqueuer_pb2.EnqueueRequest:
    items = [json.dumps({"n": i, "text": f"item {i}"}).encode() for i in range(count)]
    submission = jobs_pb2.JobSubmission(
        api_name="textstats", workers=1, item_list=jobs_pb2.ItemList(items=items, batch_size=batch_size)
    )
    return enqueuer_pb2.EnqueueRequest(job_id=JOB_ID, queue_name=queue, submission=submission)


async def enqueue(stack: Stack, req: enqueuer_pb2.EnqueueRequest) -> list[enqueuer_pb2.EnqueueProgress]:
    return [p async for p in stack.stub.Enqueue(req)]


async def receive_all(queue: Queue) -> dict[str, bytes]:
    deliveries = await queue.receive(max_batches=100_000, wait_s=0)
    return {d.batch.batch_id: d.batch.body for d in deliveries}


async def test_items_are_written_as_batches_with_exact_bodies(stack: Stack) -> None:
    req = request(1_000, 10)

    progress = await enqueue(stack, req)

    assert [(p.batches_enqueued, p.items_enqueued, p.done) for p in progress][-1] == (100, 1_000, True)
    assert not any(p.done for p in progress[:-1])
    bodies = await receive_all(stack.queue)
    assert sorted(bodies) == [f"{JOB_ID}-{i:06d}" for i in range(100)]
    items = list(req.submission.item_list.items)
    for i in range(100):
        assert bodies[f"{JOB_ID}-{i:06d}"] == b"[" + b",".join(items[i * 10 : (i + 1) * 10]) + b"]"


async def test_progress_is_reported_after_every_chunk_then_done(stack: Stack) -> None:
    progress = await enqueue(stack, request(1_001, 1))

    assert [(p.batches_enqueued, p.items_enqueued, p.done) for p in progress] == [
        (500, 500, False),
        (1_000, 1_000, False),
        (1_001, 1_001, False),
        (1_001, 1_001, True),
    ]
    assert (await stack.queue.depth()).visible == 1_001


async def test_a_repeated_call_enqueues_nothing_new_even_for_acked_batches(stack: Stack) -> None:
    await enqueue(stack, request(1_000, 10))
    done = await stack.queue.receive(max_batches=30, wait_s=0)
    await stack.queue.ack(done)

    progress = await enqueue(stack, request(1_000, 10))

    assert progress[-1].done and progress[-1].batches_enqueued == 100
    depth = await stack.queue.depth()
    assert (depth.visible, depth.in_flight) == (70, 0)
    assert not set(await receive_all(stack.queue)) & {d.batch.batch_id for d in done}


async def test_a_call_after_a_crash_fills_the_gap_without_duplicates(stack: Stack) -> None:
    req = request(1_000, 10)
    first_part = list(cut_batches(JOB_ID, req.submission.item_list.items, 10))[:37]
    await stack.queue.send(first_part)

    await enqueue(stack, req)

    bodies = await receive_all(stack.queue)
    assert sorted(bodies) == [f"{JOB_ID}-{i:06d}" for i in range(100)]


async def test_no_items_give_only_a_final_progress(stack: Stack) -> None:
    progress = await enqueue(stack, request(0, 10))

    assert [(p.batches_enqueued, p.items_enqueued, p.done) for p in progress] == [(0, 0, True)]


async def test_a_missing_queue_is_not_found(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await enqueue(stack, request(10, 5, queue="deleted-queue"))

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "deleted-queue" in (caught.value.details() or "")


async def test_a_missing_queue_reaches_a_client_as_not_found(stack: Stack) -> None:
    with pytest.raises(NotFound):
        async for _ in stack.client.Enqueue(request(10, 5, queue="deleted-queue")):
            pass


@pytest.mark.parametrize("source", ["file_path_lister", "delimited_files"])
async def test_a_file_source_matching_no_file_is_invalid_and_enqueues_nothing(stack: Stack, source: str) -> None:
    # Reading files is covered in test_enqueuer_files.py
    submission = jobs_pb2.JobSubmission(api_name="textstats", workers=1)
    getattr(submission, source).CopyFrom(jobs_pb2.FileSource(paths=["/thresher-no-such-dir/in"], batch_size=2))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await enqueue(stack, enqueuer_pb2.EnqueueRequest(job_id=JOB_ID, queue_name=QUEUE, submission=submission))

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{source}: no files match search criteria" == caught.value.details()
    assert (await stack.queue.depth()).visible == 0


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (request(10, 0), "batch_size"),
        (enqueuer_pb2.EnqueueRequest(job_id=JOB_ID, queue_name=QUEUE), "specify exactly one of the following keys"),
        (enqueuer_pb2.EnqueueRequest(queue_name=QUEUE, submission=request(1, 1).submission), "job_id"),
    ],
)
async def test_bad_requests_are_invalid_and_enqueue_nothing(
    stack: Stack, req: enqueuer_pb2.EnqueueRequest, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await enqueue(stack, req)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (caught.value.details() or "")
    assert (await stack.queue.depth()).visible == 0


async def test_the_service_runs_as_a_module_and_stops_on_sigterm(tmp_path) -> None:
    config = Config(data_dir=tmp_path)
    backend = open_queue_backend(config)
    await backend.create(QUEUE, visibility_s=30)
    stack_trust(config)  # the stack secret, as `thresher up` makes it
    env = os.environ | {"THRESHER_DATA_DIR": str(tmp_path), "THRESHER_ADDRESSES_ENQUEUER": "127.0.0.1:0"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.enqueuer", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        port = await asyncio.wait_for(_listening_port(proc), timeout=20)
        async with channel(f"127.0.0.1:{port}") as chan:
            progress = [p async for p in scheduler_stub(chan, config).Enqueue(request(20, 5))]
        assert progress[-1].done and progress[-1].batches_enqueued == 4

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=20) == 0
        assert (await backend.open(QUEUE).depth()).visible == 4
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await backend.close()


async def _listening_port(proc: asyncio.subprocess.Process) -> int:
    assert proc.stderr is not None
    while line := await proc.stderr.readline():
        match = re.search(rb"enqueuer listening on [\d.]+:(\d+)", line)
        if match:
            return int(match.group(1))
    raise AssertionError("the enqueuer exited before listening")


async def staged(config: Config, req: enqueuer_pb2.EnqueueRequest) -> enqueuer_pb2.EnqueueRequest:
    """The request with its items staged as the gateway stages them (a JSON Lines file under the data dir)."""
    item_list = req.submission.item_list
    spool = Staging(config).spool(ItemSizes(item_list.batch_size, None), hold_bytes=0)
    spool.add(list(item_list.items))
    staged_req = enqueuer_pb2.EnqueueRequest()
    staged_req.CopyFrom(req)
    staged_req.submission.item_list.ClearField("items")
    await spool.finish(staged_req.submission.item_list)
    assert staged_req.submission.item_list.HasField("staged")
    return staged_req


async def test_a_staged_list_makes_the_batches_and_ids_the_same_items_inline_make(stack: Stack) -> None:
    inline = request(1_001, 10)
    await enqueue(stack, inline)
    expected = await receive_all(stack.queue)
    await stack.backend.delete(QUEUE)
    await stack.backend.create(QUEUE, visibility_s=30)

    progress = await enqueue(stack, await staged(stack.config, inline))

    assert (progress[-1].batches_enqueued, progress[-1].items_enqueued, progress[-1].done) == (101, 1_001, True)
    assert await receive_all(stack.queue) == expected and len(expected) == 101


async def test_a_staged_list_read_cut_short_is_resumed_by_calling_again(stack: Stack) -> None:
    # Given a staged list of 3,000 batches whose Enqueue call is cut off after its first chunk (as a crash would)
    req = await staged(stack.config, request(3_000, 1))
    call = stack.stub.Enqueue(req)
    async for progress in call:
        assert not progress.done
        call.cancel()
        break
    assert 0 < (await stack.queue.depth()).visible < 3_000

    # When it is called again, then every batch is on the queue once
    progress = await enqueue(stack, req)
    assert progress[-1].done and progress[-1].batches_enqueued == 3_000
    assert sorted(await receive_all(stack.queue)) == [f"{JOB_ID}-{i:06d}" for i in range(3_000)]
