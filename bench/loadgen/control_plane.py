"""Scenario 9, the control plane at scale: N simulated workers and M jobs on one stack, every figure per (N, M).

The stack is `thresher up` with the external runtime (thresher/core/runtime/external.py): the scheduler launches
nothing and hands each worker's id and token to a file; SIM_PROCESSES processes of simulated dequeuers
(simworkers.py) take those workers, receive the jobs' batches from the real queue and report to the real monitor.
Clients submit the M jobs through the gateway, read their statuses without pause and follow a few event streams.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.loadgen.clients import StatusReaders, Usage, UsageMeter, submit_all
from bench.results import percentile
from bench.stack import BenchStack
from thresher.core.errors import ThresherError
from thresher.core.runtime.external import LAUNCH_FILE

SIM_PROCESSES = 3  # processes of simulated workers (the machine has 2 cores: more would only contend)
DURATION_S = 0.01  # each batch's work: short, so that a hundred workers already ask for 20,000 reports/s
PREFETCH = 10  # batches a worker receives at once (SQS's most)
HEARTBEAT_S = 2.0  # as a dequeuer's default
LOSE_EVERY = 10  # one job in this many loses one of its workers (if it has two or more) mid-job
LOSE_AFTER = 20  # batches the lost worker completes first
LAUNCH_TIMEOUT_S = 60.0
# The stack's settings: the external runtime, and limits wide enough for a thousand workers and a hundred jobs.
SETTINGS: dict[str, Any] = {
    "runtime": {"backend": "external"},
    "limits": {"max_workers": 1000, "max_workers_in_progress": 100_000, "max_jobs_in_progress_per_api": 1000},
}


@dataclass(frozen=True)
class Point:
    workers: int  # N, in all
    jobs: int  # M
    batches: int  # in all, shared evenly by the jobs


@dataclass
class Measured:
    point: Point
    batches: int  # completed by the simulated workers
    reports: int  # every report acked: batches', heartbeats, hook outcomes
    messages: int  # stream messages they went in
    reports_per_s: float  # batch reports acked per second, first report to the last batch's ack
    ack_p50_ms: float
    ack_p99_ms: float
    status_p99_ms: float
    status_reads: int
    submit_p99_ms: float
    settle_p50_s: float  # a job's end_time after its last batch was done (its report sent)
    settle_max_s: float
    usage: Usage
    ledger_growth: int  # bytes
    finished_jobs: int  # on the stack so far, these included
    load: float  # 1-minute load average when the point ended
    lost: int
    sim_cpu_s: float  # the simulated workers' processes, together
    notes: list[str]

    @property
    def ledger_per_batch(self) -> float:
        return self.ledger_growth / max(1, self.batches)

    @property
    def monitor_us_per_report(self) -> float:
        """The monitor's CPU per report it acked (every kind): what a core of it costs, whatever the machine's load."""
        return self.usage.cpu_s.get("monitor", 0.0) / max(1, self.reports) * 1e6


def measure(stack: BenchStack, work: Path, point: Point, finished_before: int) -> Measured:
    per_job = point.batches // point.jobs
    per_job_workers = max(1, point.workers // point.jobs)
    meter = UsageMeter(stack)
    body = {"workers": per_job_workers, "item_list": {"items": list(range(per_job)), "batch_size": 1}}
    job_ids, submit_ms = submit_all(stack, [body] * point.jobs)
    launches = [_launch(stack, job_id, per_job_workers) for job_id in job_ids]
    readers = StatusReaders(stack, job_ids)
    sims = _start_sims(work, launches)
    readers.wait(timeout_s=120 + point.batches / 200)
    tallies = _wait_sims(sims)
    usage = meter.read()
    last_done = _latest(tallies, "last_batch_done")
    settle = sorted(
        datetime.fromisoformat(readers.final[j]["job_status"]["end_time"]).timestamp() - last_done[j] for j in job_ids
    )
    statuses = {s["job_status"]["status"] for s in readers.final.values()}
    if statuses != {"succeeded"}:
        raise RuntimeError(f"jobs ended {statuses}, not all succeeded")
    batches = sum(t["batches"] for t in tallies)
    window = max(_latest(tallies, "last_batch_acked").values()) - min(
        t["first_sent"] for t in tallies if t["first_sent"]
    )
    acks = [ms for t in tallies for ms in t["ack_ms"]]
    return Measured(
        point=point,
        batches=batches,
        reports=sum(t["acked"] for t in tallies),
        messages=sum(t["messages"] for t in tallies),
        reports_per_s=2 * batches / window,
        ack_p50_ms=percentile(acks, 0.5),
        ack_p99_ms=percentile(acks, 0.99),
        status_p99_ms=percentile(readers.read_ms, 0.99),
        status_reads=len(readers.read_ms),
        submit_p99_ms=percentile(submit_ms, 0.99),
        settle_p50_s=percentile(settle, 0.5),
        settle_max_s=settle[-1],
        usage=usage,
        ledger_growth=usage.ledger_bytes - meter.ledger0,
        finished_jobs=finished_before + point.jobs,
        load=os.getloadavg()[0],
        lost=sum(1 for launch in launches for w in launch["workers"] if w.get("lost")),
        sim_cpu_s=sum(t["cpu_s"] for t in tallies),
        notes=readers.errors
        + [f"{readers.events} events followed", f"{sum(t['reopened'] for t in tallies)} report streams reopened"],
    )


def _launch(stack: BenchStack, job_id: str, workers: int) -> dict[str, Any]:
    """The job's launch file once the scheduler has handed out its workers; marks the one to lose, if any."""
    path = stack.data_dir / "jobs" / job_id / LAUNCH_FILE
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    while True:
        launch: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"workers": []}
        if len(launch["workers"]) >= workers:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id}: its {workers} workers were not handed out in {LAUNCH_TIMEOUT_S:g} s")
        time.sleep(0.05)
    if workers >= 2 and int(job_id.encode().hex(), 16) % LOSE_EVERY == 0:
        launch["workers"][-1]["lost"] = True
    return launch


