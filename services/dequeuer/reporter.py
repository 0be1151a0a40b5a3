"""Reports to the monitor over one long-lived `Monitor.Report` stream, each one kept until the monitor acks it.

The monitor acks a report once it is durably written. A report goes at once when the stream is idle; reports queued
while the monitor has not yet acked the last message go together in the next one, so a busy dequeuer sends fewer,
fuller messages, and an idle one sends without delay. A broken stream (the monitor restarting) is reopened with
backoff and every unacked report is sent again, in order; the monitor drops the repeats. A stream refused for this
dequeuer's token (UNAUTHENTICATED, PERMISSION_DENIED) is not: the same token would be refused again, so `refused` is
set and the dequeuer stops (exit EXIT_TOKEN_REFUSED).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator

import grpc

from services.dequeuer.mailbox import Mailbox
from thresher.core import rpc
from thresher.core.aiotasks import create_guarded_task
from thresher.core.config import TlsSettings
from thresher.core.names import GRPC_TOKEN_KEY
from thresher.v1 import jobs_pb2, monitor_pb2, monitor_pb2_grpc

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 2.0
MAX_GROUP = 500  # reports in one stream message, at most
REFUSALS = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)  # the token's fault: never retried

Body = monitor_pb2.BatchReport | monitor_pb2.WorkerReport | jobs_pb2.HookOutcome
_FIELD = {monitor_pb2.BatchReport: "batch", monitor_pb2.WorkerReport: "worker", jobs_pb2.HookOutcome: "hook"}


class Reporter:
    """`await record(body)` returns once the monitor has acked the report; `send(body)` does not wait."""

    def __init__(
        self,
        address: str,
        job_id: str,
        worker_id: str,
        token: str,  # this worker's (thresher/core/trust.py): it reports for its own job and worker only
        api_name: str = "",
        queue_name: str = "",
        tls: TlsSettings | None = None,  # the monitor's mutual TLS (config.tls); None: plaintext
    ) -> None:
        self._address = address
        self._metadata = ((GRPC_TOKEN_KEY, token),)
        self._tls = tls or TlsSettings()
        self._job_id = job_id
        self._worker_id = worker_id
        self._api_name = api_name
        self._queue_name = queue_name
        # Seqs start at the clock (µs) so that a restarted dequeuer with the same worker id never reuses one.
        self._next_seq = time.time_ns() // 1000
        self._unacked: dict[int, tuple[monitor_pb2.Report, asyncio.Future[monitor_pb2.ReportAck]]] = {}  # seq order
        self._outbox: Mailbox[monitor_pb2.Report] | None = None  # the open stream's, if any
        self._channel: grpc.aio.Channel | None = None
        self._task: asyncio.Task[None] | None = None
        self._urgent = False  # an urgent report is queued: the next message goes without waiting for the last ack
        self._wake: asyncio.Future[None] | None = None  # set to send the next message now
        self.refused = asyncio.Event()  # the monitor refused the token: no report will ever be acked
        self.last_sent = -math.inf  # time.monotonic() of the last report queued: any report says this worker is alive

    def start(self) -> None:
        self._channel = rpc.channel(self._address, self._tls)
        self._task = create_guarded_task(self._run(monitor_pb2_grpc.MonitorStub(self._channel)), "monitor-reports")

    async def close(self) -> None:
        """Stop reporting; reports still unacked are dropped."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()
        for _, future in self._unacked.values():
            future.cancel()
        self._unacked.clear()

    @property
    def unacked(self) -> int:
        return len(self._unacked)

    def send(self, body: Body, urgent: bool = False) -> asyncio.Future[monitor_pb2.ReportAck]:
        """Queue a report; the future completes with the monitor's ack. `urgent`: it goes at once, without waiting
        for the ack of the message before (a batch just received: until the monitor knows it, a loss of this
        process would leave the batch invisible for the whole visibility timeout)."""
        seq = self._next_seq
        self._next_seq += 1
        report = monitor_pb2.Report(
            seq=seq,
            job_id=self._job_id,
            worker_id=self._worker_id,
            api_name=self._api_name,
            queue_name=self._queue_name,
        )
        getattr(report, _FIELD[type(body)]).CopyFrom(body)
        future: asyncio.Future[monitor_pb2.ReportAck] = asyncio.get_running_loop().create_future()
        self._unacked[seq] = (report, future)
        self.last_sent = time.monotonic()
        if self._outbox is not None:
            self._outbox.put(report)
        if urgent:
            self._urgent = True
            if self._wake is not None and not self._wake.done():
                self._wake.set_result(None)
        return future

    async def record(self, body: Body, timeout_s: float | None = None) -> monitor_pb2.ReportAck:
        """Report and wait for the monitor's ack (for ever by default); TimeoutError after `timeout_s`."""
        # Shielded: a caller that gives up must not cancel the report itself, which is still sent and acked.
        return await asyncio.wait_for(asyncio.shield(self.send(body)), timeout_s)

    async def _run(self, stub: monitor_pb2_grpc.MonitorAsyncStub) -> None:
        backoff_s = BACKOFF_MIN_S
        while True:
            outbox = self._outbox = Mailbox(report for report, _ in self._unacked.values())
            try:
                async for acks in stub.Report(self._drain(outbox), metadata=self._metadata):
                    backoff_s = BACKOFF_MIN_S
                    for ack in acks.acks:
                        self._acked(ack)
                log.warning("the monitor closed the report stream; reopening it")
            except grpc.aio.AioRpcError as e:
                if e.code() in REFUSALS:
                    log.error(
                        "the monitor at %s refused this dequeuer's token (%s: %s); giving up: the services' internal"
                        " secrets differ (see README.md, Trust between services)",
                        self._address,
                        e.code().name,
                        e.details(),
                    )
                    self.refused.set()
                    return
                log.warning(
                    "report stream to the monitor at %s broke (%s: %s); %d reports unacked, retrying in %.2f s",
                    self._address,
                    e.code().name,
                    e.details(),
                    len(self._unacked),
                    backoff_s,
                )
            except Exception:
                log.exception("report stream to the monitor failed; retrying in %.2f s", backoff_s)
            self._outbox = None
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)

    async def _ack_or_urgent(self, ack: asyncio.Future[monitor_pb2.ReportAck]) -> None:
        """Wait for `ack` (not cancelling it if this stream closes), or for an urgent report."""
        wake = self._wake = asyncio.get_running_loop().create_future()

        def wake_up(_: object) -> None:
            if not wake.done():
                wake.set_result(None)

        ack.add_done_callback(wake_up)
        try:
            await wake
        finally:
            ack.remove_done_callback(wake_up)
            self._wake = None

    def _acked(self, ack: monitor_pb2.ReportAck) -> None:
        entry = self._unacked.pop(ack.seq, None)
        if entry is not None and not entry[1].done():
            entry[1].set_result(ack)

    async def _drain(self, outbox: Mailbox[monitor_pb2.Report]) -> AsyncIterator[monitor_pb2.Reports]:
        """One message at a time: what is queued once the monitor has acked the message before.

        Writing a message costs the event loop about 0.1 ms: with a message per report, reports would be half of a
        busy dequeuer's work. Waiting for the ack groups them by the pace of the monitor's commits, not a timer.
        """
        last: int | None = None  # the last report of the message sent before
        while True:
            await outbox.wait()
            waiting = outbox.items
            reports = [waiting.popleft()]
            if not self._urgent and last is not None and (entry := self._unacked.get(last)) is not None:
                await self._ack_or_urgent(entry[1])
            self._urgent = False
            while waiting and len(reports) < MAX_GROUP:
                reports.append(waiting.popleft())
            last = reports[-1].seq
            yield monitor_pb2.Reports(reports=reports)
