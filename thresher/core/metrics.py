"""Prometheus metrics every service shares: its process, its gRPC requests, and one way to serve /metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.core import Metric

from thresher.core.errors import Unavailable
from thresher.core.names import METRIC_PREFIX

if TYPE_CHECKING:  # aiohttp is imported where it serves: every dequeuer imports this module (through thresher.core.rpc)
    from aiohttp import web  # and serves without it, and importing it costs ~0.2 s of CPU at each worker start

# prometheus_client's default registry already holds process_* and python_* series for this process.
GRPC_REQUESTS = Counter(
    f"{METRIC_PREFIX}grpc_requests", "gRPC requests served, by method and status code.", ["method", "code"]
)
GRPC_SECONDS = Histogram(
    f"{METRIC_PREFIX}grpc_request_duration_seconds", "Time to serve a gRPC request (streams: until they end).",
    ["method"],
)  # fmt: skip

HTTP_REQUESTS = Counter(
    f"{METRIC_PREFIX}http_requests", "HTTP requests served, by route and status.", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram(f"{METRIC_PREFIX}http_request_duration_seconds", "Time to serve an HTTP request.", ["route"])

Extra = Callable[[], Awaitable[bytes]]  # more exposition text, computed at each scrape


def exposition(families: Sequence[Metric]) -> bytes:
    """Prometheus text for metric families computed on the spot (e.g. read from a store at scrape time)."""

    class _Collector:
        def collect(self) -> Sequence[Metric]:
            return families

    return generate_latest(_Collector())


def metrics_app(extra: Extra | None = None) -> web.Application:
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(extra))
    return app


def metrics_handler(extra: Extra | None = None) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A /metrics handler: this process's registry, then `extra`'s text."""

    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY) + (await extra() if extra else b"")
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

    return handler


async def start_metrics_server(
    address: str, extra: Extra | None = None, routes: Sequence[web.RouteDef] = ()
) -> tuple[web.AppRunner, int]:
    """Serve /metrics (and `routes`) on `address` ("127.0.0.1:0" picks a port); returns the runner and the port."""
    from aiohttp import web

    host, _, port = address.rpartition(":")
    app = metrics_app(extra)
    app.router.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host.strip("[]"), int(port)).start()
    except (OSError, ValueError) as e:
        await runner.cleanup()
        raise Unavailable(f"cannot listen on {address}: {e}") from e
    return runner, runner.addresses[0][1]
