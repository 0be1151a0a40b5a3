"""Scenario 7, map memory: `Client.map` over many small items with flat memory in every process.

The client runs in a process of its own (bench/map_client.py) and maps N small integers, batch_size 100, on 2
workers that echo their items; every process of the stack (the services, `thresher up`, each dequeuer and worker,
found by the data dir in their command line or environment) has its peak RSS (VmHWM, the services' reset before
each run) sampled every SAMPLE_S. Two sizes, 10× apart: a process whose peak grows with the job is not flat.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from bench import procs
from bench.results import Figure, Scenario, Target
from bench.stack import BenchStack
from thresher.core.config import Config
from thresher.tools.services import SERVICES
from thresher.tools.submission import SubmissionBody

BATCH_SIZE = 100
WORKERS = 2
SAMPLE_S = 0.2
TIMEOUT_S = 600.0
FLAT = 2.0  # the large run's peak may be at most this many times the small one's (for 10× the items)
ROOT = Path(__file__).resolve().parent.parent


def run(stack: BenchStack, sizes: tuple[int, int]) -> Scenario:
    small, large = sizes
    peaks = {n: _one_map(stack, n) for n in sizes}
    seconds = {n: peaks[n].pop("seconds") for n in sizes}
    scenario = Scenario(7, f"Map memory: client.map over {large:,} small items, batch_size {BATCH_SIZE}")
    scenario.figures = [
        Figure(
            f"map rate, {large:,} items",
            large / seconds[large],
            "items/s",
            baseline=small / seconds[small],
            baseline_label=f"same, {small:,} items",
        )
    ]
    for name in sorted(peaks[large]):
        scenario.figures.append(
            Figure(
                f"peak RSS {name}, {large:,} items",
                peaks[large][name],
                "MiB",
                baseline=peaks[small].get(name),
                baseline_label=f"same, {small:,} items",
                target=Target(peaks[small][name] * FLAT, at_least=False) if name in peaks[small] else None,
            )
        )
    limit = Config().gateway.max_body_bytes
    body = {n: _body_bytes(n) for n in sizes}
    scenario.notes = [
        f"Each run: submit, follow the results and check every item's result in input order ({small:,} items in "
        f"{seconds[small]:.1f} s, {large:,} in {seconds[large]:.1f} s). Peak RSS is VmHWM; for the dequeuers and "
        f"workers, the largest of them. Target: the {large:,}-item peak at most {FLAT:g}× the {small:,}-item one.",
        f"The submission streams from the client, but the gateway takes it whole (`gateway.max_body_bytes`, "
        f"{limit / 2**20:g} MiB): {large:,} items make a {body[large] / 2**20:.1f} MiB body, so about "
        f"{int(large * limit / body[large]):,} such items fit; past the limit the gateway answers 413 `too_large` "
        "and map raises before any job exists. A larger map needs a file source (`delimited_files`).",
    ]
    return scenario


def _one_map(stack: BenchStack, items: int) -> dict[str, float]:
    """The peak RSS of each kind of process during one map (the largest of its kind), and the map's seconds."""
    for pid in stack.service_pids().values():
        procs.reset_peak_rss(pid)
    sampler = _Sampler(stack)
    sampler.start()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.map_client", stack.url, str(items), str(BATCH_SIZE), str(WORKERS)],
            cwd=ROOT,
            env=_env(str(stack.data_dir)),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    finally:
        peaks = sampler.stop()
    if done.returncode != 0:
        raise RuntimeError(f"map of {items:,} items failed: {done.stderr.strip()[-2000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if report["count"] != items:
        raise RuntimeError(f"map of {items:,} items yielded {report['count']}")
    peaks["client"] = max(peaks.get("client", 0.0), report["peak_rss_mib"])
    peaks["seconds"] = report["seconds"]
    return peaks


def _env(data_dir: str) -> dict[str, str]:
    """This process's environment with the stack's data dir, where the client finds its API key."""
    return {**os.environ, "THRESHER_DATA_DIR": data_dir}


def _body_bytes(items: int) -> int:
    return sum(len(chunk) for chunk in SubmissionBody({"workers": WORKERS}, range(items), BATCH_SIZE).chunks())


def _kind(pid: int) -> str:
    command = procs.cmdline(pid)
    for service in SERVICES:
        if service.module in command:
            return service.name
    if "bench.map_client" in command:
        return "client"
    if "--job-id" in command:
        return "dequeuer"
    if "bench_worker" in command:
        return "worker"
    return "thresher up"


class _Sampler(threading.Thread):
    """Peak RSS of every process of the stack, by kind, every SAMPLE_S, until stop()."""

    def __init__(self, stack: BenchStack) -> None:
        super().__init__(daemon=True)
        self._root = str(stack.root)
        self._peaks: dict[str, float] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self._sample()
            self._done.wait(SAMPLE_S)

    def _sample(self) -> None:
        for pid in procs.processes_of(self._root):
            peak = procs.peak_rss_mib(pid)
            if peak is not None:
                kind = _kind(pid)
                self._peaks[kind] = max(peak, self._peaks.get(kind, 0.0))

    def stop(self) -> dict[str, float]:
        self._done.set()
        self.join()
        return self._peaks
