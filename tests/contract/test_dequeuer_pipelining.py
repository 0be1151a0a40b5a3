"""The dequeuer and the worker helper (thresher.worker), which takes pipelined requests: the next batch is written
before the answer to the one in progress. Each batch still runs once, one at a time, in order; a batch the worker
closed its connection on without reading it is sent again, or released when the dequeuer is stopping."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.contract.test_dequeuer import Harness, Result, Running, all_done, make_harness, until
from tests.helpers import assert_eventually
from thresher.core.queue import Depth
from thresher.worker import BatchContext, WorkerServer, make_server

GATE_TIMEOUT_S = 10.0  # a gated batch ends by then even if the test never opens its gate


class HelperWorker:
    """The worker helper in this process: records each batch's start and end; sleeps on chosen batches, or holds
    them until the test opens their gate; can be told to start stopping (answers then close their connection) when
    a chosen batch ends."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, float, float]] = []  # (batch id, start, end)
        self.sleep_s: dict[str, float] = {}
        self.gates: dict[str, threading.Event] = {}
        self.stop_after: str | None = None
        self.server: WorkerServer = make_server(self.handle_batch, spec_path="")
        self.port = self.server.port
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def handle_batch(self, items: list[Any], ctx: BatchContext) -> None:
        started = time.monotonic()
        time.sleep(self.sleep_s.get(ctx.batch_id, 0))
        if (gate := self.gates.get(ctx.batch_id)) is not None:
            gate.wait(GATE_TIMEOUT_S)
        self.runs.append((ctx.batch_id, started, time.monotonic()))
        if ctx.batch_id == self.stop_after:
            self.server.stopping = True  # as serve() on SIGTERM: this answer says Connection: close

    def gate(self, batch_id: str) -> threading.Event:
        """Hold `batch_id` in the worker until the event returned is set."""
        return self.gates.setdefault(batch_id, threading.Event())

    def batch_ids(self) -> list[str]:
        return [batch_id for batch_id, _, _ in self.runs]

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        for gate in self.gates.values():
            gate.set()
        self.server.stop(grace_s=5)
        self._thread.join(timeout=5)


def ahead(running: Running) -> str | None:
    """The id of the batch the dequeuer has written behind the running one."""
    delivery = running.dequeuer.pipeline.ahead
    return delivery.batch.batch_id if delivery is not None else None


@pytest.fixture
def helper() -> Iterator[HelperWorker]:
    worker = HelperWorker()
    worker.start()
    yield worker
    worker.close()


@pytest.fixture
async def h(tmp_path: Path, helper: HelperWorker) -> AsyncIterator[Harness]:
    harness = await make_harness(tmp_path, visibility_s=30.0)
    harness.worker.port = helper.port  # the dequeuers talk to the helper; the harness's aiohttp worker is unused
    try:
        yield harness
    finally:
        await harness.close()


async def test_pipelined_batches_each_run_once_one_at_a_time_in_order(h: Harness, helper: HelperWorker) -> None:
    # Given 40 batches, some slow enough for the next one to wait in the connection behind them
    batch_ids = [f"b{i:02d}" for i in range(40)]
    helper.sleep_s = {b: 0.01 for b in batch_ids[::3]}
    await h.send(*batch_ids)

    # When one dequeuer feeds them to the helper
    running = h.start_dequeuer()
    await assert_eventually(all_done(h), timeout_s=20)

    # Then each ran once, in the queue's order, never two at a time; each succeeded at its first attempt
    assert helper.batch_ids() == batch_ids
    assert all(end <= next_start for (_, _, end), (_, next_start, _) in zip(helper.runs, helper.runs[1:], strict=False))
    assert running.dequeuer.pipeline.pipelined > 0  # batches went behind others: the helper takes pipelined requests
    for batch_id in batch_ids:
        assert h.monitor.results(batch_id) == [(Result.BATCH_RESULT_SUCCEEDED, 1)]


async def test_a_pipelined_batch_the_worker_closed_on_unread_is_sent_again(h: Harness, helper: HelperWorker) -> None:
    # Given a worker that closes its connection after answering b03, with b04 already written behind it
    batch_ids = [f"b{i:02d}" for i in range(8)]
    b03 = helper.gate("b03")
    helper.stop_after = "b03"
    await h.send(*batch_ids)
    running = h.start_dequeuer()
    await assert_eventually(until(lambda: ahead(running) == "b04"), timeout_s=10)

    # When the worker answers b03 and the dequeuer goes on
    b03.set()
    await assert_eventually(all_done(h), timeout_s=20)

    # Then b04 is sent again on a new connection: every batch ran once and succeeded, no attempt failed
    assert helper.batch_ids() == batch_ids
    assert h.monitor.batch_reports(Result.BATCH_RESULT_FAILED) == []
    assert h.monitor.batch_reports(Result.BATCH_RESULT_RELEASED) == []


async def test_a_stopping_dequeuer_releases_a_pipelined_batch_the_worker_did_not_read(
    h: Harness, helper: HelperWorker
) -> None:
    # Given b1 running (held in the worker), b2 pipelined behind it, and a worker that stops after b1 (as on SIGTERM)
    b1 = helper.gate("b1")
    helper.stop_after = "b1"
    await h.send("b0")
    running = h.start_dequeuer()
    await assert_eventually(all_done(h), timeout_s=10)  # b0 teaches the dequeuer that the helper pipelines
    await h.send("b1", "b2")
    await assert_eventually(until(lambda: ahead(running) == "b2"), timeout_s=10)

    # When the dequeuer is stopped while b1 runs, which then ends
    running.dequeuer.stop()
    b1.set()
    assert await asyncio.wait_for(running.task, 10) == 0

    # Then b1 finishes and is acked, and b2, never read by the worker, is released without using an attempt
    assert helper.batch_ids() == ["b0", "b1"]
    assert h.monitor.results("b1") == [(Result.BATCH_RESULT_SUCCEEDED, 1)]
    assert h.monitor.results("b2") == [(Result.BATCH_RESULT_RELEASED, 1)]
    assert await h.depth() == Depth(visible=1, in_flight=0, dead=0)
