"""The clients' side of scenario 9: submits, status reads and event streams through the gateway, each timed; and
what the services use (CPU, memory) and the ledger weighs, read from /proc and the data dir."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procs
from bench.stack import API, BenchStack
from thresher.core.statuses import FINAL_NAMES
from thresher.tools.client import GatewayClient

SUBMITTERS = 16  # submits in flight at once
READERS = 2  # threads reading statuses, one job after another
EVENT_STREAMS = 4  # clients following a job's events


def submit_all(stack: BenchStack, jobs: list[dict[str, Any]]) -> tuple[list[str], list[float]]:
    """Submit every job, SUBMITTERS at a time; their ids and each submit's time in ms."""

    def submit(job: dict[str, Any]) -> tuple[str, float]:
        started = time.perf_counter()
        job_id = stack.client.submit(API, job)["job_id"]
        return job_id, (time.perf_counter() - started) * 1000

    with ThreadPoolExecutor(SUBMITTERS) as pool:
        done = list(pool.map(submit, jobs))
    return [job_id for job_id, _ in done], [ms for _, ms in done]


class StatusReaders:
    """Read the jobs' statuses in turn, as fast as answered, until every job is final; time each read. Also follow
    a few jobs' event streams to their end (the gateway holds them open all along)."""

    def __init__(self, stack: BenchStack, job_ids: list[str]) -> None:
        self._client = stack.client
        self._url, self._key = stack.url, stack.process.api_key
        self._job_ids = job_ids
        self.read_ms: list[float] = []
        self.final: dict[str, dict[str, Any]] = {}  # job id -> its final status
        self.events = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._read, args=(i,), daemon=True) for i in range(READERS)]
        self._threads += [
            threading.Thread(target=self._follow, args=(job_id,), daemon=True) for job_id in job_ids[:EVENT_STREAMS]
        ]
        for thread in self._threads:
            thread.start()

    def wait(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        if len(self.final) < len(self._job_ids):
            raise TimeoutError(f"{len(self._job_ids) - len(self.final)} jobs not final after {timeout_s:g} s")

    def _read(self, offset: int) -> None:
        index = offset
        while not self._stop.is_set() and len(self.final) < len(self._job_ids):
            job_id = self._job_ids[index % len(self._job_ids)]
            index += 1
            if job_id in self.final:
                continue
            started = time.perf_counter()
            status = self._client.job(job_id)
            self.read_ms.append((time.perf_counter() - started) * 1000)
            if status["job_status"]["status"] in FINAL_NAMES:
                self.final[job_id] = status

    def _follow(self, job_id: str) -> None:
        try:
            for _ in GatewayClient(self._url, api_key=self._key).events(job_id):
                self.events += 1
        except Exception as e:  # noted in the report, never hides the other figures
            self.errors.append(f"events of {job_id}: {type(e).__name__}: {e}")


@dataclass
class Usage:
    """CPU seconds and memory of each service over an interval; the ledger's size."""

    cpu_s: dict[str, float] = field(default_factory=dict)
    rss_mib: dict[str, float] = field(default_factory=dict)
    ledger_bytes: int = 0


class UsageMeter:
    def __init__(self, stack: BenchStack) -> None:
        self._pids = stack.service_pids()
        self._ledger = stack.data_dir / "monitor" / "ledger.db"
        self._cpu0 = self._cpu()
        self.ledger0 = ledger_bytes(self._ledger)

    def _cpu(self) -> dict[str, float]:
        return {name: procs.cpu_seconds(pid) or 0.0 for name, pid in self._pids.items()}

    def read(self) -> Usage:
        cpu = self._cpu()
        return Usage(
            {name: cpu[name] - self._cpu0.get(name, 0.0) for name in cpu},
            {name: procs.rss_mib(pid) or 0.0 for name, pid in self._pids.items()},
            ledger_bytes(self._ledger),
        )


def ledger_bytes(path: Path) -> int:
    """The ledger's size once its write-ahead log is copied in (a passive checkpoint: it never waits for, nor
    blocks, the monitor's writer; what it could not copy yet is a few pages)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    return path.stat().st_size
