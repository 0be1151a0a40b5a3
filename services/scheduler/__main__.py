"""`python -m services.scheduler`: serve the Jobs and Scheduler services until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging

from services.scheduler.server import create_server
from thresher.aiotasks import until_stop_signal
from thresher.config import Config, load_config
from thresher.logs import configure_logging

log = logging.getLogger(__name__)
GRACE_S = 5.0


async def serve(config: Config) -> None:
    server, _, manager = await create_server(config, config.addresses.scheduler)
    log.info("scheduler listening on %s", config.addresses.scheduler)
    await until_stop_signal()
    await manager.shutdown()
    await server.stop(GRACE_S)


def main() -> None:
    configure_logging("scheduler")
    asyncio.run(serve(load_config()))


if __name__ == "__main__":
    main()
