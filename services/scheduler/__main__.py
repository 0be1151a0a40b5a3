"""`python -m services.scheduler`: serve the Jobs and Scheduler services until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging

from services.scheduler.server import create_server
from thresher.core.aiotasks import until_stop_signal
from thresher.core.config import Config, load_config
from thresher.core.logs import configure_logging
from thresher.core.metrics import start_metrics_server

log = logging.getLogger(__name__)
GRACE_S = 5.0


async def serve(config: Config) -> None:
    server, _, manager = await create_server(config, config.addresses.scheduler)
    metrics, metrics_port = await start_metrics_server(config.addresses.scheduler_metrics, manager.metrics_text)
    log.info("scheduler listening on %s, /metrics on port %d", config.addresses.scheduler, metrics_port)
    await until_stop_signal()
    await manager.shutdown()
    await server.stop(GRACE_S)
    await metrics.cleanup()


def main() -> None:
    configure_logging("scheduler")
    asyncio.run(serve(load_config()))


if __name__ == "__main__":
    main()
