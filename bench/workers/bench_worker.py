"""The benchmark worker, built on the worker helper. With an empty job config it does nothing (the no-op worker).

Config keys (all optional):
- `sleep_s`: seconds each batch sleeps
- `sleep_items`: each batch sleeps as many seconds as its items add up to (uneven batch times)
- `record_dir`: append a JSON line per batch start and end, and one per hook call, with `time.time()`, so that
  the bench can time what happens between the services (one file per worker process, written line by line)
- `hold_items`, `hold_s`: a batch holding one of these items sleeps `hold_s` the first time any worker sees it
- `result_bytes`: each batch returns a result of about this many bytes (a JSON string); else none
- `echo`: each batch returns its items (one result per item, as `Client.map` wants)
- `fail_items`: a batch holding one of these items fails (its worker raises): poison items
"""

from __future__ import annotations

import json
import os
import time

from thresher.worker import serve

# Only what it uses, as the helper: pathlib and typing would add a fifth to the time the worker takes to start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any

_RECORDS: dict[str, IO[str]] = {}  # record_dir -> this process's file, kept open


def record(config: dict[str, Any], event: dict[str, Any]) -> None:
    """One JSON line, written at once (line buffering: a killed worker loses nothing it recorded).

    The file stays open: opening and closing it for each line cost this VM about 0.3 ms per event after an idle
    wait, which the bench counted as the batch's time at the worker, a measuring cost the Pool baseline does not pay.
    """
    if record_dir := config.get("record_dir"):
        if record_dir not in _RECORDS:
            path = os.path.join(record_dir, f"events-{os.getpid()}.jsonl")
            _RECORDS[record_dir] = open(path, "a", encoding="utf-8", buffering=1)
        _RECORDS[record_dir].write(json.dumps({**event, "t": time.time(), "pid": os.getpid()}) + "\n")


def handle_batch(items: list[Any], ctx: Any) -> str | list[Any] | None:
    config = ctx.config
    if not config:  # the no-op worker does nothing at all, as the Pool baseline's function
        return None
    record(config, {"event": "start", "batch_id": ctx.batch_id, "attempt": ctx.attempt})
    if set(map(str, items)) & set(map(str, config.get("hold_items", []))) and first_time(config, ctx.batch_id):
        time.sleep(config.get("hold_s", 0))
    if sleep_s := config.get("sleep_s"):
        time.sleep(sleep_s)
    if config.get("sleep_items"):
        time.sleep(sum(items))
    if set(items) & set(config.get("fail_items", ())):
        raise RuntimeError(f"poison item in a batch of {len(items)}")
    record(config, {"event": "end", "batch_id": ctx.batch_id})
    if config.get("echo"):
        return items
    return "r" * config["result_bytes"] if "result_bytes" in config else None


def on_job_complete(summary: dict[str, Any], ctx: Any) -> None:
    record(ctx.config, {"event": "hook", "status": summary.get("status")})


def first_time(config: dict[str, Any], batch_id: str) -> bool:
    """True for the first worker to ask about this batch (a marker file beside the records)."""
    try:
        os.close(os.open(os.path.join(config["record_dir"], f"held-{batch_id}"), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


if __name__ == "__main__":
    serve(handle_batch, on_job_complete=on_job_complete)
