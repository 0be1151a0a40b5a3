"""Scenario 4, scale: jobs of 100,000 and 1,000,000 small items (batch_size 100) on 2 no-op workers.

- Input: a JSON Lines file read by `delimited_files` when the stack accepts a local path (checked with a dry
  run), else an inline `item_list` (the gateway takes bodies up to 10 MiB; a million small integers fit).
- Enqueue rate: items / (time the status first shows every item enqueued − submit time). Baseline: the same
  batches sent straight to the embedded SQLite queue from this process, in the enqueuer's chunks of 500.
- Memory: each service's peak RSS (VmHWM, reset before each job) sampled every 0.1 s during the job, and the
  largest dequeuer's; the 1M job against the 100k one shows whether memory grows with the job.
- Status queries: latency of GET /batch/<api>?jobID=... while the job runs, against GET /healthz when idle.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procs
from bench.results import Figure, Scenario, Target, median, percentile
from bench.stack import API, BenchStack
from thresher.core.config import Config
from thresher.core.statuses import FINAL_NAMES

BATCH_SIZE = 100
WORKERS = 2
SAMPLE_S = 0.1
TIMEOUT_S = 300.0
SEND_CHUNK = 500  # as services/enqueuer/enqueue.py
MAX_BODY_BYTES = 10 * 1024 * 1024  # the gateway's default limit
CHUNK_MIB = Config().inputs.read_chunk_bytes / 2**20


@dataclass
class JobSamples:
    items: int
    submitted: float = 0.0
    enqueued_at: float | None = None
    final_at: float | None = None
    status_latencies: list[float] = field(default_factory=list)
    peak_rss_mib: dict[str, float] = field(default_factory=dict)  # service (or "dequeuer") -> MiB
    final_status: str = ""
    body_bytes: int = 0  # of an inline item_list submission
    file_bytes: int = 0  # of the delimited input file

    @property
    def enqueue_rate(self) -> float | None:
        return None if self.enqueued_at is None else self.items / (self.enqueued_at - self.submitted)


def run(stack: BenchStack, work_dir: Path, sizes: tuple[int, int]) -> Scenario:
    small, large = sizes
    input_file = work_dir / "items.jsonl"
    use_files, dry_run_answer = _delimited_files_dry_run(stack, input_file)
    floor = _queue_send_rate(large)
    healthz_s = _healthz_latency(stack)
    samples = {n: _one_job(stack, work_dir, n, use_files) for n in sizes}
    scenario = Scenario(4, f"Scale: {large:,} small items, batch_size {BATCH_SIZE}, {WORKERS} workers")
    s, big = samples[small], samples[large]
    scenario.figures = [
        Figure(
            f"enqueue rate, {large:,} items",
            big.enqueue_rate,
            "items/s",
            baseline=floor,
            baseline_label="straight to the SQLite queue",
            target=Target(100_000, at_least=True),
        ),
        Figure(
            f"enqueue rate, {small:,} items",
            s.enqueue_rate,
            "items/s",
            baseline=floor,
            baseline_label="straight to the SQLite queue",
        ),
        Figure(
            "status query during the job, median",
            median(big.status_latencies) * 1000,
            "ms",
            baseline=healthz_s * 1000,
            baseline_label="GET /healthz, idle",
        ),
        Figure(
            "status query during the job, p95",
            percentile(big.status_latencies, 0.95) * 1000,
            "ms",
            baseline=healthz_s * 1000,
            baseline_label="GET /healthz, idle",
        ),
        Figure(
            "status query during the job, max",
            max(big.status_latencies) * 1000,
            "ms",
            baseline=healthz_s * 1000,
            baseline_label="GET /healthz, idle",
        ),
    ]
    for name in sorted(big.peak_rss_mib):
        scenario.figures.append(
            Figure(
                f"peak RSS {name}, {large:,} items",
                big.peak_rss_mib[name],
                "MiB",
                baseline=s.peak_rss_mib.get(name),
                baseline_label=f"same, {small:,} items",
            )
        )
    scenario.notes = [
        "Input: a JSON Lines file through `delimited_files` (a local path)."
        if use_files
        else f"Input: inline `item_list`: a dry run of `delimited_files` with a local path answered {dry_run_answer}",
        *(_job_line(samples[n]) for n in sizes),
        "Peak RSS is VmHWM, reset (clear_refs) before each job; the ratio column compares the big job with the "
        "small one: near 1× means memory does not grow with the job.",
        *(
            [
                f"The enqueuer reads a delimited file in ranges of `inputs.read_chunk_bytes` ({CHUNK_MIB:g} MiB by "
                "default, as Cortex), so a file smaller than one range is held whole while it is cut: the enqueuer's "
                "peak follows the file's size up to the range's, not the job's length."
            ]
            if use_files
            else []
        ),
    ]
    return scenario


def _job_line(s: JobSamples) -> str:
    enqueue_s = "—" if s.enqueued_at is None else f"{s.enqueued_at - s.submitted:.2f} s"
    total_s = "—" if s.final_at is None else f"{s.final_at - s.submitted:.1f} s"
    return (
        f"{s.items:,} items: enqueued in {enqueue_s}, final status `{s.final_status}` after {total_s}, "
        f"{len(s.status_latencies)} status queries"
        + (f"; submission body {s.body_bytes / 2**20:.1f} MiB of the 10 MiB limit." if s.body_bytes else "")
        + (f"; input file {s.file_bytes / 2**20:.1f} MiB." if s.file_bytes else ".")
    )


def _one_job(stack: BenchStack, work_dir: Path, items: int, use_files: bool) -> JobSamples:
    samples = JobSamples(items)
    services = stack.service_pids()
    for pid in services.values():
        procs.reset_peak_rss(pid)
    if use_files:
        path = work_dir / f"items-{items}.jsonl"
        _write_items(path, items)
        samples.file_bytes = path.stat().st_size
        job = {"workers": WORKERS, "delimited_files": {"s3_paths": [str(path)], "batch_size": BATCH_SIZE}}
    else:
        job = {"workers": WORKERS, "item_list": {"items": list(range(items)), "batch_size": BATCH_SIZE}}
        samples.body_bytes = len(json.dumps(job))
        if samples.body_bytes > MAX_BODY_BYTES:
            raise ValueError(f"{items:,} items make a {samples.body_bytes:,}-byte body, over the gateway's limit")
    job_id, samples.submitted = stack.submit(job)
    _sample_until_final(stack, job_id, services, samples)
    if samples.final_at is None:
        stack.client.stop(job_id)  # too slow for the bench's time budget: stop it, say so
        samples.final_status += " (stopped by the bench after its timeout)"
    stack.wait_nothing_left(job_id, TIMEOUT_S)
    return samples


def _sample_until_final(stack: BenchStack, job_id: str, services: dict[str, int], samples: JobSamples) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    memory = _MemorySampler(stack, job_id, services)
    memory.start()
    try:
        while time.monotonic() < deadline:
            started = time.monotonic()
            status = stack.status(job_id)["job_status"]
            samples.status_latencies.append(time.monotonic() - started)
            now = time.time()
            if samples.enqueued_at is None and status.get("items_enqueued", 0) >= samples.items:
                samples.enqueued_at = now
            samples.final_status = status["status"]
            if status["status"] in FINAL_NAMES:
                samples.final_at = now
                return
            time.sleep(SAMPLE_S)
    finally:
        samples.peak_rss_mib = memory.stop()


class _MemorySampler(threading.Thread):
    """Peak RSS of each service and of the largest dequeuer, every SAMPLE_S, until stop()."""

    def __init__(self, stack: BenchStack, job_id: str, services: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self._stack, self._job_id, self._services = stack, job_id, services
        self._peaks: dict[str, float] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self._sample()
            self._done.wait(SAMPLE_S)
        self._sample()

    def _sample(self) -> None:
        named = [(name, pid) for name, pid in self._services.items()]
        named += [("dequeuer", pid) for pid in self._stack.dequeuer_pids(self._job_id)]
        for name, pid in named:
            peak = procs.peak_rss_mib(pid)
            if peak is not None:
                self._peaks[name] = max(peak, self._peaks.get(name, 0.0))

    def stop(self) -> dict[str, float]:
        self._done.set()
        self.join()
        return self._peaks


def _write_items(path: Path, count: int) -> None:
    path.write_text("".join(f"{i}\n" for i in range(count)), encoding="utf-8")


def _delimited_files_dry_run(stack: BenchStack, path: Path) -> tuple[bool, str]:
    """Whether a dry run of a `delimited_files` job with a local path answers `validations passed`, and its answer."""
    _write_items(path, 10)
    body = json.dumps({"workers": 1, "delimited_files": {"s3_paths": [str(path)], "batch_size": BATCH_SIZE}})
    request = urllib.request.Request(
        f"{stack.url}/batch/{API}?dryRun=true", data=body.encode(), method="POST", headers=stack.auth_headers
    )
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = response.read().decode().strip()
    except urllib.error.HTTPError as e:
        answer = f"HTTP {e.code}: {e.read().decode(errors='replace').strip()}"
    except OSError as e:
        answer = str(e)
    return "validations passed" in answer, answer


def _healthz_latency(stack: BenchStack, calls: int = 50) -> float:
    times = []
    for _ in range(calls):
        started = time.monotonic()
        with urllib.request.urlopen(f"{stack.url}/healthz", timeout=10) as response:
            response.read()
        times.append(time.monotonic() - started)
    return median(times)


def _queue_send_rate(items: int) -> float:
    """Items/s of cutting `items` small items into batches and sending them to a fresh SQLite queue, in chunks."""
    from thresher.core.queue import Batch
    from thresher.core.queue.sqlite import SqliteQueueBackend

    async def send_all(folder: str) -> float:
        backend = SqliteQueueBackend(Path(folder) / "queues.db")
        await backend.create("floor", 30.0)
        queue = backend.open("floor")
        values = [str(i).encode() for i in range(items)]
        started = time.perf_counter()
        chunk: list[Any] = []
        for index in range(0, items, BATCH_SIZE):
            chunk.append(Batch(f"floor-{index:08d}", b"[" + b",".join(values[index : index + BATCH_SIZE]) + b"]"))
            if len(chunk) == SEND_CHUNK:
                await queue.send(chunk)
                chunk = []
        if chunk:
            await queue.send(chunk)
        seconds = time.perf_counter() - started
        await backend.close()
        return items / seconds

    with tempfile.TemporaryDirectory(prefix="thresher-bench-queue-") as folder:
        return asyncio.run(send_all(folder))
