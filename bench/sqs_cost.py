"""Scenario 5, queue cost on SQS: API calls per batch, counted by moto's server (bench/sqs_server.py).

A second stack runs with `queue.backend: sqs` against moto; one no-op job goes through it. The bench waits on
the worker's hook record and on /proc rather than on status queries, since each status query of a running job
reads the queue's depth (two GetQueueAttributes calls). Every call from submit until the queue is deleted
counts. Baseline: the SQS backend's own verbs used as sparingly as they allow (send in chunks, receive 10,
delete the 10 together) from this process, against the same server.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from bench import records
from bench.results import Figure, Scenario, Target
from bench.stack import BenchStack

BATCH_SIZE = 10
WORKERS = 2
TIMEOUT_S = 180.0
CLEANUP_S = 1.0  # after the workers are gone, the scheduler deletes the queue
AWS: dict[str, Any] = {"sqs_region": "us-east-1", "sqs_access_key_id": "testing", "sqs_secret_access_key": "testing"}


def sqs_backend_missing() -> str:
    """Why scenario 5 cannot run here, or "" when it can."""
    try:
        import moto  # noqa: F401

        from thresher.core.queue.sqs import SqsQueueBackend  # noqa: F401
    except ImportError as e:
        return f"not measured yet: {e}"
    return ""


def run(work_dir: Path, batches: int) -> Scenario:
    scenario = Scenario(5, f"Queue cost on SQS (moto's server): {batches} no-op batches, {WORKERS} workers")
    if why := sqs_backend_missing():
        scenario.figures = [Figure("SQS calls per batch", None, "calls/batch", note=why)]
        return scenario
    moto, endpoint = _start_moto()
    try:
        floor = asyncio.run(_backend_floor(endpoint, batches))
        calls, seconds = _job_calls(work_dir, endpoint, batches)
    finally:
        moto.kill()
        moto.wait()
    total = sum(calls.values())
    scenario.figures = [
        Figure(
            "SQS calls per batch, whole job",
            total / batches,
            "calls/batch",
            baseline=floor,
            baseline_label="backend verbs alone, fewest calls",
            target=Target(0.5, at_least=False),
        ),
        Figure("batches/s on SQS (moto), submit to hook", batches / seconds, "batches/s"),
    ]
    by_operation = ", ".join(f"{op} {n} ({n / batches:.2f}/batch)" for op, n in calls.most_common())
    scenario.notes = [
        f"{total} calls for {batches} batches: {by_operation}.",
        "moto answers each call in a few ms and slows as a queue fills, so this job is kept small; the count, "
        "not the speed, is the figure.",
    ]
    return scenario


def _job_calls(work_dir: Path, endpoint: str, batches: int) -> tuple[Counter[str], float]:
    record_dir = work_dir / "sqs-records"
    record_dir.mkdir(parents=True)
    stack = BenchStack(
        work_dir / "sqs-stack", settings={"queue": {"backend": "sqs", "sqs_endpoint_url": endpoint, **AWS}}
    )
    try:
        _call(endpoint, "POST", "/_bench/reset")
        job = {
            "workers": WORKERS,
            "item_list": {"items": list(range(batches * BATCH_SIZE)), "batch_size": BATCH_SIZE},
            "config": {"record_dir": str(record_dir)},
        }
        job_id, submitted = stack.submit(job)
        hook = records.wait_for_event(record_dir, lambda e: e["event"] == "hook", TIMEOUT_S, poll_s=0.05)
        stack.wait_nothing_left(job_id, TIMEOUT_S, poll_s=0.05)
        time.sleep(CLEANUP_S)
        calls = Counter(_call(endpoint, "GET", "/_bench/calls"))
        status, _ = stack.wait_final(job_id, TIMEOUT_S, poll_s=0.1)
        if status["job_status"]["status"] != "succeeded":
            raise RuntimeError(f"SQS job ended {status['job_status']['status']}: {status['job_status']}")
        return calls, hook["t"] - submitted
    finally:
        stack.stop()


async def _backend_floor(endpoint: str, batches: int) -> float:
    """Calls per batch when the backend's verbs are used as sparingly as they allow."""
    from thresher.core.config import QueueSettings
    from thresher.core.queue import Batch
    from thresher.core.queue.sqs import SqsQueueBackend

    backend = SqsQueueBackend(QueueSettings(backend="sqs", sqs_endpoint_url=endpoint, **AWS))
    try:
        await backend.create("bench-floor", 30.0)
        queue = backend.open("bench-floor")
        await queue.send([Batch(f"floor-{i:06d}", b"[0,1,2,3,4,5,6,7,8,9]") for i in range(batches)])
        received = 0
        while received < batches:
            deliveries = await queue.receive(10, 1.0)
            await queue.ack(deliveries)
            received += len(deliveries)
        await backend.delete("bench-floor")
        return sum(backend.calls.values()) / batches
    finally:
        await backend.close()


def _start_moto() -> tuple[subprocess.Popen[str], str]:
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "bench.sqs_server"], cwd=root, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"moto's server did not start: {line!r}")
    return proc, f"http://127.0.0.1:{line.split()[-1]}"


def _call(endpoint: str, method: str, path: str) -> Any:
    request = urllib.request.Request(endpoint + path, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None
