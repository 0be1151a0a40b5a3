"""LocalRuntime: each worker is a process group on this machine: the API's command(s) plus a dequeuer.

Dequeuers are forked from a process that has already imported them (thresher/core/forkserver.py): a fresh one would
spend about 0.17 s of CPU on imports, and the workers of a job would start that much later and less evenly.

The groups outlive a scheduler restart: their pids (with start times, against pid reuse) are kept in
<data_dir>/jobs/<job_id>/workers.json, so a new scheduler finds, counts and stops them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from thresher.core.config import Config
from thresher.core.dequeuer_args import DEQUEUER_MODULE
from thresher.core.forkserver import TITLE_ROOM, ForkServer
from thresher.core.names import ENV_JOB_SPEC, ENV_PORT, ENV_WORKER_TOKEN, EXIT_DRAINED, EXIT_IDLE
from thresher.core.ports import free_port
from thresher.core.queue.registry import queue_backend_entry
from thresher.core.results import dequeuer_env_prefixes
from thresher.core.runtime.base import (
    IDLED,
    Runtime,
    WorkerLaunch,
    WorkerPhase,
    WorkerState,
    dequeuer_config_env,
    dequeuer_exit_reason,
    dequeuer_token,
)

# What a worker inherits from this process; nothing else (no credentials, no API keys).
_INHERITED_ENV = ("HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "USER")
# A dequeuer also gets PYTHONPATH and the variables its queue backend names (on SQS: AWS_*, boto3's credentials).
_STOP_POLL_S = 0.02
MAX_LOG_READ_BYTES = 4 * 1024 * 1024  # per file and read; the rest comes with the next one


@dataclass
class _Process:
    name: str  # "dequeuer", or the container's name
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: tells a live process from a reused pid
    exit_file: str = ""  # where it writes its exit code (the dequeuer), read when the code cannot be had otherwise


@dataclass
class _Pod:
    worker_id: str
    pgid: int
    processes: list[_Process]
    failure: str = ""  # why it failed: it could not start, or one of its processes crashed while the others ran
    stopped: bool = False  # stopped on purpose (stop_workers): however its processes end, it did not crash
    idle_counted: bool = False  # exited idle before an ensure_workers: the count asked for since has it taken off


class LocalRuntime(Runtime):
    workers_stop_with_scheduler = True

    def __init__(self, config: Config) -> None:
        self._config = config
        self._jobs_dir = Path(config.data_dir).resolve() / "jobs"
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # ours, to reap
        self._terminating: dict[int, float] = {}  # pgid -> when the rest of a half-ended pod got SIGTERM
        # Started now, so it has imported the dequeuer by the time the first job needs one.
        self._dequeuers = ForkServer(
            [sys.executable, "-m", f"{DEQUEUER_MODULE}.forkserver", TITLE_ROOM], self._dequeuer_env()
        )

    def job_dir(self, job_id: str) -> Path:
        return self._jobs_dir / job_id

    async def ensure_workers(self, launch: WorkerLaunch, count: int) -> None:
        await self.update_job_spec(launch.job_id, launch.job_spec)
        pods = self._load(launch.job_id)  # the ended ones stay: they are the job's history
        # An idle exit frees no place in the ensure_workers that first sees it: the count was decided before (the
        # scaler's look), perhaps without it, as when a job's workers idle out together. The next look counts it off.
        states = [self._state(p) for p in pods]
        running = [p for p, s in zip(pods, states, strict=True) if not s.ended or (s.idled and not p.idle_counted)]
        for pod, state in zip(pods, states, strict=True):
            pod.idle_counted = state.idled
        started = []
        for _ in range(count - len(running)):
            port = free_port()
            pods.append(self._start_containers(launch, f"{launch.job_id}-w{len(pods)}", port))
            started.append((pods[-1], port))
        # The dequeuers once every worker process is on its way: they start in milliseconds, the workers take the
        # time, and the sooner they all start, the closer together they become ready.
        for pod, port in started:
            if not pod.failure:
                self._start_dequeuer(launch, pod, port)
        self._save(launch.job_id, pods)

    async def update_job_spec(self, job_id: str, job_spec: dict[str, Any]) -> None:
        path = self.job_dir(job_id) / "job.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, json.dumps(job_spec, indent=2))  # a worker never reads half a file

    async def workers(self, job_id: str) -> list[WorkerState]:
        pods, states, decided = self._load(job_id), [], False
        for pod in pods:
            state = self._state(pod)
            if state.ended and self._running(pod):
                # The first process to end says how the pod ended, not how the rest ends once stopped (a dequeuer
                # drains on SIGTERM): a crash stays a crash. A process that ended on SIGTERM was asked to stop, as a
                # drain is: the rest decides.
                if (
                    state.crashed
                    and not pod.failure
                    and not any(self._exit_code(p) == -signal.SIGTERM for p in pod.processes)
                ):
                    pod.failure, decided = state.reason, True
                self._end_half_pod(pod)
            states.append(state)
        if decided:
            self._save(job_id, pods)
        return states

    async def read_logs(self, job_id: str, offsets: dict[str, int]) -> list[tuple[str, str, str]]:
        lines = []
        for pod in self._load(job_id):
            for source in [*(p.name for p in pod.processes if p.name != "dequeuer"), "dequeuer"]:
                path = self.job_dir(job_id) / f"{pod.worker_id}.{source}.log"
                key = path.name
                try:
                    with open(path, "rb") as f:
                        f.seek(offsets.get(key, 0))
                        data = f.read(MAX_LOG_READ_BYTES)
                except FileNotFoundError:
                    continue
                complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next read
                offsets[key] = offsets.get(key, 0) + len(complete)
                text = complete.decode("utf-8", errors="replace")
                lines += [(pod.worker_id, source, line) for line in text.splitlines()]
        return lines

    def _end_half_pod(self, pod: _Pod) -> None:
        """Half a pod is no worker: SIGTERM the rest (a dequeuer releases its batches), SIGKILL after the grace."""
        if pod.pgid not in self._terminating:
            self._terminating[pod.pgid] = time.monotonic()
            _signal_group(pod.pgid, signal.SIGTERM)
        elif time.monotonic() - self._terminating[pod.pgid] > self._config.runtime.stop_grace_s:
            _signal_group(pod.pgid, signal.SIGKILL)

    def _state(self, pod: _Pod) -> WorkerState:
        """A pod ends as soon as one of its processes does: a worker without its dequeuer, or the reverse."""
        if pod.failure:
            return WorkerState(pod.worker_id, WorkerPhase.FAILED, pod.failure)
        if pod.stopped:
            return WorkerState(pod.worker_id, WorkerPhase.STOPPED, "stopped with its job")
        codes = [(proc.name, self._exit_code(proc)) for proc in pod.processes]
        # Drained on SIGTERM (as on a spot termination), or its job's queue is gone: the rest is stopped after it.
        if ("dequeuer", EXIT_DRAINED) in codes or ("dequeuer", 0) in codes:
            return WorkerState(pod.worker_id, WorkerPhase.STOPPED, "dequeuer drained and exited")
        if ("dequeuer", EXIT_IDLE) in codes:
            return WorkerState(pod.worker_id, WorkerPhase.STOPPED, IDLED, idled=True)
        for name, code in codes:
            if code is not None:
                return WorkerState(pod.worker_id, WorkerPhase.FAILED, _describe_exit(name, code))
        return WorkerState(pod.worker_id, WorkerPhase.RUNNING)

    async def stop_workers(self, job_id: str, grace_s: float) -> None:
        pods = self._load(job_id)
        if not pods:
            return
        for pod in pods:
            pod.stopped = pod.stopped or not self._state(pod).ended
        self._save(job_id, pods)
        for pod in pods:
            _signal_group(pod.pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while any(self._running(p) for p in pods) and time.monotonic() < deadline:
            await asyncio.sleep(_STOP_POLL_S)
        for pod in pods:
            if self._running(pod):
                _signal_group(pod.pgid, signal.SIGKILL)
        while any(self._running(p) for p in pods):
            await asyncio.sleep(_STOP_POLL_S)

    def _start_containers(self, launch: WorkerLaunch, worker_id: str, port: int) -> _Pod:
        job_dir = self.job_dir(launch.job_id)
        processes: list[_Process] = []
        pgid = 0
        for container in launch.api.containers:
            env = self._worker_env(launch, container.env, port)
            argv = [*container.command, *container.args]
            log_path = job_dir / f"{worker_id}.{container.name}.log"
            try:
                proc = self._spawn(argv, env, launch.api.working_dir or None, log_path, pgid)
            except (OSError, ValueError) as e:  # ValueError: NUL or "=" where exec takes neither (an old API)
                if pgid:
                    _signal_group(pgid, signal.SIGKILL)
                return _Pod(worker_id, pgid, processes, failure=f"cannot start {container.name} ({argv[0]}): {e}")
            pgid = pgid or proc.pid
            processes.append(_Process(container.name, proc.pid, _start_ticks(proc.pid)))
        return _Pod(worker_id, pgid, processes)

    def _start_dequeuer(self, launch: WorkerLaunch, pod: _Pod, port: int) -> None:
        log_path = self.job_dir(launch.job_id) / f"{pod.worker_id}.dequeuer.log"
        # Its exit code reaches this scheduler through the fork server; one restarted meanwhile reads it from here.
        exit_file = self.job_dir(launch.job_id) / f"{pod.worker_id}.dequeuer.exit"
        args = dataclasses.replace(launch.dequeuer_args(pod.worker_id, port), exit_file=str(exit_file))
        try:
            token = {ENV_WORKER_TOKEN: dequeuer_token(self._config, launch.job_id, pod.worker_id)}
            pid = self._dequeuers.spawn(args.to_argv(), log_path, pod.pgid, token)
        except OSError as e:
            _signal_group(pod.pgid, signal.SIGKILL)
            pod.failure = f"cannot start the dequeuer: {e}"
            return
        pod.processes.append(_Process("dequeuer", pid, _start_ticks(pid), str(exit_file)))

    def _spawn(
        self, argv: list[str], env: dict[str, str], cwd: str | None, log_path: Path, pgid: int
    ) -> subprocess.Popen[bytes]:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=pgid,  # 0: a new group led by the first process of the pod
            )
        self._children[proc.pid] = proc
        return proc

    def _worker_env(self, launch: WorkerLaunch, extra: Any, port: int) -> dict[str, str]:
        env = {k: os.environ[k] for k in _INHERITED_ENV if k in os.environ}
        # The scheduler's own interpreter first on PATH, so `python` in a command is the one Thresher runs on.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])
        env["PYTHONUNBUFFERED"] = "1"
        env.update(dict(extra))
        env[ENV_PORT] = str(port)
        env[ENV_JOB_SPEC] = str(self.job_dir(launch.job_id) / "job.json")
        return env

    def _dequeuer_env(self) -> dict[str, str]:
        prefixes = (
            *queue_backend_entry(self._config.queue.backend).dequeuer_env_prefixes,
            *dequeuer_env_prefixes(self._config),
        )
        env = {k: v for k, v in os.environ.items() if k in (*_INHERITED_ENV, "PATH", "PYTHONPATH")}
        env.update({k: v for k, v in os.environ.items() if k.startswith(prefixes)})
        env.update(dequeuer_config_env(self._config))
        env["THRESHER_DATA_DIR"] = str(Path(self._config.data_dir).resolve())
        return env

    def _running(self, pod: _Pod) -> bool:
        return any(self._exit_code(p) is None for p in pod.processes)

    def _exit_code(self, proc: _Process) -> int | None:
        """None while the process runs; its exit code when we can know it, else -1."""
        child = self._children.get(proc.pid)
        if child is not None:
            return child.poll()  # also reaps it
        gone = _start_ticks(proc.pid) != proc.start_ticks
        code = self._dequeuers.exit_code(proc.pid, gone)
        if code is not None:
            return code
        return _written_exit_code(proc.exit_file) if gone else None

    async def close(self) -> None:
        self._dequeuers.close()

    def _load(self, job_id: str) -> list[_Pod]:
        path = self.job_dir(job_id) / "workers.json"
        if not path.exists():
            return []
        raw = json.loads(path.read_text(encoding="utf-8"))
        return [_Pod(**{**p, "processes": [_Process(**q) for q in p["processes"]]}) for p in raw]

    def _save(self, job_id: str, pods: list[_Pod]) -> None:
        path = self.job_dir(job_id) / "workers.json"
        _write_atomically(path, json.dumps([asdict(p) for p in pods]))


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")  # one per writer: no two collide
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _written_exit_code(path: str) -> int:
    """The exit code a process that ended unwatched wrote on its way out; -1 when it wrote none (killed)."""
    try:
        return int(Path(path).read_text(encoding="utf-8")) if path else -1
    except (OSError, ValueError):
        return -1


def _describe_exit(name: str, code: int) -> str:
    if code == -1:
        return f"{name} ended while the scheduler was not watching"
    if code < 0:
        return f"{name} was killed by {signal.Signals(-code).name}"
    if name == "dequeuer" and (reason := dequeuer_exit_reason(code)):
        return reason
    return f"{name} exited with code {code}"


def _start_ticks(pid: int) -> int:
    """The process's start time in clock ticks, or -1 if there is no such live process (zombies count as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    fields = stat[stat.rfind(")") + 2 :].split()
    return -1 if fields[0] == "Z" else int(fields[19])


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    if pgid <= 0:  # a pod whose first process never started has no group; killpg(0) would signal our own
        return
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
