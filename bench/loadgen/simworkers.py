"""`python -m bench.loadgen.simworkers PLAN OUT`: simulated dequeuers, many in one process, one asyncio loop.

Each speaks the real contracts as a dequeuer does: its own channel and `Monitor.Report` stream, with the token its
runtime handed it (thresher/core/runtime/external.py), batches received from the job's real queue (the queue
backend's API), a STARTED report at once for what it received, a SUCCEEDED report after each batch's chosen
duration, the queue's ack once the monitor acked, heartbeats, and the job's `job_complete` message answered with a
hook outcome (the bench API has no hook). A `lost` worker drops its stream while it holds batches, as a killed pod
does, and ends. Reports go in groups as a dequeuer's reporter sends them: one message at a time, the next (all that
queued meanwhile) once the monitor has acked the last. With `synthetic_batches` in the plan, each worker makes up
that many batches instead of receiving them (SyntheticBatches): the monitor alone is measured, not the queue.

Written to OUT (JSON): counts, a sample of report-to-ack times, and per job when its last batch was done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from thresher.core import rpc
from thresher.core.config import load_config
from thresher.core.errors import QueueNotFound
from thresher.core.names import GRPC_TOKEN_KEY
from thresher.core.queue import KIND_JOB_COMPLETE, Batch, Delivery, Queue, QueueBackend, open_queue_backend
from thresher.v1 import jobs_pb2, monitor_pb2, monitor_pb2_grpc

SAMPLE = 50_000  # report-to-ack times kept per process (a uniform sample)
RECEIVE_WAIT_S = 0.5
REOPEN_S = 0.05  # pause before a broken report stream is opened again
STOPPING = monitor_pb2.WorkerReport(phase=monitor_pb2.WORKER_PHASE_STOPPING)


@dataclass
class Tally:
    """What this process saw, for the scenario to add up."""

    reports: int = 0
    messages: int = 0
    reopened: int = 0  # report streams that broke and were opened again
    acked: int = 0
    batches: int = 0
    first_sent: float = 0.0
    last_acked: float = 0.0
    ack_ms: list[float] = field(default_factory=list)
    last_batch_acked: dict[str, float] = field(default_factory=dict)  # job id -> time.time()
    # job id -> time.time() when its last batch was done, its report sent: where settling starts
    last_batch_done: dict[str, float] = field(default_factory=dict)
    cpu_s: float = 0.0  # this process's, all along

    def ack(self, sent: float, now: float) -> None:
        self.acked += 1
        self.last_acked = now
        ms = (now - sent) * 1000
        if len(self.ack_ms) < SAMPLE:
            self.ack_ms.append(ms)
        elif (slot := random.randrange(self.acked)) < SAMPLE:
            self.ack_ms[slot] = ms


class Stream:
    """One worker's report stream: `send` queues a report, the returned future completes with its ack. A stream that
    breaks is opened again and what is unacked sent again, as a dequeuer's reporter does (the monitor drops repeats).
    """

    def __init__(self, stub: monitor_pb2_grpc.MonitorAsyncStub, worker: dict[str, Any], tally: Tally) -> None:
        self._worker = worker
        self._tally = tally
        self._seq = time.time_ns() // 1000
        self._outbox: asyncio.Queue[monitor_pb2.Report] | None = None  # the open stream's
        self._waiting: dict[int, tuple[float, monitor_pb2.Report, asyncio.Future[monitor_pb2.ReportAck]]] = {}
        self._call: Any = None
        self._task = asyncio.create_task(self._run(stub))
        self.last_sent = -math.inf  # time.monotonic() of the last report queued (a heartbeat goes after none for h)

    def send(self, **body: Any) -> asyncio.Future[monitor_pb2.ReportAck]:
        self._seq += 1
        w = self._worker
        report = monitor_pb2.Report(
            seq=self._seq, job_id=w["job_id"], worker_id=w["worker_id"], api_name=w["api_name"],
            queue_name=w["queue_name"], **body,
        )  # fmt: skip
        future: asyncio.Future[monitor_pb2.ReportAck] = asyncio.get_running_loop().create_future()
        now = time.time()
        self.last_sent = time.monotonic()
        self._waiting[self._seq] = (now, report, future)
        self._tally.reports += 1
        self._tally.first_sent = self._tally.first_sent or now
        if self._outbox is not None:
            self._outbox.put_nowait(report)
        return future

    def drop(self) -> None:
        """Hang up without a word, as a killed pod does."""
        self._task.cancel()
        if self._call is not None:
            self._call.cancel()

    async def close(self) -> None:
        await self.send(worker=STOPPING)
        self.drop()

    async def _run(self, stub: monitor_pb2_grpc.MonitorAsyncStub) -> None:
        metadata = ((GRPC_TOKEN_KEY, self._worker["token"]),)
        while True:
            outbox: asyncio.Queue[monitor_pb2.Report] = asyncio.Queue()
            for _, report, _ in self._waiting.values():
                outbox.put_nowait(report)
            self._outbox = outbox
            self._call = stub.Report(self._messages(outbox), metadata=metadata)
            with contextlib.suppress(grpc.aio.AioRpcError):
                async for message in self._call:
                    now = time.time()
                    for ack in message.acks:
                        if (entry := self._waiting.pop(ack.seq, None)) is not None:
                            self._tally.ack(entry[0], now)
                            entry[2].set_result(ack)
            self._outbox = None
            self._tally.reopened += 1
            await asyncio.sleep(REOPEN_S)

    async def _messages(self, outbox: asyncio.Queue[monitor_pb2.Report]) -> AsyncIterator[monitor_pb2.Reports]:
        last: asyncio.Future[monitor_pb2.ReportAck] | None = None  # the ack of the last message's last report
        while True:
            reports = [await outbox.get()]
            if last is not None:
                await asyncio.wait([last])
            while not outbox.empty():
                reports.append(outbox.get_nowait())
            last = self._waiting[reports[-1].seq][2] if reports[-1].seq in self._waiting else None
            self._tally.messages += 1
            yield monitor_pb2.Reports(reports=reports)


class SyntheticBatches:
    """The few verbs of a queue a simulated worker uses, over `count` made-up batches; then gone, as a job's queue
    once it ends."""

    def __init__(self, name: str, count: int) -> None:
        self.name = name
        self.calls: dict[str, int] = {}
        self._made = 0
        self._count = count

    async def receive(self, max_batches: int, wait_s: float) -> list[Delivery]:
        if self._made >= self._count:
            raise QueueNotFound(f"{self.name}: every synthetic batch was handed out")
        first, self._made = self._made, min(self._count, self._made + max_batches)
        return [Delivery(Batch(f"{self.name}-{i:09d}", b""), f"r{i}", 1) for i in range(first, self._made)]

    async def ack(self, deliveries: list[Delivery]) -> None:
        """Nothing to delete."""


class SimWorker:
    def __init__(
        self, plan: dict[str, Any], worker: dict[str, Any], queue: Queue | SyntheticBatches, tally: Tally
    ) -> None:
        self._plan = plan
        self._worker = worker
        self._queue = queue
        self._tally = tally
        self._channel = rpc.channel(plan["monitor"])
        self._stream = Stream(monitor_pb2_grpc.MonitorStub(self._channel), worker, tally)

    async def run(self) -> None:
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            await self._work()
        except QueueNotFound:
            await self._stream.close()  # the job is over
        finally:
            heartbeat.cancel()
            await self._channel.close()

    async def _heartbeat(self) -> None:
        """As the dequeuer's: a heartbeat only after `heartbeat_s` without any report."""
        period_s = self._plan["heartbeat_s"]
        while True:
            quiet_s = time.monotonic() - self._stream.last_sent
            if quiet_s >= period_s:
                calls = jobs_pb2.QueueCalls(source=self._worker["worker_id"], calls=self._queue.calls)
                report = monitor_pb2.WorkerReport(phase=monitor_pb2.WORKER_PHASE_READY, queue_calls=calls)
                self._stream.send(worker=report)
                quiet_s = 0.0
            await asyncio.sleep(period_s - quiet_s)

    async def _work(self) -> None:
        done = 0
        while True:
            deliveries = await self._queue.receive(self._plan["prefetch"], RECEIVE_WAIT_S)
            hooks = [d for d in deliveries if d.batch.kind == KIND_JOB_COMPLETE]
            batches = [d for d in deliveries if d.batch.kind != KIND_JOB_COMPLETE]
            if batches:
                started = [self._stream.send(batch=_report(d, monitor_pb2.BATCH_RESULT_STARTED)) for d in batches]
                if self._worker.get("lost") and done >= self._plan["lose_after"]:
                    await asyncio.gather(*started)  # the monitor knows it holds them: it must release them
                    self._stream.drop()
                    return
                await self._run(batches)
                done += len(batches)
            for hook in hooks:
                outcome = jobs_pb2.HookOutcome(
                    called=True, succeeded=True, http_status=404, attempts=hook.receive_count
                )
                await self._stream.send(hook=outcome)
                await self._queue.ack([hook])

    async def _run(self, batches: list[Delivery]) -> None:
        duration_s = self._plan["duration_s"]
        acks = []
        for delivery in batches:
            if duration_s:
                await asyncio.sleep(duration_s)
            report = _report(delivery, monitor_pb2.BATCH_RESULT_SUCCEEDED, duration_s)
            acks.append(self._stream.send(batch=report))
        self._tally.last_batch_done[self._worker["job_id"]] = time.time()
        await asyncio.gather(*acks)
        await self._queue.ack(batches)  # only once the monitor has them, as a dequeuer does
        self._tally.batches += len(batches)
        self._tally.last_batch_acked[self._worker["job_id"]] = time.time()


