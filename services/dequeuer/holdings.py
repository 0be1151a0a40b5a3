"""The batches a dequeuer holds (received, not settled yet), kept invisible on the queue for as long as it holds them.

One background loop extends them all, in groups, rather than a timer per batch: batches that settle within a third of
the visibility timeout, the usual case, cost no extension at all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Iterable

from thresher.core.errors import QueueNotFound
from thresher.core.queue import Delivery, Queue

log = logging.getLogger(__name__)


class Holdings:
    def __init__(self, queue: Queue, visibility_s: float) -> None:
        self._queue = queue
        self._visibility_s = visibility_s
        self._held: dict[str, Delivery] = {}  # receipt -> delivery, with the latest known `held_until`

    def __len__(self) -> int:
        return len(self._held)

    def add(self, deliveries: Iterable[Delivery]) -> None:
        self._held.update((d.receipt, d) for d in deliveries)

    def drop(self, deliveries: Iterable[Delivery]) -> None:
        for delivery in deliveries:
            self._held.pop(delivery.receipt, None)

    def all(self) -> list[Delivery]:
        return list(self._held.values())

    def surely_held(self, delivery: Delivery) -> bool:
        """Held, with at least a third of its visibility left: no need to ask the queue before it starts."""
        current = self._held.get(delivery.receipt)
        return current is not None and current.held_until - time.monotonic() >= self._visibility_s / 3

    async def still_held(self, delivery: Delivery) -> bool:
        """Before a batch starts: False if its visibility ran out while it waited and another worker may have it.

        The queue is asked only when the batch's time is short, which the background extensions normally prevent.
        """
        if self.surely_held(delivery):
            return True
        current = self._held.get(delivery.receipt)
        return current is not None and not await self._extend([current])

    async def keep_invisible(self) -> None:
        """Every third of the visibility timeout, extend each held batch that has used a third of its time."""
        while True:
            await asyncio.sleep(self._visibility_s / 3)
            now = time.monotonic()
            due = [d for d in self._held.values() if d.held_until - now < self._visibility_s * 2 / 3]
            if not due:
                continue
            try:
                lost = await self._extend(due)
            except QueueNotFound:
                return  # the job ended; whoever settles a batch next finds out
            except Exception:
                log.exception("could not extend the visibility of %d batches; trying again", len(due))
                continue
            for delivery in lost:
                log.warning(
                    "lost batch %s: its visibility expired before it could be extended", delivery.batch.batch_id
                )

    async def _extend(self, deliveries: list[Delivery]) -> list[Delivery]:
        asked_at = time.monotonic()
        lost = await self._queue.extend(deliveries, self._visibility_s)
        gone = {d.receipt for d in lost}
        for delivery in deliveries:
            if delivery.receipt in gone:
                self._held.pop(delivery.receipt, None)
            elif delivery.receipt in self._held:  # not settled meanwhile
                self._held[delivery.receipt] = dataclasses.replace(delivery, held_until=asked_at + self._visibility_s)
        return lost
