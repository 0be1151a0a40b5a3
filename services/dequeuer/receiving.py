"""Receiving ahead of the worker: a few batches are kept waiting, as many as the worker gets through in PREFETCH_S at
its recent pace, so that it never waits for the queue; and batches given back unrun (released, no attempt used).

Every batch received is held (holdings.py) and reported STARTED at once, before it runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from services.dequeuer.holdings import Holdings
from services.dequeuer.reporter import Reporter
from services.dequeuer.successes import Successes, batch_report
from thresher.core.errors import QueueNotFound
from thresher.core.queue import Delivery, Queue
from thresher.v1 import monitor_pb2

log = logging.getLogger(__name__)

RECEIVE_ERROR_BACKOFF_S = 1.0
# Batches received ahead of the worker: enough for PREFETCH_S of its recent pace (at least 1, at most receive_max).
# More would only leave other workers idle at the end of a job while this one still holds work.
PREFETCH_S = 0.02
PACE_WEIGHT = 0.2  # of the newest batch in the running mean of batch durations

_STARTED = monitor_pb2.BATCH_RESULT_STARTED  # as an int: the enum wrapper's attribute lookup costs more than a report


class Receiver:
    """Takes batches from the queue ahead of the worker and keeps them until they start (`next()`), or gives them
    back (`release()`). `on_received` runs after each receive (the pipeline's chance to write the next batch
    behind the running one)."""

    def __init__(
        self,
        queue: Queue,
        receive_max: int,
        wait_s: float,
        holdings: Holdings,
        reporter: Reporter,
        successes: Successes,
        stopping: asyncio.Event,
        queue_gone: asyncio.Event,
        on_received: Callable[[], Awaitable[None]],
        idle_s: float | None = None,
    ) -> None:
        self._queue = queue
        self._receive_max = receive_max
        self._wait_s = wait_s
        self._holdings = holdings
        self._reporter = reporter
        self._successes = successes
        self._stopping = stopping
        self._queue_gone = queue_gone
        self._on_received = on_received
        self._idle_s = idle_s
        self.idle = False  # found nothing to receive for idle_s: next() gave None, the dequeuer exits
        self._buffer: deque[Delivery] = deque()  # received, not started
        self._receiving: asyncio.Task[None] | None = None
        self._batch_s: float | None = None  # running mean of the worker's batch durations
        self._queue_error = ""  # why receives keep failing, until one succeeds

    @property
    def queue_error(self) -> str:
        """Why receives keep failing (empty once one succeeds): the heartbeats say it, and the job's status then."""
        return self._queue_error

    def peek(self) -> Delivery | None:
        """The batch to start next, left waiting."""
        return self._buffer[0] if self._buffer else None

    def take(self) -> Delivery:
        """The batch `peek()` gave (with no await in between: nothing else took it)."""
        return self._buffer.popleft()

    async def next(self) -> Delivery | None:
        """The next batch to run; None once stopping, or once nothing came for `idle_s` (then `idle` is set);
        QueueNotFound once the queue is gone."""
        waiting_since = time.monotonic()
        while not self._buffer:
            self._successes.flush()  # no batch ready: the receive may wait for a while
            if self._idle_s is not None and time.monotonic() - waiting_since >= self._idle_s:
                log.info("nothing to receive for %g s (idle_s): exiting, not to be replaced", self._idle_s)
                self.idle = True
                return None
            self.top_up()
            if self._receiving is None:
                return None  # stopping
            await asyncio.wait([self._receiving])  # not cancelled with us: the stop cancels it
            if self._queue_gone.is_set():
                raise QueueNotFound(f"queue {self._queue.name} is gone")
        delivery = self._buffer.popleft()
        self.top_up()
        return delivery

    def top_up(self) -> None:
        """Start receiving when the buffer runs low (half the batches wanted ahead), unless a receive is under way."""
        wanted = self._prefetch()
        if self._receiving is None and len(self._buffer) <= wanted // 2 and not self._stopping.is_set():
            self._receiving = asyncio.create_task(self._receive(wanted), name="receive")
            self._receiving.add_done_callback(self._received)

    def ran(self, duration_s: float) -> None:
        """A batch took the worker `duration_s`: its pace sets how many batches are received at a time."""
        self._batch_s = duration_s if self._batch_s is None else self._batch_s
        self._batch_s += PACE_WEIGHT * (duration_s - self._batch_s)

    async def stop(self, why: str) -> None:
        """Receive no more: cancel the receive under way (a cancelled receive releases what it got), release every
        batch waiting."""
        self._cancel_receive()
        await self.release(list(self._buffer), why)
        self._buffer.clear()

    async def close(self) -> None:
        """Cancel the receive under way and wait for its end; forget the batches waiting (still held: the caller
        releases what it holds)."""
        if (task := self._cancel_receive()) is not None:
            await asyncio.wait([task])
        self._buffer.clear()

    async def release(self, deliveries: list[Delivery], why: str) -> None:
        """Make batches visible again at once, reported RELEASED: no attempt used."""
        if not deliveries:
            return
        self._holdings.drop(deliveries)
        for delivery in deliveries:
            report = batch_report(delivery, monitor_pb2.BATCH_RESULT_RELEASED)
            report.error = why
            self._reporter.send(report)
        try:
            await self._queue.release(deliveries)
        except QueueNotFound:
            pass
        except Exception:
            log.exception(
                "could not release %d batches; they come back after their visibility timeout", len(deliveries)
            )

    def _received(self, task: asyncio.Task[None]) -> None:
        if self._receiving is task:
            self._receiving = None

    def _cancel_receive(self) -> asyncio.Task[None] | None:
        if (task := self._receiving) is not None:
            task.cancel()
        return task

    def _prefetch(self) -> int:
        """How many batches to receive at a time: as many as the worker gets through in PREFETCH_S."""
        if self._batch_s is None:
            return 1  # nothing known yet: a long batch must not hold others back
        return max(1, min(self._receive_max, int(PREFETCH_S / max(self._batch_s, 1e-6))))

    async def _receive(self, max_batches: int) -> None:
        try:
            deliveries = await self._queue.receive(max_batches, self._wait_s)
        except QueueNotFound:
            self._queue_gone.set()
            return
        except Exception as e:
            log.exception("receive from queue %s failed; trying again", self._queue.name)
            self._queue_error = str(e) or type(e).__name__
            await asyncio.sleep(RECEIVE_ERROR_BACKOFF_S)
            return
        self._queue_error = ""
        self._holdings.add(deliveries)
        self._successes.flush()  # in the same stream message as these STARTED reports
        for delivery in deliveries:
            # Lets the monitor release the batch at once if this worker is lost before it is settled.
            report = batch_report(delivery, _STARTED)
            report.receipt = delivery.receipt
            self._reporter.send(report, urgent=True)
        self._buffer.extend(deliveries)
        # Stopping, they wait for stop() or the wind-down to release them: a release here would be cancelled with this
        # receive by stop(), maybe before the queue's call started, and the batches would stay invisible.
        if not self._stopping.is_set():
            await self._on_received()
