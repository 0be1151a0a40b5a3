"""Scenario 6, results: how fast results are kept and read back, and what keeping them costs a job.

- The results store (thresher/core/results, local files) against plain files: N results written then read back in
  batch order, against the same bytes written to N files and read back, one after the other, on the same disk.
- A job whose worker returns a result per batch against the same job whose worker returns none: batches/s, submit
  to final status.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import datetime
from pathlib import Path

from bench.overhead import BATCH_SIZE, STATUS_POLL_S, TIMEOUT_S, WORKERS
from bench.results import Figure, Scenario, Target, median
from bench.stack import BenchStack
from thresher.core.results.local import LocalResultStore

RESULT_BYTES = 1024  # a small result: an embedding's worth of numbers, a label and scores
GROUP = 20  # results written together (services/dequeuer/successes.py: MAX_HELD, the most a flush holds)


def run(stack: BenchStack, work: Path, items: int, repeats: int) -> Scenario:
    count = items // BATCH_SIZE
    store_s = median([asyncio.run(_store_seconds(work / "store", count)) for _ in range(repeats)])
    files_s = median([_files_seconds(work / "files", count) for _ in range(repeats)])
    with_s = median([_job_seconds(stack, items, {"result_bytes": RESULT_BYTES}) for _ in range(repeats)])
    without_s = median([_job_seconds(stack, items, {}) for _ in range(repeats)])
    scenario = Scenario(6, f"Results: {count:,} results of {RESULT_BYTES} bytes; jobs of {items:,} items")
    scenario.figures = [
        Figure(
            "results written and read back",
            count / store_s,
            "results/s",
            baseline=count / files_s,
            baseline_label="the same bytes as plain files",
            target=Target(count / files_s * 0.5, at_least=True),
        ),
        Figure(
            "job throughput with a result per batch",
            count / with_s,
            "batches/s",
            baseline=count / without_s,
            baseline_label="the same job without results",
            target=Target(count / without_s * 0.8, at_least=True),
        ),
    ]
    scenario.notes = [
        f"Median of {repeats} runs. The store writes each result to a temporary file renamed into place, "
        f"{GROUP} at a time on a thread off the event loop (as a dequeuer does), and reads them back in pages, in "
        "batch order; the baseline writes "
        "and reads the same bytes with plain open/write/read. The targets are the issue's: ≥ 50 % of plain files, "
        "≥ 80 % of the job without results.",
    ]
    return scenario


async def _store_seconds(folder: Path, count: int) -> float:
    shutil.rmtree(folder, ignore_errors=True)
    store = LocalResultStore(folder)
    result, items = b'"' + b"r" * (RESULT_BYTES - 2) + b'"', b"[1]"
    started = time.perf_counter()
    for start in range(0, count, GROUP):  # as a dequeuer writes them: the successes of a flush together
        await store.put_many("job", [(f"job-{i:06d}", result, items) for i in range(start, min(start + GROUP, count))])
    read = sum([len(page) async for page in store.read("job")], 0)
    seconds = time.perf_counter() - started
    assert read == count, f"read {read} results of {count}"
    return seconds


def _files_seconds(folder: Path, count: int) -> float:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    data = b'"' + b"r" * (RESULT_BYTES - 2) + b'"'
    started = time.perf_counter()
    for index in range(count):
        (folder / f"{index:012d}").write_bytes(data)
    read = sum(1 for index in range(count) if (folder / f"{index:012d}").read_bytes())
    seconds = time.perf_counter() - started
    assert read == count
    return seconds


def _job_seconds(stack: BenchStack, items: int, config: dict[str, int]) -> float:
    job = {"workers": WORKERS, "item_list": {"items": list(range(items)), "batch_size": BATCH_SIZE}, "config": config}
    job_id, submitted = stack.submit(job)
    status, _ = stack.wait_final(job_id, TIMEOUT_S, poll_s=STATUS_POLL_S)
    if status["job_status"]["status"] != "succeeded":
        raise RuntimeError(f"results job ended {status['job_status']['status']}: {status['job_status']}")
    stack.wait_nothing_left(job_id)  # the next run starts from an idle stack
    return datetime.fromisoformat(status["job_status"]["end_time"]).timestamp() - submitted
