"""The fault-injection suite: the embedded stack as processes, with short timeouts so that faults show quickly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import WORKERS_DIR, Stack, alive, processes_mentioning, stopped_after
from tests.helpers import eventually

LONG_VISIBILITY_S = 300
FAULT_SETTINGS = """
queue:
  visibility_s: 2
monitor:
  heartbeat_timeout_s: 3
dequeuer:
  heartbeat_s: 0.5
  batch_timeout_s: 30
runtime:
  stop_grace_s: 5
  max_worker_restarts: 3
scaling:
  target_drain_s: 1
  idle_s: 1
"""


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    yield from _stack(tmp_path, monkeypatch, FAULT_SETTINGS)


@pytest.fixture
def long_visibility_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """Batches stay invisible for LONG_VISIBILITY_S unless released: a job that ends before that had them released."""
    settings = FAULT_SETTINGS.replace("visibility_s: 2", f"visibility_s: {LONG_VISIBILITY_S}")
    yield from _stack(tmp_path, monkeypatch, settings)


@pytest.fixture
def staging_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """Every item list is staged as a file that the enqueuer streams (gateway.stage_items_over_bytes 0)."""
    yield from _stack(tmp_path, monkeypatch, FAULT_SETTINGS + "gateway:\n  stage_items_over_bytes: 0\n")


def _stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: str) -> Iterator[Stack]:
    path = tmp_path / "thresher.yaml"
    path.write_text(settings)
    monkeypatch.setenv("THRESHER_CONFIG", str(path))  # read by `thresher up`, handed to every service
    with stopped_after(Stack(tmp_path / "data", WORKERS_DIR / "apis.yaml")) as stack:
        yield stack


class Outputs:
    """What the test worker wrote: items of successful batches, every call, hook summaries."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def _lines(self, pattern: str) -> list[dict[str, Any]]:
        return [json.loads(line) for path in self.out.glob(pattern) for line in path.read_text().splitlines()]

    def items(self) -> list[Any]:
        return sorted(item for record in self._lines("items-*.jsonl") for item in record["items"])

    def successes(self) -> list[dict[str, Any]]:
        """The record of each batch call that succeeded (`batch_id`, `attempt`, `items`, `pid`), in no order."""
        return self._lines("items-*.jsonl")

    def calls(self) -> list[dict[str, Any]]:
        return self._lines("calls-*.jsonl")

    def hooks(self) -> list[dict[str, Any]]:
        return self._lines("hooks.jsonl")

    def hook_calls(self) -> int:
        return len(self._lines("hook-calls.jsonl"))

    def worker_pids(self) -> list[int]:
        return [int(p.name) for p in (self.out / "pids").iterdir()] if (self.out / "pids").exists() else []


@pytest.fixture
def outputs(tmp_path: Path) -> Outputs:
    return Outputs(tmp_path / "out")


def submit(
    stack: Stack, outputs: Outputs, items: list[Any], batch_size: int = 1, workers: int | None = 2, **extra: Any
) -> str:
    """Submits the items to the recording worker; `workers=None` gives none (an elastic job gives its range)."""
    config = {"out_dir": str(outputs.out), **extra.pop("config", {})}
    body = {"item_list": {"items": items, "batch_size": batch_size}, "config": config, **extra}
    body |= {"workers": workers} if workers is not None else {}
    return stack.client.submit("recorder", body)["job_id"]


def assert_nothing_left(job_id: str, outputs: Outputs) -> None:
    """No worker or dequeuer process of the job is left (scale to zero)."""

    def nothing_left() -> None:
        assert not processes_mentioning(f"--job-id {job_id}"), "a dequeuer is left"
        assert not [pid for pid in outputs.worker_pids() if alive(pid)], "a worker is left"

    eventually(nothing_left, timeout_s=30)
