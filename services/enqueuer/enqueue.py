"""Writing a job's batches to its queue, chunk by chunk, reporting progress after each chunk."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from services.enqueuer.batching import batch_count, check_items, chunked, cut_batches
from thresher.errors import InvalidRequest
from thresher.queue import Queue
from thresher.rpc import retry_unavailable
from thresher.v1 import jobs_pb2

log = logging.getLogger(__name__)

SEND_CHUNK = 500  # batches per queue.send: one transaction (SQLite) or 50 SendMessageBatch calls (SQS)
SEND_RETRY_S = 30.0  # how long a chunk is retried while the queue backend is unavailable


@dataclass(frozen=True)
class Progress:
    batches_enqueued: int
    items_enqueued: int
    done: bool = False


def item_list_of(submission: jobs_pb2.JobSubmission) -> jobs_pb2.ItemList:
    """The submission's inline items, checked; other sources are refused until they are supported."""
    for source in ("file_path_lister", "delimited_files"):
        if submission.HasField(source):
            raise InvalidRequest(f"{source} is not supported yet by the enqueuer; use item_list")
    if not submission.HasField("item_list"):
        raise InvalidRequest("the submission has no input: expected item_list")
    item_list = submission.item_list
    batch_count(len(item_list.items), item_list.batch_size)  # raises on a bad batch_size
    check_items(item_list.items)
    return item_list


async def enqueue_items(
    queue: Queue, job_id: str, item_list: jobs_pb2.ItemList, chunk_size: int = SEND_CHUNK
) -> AsyncIterator[Progress]:
    """Send every batch of `item_list`; yield progress after each chunk, then once more with done=True.

    Batch ids are deterministic and the queue ignores ids it already holds, so calling this again for the
    same job (after a crash) sends nothing twice and fills any gap.
    """
    items, batch_size = item_list.items, item_list.batch_size
    sent = 0
    for chunk in chunked(cut_batches(job_id, items, batch_size), chunk_size):
        await retry_unavailable(lambda chunk=chunk: queue.send(chunk), deadline_s=SEND_RETRY_S)
        sent += len(chunk)
        yield Progress(sent, min(sent * batch_size, len(items)))
    log.info("enqueued %d batches (%d items) on %s", sent, len(items), queue.name)
    yield Progress(sent, len(items), done=True)
