"""The dequeuer loop: wait for the worker, then feed it batches one after another until the job ends.

Three things run beside the worker so that it never waits for them: receiving (receiving.py: a few batches are kept
ahead), keeping held batches invisible (holdings.py) and settling finished ones (settler.py: reported to the
monitor, then acked on the queue, in groups; successes.py: successes are reported in bursts). A worker that takes
pipelined requests (the worker helper) gets the next batch before it answers the one in progress (pipeline.py).
"""

from __future__ import annotations

import asyncio
import logging
import time

from services.dequeuer.holdings import Holdings
from services.dequeuer.pipeline import Pipeline
from services.dequeuer.receiving import Receiver
from services.dequeuer.reporter import Reporter
from services.dequeuer.settings import Settings
from services.dequeuer.settler import Settler
from services.dequeuer.successes import Successes, batch_report, failed_report
from services.dequeuer.worker import Outcome, WorkerClient, WorkerLost
from thresher.core.aiotasks import create_guarded_task
from thresher.core.errors import QueueNotFound
from thresher.core.logs import batch_id_var, job_id_var
from thresher.core.names import EXIT_IDLE, EXIT_TOKEN_REFUSED
from thresher.core.queue import KIND_JOB_COMPLETE, Delivery, Queue, calls_source
from thresher.core.results import ResultStore
from thresher.core.retries import ON_FAILURE_BISECT, RetryPolicy
from thresher.v1 import jobs_pb2, monitor_pb2

log = logging.getLogger(__name__)

STOPPING_REPORT_TIMEOUT_S = 2.0  # the last report is best effort: the monitor may be gone too
SETTLE_TIMEOUT_S = 2.0  # on the way out, how long finished batches wait for the monitor; the rest are released
UNSETTLED_PER_RECEIVE = 10  # finished batches awaiting the monitor's ack, at most, in receive_max units

Phase = monitor_pb2.WorkerPhase
Result = monitor_pb2.BatchResult


