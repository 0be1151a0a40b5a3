"""Pipelining: a worker that takes pipelined requests (the worker helper says so in its answers) gets the next batch
before it answers the one in progress, and finds it waiting when it does, without two wake-ups of this process in
between. Never the hook, nor a batch whose hold must be checked with the queue first.
"""

from __future__ import annotations

import asyncio

from services.dequeuer.holdings import Holdings
from services.dequeuer.receiving import Receiver
from services.dequeuer.settler import Settler
from services.dequeuer.worker import Call, Outcome, WorkerClient
from thresher.core.queue import KIND_JOB_COMPLETE, Delivery


class Pipeline:
    """The batch the worker runs, and the one written behind it (taken from the receiver)."""

    def __init__(
        self,
        worker: WorkerClient,
        receiver: Receiver,
        holdings: Holdings,
        settler: Settler,
        stopping: asyncio.Event,
        batch_timeout_s: float,
    ) -> None:
        self._worker = worker
        self._receiver = receiver
        self._holdings = holdings
        self._settler = settler
        self._stopping = stopping
        self._batch_timeout_s = batch_timeout_s
        self._running: Call | None = None  # the batch the worker is running, until its answer is read
        self._ahead: tuple[Delivery, Call] | None = None  # pipelined behind the running batch
        self.pipelined = 0  # batches written behind another

    @property
    def ahead(self) -> Delivery | None:
        """The batch written behind the running one: it runs next, whatever happens."""
        return self._ahead[0] if self._ahead is not None else None

    def take(self, delivery: Delivery) -> Call | None:
        """The call of `delivery` if it is the batch ahead, which the worker starts now (done with the one before)."""
        if self._ahead is None or self._ahead[0] is not delivery:
            return None
        (_, call), self._ahead = self._ahead, None
        call.start()
        return call

    async def outcome(self, call: Call) -> Outcome:
        """Wait for the answer to the running `call`, with the next batch written behind it if it can be."""
        self._running = call
        try:
            await self.send_ahead()
            return await call.outcome()
        finally:
            self._running = None

    async def send_ahead(self) -> None:
        """Write the next batch waiting behind the running one, if the worker takes that and none is there yet."""
        running = self._running
        if running is None or not running.pipelinable or self._ahead is not None or self._stopping.is_set():
            return
        nxt = self._receiver.peek()
        if nxt is None or nxt.batch.kind == KIND_JOB_COMPLETE or not self._holdings.surely_held(nxt):
            return
        if not self._settler.has_room():
            return
        self._receiver.take()  # (no await between the checks and here: nothing else took it)
        call = await self._worker.send_batch(nxt.batch, nxt.receive_count, self._batch_timeout_s, running)
        self._ahead = (nxt, call)
        self.pipelined += 1
