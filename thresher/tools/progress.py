"""A job's progress as one line: a bar, batches done, the pace, the ETA, failures and the status."""

from __future__ import annotations

from typing import Any, TextIO


def progress_line(status: dict[str, Any], elapsed_s: float) -> str:
    js, metrics = status["job_status"], status.get("metrics", {})
    total = js.get("total_batch_count")
    if total is not None:  # each batch split in two (on_failure bisect) adds one
        total += (js.get("batch_counts") or {}).get("split", 0)
    done = batches_done(status)
    pace = js.get("pace") or {}
    rate = pace.get("batches_per_s") or (done / elapsed_s if elapsed_s > 0 else 0.0)  # the service's, else ours
    bar_width = 30
    filled = int(bar_width * done / total) if total else 0
    eta_s = pace.get("eta_s")
    if eta_s is None and total and rate and done < total:
        eta_s = (total - done) / rate
    eta = f"ETA {max(0.0, eta_s):.{1 if eta_s < 10 else 0}f}s" if eta_s is not None and total and done < total else ""
    parts = [
        f"[{'#' * filled}{'.' * (bar_width - filled)}]",
        f"{done}/{total if total is not None else '?'} batches",
        f"{rate:.0f}/s",
        eta,
        f"failed attempts {metrics.get('failed', 0)}, dead-lettered {metrics.get('dead_lettered', 0)}",
        js["status"],
    ]
    return "  ".join(p for p in parts if p)


def batches_done(status: dict[str, Any]) -> int:
    metrics = status.get("metrics", {})
    return int(metrics.get("succeeded", 0)) + int(metrics.get("dead_lettered", 0))


class ProgressLine:
    """Shows each new line: rewritten in place on a terminal, else a line per change (logs stay readable)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._last = ""

    def show(self, line: str) -> None:
        if self._out.isatty():
            self._out.write("\r" + line.ljust(len(self._last)))
        elif line != self._last:
            self._out.write(line + "\n")
        self._out.flush()
        self._last = line

    def end(self) -> None:
        if self._out.isatty():
            self._out.write("\n")
            self._out.flush()
