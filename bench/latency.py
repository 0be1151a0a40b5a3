"""Scenario 3, latencies of a job's life: submit → first batch at a worker, last batch done → /on-job-complete
called, hook → no worker process left (scale to zero); redelivery after kills is in redelivery.py.

All times are time.time() on this machine: the bench notes when it submits, the worker when a batch starts or
ends and when its hook is called, and the bench polls /proc (every 10 ms) until no process of the job is left.
"""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path

from bench import records
from bench.floors import Floors
from bench.results import Figure, Scenario, Target, median
from bench.stack import BenchStack

ITEMS = 20
WORKERS = 2
TIMEOUT_S = 60.0


def run(stack: BenchStack, work_dir: Path, floors: Floors, repeats: int) -> Scenario:
    runs = [_one_job(stack, work_dir / f"latency-{i}") for i in range(repeats)]
    first_batch, hook, scale_down = (median([r[i] for r in runs]) for i in range(3))
    scenario = Scenario(3, "Latencies")
    scenario.figures = [
        Figure(
            "submit → first batch at a worker",
            first_batch,
            "s",
            baseline=floors.cold_start_s,
            baseline_label="worker cold start alone",
            target=Target(1.0, at_least=False),
        ),
        Figure(
            "last batch done → /on-job-complete called",
            hook,
            "s",
            baseline=floors.post_s,
            baseline_label="one POST to a warm worker",
            target=Target(0.2, at_least=False),
        ),
        Figure(
            "hook → no worker process left",
            scale_down,
            "s",
            baseline=floors.exit_s,
            baseline_label="idle worker exit on SIGTERM",
            target=Target(2.0, at_least=False),
        ),
    ]
    each = "; ".join(f"{r[0]:.3f} / {r[1]:.3f} / {r[2]:.3f}" for r in runs)
    worker_up, dequeuer_up = median([r[3] for r in runs]), median([r[4] for r in runs])
    scenario.notes = [
        f"Median of {repeats} jobs of {ITEMS} one-item batches on {WORKERS} workers (each run: {each} s). "
        "Baselines are the bench worker alone, without Thresher (bench/floors.py).",
        f"Start-up, from their first log lines (medians): the first worker process was up {worker_up:.3f} s after "
        f"submit, the first dequeuer {dequeuer_up:.3f} s after submit (its imports included); the first batch "
        f"started {first_batch:.3f} s after submit.",
        "Reference (issue): completion callback 7–60 ms elsewhere; Cortex ≥ 20 s to the hook, ~30 s to scale down.",
    ]
    return scenario


def _one_job(stack: BenchStack, record_dir: Path) -> tuple[float, float, float, float, float]:
    record_dir.mkdir(parents=True)
    job = {
        "workers": WORKERS,
        "item_list": {"items": list(range(ITEMS)), "batch_size": 1},
        "config": {"record_dir": str(record_dir)},
    }
    job_id, submitted = stack.submit(job)
    hook = records.wait_for_event(record_dir, lambda e: e["event"] == "hook", TIMEOUT_S)
    gone_at = stack.wait_nothing_left(job_id, TIMEOUT_S)
    status, _ = stack.wait_final(job_id, TIMEOUT_S)
    if status["job_status"]["status"] != "succeeded":
        raise RuntimeError(f"latency job ended {status['job_status']['status']}: {status['job_status']}")
    events = records.read_events(record_dir)
    first_start = records.of_kind(events, "start")[0]["t"]
    last_end = records.of_kind(events, "end")[-1]["t"]
    worker_up, dequeuer_up = _first_log_line_times(stack.data_dir / "jobs" / job_id)
    return (
        first_start - submitted,
        hook["t"] - last_end,
        gone_at - hook["t"],
        worker_up - submitted,
        dequeuer_up - submitted,
    )


def _first_log_line_times(job_dir: Path) -> tuple[float, float]:
    """When the job's first worker and first dequeuer wrote their first log line: each is up, imports done."""
    firsts: dict[str, float] = {}
    for path in job_dir.glob("*.log"):  # <worker id>.<container name or "dequeuer">.log
        kind = "dequeuer" if path.name.endswith(".dequeuer.log") else "worker"
        with open(path, encoding="utf-8") as f:
            line = f.readline()
        try:
            stamp = datetime.datetime.fromisoformat(json.loads(line)["time"].replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        firsts[kind] = min(stamp, firsts.get(kind, stamp))
    return firsts.get("worker", math.nan), firsts.get("dequeuer", math.nan)
