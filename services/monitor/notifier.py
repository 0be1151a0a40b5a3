"""Tells the scheduler that a job settled, and how its hook ended: each once, retried until acknowledged.

One task per job sends what the ledger holds as pending, in order (settlement before hook), then marks it sent.
The scheduler treats both calls as idempotent, so a crash between its ack and the mark only repeats a call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from services.monitor.ledger import Ledger
from services.monitor.wire import encode_summary
from thresher.core.aiotasks import create_guarded_task
from thresher.core.errors import ThresherError
from thresher.core.logs import job_id_var
from thresher.v1 import jobs_pb2, scheduler_pb2

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.1  # first pause after a failed call; doubles up to RETRY_MAX_S
RETRY_MAX_S = 5.0


class Notifier:
    def __init__(self, ledger: Ledger, scheduler: Any) -> None:
        """`scheduler` is a thresher.core.rpc.Client over a SchedulerStub."""
        self._ledger = ledger
        self._scheduler = scheduler
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()  # jobs with something recorded since their task last looked
        self._closed = False

    def kick(self, job_id: str) -> None:
        """The ledger has something new to send for the job."""
        if self._closed:
            return  # stopping: the ledger keeps it pending, and the next start sends it
        self._dirty.add(job_id)
        if job_id not in self._tasks:
            self._tasks[job_id] = create_guarded_task(self._deliver(job_id), name=f"notify-{job_id}")

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _deliver(self, job_id: str) -> None:
        job_id_var.set(job_id)
        try:
            while job_id in self._dirty:
                self._dirty.discard(job_id)
                pending = await self._ledger.pending(job_id)
                if pending.settlement is not None:
                    request = scheduler_pb2.JobSettledRequest(job_id=job_id, summary=encode_summary(pending.settlement))
                    await _until_acked(self._scheduler.JobSettled, request, "JobSettled")
                    await self._ledger.mark_settlement_notified(job_id)
                    log.info("scheduler told that job %s settled", job_id)
                if pending.hook_outcome is not None:
                    outcome = jobs_pb2.HookOutcome.FromString(pending.hook_outcome)
                    finished = scheduler_pb2.HookFinishedRequest(job_id=job_id, outcome=outcome)
                    await _until_acked(self._scheduler.HookFinished, finished, "HookFinished")
                    await self._ledger.mark_hook_notified(job_id)
                    log.info("scheduler told that the hook of job %s finished", job_id)
        finally:
            # No await between the last look at _dirty and this: a kick either was seen or starts a new task.
            del self._tasks[job_id]


async def _until_acked(call: Callable[[Any], Awaitable[Any]], request: Any, name: str) -> None:
    pause_s = RETRY_FIRST_S
    while True:
        try:
            await call(request)
            return
        except ThresherError as e:
            log.warning("%s failed (%s: %s); trying again in %.1f s", name, e.kind, e, pause_s)
        await asyncio.sleep(pause_s)
        pause_s = min(pause_s * 2, RETRY_MAX_S)
