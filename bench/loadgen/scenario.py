"""Scenario 9's sizes, figures, tables and plot: the grid of (N workers, M jobs) on one stack, then rounds of the
largest point again to see whether the services' memory grows with the number of finished jobs."""

from __future__ import annotations

from pathlib import Path

from bench.loadgen import svg
from bench.loadgen.control_plane import Ingest, Measured, Point, measure, measure_ingest, start_stack
from bench.results import Figure, Scenario, Target, number

REPORTS_GOAL = 20_000.0  # batch reports/s the monitor takes
STATUS_GOAL_MS = 50.0  # status read p99 at the largest point
SETTLE_GOAL_S = 0.5
SERVICES = ("gateway", "scheduler", "enqueuer", "monitor")


def grid(quick: bool, large: bool) -> tuple[list[Point], int, list[tuple[int, int]]]:
    """The points to measure, how many more rounds of the last one (for memory), and the monitor-alone points
    (workers, batches each)."""
    if large:
        batches = {100: 20_000, 300: 30_000, 1000: 40_000}
        points = [Point(n, m, batches[n]) for n in (100, 300, 1000) for m in (1, 10, 100)]
        return points, 3, [(100, 400), (1000, 40)]
    if quick:
        return [Point(100, 10, 3_000)], 1, [(100, 30)]
    return [Point(100, 1, 10_000), Point(300, 10, 10_000), Point(1000, 100, 20_000)], 1, [(100, 200)]


