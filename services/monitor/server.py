"""The Monitor gRPC service, its /metrics endpoint and their lifecycle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from services.monitor.accounting import Result
from services.monitor.ledger import Ledger
from services.monitor.metrics import start_metrics_server
from services.monitor.monitor import Monitor
from services.monitor.notifier import Notifier
from services.monitor.wire import decode_queue_calls, decode_report, encode_progress
from thresher.core import rpc, trust
from thresher.core.aiotasks import create_guarded_task, until_stop_signal
from thresher.core.config import Config
from thresher.core.queue import QueueBackend, open_queue_backend
from thresher.v1 import jobs_pb2, monitor_pb2, monitor_pb2_grpc, scheduler_pb2_grpc

log = logging.getLogger(__name__)

GRACE_S = 5.0
MAX_GROUP = 500  # reports recorded in one transaction, at most
INBOX_SIZE = 16  # stream messages read ahead of the ledger; beyond this the stream pushes back on the sender
SCHEDULER_CALL_TIMEOUT_S = 10.0
# Reconnect to a restarted scheduler within seconds, not after gRPC's default backoff of up to two minutes.
_END = object()


class MonitorServicer(monitor_pb2_grpc.MonitorServicer):
    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor
        self._readers: set[asyncio.Task[None]] = set()  # one per open report stream
        self._ending = asyncio.Event()  # set by end_streams()

    def end_streams(self) -> None:
        """Stopping: end every report stream once what it read is recorded and acked. Streams never end by
        themselves, and held open they would keep a stopping server for its whole grace period while it refuses new
        calls: ended, their dequeuers reconnect at once (to the restarted monitor) and send again what is unacked."""
        self._ending.set()
        for reader in self._readers:
            reader.cancel()

    async def Report(
        self, request_iterator: AsyncIterator[monitor_pb2.Reports], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[monitor_pb2.ReportAcks]:
        sender = rpc.peer()  # a dequeuer, whose token speaks for its own job and worker only
        inbox: asyncio.Queue[Any] = asyncio.Queue(INBOX_SIZE)
        reader = asyncio.create_task(_read_into(request_iterator, inbox, self._ending))
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)
        workers: set[tuple[str, str]] = set()  # (job id, worker id) seen on this stream
        try:
            while True:
                group, end = await _next_group(inbox)
                if group:
                    # First: a refused group leaves nothing behind, not even the workers it names marked lost
                    senders = {(r.job_id, r.worker_id) for r in group}  # a few, for hundreds of reports
                    for job_id, worker_id in senders:
                        sender.check_speaks_for(job_id, worker_id)
                    workers.update(pair for pair in senders if pair[1])
                    names = {r.job_id: (r.api_name, r.queue_name) for r in group}
                    verdicts = await self._monitor.record([decode_report(r) for r in group], names)
                    yield monitor_pb2.ReportAcks(
                        acks=[_ack(report.seq, verdicts.get(i)) for i, report in enumerate(group)]
                    )
                if end is _END:
                    return
                if isinstance(end, BaseException):
                    raise end
        finally:
            reader.cancel()
            # However the stream ended (a killed sender often looks like a clean end): a worker that did not say
            # it was stopping is lost. worker_gone() checks that.
            for job_id, worker_id in workers:
                create_guarded_task(
                    self._monitor.worker_gone(job_id, worker_id, "its report stream ended"), f"lost {worker_id}"
                )

    async def TrackJob(
        self, request: monitor_pb2.TrackJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> monitor_pb2.TrackJobResponse:
        await self._monitor.track(request.job_id, request.api_name, request.total_batch_count)
        return monitor_pb2.TrackJobResponse()

    async def RecordQueueCalls(
        self, request: monitor_pb2.RecordQueueCallsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> monitor_pb2.RecordQueueCallsResponse:
        calls = [decode_queue_calls(c, f"queue_calls[{i}]") for i, c in enumerate(request.queue_calls)]
        await self._monitor.record_queue_calls(request.job_id, request.api_name, calls)
        return monitor_pb2.RecordQueueCallsResponse()

    async def GetSettledBatches(
        self, request: monitor_pb2.SettledBatchesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> monitor_pb2.SettledBatches:
        batch_ids = await self._monitor.settled_batches(request.job_id, request.from_batch_id, request.limit)
        return monitor_pb2.SettledBatches(batch_ids=batch_ids)

    async def GetJobProgress(
        self, request: jobs_pb2.JobRef, context: grpc.aio.ServicerContext[Any, Any]
    ) -> monitor_pb2.JobProgress:
        return encode_progress(request.job_id, await self._monitor.progress(request.job_id, request.api_name))


async def _read_into(
    requests: AsyncIterator[monitor_pb2.Reports], inbox: asyncio.Queue[Any], ending: asyncio.Event
) -> None:
    try:
        async for message in requests:
            await inbox.put(list(message.reports))
    except asyncio.CancelledError:
        if not ending.is_set():
            raise  # the call ended: nobody reads the inbox any more
        # end_streams(): the stream ends cleanly after what was read
    except Exception as e:  # handed to the writer, which ends the call with it
        await inbox.put(e)
        return
    await inbox.put(_END)


async def _next_group(inbox: asyncio.Queue[Any]) -> tuple[list[monitor_pb2.Report], Any]:
    """The reports of the messages that arrived together (waiting for the first), and the end marker if the stream
    ended."""
    group: list[monitor_pb2.Report] = []
    item = await inbox.get()
    while isinstance(item, list):
        group += item
        if len(group) >= MAX_GROUP or inbox.empty():
            return group, None
        item = inbox.get_nowait()
    return group, item


class MonitorServer:
    """The running monitor: gRPC server, /metrics server, notifier and ledger, stopped together."""

    def __init__(
        self,
        grpc_server: grpc.aio.Server,
        metrics_runner: web.AppRunner,
        metrics_port: int,
        notifier: Notifier,
        scheduler_channel: grpc.aio.Channel,
        ledger: Ledger,
        queues: QueueBackend,
        heartbeats: asyncio.Task[None],
        monitor: Monitor,
        servicer: MonitorServicer,
    ) -> None:
        self.grpc_server = grpc_server
        self._servicer = servicer
        self.metrics_port = metrics_port
        self._metrics_runner = metrics_runner
        self._notifier = notifier
        self._scheduler_channel = scheduler_channel
        self._ledger = ledger
        self._queues = queues
        self._heartbeats = heartbeats
        self._monitor = monitor

    async def wait_for_termination(self) -> None:
        await self.grpc_server.wait_for_termination()

    async def stop(self, grace_s: float | None = GRACE_S) -> None:
        self._monitor.stopping = True  # streams cut by our own stop say nothing about the workers
        self._heartbeats.cancel()
        self._servicer.end_streams()
        await self.grpc_server.stop(grace_s)  # the grace is for unary calls under way: the streams end at once
        await self._metrics_runner.cleanup()
        await self._notifier.close()
        await self._scheduler_channel.close()
        await self._ledger.close()
        await self._queues.close()


async def create_server(config: Config, address: str) -> tuple[MonitorServer, int]:
    """Serve thresher.v1.Monitor on `address` and /metrics on config.addresses.monitor_metrics; returns the gRPC port.

    The /metrics port is `server.metrics_port`. Settlements the scheduler did not acknowledge are sent again.
    """
    stack = trust.load(config)
    ledger = Ledger(Path(config.data_dir) / "monitor" / "ledger.db")
    channel = rpc.channel(config.addresses.scheduler, config.tls)
    token = stack.token(trust.MONITOR)
    scheduler = rpc.Client(scheduler_pb2_grpc.SchedulerStub(channel), token, timeout_s=SCHEDULER_CALL_TIMEOUT_S)
    notifier = Notifier(ledger, scheduler)
    queues = open_queue_backend(config)
    monitor = Monitor(ledger, notifier, queues, config.monitor.heartbeat_timeout_s)
    try:
        metrics_runner, metrics_port = await start_metrics_server(ledger, config.addresses.monitor_metrics)
    except Exception:
        await channel.close()
        await ledger.close()
        raise
    servicer = MonitorServicer(monitor)
    try:
        registration = (monitor_pb2_grpc.add_MonitorServicer_to_server, servicer, "thresher.v1.Monitor")
        grpc_server, port = await rpc.start_server(address, [registration], stack, config.tls)
    except Exception:
        await metrics_runner.cleanup()
        await channel.close()
        await ledger.close()
        raise
    await monitor.resume()
    heartbeats = create_guarded_task(monitor.watch_heartbeats(), "watch heartbeats")
    server = MonitorServer(
        grpc_server, metrics_runner, metrics_port, notifier, channel, ledger, queues, heartbeats, monitor, servicer
    )
    return server, port


async def serve(config: Config) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    server, port = await create_server(config, config.addresses.monitor)
    log.info("monitor serving gRPC on port %d and /metrics on port %d", port, server.metrics_port)
    await until_stop_signal()
    log.info("monitor stopping")
    await server.stop(GRACE_S)


def _ack(seq: int, verdict: Result | None) -> monitor_pb2.ReportAck:
    return monitor_pb2.ReportAck(seq=seq, dead_letter=verdict is Result.DEAD_LETTERED, split=verdict is Result.SPLIT)
