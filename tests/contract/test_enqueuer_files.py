"""The Enqueuer over real gRPC reading file sources (Cortex's file_path_lister and delimited_files) from local files
and from S3 on moto's server, writing to a real queue.

Files are read in ranges of a few bytes here, so that values are cut at range boundaries all the time.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from services.enqueuer.server import create_server
from tests.contract.test_object_store import Tree, local_tree, s3_settings, s3_tree
from tests.contract.test_queue_contract import sqs_settings
from tests.helpers import Signed, stack_trust
from thresher.core import trust
from thresher.core.config import Config, InputSettings
from thresher.core.queue import Queue, open_queue_backend
from thresher.core.rpc import channel
from thresher.v1 import enqueuer_pb2, enqueuer_pb2_grpc, jobs_pb2

JOB_ID = "7fffabc123"
QUEUE = "files-7fffabc123"
CHUNK_BYTES = 7


def scheduler_stub(chan: grpc.aio.Channel, config: Config) -> Signed:
    """The Enqueuer's stub as the scheduler calls it: with its token."""
    return Signed(enqueuer_pb2_grpc.EnqueuerStub(chan), stack_trust(config).token(trust.SCHEDULER))


@dataclass
class Stack:
    stub: Signed  # an EnqueuerStub whose calls are the scheduler's
    queue: Queue
    tree: Tree


@pytest.fixture(params=["local", "s3"])
def tree(request: pytest.FixtureRequest, tmp_path: Path) -> Tree:
    if request.param == "s3":
        return s3_tree(request.getfixturevalue("aws_endpoint"))
    return local_tree(tmp_path / "inputs")


@pytest.fixture
def chunk_bytes() -> int:
    return CHUNK_BYTES


@pytest.fixture
def config(tree: Tree, chunk_bytes: int, request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    inputs = InputSettings(local_roots="/")  # local trees live in tmp_path
    if tree.root.startswith("s3://"):
        inputs = s3_settings(request.getfixturevalue("aws_endpoint"))
    inputs.read_chunk_bytes = chunk_bytes
    return Config(data_dir=tmp_path / "data", inputs=inputs)


@pytest.fixture
async def stack(config: Config, tree: Tree) -> AsyncIterator[Stack]:
    backend = open_queue_backend(config)
    await backend.create(QUEUE, visibility_s=30)
    stack_trust(config)  # the stack secret, as `thresher up` makes it
    server, port = await create_server(config, "127.0.0.1:0")
    async with channel(f"127.0.0.1:{port}") as chan:
        yield Stack(scheduler_stub(chan, config), backend.open(QUEUE), tree)
    await server.stop(None)
    await backend.close()


def submission(source: str, paths: list[str], batch_size: int, **globs: list[str]) -> enqueuer_pb2.EnqueueRequest:
    sub = jobs_pb2.JobSubmission(api_name="files", workers=1)
    getattr(sub, source).CopyFrom(jobs_pb2.FileSource(paths=paths, batch_size=batch_size, **globs))
    return enqueuer_pb2.EnqueueRequest(job_id=JOB_ID, queue_name=QUEUE, submission=sub)


async def enqueue(stack: Stack, req: enqueuer_pb2.EnqueueRequest) -> list[enqueuer_pb2.EnqueueProgress]:
    return [p async for p in stack.stub.Enqueue(req)]


async def enqueue_error(stack: Stack, req: enqueuer_pb2.EnqueueRequest) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await enqueue(stack, req)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value.details() or ""


async def received(queue: Queue) -> dict[str, bytes]:
    bodies: dict[str, bytes] = {}
    while deliveries := await queue.receive(10, wait_s=0):
        bodies.update({d.batch.batch_id: d.batch.body for d in deliveries})
    return dict(sorted(bodies.items()))


async def test_listed_files_are_batched_across_paths_after_the_globs(stack: Stack) -> None:
    t = stack.tree
    for name in ("a/1.jpg", "a/2.jpg", "a/skip.txt", "a/x3.jpg", "b/4.jpg", "c/5.jpg"):
        t.put(name, b"...")
    req = submission(
        "file_path_lister", [t.path("a/"), t.path("b")], 2, includes=["**.jpg"], excludes=[f"{t.root}/**/x*"]
    )

    progress = await enqueue(stack, req)

    assert (progress[-1].batches_enqueued, progress[-1].items_enqueued, progress[-1].done) == (2, 3, True)
    assert await received(stack.queue) == {
        f"{JOB_ID}-000000": f'["{t.path("a/1.jpg")}","{t.path("a/2.jpg")}"]'.encode(),
        f"{JOB_ID}-000001": f'["{t.path("b/4.jpg")}"]'.encode(),
    }


async def test_delimited_files_become_batches_of_json_values_across_files(stack: Stack) -> None:
    t = stack.tree
    t.put("in/1.jsonl", b'{"n": 1}\n{"n": 2, "s": "a \\" } ] quote"}\n\n[3, {"x": [4]}]\r\n')
    t.put("in/2.json", b'  "five"\n6 true null\n{\n  "pretty": "\xc3\xa9t\xc3\xa9"\n}\n-7.5e3')
    t.put("in/3.jsonl", b"")

    progress = await enqueue(stack, submission("delimited_files", [t.path("in/")], 2))

    assert (progress[-1].batches_enqueued, progress[-1].items_enqueued) == (5, 9)
    bodies = await received(stack.queue)
    assert list(bodies.values()) == [
        b'[{"n": 1},{"n": 2, "s": "a \\" } ] quote"}]',
        b'[[3, {"x": [4]}],"five"]',
        b"[6,true]",
        b'[null,{\n  "pretty": "\xc3\xa9t\xc3\xa9"\n}]',
        b"[-7.5e3]",
    ], "every value kept byte for byte, a batch may span two files"
    assert [json.loads(body) for body in bodies.values()][3][1] == {"pretty": "été"}


async def test_enqueuing_files_again_resumes_without_duplicates(stack: Stack) -> None:
    t = stack.tree
    t.put("in/1.jsonl", b"".join(b"%d\n" % i for i in range(25)))
    req = submission("delimited_files", [t.path("in/")], 10)

    first = await enqueue(stack, req)
    second = await enqueue(stack, req)

    for last in (first[-1], second[-1]):
        last.ClearField("queue_calls")  # each call counts its own, under a name of its own
        assert last == enqueuer_pb2.EnqueueProgress(batches_enqueued=3, items_enqueued=25, done=True)
    bodies = await received(stack.queue)
    assert list(bodies) == [f"{JOB_ID}-{i:06d}" for i in range(3)]
    assert sum(len(json.loads(b)) for b in bodies.values()) == 25


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"ok": 1}\n{"bad": tru}\n', "item 1: not valid JSON: Expecting value"),
        (b"1\n2\n{'single': 1}\n", "item 2: not valid JSON"),
        (b"1 2 3abc\n", "item 2: not valid JSON: Extra data"),
        (b'[1, 2}\n"x"', "item 0: not valid JSON"),
        (b"NaN\n", "item 0: not valid JSON: NaN is not valid JSON"),
        (b'1\n{"cut": [1, 2', "item 1: the file ends inside this JSON value"),
        (b'"unterminated', "item 0: the file ends inside this JSON value"),
        (b'1\n"\xff\xfe"\n', "not UTF-8 text (near byte 3)"),
    ],
)
async def test_bad_content_fails_naming_the_file_and_item(stack: Stack, content: bytes, problem: str) -> None:
    stack.tree.put("in/bad.jsonl", content)

    details = await enqueue_error(stack, submission("delimited_files", [stack.tree.path("in/")], 10))

    assert details.startswith(f"delimited_files: {stack.tree.path('in/bad.jsonl')}: ")
    assert problem in details


