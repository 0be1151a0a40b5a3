"""A scheduler's restart: what it stops when it ends, and what it picks up again when it starts."""

from __future__ import annotations

import asyncio

from services.scheduler.cleanup import Cleanup
from services.scheduler.ending import Ending
from services.scheduler.launch import Launcher
from services.scheduler.store import JobStore
from thresher.core.config import Config
from thresher.core.runtime import Runtime


async def pick_up_jobs(store: JobStore, launcher: Launcher, ending: Ending, cleanup: Cleanup) -> None:
    """Every unfinished job where it was: launched again (queue and workers where missing, enqueuing resumed if
    unfinished), its `job_complete` message resent if it had settled; an ended one's clean-up finished."""
    for job in await store.list_jobs(limit=1_000_000, unfinished_only=True):
        if job.status.is_final:
            cleanup.start(job)
            continue
        launcher.launch(job.job_id)
        if job.settled:
            await ending.send_job_complete(job)


async def stop_workers_if_runtime_wants(config: Config, store: JobStore, runtime: Runtime) -> None:
    """Where workers stop with the scheduler (local processes), stop those of unfinished jobs: the next start restarts
    them. Kubernetes workers keep running."""
    if runtime.workers_stop_with_scheduler:
        unfinished = await store.list_jobs(limit=1_000_000, unfinished_only=True)
        await asyncio.gather(*(runtime.stop_workers(j.job_id, config.runtime.stop_grace_s) for j in unfinished))
