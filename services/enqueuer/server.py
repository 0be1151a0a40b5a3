"""The gRPC Enqueuer service: decodes requests, runs the enqueue loop, encodes progress."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from services.enqueuer.enqueue import enqueue_input
from services.enqueuer.sources import check_input
from thresher.core import trust
from thresher.core.aiotasks import until_stop_signal
from thresher.core.config import Config
from thresher.core.errors import InvalidRequest
from thresher.core.logs import job_id_var
from thresher.core.metrics import start_metrics_server
from thresher.core.names import METRIC_PREFIX
from thresher.core.queue import calls_source, open_queue_backend
from thresher.core.rpc import start_server
from thresher.core.staging import Staging
from thresher.core.store import ObjectStores
from thresher.v1 import enqueuer_pb2, enqueuer_pb2_grpc, jobs_pb2

log = logging.getLogger(__name__)

ENQUEUED = Counter(
    f"{METRIC_PREFIX}enqueued_batches", "Batches written to job queues (resends included).", ["api_name"]
)
ENQUEUE_SECONDS = Histogram(
    f"{METRIC_PREFIX}enqueue_duration_seconds", "Time to enqueue a job's input, per Enqueue call.", ["api_name"]
)

GRACE_S = 10.0  # on SIGTERM, running Enqueue calls get this long; an interrupted one is resumed by calling again


class EnqueuerServicer(enqueuer_pb2_grpc.EnqueuerServicer):
    def __init__(self, config: Config) -> None:
        self._config = config

    async def Enqueue(
        self, request: enqueuer_pb2.EnqueueRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[enqueuer_pb2.EnqueueProgress]:
        job_id_var.set(request.job_id)
        if not request.job_id or not request.queue_name:
            raise InvalidRequest("job_id and queue_name are required")
        check_input(request.submission)
        # One backend and one set of stores per call: calls are rare (one per job, or per resume) and nothing
        # stays open between them.
        backend, stores = open_queue_backend(self._config), ObjectStores(self._config.inputs)
        staging = Staging(self._config)
        api_name, started, sent = request.submission.api_name, time.perf_counter(), 0
        source = calls_source("enqueuer")  # this call's own backend counts from zero
        try:
            queue = backend.open(request.queue_name)
            progress_stream = enqueue_input(
                queue, request.job_id, request.submission, stores, staging, self._config.inputs.read_chunk_bytes
            )
            async for progress in progress_stream:
                ENQUEUED.labels(api_name).inc(progress.batches_enqueued - sent)
                sent = progress.batches_enqueued
                if progress.done:
                    ENQUEUE_SECONDS.labels(api_name).observe(time.perf_counter() - started)
                yield enqueuer_pb2.EnqueueProgress(
                    batches_enqueued=progress.batches_enqueued,
                    items_enqueued=progress.items_enqueued,
                    done=progress.done,
                    queue_calls=jobs_pb2.QueueCalls(source=source, calls=queue.calls),
                )
        finally:
            await stores.close()
            await staging.close()
            await backend.close()


async def create_server(config: Config, address: str) -> tuple[grpc.aio.Server, int]:
    """Serve thresher.v1.Enqueuer on `address` ("127.0.0.1:0" picks a port); returns the server and its port."""
    servicer = EnqueuerServicer(config)
    registration = (enqueuer_pb2_grpc.add_EnqueuerServicer_to_server, servicer, "thresher.v1.Enqueuer")
    return await start_server(address, [registration], trust.load(config), config.tls)


async def serve(config: Config, grace_s: float = GRACE_S) -> None:
    """Serve on config.addresses.enqueuer until SIGTERM or SIGINT, then stop gracefully."""
    server, port = await create_server(config, config.addresses.enqueuer)
    metrics, metrics_port = await start_metrics_server(config.addresses.enqueuer_metrics)
    host = config.addresses.enqueuer.rsplit(":", 1)[0]
    log.info("enqueuer listening on %s:%d, /metrics on port %d", host, port, metrics_port)
    await until_stop_signal()
    log.info("enqueuer stopping")
    await server.stop(grace_s)
    await metrics.cleanup()
