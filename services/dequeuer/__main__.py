"""`python -m services.dequeuer --job-id J --api-name A --worker-id W --queue Q --worker-port P [...]`."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
from aiohttp import web

from services.dequeuer.loop import Dequeuer
from services.dequeuer.reporter import Reporter
from services.dequeuer.settings import Settings, parse_args
from thresher.aiotasks import on_stop_signal
from thresher.config import Config, load_config
from thresher.errors import ThresherError
from thresher.logs import configure_logging
from thresher.metrics import start_metrics_server
from thresher.queue import open_queue_backend

log = logging.getLogger("services.dequeuer")


async def serve(settings: Settings, config: Config) -> int:
    """Run one dequeuer until its job ends or a signal stops it; returns the exit code."""
    backend = open_queue_backend(config)
    reporter = Reporter(
        config.addresses.monitor, settings.job_id, settings.worker_id, settings.api_name, settings.queue_name
    )
    reporter.start()
    try:
        async with aiohttp.ClientSession() as session:
            dequeuer = Dequeuer(settings, backend.open(settings.queue_name), reporter, session)
            on_stop_signal(dequeuer.stop)
            admin, port = await start_metrics_server(
                config.dequeuer.admin_address, routes=[web.get("/healthz", _health(dequeuer))]
            )
            log.info("health and metrics on port %d", port)
            try:
                return await dequeuer.run()
            finally:
                await admin.cleanup()
    finally:
        await reporter.close()
        await backend.close()


def _health(dequeuer: Dequeuer) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ready": dequeuer.ready}, status=200 if dequeuer.ready else 503)

    return health


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging("dequeuer")
    try:
        config = load_config()
    except ThresherError as e:
        log.error("bad configuration: %s", e)
        return 2
    settings = parse_args(argv, config)
    try:
        return asyncio.run(serve(settings, config))
    except Exception:
        log.exception("dequeuer failed")
        return 1


if __name__ == "__main__":
    sys.exit(main())