class Dequeuer:
    def __init__(self, settings: Settings, queue: Queue, reporter: Reporter, results: ResultStore) -> None:
        self._settings = settings
        # The monitor applies it to batches; the hook is ours
        self._retries = RetryPolicy(settings.max_receive_count, settings.on_failure == ON_FAILURE_BISECT)
        self._queue = queue
        self._reporter = reporter
        self._worker = WorkerClient(settings.worker_port, settings.job_id, settings.max_result_bytes)
        self._stopping = asyncio.Event()
        self._phase: monitor_pb2.WorkerPhase.ValueType = Phase.WORKER_PHASE_STARTING
        self._holdings = Holdings(queue, settings.visibility_s)
        self._settler = Settler(queue, self._holdings, UNSETTLED_PER_RECEIVE * settings.receive_max)
        self._successes = Successes(reporter, self._settler, results, settings.job_id, self._retries)
        self._receiver = Receiver(
            queue,
            settings.receive_max,
            settings.wait_s,
            self._holdings,
            reporter,
            self._successes,
            self._stopping,
            self._settler.queue_gone,
            on_received=lambda: self._pipeline.send_ahead(),
            idle_s=settings.idle_s,
        )
        self._pipeline = Pipeline(
            self._worker, self._receiver, self._holdings, self._settler, self._stopping, settings.batch_timeout_s
        )
        self._calls_source = calls_source(f"dequeuer {settings.worker_id}")

    @property
    def ready(self) -> bool:
        """Its worker answered the readiness check, and it takes batches."""
        return self._phase == Phase.WORKER_PHASE_READY

    @property
    def pipeline(self) -> Pipeline:
        """The batch written to the worker behind the running one, and how many were."""
        return self._pipeline

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
        job_id_var.set(self._settings.job_id)
        heartbeat = create_guarded_task(self._heartbeat(), "heartbeat")
        refusal = create_guarded_task(self._stop_when_refused(), "stop when the token is refused")
        try:
            code = await self._serve()
            return EXIT_TOKEN_REFUSED if self._reporter.refused.is_set() else code
        finally:
            heartbeat.cancel()
            refusal.cancel()
            self._worker.close()

    async def _stop_when_refused(self) -> None:
        """Stop once the monitor refuses our token: no batch could be reported, so none is settled."""
        await self._reporter.refused.wait()
        self.stop()

    async def _heartbeat(self) -> None:
        """Tell the monitor, now and then, that this worker is alive; silence makes it release our batches. Any
        report says so (the monitor counts batch reports as signs of life): a heartbeat goes after heartbeat_s
        without one. Heartbeats also carry the queue calls (SQS bills them): while they grow, one goes every
        heartbeat_s regardless, so a worker killed mid-job loses at most one period's count."""
        period = self._settings.heartbeat_s
        sent_calls: dict[str, int] = {}
        last_heartbeat = time.monotonic()
        while True:
            now = time.monotonic()
            quiet_s = now - self._reporter.last_sent
            calls = dict(self._queue.calls)
            if quiet_s >= period or (now - last_heartbeat >= period and calls != sent_calls):
                self._reporter.send(self._worker_report(self._phase))
                sent_calls, last_heartbeat, quiet_s = calls, now, 0.0
            await asyncio.sleep(period - quiet_s)

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
        self._reporter.send(self._worker_report(self._phase))
        log.info("worker ready; taking batches from queue %s", s.queue_name)
        code = 0
        try:
            await self._loop()
            code = EXIT_IDLE if self._receiver.idle else 0
        except QueueNotFound:
            log.info("queue %s is gone: the job is over", s.queue_name)
        except WorkerLost as e:
            log.error("%s; exiting so that this worker is replaced", e)
            code = e.exit_code
        settler = self._settler
        log.info(
            "batches settled: %d succeeded, %d failed and released, %d dead-lettered, %d split (%d were pipelined)",
            settler.succeeded,
            settler.failed,
            settler.dead_lettered,
            settler.split,
            self._pipeline.pipelined,
        )
        await self._report_stopping()
        return code

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
        """Run batches until the queue is gone or a stop; then settle what can be and release the rest."""
        background = [
            create_guarded_task(self._holdings.keep_invisible(), "keep batches invisible"),
            create_guarded_task(self._settler.run(), "settle batches"),
        ]
        runner = asyncio.create_task(self._run_batches(), name="run batches")
        ends = [asyncio.create_task(e.wait()) for e in (self._stopping, self._settler.queue_gone)]
        try:
            await asyncio.wait({runner, *ends}, return_when=asyncio.FIRST_COMPLETED)
            if not runner.done():
                await self._receiver.stop("the dequeuer is stopping")
                await asyncio.wait({runner}, timeout=0 if self._settler.queue_gone.is_set() else self._settings.grace_s)
            if not runner.done():
                log.warning("the batch in progress did not finish within the grace period; releasing it")
                runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            if self._settler.queue_gone.is_set():
                raise QueueNotFound(f"queue {self._queue.name} is gone")
            if not runner.cancelled():
                runner.result()  # QueueNotFound or WorkerLost end the loop; anything else was logged per batch
        finally:
            for task in ends:
                task.cancel()
            await self._wind_down(background)

    async def _wind_down(self, background: list[asyncio.Task[None]]) -> None:
        """Settle what finished (the monitor permitting), release every batch still held, stop the helpers."""
        await self._receiver.close()
        if not self._settler.queue_gone.is_set() and not self._reporter.refused.is_set():
            await self._successes.drain(SETTLE_TIMEOUT_S)  # results stored, their batches reported: then settled
            await self._settler.drain(SETTLE_TIMEOUT_S)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if not self._settler.queue_gone.is_set():
            await self._receiver.release(self._holdings.all(), "the dequeuer stopped")

    async def _run_batches(self) -> None:
        try:  # a batch already pipelined goes first: it is run (or released) whatever happens
            while (delivery := self._pipeline.ahead or await self._receiver.next()) is not None:
                await self._run_one(delivery)
        finally:
            self._successes.flush()

    # --- one batch ---------------------------------------------------------------------------------------------------

    async def _run_one(self, delivery: Delivery) -> None:
        batch_id = delivery.batch.batch_id
        batch_id_var.set(batch_id)
        try:
            if self._pipeline.ahead is delivery:
                await self._run_batch(delivery)  # checked before it was pipelined
            elif not await self._holdings.still_held(delivery):
                # Its visibility ran out while it waited behind other batches, and another worker may have it.
                log.warning("batch %s is no longer held by this worker; skipping it", batch_id)
            elif delivery.batch.kind == KIND_JOB_COMPLETE:
                await self._call_hook(delivery)
            else:
                await self._run_batch(delivery)
        except (QueueNotFound, WorkerLost):
            raise
        except Exception:
            log.exception("could not settle batch %s; it comes back after its visibility timeout", batch_id)
            self._holdings.drop([delivery])
        finally:
            batch_id_var.set("")

    async def _run_batch(self, delivery: Delivery) -> None:
        s, attempt = self._settings, delivery.receive_count
        if (call := self._pipeline.take(delivery)) is not None:
            self._receiver.top_up()
        else:
            await self._settler.wait_for_room()
            await self._successes.wait_for_room()
            call = await self._worker.send_batch(delivery.batch, attempt, s.batch_timeout_s)
        self._successes.flush()  # the batches before: reported while the worker runs this one
        outcome = await self._pipeline.outcome(call)
        if outcome.not_started and self._stopping.is_set():  # pipelined, unread: back to the queue, no attempt used
            return await self._receiver.release([delivery], "the worker stopped before starting it")
        if outcome.not_started:  # pipelined, and the worker closed the connection after the one before: again
            outcome = await (await self._worker.send_batch(delivery.batch, attempt, s.batch_timeout_s)).outcome()
        self._receiver.ran(outcome.duration_s)
        if outcome.ok:
            self._successes.add(delivery, outcome)
            log.debug("batch %s succeeded (attempt %d, %.3f s)", delivery.batch.batch_id, attempt, outcome.duration_s)
        else:
            await self._judge_worker(delivery, outcome, batch_report(delivery, Result.BATCH_RESULT_RELEASED, outcome))
            report = failed_report(delivery, outcome, self._retries, outcome.error)
            self._settler.add(delivery, self._reporter.send(report), outcome.error)

    async def _judge_worker(self, delivery: Delivery, outcome: Outcome, report: monitor_pb2.BatchReport | None) -> None:
        """After a failed call: a worker gone or hung is not the batch's fault. The batch then goes back at once,
        keeping its attempts (`report` says so to the monitor), and WorkerLost ends the loop."""
        try:
            await self._worker.judge(outcome, self._settings.readiness_path or "/")
        except WorkerLost:
            if report is not None:
                await self._reporter.record(report)
            self._holdings.drop([delivery])
            await self._queue.release([delivery])
            raise

    async def _call_hook(self, delivery: Delivery) -> None:
        self._successes.flush()
        attempt = delivery.receive_count
        outcome = await self._worker.post_hook(delivery.batch.body, self._settings.hook_timeout_s)
        if not outcome.ok:
            await self._judge_worker(delivery, outcome, None)  # a hook is no batch: nothing to report
        if not outcome.ok and (delay_s := self._retries.hook_retry_delay_s(attempt)) is not None:
            log.warning("job completion hook failed (attempt %d), trying again: %s", attempt, outcome.error)
            await asyncio.sleep(delay_s)
            self._holdings.drop([delivery])
            await self._queue.release([delivery])
            return
        hook = jobs_pb2.HookOutcome(
            called=True, succeeded=outcome.ok, http_status=outcome.http_status, attempts=attempt, error=outcome.error
        )
        await self._reporter.record(hook)
        self._holdings.drop([delivery])
        await self._queue.ack([delivery])
        log.log(
            logging.INFO if outcome.ok else logging.ERROR,
            "job completion hook %s (HTTP %d, attempt %d) %s",
            "succeeded" if outcome.ok else "failed for good",
            outcome.http_status,
            attempt,
            outcome.error,
        )

    async def _report_stopping(self) -> None:
        self._phase = Phase.WORKER_PHASE_STOPPING
        try:
            if not self._reporter.refused.is_set():  # else it would never be acked
                stopping = self._worker_report(Phase.WORKER_PHASE_STOPPING)
                await self._reporter.record(stopping, timeout_s=STOPPING_REPORT_TIMEOUT_S)
        except TimeoutError:
            log.warning("the monitor did not ack the STOPPING report within %g s", STOPPING_REPORT_TIMEOUT_S)
        log.info("stopped")

    def _worker_report(self, phase: monitor_pb2.WorkerPhase.ValueType) -> monitor_pb2.WorkerReport:
        """The phase, and the queue calls made so far (heartbeats carry them: the monitor adds up a job's)."""
        calls = jobs_pb2.QueueCalls(source=self._calls_source, calls=self._queue.calls)
        return monitor_pb2.WorkerReport(phase=phase, queue_calls=calls, queue_error=self._receiver.queue_error)
