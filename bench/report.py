"""docs/benchmarks.md, written from one run: machine facts, every figure beside its baseline and target, profile."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

from bench.profiling import Profile
from bench.results import Scenario

ANALYSIS = Path(__file__).parent / "analysis.md"  # written by hand: what changed, and what the figures mean


def machine_facts() -> list[str]:
    return [
        f"CPUs (nproc): {len(os.sched_getaffinity(0))} — {_cpu_model()}",
        f"memory (free -m): {_memory()}",
        f"Python {platform.python_version()}, Linux {platform.release()}",
        f"1-minute load average at the start: {os.getloadavg()[0]:.1f} (other work on this shared machine slows "
        "every figure)",
    ]


def write_report(
    path: Path,
    facts: list[str],
    scenarios: list[Scenario],
    profile: Profile | str | None,
    quick: bool,
    with_analysis: bool = True,  # the analysis written by hand and the profile: not in scenario 9's own report
) -> None:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`python -m bench{' --quick' if quick else ''}`, see `bench/`) on {when}, "
        f"commit {_commit()} (the tree may hold uncommitted changes). "
        + ("**Quick run: small sizes, for a check only.**" if quick else "Full sizes."),
        "",
        *(f"- {fact}" for fact in facts),
        "- The embedded stack (`thresher up`) with default settings: SQLite queue, local worker processes; "
        "scenario 5 runs a second stack on moto's SQS. The machine is shared: figures swing 30–50% between runs.",
        "- Every ratio is figure / baseline, both measured in this run.",
        "",
        "## Summary: the issue's targets",
        "",
        "| # | figure | value | baseline (same run) | ratio | target |",
        "|---|---|---|---|---|---|",
    ]
    for s in scenarios:
        for f in s.figures:
            if f.target is not None or f.value is None:
                lines.append(
                    f"| {s.number} | {f.label} | {f.value_text()} | {f.baseline_text()} | {f.ratio_text()} | "
                    f"{f.target_text() or f.note} |"
                )
    if with_analysis and not quick:
        lines += ["", ANALYSIS.read_text(encoding="utf-8").rstrip()]
    for s in scenarios:
        lines += [
            "",
            f"## {s.number}. {s.title}",
            "",
            "| figure | value | baseline (same run) | ratio | target |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {f.label} | {f.value_text()} | {f.baseline_text()} | {f.ratio_text()} | {f.target_text() or f.note} |"
            for f in s.figures
        ]
        lines += [
            "",
            *(f"- {note}" for note in s.notes),
            f"- Scenario run time: {s.seconds:.0f} s; 1-minute load average when it ended: {s.load_after:.1f} "
            f"on {len(os.sched_getaffinity(0))} CPUs.",
        ]
        if s.table:
            lines += ["", *s.table]
    if with_analysis:
        lines += ["", *_profile_section(profile)]
    lines += [
        "",
        "## How to run",
        "",
        "`make bench` (about 6 minutes on this machine) or `make bench QUICK=1` (small sizes, a minute or two; "
        "writes `.thresher/bench/benchmarks-quick.md` instead of this file). `python -m bench --help` lists the "
        "options: `--only 1,3` runs some scenarios, `--no-profile` skips py-spy, `--only 9 --large` runs scenario 9's "
        "whole grid into docs/control-plane.md.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")


def _profile_section(profile: Profile | str | None) -> list[str]:
    lines = ["## Where the time goes (scenario 1 under py-spy)", ""]
    if profile is None:
        return lines + ["Not profiled in this run."]
    if isinstance(profile, str):
        return lines + [profile]
    working = sum(profile.by_process.values())
    lines += [
        f"One more no-op job of {profile.batches:,} batches took {profile.seconds:.2f} s under py-spy "
        f"({profile.batches / profile.seconds:,.0f} batches/s; sampling slows it). {profile.total:,} samples at "
        f"100 Hz from every process; {profile.waiting / max(profile.total, 1):.0%} were threads waiting (event "
        'loops in select, idle thread pools) and are left out below. "Active ms per batch" is the time that process '
        "was sampled running (or in blocking I/O, or runnable and waiting for a CPU) divided by the batches; "
        '"CPU ms per batch" is the CPU time /proc counted for it during the job (start-up included: every worker '
        "and dequeuer process starts with the job), divided by the batches.",
        "",
        "| process | share of working samples | active ms per batch | CPU ms per batch |",
        "|---|---|---|---|",
    ]
    for process in sorted(set(profile.by_process) | set(profile.cpu_s), key=lambda p: -profile.cpu_s[p]):
        samples = profile.by_process[process]
        cpu_ms = profile.cpu_s[process] * 1000 / profile.batches if process in profile.cpu_s else None
        lines.append(
            f"| {process} | {samples / working:.0%} | {profile.ms_per_batch(samples):.2f} | "
            + (f"{cpu_ms:.2f} |" if cpu_ms is not None else "|")
        )
    cpu = sum(profile.cpu_s.values())
    lines += [
        "",
        f"CPU time of the whole job: {cpu:.2f} s, {cpu * 1000 / profile.batches:.2f} ms per batch, over "
        f"{profile.seconds:.2f} s on {len(os.sched_getaffinity(0))} CPUs.",
    ]
    lines += [
        "",
        "Top hot spots: the innermost Thresher function on the sampled stacks, and the function below it where "
        "most of those samples were.",
        "",
        "| process | Thresher function | share of working samples | mostly in |",
        "|---|---|---|---|",
    ]
    for h in profile.hotspots:
        lines.append(f"| {h.process} | `{h.function}` | {h.samples / working:.1%} | `{h.below}` |")
    return lines


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory() -> str:
    try:
        output = subprocess.run(["free", "-m"], capture_output=True, text=True, timeout=10).stdout
        total, used, free = output.splitlines()[1].split()[1:4]
        return f"{int(total):,} MiB total, {int(used):,} used, {int(free):,} free at the start"
    except (OSError, IndexError, ValueError, subprocess.SubprocessError):
        return "unknown"


def _commit() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        output = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        return output.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
