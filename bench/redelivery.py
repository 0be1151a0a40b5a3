"""Scenario 3, redelivery: SIGKILL the worker process (or its dequeuer) holding a long batch; time until that
batch is POSTed again, and count the other batches that ran twice.

The job: 20 one-item batches on 2 workers; the batch of item 0 sleeps `HOLD_S` the first time it runs, the others
return at once, so by the kill the other worker is idle. A worker's dequeuer shares its process group (the local
runtime starts the worker first); it is found by `--job-id <id>` in its command line.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from bench import records
from bench.floors import Floors
from bench.results import Figure, Target, median
from bench.stack import BenchStack

ITEMS = 20
WORKERS = 2
HOLD_S = 3.0  # long enough to be killed mid-batch; short, so an orphaned worker lets go soon
BUSY_BEFORE_KILL_S = 0.3
TIMEOUT_S = 90.0


def run(stack: BenchStack, work_dir: Path, floors: Floors, repeats: int) -> tuple[list[Figure], list[str]]:
    figures, notes = [], []
    for target in ("worker", "dequeuer"):
        runs = [_one_kill(stack, work_dir / f"kill-{target}-{i}", target) for i in range(repeats)]
        seconds = [r[0] for r in runs]
        twice = sum(len(r[1]) for r in runs)
        noticed = "; ".join(r[2] for r in runs)
        figures.append(
            Figure(
                f"{target} SIGKILL → its batch POSTed again",
                median(seconds),
                "s",
                baseline=floors.post_s,
                baseline_label="one POST to a warm worker",
                target=Target(0.5, at_least=False),
            )
        )
        figures.append(
            Figure(f"other batches run twice ({target} kills)", twice, "batches", target=Target(0, at_least=False))
        )
        notes.append(
            f"{target} kills: {', '.join(f'{s:.3f}' for s in seconds)} s (max {max(seconds):.3f} s); other "
            f"batches run twice: {twice}; how the loss was noticed, per run: {noticed}."
        )
    notes.append(
        "Reference (issue): Celery loses the batch by default (0.5 s with task_reject_on_worker_lost), Ray tasks "
        "0.5 s, Ray Data 2.3 s (re-running ~16 batches), Dramatiq 60–90 s; Cortex waits for the visibility timeout."
    )
    return figures, notes


def _one_kill(stack: BenchStack, record_dir: Path, target: str) -> tuple[float, list[str], str]:
    """Seconds from the kill to the held batch's next start, the other batches that started twice, and how the
    loss was noticed."""
    record_dir.mkdir(parents=True)
    config = {"record_dir": str(record_dir), "hold_items": [0], "hold_s": HOLD_S}
    job = {"workers": WORKERS, "item_list": {"items": list(range(ITEMS)), "batch_size": 1}, "config": config}
    job_id, _ = stack.submit(job)
    held = records.wait_for_event(
        record_dir, lambda e: e["event"] == "start" and e["batch_id"].endswith("-000000"), TIMEOUT_S
    )
    time.sleep(BUSY_BEFORE_KILL_S)
    victim = held["pid"] if target == "worker" else _dequeuer_of(stack, job_id, held["pid"])
    killed_at = time.time()
    os.kill(victim, signal.SIGKILL)
    again = records.wait_for_event(
        record_dir,
        lambda e: e["event"] == "start" and e["batch_id"] == held["batch_id"] and e["t"] > killed_at,
        TIMEOUT_S,
        poll_s=0.01,
    )
    status, _ = stack.wait_final(job_id, TIMEOUT_S, poll_s=0.1)
    if status["job_status"]["status"] != "succeeded":
        raise RuntimeError(f"redelivery job ended {status['job_status']['status']}: {status['job_status']}")
    stack.wait_nothing_left(job_id, TIMEOUT_S)
    twice = [
        b for b in records.batches_started_more_than_once(records.read_events(record_dir)) if b != held["batch_id"]
    ]
    return again["t"] - killed_at, twice, _how_noticed(stack, job_id)


def _how_noticed(stack: BenchStack, job_id: str) -> str:
    """The monitor's reason for a lost worker of the job (its log), else: the dequeuer released the batch itself."""
    log = stack.data_dir / "logs" / "monitor.log"
    for line in log.read_text(encoding="utf-8").splitlines() if log.exists() else []:
        if job_id in line and " lost (" in line:
            return "monitor: " + line.split(" lost (", 1)[1].split(")", 1)[0]
    return "the dequeuer released it"


def _dequeuer_of(stack: BenchStack, job_id: str, worker_pid: int) -> int:
    group = os.getpgid(worker_pid)
    for pid in stack.dequeuer_pids(job_id):
        try:
            if os.getpgid(pid) == group:
                return pid
        except ProcessLookupError:
            continue
    raise LookupError(f"no dequeuer of job {job_id} in the process group of worker {worker_pid}")
