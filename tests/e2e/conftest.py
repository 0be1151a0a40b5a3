"""The embedded stack as a real `thresher up` process, for end-to-end and fault tests."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import eventually
from thresher.core.errors import Unavailable
from thresher.core.names import ENV_API_KEY
from thresher.core.statuses import FINAL_NAMES
from thresher.tools.client import GatewayClient
from thresher.tools.launcher import StackProcess
from thresher.tools.services import service_named

WORKERS_DIR = Path(__file__).parent / "workers"


class Stack(StackProcess):
    """The stack plus what the tests look at: its client, its services' pids, a job's final status."""

    def __init__(
        self, data_dir: Path, apis: Path, args: Sequence[str] = (), env: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(data_dir, apis=apis, args=args, env=env)
        self.client = GatewayClient(self.url, api_key=self.api_key)

    def service_pid(self, name: str) -> int:
        """The pid of one of the stack's services (a direct child of `thresher up`)."""
        module = service_named(name).module
        for pid in children_of(self.proc.pid):
            if module in cmdline(pid):
                return pid
        raise LookupError(f"no {name} process")

    def wait_for_final(self, api: str, job_id: str, timeout_s: float = 90.0) -> dict[str, Any]:
        def final() -> dict[str, Any]:
            try:
                status = self.client.get(api, job_id)
            except Unavailable:  # a service restarting: the job goes on
                status = {}
            assert status and status["job_status"]["status"] in FINAL_NAMES, (
                f"job {job_id} did not finish in {timeout_s} s: {status}"
            )
            return status

        return eventually(final, timeout_s, interval_s=0.1)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def children_of(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2 :].split()
            if int(fields[1]) == parent and fields[0] != "Z":
                pids.append(int(entry.name))
    return pids


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def processes_mentioning(text: str) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and text in cmdline(int(p.name))]


def processes_of(folder: Path) -> list[int]:
    """Processes whose command line or environment names `folder` (a stack's services, workers, dequeuers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if str(folder).encode() in environ or str(folder) in cmdline(int(entry.name)):
                pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def stopped_after(stack: StackProcess) -> Iterator[StackProcess]:
    """Yield the stack; then stop it and kill anything left of it: nothing a test started outlives it."""
    try:
        yield stack
    finally:
        stack.stop()
        for pid in processes_of(stack.data_dir):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    stack = Stack(tmp_path / "data", WORKERS_DIR / "apis.yaml")
    monkeypatch.setenv(ENV_API_KEY, stack.api_key or "")  # for the CLI the tests run, and their own requests
    with stopped_after(stack):
        yield stack
