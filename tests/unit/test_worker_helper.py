"""The worker helper: a real HTTP server on loopback calling plain functions."""

from __future__ import annotations

import copy
import http.client
import json
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import listening_port
from thresher.core import names
from thresher.worker import BatchContext, JobContext, WorkerServer, make_server

SPEC = {"job_id": "job1", "api_name": "textstats", "kind": "BatchAPI", "workers": 2, "config": {"lang": "en"}}


class Recorder:
    """A worker's functions that remember their calls, and fail on demand."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[Any], BatchContext]] = []
        self.hooks: list[tuple[dict[str, Any], JobContext]] = []
        self.fail_with: Exception | None = None
        self.returns: Any = None  # what handle_batch returns: the batch's result

    def handle_batch(self, items: list[Any], ctx: BatchContext) -> Any:
        self.batches.append((items, ctx))
        if self.fail_with:
            raise self.fail_with
        return self.returns

    def on_job_complete(self, summary: dict[str, Any], ctx: JobContext) -> None:
        self.hooks.append((summary, ctx))
        if self.fail_with:
            raise self.fail_with


def start(server: WorkerServer) -> Iterator[WorkerServer]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop(grace_s=5)
        thread.join(timeout=5)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def spec_path(tmp_path: Path) -> Path:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(SPEC))
    return path


@pytest.fixture
def server(recorder: Recorder, spec_path: Path) -> Iterator[WorkerServer]:
    yield from start(make_server(recorder.handle_batch, recorder.on_job_complete, spec_path=str(spec_path)))


def request(server: WorkerServer, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None
    finally:
        conn.close()


BATCH_HEADERS = {
    names.HEADER_CORTEX_JOB_ID: "job1",
    names.HEADER_JOB_ID: "job1",
    names.HEADER_BATCH_ID: "job1-000007",
    names.HEADER_ATTEMPT: "2",
}


def test_a_batch_reaches_handle_batch_with_its_items_and_context(server: WorkerServer, recorder: Recorder) -> None:
    status, body = request(server, "POST", "/", [{"a": 1}, "é", 3], BATCH_HEADERS)

    assert (status, body) == (200, None)  # handle_batch returned None: no result, an empty answer
    ((items, ctx),) = recorder.batches
    assert items == [{"a": 1}, "é", 3]
    assert (ctx.job_id, ctx.batch_id, ctx.attempt) == ("job1", "job1-000007", 2)
    assert ctx.config == {"lang": "en"}
    assert ctx.spec == SPEC


def test_what_handle_batch_returns_is_the_json_answer_the_batch_result(
    server: WorkerServer, recorder: Recorder
) -> None:
    recorder.returns = {"labels": ["cat", "dog"], "score": 0.5}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", "/", body=b"[1, 2]", headers={"Content-Type": "application/json", **BATCH_HEADERS})
        response = conn.getresponse()
        assert (response.status, response.getheader("Content-Type")) == (200, "application/json")
        assert json.loads(response.read()) == {"labels": ["cat", "dog"], "score": 0.5}
    finally:
        conn.close()


def test_a_result_that_is_not_json_fails_the_batch_saying_so(server: WorkerServer, recorder: Recorder) -> None:
    recorder.returns = {1, 2}  # a set: json.dumps refuses it

    status, body = request(server, "POST", "/", [1], BATCH_HEADERS)

    assert status == 500 and "handle_batch returned a value that is not JSON (set)" in body["error"]


def test_a_failing_batch_answers_500_with_the_error_and_logs_its_traceback(
    server: WorkerServer, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    recorder.fail_with = ValueError("cannot parse item 3")

    with caplog.at_level(logging.ERROR, logger="thresher.worker"):
        status, body = request(server, "POST", "/", [1], BATCH_HEADERS)

    assert status == 500
    assert body == {"ok": False, "error": "ValueError: cannot parse item 3"}
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "job1-000007" in record.getMessage() and record.exc_info is not None


@pytest.mark.parametrize(("body", "error"), [(b"{not json", "not JSON"), (b'{"a": 1}', "JSON array")])
def test_a_body_that_is_not_a_json_array_is_refused(
    server: WorkerServer, recorder: Recorder, body: bytes, error: str
) -> None:
    status, answer = request(server, "POST", "/", body, BATCH_HEADERS)

    assert status == 400 and error in answer["error"]
    assert recorder.batches == []


def test_contexts_are_read_only_and_compare_by_value() -> None:
    ctx = BatchContext(job_id="j", batch_id="j-000001", attempt=1)

    with pytest.raises(AttributeError, match="read-only"):
        ctx.attempt = 2  # type: ignore[misc]
    assert ctx == BatchContext("j", "j-000001", 1, config={}, spec={})
    assert ctx != BatchContext("j", "j-000001", 2)
    assert repr(ctx) == "BatchContext(job_id='j', batch_id='j-000001', attempt=1, config={}, spec={})"
    # Each context has its own dicts: a handler writing in one does not change another's.
    ctx.config["seen"] = True
    assert BatchContext("j", "j-000002", 1).config == {}
    assert JobContext("j").idempotency_key == "" and JobContext("j").spec == {}
    # A handler may hand its context to a process pool
    job = JobContext("j", config={"a": 1}, spec={"job_id": "j"}, idempotency_key="k")
    assert pickle.loads(pickle.dumps(ctx)) == ctx and pickle.loads(pickle.dumps(job)) == job
    assert copy.deepcopy(job) == job


def test_the_helper_imports_only_what_a_worker_runs() -> None:
    """A worker starts on this import: dataclasses, typing, http and pathlib would add a third to its start."""
    code = "import sys, thresher.worker; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()

    assert {"thresher.worker", "socketserver", "logging"} <= set(loaded)
    assert not {"dataclasses", "typing", "http", "pathlib", "inspect", "asyncio"} & set(loaded)


def test_the_hook_gets_the_summary_and_the_job_context(server: WorkerServer, recorder: Recorder) -> None:
    summary = {"total_batch_count": 3, "batches": {"succeeded": 3}}

    status, _ = request(
        server, "POST", names.HOOK_PATH, summary, {names.HEADER_JOB_ID: "job1", names.HEADER_IDEMPOTENCY_KEY: "k1"}
    )

    assert status == 200
    ((got, ctx),) = recorder.hooks
    assert got == summary
    assert (ctx.job_id, ctx.idempotency_key, ctx.config) == ("job1", "k1", {"lang": "en"})


def test_a_failing_hook_answers_500(server: WorkerServer, recorder: Recorder) -> None:
    recorder.fail_with = OSError("disk full")

    status, body = request(server, "POST", names.HOOK_PATH, {})

    assert (status, body["error"]) == (500, "OSError: disk full")


def test_the_hook_is_404_when_the_worker_has_none(recorder: Recorder) -> None:
    for server in start(make_server(recorder.handle_batch, spec_path="")):
        status, _ = request(server, "POST", names.HOOK_PATH, {"total_batch_count": 1})

        assert status == 404


def test_readiness_answers_200_and_unknown_routes_404(server: WorkerServer) -> None:
    assert request(server, "GET", "/healthz")[0] == 200
    assert request(server, "GET", "/nope")[0] == 404
    assert request(server, "POST", "/nope", [])[0] == 404


def test_the_spec_is_read_again_when_its_file_changes(
    server: WorkerServer, recorder: Recorder, spec_path: Path
) -> None:
    request(server, "POST", "/", [1], BATCH_HEADERS)
    updated = spec_path.with_suffix(".tmp")
    updated.write_text(json.dumps(SPEC | {"total_batch_count": 12}))
    os.replace(updated, spec_path)

    request(server, "POST", "/", [2], BATCH_HEADERS)

    assert "total_batch_count" not in recorder.batches[0][1].spec
    assert recorder.batches[1][1].spec["total_batch_count"] == 12


def test_a_half_written_spec_keeps_the_last_good_one(server: WorkerServer, recorder: Recorder, spec_path: Path) -> None:
    request(server, "POST", "/", [1], BATCH_HEADERS)
    spec_path.write_text('{"job_id": "jo')

    request(server, "POST", "/", [2], BATCH_HEADERS)

    assert recorder.batches[1][1].spec == SPEC


def test_without_a_spec_the_job_id_comes_from_the_headers(recorder: Recorder) -> None:
    for server in start(make_server(recorder.handle_batch, spec_path="")):
        request(server, "POST", "/", [1], {names.HEADER_CORTEX_JOB_ID: "cortexjob"})

    ((_, ctx),) = recorder.batches
    assert (ctx.job_id, ctx.batch_id, ctx.attempt, ctx.config, ctx.spec) == ("cortexjob", "", 1, {}, {})


def test_a_client_resetting_its_connection_is_not_logged_as_an_error(
    server: WorkerServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="thresher.worker"):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: worker\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        sock.close()

        _wait_for(lambda: any("closed" in r.getMessage() for r in caplog.records))

    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def exchange(server: WorkerServer, data: bytes) -> bytes:
    """Send raw bytes on one connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def post_bytes(body: bytes, extra: bytes = b"") -> bytes:
    return b"POST / HTTP/1.1\r\nHost: w\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def test_one_connection_takes_many_requests_and_pipelined_ones_in_order(
    server: WorkerServer, recorder: Recorder
) -> None:
    # Given three requests sent at once on one kept-alive connection, the last asking to close it
    data = post_bytes(b"[1]") + post_bytes(b"[2]") + post_bytes(b"[3]", b"Connection: close\r\n")

    # When the server reads them
    answer = exchange(server, data)

    # Then each is answered, in order, and the connection closes after the third
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert [items for items, _ in recorder.batches] == [[1], [2], [3]]
    assert answer.endswith(b"Connection: close\r\n\r\n")  # and an empty body: handle_batch returned no result


