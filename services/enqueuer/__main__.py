"""`python -m services.enqueuer`: serve the Enqueuer on config.addresses.enqueuer."""

from __future__ import annotations

import asyncio

from services.enqueuer.server import serve
from thresher.core.config import load_config
from thresher.core.logs import configure_logging


def main() -> None:
    config = load_config()
    configure_logging("enqueuer")
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
