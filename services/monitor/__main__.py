"""`python -m services.monitor`: serve the Monitor on the configured addresses until SIGTERM."""

import asyncio

from services.monitor.server import serve
from thresher.core.config import load_config
from thresher.core.logs import configure_logging


def main() -> None:
    configure_logging("monitor")
    asyncio.run(serve(load_config()))


if __name__ == "__main__":
    main()
