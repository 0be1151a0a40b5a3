"""Scenario 8, elastic workers (issue 19): one job whose batch times are uneven (lognormal: most short, a long tail),
run with a fixed `workers` and with `min_workers` / `max_workers`, in the same run, alternately.

Worker-seconds are sampled every SAMPLE_S from submission to the final status (a worker counts while its dequeuer
process lives); busy worker-seconds are the batches' own times at the worker (its records); idle worker-seconds are the
difference (starting, waiting for a batch, waiting for the job's end). The stack's `scaling` settings are the bench's
(SCALING below): seconds-long jobs need a shorter target and idle time than the defaults.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procs, records
from bench.overhead import STATUS_POLL_S
from bench.results import Figure, Scenario, Target, median
from bench.stack import BenchStack
from thresher.core.statuses import FINAL_NAMES

BATCHES = 200
WORKERS = 8
MIN_WORKERS = 1  # the elastic job's range: MIN_WORKERS to WORKERS
MEDIAN_S, SIGMA = 0.15, 1.5  # lognormal batch times: mean about 0.45 s, the slowest of 200 several seconds
SEED = 19
SAMPLE_S = 0.05
TIMEOUT_S = 180.0
SCALING = {"target_drain_s": 2.0, "idle_s": 1.0}  # the stack's `scaling` settings (thresher.yaml)


def batch_seconds() -> list[float]:
    rng = random.Random(SEED)
    return [round(rng.lognormvariate(math.log(MEDIAN_S), SIGMA), 3) for _ in range(BATCHES)]


def run(stack: BenchStack, work_dir: Path, repeats: int) -> Scenario:
    fixed, elastic = [], []
    for i in range(repeats):  # alternately, so that a busier moment of the machine does not favour one
        fixed.append(_one_job(stack, work_dir / f"elastic-fixed-{i}", {"workers": WORKERS}))
        elastic.append(_one_job(stack, work_dir / f"elastic-{i}", {"min_workers": MIN_WORKERS, "max_workers": WORKERS}))
    fixed_idle, elastic_idle = median([r.idle_s for r in fixed]), median([r.idle_s for r in elastic])
    fixed_wall, elastic_wall = median([r.wall_s for r in fixed]), median([r.wall_s for r in elastic])
    times = batch_seconds()
    scenario = Scenario(
        8, f"Elastic workers: {BATCHES} batches, lognormal times (median {MEDIAN_S * 1000:.0f} ms), up to {WORKERS}"
    )
    scenario.figures = [
        Figure("idle worker-seconds, elastic", elastic_idle, "s", baseline=fixed_idle, baseline_label="fixed"),
        Figure(
            "idle worker-seconds saved", (1 - elastic_idle / fixed_idle) * 100, "%", target=Target(40, at_least=True)
        ),
        Figure(
            "wall time, submit to final status, elastic", elastic_wall, "s", baseline=fixed_wall, baseline_label="fixed"
        ),  # fmt: skip
        Figure("wall time added", (elastic_wall / fixed_wall - 1) * 100, "%", target=Target(5, at_least=False)),
        Figure(
            "worker-seconds, elastic",
            median([r.worker_s for r in elastic]),
            "s",
            baseline=median([r.worker_s for r in fixed]),
            baseline_label="fixed",
        ),  # fmt: skip
    ]
    one = elastic[len(elastic) // 2]
    scenario.notes = [
        f"Median of {repeats} runs of each. Batch times: sum {sum(times):.1f} s, mean {sum(times) / len(times):.3f} s,"
        f" slowest {max(times):.2f} s (seed {SEED}). Fixed: `workers: {WORKERS}`; elastic: `min_workers: {MIN_WORKERS},"
        f" max_workers: {WORKERS}`, with `scaling.target_drain_s: {SCALING['target_drain_s']:g}` and"
        f" `scaling.idle_s: {SCALING['idle_s']:g}`.",
        f"Busy worker-seconds (the batches' own time) were {median([r.busy_s for r in fixed]):.1f} s fixed and"
        f" {median([r.busy_s for r in elastic]):.1f} s elastic. In the middle elastic run the status showed the"
        f" scaler's decisions {one.decisions}, and {one.idle_exits} workers that exited idle.",
        "Idle time left in the elastic job: the first worker alone until the scaler sees a batch's time (the age of"
        " the first attempt in progress), the others' start, and each worker's `idle_s` before it exits in the tail.",
    ]
    return scenario


@dataclass(frozen=True)
class _Run:
    wall_s: float  # submit to final status
    worker_s: float  # worker-seconds over that time
    busy_s: float  # the batches' time at the workers
    idle_exits: int  # the most its status showed while it ran
    decisions: str  # the scaler's decisions its status showed while it ran

    @property
    def idle_s(self) -> float:
        return self.worker_s - self.busy_s


def _one_job(stack: BenchStack, record_dir: Path, workers: dict[str, int]) -> _Run:
    record_dir.mkdir(parents=True)
    items = batch_seconds()  # one item a batch: its seconds
    config = {"sleep_items": True, "record_dir": str(record_dir)}
    job: dict[str, Any] = {**workers, "item_list": {"items": items, "batch_size": 1}, "config": config}
    decisions: set[str] = set()
    idle_exits = 0
    with _worker_seconds(stack) as sampled:
        job_id, submitted = stack.submit(job)
        sampled["job_id"] = job_id
        deadline = time.monotonic() + TIMEOUT_S
        while (status := stack.status(job_id))["job_status"]["status"] not in FINAL_NAMES:
            scaling = status["job_status"].get("scaling") or {}  # while it runs: an ended job's has no live counts
            decisions.add(scaling.get("last_decision") or "")
            idle_exits = max(idle_exits, scaling.get("idle_exits", 0))
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} did not finish in {TIMEOUT_S:g} s")
            time.sleep(STATUS_POLL_S)
        final_at = time.time()
    if status["job_status"]["status"] != "succeeded":
        raise RuntimeError(f"elastic job ended {status['job_status']['status']}: {status['job_status']}")
    stack.wait_nothing_left(job_id)
    events = records.read_events(record_dir)
    ends = {e["batch_id"]: e["t"] for e in records.of_kind(events, "end")}
    busy = sum(ends[e["batch_id"]] - e["t"] for e in records.of_kind(events, "start") if e["batch_id"] in ends)
    return _Run(
        wall_s=final_at - submitted,
        worker_s=sampled["worker_s"],
        busy_s=busy,
        idle_exits=idle_exits,
        decisions=", ".join(sorted(decisions - {""})) or "-",
    )


def _live_workers(stack: BenchStack, job_id: str) -> int:
    """The job's workers whose process group has a live process (the local runtime's workers.json; cheap)."""
    try:
        pods = json.loads((stack.data_dir / "jobs" / job_id / "workers.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    return sum(any(procs.alive(p["pid"]) for p in pod["processes"]) for pod in pods)


@contextmanager
def _worker_seconds(stack: BenchStack) -> Iterator[dict[str, Any]]:
    """Samples the job's live workers (`sampled["job_id"]` once known) every SAMPLE_S, adding up worker-seconds."""
    sampled: dict[str, Any] = {"worker_s": 0.0}
    done = threading.Event()

    def sample() -> None:
        last = time.monotonic()
        while not done.wait(SAMPLE_S):
            now = time.monotonic()
            if job_id := sampled.get("job_id"):
                sampled["worker_s"] += _live_workers(stack, job_id) * (now - last)
            last = now

    thread = threading.Thread(target=sample, name="worker-seconds", daemon=True)
    thread.start()
    try:
        yield sampled
    finally:
        done.set()
        thread.join()
