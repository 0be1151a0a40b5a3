"""The dequeuer loop: wait for the worker, then receive, POST, report and settle batches until the job ends.

Order matters: a batch is reported to the monitor (and the monitor has acked it) before it is acked, released or
dead-lettered on the queue, so the ledger never misses a batch the queue has forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp

from services.dequeuer.reporter import Reporter
from services.dequeuer.settings import Settings
from services.dequeuer.worker import Outcome, WorkerClient
from thresher.aiotasks import create_guarded_task
from thresher.errors import QueueNotFound
from thresher.logs import batch_id_var, job_id_var
from thresher.queue import KIND_JOB_COMPLETE, Delivery, Queue
from thresher.v1 import jobs_pb2, monitor_pb2

log = logging.getLogger(__name__)

STOPPING_REPORT_TIMEOUT_S = 2.0  # the last report is best effort: the monitor may be gone too
HOOK_BACKOFF_S = 0.5  # × attempt, before a failed hook call is released for another try
RECEIVE_ERROR_BACKOFF_S = 1.0
WORKER_EXIT_S = 0.2  # how long a worker that broke a connection gets to finish dying before it is judged alive

Phase = monitor_pb2.WorkerPhase
Result = monitor_pb2.BatchResult


class WorkerLost(Exception):
    """The worker stopped answering on its port: this pod is broken, the runtime replaces it."""


class Dequeuer:
    def __init__(self, settings: Settings, queue: Queue, reporter: Reporter, http_session: aiohttp.ClientSession):
        self._settings = settings
        self._queue = queue
        self._reporter = reporter
        self._worker = WorkerClient(http_session, settings.worker_port, settings.job_id)
        self._stopping = asyncio.Event()
        self._phase: monitor_pb2.WorkerPhase.ValueType = Phase.WORKER_PHASE_STARTING

    @property
    def ready(self) -> bool:
        """Its worker answered the readiness check, and it takes batches."""
        return self._phase == Phase.WORKER_PHASE_READY

    def stop(self) -> None:
        """Take no new batch; the one in progress gets `grace_s` to finish (call from a signal handler)."""
        if not self._stopping.is_set():
            log.info(
                "stop requested: finishing the batch in progress (grace %g s), releasing the rest",
                self._settings.grace_s,
            )
            self._stopping.set()

    async def run(self) -> int:
        """Serve the worker until the job's queue is deleted or stop() is called; returns the exit code."""
        s = self._settings
        job_id_var.set(s.job_id)
        heartbeat = create_guarded_task(self._heartbeat(), "heartbeat")
        try:
            return await self._serve()
        finally:
            heartbeat.cancel()

    async def _heartbeat(self) -> None:
        """Tell the monitor, now and then, that this worker is alive; silence makes it release our batches."""
        while True:
            self._reporter.send(_phase(self._phase))
            await asyncio.sleep(self._settings.heartbeat_s)

    async def _serve(self) -> int:
        s = self._settings
        log.info("waiting for worker %s of API %s on port %d", s.worker_id, s.api_name, s.worker_port)
        if not await self._wait_ready():
            if self._stopping.is_set():
                await self._report_stopping()
                return 0
            how = f"GET {s.readiness_path} answering 2xx" if s.readiness_path else "a TCP connect"
            log.error(
                "worker on port %d was not ready (%s) within %g s; giving up", s.worker_port, how, s.readiness_timeout_s
            )
            return 1
        self._phase = Phase.WORKER_PHASE_READY
        self._reporter.send(_phase(self._phase))
        log.info("worker ready; taking batches from queue %s", s.queue_name)
        try:
            await self._loop()
        except QueueNotFound:
            log.info("queue %s is gone: the job is over", s.queue_name)
        except WorkerLost as e:
            log.error("%s; exiting so that this worker is replaced", e)
            await self._report_stopping()
            return 1
        await self._report_stopping()
        return 0

    async def _wait_ready(self) -> bool:
        s = self._settings
        ready = asyncio.create_task(self._worker.wait_ready(s.readiness_path, s.readiness_timeout_s))
        stopping = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not ready.done():
            ready.cancel()
            return False
        return ready.result()

    async def _loop(self) -> None:
        s = self._settings
        while not self._stopping.is_set():
            try:
                deliveries = await self._queue.receive(s.receive_max, s.wait_s)
            except QueueNotFound:
                raise
            except Exception:
                log.exception("receive from queue %s failed; trying again", s.queue_name)
                await asyncio.sleep(RECEIVE_ERROR_BACKOFF_S)
                continue
            await self._process(deliveries)

    async def _process(self, deliveries: list[Delivery]) -> None:
        """Handle the deliveries one after another; on stop, release those not started yet at once."""
        waiting = list(deliveries)
        try:
            while waiting and not self._stopping.is_set():
                await self._handle_within_grace(waiting.pop(0), waiting)
        finally:
            await self._release_all(waiting)
            waiting.clear()

    async def _handle_within_grace(self, delivery: Delivery, waiting: list[Delivery]) -> None:
        handling = asyncio.create_task(self._handle(delivery), name=f"batch-{delivery.batch.batch_id}")
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({handling, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not handling.done():
                await self._release_all(waiting)
                waiting.clear()
                await asyncio.wait({handling}, timeout=self._settings.grace_s)
            if not handling.done():
                log.warning("batch %s did not finish within the grace period; releasing it", delivery.batch.batch_id)
                handling.cancel()
                await asyncio.gather(handling, return_exceptions=True)
                await self._release_all([delivery])
                return
        finally:
            stopping.cancel()
            if not handling.done():  # we were cancelled ourselves: leave nothing running
                handling.cancel()
        handling.result()  # QueueNotFound ends the job; other failures were logged by _handle

    async def _release_all(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            try:
                await self._queue.release(delivery)
            except QueueNotFound:
                return
            except Exception:
                log.exception(
                    "could not release batch %s; it comes back after its visibility timeout", delivery.batch.batch_id
                )

    async def _handle(self, delivery: Delivery) -> None:
        batch_id_var.set(delivery.batch.batch_id)
        try:
            if not await self._queue.extend(delivery, self._settings.visibility_s):
                # Its visibility ran out while it waited behind other batches, and another worker took it.
                log.warning("batch %s is no longer held by this worker; skipping it", delivery.batch.batch_id)
                return
            async with self._keep_invisible(delivery):
                if delivery.batch.kind == KIND_JOB_COMPLETE:
                    await self._call_hook(delivery)
                else:
                    await self._run_batch(delivery)
        except (QueueNotFound, WorkerLost):
            raise
        except Exception:
            log.exception(
                "could not settle batch %s; it comes back after its visibility timeout", delivery.batch.batch_id
            )

    async def _run_batch(self, delivery: Delivery) -> None:
        s, attempt, batch_id = self._settings, delivery.receive_count, delivery.batch.batch_id
        started = monitor_pb2.BatchReport(
            batch_id=batch_id, attempt=attempt, result=Result.BATCH_RESULT_STARTED, receipt=delivery.receipt
        )
        self._reporter.send(started)
        outcome = await self._worker.post_batch(delivery.batch, attempt, s.batch_timeout_s)
        if outcome.ok:
            await self._reporter.record(_batch_report(delivery, Result.BATCH_RESULT_SUCCEEDED, outcome))
            await self._queue.ack(delivery)
            log.info("batch %s succeeded (attempt %d, %.3f s)", batch_id, attempt, outcome.duration_s)
        elif outcome.unreachable and not await self._worker_alive():
            # Not the batch's fault: it goes back at once and keeps its attempts.
            await self._reporter.record(_batch_report(delivery, Result.BATCH_RESULT_RELEASED, outcome))
            await self._queue.release(delivery)
            raise WorkerLost(f"worker on port {s.worker_port} is gone ({outcome.error})")
        else:
            report = _batch_report(delivery, Result.BATCH_RESULT_FAILED, outcome)
            report.max_attempts = s.max_receive_count
            ack = await self._reporter.record(report)  # the monitor counts attempts and decides
            if ack.dead_letter:
                await self._queue.dead_letter(delivery, outcome.error)
                log.warning("batch %s dead-lettered after its last attempt: %s", batch_id, outcome.error)
            else:
                await self._queue.release(delivery)
                log.warning("batch %s failed (delivery %d): %s", batch_id, attempt, outcome.error)

    async def _worker_alive(self) -> bool:
        """After a broken connection: a worker that died mid-batch may take a moment to close its port."""
        await asyncio.sleep(WORKER_EXIT_S)
        return await self._worker.alive()

    async def _call_hook(self, delivery: Delivery) -> None:
        attempt = delivery.receive_count
        outcome = await self._worker.post_hook(delivery.batch.body, self._settings.hook_timeout_s)
        if not outcome.ok and attempt < self._settings.max_receive_count:
            log.warning("job completion hook failed (attempt %d), trying again: %s", attempt, outcome.error)
            await asyncio.sleep(HOOK_BACKOFF_S * attempt)
            await self._queue.release(delivery)
            return
        hook = jobs_pb2.HookOutcome(
            called=True, succeeded=outcome.ok, http_status=outcome.http_status, attempts=attempt, error=outcome.error
        )
        await self._reporter.record(hook)
        await self._queue.ack(delivery)
        log.log(
            logging.INFO if outcome.ok else logging.ERROR,
            "job completion hook %s (HTTP %d, attempt %d) %s",
            "succeeded" if outcome.ok else "failed for good",
            outcome.http_status,
            attempt,
            outcome.error,
        )

    @contextlib.asynccontextmanager
    async def _keep_invisible(self, delivery: Delivery) -> AsyncIterator[None]:
        """Extend the delivery's visibility in the background until it is settled (POST and report)."""
        task = create_guarded_task(self._extend_forever(delivery), f"extend-{delivery.batch.batch_id}")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _extend_forever(self, delivery: Delivery) -> None:
        visibility_s = self._settings.visibility_s
        while True:
            await asyncio.sleep(visibility_s / 3)
            try:
                if not await self._queue.extend(delivery, visibility_s):
                    log.warning(
                        "lost batch %s: its visibility expired before it could be extended", delivery.batch.batch_id
                    )
                    return
            except QueueNotFound:
                return  # the job ended; the handler finds out when it settles the batch
            except Exception:
                log.exception("could not extend the visibility of batch %s; trying again", delivery.batch.batch_id)

    async def _report_stopping(self) -> None:
        self._phase = Phase.WORKER_PHASE_STOPPING
        try:
            await self._reporter.record(_phase(Phase.WORKER_PHASE_STOPPING), timeout_s=STOPPING_REPORT_TIMEOUT_S)
        except TimeoutError:
            log.warning("the monitor did not ack the STOPPING report within %g s", STOPPING_REPORT_TIMEOUT_S)
        log.info("stopped")


def _phase(phase: monitor_pb2.WorkerPhase.ValueType) -> monitor_pb2.WorkerReport:
    return monitor_pb2.WorkerReport(phase=phase)


def _batch_report(
    delivery: Delivery, result: monitor_pb2.BatchResult.ValueType, outcome: Outcome
) -> monitor_pb2.BatchReport:
    return monitor_pb2.BatchReport(
        batch_id=delivery.batch.batch_id,
        attempt=delivery.receive_count,
        result=result,
        duration_s=outcome.duration_s,
        error=outcome.error,
    )