def test_an_http_1_0_request_is_answered_and_its_connection_closed(server: WorkerServer) -> None:
    answer = exchange(server, b"GET /healthz HTTP/1.0\r\n\r\n")

    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" in answer


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"HELLO\r\n\r\n", 400),
        (b"GET /healthz HTTP/2.0\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost : w\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n[1]", 400),
        (b"POST / HTTP/1.1\r\nHost: w\r\n\r\n[1]", 411),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1]\r\n0\r\n\r\n", 411),
        (b"POST / HTTP/1.1\r\nContent-Length: -3\r\n\r\n[1]", 411),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\n" + b"X-A: 1\r\n" * 101 + b"\r\n", 431),
        (b"DELETE / HTTP/1.1\r\n\r\n", 501),
    ],
)
def test_a_request_it_cannot_read_is_refused_and_its_connection_closed(
    server: WorkerServer, recorder: Recorder, data: bytes, status: int
) -> None:
    answer = exchange(server, data + b"GET /healthz HTTP/1.1\r\n\r\n")  # a second request, never read

    assert answer.startswith(b"HTTP/1.1 %d " % status)
    assert answer.count(b"HTTP/1.1 ") == 1 and b"Connection: close" in answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["ok"] is False
    assert recorder.batches == []


def test_a_client_that_expects_100_continue_gets_it_before_sending_the_body(server: WorkerServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"[1]")
        assert sock.recv(1024).startswith(b"HTTP/1.1 200 OK\r\n")


