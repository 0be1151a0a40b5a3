"""The queue seam: one job's batches plus its dead letter queue, behind a few verbs.

Policy (attempt counting, when to dead-letter) stays above this seam: the monitor decides, the dequeuer carries it out.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass

KIND_BATCH = "batch"
KIND_JOB_COMPLETE = "job_complete"


@dataclass(frozen=True)
class Batch:
    batch_id: str  # deterministic (job id + index): sending it again is a no-op
    body: bytes  # a JSON array of items, or the job summary for a job_complete message
    kind: str = KIND_BATCH


@dataclass(frozen=True)
class Delivery:
    batch: Batch
    receipt: str  # the backend's handle for this one receive
    receive_count: int  # how many times the batch has been received, this one included
    # time.monotonic() until which this delivery surely holds its batch (its visibility timeout, counted from
    # before the call that received or extended it); 0 when unknown
    held_until: float = 0.0


@dataclass(frozen=True)
class DeadLetter:
    batch: Batch
    receive_count: int
    error: str


@dataclass(frozen=True)
class Depth:
    visible: int  # batches waiting to be received
    in_flight: int  # batches received and not yet acked, released or dead-lettered
    dead: int  # batches in the dead letter queue


class Queue(ABC):
    """One job's queue. Every method raises QueueNotFound once the queue is deleted."""

    name: str

    @abstractmethod
    async def send(self, batches: Sequence[Batch]) -> None: ...

    @abstractmethod
    async def receive(self, max_batches: int, wait_s: float) -> list[Delivery]:
        """Up to `max_batches` visible batches, made invisible for the queue's visibility timeout.

        Cancelling it loses nothing: what it was receiving at that moment is released (see `_received`).
        """

    # The verbs that settle deliveries take many at once: a dequeuer settles its batches in groups, and a group
    # costs one transaction (SQLite) or one call per 10 (SQS's batch calls), not one per batch.

    @abstractmethod
    async def extend(self, deliveries: Sequence[Delivery], visibility_s: float) -> list[Delivery]:
        """Keep the batches invisible `visibility_s` from now; returns the deliveries that no longer hold theirs."""

    @abstractmethod
    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Done: the batches are never delivered again."""

    @abstractmethod
    async def release(self, deliveries: Sequence[Delivery]) -> None:
        """Make the batches visible again at once."""

    @abstractmethod
    async def dead_letter(self, delivery: Delivery, error: str) -> None:
        """Move the batch to the dead letter queue with its last error."""

    @abstractmethod
    async def depth(self) -> Depth: ...

    async def _received(self, call: Awaitable[list[Delivery]]) -> list[Delivery]:
        """The deliveries of a backend call that receives. Cancelled meanwhile, it lets the call finish (it runs in a
        thread, and cannot be stopped) and releases what it got, so that a cancelled receive hides no batch."""
        task = asyncio.ensure_future(call)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):  # the queue is gone, or unreachable: the batches come back anyway
                await self.release(await task)
            raise

    @abstractmethod
    async def dead_letters(self) -> list[DeadLetter]: ...

    @property
    def calls(self) -> Mapping[str, int]:
        """The API calls this process made for this queue, by operation: running totals of what the queue costs (SQS
        bills per call). The SQLite queue makes none. `QueueBackend.delete` forgets them: keep this mapping from
        before the delete to see the calls it made."""
        return {}


def calls_source(role: str) -> str:
    """A name for this process's running totals of queue calls: `role` and a random part. Totals only grow, so a
    process that starts again must not take up its predecessor's name: its totals start from zero."""
    return f"{role} {uuid.uuid4().hex[:12]}"


class QueueBackend(ABC):
    """Creates, opens and deletes job queues."""

    @abstractmethod
    async def create(self, name: str, visibility_s: float, dead_letter_arn: str = "") -> str:
        """Create the queue and its dead letter queue if missing; returns its URL.

        `dead_letter_arn` names an existing dead letter queue to use instead of one of the queue's own
        (a submission's `sqs_dead_letter_queue.arn`); the backend never deletes such a queue.
        """

    @abstractmethod
    async def check_dead_letter_target(self, target: str) -> None:
        """InvalidRequest unless create() can use `target` as the job's dead letter queue: one the submission names
        (Cortex's `sqs_dead_letter_queue.arn`), which jobs may share. A backend without such queues refuses each."""

    @abstractmethod
    async def delete(self, name: str) -> None:
        """Delete the queue and its dead letter queue; deleting a missing queue is not an error."""

    @abstractmethod
    def open(self, name: str) -> Queue: ...

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""
