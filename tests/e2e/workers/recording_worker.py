"""The test worker: records every item it sees and every hook call under the job config's `out_dir`, and
misbehaves on request, for the fault-injection tests. Config keys (all optional):

- `fail_items`: items whose batch answers HTTP 500 (while the file `fail_while` exists, if that is given), with the
  error `fail_message` (default: "poison item") and the items
- `crash_once_items`: items whose batch kills the worker process the first time it sees them
- `crash_once_batch_suffixes`: batches whose id ends with one of these (e.g. `-000000.1`, a half of a batch split by
  on_failure bisect) kill the worker process the first time it sees them
- `hang_items`: items whose batch never returns
- `slow_s`: seconds each batch takes
- `hold_items`: items whose batch waits while the file `hold_while` exists (that is, until a test removes it)
- `crash_at_start`: the worker exits with code 3 as soon as it starts (a crash loop)
- `hook_failures`: how many /on-job-complete calls answer HTTP 500 before one succeeds
- `results`: each batch returns `{"squares": [...], "attempt": N}` (its result), with `"pad"`: `result_pad` x's if
  given, and None (no result) for a batch with one of `no_result_items`; else None
- `kill_dequeuer_items`: items whose batch, once answered, has its dequeuer killed (SIGKILL) `kill_dequeuer_after_s`
  later (default 0.005), the first time they are seen
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from thresher.worker import job_spec, serve


def out_dir(config: dict[str, Any]) -> Path:
    path = Path(config["out_dir"])
    (path / "pids").mkdir(parents=True, exist_ok=True)
    return path


def handle_batch(items: list[Any], ctx: Any) -> dict[str, Any] | None:
    config, out = ctx.config, out_dir(ctx.config)
    (out / "pids" / str(os.getpid())).touch()
    record = {"batch_id": ctx.batch_id, "attempt": ctx.attempt, "items": items, "pid": os.getpid()}
    with open(out / f"calls-{os.getpid()}.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    for suffix in config.get("crash_once_batch_suffixes", []):
        if ctx.batch_id.endswith(suffix) and _first_time(out / f"crashed{suffix}"):
            os._exit(1)
    for item in items:
        if item in config.get("crash_once_items", []) and _first_time(out / f"crashed-{item}"):
            os._exit(1)
        if item in config.get("hang_items", []):
            time.sleep(3600)
    time.sleep(config.get("slow_s", 0))
    while set(items) & set(config.get("hold_items", [])) and Path(config["hold_while"]).exists():
        time.sleep(0.05)
    if any(item in config.get("kill_dequeuer_items", []) and _first_time(out / f"killed-{item}") for item in items):
        delay_s = config.get("kill_dequeuer_after_s", 0.005)
        threading.Thread(target=_kill_my_dequeuer, args=(delay_s,), daemon=True).start()  # once this batch is answered
    fail_while = config.get("fail_while")
    if set(items) & set(config.get("fail_items", [])) and (not fail_while or Path(fail_while).exists()):
        raise RuntimeError(f"{config.get('fail_message', 'poison item')} in {items}")
    with open(out / f"items-{os.getpid()}.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    if not config.get("results") or set(items) & set(config.get("no_result_items", [])):
        return None
    result = {"squares": [item * item for item in items], "attempt": ctx.attempt}
    return result | {"pad": "x" * config["result_pad"]} if "result_pad" in config else result


def _kill_my_dequeuer(delay_s: float) -> None:
    """SIGKILL the dequeuer of this worker: the process of its group (its pod) that runs services.dequeuer."""
    time.sleep(delay_s)
    group = os.getpgid(0)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if os.getpgid(int(entry.name)) == group and b"services.dequeuer" in (entry / "cmdline").read_bytes():
                    os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                continue


def on_job_complete(summary: dict[str, Any], ctx: Any) -> None:
    out = out_dir(ctx.config)
    with open(out / "hook-calls.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"key": ctx.idempotency_key}) + "\n")
    calls = len((out / "hook-calls.jsonl").read_text().splitlines())
    if calls <= ctx.config.get("hook_failures", 0):
        raise RuntimeError(f"hook failure {calls}")
    with open(out / "hooks.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(summary) + "\n")


def _first_time(marker: Path) -> bool:
    try:
        marker.touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


if __name__ == "__main__":
    if (job_spec().get("config") or {}).get("crash_at_start"):
        raise SystemExit(3)
    serve(handle_batch, on_job_complete=on_job_complete)
