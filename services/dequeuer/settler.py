"""Settling batches on the queue once the monitor has acked their outcome: successes acked together, failures
released, dead-lettered or split as the monitor's ack says (`ReportAck.dead_letter` / `split`, the verdict of the
retry policy, thresher/core/retries.py; the dequeuer never counts attempts). A batch split has its two halves sent as
new batches before it is acked: a dequeuer lost in between leaves it to be delivered again, never lost.

It runs beside the batches: the worker gets its next batch while the last one's report travels to the monitor and
its ack to the queue, and the queue's acks go in groups (one transaction, or one call per 10 on SQS). A batch is
never acked on the queue before the monitor has acked its report, so the ledger never misses a batch the queue has
forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from services.dequeuer.holdings import Holdings
from services.dequeuer.mailbox import Mailbox
from thresher.core.bisect import halves
from thresher.core.errors import QueueNotFound
from thresher.core.logs import batch_id_var
from thresher.core.queue import Batch, Delivery, Queue
from thresher.v1 import monitor_pb2

log = logging.getLogger(__name__)

# Outcomes settled together: one transaction on SQLite (a queue transaction and a thread hand-off cost about as much
# for 40 batches as for 10), or SQS batch calls of 10 entries made at once (as many calls as groups of 10 would make).
GROUP_MAX = 40
# How long a group waits to fill up once its first outcome is in: fewer, fuller queue calls, at no cost to the
# worker (it is never waiting for them), and too short to matter to a failed batch waiting for its release.
LINGER_S = 0.02


@dataclass(slots=True)
class _Outcome:
    """One per batch (not to be changed: not frozen only because that makes it slower)."""

    delivery: Delivery
    report: asyncio.Future[monitor_pb2.ReportAck]  # the monitor's ack of the batch's report
    error: str  # empty when the batch succeeded


class Settler:
    def __init__(self, queue: Queue, holdings: Holdings, max_unsettled: int) -> None:
        self._queue = queue
        self._holdings = holdings
        self._inbox: Mailbox[_Outcome] = Mailbox()
        self._max_unsettled = max_unsettled
        self._unsettled = 0  # outcomes added, not settled yet
        self._room = asyncio.Event()  # set when an outcome was settled
        self._group_full = asyncio.Event()
        self.queue_gone = asyncio.Event()  # the queue was deleted: the job is over
        self.succeeded = self.failed = self.dead_lettered = self.split = 0

    def has_room(self) -> bool:
        return self._unsettled < self._max_unsettled

    async def wait_for_room(self) -> None:
        """Wait while `max_unsettled` batches are unsettled (the monitor is slow): call before running a batch."""
        while self._unsettled >= self._max_unsettled:
            self._room.clear()
            await self._room.wait()

    def add(self, delivery: Delivery, report: asyncio.Future[monitor_pb2.ReportAck], error: str = "") -> None:
        """Settle the batch once `report` is acked (wait_for_room keeps the number unsettled near the limit)."""
        self._unsettled += 1
        self._inbox.put(_Outcome(delivery, report, error))
        if len(self._inbox.items) >= GROUP_MAX - 1:  # with the one the settler holds, a full group
            self._group_full.set()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every outcome added is settled; False if some are not after `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._unsettled:
                    self._room.clear()
                    await self._room.wait()
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """Settle the outcomes in the order added, in groups of up to GROUP_MAX, each once its reports are acked."""
        waiting = self._inbox.items
        while True:
            await self._inbox.wait()
            group = [waiting.popleft()]
            if len(waiting) < GROUP_MAX - 1:
                self._group_full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._group_full.wait(), LINGER_S)
            while len(group) < GROUP_MAX and waiting:
                group.append(waiting.popleft())
            # Acks come in order, a stream message at a time: awaiting each wakes this task about once per message
            # (gather would schedule a callback per batch). Cancelled here (the dequeuer stops before the monitor
            # acked them), the group stays held: it is released.
            acks = [await outcome.report for outcome in group]
            try:
                await self._settle(group, acks)
            except QueueNotFound:
                self.queue_gone.set()
            except Exception:
                log.exception("could not settle %d batches; they come back after their visibility timeout", len(group))
            finally:
                self._holdings.drop(outcome.delivery for outcome in group)
                self._unsettled -= len(group)
                self._room.set()

    async def _settle(self, group: list[_Outcome], acks: list[monitor_pb2.ReportAck]) -> None:
        done = [outcome.delivery for outcome in group if not outcome.error]
        split = [outcome.delivery for outcome, ack in zip(group, acks, strict=True) if outcome.error and ack.split]
        failed = [
            (outcome, ack.dead_letter)
            for outcome, ack in zip(group, acks, strict=True)
            if outcome.error and not ack.split
        ]
        if split:
            await self._queue.send([Batch(*half) for d in split for half in halves(d.batch.batch_id, d.batch.body)])
            for delivery in split:
                log.warning("batch %s split in two after its last attempt", delivery.batch.batch_id)
        await self._queue.ack(done + split)
        self.succeeded += len(done)
        self.split += len(split)
        await self._queue.release([outcome.delivery for outcome, dead in failed if not dead])
        for outcome, dead in failed:
            batch_id = outcome.delivery.batch.batch_id
            batch_id_var.set(batch_id)
            if dead:
                await self._queue.dead_letter(outcome.delivery, outcome.error)
                self.dead_lettered += 1
                log.warning("batch %s dead-lettered after its last attempt: %s", batch_id, outcome.error)
            else:
                self.failed += 1
                log.warning(
                    "batch %s failed (delivery %d): %s", batch_id, outcome.delivery.receive_count, outcome.error
                )
        batch_id_var.set("")
