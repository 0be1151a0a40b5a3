"""The monitor's domain: record reports, track totals, answer progress, and hand settlements to the notifier."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Sequence

from services.monitor.accounting import Event
from services.monitor.ledger import Ledger, Progress
from services.monitor.notifier import Notifier
from thresher.errors import InvalidRequest, NotFound


class Monitor:
    def __init__(self, ledger: Ledger, notifier: Notifier) -> None:
        self._ledger = ledger
        self._notifier = notifier

    async def resume(self) -> None:
        """Send again what the scheduler did not acknowledge before the last stop."""
        for job_id in await self._ledger.jobs_to_notify():
            self._notifier.kick(job_id)

    async def record(self, events: Sequence[Event]) -> None:
        """Record reports durably (repeats change nothing); returns once they are on disk."""
        # Shielded: a sender that hangs up mid-write must not leave a committed settlement without its notification.
        await asyncio.shield(self._notify_after(self._ledger.apply(events)))

    async def track(self, job_id: str, api_name: str, total_batch_count: int) -> None:
        if not job_id:
            raise InvalidRequest("job_id is required")
        if total_batch_count < 0:
            raise InvalidRequest(f"total_batch_count must be 0 or more, not {total_batch_count}")
        await asyncio.shield(self._notify_after(self._ledger.track(job_id, api_name, total_batch_count)))

    async def _notify_after(self, write: Awaitable[Iterable[str]]) -> None:
        for job_id in await write:
            self._notifier.kick(job_id)

    async def progress(self, job_id: str, api_name: str = "") -> Progress:
        """The job's counts; a job with no report yet has zero counts."""
        if not job_id:
            raise InvalidRequest("job_id is required")
        progress = await self._ledger.progress(job_id)
        if api_name and progress.api_name and progress.api_name != api_name:
            raise NotFound(f"job {job_id} does not belong to API {api_name!r}")
        return progress
