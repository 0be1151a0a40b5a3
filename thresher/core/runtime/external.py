"""A runtime that starts nothing: the job's workers are run by someone else, who joins them from a file.

For each launch it writes <data_dir>/jobs/<job id>/external.json (mode 0600): the queue, the settings a dequeuer
gets (the monitor's address, the queue's, TLS) and, per worker, the id and the token it reports with. Whoever reads
the file runs those workers; the scheduler counts them running until their job stops them. The control-plane load
generator (bench/loadgen/) uses it to put a thousand simulated workers on one machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from thresher.core.config import Config
from thresher.core.runtime.base import (
    Runtime,
    WorkerLaunch,
    WorkerPhase,
    WorkerState,
    dequeuer_config_env,
    dequeuer_token,
)

LAUNCH_FILE = "external.json"


class ExternalRuntime(Runtime):
    def __init__(self, config: Config) -> None:
        self._config = config
        self._jobs_dir = Path(config.data_dir).resolve() / "jobs"
        self._workers: dict[str, list[WorkerState]] = {}  # job id -> its workers, as handed out

    def launch_file(self, job_id: str) -> Path:
        return self._jobs_dir / job_id / LAUNCH_FILE

    async def ensure_workers(self, launch: WorkerLaunch, count: int) -> None:
        workers = self._workers.setdefault(launch.job_id, [])
        running = [w for w in workers if not w.ended]
        for _ in range(count - len(running)):
            workers.append(WorkerState(f"{launch.job_id}-w{len(workers)}", WorkerPhase.RUNNING))
        self._write(launch, workers)

    async def update_job_spec(self, job_id: str, job_spec: dict[str, Any]) -> None:
        """Nothing to rewrite: the external workers are told the queue, not the spec."""

    async def workers(self, job_id: str) -> list[WorkerState]:
        return list(self._workers.get(job_id, []))

    async def stop_workers(self, job_id: str, grace_s: float) -> None:
        """The job's workers see its queue deleted and end by themselves: forget them (memory stays flat in the
        number of finished jobs)."""
        self._workers.pop(job_id, None)

    def _write(self, launch: WorkerLaunch, workers: list[WorkerState]) -> None:
        launch_file = {
            "job_id": launch.job_id,
            "api_name": launch.api.name,
            "queue_name": launch.queue_name,
            "env": dequeuer_config_env(self._config),
            "workers": [
                {"worker_id": w.worker_id, "token": dequeuer_token(self._config, launch.job_id, w.worker_id)}
                for w in workers
                if not w.ended
            ],
        }
        path = self.launch_file(launch.job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        with os.fdopen(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
            json.dump(launch_file, f)  # tokens inside: for the workers' runner only
        draft.replace(path)  # a reader never sees half a file
