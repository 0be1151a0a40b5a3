"""Job ids (newest first when sorted as text, unique even when two are made in the same instant) and batch ids."""

from __future__ import annotations

import secrets
import threading
import time

_MAX_INT64 = 2**63 - 1
_lock = threading.Lock()
_last_ns = 0


def new_job_id() -> str:
    """Cortex's id (hex of MaxInt64 - now in ns, fixed to 16 digits) plus 4 random hex digits.

    Ids decrease over time, so a text sort lists the newest job first (until the year 2262). Within one
    process the clock part strictly decreases; the random suffix separates processes.
    """
    global _last_ns
    with _lock:
        now = max(time.time_ns(), _last_ns + 1)
        _last_ns = now
    return f"{_MAX_INT64 - now:016x}{secrets.token_hex(2)}"


MIN_INDEX_DIGITS = 6  # a batch id's index has at least this many digits


def index_width(count: int) -> int:
    """Digits of every batch index of a job with `count` batches: enough for the last one, at least 6."""
    return max(MIN_INDEX_DIGITS, len(str(max(count - 1, 0))))


def batch_id(job_id: str, index: int, width: int = MIN_INDEX_DIGITS) -> str:
    """`<job_id>-<index>`, the index zero-padded to `width` digits."""
    return f"{job_id}-{index:0{width}d}"
