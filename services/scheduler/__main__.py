"""`python -m services.scheduler`: serve the Jobs and Scheduler services until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from services.scheduler.server import create_server
from thresher.config import Config, load_config
from thresher.logs import configure_logging

log = logging.getLogger(__name__)
GRACE_S = 5.0


async def serve(config: Config) -> None:
    server, _, manager = await create_server(config, config.addresses.scheduler)
    log.info("scheduler listening on %s", config.addresses.scheduler)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await manager.shutdown()
    await server.stop(GRACE_S)


def main() -> None:
    configure_logging("scheduler")
    asyncio.run(serve(load_config()))


if __name__ == "__main__":
    main()
