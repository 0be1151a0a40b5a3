"""`python -m services.gateway`: serve the public HTTP API until SIGTERM."""

from __future__ import annotations

import asyncio

from services.gateway.server import serve
from thresher.core.config import load_config
from thresher.core.logs import configure_logging


def main() -> None:
    config = load_config()
    configure_logging("gateway")
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
