"""Job ids: newest first when sorted as text, and unique even when two are made in the same instant."""

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
