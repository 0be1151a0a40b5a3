"""`python -m services.dequeuer --job-id J --api-name A --worker-id W --queue Q --worker-port P [...]`.

Exit codes: 0 the job's queue is gone (the job is over); EXIT_DRAINED (75) drained on SIGTERM or SIGINT, the job
goes on (runtimes replace the worker without counting a crash); 1 the worker was lost or never ready;
EXIT_WORKER_HUNG (69) the worker hung (no answer to a batch nor to a health check); EXIT_IDLE (76) nothing to
receive for `--idle-s` (an elastic job's worker, not replaced); EXIT_TOKEN_REFUSED (77) the monitor refused this
dequeuer's token; 2 bad configuration.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from services.dequeuer.admin import start_admin_server
from services.dequeuer.loop import Dequeuer
from services.dequeuer.reporter import Reporter
from services.dequeuer.settings import Settings, parse_args
from thresher.core.aiotasks import on_stop_signal
from thresher.core.config import Config, load_config
from thresher.core.errors import ThresherError
from thresher.core.logs import configure_logging
from thresher.core.names import ENV_WORKER_TOKEN, EXIT_DRAINED
from thresher.core.queue import open_queue_backend
from thresher.core.results import open_result_store

log = logging.getLogger("services.dequeuer")


async def serve(settings: Settings, config: Config, token: str) -> int:
    """Run one dequeuer, reporting with `token`, until its job ends or a signal stops it; returns the exit code."""
    backend = open_queue_backend(config)
    reporter = Reporter(
        config.addresses.monitor,
        settings.job_id,
        settings.worker_id,
        token,
        settings.api_name,
        settings.queue_name,
        tls=config.tls,
    )
    reporter.start()
    results = open_result_store(config, settings.results_s3_path or "")
    try:
        dequeuer = Dequeuer(settings, backend.open(settings.queue_name), reporter, results)
        signalled = asyncio.Event()

        def stop() -> None:
            signalled.set()
            dequeuer.stop()

        on_stop_signal(stop)
        admin, port = await start_admin_server(config.dequeuer.admin_address, lambda: dequeuer.ready)
        log.info("health and metrics on port %d", port)
        try:
            code = await dequeuer.run()
            return EXIT_DRAINED if code == 0 and signalled.is_set() else code
        finally:
            admin.close()
    finally:
        await reporter.close()
        await backend.close()
        await results.close()


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging("dequeuer")
    try:
        config = load_config()
    except ThresherError as e:
        log.error("bad configuration: %s", e)
        return 2
    settings = parse_args(argv, config)
    token = os.environ.get(ENV_WORKER_TOKEN, "")
    if not token:
        log.error("bad configuration: %s is not set: the runtime that starts a dequeuer gives it one", ENV_WORKER_TOKEN)
        return 2
    try:
        code = asyncio.run(serve(settings, config, token))
    except Exception:
        log.exception("dequeuer failed")
        code = 1
    if settings.exit_file:  # for a runtime that may not see the exit code (a restarted local scheduler)
        Path(settings.exit_file).write_text(str(code), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main())
