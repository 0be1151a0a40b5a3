"""What the bench worker recorded (see workers/bench_worker.py): batch starts and ends, hook calls, with times."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

Event = dict[str, Any]  # {"event": "start"|"end"|"hook", "t": time.time(), "pid": ..., "batch_id": ...}


def read_events(record_dir: Path) -> list[Event]:
    events = []
    for path in record_dir.glob("events-*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                pass  # a line being written right now: read again later
    return sorted(events, key=lambda e: e["t"])


def of_kind(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e["event"] == kind]


def wait_for_event(record_dir: Path, match: Any, timeout_s: float, poll_s: float = 0.005) -> Event:
    """The first recorded event for which `match(event)` is true, waiting for it."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [e for e in read_events(record_dir) if match(e)]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise TimeoutError(f"no matching event in {record_dir} within {timeout_s:g} s")
        time.sleep(poll_s)


def batches_started_more_than_once(events: list[Event]) -> list[str]:
    starts = Counter(e["batch_id"] for e in of_kind(events, "start"))
    return sorted(batch for batch, count in starts.items() if count > 1)
