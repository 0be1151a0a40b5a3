"""The embedded stack as the bench runs it: `thresher up` in a fresh data dir, the bench API deployed."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

from bench import procs
from thresher.core.auth import authorization
from thresher.core.names import HEADER_AUTHORIZATION
from thresher.core.statuses import FINAL_NAMES
from thresher.tools.client import GatewayClient
from thresher.tools.launcher import StackProcess
from thresher.tools.services import SERVICES

API = "bench"
APIS_FILE = Path(__file__).parent / "workers" / "apis.yaml"
LEFT_BEHIND: list[int] = []  # pids that outlived a stopped stack (and were killed): the run reports them


class BenchStack:
    """`thresher up` with its data dir under `root`; `settings` (thresher.yaml keys) reach every service. `apis`: the
    Batch APIs to deploy; `env`: variables added to the stack's environment (bench/paired.py runs another copy of
    the code with PYTHONPATH)."""

    def __init__(
        self,
        root: Path,
        settings: dict[str, Any] | None = None,
        apis: Path = APIS_FILE,
        env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.data_dir = root / "data"
        root.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self.process = _start(root, self.data_dir, settings, apis, env)
        self.start_s = time.monotonic() - started
        key = self.process.api_key
        self.client = GatewayClient(self.process.url, api_key=key)
        self.auth_headers = {HEADER_AUTHORIZATION: authorization(key)} if key else {}  # for requests made by hand

    @property
    def url(self) -> str:
        return self.process.url

    def service_pids(self) -> dict[str, int]:
        """The services' pids (children of `thresher up`), by name."""
        pids = {}
        for pid in procs.children_of(self.process.proc.pid):
            for service in SERVICES:
                if service.module in procs.cmdline(pid):
                    pids[service.name] = pid
        return pids

    def dequeuer_pids(self, job_id: str) -> list[int]:
        return procs.processes_mentioning(f"--job-id {job_id}")

    def pod_pids(self, job_id: str) -> list[int]:
        """Every process the local runtime started for the job (workers and dequeuers), alive or not."""
        path = self.data_dir / "jobs" / job_id / "workers.json"
        try:
            pods = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return [p["pid"] for pod in pods for p in pod["processes"]]

    def pods_alive(self, job_id: str) -> bool:
        return any(procs.alive(pid) for pid in self.pod_pids(job_id))

    def submit(self, job: dict[str, Any]) -> tuple[str, float]:
        """Submit to the bench API; returns the job id and time.time() just before the request."""
        submitted_at = time.time()
        return self.client.submit(API, job)["job_id"], submitted_at

    def status(self, job_id: str) -> dict[str, Any]:
        return self.client.get(API, job_id)

    def wait_final(self, job_id: str, timeout_s: float, poll_s: float = 0.05) -> tuple[dict[str, Any], float]:
        """The final status and time.time() when it was first seen."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status(job_id)
            if status["job_status"]["status"] in FINAL_NAMES:
                return status, time.time()
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} did not finish in {timeout_s:g} s: {status['job_status']}")
            time.sleep(poll_s)

    def wait_nothing_left(self, job_id: str, timeout_s: float = 60.0, poll_s: float = 0.01) -> float:
        """time.time() once no worker or dequeuer of the job is alive."""
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.pods_alive(job_id):  # cheap: the pids the runtime recorded
                gone_at = time.time()
                if not self.dequeuer_pids(job_id):  # a scan of /proc, to be sure
                    return gone_at
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id}: workers still running after {timeout_s:g} s")
            time.sleep(poll_s)

    def stop(self) -> list[int]:
        """Stop the stack; kill whatever it left behind. Returns the pids that had to be killed."""
        self.process.stop()
        left = procs.processes_of(str(self.root))
        procs.kill_all(left)
        LEFT_BEHIND.extend(left)
        return left


def _start(
    root: Path, data_dir: Path, settings: dict[str, Any] | None, apis: Path, env: dict[str, str] | None
) -> StackProcess:
    """StackProcess passes its environment on: $THRESHER_CONFIG names the settings file while it starts."""
    previous = os.environ.get("THRESHER_CONFIG")
    if settings:
        path = root / "thresher.yaml"
        path.write_text(yaml.safe_dump(settings), encoding="utf-8")
        os.environ["THRESHER_CONFIG"] = str(path)
    else:
        os.environ.pop("THRESHER_CONFIG", None)
    try:
        return StackProcess(data_dir, port=0, apis=apis, env=env)
    finally:
        if previous is None:
            os.environ.pop("THRESHER_CONFIG", None)
        else:
            os.environ["THRESHER_CONFIG"] = previous
