"""Writing a job's batches to its queue, chunk by chunk, reporting progress after each chunk."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from services.enqueuer.sources import Cut, cut_input, read_through
from thresher.core.queue import Queue
from thresher.core.rpc import retry_unavailable
from thresher.core.staging import Staging
from thresher.core.store import ObjectStores
from thresher.v1 import jobs_pb2

log = logging.getLogger(__name__)

SEND_CHUNK = 500  # batches per queue.send: one transaction (SQLite) or 50 SendMessageBatch calls (SQS)
SEND_RETRY_S = 30.0  # how long a chunk is retried while the queue backend is unavailable


@dataclass(frozen=True)
class Progress:
    batches_enqueued: int
    items_enqueued: int
    done: bool = False


async def enqueue_input(
    queue: Queue,
    job_id: str,
    submission: jobs_pb2.JobSubmission,
    stores: ObjectStores,
    staging: Staging,
    chunk_bytes: int,
    chunk_size: int = SEND_CHUNK,
) -> AsyncIterator[Progress]:
    """Send every batch of the input (checked by check_input, then read through: nothing is sent from an input that
    fails midway); yield progress after each chunk, then done=True.

    Batch ids are deterministic and the queue ignores ids it already holds (SQS: for 5 minutes), so calling this
    again for the same job (after a crash) sends nothing twice and fills any gap.
    """
    await read_through(submission, job_id, stores, staging, chunk_bytes)
    sent = items = 0
    chunk: list[Cut] = []
    async for cut in cut_input(submission, job_id, stores, staging, chunk_bytes):
        chunk.append(cut)
        if len(chunk) == chunk_size:
            await _send(queue, chunk)
            sent, items, chunk = sent + len(chunk), items + sum(c.items for c in chunk), []
            yield Progress(sent, items)
    if chunk:
        await _send(queue, chunk)
        sent, items = sent + len(chunk), items + sum(c.items for c in chunk)
        yield Progress(sent, items)
    log.info("enqueued %d batches (%d items) on %s", sent, items, queue.name)
    yield Progress(sent, items, done=True)


async def _send(queue: Queue, chunk: list[Cut]) -> None:
    batches = [cut.batch for cut in chunk]
    await retry_unavailable(lambda: queue.send(batches), deadline_s=SEND_RETRY_S)
