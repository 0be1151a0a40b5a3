"""Scenario 2, parallel efficiency: 200 batches that each sleep 20 ms on 4 workers; the ideal is 200 × 20 ms / 4.

The worker records when each batch starts and ends. Two walls: the busy span (first batch start to last batch
end: what the system adds while work flows, the figure the issue's reference systems were measured on) and
submit to final status (also starting 4 workers and calling the hook). The baseline runs the same sleeps
through multiprocessing.Pool(4).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench import records
from bench.overhead import STATUS_POLL_S, pool_seconds
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
    busy_s = median([r.span_s for r in runs])
    end_to_end_s = median([r.end_to_end_s for r in runs])
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
    one = runs[len(runs) // 2]
    scenario.notes = [
        f"Median of {repeats} runs; the status is polled every {STATUS_POLL_S:g} s. Batches per worker process in one "
        f"run: {one.per_worker}. The span counts from the first batch at any worker, so workers that become ready "
        "later count against it.",
        f"Where the span goes, in that run: a batch took {one.batch_ms:.1f} ms at the worker on average (the "
        f"{SLEEP_S * 1000:.0f} ms sleep, its two records, and waiting for a CPU), a worker waited {one.gap_ms:.1f} ms "
        f"between the end of one batch and the start of the next, and the workers' first batches started over "
        f"{one.start_spread_s:.2f} s.",
        "Reference (issue): Celery 73%, Dramatiq 82%, Ray tasks 85%, Ray Data 36%.",
    ]
    return scenario


@dataclass(frozen=True)
class _Run:
    span_s: float  # first batch start to last batch end
    end_to_end_s: float  # submit to final status
    per_worker: str  # batches per worker process
    batch_ms: float  # mean time from a batch's start to its end, at the worker
    gap_ms: float  # mean time from a batch's end to the next start, at the same worker
    start_spread_s: float  # from the first worker's first batch to the last worker's first batch


def _one_job(stack: BenchStack, record_dir: Path) -> _Run:
    record_dir.mkdir(parents=True)
    config = {"sleep_s": SLEEP_S, "record_dir": str(record_dir)}
    job = {"workers": WORKERS, "item_list": {"items": list(range(BATCHES)), "batch_size": 1}, "config": config}
    job_id, submitted = stack.submit(job)
    status, final_at = stack.wait_final(job_id, TIMEOUT_S, poll_s=STATUS_POLL_S)
    if status["job_status"]["status"] != "succeeded":
        raise RuntimeError(f"parallel job ended {status['job_status']['status']}: {status['job_status']}")
    stack.wait_nothing_left(job_id)
    events = records.read_events(record_dir)
    starts, ends = records.of_kind(events, "start"), records.of_kind(events, "end")
    per_worker = sorted(Counter(e["pid"] for e in starts).values(), reverse=True)
    busy, gaps, firsts = [], [], []
    for pid in {e["pid"] for e in starts}:
        times = [(s["t"], e["t"]) for s, e in zip(_of(starts, pid), _of(ends, pid), strict=True)]
        busy += [end - start for start, end in times]
        gaps += [start - end for (_, end), (start, _) in zip(times, times[1:], strict=False)]
        firsts.append(times[0][0])
    return _Run(
        span_s=ends[-1]["t"] - starts[0]["t"],
        end_to_end_s=final_at - submitted,
        per_worker=" / ".join(map(str, per_worker)),
        batch_ms=sum(busy) / len(busy) * 1000,
        gap_ms=sum(gaps) / max(len(gaps), 1) * 1000,
        start_spread_s=max(firsts) - min(firsts),
    )


def _of(events: list[records.Event], pid: int) -> list[records.Event]:
    return [e for e in events if e["pid"] == pid]
