"""Scenario 6, results: how fast results are kept and read back, and what keeping them costs a job.

- The results store (thresher/core/results, local files) against plain files: N results written in groups of GROUP
  (as a dequeuer stores them) then read back in batch order, against the same bytes written to as many plain files
  (one per group) and read back, on the same disk: STORE_ROUNDS rounds, each runs both, in turn first (the shared
  disk's speed drifts by 2x and more within a minute: runs far apart compare the disk's moods, not the two).
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
MIN_STORED = 20_000  # results the store writes and reads, at least: fewer take a few ms, which a shared machine swamps
GROUP = 20  # results written together (services/dequeuer/successes.py: MAX_HELD, the most a flush holds)
STORE_ROUNDS = 9  # rounds of the store and plain files, alternated


def run(stack: BenchStack, work: Path, items: int, repeats: int) -> Scenario:
    count = items // BATCH_SIZE
    stored = max(count, MIN_STORED)
    store_runs, files_runs = _store_and_files_seconds(work, stored, max(repeats, STORE_ROUNDS))
    store_s, files_s = median(store_runs), median(files_runs)
    ratios = sorted(files / store for store, files in zip(store_runs, files_runs, strict=True))
    with_s = median([_job_seconds(stack, items, {"result_bytes": RESULT_BYTES}) for _ in range(repeats)])
    without_s = median([_job_seconds(stack, items, {}) for _ in range(repeats)])
    scenario = Scenario(6, f"Results: {stored:,} results of {RESULT_BYTES} bytes; jobs of {items:,} items")
    scenario.figures = [
        Figure(
            "results written and read back",
            stored / store_s,
            "results/s",
            baseline=stored / files_s,
            baseline_label="the same bytes as plain files",
            target=Target(stored / files_s * 0.5, at_least=True),
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
        f"Results store: median of {len(store_runs)} rounds, each running the store and the plain files one after "
        f"the other (in turn first); the store's speed against plain files, round by round: {_ratios_text(ratios)}. "
        f"Jobs: median of {repeats} runs. The store writes the results {GROUP} at a time, as one group file each (a "
        "temporary file renamed into place, as a dequeuer does), and reads them back "
        "merged in batch order; the baseline writes the same bytes (each result and its items) to as many files, "
        "one per group of the same size, with plain open/write, and reads them back. The targets are the issue's: "
        "≥ 50 % of plain files, ≥ 80 % of the job without results.",
    ]
    return scenario


def _store_and_files_seconds(work: Path, count: int, rounds: int) -> tuple[list[float], list[float]]:
    """Seconds of the store and of plain files, `rounds` of each, alternated (in turn first)."""
    store_runs, files_runs = [], []
    for round_ in range(rounds):
        if round_ % 2:
            files_runs.append(_files_seconds(work / "files", count))
        store_runs.append(asyncio.run(_store_seconds(work / "store", count)))
        if not round_ % 2:
            files_runs.append(_files_seconds(work / "files", count))
    return store_runs, files_runs


def _ratios_text(ratios: list[float]) -> str:
    return f"{ratios[0]:.2f}× to {ratios[-1]:.2f}× (median {median(ratios):.2f}×)"


async def _store_seconds(folder: Path, count: int) -> float:
    shutil.rmtree(folder, ignore_errors=True)
    store = LocalResultStore(folder)
    result, items = _result_and_items()
    started = time.perf_counter()
    for start in range(0, count, GROUP):  # as a dequeuer writes them: the successes of a flush together
        group = [(f"job-{i:06d}", 1, result, items) for i in range(start, min(start + GROUP, count))]
        await store.put_many("job", group)
    read = sum([len(page) async for page in store.read("job")], 0)
    seconds = time.perf_counter() - started
    assert read == count, f"read {read} results of {count}"
    return seconds


def _files_seconds(folder: Path, count: int) -> float:
    """The same bytes (each result and its items) in as many files, one per group of GROUP, written then read."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    result, items = _result_and_items()
    started = time.perf_counter()
    for start in range(0, count, GROUP):
        (folder / f"{start:012d}").write_bytes(
            b"".join(result + items for _ in range(start, min(start + GROUP, count)))
        )
    read = sum(len((folder / f"{start:012d}").read_bytes()) for start in sorted(range(0, count, GROUP)))
    seconds = time.perf_counter() - started
    assert read == count * len(result + items)
    return seconds


def _result_and_items() -> tuple[bytes, bytes]:
    return b'"' + b"r" * (RESULT_BYTES - 2) + b'"', b"[1]"


def _job_seconds(stack: BenchStack, items: int, config: dict[str, int]) -> float:
    job = {"workers": WORKERS, "item_list": {"items": list(range(items)), "batch_size": BATCH_SIZE}, "config": config}
    job_id, submitted = stack.submit(job)
    status, _ = stack.wait_final(job_id, TIMEOUT_S, poll_s=STATUS_POLL_S)
    if status["job_status"]["status"] != "succeeded":
        raise RuntimeError(f"results job ended {status['job_status']['status']}: {status['job_status']}")
    stack.wait_nothing_left(job_id)  # the next run starts from an idle stack
    return datetime.fromisoformat(status["job_status"]["end_time"]).timestamp() - submitted