def test_a_body_on_a_get_is_read_past(server: WorkerServer) -> None:
    data = (
        b"GET /healthz HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}" + b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"
    )

    assert exchange(server, data).count(b"HTTP/1.1 200 OK\r\n") == 2


def test_a_pipelined_request_of_a_client_gone_meanwhile_is_not_run(
    server: WorkerServer, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a batch in progress, with the next one pipelined behind it
    release = threading.Event()

    def slow_batch(items: list[Any], ctx: BatchContext) -> None:
        recorder.batches.append((items, ctx))
        release.wait(10)

    server.app.handle_batch = slow_batch
    with caplog.at_level(logging.DEBUG, logger="thresher.worker"):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(post_bytes(b"[1]") + post_bytes(b"[2]"))
        _wait_for(lambda: len(recorder.batches) == 1)

        # When the client goes away (a dequeuer killed) before the first one is answered
        sock.close()
        release.set()

        # Then the server ends the connection without running the pipelined batch: nobody would read its answer
        _wait_for(lambda: any(m in r.getMessage() for r in caplog.records for m in ("not run", "closed")))
    assert [items for items, _ in recorder.batches] == [[1]]


def test_header_names_are_case_insensitive(server: WorkerServer, recorder: Recorder) -> None:
    exchange(server, post_bytes(b"[1]", b"x-thresher-batch-id: b9\r\nX-THRESHER-ATTEMPT: 3\r\nConnection: close\r\n"))

    ((_, ctx),) = recorder.batches
    assert (ctx.batch_id, ctx.attempt) == ("b9", 3)


WORKER_SCRIPT = """
    import sys, time
    from pathlib import Path
    from thresher.worker import serve

    folder = Path(sys.argv[1])

    def handle_batch(items, ctx):
        (folder / "started").touch()
        deadline = time.monotonic() + 20
        while not (folder / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        (folder / "done").write_text(str(items))

    serve(handle_batch)
"""


def test_serve_finishes_the_batch_in_progress_on_sigterm_and_exits_cleanly(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER_SCRIPT))
    env = os.environ | {names.ENV_PORT: "0"}
    with subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env, stderr=subprocess.PIPE) as proc:
        try:
            port = listening_port(proc)
            answer: list[Any] = []
            post = threading.Thread(target=lambda: answer.append(_post(port, [1, 2])))
            post.start()
            _wait_for(lambda: (tmp_path / "started").exists())

            proc.send_signal(signal.SIGTERM)
            _wait_for(lambda: not _accepts_connections(port))
            (tmp_path / "go").touch()
            post.join(timeout=20)

            assert answer == [200]
            assert (tmp_path / "done").read_text() == "[1, 2]"
            assert proc.wait(timeout=20) == 0
        finally:
            proc.kill()


def test_serve_stops_on_a_sigterm_the_kernel_hands_to_another_thread_than_the_main_one(tmp_path: Path) -> None:
    # A process-wide signal may go to any thread that does not block it; signalling a thread's own id hands it to that
    # thread, as the kernel sometimes does under load (serve() then slept on, and its worker ignored the SIGTERM).
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER_SCRIPT))
    env = os.environ | {names.ENV_PORT: "0"}
    with subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env, stderr=subprocess.PIPE) as proc:
        try:
            listening_port(proc)
            server_thread = next(int(t) for t in os.listdir(f"/proc/{proc.pid}/task") if int(t) != proc.pid)

            os.kill(server_thread, signal.SIGTERM)

            assert proc.wait(timeout=20) == 0
        finally:
            proc.kill()


def _post(port: int, items: list[Any]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("POST", "/", body=json.dumps(items), headers={"Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


def _accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except (ConnectionRefusedError, ConnectionResetError):  # reset: queued when the listening socket closed
        return False
    return True


def _wait_for(check: Any, timeout_s: float = 10) -> None:
    done = threading.Event()
    deadline = threading.Timer(timeout_s, done.set)
    deadline.start()
    try:
        while not check():
            assert not done.wait(0.01), "timed out"
    finally:
        deadline.cancel()
