"""Floors for the latencies, measured on the bench worker alone (no Thresher service): what no system can beat.

- cold start: spawn the worker process until GET /healthz answers (floor of "submit to first batch")
- one POST: a batch POSTed to a warm worker, on a new connection (floor of hook and redelivery latencies)
- exit: SIGTERM to an idle worker until it is gone (floor of "hook to no worker left")
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.results import median

WORKER = Path(__file__).parent / "workers" / "bench_worker.py"
POSTS = 200
BODY = b"[0,1,2,3,4,5,6,7,8,9]"
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Floors:
    cold_start_s: float
    post_s: float
    exit_s: float


def measure_floors(repeats: int = 3) -> Floors:
    runs = [_one_worker() for _ in range(repeats)]
    return Floors(*(median([run[i] for run in runs]) for i in range(3)))


def _one_worker() -> tuple[float, float, float]:
    port = _free_port()
    env = {**os.environ, "CORTEX_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(WORKER)], env=env, cwd=WORKER.parent, stderr=subprocess.DEVNULL)
    try:
        _wait_healthy(port)
        cold_start_s = time.monotonic() - started
        post_s = _post_round_trip(port)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        return cold_start_s, post_s, time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _wait_healthy(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                connection.close()
                return
        except OSError:
            pass
        time.sleep(0.005)
    raise TimeoutError(f"the bench worker did not answer on port {port} within {timeout_s:g} s")


def _post_round_trip(port: int) -> float:
    """Median POST of a batch, each on a new connection, as the dequeuer's POSTs mostly are today.

    (Over one kept-alive connection each POST waits ~40 ms for a delayed ACK: the worker helper writes the
    headers and the body of its answer in two sends, without TCP_NODELAY.)
    """
    times = []
    for _ in range(POSTS):
        started = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("POST", "/", BODY, JSON)
        connection.getresponse().read()
        connection.close()
        times.append(time.monotonic() - started)
    return median(times)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