def run(work: Path, quick: bool, large: bool, svg_path: Path) -> Scenario:
    points, rounds, ingest_points = grid(quick, large)
    stack = start_stack(work / "control-plane")
    print(f"   stack up (external runtime) in {stack.start_s:.1f} s", flush=True)
    measured: list[Measured] = []
    ingests: list[Ingest] = []
    try:
        for workers, batches in ingest_points:
            ingests.append(measure_ingest(stack, work, workers, batches))
            print(f"   {_ingest_row(ingests[-1])}", flush=True)
        for point in [*points, *[points[-1]] * rounds]:
            finished = measured[-1].finished_jobs if measured else 0
            measured.append(measure(stack, work, point, finished))
            print(f"   {_row(measured[-1])}", flush=True)
    finally:
        stack.stop()
    grid_part, memory_part = measured[: len(points)], measured[len(points) - 1 :]
    plot = _plot(grid_part)
    if plot is not None:
        svg_path.write_text(plot, encoding="utf-8")
    largest = grid_part[-1]
    at = f"N={largest.point.workers:,}, M={largest.point.jobs}"
    best = max(grid_part, key=lambda m: m.reports_per_s)
    ceiling = max(ingests, key=lambda i: i.reports_per_s)
    cost_us = sorted(m.monitor_us_per_report for m in grid_part)[len(grid_part) // 2]
    scenario = Scenario(9, f"Control plane at scale: {len(points)} points of N workers × M jobs, simulated workers")
    scenario.figures = [
        Figure(
            "monitor alone: batch reports/s acked (made-up batches)",
            ceiling.reports_per_s,
            "reports/s",
            target=Target(REPORTS_GOAL, at_least=True),
            note=f"N={ceiling.workers:,}",
        ),
        Figure(
            "whole pipeline: batch reports/s acked, best point",
            best.reports_per_s,
            "reports/s",
            note=f"N={best.point.workers:,}, M={best.point.jobs}",
        ),
        Figure(f"status read p99, {at}", largest.status_p99_ms, "ms", target=Target(STATUS_GOAL_MS, at_least=False)),
        Figure(
            f"settle after the last batch, slowest job, {at}",
            largest.settle_max_s,
            "s",
            target=Target(SETTLE_GOAL_S, at_least=False),
        ),
        Figure(f"report-to-ack p99, {at}", largest.ack_p99_ms, "ms"),
        Figure(f"submit p99, {at}", largest.submit_p99_ms, "ms"),
        Figure("ledger growth per batch", largest.ledger_per_batch, "bytes"),
        Figure(
            "monitor CPU per report acked (median of the points)",
            cost_us,
            "µs",
            note=f"one core of it: {1e6 / cost_us:,.0f} reports/s",
        ),
        Figure(
            f"largest service RSS growth over {len(memory_part) - 1} more rounds",
            max(memory_part[-1].usage.rss_mib[s] - memory_part[0].usage.rss_mib[s] for s in SERVICES),
            "MiB",
            note=f"{memory_part[0].finished_jobs} to {memory_part[-1].finished_jobs} finished jobs",
        ),
    ]
    scenario.notes = [
        "Simulated dequeuers (bench/loadgen/simworkers.py, 3 processes, asyncio) on the real report stream with "
        "tokens the external runtime handed out, batches received from the jobs' real SQLite queue 10 at a time, "
        "10 ms of work each, a heartbeat after 2 s without a report (as a dequeuer); one job in ten (of those with "
        "2+ workers) loses a worker mid-job. "
        "The monitor alone: the same simulated workers with made-up batches of no duration, no queue (one job, "
        "stopped at the end), to see what the monitor takes when the queue's cost is not in the generator. "
        "Two client threads read the jobs' statuses without pause and 4 clients follow event streams. "
        "Batch reports/s: 2 per batch (STARTED, SUCCEEDED), from the first report to the last batch's ack. Settle: a "
        "job's `end_time` after its last batch was done (its report sent). The generator shares the machine's 2 "
        "cores with the stack.",
        f"Plot: [{svg_path.name}]({svg_path.name})." if plot else "No plot: it needs every N at one M (`--large`).",
        "The table: every point in the order run, on one stack (the last rows repeat the largest point: memory "
        "against finished jobs). CPU: seconds used during the point; RSS: at its end; load: the 1-minute load "
        "average at its end (other engineers' work shares the machine).",
        "Per point: " + "; ".join(f"N={m.point.workers:,} M={m.point.jobs}: {', '.join(m.notes)}" for m in measured),
    ]
    scenario.table = [
        "| monitor alone: N | batches | reports/s | ack p50 / p99 ms | CPU s monitor / sims | monitor µs / report "
        "| load |",
        "|---|---|---|---|---|---|---|",
        *(_ingest_table_row(i) for i in ingests),
        "",
        "| N | M | batches | reports/s | ack p50 / p99 ms | status p99 ms (reads) | submit p99 ms | settle p50 / max s "
        "| CPU s gw / sch / enq / mon / sims | monitor µs CPU / report (reports / message) "
        "| RSS MiB gw / sch / enq / mon | ledger B/batch | finished jobs | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *(_table_row(m) for m in measured),
    ]
    return scenario


def _ingest_row(i: Ingest) -> str:
    return (
        f"monitor alone, N={i.workers:,}: {i.reports_per_s:,.0f} reports/s, ack p99 {i.ack_p99_ms:,.0f} ms, "
        f"load {i.load:.1f}"
    )


def _ingest_table_row(i: Ingest) -> str:
    return (
        f"| {i.workers:,} | {i.batches:,} | {number(i.reports_per_s)} | {number(i.ack_p50_ms)} / "
        f"{number(i.ack_p99_ms)} | {i.monitor_cpu_s:.1f} / {i.sim_cpu_s:.1f} | "
        f"{i.monitor_cpu_s / (2 * i.batches) * 1e6:.0f} | {i.load:.1f} |"
    )


def _row(m: Measured) -> str:
    return (
        f"N={m.point.workers:,} M={m.point.jobs}: {m.reports_per_s:,.0f} reports/s, ack p99 {m.ack_p99_ms:,.0f} ms, "
        f"status p99 {m.status_p99_ms:,.0f} ms, settle max {m.settle_max_s:.2f} s, load {m.load:.1f}"
    )


def _table_row(m: Measured) -> str:
    cpu = " / ".join(f"{m.usage.cpu_s.get(s, 0.0):.1f}" for s in SERVICES) + f" / {m.sim_cpu_s:.1f}"
    rss = " / ".join(f"{m.usage.rss_mib.get(s, 0.0):.0f}" for s in SERVICES)
    return (
        f"| {m.point.workers:,} | {m.point.jobs} | {m.batches:,} | {number(m.reports_per_s)} | "
        f"{number(m.ack_p50_ms)} / {number(m.ack_p99_ms)} | {number(m.status_p99_ms)} ({m.status_reads}) | "
        f"{number(m.submit_p99_ms)} | {m.settle_p50_s:.2f} / {m.settle_max_s:.2f} | {cpu} | "
        f"{m.monitor_us_per_report:.0f} ({m.reports / max(1, m.messages):.1f}) | {rss} | "
        f"{number(m.ledger_per_batch)} | {m.finished_jobs} | {m.load:.1f} |"
    )


def _plot(measured: list[Measured]) -> str | None:
    """Reports/s and status read p99 against N, one line per M."""
    ns = sorted({m.point.workers for m in measured})
    by_m: dict[int, dict[int, Measured]] = {}
    for m in measured:
        by_m.setdefault(m.point.jobs, {})[m.point.workers] = m
    complete = {jobs: row for jobs, row in by_m.items() if set(row) == set(ns)}  # lines need a y at every N
    if len(ns) < 2 or not complete:
        return None
    series = {f"M={jobs}": [row[n] for n in ns] for jobs, row in complete.items()}
    return svg.figure(
        [
            svg.panel(
                "batch reports/s acked",
                [float(n) for n in ns],
                {k: [m.reports_per_s for m in v] for k, v in series.items()},
                "N workers",
                REPORTS_GOAL,
            ),
            svg.panel(
                "status read p99 (ms)",
                [float(n) for n in ns],
                {k: [m.status_p99_ms for m in v] for k, v in series.items()},
                "N workers",
                STATUS_GOAL_MS,
            ),
        ]
    )
