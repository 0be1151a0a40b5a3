"""The gateway app: Cortex-compatible HTTP/JSON in front of the scheduler's Jobs gRPC service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from services.gateway.calls import JOBS, OPEN_ROUTES_KEY, authorize_middleware, load_open_routes_key
from services.gateway.events import job_events, job_logs
from services.gateway.middleware import (
    CORS_ORIGINS,
    LARGE_BODY_SLOTS,
    PROTOCOL_LOG,
    add_cors_headers,
    cors_middleware,
    cors_origins,
    error_middleware,
    large_body_middleware,
    request_log_middleware,
)
from services.gateway.openapi import openapi_document
from services.gateway.refusals import MAX_FIELD_BYTES, MAX_HEADERS, MAX_LINE_BYTES, GatewayRunner
from services.gateway.results import delete_results, read_results
from services.gateway.routes import CONFIG, add_routes
from services.gateway.ui import add_console_routes
from services.gateway.uploads import STAGING
from thresher.core import rpc, trust
from thresher.core.aiotasks import until_stop_signal
from thresher.core.config import Config
from thresher.core.metrics import metrics_handler, start_metrics_server
from thresher.core.staging import Staging
from thresher.v1 import jobs_pb2_grpc

log = logging.getLogger(__name__)

GRACE_S = 5.0  # how long requests in progress may take to finish after SIGTERM


def create_app(config: Config) -> web.Application:
    """The app; its channel to the scheduler opens on startup and closes on cleanup."""
    app = web.Application(
        client_max_size=config.gateway.max_body_bytes,
        middlewares=[
            request_log_middleware,
            cors_middleware,
            error_middleware,
            authorize_middleware,
            large_body_middleware,
        ],
    )
    app[CONFIG] = config
    app[CORS_ORIGINS] = cors_origins(config.gateway.cors_origins)
    app.on_response_prepare.append(add_cors_headers)
    if config.gateway.open_routes_key_file:
        app[OPEN_ROUTES_KEY] = load_open_routes_key(config.gateway.open_routes_key_file)
        log.warning(
            "gateway.open_routes_key_file is set: requests without an API key to Cortex's job routes"
            " (POST/GET/DELETE /batch/<api> and /<api>) act with the key in %s; only for a trusted network",
            config.gateway.open_routes_key_file,
        )
    app[LARGE_BODY_SLOTS] = asyncio.Semaphore(config.gateway.max_large_bodies)
    app.cleanup_ctx.append(_scheduler_client)
    app.cleanup_ctx.append(_staging)
    add_routes(app)
    app.router.add_get("/v1/jobs/{job_id}/events", job_events)
    app.router.add_get("/v1/jobs/{job_id}/logs", job_logs)
    app.router.add_get("/v1/jobs/{job_id}/results", read_results)
    app.router.add_delete("/v1/jobs/{job_id}/results", delete_results)
    app.router.add_get("/openapi.json", openapi_document)
    add_console_routes(app)
    if not config.addresses.gateway_metrics:
        app.router.add_get("/metrics", metrics_handler())  # open, like /healthz
    return app


async def _scheduler_client(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    token = trust.load(config).token(trust.GATEWAY)
    channel = rpc.channel(config.addresses.scheduler, config.tls)
    app[JOBS] = rpc.Client(jobs_pb2_grpc.JobsStub(channel), token)
    try:
        yield
    finally:
        await channel.close()


async def _staging(app: web.Application) -> AsyncIterator[None]:
    app[STAGING] = Staging(app[CONFIG])
    app[STAGING].remove_partial_files()
    try:
        yield
    finally:
        await app[STAGING].close()


async def serve(config: Config, grace_s: float = GRACE_S) -> None:
    """Serve on config.addresses.gateway (port 0 picks one) until SIGTERM or SIGINT."""
    runner = GatewayRunner(
        create_app(config),
        access_log=None,
        logger=PROTOCOL_LOG,
        shutdown_timeout=grace_s,
        keepalive_timeout=config.gateway.read_timeout_s,  # also closes a connection whose request never completes
        max_line_size=MAX_LINE_BYTES,
        max_field_size=MAX_FIELD_BYTES,
        max_headers=MAX_HEADERS,
    )
    await runner.setup()
    metrics = None
    try:
        host, port = split_address(config.addresses.gateway)
        await web.TCPSite(runner, host, port).start()
        log.info("gateway listening on %s:%d", host, runner.addresses[0][1])
        if config.addresses.gateway_metrics:
            metrics, metrics_port = await start_metrics_server(config.addresses.gateway_metrics)
            log.info("gateway /metrics on port %d", metrics_port)
        await until_stop_signal()
        log.info("gateway stopping")
    finally:
        await runner.cleanup()
        if metrics is not None:
            await metrics.cleanup()


def split_address(address: str) -> tuple[str, int]:
    """Split "host:port" or "[::1]:port" into host and port."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)
