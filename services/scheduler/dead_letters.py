"""A job's dead letters, and what an ended job's clean-up waits for: every one of them written.

They are read only once every one is written, and the job's queue is not deleted before. The monitor counts a batch
dead-lettered when it tells the dequeuer to move it, so a settled job may still have a dead letter on its way, or one
left on the job's queue: a dequeuer that stopped, or failed to write it (an SQS that refused it). The clean-up, which
runs once the workers are stopped, moves those itself.
"""

from __future__ import annotations

import asyncio
import logging

from services.scheduler.jobs import JobRecord
from services.scheduler.views import failed_batch
from thresher.core.errors import ThresherError
from thresher.core.queue import Delivery, Queue
from thresher.v1 import jobs_pb2, scheduler_pb2

log = logging.getLogger(__name__)

RETRY_S = 2.0  # between two clean-ups of a job whose dead letters are not all written yet
MOVED_ERROR = "its last attempt failed; the batch was left on the job's queue, and moved here at the job's clean-up"


async def dead_letters_now(queue: Queue) -> list[jobs_pb2.FailedBatch]:
    """The dead letters on the queue now, as the job service shows them."""
    return [failed_batch(letter) for letter in await queue.dead_letters()]


async def written_dead_letters(queue: Queue, job: JobRecord) -> list[jobs_pb2.FailedBatch] | None:
    """The job's dead letters, once each batch the monitor dead-lettered is among them; None while some are not,
    after RETRY_S (those left on the job's queue are moved now: the next call finds them, or says what is missing)."""
    letters = await queue.dead_letters()
    missing = dead_lettered_ids(job) - {letter.batch.batch_id for letter in letters}
    if not missing:
        return [failed_batch(letter) for letter in letters]
    try:
        why = f"moved {await _move_left_behind(queue, missing)} of them from the job's queue now"
    except ThresherError as e:
        why = f"could not move them from the job's queue: {e}"
    log.warning(
        "job %s: %d dead-lettered batches were not in the dead letter queue (%s); its queue is kept until they are",
        job.job_id,
        len(missing),
        why,
        extra={"job_id": job.job_id},
    )
    await asyncio.sleep(RETRY_S)
    return None


def dead_lettered_ids(job: JobRecord) -> set[str]:
    """The batches the monitor dead-lettered, as its summary of a settled job lists them (none known otherwise)."""
    return set(scheduler_pb2.JobSummary.FromString(job.summary or b"").dead_lettered_batch_ids)


async def _move_left_behind(queue: Queue, batch_ids: set[str]) -> int:
    """Dead-letter the batches of `batch_ids` found on the job's queue (no worker takes from it any more); returns
    how many. One held by a stopped worker shows once its visibility timeout has passed."""
    moved = 0
    others: list[Delivery] = []
    while deliveries := await queue.receive(10, wait_s=0):
        for delivery in deliveries:
            if delivery.batch.batch_id in batch_ids:
                await queue.dead_letter(delivery, MOVED_ERROR)
                moved += 1
            else:
                others.append(delivery)
    await queue.release(others)
    return moved
