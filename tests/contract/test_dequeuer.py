"""The dequeuer against real parts: a SQLite queue, an aiohttp worker and a small gRPC monitor, all on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web

from services.dequeuer import Dequeuer, Reporter, Settings
from tests.contract.test_queue_contract import sqs_settings
from tests.helpers import TEST_TRUST, assert_eventually
from thresher.core import names, rpc, trust
from thresher.core.config import Config, QueueSettings, config_env
from thresher.core.queue import KIND_JOB_COMPLETE, Batch, Depth, Queue, QueueBackend, open_queue_backend
from thresher.core.results import ResultStore, open_result_store
from thresher.v1 import jobs_pb2, monitor_pb2, monitor_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
JOB_ID = "job-1"
QUEUE = "q-job-1"
VISIBILITY_S = 0.5
Phase = monitor_pb2.WorkerPhase
Result = monitor_pb2.BatchResult


class FakeMonitor(monitor_pb2_grpc.MonitorServicer):
    """Records every report; acks each one unless told not to (a monitor that cannot write).

    Like the real monitor, it counts each batch's failed attempts and says when one uses up `max_attempts`.
    """

    def __init__(self, ack: bool = True) -> None:
        self.ack = ack
        self.acks_open = asyncio.Event()  # cleared: acks wait until it is set again
        self.acks_open.set()
        self.reports: list[monitor_pb2.Report] = []
        self.message_sizes: list[int] = []  # reports per stream message, as they came
        self.failed: dict[str, set[int]] = {}

    async def Report(
        self, request_iterator: AsyncIterator[monitor_pb2.Reports], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[monitor_pb2.ReportAcks]:
        answers: asyncio.Queue[Any] = asyncio.Queue()  # acks to send, then None
        reader = asyncio.create_task(self._read(request_iterator, answers))  # reads ahead of the acks, as the real one
        try:
            while (acks := await answers.get()) is not None:
                await self.acks_open.wait()
                if self.ack:
                    yield acks
        finally:
            reader.cancel()

    async def _read(self, requests: AsyncIterator[monitor_pb2.Reports], answers: asyncio.Queue[Any]) -> None:
        async for message in requests:
            self.message_sizes.append(len(message.reports))
            acks = monitor_pb2.ReportAcks()
            for report in message.reports:
                self.reports.append(report)
                dead_letter = False
                if report.HasField("batch") and report.batch.result == Result.BATCH_RESULT_FAILED:
                    failed = self.failed.setdefault(report.batch.batch_id, set())
                    failed.add(report.batch.attempt)
                    dead_letter = len(failed) >= report.batch.max_attempts
                acks.acks.add(seq=report.seq, dead_letter=dead_letter)
            answers.put_nowait(acks)
        answers.put_nowait(None)

    def unique(self) -> list[monitor_pb2.Report]:
        """The reports once each, as a monitor that drops repeats by seq keeps them."""
        return list({r.seq: r for r in self.reports}.values())

    def phases(self) -> list[int]:
        """The phases the worker went through (heartbeats repeat the current one; they count once)."""
        phases = [r.worker.phase for r in self.unique() if r.HasField("worker")]
        return [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p]

    def results(self, batch_id: str) -> list[tuple[int, int]]:
        """(result, attempt) of every report on `batch_id`, STARTED excluded."""
        batches = [r.batch for r in self.unique() if r.HasField("batch") and r.batch.batch_id == batch_id]
        return [(b.result, b.attempt) for b in batches if b.result != Result.BATCH_RESULT_STARTED]

    def batch_reports(self, result: int) -> list[monitor_pb2.BatchReport]:
        return [r.batch for r in self.unique() if r.HasField("batch") and r.batch.result == result]

    def hooks(self) -> list[jobs_pb2.HookOutcome]:
        return [r.hook for r in self.unique() if r.HasField("hook")]


def token(worker_id: str) -> str:
    """What the runtime gives a dequeuer of JOB_ID."""
    return TEST_TRUST.token(trust.DEQUEUER, JOB_ID, worker_id)


async def start_monitor(monitor: FakeMonitor, port: int = 0) -> tuple[grpc.aio.Server, int]:
    registration = (monitor_pb2_grpc.add_MonitorServicer_to_server, monitor, "thresher.v1.Monitor")
    return await rpc.start_server(f"127.0.0.1:{port}", [registration], TEST_TRUST)


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeWorker:
    """A worker HTTP server: records calls; answers chosen batches with an error; sleeps on chosen batches; cuts the
    connection of chosen batches without an answer."""

    ready: bool = True
    fail: dict[str, int] = field(default_factory=dict)  # batch id -> HTTP status to answer
    sleep_s: dict[str, float] = field(default_factory=dict)  # batch id -> seconds to take
    cut: dict[str, int] = field(default_factory=dict)  # batch id -> how many of its calls to cut
    hook_status: int = 200
    hook_failures: int = 0  # answer 500 to this many hook calls first
    freeze_on: str = ""  # a batch id or the hook's path: from that call on, it answers nothing at all (a SIGSTOP)
    # batch id -> the body and Content-Type of its 200 answer; else an empty one
    answers: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    readiness_checks: int = 0
    port: int = 0
    _closing: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    async def start(self, sock: socket.socket | None = None) -> int:
        app = web.Application()
        app.router.add_post("/", self._batch)
        app.router.add_post(names.HOOK_PATH, self._hook)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.SockSite(self._runner, sock) if sock else web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self.port

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def batch_calls(self, batch_id: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.path == "/" and batch_id in (None, c.headers[names.HEADER_BATCH_ID])]

    def hook_calls(self) -> list[Call]:
        return [c for c in self.calls if c.path == names.HOOK_PATH]

    async def _batch(self, request: web.Request) -> web.Response:
        batch_id = request.headers[names.HEADER_BATCH_ID]
        self.calls.append(Call("/", dict(request.headers), await request.read()))
        await self._answer_nothing_if_frozen(batch_id)
        if self.cut.get(batch_id, 0) > 0 and request.transport is not None:
            self.cut[batch_id] -= 1
            request.transport.abort()  # a reset, as a worker's crashed request thread leaves; the worker stays up
            return web.Response()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), self.sleep_s.get(batch_id, 0))
        self.finished.append(batch_id)
        if batch_id in self.fail:
            return web.Response(status=self.fail[batch_id], text=f"model exploded on {batch_id}")
        body, content_type = self.answers.get(batch_id, (b"", "application/octet-stream"))
        return web.Response(body=body, content_type=content_type)

    async def _hook(self, request: web.Request) -> web.Response:
        self.calls.append(Call(names.HOOK_PATH, dict(request.headers), await request.read()))
        await self._answer_nothing_if_frozen(names.HOOK_PATH)
        if self.hook_failures > 0:
            self.hook_failures -= 1
            return web.Response(status=500, text="hook broke")
        return web.Response(status=self.hook_status)

    async def _healthz(self, request: web.Request) -> web.Response:
        self.readiness_checks += 1
        await self._answer_nothing_if_frozen()
        return web.Response(status=200 if self.ready else 503)

    async def _answer_nothing_if_frozen(self, call: str = "") -> None:
        if call and call == self.freeze_on:
            self.freeze_on = "*"
        if self.freeze_on == "*":
            await self._closing.wait()


@dataclass
class Running:
    dequeuer: Dequeuer
    task: asyncio.Task[int]
    reporter: Reporter


@dataclass
class Harness:
    config: Config
    backend: QueueBackend
    queue: Queue
    monitor: FakeMonitor
    monitor_server: grpc.aio.Server
    monitor_port: int
    worker: FakeWorker
    results: ResultStore
    running: list[Running] = field(default_factory=list)

    async def send(self, *batch_ids: str) -> None:
        await self.queue.send([Batch(b, f'[{{"item": "{b}"}}]'.encode()) for b in batch_ids])

    def start_dequeuer(self, worker_id: str = "w-1", **overrides: Any) -> Running:
        settings = Settings.create(
            self.config,
            job_id=JOB_ID,
            api_name="api",
            worker_id=worker_id,
            queue_name=QUEUE,
            worker_port=self.worker.port,
            **overrides,
        )
        reporter = Reporter(f"127.0.0.1:{self.monitor_port}", JOB_ID, worker_id, token(worker_id))
        reporter.start()
        dequeuer = Dequeuer(settings, self.queue, reporter, self.results)
        running = Running(dequeuer, asyncio.create_task(dequeuer.run()), reporter)
        self.running.append(running)
        return running

    async def depth(self) -> Depth:
        return await self.queue.depth()

    async def close(self) -> None:
        for r in self.running:
            r.dequeuer.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(r.task, 10)
            await r.reporter.close()
        await self.worker.close()
        await self.monitor_server.stop(0)
        await self.backend.close()


async def make_harness(
    tmp_path: Path, visibility_s: float = VISIBILITY_S, queue: QueueSettings | None = None
) -> Harness:
    config = Config(data_dir=tmp_path)
    config.queue = queue or config.queue
    config.queue.visibility_s = visibility_s
    config.queue.max_receive_count = 3
    config.dequeuer.wait_s = 0.2
    config.dequeuer.batch_timeout_s = 5.0
    config.dequeuer.readiness_timeout_s = 5.0
    config.dequeuer.hook_timeout_s = 2.0
    backend = open_queue_backend(config)
    await backend.create(QUEUE, visibility_s)
    monitor = FakeMonitor()
    server, port = await start_monitor(monitor)
    config.addresses.monitor = f"127.0.0.1:{port}"
    worker = FakeWorker()
    return Harness(config, backend, backend.open(QUEUE), monitor, server, port, worker, open_result_store(config))


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = await make_harness(tmp_path)
    try:
        await h.worker.start()
        yield h
    finally:
        await h.close()


@pytest.fixture
async def slow_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """Batches stay invisible for 30 s unless released: a released batch is visible at once, a held one is not."""
    h = await make_harness(tmp_path, visibility_s=30.0)
    try:
        await h.worker.start()
        yield h
    finally:
        await h.close()


def until(predicate: Callable[[], bool]) -> Callable[[], None]:
    def check() -> None:
        assert predicate()

    return check


def all_done(h: Harness, dead: int = 0) -> Any:
    async def check() -> None:
        assert await h.depth() == Depth(visible=0, in_flight=0, dead=dead)

    return check


# --- batches ---------------------------------------------------------------------------------------------------------


async def test_every_batch_is_posted_with_its_headers_and_acked_after_its_report(harness: Harness) -> None:
    # Given three batches and a healthy worker
    await harness.send("b0", "b1", "b2")
    # When the dequeuer runs
    harness.start_dequeuer()
    # Then each batch is POSTed once, as is, with its headers, and the queue is empty
    await assert_eventually(all_done(harness))
    calls = harness.worker.batch_calls()
    assert sorted(c.headers[names.HEADER_BATCH_ID] for c in calls) == ["b0", "b1", "b2"]
    for call in calls:
        batch_id = call.headers[names.HEADER_BATCH_ID]
        assert call.body == f'[{{"item": "{batch_id}"}}]'.encode()
        assert call.headers["Content-Type"] == "application/json"
        assert call.headers[names.HEADER_CORTEX_JOB_ID] == JOB_ID
        assert call.headers[names.HEADER_JOB_ID] == JOB_ID
        assert call.headers[names.HEADER_ATTEMPT] == "1"
    # And the monitor has STARTING, READY and one SUCCEEDED report per batch
    assert harness.monitor.phases()[:2] == [Phase.WORKER_PHASE_STARTING, Phase.WORKER_PHASE_READY]
    succeeded = harness.monitor.batch_reports(Result.BATCH_RESULT_SUCCEEDED)
    assert sorted((b.batch_id, b.attempt) for b in succeeded) == [("b0", 1), ("b1", 1), ("b2", 1)]
    assert all(b.duration_s > 0 for b in succeeded)


async def test_failing_batch_is_retried_then_dead_lettered_with_its_error(harness: Harness) -> None:
    # Given a batch the worker always fails with 503 and a good one, at most 3 attempts
    harness.worker.fail["bad"] = 503
    await harness.send("bad", "good")
    # When the dequeuer runs
    harness.start_dequeuer()
    # Then the bad batch is tried 3 times, then lands in the dead letter queue with its error
    await assert_eventually(all_done(harness, dead=1))
    assert [c.headers[names.HEADER_ATTEMPT] for c in harness.worker.batch_calls("bad")] == ["1", "2", "3"]
    [dead] = await harness.queue.dead_letters()
    assert dead.batch.batch_id == "bad" and dead.receive_count == 3
    assert "503" in dead.error and "model exploded on bad" in dead.error
    # And each attempt was reported FAILED with the limit; the monitor's ack of the third one said: dead-letter it
    assert harness.monitor.results("bad") == [
        (Result.BATCH_RESULT_FAILED, 1),
        (Result.BATCH_RESULT_FAILED, 2),
        (Result.BATCH_RESULT_FAILED, 3),
    ]
    failures = harness.monitor.batch_reports(Result.BATCH_RESULT_FAILED)
    assert {f.max_attempts for f in failures} == {3}
    assert failures[-1].error == dead.error
    assert harness.monitor.results("good") == [(Result.BATCH_RESULT_SUCCEEDED, 1)]


async def test_a_json_answer_is_the_batch_result_kept_under_its_index_before_the_ack(harness: Harness) -> None:
    # Given batches whose worker answers JSON (one of them twice: its first attempt fails), plain text, or nothing
    ids = [f"{JOB_ID}-{index:06d}" for index in range(4)]
    for index, batch_id in enumerate(ids[:2]):
        harness.worker.answers[batch_id] = (b'{"n": %d}' % index, "application/json")
    harness.worker.answers[ids[2]] = (b"done", "text/plain")  # not JSON: no result
    harness.worker.cut[ids[0]] = 1  # its first attempt fails: the result is the successful one's, once
    await harness.send(*ids)
    # When the dequeuer runs them
    harness.start_dequeuer()
    await assert_eventually(all_done(harness))
    # Then each JSON answer is kept once, under its batch's index, with the batch's items, in batch order
    [page] = [page async for page in harness.results.read(JOB_ID)]
    assert [(r.index, r.batch_id, r.result, r.items) for r in page] == [
        (index, batch_id, b'{"n": %d}' % index, f'[{{"item": "{batch_id}"}}]'.encode())
        for index, batch_id in enumerate(ids[:2])
    ]
    assert [r.index for page in [p async for p in harness.results.read(JOB_ID, after=0)] for r in page] == [1]


async def test_a_result_over_max_batch_bytes_fails_the_attempt_with_a_clear_error(harness: Harness) -> None:
    # Given a limit of 100 bytes and a worker answering 200 bytes of JSON for one batch
    harness.config.results.max_batch_bytes = 100
    big, small = f"{JOB_ID}-000000", f"{JOB_ID}-000001"
    harness.worker.answers[big] = (b'{"x": "%s"}' % (b"y" * 200), "application/json")
    harness.worker.answers[small] = (b"[1]", "application/json")
    await harness.send(big, small)
    # When the dequeuer runs them
    harness.start_dequeuer()
    # Then the big one fails each attempt and is dead-lettered saying why; the small one's result is kept
    await assert_eventually(all_done(harness, dead=1))
    [dead] = await harness.queue.dead_letters()
    assert dead.batch.batch_id == big and "over results.max_batch_bytes (100 bytes)" in dead.error
    [page] = [page async for page in harness.results.read(JOB_ID)]
    assert [(r.batch_id, r.result) for r in page] == [(small, b"[1]")]


async def test_a_result_that_cannot_be_stored_fails_the_attempt_saying_why(harness: Harness) -> None:
    # Given a job whose results folder cannot be made (a file stands in its place)
    (harness.config.data_dir / "results").mkdir()
    (harness.config.data_dir / "results" / JOB_ID).write_text("not a folder")
    batch_id = f"{JOB_ID}-000000"
    harness.worker.answers[batch_id] = (b"[1]", "application/json")
    await harness.send(batch_id)
    # When the dequeuer runs it
    harness.start_dequeuer()
    # Then each attempt fails, saying why, and the batch is dead-lettered rather than acked without its result
    await assert_eventually(all_done(harness, dead=1))
    [dead] = await harness.queue.dead_letters()
    assert "could not store the batch's result" in dead.error
    assert harness.monitor.results(batch_id) == [(Result.BATCH_RESULT_FAILED, n) for n in (1, 2, 3)]


async def test_a_cut_connection_from_a_worker_still_up_is_a_failed_attempt_not_a_lost_worker(harness: Harness) -> None:
    # Given a worker that cuts the connection of one batch once, without an answer, and goes on listening
    harness.worker.cut["cut"] = 1
    await harness.send("cut")
    # When the dequeuer runs
    running = harness.start_dequeuer()
    # Then that attempt failed, the batch was run again and succeeded, and the dequeuer goes on with its worker
    await assert_eventually(all_done(harness))
    assert harness.monitor.results("cut") == [(Result.BATCH_RESULT_FAILED, 1), (Result.BATCH_RESULT_SUCCEEDED, 2)]
    assert not running.task.done()


async def test_a_batch_that_outlasts_its_timeout_is_a_failed_attempt(harness: Harness) -> None:
    # Given a batch the worker takes 5 s over, a 0.3 s batch timeout and one attempt
    harness.worker.sleep_s["slow"] = 5.0
    await harness.send("slow")
    # When the dequeuer runs
    running = harness.start_dequeuer(batch_timeout_s=0.3, max_receive_count=1, readiness_path="/healthz")
    # Then the batch is dead-lettered with a timeout error: the worker answers its health check, so it is not hung
    await assert_eventually(all_done(harness, dead=1))
    [dead] = await harness.queue.dead_letters()
    assert "timeout" in dead.error
    assert harness.monitor.results("slow") == [(Result.BATCH_RESULT_FAILED, 1)]
    assert not running.task.done(), "a slow batch is not a sick worker"


async def test_a_worker_that_answers_nothing_is_hung_and_its_batches_go_back_keeping_their_attempts(
    slow_harness: Harness,
) -> None:
    # Given a worker that freezes on b0 (from then on it answers nothing, not even its health check), a 0.3 s batch
    # timeout, and batches invisible for 30 s unless released
    h = slow_harness
    h.worker.freeze_on = "b0"
    await h.send("b0", "b1")
    # When the dequeuer runs
    running = h.start_dequeuer(batch_timeout_s=0.3, readiness_path="/healthz")
    # Then it exits with the hung worker's code, having fed it nothing more
    assert await asyncio.wait_for(running.task, 10) == names.EXIT_WORKER_HUNG
    assert [c.headers[names.HEADER_BATCH_ID] for c in h.worker.batch_calls()] == ["b0"]
    # And both batches are visible again at once, b0 reported RELEASED: no attempt used
    assert await h.depth() == Depth(visible=2, in_flight=0, dead=0)
    assert h.monitor.results("b0") == [(Result.BATCH_RESULT_RELEASED, 1)]


async def test_a_worker_on_a_long_batch_holds_it_and_one_batch_waiting_no_more(slow_harness: Harness) -> None:
    # Given ten batches the worker takes 10 s over
    h = slow_harness
    h.worker.sleep_s = {f"b{i}": 10.0 for i in range(10)}
    await h.send(*h.worker.sleep_s)
    # When the dequeuer runs the first one
    h.start_dequeuer(grace_s=0.1)
    await assert_eventually(until(lambda: len(h.worker.batch_calls()) == 1))
    # Then it has received one more batch, not a full receive's worth: the others stay for other workers
    await assert_eventually(lambda: _depth_is(h, Depth(visible=8, in_flight=2, dead=0)))


async def test_a_batch_slower_than_three_visibility_periods_is_delivered_once(harness: Harness) -> None:
    # Given a batch that takes 1.8 s while the queue's visibility is 0.5 s, and two dequeuers on the queue
    harness.worker.sleep_s["long"] = 1.8
    await harness.send("long")
    harness.start_dequeuer("w-1")
    harness.start_dequeuer("w-2")
    # When the batch is done
    await assert_eventually(until(lambda: harness.monitor.results("long") == [(Result.BATCH_RESULT_SUCCEEDED, 1)]))
    await assert_eventually(all_done(harness))
    # Then the worker got it once: its visibility was extended while it ran
    assert len(harness.worker.batch_calls("long")) == 1


# --- readiness -------------------------------------------------------------------------------------------------------


async def test_no_batch_is_taken_until_the_worker_answers_its_readiness_check(harness: Harness) -> None:
    # Given a worker whose readiness check answers 503
    harness.worker.ready = False
    await harness.send("b0")
    harness.start_dequeuer(readiness_path="/healthz")
    # When the dequeuer has checked a few times
    await assert_eventually(until(lambda: harness.worker.readiness_checks >= 3))
    # Then it took no batch and is still STARTING
    assert harness.worker.batch_calls() == []
    assert await harness.depth() == Depth(visible=1, in_flight=0, dead=0)
    assert harness.monitor.phases() == [Phase.WORKER_PHASE_STARTING]
    # When the worker becomes ready, then the batch is processed after READY
    harness.worker.ready = True
    await assert_eventually(all_done(harness))
    assert harness.monitor.phases() == [Phase.WORKER_PHASE_STARTING, Phase.WORKER_PHASE_READY]


async def test_a_worker_that_starts_listening_late_is_waited_for(tmp_path: Path) -> None:
    # Given a worker port that is reserved but not listening yet
    h = await make_harness(tmp_path)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    h.worker.port = sock.getsockname()[1]
    try:
        await h.send("b0")
        h.start_dequeuer()
        await assert_eventually(until(lambda: h.monitor.phases() == [Phase.WORKER_PHASE_STARTING]))
        assert await h.depth() == Depth(visible=1, in_flight=0, dead=0)
        # When the worker starts listening
        await h.worker.start(sock)
        # Then the batch is processed
        await assert_eventually(all_done(h))
        assert len(h.worker.batch_calls("b0")) == 1
    finally:
        await h.close()
        sock.close()


async def test_a_worker_never_ready_ends_the_dequeuer_with_exit_code_1(harness: Harness) -> None:
    # Given a worker that never becomes ready and a 0.3 s readiness limit
    harness.worker.ready = False
    harness.config.dequeuer.readiness_timeout_s = 0.3
    await harness.send("b0")
    # When the dequeuer runs, then it gives up with exit code 1, having taken no batch
    running = harness.start_dequeuer(readiness_path="/healthz")
    assert await asyncio.wait_for(running.task, 5) == 1
    assert await harness.depth() == Depth(visible=1, in_flight=0, dead=0)


# --- the completion hook ---------------------------------------------------------------------------------------------


async def send_job_complete(h: Harness, summary: bytes) -> None:
    await h.queue.send([Batch(f"{JOB_ID}:{names.JOB_COMPLETE}", summary, KIND_JOB_COMPLETE)])


async def assert_hook_acked(h: Harness) -> None:
    """Stop the dequeuers; then the job_complete message must be gone, not merely in flight."""
    for r in h.running:
        r.dequeuer.stop()
        await asyncio.wait_for(r.task, 5)
    assert await h.queue.receive(10, 2 * VISIBILITY_S) == []


async def test_the_completion_hook_gets_the_summary_and_idempotency_key_and_is_reported(harness: Harness) -> None:
    # Given the job_complete message with the job summary
    summary = b'{"job_id": "job-1", "succeeded": 3, "dead_lettered": []}'
    await send_job_complete(harness, summary)
    # When the dequeuer takes it
    harness.start_dequeuer()
    # Then the hook is called once with the summary unchanged and the idempotency key, and the outcome reported
    await assert_eventually(until(lambda: len(harness.monitor.hooks()) == 1))
    [call] = harness.worker.hook_calls()
    assert call.body == summary
    assert call.headers["Content-Type"] == "application/json"
    assert call.headers[names.HEADER_IDEMPOTENCY_KEY] == f"{JOB_ID}:on-job-complete"
    assert call.headers[names.HEADER_CORTEX_JOB_ID] == JOB_ID
    assert call.headers[names.HEADER_JOB_ID] == JOB_ID
    assert harness.monitor.hooks() == [jobs_pb2.HookOutcome(called=True, succeeded=True, http_status=200, attempts=1)]
    await assert_hook_acked(harness)


async def test_a_hook_call_to_a_hung_worker_goes_back_for_a_healthy_one(slow_harness: Harness) -> None:
    # Given the job_complete message and a worker that freezes on the hook call
    h = slow_harness
    h.worker.freeze_on = names.HOOK_PATH
    await send_job_complete(h, b'{"job_id": "job-1"}')
    # When the dequeuer calls the hook, then it exits with the hung worker's code and the message is visible again
    running = h.start_dequeuer(readiness_path="/healthz")
    assert await asyncio.wait_for(running.task, 10) == names.EXIT_WORKER_HUNG
    [again] = await h.queue.receive(10, 0)  # at once, not after the visibility timeout (30 s)
    assert again.batch.kind == KIND_JOB_COMPLETE and again.receive_count == 2
    assert h.monitor.hooks() == [], "no outcome: the hook is still to be called"


async def test_a_hook_answering_404_counts_as_success(harness: Harness) -> None:
    # Given a worker without a hook
    harness.worker.hook_status = 404
    await send_job_complete(harness, b"{}")
    # When the dequeuer takes the job_complete message, then the hook counts as succeeded at once
    harness.start_dequeuer()
    await assert_eventually(until(lambda: len(harness.monitor.hooks()) == 1))
    assert harness.monitor.hooks() == [jobs_pb2.HookOutcome(called=True, succeeded=True, http_status=404, attempts=1)]
    assert len(harness.worker.hook_calls()) == 1
    await assert_hook_acked(harness)


async def test_a_failed_hook_call_is_tried_again_with_the_same_key(harness: Harness) -> None:
    # Given a hook that fails once
    harness.worker.hook_failures = 1
    await send_job_complete(harness, b"{}")
    # When the dequeuer takes the job_complete message
    harness.start_dequeuer()
    # Then the hook is called again and only the final outcome is reported
    await assert_eventually(until(lambda: len(harness.monitor.hooks()) == 1))
    assert harness.monitor.hooks() == [jobs_pb2.HookOutcome(called=True, succeeded=True, http_status=200, attempts=2)]
    keys = {c.headers[names.HEADER_IDEMPOTENCY_KEY] for c in harness.worker.hook_calls()}
    assert len(harness.worker.hook_calls()) == 2 and keys == {f"{JOB_ID}:on-job-complete"}
    await assert_hook_acked(harness)


async def test_a_hook_failing_every_attempt_is_reported_failed_and_dropped(harness: Harness) -> None:
    # Given a hook that always fails and two attempts allowed
    harness.worker.hook_failures = 100
    await send_job_complete(harness, b"{}")
    # When the dequeuer takes the job_complete message
    harness.start_dequeuer(max_receive_count=2)
    # Then after the second failure the outcome is reported as failed, with the error, and the message acked
    await assert_eventually(until(lambda: len(harness.monitor.hooks()) == 1))
    [hook] = harness.monitor.hooks()
    assert (hook.called, hook.succeeded, hook.http_status, hook.attempts) == (True, False, 500, 2)
    assert "hook broke" in hook.error
    await assert_hook_acked(harness)


# --- the job's end and stopping --------------------------------------------------------------------------------------


async def test_deleting_the_queue_ends_the_dequeuer_with_exit_code_0(harness: Harness) -> None:
    # Given a dequeuer taking batches
    running = harness.start_dequeuer()
    await assert_eventually(until(lambda: Phase.WORKER_PHASE_READY in harness.monitor.phases()))
    # When the job's queue is deleted
    await harness.backend.delete(QUEUE)
    # Then the dequeuer reports STOPPING and exits 0
    assert await asyncio.wait_for(running.task, 5) == 0
    assert harness.monitor.phases()[-1] == Phase.WORKER_PHASE_STOPPING


async def test_with_idle_s_it_exits_76_once_nothing_came_that_long_not_while_a_longer_batch_runs(
    harness: Harness,
) -> None:
    # Given a dequeuer with idle_s 0.5 s and a batch that takes 1.5 s
    harness.worker.sleep_s = {"b0": 1.5}
    await harness.send("b0")
    running = harness.start_dequeuer(idle_s=0.5)
    # When the batch is done and nothing more comes
    # Then it ran the batch to the end (a long batch is no idleness), and then exits EXIT_IDLE holding nothing
    assert await asyncio.wait_for(running.task, 10) == names.EXIT_IDLE
    assert harness.worker.finished == ["b0"]
    assert [r.batch_id for r in harness.monitor.batch_reports(Result.BATCH_RESULT_SUCCEEDED)] == ["b0"]
    assert await harness.depth() == Depth(visible=0, in_flight=0, dead=0)
    assert harness.monitor.phases()[-1] == Phase.WORKER_PHASE_STOPPING


async def test_stop_releases_a_batch_that_outlasts_the_grace_period(slow_harness: Harness) -> None:
    # Given a dequeuer busy with a batch that takes 10 s, and another batch received behind it
    h = slow_harness
    h.worker.sleep_s = {"b0": 10.0, "b1": 10.0}
    await h.send("b0", "b1")
    running = h.start_dequeuer(grace_s=0.3)
    await assert_eventually(until(lambda: len(h.worker.batch_calls()) == 1))
    # When it is told to stop
    running.dequeuer.stop()
    # Then it gives up on the batch after the grace period, releases both batches and exits 0
    assert await asyncio.wait_for(running.task, 5) == 0
    assert await h.depth() == Depth(visible=2, in_flight=0, dead=0)
    assert h.monitor.batch_reports(Result.BATCH_RESULT_SUCCEEDED) == []
    assert h.monitor.phases()[-1] == Phase.WORKER_PHASE_STOPPING


async def test_unacked_reports_are_resent_after_a_monitor_restart_and_nothing_is_lost(tmp_path: Path) -> None:
    # Given a monitor that records reports but cannot ack them
    h = await make_harness(tmp_path)
    await h.monitor_server.stop(0)
    h.monitor = FakeMonitor(ack=False)
    h.monitor_server, _ = await start_monitor(h.monitor, h.monitor_port)
    await h.worker.start()
    try:
        await h.send("b0", "b1", "b2")
        h.start_dequeuer()
        # When every batch has succeeded, their reports are unacked: the batches stay held on the queue (only the
        # first message reached the monitor: the reporter sends the next once the one before is acked)
        await assert_eventually(until(lambda: all(h.worker.batch_calls(b) for b in ("b0", "b1", "b2"))))
        await assert_eventually(until(lambda: h.monitor.reports))
        first = h.monitor.reports[0]
        await asyncio.sleep(3 * VISIBILITY_S)  # long enough for them to come back, were they not kept invisible
        assert await h.depth() == Depth(visible=0, in_flight=3, dead=0)
        # When the monitor restarts, acking this time
        await h.monitor_server.stop(0)
        h.monitor = FakeMonitor(ack=True)
        h.monitor_server, _ = await start_monitor(h.monitor, h.monitor_port)
        # Then the unacked report is sent again, every batch succeeds once, and the queue is empty
        await assert_eventually(all_done(h))
        assert first.seq in {r.seq for r in h.monitor.reports}
        for batch_id in ("b0", "b1", "b2"):
            assert h.monitor.results(batch_id) == [(Result.BATCH_RESULT_SUCCEEDED, 1)]
            assert len(h.worker.batch_calls(batch_id)) == 1
    finally:
        await h.close()


async def test_reports_queued_while_the_monitor_has_not_acked_go_together_in_the_next_message() -> None:
    monitor = FakeMonitor()
    monitor.acks_open.clear()
    server, port = await start_monitor(monitor)
    reporter = Reporter(f"127.0.0.1:{port}", JOB_ID, "w-1", token("w-1"))
    reporter.start()
    try:
        # Given a first report, sent at once (the stream is idle), that the monitor has not acked yet
        first = reporter.send(_succeeded("b0"))
        await assert_eventually(until(lambda: monitor.message_sizes == [1]))
        # When five more are queued meanwhile, they wait for that ack
        rest = [reporter.send(_succeeded(f"b{i}")) for i in range(1, 6)]
        await asyncio.sleep(0.1)
        assert monitor.message_sizes == [1]
        # Then, once it comes, they go in one message, and every report is acked
        monitor.acks_open.set()
        await asyncio.wait_for(asyncio.gather(first, *rest), 10)
        assert monitor.message_sizes == [1, 5]
    finally:
        await reporter.close()
        await server.stop(0)


async def test_a_batch_received_is_reported_at_once_even_while_the_monitor_has_not_acked(harness: Harness) -> None:
    h = harness
    h.worker.sleep_s["b1"] = 60.0
    running = h.start_dequeuer()
    await assert_eventually(until(lambda: running.dequeuer.ready))
    # Given a report the monitor has read but not acked yet (a slow commit)
    h.monitor.acks_open.clear()
    try:
        read = len(h.monitor.message_sizes)
        running.reporter.send(monitor_pb2.WorkerReport(phase=Phase.WORKER_PHASE_READY))
        await assert_eventually(until(lambda: len(h.monitor.message_sizes) > read))
        # When the dequeuer receives a batch (and its worker starts on it)
        await h.send("b1")
        await assert_eventually(until(lambda: len(h.worker.batch_calls("b1")) == 1))
        # Then its STARTED report, with the receipt to release it by should this dequeuer be lost, has reached the
        # monitor without waiting for that ack
        started = lambda: h.monitor.batch_reports(Result.BATCH_RESULT_STARTED)  # noqa: E731
        await assert_eventually(until(lambda: [r.batch_id for r in started()] == ["b1"]))
        assert started()[0].receipt
    finally:
        h.monitor.acks_open.set()


async def test_a_dequeuer_that_reported_within_the_heartbeat_period_sends_no_heartbeat(harness: Harness) -> None:
    h = harness
    h.config.dequeuer.heartbeat_s = 1.0
    running = h.start_dequeuer()
    await assert_eventually(until(lambda: running.dequeuer.ready))
    worker_reports = lambda: [r for r in h.monitor.unique() if r.HasField("worker")]  # noqa: E731
    # While it reports a batch every 0.1 s for 3 s (three heartbeat periods)
    before = len(worker_reports())
    for n in range(30):
        running.reporter.send(_succeeded(f"b{n}"))
        await asyncio.sleep(0.1)
    # Then the monitor got no heartbeat (those reports said the worker was alive)
    assert len(worker_reports()) == before
    # And once it reports nothing, heartbeats come again
    await assert_eventually(until(lambda: len(worker_reports()) > before), timeout_s=5)


async def test_a_busy_dequeuer_whose_queue_bills_calls_still_sends_them_every_heartbeat_period(
    tmp_path: Path, moto_server: str
) -> None:
    # Given a dequeuer on SQS (whose calls are billed), with a heartbeat period of 1 s
    h = await make_harness(tmp_path, queue=sqs_settings(moto_server))
    try:
        await h.worker.start()
        h.config.dequeuer.heartbeat_s = 1.0
        running = h.start_dequeuer()
        await assert_eventually(until(lambda: running.dequeuer.ready))
        receives = lambda: [  # noqa: E731
            r.worker.queue_calls.calls["ReceiveMessage"] for r in h.monitor.unique() if r.HasField("worker")
        ]
        before = len(receives())
        # While it reports a batch every 0.1 s for 3 s (three heartbeat periods), its receives adding up
        for n in range(30):
            running.reporter.send(_succeeded(f"b{n}"))
            await asyncio.sleep(0.1)
        # Then heartbeats still brought its growing count of calls (killed now, it would lose one period's at most)
        since = receives()[before:]
        assert len(since) >= 2 and since == sorted(since) and since[-1] > since[0], receives()
    finally:
        await h.close()


def _succeeded(batch_id: str) -> monitor_pb2.BatchReport:
    return monitor_pb2.BatchReport(batch_id=batch_id, attempt=1, result=Result.BATCH_RESULT_SUCCEEDED)


async def _depth_is(h: Harness, expected: Depth) -> None:
    assert await h.depth() == expected


# --- the command line ------------------------------------------------------------------------------------------------


async def start_subprocess(
    h: Harness, log_path: Path, *args: str, worker_token: str | None = token("w-proc")
) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if k != names.ENV_WORKER_TOKEN} | config_env(h.config)
    env |= {names.ENV_WORKER_TOKEN: worker_token} if worker_token else {}
    command = [sys.executable, "-m", "services.dequeuer", "--job-id", JOB_ID, "--api-name", "api"]
    command += ["--worker-id", "w-proc", "--queue", QUEUE, "--worker-port", str(h.worker.port), *args]
    with open(log_path, "wb") as log:
        return await asyncio.create_subprocess_exec(*command, cwd=ROOT, env=env, stdout=log, stderr=log)


async def test_sigterm_mid_batch_lets_it_finish_releases_the_others_and_exits_drained(
    slow_harness: Harness, tmp_path: Path
) -> None:
    # Given the dequeuer as a process, busy with the first of three batches (each takes 3 s)
    h = slow_harness
    h.worker.sleep_s = {"b0": 3.0, "b1": 3.0, "b2": 3.0}
    await h.send("b0", "b1", "b2")
    log_path = tmp_path / "dequeuer.log"
    flags = ("--batch-timeout-s", "10", "--max-receive-count", "2")
    process = await start_subprocess(h, log_path, "--readiness-path", "/healthz", "--grace-s", "8", *flags)
    try:
        await assert_eventually(until(lambda: len(h.worker.batch_calls()) == 1), timeout_s=8)
        # When it gets SIGTERM
        process.send_signal(signal.SIGTERM)
        # Then it releases the two others at once, while the first one still runs
        await assert_eventually(lambda: _depth_is(h, Depth(visible=2, in_flight=1, dead=0)))
        assert h.worker.finished == []
        # And it finishes that batch and exits "drained" (not 0: its job goes on, so runtimes replace the worker)
        assert await asyncio.wait_for(process.wait(), 8) == names.EXIT_DRAINED, log_path.read_text()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    [call] = h.worker.batch_calls()
    batch_id = call.headers[names.HEADER_BATCH_ID]
    assert h.worker.finished == [batch_id]
    assert h.monitor.results(batch_id) == [(Result.BATCH_RESULT_SUCCEEDED, 1)]
    assert await h.depth() == Depth(visible=2, in_flight=0, dead=0)
    assert h.monitor.phases() == [Phase.WORKER_PHASE_STARTING, Phase.WORKER_PHASE_READY, Phase.WORKER_PHASE_STOPPING]
    assert {r.worker_id for r in h.monitor.reports} == {"w-proc"}
    assert '"service": "dequeuer"' in log_path.read_text()


async def test_a_bad_command_line_is_refused_with_a_clear_message(harness: Harness, tmp_path: Path) -> None:
    # When the dequeuer is started with a readiness path that is not a path, then it exits 2 and says why
    log_path = tmp_path / "dequeuer.log"
    process = await start_subprocess(harness, log_path, "--readiness-path", "healthz")
    assert await asyncio.wait_for(process.wait(), 8) == 2
    assert "--readiness-path" in log_path.read_text() and "must start with '/'" in log_path.read_text()


async def test_a_dequeuer_without_its_token_exits_2_and_says_why(harness: Harness, tmp_path: Path) -> None:
    log_path = tmp_path / "dequeuer.log"
    process = await start_subprocess(harness, log_path, worker_token=None)
    assert await asyncio.wait_for(process.wait(), 8) == 2
    assert f"{names.ENV_WORKER_TOKEN} is not set" in log_path.read_text()
    assert harness.monitor.reports == []


OTHER_STACK = trust.Trust(b"the-secret-of-another-stack-" + b"1" * 36)


@pytest.mark.parametrize(
    ("refused_token", "code"),
    [
        (OTHER_STACK.token(trust.DEQUEUER, JOB_ID, "w-proc"), "UNAUTHENTICATED"),  # made under another secret
        (TEST_TRUST.token(trust.GATEWAY), "PERMISSION_DENIED"),  # a role that may not report
    ],
    ids=["another-stacks-token", "a-gateways-token"],
)
async def test_a_dequeuer_whose_token_the_monitor_refuses_exits_at_once_saying_why_and_holds_nothing(
    slow_harness: Harness, tmp_path: Path, refused_token: str, code: str
) -> None:
    # Given batches waiting, and a dequeuer process whose token the monitor refuses
    h = slow_harness
    await h.send("b0", "b1")
    log_path = tmp_path / "dequeuer.log"
    process = await start_subprocess(h, log_path, worker_token=refused_token)
    try:
        # Then it gives up at once (trying the same token again cannot help) with its own exit code
        assert await asyncio.wait_for(process.wait(), 15) == names.EXIT_TOKEN_REFUSED, log_path.read_text()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    # And its log says why, without the token
    log = log_path.read_text()
    assert "refused this dequeuer's token" in log and code in log, log
    assert refused_token not in log and refused_token.rpartition(":")[2] not in log
    # And it holds no batch: whatever it took is visible again at once for another worker
    assert await h.depth() == Depth(visible=2, in_flight=0, dead=0), log


async def test_the_dequeuer_process_serves_its_health_and_metrics(harness: Harness, tmp_path: Path) -> None:
    # Given the dequeuer as a process whose worker is not ready yet
    h = harness
    h.worker.ready = False
    log_path = tmp_path / "dequeuer.log"
    process = await start_subprocess(h, log_path, "--readiness-path", "/healthz")
    try:
        port = await assert_eventually(lambda: _admin_port(log_path))
        async with aiohttp.ClientSession() as session:
            # Then it is not healthy while its worker is not ready, healthy once it is, and serves its metrics
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 503
            h.worker.ready = True

            async def healthy() -> None:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    assert response.status == 200

            await assert_eventually(healthy)
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert "process_resident_memory_bytes" in await response.text()
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 20)


def _admin_port(log_path: Path) -> int:
    match = re.search(r"health and metrics on port (\d+)", log_path.read_text())
    assert match, "not listening yet"
    return int(match.group(1))
