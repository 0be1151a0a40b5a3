"""Scenario 2, parallel efficiency: 200 batches that each sleep 20 ms on 4 workers; the ideal is 200 × 20 ms / 4.

The worker records when each batch starts and ends. Two walls: the busy span (first batch start to last batch
end: what the system adds while work flows, the figure the issue's reference systems were measured on) and
submit to final status (also starting 4 workers and calling the hook). The baseline runs the same sleeps
through multiprocessing.Pool(4).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from bench import records
from bench.overhead import pool_seconds
from bench.results import Figure, Scenario, Target, median
from bench.stack import BenchStack

BATCHES = 200
SLEEP_S = 0.02
WORKERS = 4
TIMEOUT_S = 120.0


def sleep_batch(items: list[int]) -> None:
    time.sleep(SLEEP_S)


def run(stack: BenchStack, work_dir: Path, repeats: int) -> Scenario:
    ideal_s = BATCHES * SLEEP_S / WORKERS
    pool_s = median([pool_seconds([[i] for i in range(BATCHES)], WORKERS, sleep_batch) for _ in range(repeats)])
    runs = [_one_job(stack, work_dir / f"parallel-{i}") for i in range(repeats)]
    busy_s = median([r[0] for r in runs])
    end_to_end_s = median([r[1] for r in runs])
    scenario = Scenario(2, f"Parallel efficiency: {BATCHES} batches × {SLEEP_S * 1000:.0f} ms, {WORKERS} workers")
    scenario.figures = [
        Figure(
            "efficiency, busy span (ideal / span)",
            ideal_s / busy_s * 100,
            "%",
            baseline=ideal_s / pool_s * 100,
            baseline_label=f"Pool({WORKERS})",
            target=Target(92, at_least=True),
        ),
        Figure("busy span, first batch start to last end", busy_s, "s", baseline=ideal_s, baseline_label="ideal"),
        Figure(
            "efficiency, submit to final status",
            ideal_s / end_to_end_s * 100,
            "%",
            baseline=ideal_s / pool_s * 100,
            baseline_label=f"Pool({WORKERS})",
        ),
        Figure("wall time, submit to final status", end_to_end_s, "s", baseline=ideal_s, baseline_label="ideal"),
    ]
    spread = runs[len(runs) // 2][2]
    scenario.notes = [
        f"Median of {repeats} runs. Batches per worker process in one run: {spread}. The span counts from the "
        "first batch at any worker, so workers that become ready later count against it.",
        "Reference (issue): Celery 73%, Dramatiq 82%, Ray tasks 85%, Ray Data 36%.",
    ]
    return scenario


def _one_job(stack: BenchStack, record_dir: Path) -> tuple[float, float, str]:
    record_dir.mkdir(parents=True)
    config = {"sleep_s": SLEEP_S, "record_dir": str(record_dir)}
    job = {"workers": WORKERS, "item_list": {"items": list(range(BATCHES)), "batch_size": 1}, "config": config}
    job_id, submitted = stack.submit(job)
    status, final_at = stack.wait_final(job_id, TIMEOUT_S)
    if status["job_status"]["status"] != "succeeded":
        raise RuntimeError(f"parallel job ended {status['job_status']['status']}: {status['job_status']}")
    stack.wait_nothing_left(job_id)
    events = records.read_events(record_dir)
    starts, ends = records.of_kind(events, "start"), records.of_kind(events, "end")
    per_worker = sorted(Counter(e["pid"] for e in starts).values(), reverse=True)
    return ends[-1]["t"] - starts[0]["t"], final_at - submitted, " / ".join(map(str, per_worker))
