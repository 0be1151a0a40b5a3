"""A test worker: records every item it sees and every hook call, in files under the job config's `out_dir`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from thresher.worker import serve


def out_dir(ctx: Any) -> Path:
    path = Path(ctx.config["out_dir"])
    (path / "pids").mkdir(parents=True, exist_ok=True)
    (path / "pids" / str(os.getpid())).touch()
    return path


def handle_batch(items: list[Any], ctx: Any) -> None:
    record = {"batch_id": ctx.batch_id, "attempt": ctx.attempt, "items": items, "pid": os.getpid()}
    with open(out_dir(ctx) / f"items-{os.getpid()}.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def on_job_complete(summary: dict[str, Any], ctx: Any) -> None:
    with open(out_dir(ctx) / "hooks.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    serve(handle_batch, on_job_complete=on_job_complete)
