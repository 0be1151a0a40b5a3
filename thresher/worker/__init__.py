"""Write a worker without writing an HTTP server: `serve(handle_batch, on_job_complete=...)`.

Standard library only, so a worker image needs nothing but Python and this package:

    from thresher.worker import BatchContext, JobContext, serve

    def handle_batch(items: list, ctx: BatchContext) -> Any: ...      # raise to fail the batch; JSON: its result
    def on_job_complete(summary: dict, ctx: JobContext) -> None: ...   # optional

    serve(handle_batch, on_job_complete=on_job_complete)               # blocks; port from $CORTEX_PORT

What `handle_batch` returns (anything `json.dumps` takes) is the batch's result, which Thresher keeps and hands back
in batch order (`GET /v1/jobs/<id>/results`); None: no result. Batches may arrive more than once (at least once
delivery): make `handle_batch` idempotent (its result is kept once, the last successful attempt's).
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import socketserver
import sys
import threading

from thresher.core import names
from thresher.core.logs import batch_id_var, configure_logging, job_id_var, service_var
from thresher.worker.context import BatchContext, JobContext, JobSpecFile, job_spec
from thresher.worker.http import REASONS, BadRequest, Request, read_body, read_request

# A worker process starts on this module, so it imports no more than it runs: dataclasses, typing and http would
# add a third to the time a worker takes to become ready. Type checkers see the names below (they treat any
# TYPE_CHECKING as true); at run time they are only in annotations, which are not evaluated.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    JSON = dict[str, Any]
    BatchHandler = Callable[[list[Any], BatchContext], Any]
    HookHandler = Callable[[JSON, JobContext], None]

__all__ = ["BatchContext", "JobContext", "JobSpecFile", "WorkerServer", "job_spec", "make_server", "serve"]

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"  # the dequeuer runs beside the worker; nothing else should reach it
DEFAULT_PORT = 8080  # when $CORTEX_PORT is unset, as Cortex's default pod port
READINESS_PATH = "/healthz"  # the route examples name in readiness_probe.http_get.path
GRACE_S = 30.0  # on SIGTERM, batches in progress get this long to finish
# How often serve_forever looks for a shutdown request: socketserver's 0.5 s made every stopping worker, even an idle
# one, take half a second to exit (scale to zero, drains).
SHUTDOWN_POLL_S = 0.02

# Requests on a connection are read and answered one after another, so a client may pipeline them: the dequeuer then
# sends the next batch before this one's answer, and it is read as soon as this one is answered.
_PIPELINING = f"{names.HEADER_PIPELINING}: 1\r\n"
_RDHUP = getattr(select, "POLLRDHUP", 0)  # Linux: the peer closed its side (even with some of its data unread)
_OK_BODY = json.dumps({"ok": True}).encode()
# Header field names as the reader keeps them: lower case.
_JOB_ID = names.HEADER_JOB_ID.lower()
_CORTEX_JOB_ID = names.HEADER_CORTEX_JOB_ID.lower()
_BATCH_ID = names.HEADER_BATCH_ID.lower()
_ATTEMPT = names.HEADER_ATTEMPT.lower()
_IDEMPOTENCY_KEY = names.HEADER_IDEMPOTENCY_KEY.lower()


class _App:
    def __init__(self, handle_batch: BatchHandler, on_job_complete: HookHandler | None, spec_file: JobSpecFile) -> None:
        self.handle_batch = handle_batch
        self.on_job_complete = on_job_complete
        self.spec_file = spec_file


class WorkerServer(socketserver.ThreadingTCPServer):
    """The worker's HTTP server, a thread per connection; counts requests in progress so that a shutdown can wait
    for them."""

    daemon_threads = True  # idle keep-alive connections must not hold the process open
    allow_reuse_address = True  # a restarted worker binds its port again at once

    def __init__(self, address: tuple[str, int], app: _App) -> None:
        super().__init__(address, _Handler)
        self.app = app
        self.stopping = False
        self._active = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when the last request ends, once stopping

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def serve_forever(self, poll_interval: float = SHUTDOWN_POLL_S) -> None:
        super().serve_forever(poll_interval)

    # A pair of plain methods with the lock's own `with`, not a context manager on the Condition: that cost a
    # sixth of the helper's time per request (a generator, the Condition's Python-level methods, notify_all).
    def request_started(self) -> None:
        with self._lock:
            self._active += 1

    def request_ended(self) -> None:
        with self._lock:
            self._active -= 1
            if self.stopping and not self._active:  # stop() sets `stopping` before it waits under the lock
                self._idle.notify_all()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client closing its keep-alive connection is routine; socketserver would print a traceback for it.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            log.debug("connection from %s closed", client_address)
        else:
            log.exception("error while serving %s", client_address)

    def stop(self, grace_s: float = GRACE_S) -> bool:
        """Stop serving (serve_forever must be running), then wait up to `grace_s` for requests in progress.

        Returns False if some are still running at the deadline.
        """
        self.stopping = True
        self.shutdown()
        self.server_close()
        with self._idle:
            finished = self._idle.wait_for(lambda: self._active == 0, timeout=grace_s)
        if not finished:
            log.warning("stopping with %d requests still in progress after %.0f s", self._active, grace_s)
        return finished


def make_server(
    handle_batch: BatchHandler,
    on_job_complete: HookHandler | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = 0,
    spec_path: str | None = None,
) -> WorkerServer:
    """A bound, not yet serving, worker server (port 0 picks one: read `.port`); run it with serve_forever()."""
    spec_file = JobSpecFile(os.environ.get(names.ENV_JOB_SPEC) if spec_path is None else spec_path)
    return WorkerServer((host, port), _App(handle_batch, on_job_complete, spec_file))


def serve(
    handle_batch: BatchHandler,
    on_job_complete: HookHandler | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int | None = None,
    grace_s: float = GRACE_S,
) -> None:
    """Serve the worker contract on $CORTEX_PORT (default 8080) until SIGTERM or SIGINT. Call from the main thread."""
    if not logging.getLogger().handlers:
        configure_logging("worker")
    if port is None:
        port = _port_from_env()
    server = make_server(handle_batch, on_job_complete, host=host, port=port)
    stop = threading.Event()
    stop_signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in stop_signals}
    # The server's threads (and those it starts per connection) inherit a mask that blocks the stop signals, so the
    # kernel delivers them to this thread: one delivered to another thread only marks the Python handler as due, and
    # this thread, asleep in stop.wait(), would never run it (the worker then ignored SIGTERM).
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        threading.Thread(target=server.serve_forever, name="worker-http", daemon=True).start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    log.info("worker listening on %s:%d", host, server.port)
    try:
        stop.wait()
        log.info("worker stopping: finishing batches in progress")
    finally:
        server.stop(grace_s)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _port_from_env() -> int:
    value = os.environ.get(names.ENV_PORT, str(DEFAULT_PORT))
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{names.ENV_PORT} must be a port number, got {value!r}") from None


class _Handler(socketserver.StreamRequestHandler):
    """One connection: its requests one after another (keep-alive), each answered in one write."""

    disable_nagle_algorithm = True  # a small answer goes out at once, not held back until an earlier one is acked
    server: WorkerServer

    def setup(self) -> None:
        super().setup()
        self.request_line = ""
        self.headers: dict[str, str] = {}  # the current request's, field names in lower case
        self.keep_alive = False  # the current request's client may send another on this connection
        self.open = True  # the last answer left the connection open for another request

    def handle(self) -> None:
        keep_alive, first = True, True
        while keep_alive:
            try:
                request = read_request(self.rfile)
                if request is None:
                    return  # the client closed the connection
                if not first and _client_gone(self.connection):
                    # A request pipelined by a client that has gone since (a dequeuer killed, or one that gave up on
                    # the request before): nobody would read the answer, and the batch may go to another worker.
                    log.debug("client gone: %r not run", request.line)
                    return
                first = False
                self.request_line, self.headers, self.keep_alive = request.line, request.headers, request.keep_alive
                keep_alive = self._dispatch(request)
            except BadRequest as e:
                self._reply(e.status, {"ok": False, "error": str(e)}, close=True)
                return

    def _dispatch(self, request: Request) -> bool:
        """Answer one request; whether the connection stays open for another."""
        self.open = False
        route = request.path
        if request.method == "POST":
            self.server.request_started()
            try:
                body = read_body(request, self.rfile, self.wfile)
                if body is None:
                    return False
                if route == "/":
                    self._batch(body)
                elif route == names.HOOK_PATH:
                    self._hook(body)
                else:
                    self._reply(404, {"ok": False, "error": f"no route POST {route}"})
            finally:
                self.server.request_ended()
        elif request.method == "GET":
            if read_body(request, self.rfile, self.wfile) is None:  # a body on a GET is read past, if any
                return False
            if route == READINESS_PATH:
                self._reply(200, _OK_BODY)
            else:
                self._reply(404, {"ok": False, "error": f"no route GET {route}"})
        else:
            raise BadRequest(501, f"unsupported method {request.method}")
        return self.open

    def _batch(self, body: bytes) -> None:
        items = self._json(body, list, "a batch must be a JSON array")
        if items is None:
            return
        spec = self.server.app.spec_file.read()
        headers = self.headers
        ctx = BatchContext(
            job_id=self._job_id(spec),
            batch_id=headers.get(_BATCH_ID, ""),
            attempt=_int(headers.get(_ATTEMPT), default=1),
            config=_config(spec),
            spec=spec,
        )
        service_var.set("worker")
        job_id_var.set(ctx.job_id)
        batch_id_var.set(ctx.batch_id)
        self._call(lambda: _result(self.server.app.handle_batch(items, ctx)), f"batch {ctx.batch_id} failed")

    def _hook(self, body: bytes) -> None:
        hook = self.server.app.on_job_complete
        if hook is None:
            self._reply(404, {"ok": False, "error": "this worker has no on_job_complete hook"})
            return
        summary = self._json(body or b"{}", dict, "the job summary must be a JSON object")
        if summary is None:
            return
        spec = self.server.app.spec_file.read()
        key = self.headers.get(_IDEMPOTENCY_KEY, "")
        ctx = JobContext(job_id=self._job_id(spec), config=_config(spec), spec=spec, idempotency_key=key)
        service_var.set("worker")
        job_id_var.set(ctx.job_id)
        batch_id_var.set("")  # this thread may have handled a batch on the same connection before

        def call_hook() -> bytes:
            hook(summary, ctx)
            return _OK_BODY

        self._call(call_hook, "on_job_complete failed")

    def _call(self, fn: Callable[[], bytes], failure: str) -> None:
        """Answer 200 with what `fn` returns (a JSON body; empty: none), or 500 with the exception it raised."""
        try:
            body = fn()
        except Exception as e:  # the user's failure becomes the batch's error
            log.exception(failure)
            self._reply(500, {"ok": False, "error": f"{type(e).__name__}: {e}"})
        else:
            self._reply(200, body)

    def _job_id(self, spec: JSON) -> str:
        return self.headers.get(_JOB_ID) or self.headers.get(_CORTEX_JOB_ID) or spec.get("job_id", "")

    def _json(self, body: bytes, kind: type, message: str) -> Any:
        """The body's JSON value if it is a `kind`; else None, answered 400 (the connection stays open)."""
        try:
            value = json.loads(body)
        except ValueError as e:
            self._reply(400, {"ok": False, "error": f"the body is not JSON: {e}"})
            return None
        if not isinstance(value, kind):
            self._reply(400, {"ok": False, "error": message})
            return None
        return value

    def _reply(self, status: int, payload: JSON | bytes, close: bool = False) -> None:
        """Answer in one write: one packet, and one wake-up of the dequeuer waiting for it. `payload`: a JSON object,
        or a JSON body already encoded (empty: none)."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        head = f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {len(data)}\r\n{_PIPELINING}"
        self.open = self.keep_alive and not (close or self.server.stopping)
        if not self.open:
            head += "Connection: close\r\n"
        self.wfile.write(head.encode() + b"\r\n" + data)
        if log.isEnabledFor(logging.DEBUG):  # one call per request: not even the formatting when it is not shown
            log.debug('%s "%s" %d %d', self.client_address[0], self.request_line, status, len(data))


def _result(value: Any) -> bytes:
    """`handle_batch`'s return value as the answer's body: its JSON, or nothing for None."""
    if value is None:
        return b""
    try:
        return json.dumps(value).encode()
    except (TypeError, ValueError) as e:
        raise TypeError(f"handle_batch returned a value that is not JSON ({type(value).__name__}): {e}") from e


def _client_gone(sock: socket.socket) -> bool:
    """The client has closed its side of the connection (POLLRDHUP, where the platform has it)."""
    if not _RDHUP:
        return False
    poller = select.poll()
    poller.register(sock, _RDHUP)
    return bool(poller.poll(0))


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _config(spec: JSON) -> JSON:
    config = spec.get("config")
    return config if isinstance(config, dict) else {}
