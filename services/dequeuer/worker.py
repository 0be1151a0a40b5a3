"""The worker's HTTP side: its readiness check, `POST /` for a batch and `POST /on-job-complete` for the hook; and
after a call that failed, whether the worker is gone or hung (judge), which is not the batch's fault."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from dataclasses import dataclass

from services.dequeuer.http import MAX_BODY_BYTES, Exchange, HttpClient, NotStarted, ProtocolError, Response
from thresher.core import names
from thresher.core.queue import Batch

log = logging.getLogger(__name__)

HOST = "127.0.0.1"  # the worker runs beside the dequeuer (same pod or machine)
# How often a starting worker is probed. Every start waits for the next probe, and a refused connect costs next to
# nothing: often at first, then less for a slow start (a model loading), where 0.1 s more is nothing.
READINESS_INTERVAL_S = 0.005
READINESS_SLOW_AFTER_S = 1.0
READINESS_SLOW_INTERVAL_S = 0.1
READINESS_PROBE_TIMEOUT_S = 1.0  # one probe; the overall limit is readiness_timeout_s
EXIT_POLL_INTERVAL_S = 0.01  # how often a worker that broke a connection is checked for a closed port
ERROR_BODY_BYTES = 500  # how much of a failed answer goes into the batch's error
WORKER_EXIT_S = 0.2  # how long a worker that broke a connection gets to finish dying before it is judged alive
# After a call timed out, how long the worker gets to answer a GET of its readiness path (or `/`), whatever the
# status: one that does not is hung (stopped, deadlocked), not slow, and is replaced; the batch keeps its attempts.
HUNG_PROBE_TIMEOUT_S = 2.0


class WorkerLost(Exception):
    """The worker stopped answering on its port: this pod is broken, the runtime replaces it."""

    exit_code = 1


class WorkerHung(WorkerLost):
    """The worker answers nothing, not even a health check: the runtime kills and replaces it."""

    exit_code = names.EXIT_WORKER_HUNG


@dataclass(slots=True)
class Outcome:
    """The result of one call to the worker (not to be changed: not frozen only because that makes it slower)."""

    ok: bool
    http_status: int  # 0 when no answer was received
    error: str  # empty when ok
    duration_s: float
    unreachable: bool = False  # no answer at all: the worker may be gone (the caller checks)
    not_started: bool = False  # pipelined, and the worker closed the connection without reading it: send it again
    timed_out: bool = False  # no answer within the timeout: a slow batch, or a hung worker (the caller checks)
    result: bytes = b""  # a batch's result: the body of a 2xx answer that is JSON (Content-Type), when not empty


class WorkerClient:
    def __init__(self, port: int, job_id: str, max_result_bytes: int) -> None:
        self._http = HttpClient(HOST, port, max(MAX_BODY_BYTES, max_result_bytes))
        self._port = port
        self._max_result_bytes = max_result_bytes
        self._job_id = job_id
        self.pipelining = False  # the worker said it takes pipelined requests (in its last answer)
        # The header fields every POST carries, as lines.
        self._job_lines = (
            f"Content-Type: application/json\r\n{names.HEADER_CORTEX_JOB_ID}: {job_id}\r\n"
            f"{names.HEADER_JOB_ID}: {job_id}\r\n"
        )

    def close(self) -> None:
        self._http.close()

    async def wait_ready(self, readiness_path: str | None, timeout_s: float) -> bool:
        """Poll until the worker is ready (HTTP 2xx on `readiness_path`, else a TCP connect); False at the deadline."""
        started = time.monotonic()
        while (waited_s := time.monotonic() - started) < timeout_s:
            if self._refused_at_once():
                pass  # nothing listens yet: no need for the full probe, a tenth of a millisecond of CPU each
            elif await (self._http_ready(readiness_path) if readiness_path else self._tcp_ready()):
                return True
            slow = waited_s >= READINESS_SLOW_AFTER_S
            await asyncio.sleep(READINESS_SLOW_INTERVAL_S if slow else READINESS_INTERVAL_S)
        return False

    def _refused_at_once(self) -> bool:
        """A non-blocking connect that the kernel refused before returning: on loopback, a connect to a port nobody
        listens on is answered at once. Anything else (connected, or still under way) takes the full probe."""
        with socket.socket() as probe:
            probe.setblocking(False)
            probe.connect_ex((HOST, self._port))
            return probe.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED

    async def _http_ready(self, path: str) -> bool:
        try:
            async with asyncio.timeout(READINESS_PROBE_TIMEOUT_S):
                response = await self._http.request("GET", path)
        except (OSError, ProtocolError, TimeoutError):
            return False
        return 200 <= response.status < 300

    async def judge(self, outcome: Outcome, probe_path: str) -> None:
        """After a call that failed: WorkerLost if the worker is gone (it broke the connection and closed its port),
        WorkerHung if it timed out and answers no `GET probe_path` either; else it is alive and the call failed."""
        if outcome.unreachable and not await self.alive(within_s=WORKER_EXIT_S):
            raise WorkerLost(f"worker on port {self._port} is gone ({outcome.error})")
        if outcome.timed_out and not await self.answers(probe_path, HUNG_PROBE_TIMEOUT_S):
            raise WorkerHung(
                f"worker on port {self._port} is hung: {outcome.error}, and it did not answer GET {probe_path}"
                f" within {HUNG_PROBE_TIMEOUT_S:g} s either"
            )

    async def answers(self, path: str, timeout_s: float) -> bool:
        """The worker answers `GET path` on a new connection within `timeout_s`, whatever the status: its process is
        not frozen. (A connect alone proves nothing: the kernel accepts connections for a stopped process.)"""
        http = HttpClient(HOST, self._port)  # not a kept-alive connection: its worker thread may be the stuck one
        try:
            async with asyncio.timeout(timeout_s):
                await http.request("GET", path)
        except (OSError, ProtocolError, TimeoutError):
            return False
        finally:
            http.close()
        return True

    async def _tcp_ready(self) -> bool:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(HOST, self._port), READINESS_PROBE_TIMEOUT_S)
        except (OSError, TimeoutError):
            return False
        writer.close()
        await writer.wait_closed()
        return True

    async def send_batch(self, batch: Batch, attempt: int, timeout_s: float, after: Call | None = None) -> Call:
        """Write the batch's POST (its body as is); `await call.outcome()` waits for the answer: any 2xx is success.

        `timeout_s` counts from now. `after`: pipeline it behind that call (whose answer comes first), which must be
        `pipelinable`; its time then counts from `call.start()`, when the worker is done with the one before.
        """
        lines = f"{self._job_lines}{names.HEADER_BATCH_ID}: {batch.batch_id}\r\n{names.HEADER_ATTEMPT}: {attempt}\r\n"
        return await self._send("/", batch.body, lines, timeout_s, accept_404=False, after=after, with_result=True)

    async def post_hook(self, summary: bytes, timeout_s: float) -> Outcome:
        """POST the job summary to the completion hook; 404 means the worker has no hook, which is success."""
        lines = f"{self._job_lines}{names.HEADER_IDEMPOTENCY_KEY}: {self._job_id}:on-job-complete\r\n"
        return await (await self._send(names.HOOK_PATH, summary, lines, timeout_s, accept_404=True)).outcome()

    async def _send(
        self,
        path: str,
        body: bytes,
        header_lines: str,
        timeout_s: float,
        accept_404: bool,
        after: Call | None = None,
        with_result: bool = False,
    ) -> Call:
        call = Call(self, path, timeout_s, accept_404, with_result)
        after_exchange = after.exchange if after is not None else None
        try:
            if after_exchange is not None or self._http.idle:  # written at once, no connect to wait for
                call.exchange = await self._http.send(
                    "POST", path, body, after=after_exchange, header_lines=header_lines
                )
            else:
                async with asyncio.timeout(timeout_s):
                    call.exchange = await self._http.send("POST", path, body, header_lines=header_lines)
        except TimeoutError:
            call.error, call.timed_out = f"worker did not answer POST {path} within {timeout_s:g} s (timeout)", True
        except NotStarted as e:
            call.error, call.not_started = f"worker did not read POST {path}: {e}", True
        except OSError as e:
            call.error, call.unreachable = f"worker not reachable for POST {path}: {type(e).__name__}: {e}", True
        return call

    def result(self, response: Response) -> tuple[bytes, str]:
        """(the batch's result in a 2xx answer, b"" for none; an error when it is over results.max_batch_bytes)."""
        if not response.body or not response.content_type.startswith(b"application/json"):
            return b"", ""
        if response.cut or len(response.body) > self._max_result_bytes:
            return b"", (
                f"the worker's result (its JSON answer) is over results.max_batch_bytes ({self._max_result_bytes}"
                " bytes): return less per batch, or make batches smaller"
            )
        return response.body, ""

    async def alive(self, within_s: float = 0.0) -> bool:
        """The worker still accepts connections on its port. After a broken connection, a worker that died mid-batch
        may take a moment to close its port: a refused connect within `within_s` says at once that it is gone, and
        only at the end is a worker still listening judged alive (one full connect)."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self._refused_at_once():
                return False
            await asyncio.sleep(EXIT_POLL_INTERVAL_S)
        return await self._tcp_ready()


class Call:
    """A POST written to the worker, its answer to come."""

    def __init__(
        self, client: WorkerClient, path: str, timeout_s: float, accept_404: bool, with_result: bool = False
    ) -> None:
        self._client = client
        self._path = path
        self._timeout_s = timeout_s
        self._accept_404 = accept_404
        self._with_result = with_result  # a batch's call: its answer may be a result
        self._started = time.monotonic()
        self.exchange: Exchange | None = None
        self.error = ""  # set when it could not even be written
        self.unreachable = False
        self.not_started = False
        self.timed_out = False

    @property
    def pipelinable(self) -> bool:
        """Another request can be pipelined behind this one (the worker said it takes them, and it is on its way)."""
        return self._client.pipelining and self.exchange is not None and self.exchange.open

    def start(self) -> None:
        """The worker starts it now (a pipelined call, once the one before is answered): its time counts from here."""
        self._started = time.monotonic()

    async def outcome(self) -> Outcome:
        """Wait for the answer, until `timeout_s` after the POST was written; any 2xx is success."""
        path, status, error, unreachable, not_started = self._path, 0, self.error, self.unreachable, self.not_started
        timed_out, result = self.timed_out, b""
        if self.exchange is not None:
            try:
                async with asyncio.timeout_at(asyncio.get_running_loop().time() + self._remaining_s()):
                    response = await self.exchange.response()
                status = response.status
                self._client.pipelining = response.pipelining
                if not (200 <= status < 300 or (self._accept_404 and status == 404)):
                    text = response.body[:ERROR_BODY_BYTES].decode("utf-8", errors="replace")
                    error = f"worker answered HTTP {status} to POST {path}: {text}"
                elif self._with_result:
                    result, error = self._client.result(response)
            except TimeoutError:
                error, timed_out = f"worker did not answer POST {path} within {self._timeout_s:g} s (timeout)", True
            except NotStarted as e:
                error, not_started = f"worker did not read POST {path}: {e}", True
            except (OSError, ProtocolError) as e:
                error = f"worker not reachable for POST {path}: {type(e).__name__}: {e}"
                unreachable = True
        duration_s = time.monotonic() - self._started
        return Outcome(not error, status, error, duration_s, unreachable, not_started, timed_out, result)

    def _remaining_s(self) -> float:
        return self._timeout_s - (time.monotonic() - self._started)