def _report(delivery: Delivery, result: monitor_pb2.BatchResult.ValueType, duration_s: float = 0.0) -> Any:
    return monitor_pb2.BatchReport(
        batch_id=delivery.batch.batch_id,
        attempt=delivery.receive_count,
        result=result,
        duration_s=duration_s,
        receipt=delivery.receipt if result == monitor_pb2.BATCH_RESULT_STARTED else "",
    )


async def simulate(plan: dict[str, Any]) -> Tally:
    os.environ.update(plan["env"])  # the settings a dequeuer gets: the queue's, the monitor's address
    config = load_config()
    backend: QueueBackend = open_queue_backend(config)
    plan.setdefault("monitor", config.addresses.monitor)
    tally = Tally()
    synthetic = plan.get("synthetic_batches", 0)
    try:
        workers = [
            SimWorker(
                plan,
                w,
                SyntheticBatches(w["worker_id"], synthetic) if synthetic else backend.open(w["queue_name"]),
                tally,
            )
            for w in plan["workers"]
        ]
        await asyncio.gather(*(w.run() for w in workers), return_exceptions=False)
    except grpc.aio.AioRpcError as e:
        raise SystemExit(f"report stream failed: {e.code().name}: {e.details()}") from e
    finally:
        await backend.close()
    return tally


def main(argv: list[str]) -> int:
    plan_file, out_file = argv
    plan = json.loads(Path(plan_file).read_text(encoding="utf-8"))
    tally = asyncio.run(simulate(plan))
    tally.cpu_s = time.process_time()
    Path(out_file).write_text(json.dumps(tally.__dict__), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