@dataclass
class Ingest:
    """The monitor alone: simulated workers with made-up batches, no queue (scenario 9's ceiling of the monitor)."""

    workers: int
    batches: int
    reports_per_s: float  # batch reports acked per second, first report to last ack
    ack_p50_ms: float
    ack_p99_ms: float
    monitor_cpu_s: float
    sim_cpu_s: float
    load: float


def measure_ingest(stack: BenchStack, work: Path, workers: int, batches_per_worker: int) -> Ingest:
    """One job whose `workers` workers report `batches_per_worker` made-up batches each, of no duration, as fast as
    acked; the job (one real batch, never done) is stopped at the end."""
    meter = UsageMeter(stack)
    (job_id,), _ = submit_all(stack, [{"workers": workers, "item_list": {"items": [0], "batch_size": 1}}])
    launch = _launch(stack, job_id, workers)
    for worker in launch["workers"]:
        worker.pop("lost", None)
    tallies = _wait_sims(_start_sims(work, [launch], synthetic_batches=batches_per_worker, duration_s=0.0))
    usage = meter.read()
    with contextlib.suppress(ThresherError):  # it may have ended meanwhile
        stack.client.stop(job_id)
    batches = sum(t["batches"] for t in tallies)
    window = max(t["last_acked"] for t in tallies) - min(t["first_sent"] for t in tallies)
    acks = [ms for t in tallies for ms in t["ack_ms"]]
    return Ingest(
        workers=workers,
        batches=batches,
        reports_per_s=2 * batches / window,
        ack_p50_ms=percentile(acks, 0.5),
        ack_p99_ms=percentile(acks, 0.99),
        monitor_cpu_s=usage.cpu_s.get("monitor", 0.0),
        sim_cpu_s=sum(t["cpu_s"] for t in tallies),
        load=os.getloadavg()[0],
    )


def _start_sims(
    work: Path, launches: list[dict[str, Any]], synthetic_batches: int = 0, duration_s: float = DURATION_S
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    workers = [
        {**w, "job_id": launch["job_id"], "api_name": launch["api_name"], "queue_name": launch["queue_name"]}
        for launch in launches
        for w in launch["workers"]
    ]
    sims = []
    for index in range(min(SIM_PROCESSES, len(workers))):
        plan = {
            "env": launches[0]["env"],
            "workers": workers[index::SIM_PROCESSES],
            "duration_s": duration_s,
            "prefetch": PREFETCH,
            "heartbeat_s": HEARTBEAT_S,
            "lose_after": LOSE_AFTER,
            "synthetic_batches": synthetic_batches,
        }
        plan_file, out_file = work / f"sim-{index}.json", work / f"sim-{index}.out.json"
        plan_file.write_text(json.dumps(plan), encoding="utf-8")
        out_file.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "bench.loadgen.simworkers", str(plan_file), str(out_file)]
        sims.append((subprocess.Popen(argv), out_file))
    return sims


def _wait_sims(sims: list[tuple[subprocess.Popen[bytes], Path]], timeout_s: float = 180.0) -> list[dict[str, Any]]:
    """Their tallies, once each has seen its jobs' queues deleted and ended."""
    tallies = []
    for proc, out_file in sims:
        try:
            code = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        if code != 0:
            raise RuntimeError(f"a simulated-worker process ended with code {code}")
        tallies.append(json.loads(out_file.read_text(encoding="utf-8")))
    return tallies


def _latest(tallies: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Per job, the latest of the processes' times under `key`."""
    last: dict[str, float] = {}
    for tally in tallies:
        for job_id, at in tally[key].items():
            last[job_id] = max(at, last.get(job_id, 0.0))
    return last


def start_stack(root: Path) -> BenchStack:
    return BenchStack(root, SETTINGS)
