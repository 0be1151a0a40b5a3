"""A job's input as a stream of batches: inline items, pre-cut batches (a retry), or files (Cortex's file sources).

Batches are produced lazily, so a job of any size needs memory for one chunk of batches only. Ids are
`<job_id>-<index>` whatever the source: reading the same input again gives the same ids (see enqueue.py).
File sources have no batch count up front, so their indexes have the minimum width (6 digits) and grow past it; a
staged item list (thresher/core/staging.py) is read as a stream too, but its count is known: its ids are as inline.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass

from services.enqueuer.batching import batch_count, check_items, cut_batches
from services.enqueuer.delimited import json_values
from thresher.core.errors import InvalidRequest
from thresher.core.ids import MIN_INDEX_DIGITS, batch_id, index_width
from thresher.core.queue import Batch
from thresher.core.sources import BATCHES, ITEM_LIST, file_query, no_files_found, source_of
from thresher.core.staging import Staging
from thresher.core.store import ObjectInfo, ObjectStores
from thresher.core.store.select import matching_files
from thresher.v1 import jobs_pb2

STAGED_CHUNK_BYTES = 1024 * 1024  # a staged item list's lines are small: read in ranges of this size, memory flat


@dataclass(frozen=True)
class Cut:
    batch: Batch
    items: int  # how many items the batch holds


def check_input(submission: jobs_pb2.JobSubmission) -> None:
    """InvalidRequest naming the problem when the submission's input cannot be enqueued; nothing is read yet."""
    source = source_of(submission)
    if source == ITEM_LIST:
        batch_count(_item_count(submission.item_list), submission.item_list.batch_size)  # raises on a bad batch_size
        check_items(submission.item_list.items)
    elif source == BATCHES:
        for index, body in enumerate(submission.batches):
            if not body.strip().startswith(b"["):
                raise InvalidRequest(f"batches[{index}]: must be a JSON array of items")
    else:
        file_query(submission, source)


async def read_through(
    submission: jobs_pb2.JobSubmission, job_id: str, stores: ObjectStores, staging: Staging, chunk_bytes: int
) -> None:
    """Cut a file source once, keeping nothing: an error anywhere in it (no file, an unreadable one, a bad item) is
    raised before the first batch is sent, so a job whose enqueuing fails never gave a worker any work (its workers
    start before enqueuing ends). An item list cannot fail midway: check_input has seen all of it, or the gateway
    all of its staged file as it wrote it."""
    if source_of(submission) not in (ITEM_LIST, BATCHES):
        async for _ in cut_input(submission, job_id, stores, staging, chunk_bytes):
            pass


async def cut_input(
    submission: jobs_pb2.JobSubmission, job_id: str, stores: ObjectStores, staging: Staging, chunk_bytes: int
) -> AsyncIterator[Cut]:
    """Every batch of the submission's input, in order (call check_input first)."""
    source = source_of(submission)
    if source == ITEM_LIST and submission.item_list.HasField("staged"):
        items = submission.item_list
        width = index_width(batch_count(items.staged.count, items.batch_size))
        staged = json_values(*staging.reader(items.staged), min(chunk_bytes, STAGED_CHUNK_BYTES))
        async for cut in _cut(job_id, staged, items.batch_size, width):
            yield cut
    elif source == ITEM_LIST:
        items = submission.item_list
        for index, batch in enumerate(cut_batches(job_id, items.items, items.batch_size)):
            yield Cut(batch, len(items.items[index * items.batch_size : (index + 1) * items.batch_size]))
    elif source == BATCHES:
        for index, body in enumerate(submission.batches):
            yield Cut(Batch(batch_id(job_id, index), body), len(json.loads(body)))
    else:
        query = file_query(submission, source)
        batch_size = getattr(submission, source).batch_size
        files = matching_files(stores, query)
        if source == "file_path_lister":
            paths = _paths(files, source, query.paths)
            async for cut in _cut(job_id, _encoded_paths(paths), batch_size):
                yield cut
        else:
            async for cut in _cut(job_id, _items(files, source, query.paths, stores, chunk_bytes), batch_size):
                yield cut


async def _paths(files: AsyncIterator[ObjectInfo], source: str, prefixes: Sequence[str]) -> AsyncIterator[str]:
    found = False
    async for info in files:
        found = True
        yield info.path
    if not found:
        raise no_files_found(source, prefixes)


async def _encoded_paths(paths: AsyncIterator[str]) -> AsyncIterator[bytes]:
    async for path in paths:
        yield json.dumps(path, ensure_ascii=False).encode("utf-8")


async def _items(
    files: AsyncIterator[ObjectInfo], source: str, prefixes: Sequence[str], stores: ObjectStores, chunk_bytes: int
) -> AsyncIterator[bytes]:
    found = False
    async for info in files:
        found = True
        try:
            async for item in json_values(stores.for_path(info.path), info, chunk_bytes):
                yield item
        except InvalidRequest as e:
            raise e.within(source) from e
    if not found:
        raise no_files_found(source, prefixes)


async def _cut(
    job_id: str, items: AsyncIterator[bytes], batch_size: int, width: int = MIN_INDEX_DIGITS
) -> AsyncIterator[Cut]:
    """Batches of `batch_size` items, across files: a batch may hold the end of one file and the start of the next."""
    index, buffer = 0, []
    async for item in items:
        buffer.append(item)
        if len(buffer) == batch_size:
            yield _batch(job_id, index, buffer, width)
            index, buffer = index + 1, []
    if buffer:
        yield _batch(job_id, index, buffer, width)


def _batch(job_id: str, index: int, items: Iterable[bytes], width: int) -> Cut:
    items = list(items)
    return Cut(Batch(batch_id(job_id, index, width), b"[" + b",".join(items) + b"]"), len(items))


def _item_count(item_list: jobs_pb2.ItemList) -> int:
    return item_list.staged.count if item_list.HasField("staged") else len(item_list.items)
