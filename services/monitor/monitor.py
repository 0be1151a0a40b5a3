"""The monitor's domain: record reports, track totals, answer progress, release lost workers' batches, and hand
settlements to the notifier."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Sequence

from services.monitor.accounting import BatchEvent, Event, Phase, QueueCalls, Result, WorkerEvent
from services.monitor.ledger import Applied, Ledger, Progress
from services.monitor.notifier import Notifier
from thresher.core.aiotasks import create_guarded_task
from thresher.core.errors import InvalidRequest, NotFound, QueueNotFound
from thresher.core.queue import Batch, Delivery, QueueBackend, calls_source

log = logging.getLogger(__name__)

MAX_SETTLED = 10_000  # batch ids one GetSettledBatches answers, at most


class Monitor:
    def __init__(self, ledger: Ledger, notifier: Notifier, queues: QueueBackend, heartbeat_timeout_s: float) -> None:
        self._ledger = ledger
        self._notifier = notifier
        self._queues = queues
        self._heartbeat_timeout_s = heartbeat_timeout_s
        self._started = time.time()
        self._calls_source = calls_source("monitor")
        # job id -> worker id -> why its receives keep failing, as its last heartbeat said (in memory: heartbeats
        # say it again after a restart)
        self._queue_errors: dict[str, dict[str, str]] = {}
        self.stopping = False
        # Reports waiting for the ledger, from every stream: each write takes all of them, in one transaction.
        self._waiting: list[tuple[Sequence[Event], dict[str, tuple[str, str]], asyncio.Future[dict[int, Result]]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def resume(self) -> None:
        """Send again what the scheduler did not acknowledge before the last stop."""
        for job_id in await self._ledger.jobs_to_notify():
            self._notifier.kick(job_id)

    async def record(
        self, events: Sequence[Event], names: dict[str, tuple[str, str]] | None = None
    ) -> dict[int, Result]:
        """Record reports durably (repeats change nothing); returns the indexes of events whose batch is to be
        dead-lettered or split, with which (Result.DEAD_LETTERED or Result.SPLIT).

        The reports of every stream that arrive while the ledger writes go together into its next transaction: one
        commit (and fsync) for all of them.
        """
        self._note_queue_errors(events)
        future: asyncio.Future[dict[int, Result]] = asyncio.get_running_loop().create_future()
        self._waiting.append((events, names or {}, future))
        if self._writer is None:
            # A task of its own: a sender that hangs up mid-write must not leave a committed settlement without its
            # notification, nor cancel the others' reports.
            self._writer = create_guarded_task(self._write(), "ledger writer")
        return await asyncio.shield(future)

    async def _write(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting, []
                events = [event for part, _, _ in group for event in part]
                names = {job: name for _, part, _ in group for job, name in part.items()}
                try:
                    applied = await self._notify_after(self._ledger.apply(events, names))
                except Exception as e:  # each sender gets the error
                    for _, _, future in group:
                        future.set_exception(e)
                    continue
                start = 0
                for part, _, future in group:
                    end = start + len(part)
                    future.set_result({i - start: v for i, v in applied.verdicts.items() if start <= i < end})
                    start = end
        finally:
            self._writer = None

    def _note_queue_errors(self, events: Sequence[Event]) -> None:
        """Keep what workers say of their failing receives, for the job's status; log each new one."""
        for event in events:
            if not isinstance(event, WorkerEvent):
                continue
            errors = self._queue_errors.setdefault(event.job_id, {})
            if event.queue_error and event.phase in (Phase.STARTING, Phase.READY):
                if errors.get(event.worker_id) != event.queue_error:
                    log.warning(
                        "worker %s cannot receive batches: %s",
                        event.worker_id,
                        event.queue_error,
                        extra={"job_id": event.job_id},
                    )
                errors[event.worker_id] = event.queue_error
            else:
                errors.pop(event.worker_id, None)
            if not errors:
                del self._queue_errors[event.job_id]

    async def track(self, job_id: str, api_name: str, total_batch_count: int) -> None:
        if not job_id:
            raise InvalidRequest("job_id is required")
        if total_batch_count < 0:
            raise InvalidRequest(f"total_batch_count must be 0 or more, not {total_batch_count}")
        jobs = await asyncio.shield(self._ledger.track(job_id, api_name, total_batch_count))
        for job in jobs:
            self._notifier.kick(job)

    async def record_queue_calls(self, job_id: str, api_name: str, calls: Sequence[QueueCalls]) -> None:
        if not job_id:
            raise InvalidRequest("job_id is required")
        await asyncio.shield(self._ledger.record_queue_calls(job_id, api_name, calls))

    async def _notify_after(self, write: Awaitable[Applied]) -> Applied:
        applied = await write
        for job_id in applied.notify:
            self._notifier.kick(job_id)
        return applied

    async def progress(self, job_id: str, api_name: str = "") -> Progress:
        """The job's counts; a job with no report yet has zero counts."""
        if not job_id:
            raise InvalidRequest("job_id is required")
        progress = await self._ledger.progress(job_id)
        if api_name and progress.api_name and progress.api_name != api_name:
            raise NotFound(f"job {job_id} does not belong to API {api_name!r}")
        return dataclasses.replace(progress, queue_errors=dict(self._queue_errors.get(job_id, {})))

    async def settled_batches(self, job_id: str, from_batch_id: str, limit: int) -> list[str]:
        """The job's terminal batches from `from_batch_id` on, in batch order, `limit` (1 to MAX_SETTLED) at most."""
        if not job_id or not 0 < limit <= MAX_SETTLED:
            raise InvalidRequest(f"job_id and a limit from 1 to {MAX_SETTLED} are required")
        return await self._ledger.settled_batches(job_id, from_batch_id, limit)

    async def worker_gone(self, job_id: str, worker_id: str, why: str) -> None:
        """A worker's report stream ended: unless it said it was stopping, it is lost."""
        if self.stopping:
            return
        # The stream's last reports may still wait for the ledger's writer (a busy fsync): write them first, or a
        # STARTED report with the batch's receipt would be missed below and the batch wait for its visibility.
        await self.record([])
        if await self._ledger.worker_phase(job_id, worker_id) in (Phase.STARTING, Phase.READY):
            await self.release_lost(job_id, worker_id, why)

    async def release_lost(self, job_id: str, worker_id: str, why: str) -> None:
        """Make the batches a lost worker held visible again at once; they keep their attempts."""
        queue_name, held = await self._ledger.held_by(job_id, worker_id)
        released, calls = [], None
        if queue_name and held:
            queue = self._queues.open(queue_name)
            with contextlib.suppress(QueueNotFound):  # the job has ended meanwhile
                await queue.release(
                    [Delivery(Batch(batch.batch_id, b""), batch.receipt, batch.attempt) for batch in held]
                )
            released = [
                BatchEvent(job_id, batch.batch_id, batch.attempt, Result.RELEASED, error=f"worker lost: {why}")
                for batch in held
            ]
            calls = QueueCalls(self._calls_source, tuple(sorted(queue.calls.items())))
        await self.record([*released, WorkerEvent(job_id, worker_id, Phase.LOST, calls)])
        log.warning("worker %s lost (%s); released %d batches", worker_id, why, len(released), extra={"job_id": job_id})

    async def watch_heartbeats(self) -> None:
        """Workers silent for longer than the heartbeat timeout are lost (a hung dequeuer, a vanished node)."""
        while True:
            await asyncio.sleep(self._heartbeat_timeout_s / 4)
            if time.time() < self._started + self._heartbeat_timeout_s:
                continue  # after a restart, every worker gets a full timeout to reconnect before it is judged
            for job_id, worker_id in await self._ledger.silent_workers(time.time() - self._heartbeat_timeout_s):
                await self.release_lost(job_id, worker_id, f"no heartbeat for {self._heartbeat_timeout_s:g} s")
