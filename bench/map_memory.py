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
from dataclasses import dataclass
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
MILLION = 1_000_000
FLAT = 2.0  # the large run's peak may be at most this many times the small one's (for 10× the items)
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class MapRun:
    seconds: float
    peaks: dict[str, float]  # kind of process -> peak RSS, MiB (the largest of its kind)
    submit_growth: dict[str, float]  # service -> its peak while map submitted, above its RSS before, MiB
    results_growth: dict[str, float]  # service -> its peak after the submission, above its RSS then, MiB


def run(stack: BenchStack, sizes: tuple[int, int]) -> Scenario:
    small, large = sizes
    runs = {n: _one_map(stack, n) for n in sizes}
    s, big = runs[small], runs[large]
    scenario = Scenario(7, f"Map memory: client.map over {large:,} small items, batch_size {BATCH_SIZE}")
    scenario.figures = [
        Figure(
            f"map rate, {large:,} items",
            large / big.seconds,
            "items/s",
            baseline=small / s.seconds,
            baseline_label=f"same, {small:,} items",
        )
    ]
    for name in sorted(big.peaks):
        scenario.figures.append(
            Figure(
                f"peak RSS {name}, {large:,} items",
                big.peaks[name],
                "MiB",
                baseline=s.peaks.get(name),
                baseline_label=f"same, {small:,} items",
                target=Target(s.peaks[name] * FLAT, at_least=False) if name in s.peaks else None,
            )
        )
    gateway = Config().gateway
    body = _body_bytes(large)
    scenario.notes = [
        f"Each run: submit, follow the results and check every item's result in input order ({small:,} items in "
        f"{s.seconds:.1f} s, {large:,} in {big.seconds:.1f} s). Peak RSS is VmHWM; for the dequeuers and "
        f"workers, the largest of them. Target: the {large:,}-item peak at most {FLAT:g}× the {small:,}-item one.",
        "Growth of each service's peak above its RSS before, "
        f"{small:,} → {large:,} items, while map submits: "
        + "; ".join(_growth(name, s.submit_growth, big.submit_growth) for name in sorted(big.submit_growth))
        + "; then while the job runs and map reads the results: "
        + "; ".join(_growth(name, s.results_growth, big.results_growth) for name in sorted(big.results_growth))
        + ".",
        f"map streams its items as JSON Lines (POST /v1/apis/<api>/jobs: {body / 2**20:.1f} MiB for {large:,} "
        f"items, within `gateway.max_upload_bytes`, {gateway.max_upload_bytes / 2**30:g} GiB); the gateway checks "
        f"them as they arrive and, past `gateway.stage_items_over_bytes` ({gateway.stage_items_over_bytes // 1024} "
        "KiB), stages them as a file under the data dir that the enqueuer reads as a stream: no gRPC message "
        "carries them, and no process holds them.",
    ]
    return scenario


def _growth(name: str, small: dict[str, float], large: dict[str, float]) -> str:
    ratio = f" ({large[name] / small[name]:.1f}×)" if small.get(name, 0.0) > 1 else ""
    return f"{name} +{small.get(name, 0.0):.0f} → +{large[name]:.0f} MiB{ratio}"


def _one_map(stack: BenchStack, items: int) -> MapRun:
    """One map in a client process; the services' peaks are reset when it starts and again once it has submitted
    (the client prints a line then), so that what the submission costs shows apart from what the results cost."""
    idle = _reset_services(stack)
    sampler = _Sampler(stack)
    sampler.start()
    command = [sys.executable, "-m", "bench.map_client", stack.url, str(items), str(BATCH_SIZE), str(WORKERS)]
    env = _env(str(stack.data_dir))
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as client:
        try:
            assert client.stdout is not None
            client.stdout.readline()  # "submitted": map has returned, the job exists
            submit_peaks = sampler.restart()
            submitted = _reset_services(stack)
            out, err = client.communicate(timeout=TIMEOUT_S)
        finally:
            client.kill()
            result_peaks = sampler.stop()
    if client.returncode != 0:
        raise RuntimeError(f"map of {items:,} items failed: {err.strip()[-2000:]}")
    report = json.loads(out.strip().splitlines()[-1])
    if report["count"] != items:
        raise RuntimeError(f"map of {items:,} items yielded {report['count']}")
    result_peaks["client"] = max(result_peaks.get("client", 0.0), report["peak_rss_mib"])
    peaks = {k: max(submit_peaks.get(k, 0.0), result_peaks.get(k, 0.0)) for k in submit_peaks | result_peaks}
    return MapRun(report["seconds"], peaks, _growth_of(submit_peaks, idle), _growth_of(result_peaks, submitted))


def _reset_services(stack: BenchStack) -> dict[str, float]:
    """Reset each service's peak RSS; returns their RSS now (MiB)."""
    rss = {}
    for name, pid in stack.service_pids().items():
        procs.reset_peak_rss(pid)
        rss[name] = procs.rss_mib(pid) or 0.0
    return rss


def _growth_of(peaks: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {name: peaks.get(name, rss) - rss for name, rss in before.items()}


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
    """Peak RSS of every process of the stack, by kind, every SAMPLE_S, until stop(); restart() starts afresh."""

    def __init__(self, stack: BenchStack) -> None:
        super().__init__(daemon=True)
        self._root = str(stack.root)
        self._peaks: dict[str, float] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self._sample()
            self._done.wait(SAMPLE_S)

    def _sample(self) -> None:
        with self._lock:
            for pid in procs.processes_of(self._root):
                peak = procs.peak_rss_mib(pid)
                if peak is not None:
                    kind = _kind(pid)
                    self._peaks[kind] = max(peak, self._peaks.get(kind, 0.0))

    def restart(self) -> dict[str, float]:
        """The peaks so far (sampled now); the next ones start from nothing."""
        self._sample()
        with self._lock:
            peaks, self._peaks = self._peaks, {}
        return peaks

    def stop(self) -> dict[str, float]:
        self._done.set()
        self.join()
        self._sample()
        return self._peaks