@pytest.mark.parametrize("chunk_bytes", [64 * 1024])  # ranges smaller than an item, not tiny: that would be slow
async def test_an_item_over_the_size_limit_fails_naming_it(stack: Stack) -> None:
    big = b'{"text": "' + b"x" * 300_000 + b'"}'
    stack.tree.put("in/big.jsonl", b"1\n" + big + b"\n2\n")

    details = await enqueue_error(stack, submission("delimited_files", [stack.tree.path("in/")], 10))

    assert f"{stack.tree.path('in/big.jsonl')}: item 1: cannot enqueue message because its size of" in details
    assert "exceeds the 256000 bytes limit" in details


async def test_paths_that_match_no_file_fail_clearly(stack: Stack) -> None:
    stack.tree.put("in/a.txt", b"1")

    details = await enqueue_error(
        stack, submission("delimited_files", [stack.tree.path("in/")], 1, includes=["*.json"])
    )

    files = "s3 files" if stack.tree.root.startswith("s3://") else "files"  # Cortex's words for S3 paths
    assert details == f"delimited_files: no {files} match search criteria"


@pytest.mark.parametrize(
    ("paths", "globs", "problem"),
    [
        ([], {}, "delimited_files: s3_paths: must contain at least 1 elements"),
        (["relative/path"], {}, "must be absolute"),
        (["s3:///key"], {}, "with a bucket"),
        (["http://host/x"], {}, "expected s3://bucket[/key], file:///path or an absolute local path"),
        (["/in"], {"includes": ["[abc"]}, "delimited_files: includes: '[abc' is not a valid glob: unclosed ["),
        (["/in"], {"excludes": ["{a,b"]}, "delimited_files: excludes: '{a,b' is not a valid glob"),
    ],
)
async def test_bad_paths_and_globs_are_refused_before_anything_is_read(
    stack: Stack, paths: list[str], globs: dict[str, list[str]], problem: str
) -> None:
    assert problem in await enqueue_error(stack, submission("delimited_files", paths, 1, **globs))


async def test_a_delimited_file_on_s3_reaches_an_sqs_queue(aws_endpoint: str, tmp_path: Path) -> None:
    tree = s3_tree(aws_endpoint, "jobs")
    tree.put("in/items.jsonl", b"".join(b'{"n": %d}\n' % i for i in range(95)))
    inputs = s3_settings(aws_endpoint)
    inputs.read_chunk_bytes = 100
    config = Config(data_dir=tmp_path, queue=sqs_settings(aws_endpoint), inputs=inputs)
    backend = open_queue_backend(config)
    await backend.create(QUEUE, visibility_s=30)
    stack_trust(config)  # the stack secret, as `thresher up` makes it
    server, port = await create_server(config, "127.0.0.1:0")
    try:
        async with channel(f"127.0.0.1:{port}") as chan:
            stack = Stack(scheduler_stub(chan, config), backend.open(QUEUE), tree)
            progress = await enqueue(stack, submission("delimited_files", ["s3://jobs/in"], 10))
        assert (progress[-1].batches_enqueued, progress[-1].items_enqueued) == (10, 95)
        bodies = await received(stack.queue)
        assert [json.loads(b) for b in bodies.values()] == [[{"n": n} for n in range(i, min(i + 10, 95))] for i in
                                                             range(0, 95, 10)]  # fmt: skip
    finally:
        await server.stop(None)
        await backend.close()
