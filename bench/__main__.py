"""`make bench` / `python -m bench [--quick] [--large] [--only 1,3] [--no-profile] [--out FILE]`.

Starts the embedded stack in a fresh temporary data dir, runs the scenarios of issues 8 and 18 (each figure beside a
baseline measured in this run), profiles scenario 1 with py-spy when it is installed, writes docs/benchmarks.md,
and stops everything it started. The scenarios live one per module: overhead, parallel, latency + redelivery,
scale, sqs_cost, batch_results, map_memory, elastic, poison (scenario 10); floors.py measures the bare worker
the latencies are compared with.
Scenario 9 (bench/loadgen/) drives the control plane with simulated workers on a stack of its own; `--large` runs its
whole grid (N = 100, 300, 1,000 workers × M = 1, 10, 100 jobs) into a report of its own, docs/control-plane.md, with
its plot, docs/control-plane.svg (`python -m bench --only 9 --large`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import (
    batch_results,
    elastic,
    latency,
    map_memory,
    overhead,
    parallel,
    poison,
    procs,
    redelivery,
    scale,
    sqs_cost,
)
from bench.floors import Floors, measure_floors
from bench.loadgen import scenario as control_plane
from bench.profiling import Profile, profile_overhead
from bench.report import machine_facts, write_report
from bench.results import Figure, Scenario
from bench.stack import LEFT_BEHIND, BenchStack

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "docs" / "benchmarks.md"
QUICK_REPORT = ROOT / ".thresher" / "bench" / "benchmarks-quick.md"
LARGE_REPORT = ROOT / "docs" / "control-plane.md"


@dataclass(frozen=True)
class Sizes:
    overhead_items: int
    repeats: int
    scale_items: tuple[int, int]
    sqs_batches: int
    map_items: tuple[int, int]

    @classmethod
    def of(cls, quick: bool) -> Sizes:
        if quick:
            return cls(
                overhead_items=2_000,
                repeats=1,
                scale_items=(10_000, 100_000),
                sqs_batches=50,
                map_items=(20_000, 200_000),
            )
        return cls(
            overhead_items=20_000,
            repeats=3,
            scale_items=(100_000, 1_000_000),
            sqs_batches=200,
            map_items=(100_000, 1_000_000),
        )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    only = {int(n) for n in args.only.split(",")} if args.only else {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
    sizes = Sizes.of(args.quick)
    work = Path(tempfile.mkdtemp(prefix="thresher-bench-"))
    facts = machine_facts()  # at the start: the load average when the run began
    print("Thresher benchmarks" + (" (quick)" if args.quick else ""), *facts, sep="\n  ", flush=True)
    started = time.monotonic()
    out = Path(args.out) if args.out else (QUICK_REPORT if args.quick else LARGE_REPORT if args.large else REPORT)
    out.parent.mkdir(parents=True, exist_ok=True)
    scenarios: list[Scenario] = []
    profile: Profile | str | None = None
    try:
        if only & {1, 2, 3, 4, 6, 7, 8, 10}:
            profile = _run_embedded(work, sizes, only, not args.no_profile, scenarios)
        if 5 in only:
            scenarios.append(_timed(5, "Queue cost on SQS", lambda: sqs_cost.run(work, sizes.sqs_batches)))
        if 9 in only:
            plot = out.parent / "control-plane.svg"  # written only when the grid has every N at one M: --large
            run = lambda: control_plane.run(work, args.quick, args.large, plot)  # noqa: E731
            scenarios.append(_timed(9, "Control plane at scale", run))
    finally:
        strays = procs.processes_of(str(work))
        procs.kill_all(strays)
        shutil.rmtree(work, ignore_errors=True)
    left = LEFT_BEHIND + strays
    write_report(out, facts, scenarios, profile, args.quick, with_analysis=not args.large)
    _print_end(scenarios, time.monotonic() - started, out, left)
    return 1 if left or any(s.title.endswith("(failed)") for s in scenarios) else 0


def _run_embedded(
    work: Path, sizes: Sizes, only: set[int], with_profile: bool, scenarios: list[Scenario]
) -> Profile | str | None:
    """Scenarios 1 to 4, 6, 7, 8 and 10 on one embedded stack; returns the profile (or why there is none)."""
    floors: Floors | None = measure_floors(sizes.repeats) if 3 in only else None
    inputs = work / "inputs"  # scenario 4's input files: the one folder file sources may read (inputs.local_roots)
    inputs.mkdir(parents=True, exist_ok=True)
    stack = BenchStack(work / "stack", {"inputs": {"local_roots": str(inputs)}, "scaling": elastic.SCALING})
    print(f"  stack up in {stack.start_s:.1f} s at {stack.url}", flush=True)
    profile: Profile | str | None = None
    try:
        if 1 in only:
            scenarios.append(_timed(1, "Overhead", lambda: overhead.run(stack, sizes.overhead_items, sizes.repeats)))
            if with_profile:
                profile = _profile(stack, work, sizes.overhead_items)
        if 2 in only:
            scenarios.append(_timed(2, "Parallel efficiency", lambda: parallel.run(stack, work, sizes.repeats)))
        if 3 in only:
            assert floors is not None
            scenarios.append(_timed(3, "Latencies", lambda: _latencies(stack, work, floors, sizes.repeats)))
        if 4 in only:
            scenarios.append(_timed(4, "Scale", lambda: scale.run(stack, inputs, sizes.scale_items)))
        if 6 in only:
            run = lambda: batch_results.run(stack, work, sizes.overhead_items, sizes.repeats)  # noqa: E731
            scenarios.append(_timed(6, "Results", run))
        if 7 in only:
            scenarios.append(_timed(7, "Map memory", lambda: map_memory.run(stack, sizes.map_items)))
        if 8 in only:
            scenarios.append(_timed(8, "Elastic workers", lambda: elastic.run(stack, work, sizes.repeats)))
        if 10 in only:
            scenarios.append(_timed(10, "Poison items", lambda: poison.run(stack)))
    finally:
        stack.stop()
    return profile


def _profile(stack: BenchStack, work: Path, items: int) -> Profile | str:
    print("   profiling one more overhead job with py-spy ...", flush=True)
    try:
        return profile_overhead(stack, work, items)
    except Exception as e:  # the figures matter more than the profile
        traceback.print_exc()
        return f"profiling failed: {type(e).__name__}: {e}"


def _latencies(stack: BenchStack, work: Path, floors: Floors, repeats: int) -> Scenario:
    scenario = latency.run(stack, work, floors, repeats)
    figures, notes = redelivery.run(stack, work, floors, repeats)
    scenario.figures += figures
    scenario.notes += notes
    return scenario


def _timed(number: int, title: str, run: Callable[[], Scenario]) -> Scenario:
    """Run one scenario and print it; a scenario that fails is reported as failed and the others still run."""
    print(f"\n{number}. {title} ...", flush=True)
    started = time.monotonic()
    try:
        scenario = run()
    except Exception as e:  # one broken scenario must not cost the figures of the others
        traceback.print_exc()
        scenario = Scenario(number, f"{title} (failed)")
        scenario.figures = [Figure("scenario", None, "", note=f"failed: {type(e).__name__}: {e}")]
    scenario.seconds = time.monotonic() - started
    scenario.load_after = os.getloadavg()[0]
    print(scenario.console(), flush=True)
    return scenario


def _print_end(scenarios: list[Scenario], seconds: float, out: Path, left: list[int]) -> None:
    judged = [f.met for s in scenarios for f in s.figures if f.met is not None]
    print(f"\nTargets met: {sum(judged)} of {len(judged)}.  Run time {seconds:.0f} s.  Report: {out}")
    if left:
        print(f"Processes left behind and killed: {left}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each: a fast check")
    parser.add_argument(
        "--large",
        action="store_true",
        help=f"scenario 9's whole grid of N workers × M jobs (minutes; report: {LARGE_REPORT.relative_to(ROOT)})",
    )
    parser.add_argument("--only", help="comma-separated scenario numbers (default: 1,2,3,4,5,6,7,8,9,10)")
    parser.add_argument("--no-profile", action="store_true", help="skip profiling scenario 1 with py-spy")
    parser.add_argument(
        "--out",
        help=f"where to write the report (default: {REPORT.relative_to(ROOT)}, or "
        f"{QUICK_REPORT.relative_to(ROOT)} with --quick, {LARGE_REPORT.relative_to(ROOT)} with --large)",
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
